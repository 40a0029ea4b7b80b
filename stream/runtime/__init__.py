"""Shared low-level pieces every process uses: Kafka client helpers (kafka), broker profiles
(profiles), the embedded tansu broker (embedded_broker) and the local Apache Kafka (local_kafka),
killable child processes (bounded), dead-letter records (deadletters), the Prometheus metrics
(metrics), backoff and retry (retry) and the stop signals (signals). Nothing here imports the
packages built on it (worker, scoring, ingest, alerts, models); the worker program is in stream/worker/."""
