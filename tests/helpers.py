"""Small helpers shared by the tests (imported as a plain module: tests/ is on sys.path)."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.25) -> T:
    """Poll ``predicate`` every ``interval`` seconds until it returns something truthy, and return that;
    AssertionError naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (result := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)
    return result


def load_module(path: Path) -> ModuleType:
    """deploy/ scripts are standalone files, not packages: load them by path."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module


def process_gone(pid: int) -> bool:
    """The process has exited (a zombie waiting for a parent that is not this test counts as exited)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            return "zombie" in status.read().lower()
    except FileNotFoundError:
        return True


# Figures a test measured (fault recovery times, ...), printed at the end of the run by conftest's
# pytest_terminal_summary, so CI logs show them without `pytest -s`.
REPORTED: list[str] = []


def report(line: str) -> None:
    """Print ``line`` in the run's closing summary (and now, under ``pytest -s``)."""
    REPORTED.append(line)
    print(line)


def trapezoid(time_: np.ndarray, period: float, epoch: float, duration: float, depth: float) -> np.ndarray:
    """Relative flux of a trapezoidal transit (ingress and egress each 10 % of the duration), for
    injecting planets into real light curves."""
    x = np.abs((time_ - epoch + 0.5 * period) % period - 0.5 * period)
    ramp = 0.1 * duration
    drop = np.clip((0.5 * duration - x) / ramp, 0.0, 1.0)
    drop[x <= 0.5 * duration - ramp] = 1.0
    return 1.0 - depth * drop


def predict_file(path: Path, scorer: Any, detected_at_ms: int = 1) -> tuple[str, dict[str, Any]]:
    """(kind, Prediction) of one file through the stream's own extract and scorer, as a worker makes it."""
    from stream.features import detect

    data = path.read_bytes()
    kind = detect.detect_kind(data[: detect.HEAD_BYTES])
    _, features = detect.extract(kind, data, uri=str(path), file_id=hashlib.sha256(data).hexdigest(),
                                 detected_at_ms=detected_at_ms)
    (prediction,) = scorer.score(kind, [features])
    return kind, prediction


async def produce_alerts(broker: str, alerts: list[dict[str, Any]]) -> None:
    """Publish Alert records on the alerts topic, one at a time, keyed by file_id as workers key them."""
    from aiokafka import AIOKafkaProducer

    import schemas
    from stream.runtime.kafka import bootstrap_servers
    from stream.settings import TOPICS

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers(broker))
    await producer.start()
    try:
        for a in alerts:
            await producer.send_and_wait(TOPICS["alerts"], schemas.encode("Alert", a), key=a["file_id"].encode())
    finally:
        await producer.stop()
