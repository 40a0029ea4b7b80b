"""Configuration: every variable is read by Settings, listed by `skystream --help`, and secrets stay hidden."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from stream.alerts.policy import alerts_for
from stream.settings import CHECKOUT, Settings, child_environment, shared_data, variables

ROOT = Path(__file__).resolve().parents[1]

# field -> (what the variable is set to, what Settings must hold); every field must be here.
SAMPLES = {
    "broker": ("kafka-1:9092,kafka-2:9092", "kafka-1:9092,kafka-2:9092"),
    "registry": ("s3://models/skystream", "s3://models/skystream"),
    "state_dir": ("/srv/skystream/state", Path("/srv/skystream/state")),
    "partitions": ("12", 12),
    "watch_republish_seconds": ("600", 600.0),
    "watch_reset_recheck_seconds": ("45", 45.0),
    "worker_stall_seconds": ("300", 300.0),
    "replication_factor": ("3", 3),
    "min_insync_replicas": ("2", 2),
    "app_id": ("skystream-prod", "skystream-prod"),
    "metrics_port": ("9400", 9400),
    "watch_source": ("s3://stpubdata/tess/public/", "s3://stpubdata/tess/public/"),
    "sources": ("/inbox,s3://skystream/incoming", "/inbox,s3://skystream/incoming"),
    "model_poll_seconds": ("15", 15.0),
    "model_signing_key": ("hmac-key-3c1d9e", "hmac-key-3c1d9e"),
    "security_protocol": ("SASL_SSL", "SASL_SSL"),
    "sasl_mechanism": ("SCRAM-SHA-512", "SCRAM-SHA-512"),
    "sasl_username": ("skystream-user", "skystream-user"),
    "sasl_password": ("sasl-pass-0b5e7", "sasl-pass-0b5e7"),
    "ssl_cafile": ("/etc/ssl/kafka-ca.pem", "/etc/ssl/kafka-ca.pem"),
    "fetch_max_wait_ms": ("500", 500),
    "broker_engine": ("kafka", "kafka"),
    "processing_guarantee": ("exactly_once", "exactly_once"),
    "kafka_libs": ("/opt/kafka/libs", "/opt/kafka/libs"),
    "retention_ms": ("3600000", 3600000),
    "retention_bytes": ("1048576", 1048576),
    "api_token": ("api-token-0123456789abcdef", "api-token-0123456789abcdef"),
    "api_protect_reads": ("1", True),
    "toi_table": ("/data/toi_2024.csv", "/data/toi_2024.csv"),
    "archive": ("s3://archive/skystream", "s3://archive/skystream"),
    "artifacts": ("/srv/artifacts", "/srv/artifacts"),
    "alert_rare_threshold": ("0.65", 0.65),
    "alert_novelty_alpha": ("0.001", 0.001),
    "filters": ("/etc/skystream/filters.yaml", "/etc/skystream/filters.yaml"),
    "shared_data": ("/mnt/shared-data", "/mnt/shared-data"),
    "max_spectrum_bytes": ("1048576", 1048576),
    "max_lightcurve_bytes": ("67108864", 67108864),
    "max_spectrum_seconds": ("2.5", 2.5),
    "max_lightcurve_seconds": ("60", 60.0),
    "max_spectrum_memory_mb": ("768", 768),
    "max_lightcurve_memory_mb": ("2048", 2048),
    "s3_endpoint": ("http://minio:9000", "http://minio:9000"),
    "s3_unsigned": ("1", "1"),
    "s3_rescan_seconds": ("600", 600.0),
    "aws_retry_mode": ("adaptive", "adaptive"),
    "aws_max_attempts": ("3", 3),
    "aws_access_key_id": ("AKIAEXAMPLEKEY123456", "AKIAEXAMPLEKEY123456"),
    "aws_secret_access_key": ("aws-secret-9f8e7d6c5b4a", "aws-secret-9f8e7d6c5b4a"),
    "aws_session_token": ("aws-session-token-1a2b3c", "aws-session-token-1a2b3c"),
}
ENV = {f.name: f.metadata["env"] for f in variables()}


def _clear(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV.values():
        monkeypatch.delenv(name, raising=False)


def test_settings_reads_every_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    assert set(SAMPLES) == set(ENV), "every Settings field needs a sample here"
    for name, (raw, _) in SAMPLES.items():
        monkeypatch.setenv(ENV[name], raw)
    settings = Settings()
    for name, (_, expected) in SAMPLES.items():
        assert getattr(settings, name) == expected, ENV[name]


def test_unset_and_empty_variables_give_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    _clear(monkeypatch)
    monkeypatch.setenv("SKYSTREAM_PARTITIONS", "")  # empty counts as unset (compose passes ${X:-})
    settings = Settings()
    for f in variables():
        assert getattr(settings, f.name) == f.metadata["default"], f.metadata["env"]
    assert (settings.partitions, settings.registry, settings.fetch_max_wait_ms) == (4, "var/registry", None)
    assert settings.broker_engine == "auto"


def test_help_lists_every_variable_with_its_default() -> None:
    out = subprocess.run([sys.executable, "-m", "stream.cli", "--help"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, check=True).stdout
    for f in variables():
        assert f"{f.metadata['env']}  (default: {f.metadata['shown_default']})" in out, f.metadata["env"]
    # The defaults shown are the ones a user gets, not just self-consistent metadata.
    for line in ("SKYSTREAM_PARTITIONS  (default: 4)", "SKYSTREAM_REGISTRY  (default: var/registry)",
                 "SKYSTREAM_ALERT_RARE_THRESHOLD  (default: 0.8)", "SKYSTREAM_WATCH_SOURCE  (default: unset)"):
        assert line in out
    listed = set(re.findall(r"^  ((?:SKYSTREAM|AWS)_[A-Z0-9_]+)  \(default", out, re.M))
    assert listed == set(ENV.values())


def test_secrets_stay_out_of_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = ("sasl_password", "aws_access_key_id", "aws_secret_access_key", "aws_session_token",
               "model_signing_key")
    for name in secrets:
        monkeypatch.setenv(ENV[name], SAMPLES[name][0])
    monkeypatch.setenv("SKYSTREAM_KAFKA_SASL_USERNAME", "skystream-user")
    settings = Settings()
    text = f"{settings!r} {settings!s}"
    assert "skystream-user" in text  # the repr still shows the rest
    for name in secrets:
        assert getattr(settings, name) == SAMPLES[name][0]  # read all the same
        assert SAMPLES[name][0] not in text, name


def test_no_module_under_stream_reads_the_environment_itself() -> None:
    reads_env = re.compile(r"\benviron\b|\bgetenv\b|\bputenv\b")
    readers = [str(p.relative_to(ROOT)) for p in (ROOT / "stream").rglob("*.py")
               if p != ROOT / "stream" / "settings.py" and reads_env.search(p.read_text())]
    assert readers == [], f"read the environment through stream.settings.Settings instead: {readers}"


def test_shared_data_location(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SKYSTREAM_SHARED_DATA", str(tmp_path / "elsewhere"))
    assert shared_data() == tmp_path / "elsewhere"
    monkeypatch.delenv("SKYSTREAM_SHARED_DATA")
    assert shared_data() == ROOT.parent / "shared" / "data"  # beside the source checkout
    # An installed wheel has no checkout around it: the working directory's shared/data.
    monkeypatch.setattr("stream.settings.CHECKOUT", tmp_path / "site-packages")
    monkeypatch.chdir(tmp_path)
    assert shared_data() == tmp_path / "shared" / "data"
    assert CHECKOUT == ROOT


def test_child_process_sees_the_same_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    _clear(monkeypatch)
    monkeypatch.setenv("SKYSTREAM_PARTITIONS", "9")  # overridden below: the child must not see 9
    monkeypatch.setenv("SKYSTREAM_APP_ID", "skystream")  # the default, as an operator may spell it out
    monkeypatch.setenv("SKYSTREAM_TOI_TABLE", "/data/toi.csv")  # inherited
    settings = Settings(broker="127.0.0.1:9999", partitions=4, state_dir=Path("/tmp/stack"))
    code = "from stream.settings import Settings; print(repr(Settings()))"
    child = subprocess.run([sys.executable, "-c", code], env=child_environment(settings), cwd=ROOT,
                           capture_output=True, text=True, timeout=60, check=True).stdout.strip()
    assert child == repr(settings)
    assert "toi_table='/data/toi.csv'" in child


def test_rare_composition_threshold_is_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    prediction = {"prediction_id": "p1", "file_id": "f1", "kind": "spectrum", "object": "4 Vesta",
                  "source": "a000004.[2]", "model": "smass", "model_version": 1, "main_group": "Other",
                  "bus_class": "V", "probabilities": {"Other": 0.7, "S": 0.2, "C": 0.1}}
    monkeypatch.delenv("SKYSTREAM_ALERT_RARE_THRESHOLD", raising=False)
    assert alerts_for(prediction) == []  # 0.7 < the default 0.8
    monkeypatch.setenv("SKYSTREAM_ALERT_RARE_THRESHOLD", "0.6")
    assert [a["reason"] for a in alerts_for(prediction)] == ["rare-composition"]
    assert alerts_for(prediction, Settings(alert_rare_threshold=0.9)) == []
