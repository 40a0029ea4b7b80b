"""Broker profiles (stream/runtime/profiles.py): the tansu workarounds run against tansu only."""

from __future__ import annotations

import asyncio
import base64
import uuid

import faust

from stream.runtime.profiles import KAFKA, TANSU, profile_for_cluster_id, resolve_profile
from stream.settings import Settings
from stream.worker import transport


def test_the_cluster_id_tells_tansu_from_kafka() -> None:
    kafka_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")  # how Kafka makes its ids
    assert len(kafka_id) == 22
    assert profile_for_cluster_id(kafka_id) is KAFKA
    assert profile_for_cluster_id("MkU3OEVBNTcwNTJENDM2Qk") is KAFKA
    assert profile_for_cluster_id("skystream-3f9a1c2e") is TANSU  # EmbeddedBroker's
    assert profile_for_cluster_id("tansu_cluster") is TANSU  # tansu's default
    assert profile_for_cluster_id(None) is KAFKA


def test_auto_resolves_the_embedded_broker_to_tansu(embedded_broker) -> None:
    profile = asyncio.run(resolve_profile(embedded_broker.bootstrap, Settings(broker_engine="auto")))
    assert profile is TANSU
    assert profile.fence_commits and profile.watch_broker and profile.stall_watch and profile.reset_rechecks


def test_a_named_engine_needs_no_broker() -> None:
    nowhere = "127.0.0.1:1"
    assert asyncio.run(resolve_profile(nowhere, Settings(broker_engine="kafka"))) is KAFKA
    assert asyncio.run(resolve_profile(nowhere, Settings(broker_engine="tansu"))) is TANSU


def test_settings_keep_precedence_within_a_profile() -> None:
    default = Settings(fetch_max_wait_ms=None, worker_stall_seconds=120.0, watch_reset_recheck_seconds=30.0)
    assert (TANSU.fetch_wait_ms(default), KAFKA.fetch_wait_ms(default)) == (50, 500)
    assert TANSU.fetch_wait_ms(Settings(fetch_max_wait_ms=200)) == 200
    assert (TANSU.stall_seconds(default), KAFKA.stall_seconds(default)) == (120.0, 0.0)
    assert TANSU.stall_seconds(Settings(worker_stall_seconds=0)) == 0  # 0 still turns it off
    assert (TANSU.recheck_seconds(default), KAFKA.recheck_seconds(default)) == (30.0, 0.0)


def test_the_kafka_profile_makes_the_workers_producer_idempotent() -> None:
    app = faust.App("profile-test", broker=transport.faust_broker_url("127.0.0.1:9092"))
    try:
        transport.use_profile(KAFKA, KAFKA.fetch_max_wait_ms)
        assert app.producer._settings_extra() == {"acks": "all", "enable_idempotence": True}
        transport.use_profile(TANSU, TANSU.fetch_max_wait_ms)
        assert "enable_idempotence" not in app.producer._settings_extra()
    finally:
        transport.use_profile(TANSU, TANSU.fetch_max_wait_ms)
