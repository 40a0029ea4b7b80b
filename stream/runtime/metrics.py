"""Prometheus metrics: one definition per series, shared by the watcher and the workers.

Names follow Prometheus conventions (base units in the name, ``_total`` for counters); the alert
rules and dashboards under deploy/ use exactly these names.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, Info, start_http_server

__all__ = [
    "ALERTS",
    "ASSIGNED_PARTITIONS",
    "BROKER_RESETS",
    "CONSUMER_LAG",
    "DEAD_LETTERS",
    "DRIFT_DETECTED",
    "DRIFT_PSI",
    "END_TO_END_LATENCY",
    "FILES_DISCOVERED",
    "FILES_PUBLISHED",
    "FILES_REPUBLISHED",
    "FILES_UNRESOLVED",
    "FILTERS_ACTIVE",
    "FILTER_MATCHES",
    "FILTER_RELOADS",
    "INFERENCE_BATCH_SIZE",
    "INFERENCE_SECONDS",
    "LAST_INPUT",
    "MESSAGES_PROCESSED",
    "MODEL",
    "MODEL_REFUSED",
    "PAUSED",
    "PREDICTIONS",
    "PREDICTION_SCORE",
    "RETRIES",
    "STAGE_LATENCY",
    "serve",
    "set_model",
]

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

FILES_DISCOVERED = Counter("skystream_files_discovered", "Complete files a watcher found", ["source"])
FILES_PUBLISHED = Counter("skystream_files_published", "File events published", ["source", "kind"])
FILES_REPUBLISHED = Counter("skystream_files_republished", "File events published again (broker lost them, "
                            "or no outcome for too long)", ["source"])
FILES_UNRESOLVED = Gauge("skystream_files_unresolved", "Published files with no prediction or dead letter seen yet",
                         ["source"])
BROKER_RESETS = Counter("skystream_broker_resets", "Times the broker came back without its state", ["process"])
MESSAGES_PROCESSED = Counter(
    "skystream_messages_processed", "Messages an agent finished, by outcome", ["agent", "outcome"]
)
DEAD_LETTERS = Counter("skystream_dead_letters", "Dead-letter messages sent", ["stage", "reason"])
STAGE_LATENCY = Histogram(
    "skystream_stage_latency_seconds", "Time spent in one stage per message", ["stage"], buckets=_LATENCY_BUCKETS
)
END_TO_END_LATENCY = Histogram(
    "skystream_end_to_end_latency_seconds",
    "From the watcher seeing a complete file to its prediction being produced",
    ["kind"],
    buckets=_LATENCY_BUCKETS,
)
INFERENCE_SECONDS = Histogram(
    "skystream_inference_seconds", "ONNX inference time per batch", ["task"], buckets=_LATENCY_BUCKETS
)
INFERENCE_BATCH_SIZE = Histogram(
    "skystream_inference_batch_size", "Inputs per ONNX inference call", ["task"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
CONSUMER_LAG = Gauge(
    "skystream_consumer_lag_messages", "Messages not yet consumed, per topic partition", ["topic", "partition"]
)
ASSIGNED_PARTITIONS = Gauge("skystream_assigned_partitions", "Partitions this worker consumes", ["topic"])
PREDICTIONS = Counter("skystream_predictions", "Predictions by predicted label", ["task", "label"])
PREDICTION_SCORE = Histogram(
    "skystream_prediction_score", "Top class probability of each prediction", ["task"],
    buckets=(0.25, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0),
)
ALERTS = Counter("skystream_alerts", "Alerts sent", ["task", "reason"])
FILTER_MATCHES = Counter("skystream_filter_matches", "Alerts published on a filter's topic", ["filter"])
FILTER_RELOADS = Counter("skystream_filter_reloads", "Loads of the filters file, by outcome (loaded, refused)",
                         ["outcome"])
FILTERS_ACTIVE = Gauge("skystream_filters_active", "User-defined alert filters in force")
MODEL = Info("skystream_model", "Serving model per task", ["task"])
RETRIES = Counter("skystream_retries", "Retries of an input while something it needs is unavailable",
                  ["stage", "reason"])
PAUSED = Gauge("skystream_paused", "1 while a stage waits for storage, the registry or a model", ["stage"])
MODEL_REFUSED = Counter("skystream_model_refused", "Model versions refused at load", ["task", "reason"])
DRIFT_PSI = Gauge("skystream_drift_psi", "Population stability index of live vs reference", ["task", "feature"])
DRIFT_DETECTED = Gauge("skystream_drift_detected", "1 when any feature of the task drifted", ["task"])
LAST_INPUT = Gauge(
    "skystream_last_input_timestamp_seconds", "Unix time of the newest file published", ["source"]
)


def serve(port: int, host: str = "0.0.0.0") -> int:
    """Expose /metrics; port 0 picks a free port. Returns the port."""
    server, _thread = start_http_server(port, addr=host)
    return server.server_port


def set_model(task: str, name: str, version: str) -> None:
    """Record which model name and version serve ``task``."""
    MODEL.labels(task=task).info({"model": name, "version": version})
