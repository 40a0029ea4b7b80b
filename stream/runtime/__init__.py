"""How it runs: the Faust app and its agents, their per-event logic, Kafka client helpers, the
embedded broker, dead-letter records and the Prometheus metrics."""
