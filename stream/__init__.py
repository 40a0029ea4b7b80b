"""SkyStream serving side: watcher, Faust workers, ONNX scoring. Never imports TensorFlow or training/."""
