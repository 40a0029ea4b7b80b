"""Telling running workers about a registry change: the ModelUpdate record and its announcement on the
models topic (workers then switch without a restart)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import schemas
from stream.settings import TOPICS, Settings

__all__ = ["announce", "announce_async", "change_champion", "model_update"]


def model_update(registry: Any, task: str, version: str, action: str) -> dict[str, Any]:
    """The ModelUpdate record (schemas/avro/model_update.avsc) for a registry change, validated."""
    record = {
        "task": task,
        "version": version,
        "action": action,
        "registry": registry.uri,
        "sha256": registry.metadata(task, version)["sha256"],
        "at_ms": int(time.time() * 1000),
    }
    schemas.validate("ModelUpdate", record)
    return record


async def announce_async(settings: Settings, record: dict[str, Any]) -> None:
    """Publish a model update record to the models topic and wait for the broker's acknowledgement."""
    from aiokafka import AIOKafkaProducer

    from stream.runtime.kafka import bootstrap_servers, client_kwargs

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers(settings.broker or ""), acks="all",
                                **client_kwargs(settings))
    await producer.start()
    try:
        await producer.send_and_wait(TOPICS["models"], schemas.encode("ModelUpdate", record),
                                     key=record["task"].encode())
    finally:
        await producer.stop()


def announce(settings: Settings, record: dict[str, Any]) -> bool:
    """Publish ``record`` (a ModelUpdate) on the models topic; False when no broker is configured
    (then there is nobody to tell: workers load the champion when they start)."""
    if not settings.broker:
        return False
    asyncio.run(announce_async(settings, record))
    return True


def change_champion(registry: Any, task: str, action: str, version: str | None = None) -> tuple[str | None, str]:
    """Promote ``version`` (action 'promote') or roll back (action 'rollback') the champion of ``task``;
    returns (previous champion, new champion). A version whose file is corrupt is refused before the
    alias moves (RegistryError or Rejected)."""
    before = registry.champion(task) if registry.versions(task) else None
    if action == "promote":
        if version is None:
            raise ValueError("promote needs a version")
        registry.load(task, version)
        registry.promote(task, version)
    elif action == "rollback":
        version = registry.rollback(task)
    else:
        raise ValueError(f"unknown action {action!r}")
    return before, version
