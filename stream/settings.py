"""Configuration from environment variables: the same names in every mode (embedded, compose, k8s)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

# Topic names are part of the deployment contract with subscribers; keep them in one place.
TOPICS = {
    "files": "skystream.files",
    "features.spectrum": "skystream.features.spectrum",
    "features.lightcurve": "skystream.features.lightcurve",
    "predictions": "skystream.predictions",
    "alerts": "skystream.alerts",
    "rejected": "skystream.rejected",
    "models": "skystream.models",
    "labels": "skystream.labels",
}


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


@dataclass(frozen=True)
class Settings:
    """Everything a process needs to find its broker, registry and state.

    ``broker`` empty means: start the embedded broker (only the commands that may do so).
    """

    broker: str | None = field(default_factory=lambda: _env("SKYSTREAM_BROKER"))
    registry: str = field(default_factory=lambda: _env("SKYSTREAM_REGISTRY", "var/registry"))
    state_dir: Path = field(default_factory=lambda: Path(_env("SKYSTREAM_STATE_DIR", "var/state")))
    partitions: int = field(default_factory=lambda: int(_env("SKYSTREAM_PARTITIONS", "4")))
    replication_factor: int = field(default_factory=lambda: int(_env("SKYSTREAM_REPLICATION_FACTOR", "1")))
    app_id: str = field(default_factory=lambda: _env("SKYSTREAM_APP_ID", "skystream"))
    metrics_port: int = field(default_factory=lambda: int(_env("SKYSTREAM_METRICS_PORT", "0")))
    # Kafka security for production clusters; empty means PLAINTEXT.
    security_protocol: str = field(default_factory=lambda: _env("SKYSTREAM_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT"))
    sasl_mechanism: str | None = field(default_factory=lambda: _env("SKYSTREAM_KAFKA_SASL_MECHANISM"))
    sasl_username: str | None = field(default_factory=lambda: _env("SKYSTREAM_KAFKA_SASL_USERNAME"))
    sasl_password: str | None = field(default_factory=lambda: _env("SKYSTREAM_KAFKA_SASL_PASSWORD"))
    ssl_cafile: str | None = field(default_factory=lambda: _env("SKYSTREAM_KAFKA_SSL_CAFILE"))
    toi_table: str | None = field(default_factory=lambda: _env("SKYSTREAM_TOI_TABLE"))
    artifacts: str = field(default_factory=lambda: _env("SKYSTREAM_ARTIFACTS", "var/artifacts"))
