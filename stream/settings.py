"""Configuration from environment variables: the same names in every mode (embedded, compose, k8s).

Every variable SkyStream reads is a field of ``Settings`` (its name, default and help in the field's
metadata); nothing else under stream/ reads the environment. ``skystream --help`` lists them from here.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable
from dataclasses import Field, dataclass, field, fields
from pathlib import Path
from typing import Any

__all__ = ["CHECKOUT", "Settings", "TOPICS", "child_environment", "environment_help", "shared_data", "variables"]

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
    "stars": "skystream.stars",  # a star's scored sectors, keyed by TIC id (stream/stars)
    "stars.state": "skystream.stars.state",  # the stars table's changelog: each star's state, compacted
}

# A source checkout has pyproject.toml beside the stream package; an installed wheel does not.
CHECKOUT = Path(__file__).resolve().parents[1]


def _var(env: str, default: Any, help: str, parse: Callable[[str], Any] = str, *, secret: bool = False,
         shown_default: str | None = None) -> Any:
    """A Settings field read from ``env`` (empty counts as unset). A secret is kept out of the repr."""

    def read() -> Any:
        """The variable's value parsed, or the default when it is unset or empty."""
        value = os.environ.get(env)
        return parse(value) if value not in (None, "") else default

    shown = shown_default if shown_default is not None else ("unset" if default is None else str(default))
    return field(default_factory=read, repr=not secret,
                 metadata={"env": env, "default": default, "shown_default": shown, "help": help, "secret": secret})


@dataclass(frozen=True)
class Settings:
    """Everything a process needs to find its broker, registry, data and state.

    ``broker`` empty means: start the embedded broker (only the commands that may do so).
    """

    broker: str | None = _var("SKYSTREAM_BROKER", None, "Kafka bootstrap servers (host:port[,host:port]); unset = "
                              "the embedded broker where a command may start one (demo, broker)")
    registry: str = _var("SKYSTREAM_REGISTRY", "var/registry", "model registry directory or s3://bucket/prefix")
    state_dir: Path = _var("SKYSTREAM_STATE_DIR", Path("var/state"), "local state: watcher ledger, worker data",
                           Path)
    partitions: int = _var("SKYSTREAM_PARTITIONS", 4, "partitions per data topic when topics are created", int)
    replication_factor: int = _var("SKYSTREAM_REPLICATION_FACTOR", 1,
                                   "replication of created topics (3 on a real cluster)", int)
    min_insync_replicas: int = _var("SKYSTREAM_MIN_INSYNC_REPLICAS", 2, "min.insync.replicas of created topics "
                                    "when replicated (never above the replication factor)", int)
    app_id: str = _var("SKYSTREAM_APP_ID", "skystream", "Faust application id: workers with the same id share "
                       "the partitions")
    metrics_port: int = _var("SKYSTREAM_METRICS_PORT", 0, "port of /metrics (0: a free port, printed at start)",
                             int)
    watch_source: str | None = _var("SKYSTREAM_WATCH_SOURCE", None,
                                    "what `skystream watch` watches when no argument is given")
    sources: str | None = _var("SKYSTREAM_SOURCES", None, "where workers may read inputs: comma-separated "
                               "directories and s3://bucket/prefix; a file event naming anything else is "
                               "dead-lettered (outside-sources)",
                               shown_default="SKYSTREAM_WATCH_SOURCE when set, else nothing is readable")
    model_poll_seconds: float = _var("SKYSTREAM_MODEL_POLL_SECONDS", 60.0, "how often workers re-read the "
                                     "registry's champions (heals a missed announcement)", float)
    model_signing_key: str | None = _var("SKYSTREAM_MODEL_SIGNING_KEY", None, "shared secret: publishing stores "
                                         "an HMAC-SHA256 of the ONNX file, workers refuse models without a "
                                         "valid one (never logged)", secret=True)
    watch_republish_seconds: float | None = _var("SKYSTREAM_WATCH_REPUBLISH_SECONDS", None, "a watched file with "
                                                 "no prediction or dead letter after this many seconds is published "
                                                 "once more (0: never; a broker that lost its state is noticed at "
                                                 "once)", float, shown_default="300 on tansu, 0 on Kafka")
    watch_reset_recheck_seconds: float = _var("SKYSTREAM_WATCH_RESET_RECHECK_SECONDS", 30.0, "after the broker "
                                              "lost its state, 3 times at this interval, files still without an "
                                              "outcome are published once more (0: never)", float)
    worker_stall_seconds: float = _var("SKYSTREAM_WORKER_STALL_SECONDS", 120.0, "a worker whose partition has "
                                       "messages waiting, an idle agent and no commit for this many seconds "
                                       "exits and is restarted (stream/worker/stall.py, tansu only; 0: never)", float)
    # Kafka security for production clusters; PLAINTEXT needs none of the rest.
    security_protocol: str = _var("SKYSTREAM_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT",
                                  "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL")
    sasl_mechanism: str | None = _var("SKYSTREAM_KAFKA_SASL_MECHANISM", None, "SASL mechanism (unset: PLAIN)")
    sasl_username: str | None = _var("SKYSTREAM_KAFKA_SASL_USERNAME", None, "SASL user name")
    sasl_password: str | None = _var("SKYSTREAM_KAFKA_SASL_PASSWORD", None, "SASL password (never logged)",
                                     secret=True)
    ssl_cafile: str | None = _var("SKYSTREAM_KAFKA_SSL_CAFILE", None, "CA bundle for SSL/SASL_SSL "
                                  "(unset: the system's)")
    fetch_max_wait_ms: int | None = _var("SKYSTREAM_FETCH_MAX_WAIT_MS", None, "workers' Kafka fetch long-poll "
                                         "in ms (a broker that holds fetches adds up to this per hop)", int,
                                         shown_default="the broker profile's: 50 on tansu, 500 on kafka")
    broker_engine: str = _var("SKYSTREAM_BROKER_ENGINE", "auto", "which broker the processes talk to: kafka, "
                              "tansu (the embedded broker, whose defects some mechanisms work around), or auto: "
                              "told by the cluster id the broker reports")
    processing_guarantee: str = _var("SKYSTREAM_PROCESSING_GUARANTEE", "at_least_once", "the workers' Faust "
                                     "processing guarantee: at_least_once, or exactly_once (Kafka transactions; "
                                     "kafka profile only, refused on tansu; measured not to pay: "
                                     "docs/experiments/exactly-once.md)")
    kafka_libs: str | None = _var("SKYSTREAM_KAFKA_LIBS", None, "directory of the Apache Kafka jars that "
                                  "`skystream broker --engine kafka` runs", shown_default="the cache filled by "
                                  "deploy/kafka/fetch.sh in a source checkout")
    retention_ms: int | None = _var("SKYSTREAM_RETENTION_MS", None, "retention.ms of every data topic "
                                    "SkyStream creates (files, features, predictions, alerts, rejected)", int,
                                    shown_default="per topic: 7 days for files and features, 30 for results")
    retention_bytes: int | None = _var("SKYSTREAM_RETENTION_BYTES", None, "retention.bytes (per partition) of "
                                       "every data topic SkyStream creates", int,
                                       shown_default="per topic: 1 GiB for files and features, 4 GiB for results")
    toi_table: str | None = _var("SKYSTREAM_TOI_TABLE", None, "TOI catalogue CSV for transit alerts "
                                 "(unset: the newest toi_*.csv of the shared data, if any)")
    archive: str | None = _var("SKYSTREAM_ARCHIVE", None, "append-only Parquet archive of predictions, alerts "
                               "and dead letters: a directory or s3://bucket/prefix",
                               shown_default="<SKYSTREAM_STATE_DIR>/archive")
    artifacts: str = _var("SKYSTREAM_ARTIFACTS", "var/artifacts", "where large alert figures are written")
    alert_rare_threshold: float = _var("SKYSTREAM_ALERT_RARE_THRESHOLD", 0.8, "probability of the Other "
                                       "group from which a spectrum raises a rare-composition alert", float)
    alert_novelty_alpha: float = _var("SKYSTREAM_ALERT_NOVELTY_ALPHA", 0.01, "a spectrum whose novelty p-value is "
                                      "below this raises a novel-spectrum alert: the share of spectra like the "
                                      "training set's that would raise one (the false-alarm rate)", float)
    filters: str | None = _var("SKYSTREAM_FILTERS", None, "YAML/JSON file of named alert filters (docs/filters.md); "
                               "workers publish each match on skystream.alerts.<name> and reload the file when "
                               "it changes (unset: no filter topics)")
    shared_data: str | None = _var("SKYSTREAM_SHARED_DATA", None, "the shared data sets (SMASSII, SMASS I, TESS "
                                   "light curves, TOI catalogue); set it when SkyStream is installed",
                                   shown_default="../shared/data beside the source checkout, else ./shared/data")
    # `skystream api` (stream/api): who may score and read.
    api_token: str | None = _var("SKYSTREAM_API_TOKEN", None, "bearer token of `skystream api`: POST /score needs "
                                 "it (unset: scoring is refused, and the API only listens on loopback); at least "
                                 "16 printable ASCII characters (never logged)", secret=True)
    # Anything but 0/false/no/off protects: a typo fails closed.
    api_protect_reads: bool = _var("SKYSTREAM_API_PROTECT_READS", False, "1: the reads of `skystream api` (JSON "
                                   "routes, web pages) need the token too; /healthz and /openapi.json stay open",
                                   lambda v: v.strip().lower() not in ("0", "false", "no", "off"))
    # Per-kind bounds on one input file (stream/kinds.py has the defaults): the watcher and the worker
    # refuse a larger file unread (too-large); the worker preprocesses each file in a child process that
    # is killed past its time budget (timeout) or refused memory past its bound (out-of-memory).
    max_spectrum_bytes: int | None = _var("SKYSTREAM_MAX_SPECTRUM_BYTES", None, "largest spectrum file accepted, "
                                          "bytes", int, shown_default="4 MiB")
    max_lightcurve_bytes: int | None = _var("SKYSTREAM_MAX_LIGHTCURVE_BYTES", None, "largest light-curve file "
                                            "accepted, bytes", int, shown_default="128 MiB")
    max_spectrum_seconds: float | None = _var("SKYSTREAM_MAX_SPECTRUM_SECONDS", None, "time budget to "
                                              "preprocess one spectrum, seconds", float, shown_default="10")
    max_lightcurve_seconds: float | None = _var("SKYSTREAM_MAX_LIGHTCURVE_SECONDS", None, "time budget to "
                                                "preprocess one light curve (period search), seconds", float,
                                                shown_default="180")
    max_spectrum_memory_mb: int | None = _var("SKYSTREAM_MAX_SPECTRUM_MEMORY_MB", None, "memory (address space) "
                                              "preprocessing one spectrum may take, MiB", int, shown_default="512")
    max_lightcurve_memory_mb: int | None = _var("SKYSTREAM_MAX_LIGHTCURVE_MEMORY_MB", None, "memory (address "
                                                "space) preprocessing one light curve may take, MiB", int,
                                                shown_default="2048")
    # S3 (watcher, storage, registry). boto3 reads the credential chain and region itself.
    s3_endpoint: str | None = _var("SKYSTREAM_S3_ENDPOINT", None, "S3 endpoint for SkyStream only (MinIO, moto, "
                                   "...); unset: boto3's AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL")
    s3_unsigned: str = _var("SKYSTREAM_S3_UNSIGNED", "auto", "1: unsigned S3 requests (public buckets), "
                            "0: never, auto: when no credentials are found")
    s3_rescan_seconds: float = _var("SKYSTREAM_S3_RESCAN_SECONDS", 3600.0,
                                    "how often the S3 watcher lists the whole prefix", float)
    aws_retry_mode: str = _var("AWS_RETRY_MODE", "standard", "botocore retry mode of SkyStream's S3 clients")
    aws_max_attempts: int = _var("AWS_MAX_ATTEMPTS", 8, "attempts per S3 request", int)
    # boto3 reads the keys itself; SkyStream reads them only to redact them from messages and logs.
    aws_access_key_id: str | None = _var("AWS_ACCESS_KEY_ID", None, "AWS access key (boto3's credential chain)",
                                         secret=True)
    aws_secret_access_key: str | None = _var("AWS_SECRET_ACCESS_KEY", None, "AWS secret key (never logged)",
                                             secret=True)
    aws_session_token: str | None = _var("AWS_SESSION_TOKEN", None, "AWS session token (never logged)",
                                         secret=True)

    def secrets(self) -> list[str]:
        """The values of the secret fields that are set (for redaction)."""
        return [v for f in fields(self) if f.metadata["secret"] and (v := getattr(self, f.name))]


def variables() -> list[Field]:
    """Settings' fields; each one's ``metadata`` holds ``env``, ``default``, ``shown_default`` and ``help``."""
    return list(fields(Settings))


def environment_help() -> str:
    """The environment variables with their defaults and help, for ``skystream --help``."""
    lines = ["environment (empty counts as unset):"]
    for f in variables():
        m = f.metadata
        lines.append(f"  {m['env']}  (default: {m['shown_default']})")
        lines.extend(textwrap.wrap(m["help"], width=100, initial_indent=" " * 6, subsequent_indent=" " * 6))
    return "\n".join(lines) + "\n"


def child_environment(settings: Settings) -> dict[str, str]:
    """The environment for a child SkyStream process that must see ``settings``: this process's
    environment with every field set to its value in ``settings`` (unset when at its default)."""
    env = dict(os.environ)
    for f in variables():
        value = getattr(settings, f.name)
        if value is None or value == f.metadata["default"]:
            env.pop(f.metadata["env"], None)
        else:
            env[f.metadata["env"]] = str(value)
    return env


def shared_data(settings: Settings | None = None) -> Path:
    """Where the shared data sets live (SMASSII, SMASS I, TESS light curves, the TOI catalogue).

    ``SKYSTREAM_SHARED_DATA``, else ``../shared/data`` beside the source checkout; an installed wheel
    has no checkout, so then ``./shared/data`` (set the variable to put them elsewhere).
    """
    configured = (settings or Settings()).shared_data
    if configured:
        return Path(configured).expanduser()
    if (CHECKOUT / "pyproject.toml").is_file():
        return CHECKOUT.parent / "shared" / "data"
    return Path.cwd() / "shared" / "data"

