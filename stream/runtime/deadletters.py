"""Dead-letter records: every failure becomes one, with the stage, the reason and the input reference."""

from __future__ import annotations

import os
import socket
import time
from typing import Any

from stream.errors import Rejected
from stream.runtime.metrics import DEAD_LETTERS

__all__ = ["rejected_record"]

PAYLOAD_LIMIT = 64 * 1024
WORKER = f"{socket.gethostname()}:{os.getpid()}"


def rejected_record(
    stage: str,
    exc: BaseException,
    *,
    uri: str | None = None,
    file_id: str | None = None,
    topic: str | None = None,
    payload: bytes | None = None,
) -> dict[str, Any]:
    """A ``Rejected`` message for ``exc``; unexpected exceptions get reason 'internal-error'."""
    reason = exc.reason if isinstance(exc, Rejected) else "internal-error"
    DEAD_LETTERS.labels(stage=stage, reason=reason).inc()
    return {
        "stage": stage,
        "reason": reason,
        "error": str(exc) or type(exc).__name__,
        "error_type": type(exc).__name__,
        "uri": uri,
        "file_id": file_id,
        "topic": topic,
        "payload": payload[:PAYLOAD_LIMIT] if payload is not None else None,
        "worker": WORKER,
        "at_ms": int(time.time() * 1000),
    }
