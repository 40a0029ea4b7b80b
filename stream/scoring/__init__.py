"""Stage 3, features → prediction: the ONNX model wrapper, the Scorer holding each task's champion,
the per-task predictors, TOI matching, drift, and the one score-and-publish path that the worker,
`skystream score` and `skystream rescore` share."""
