"""Security the broker enforces: SASL_SSL (SCRAM-SHA-512) with a CA of our own and per-role ACLs, on a real
Apache Kafka on loopback (tests/kafka_security.py), with the real `skystream watch` and `skystream worker`.

What a user depends on: nobody without a password gets in (nor through the broker's other listeners); a
client that does not trust the broker's CA does not talk to it; each role can do its job and no more (a
subscriber cannot announce models, the watcher cannot forge predictions); a worker with a wrong password
says so, and once given the right one processes every file waiting for it; no password reaches a log.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    KafkaError,
    TopicAuthorizationFailedError,
)
from helpers import wait_until
from kafka_security import ROLES, SecureKafka, make_pki, running_secure_kafka
from stack import Stack

from stream.devstack.localstack import collect
from stream.runtime.embedded_broker import free_port
from stream.runtime.kafka import client_kwargs, ensure_topics
from stream.settings import TOPICS, Settings, child_environment

pytestmark = pytest.mark.kafka

N_FILES = 20
REFUSED = 15.0  # seconds a refused client may take to give up


@pytest.fixture(scope="module")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureKafka]:
    """One SASL_SSL + ACL broker for the module: topics created, every role's ACLs in force."""
    yield from running_secure_kafka(tmp_path_factory.mktemp("secure-kafka"))


# -- clients -------------------------------------------------------------------------------------------------


async def _produce(settings: Settings, topic: str, value: bytes = b"security-test", key: bytes = b"k") -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.broker, acks="all", request_timeout_ms=10_000,
                                **client_kwargs(settings))
    await producer.start()
    try:
        async with asyncio.timeout(30):
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


async def _read_group(settings: Settings, topic: str, group: str, want: bytes) -> None:
    """Read ``topic`` in consumer group ``group`` until ``want`` comes by, then commit."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=settings.broker, group_id=group,
                                auto_offset_reset="earliest", enable_auto_commit=False, **client_kwargs(settings))
    await consumer.start()
    try:
        async with asyncio.timeout(30):
            while True:
                batches = await consumer.getmany(timeout_ms=500)
                if any(m.value == want for msgs in batches.values() for m in msgs):
                    break
        await consumer.commit()
    finally:
        await consumer.stop()


async def _fetch(settings: Settings, topic: str) -> None:
    """Fetch partition 0 of ``topic`` without a group (as the watcher and the model follower do)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.broker, group_id=None, auto_offset_reset="earliest",
                                enable_auto_commit=False, **client_kwargs(settings))
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, 0)])
        async with asyncio.timeout(REFUSED):
            # A topic the user may not even DESCRIBE is refused in the metadata, which a consumer only
            # notes (it then fetches nothing); one it may see but not READ is refused by the fetch itself.
            await consumer._client.force_metadata_update()
            if topic in consumer._client.cluster.unauthorized_topics:
                raise TopicAuthorizationFailedError(topic)
            await consumer.getmany(timeout_ms=3000)
    finally:
        await consumer.stop()


async def _connect(settings: Settings) -> list[str]:
    """Bootstrap an admin client and list the topics it may see."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.broker, request_timeout_ms=5000,
                                **client_kwargs(settings))
    try:
        async with asyncio.timeout(REFUSED):
            await admin.start()
            return await admin.list_topics()
    finally:
        await admin.close()


def _refused(settings: Settings, caplog: pytest.LogCaptureFixture | None = None, why: str = "") -> BaseException:
    """The error of a client that must not get in (it never lists any topic); with ``why``, the reason
    aiokafka logs for it must contain that text (the exception itself only says "Unable to bootstrap")."""
    if caplog is not None:
        caplog.clear()
    with pytest.raises((KafkaError, OSError, TimeoutError)) as caught:
        topics = asyncio.run(_connect(settings))
        pytest.fail(f"{settings.security_protocol} client got in and sees {topics}")
    if why:
        assert caplog is not None
        assert why.lower() in caplog.text.lower(), f"refused, but not for {why!r}: {caplog.text[-2000:]}"
    return caught.value


# -- who gets in ---------------------------------------------------------------------------------------------


def test_unauthenticated_clients_are_refused(secure_kafka: SecureKafka, caplog: pytest.LogCaptureFixture) -> None:
    worker = secure_kafka.settings("worker")
    assert set(TOPICS.values()) <= set(asyncio.run(_connect(worker))), "the right credentials must get in"
    # No TLS, no SASL, to the SASL_SSL port: the broker hangs up on the first request.
    _refused(Settings(broker=secure_kafka.bootstrap), caplog, "closed")
    # TLS that trusts the CA, but no SASL: the broker answers nothing but the SASL handshake.
    _refused(Settings(broker=secure_kafka.bootstrap, security_protocol="SSL", ssl_cafile=str(secure_kafka.pki.ca)))
    # SASL over TLS with a wrong password: SCRAM fails, and the client is told so.
    _refused(secure_kafka.settings("worker", password="not-the-password"), caplog,
             "Authentication failed during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512")
    # A user of another role cannot borrow the worker's name either (SCRAM binds user and password).
    _refused(secure_kafka.settings("worker", password=secure_kafka.passwords["subscriber"]), caplog,
             "invalid credentials")
    # The controller listener takes only the controller's PLAIN login: not anonymous, not admin's SCRAM,
    # not admin's password over PLAIN.
    _refused(Settings(broker=secure_kafka.controller_bootstrap))
    _refused(secure_kafka.settings("admin", broker=secure_kafka.controller_bootstrap,
                                   security_protocol="SASL_PLAINTEXT"), caplog, "UnsupportedSaslMechanism")
    _refused(secure_kafka.settings("admin", broker=secure_kafka.controller_bootstrap,
                                   security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN"), caplog,
             "Authentication failed")


def test_plaintext_listener_is_anonymous_and_allowed_nothing(secure_kafka: SecureKafka) -> None:
    """LocalKafka's PLAINTEXT listener authenticates nobody: its clients are User:ANONYMOUS, which no
    ACL names, so it is no way around them (kafka_security.py explains the listeners)."""
    anonymous = Settings(broker=secure_kafka.plaintext_bootstrap)
    assert asyncio.run(_connect(anonymous)) == [], "ANONYMOUS must not even see the topics"
    for topic in (TOPICS["models"], TOPICS["predictions"], TOPICS["files"]):
        with pytest.raises(TopicAuthorizationFailedError):
            asyncio.run(_produce(anonymous, topic))
    with pytest.raises(TopicAuthorizationFailedError):
        asyncio.run(_fetch(anonymous, TOPICS["alerts"]))


def test_client_that_does_not_trust_the_ca_is_refused(secure_kafka: SecureKafka,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    # Another CA, and the system's CAs (ssl_cafile unset): neither verifies the broker's certificate, so
    # the client hangs up before it sends its password.
    _refused(secure_kafka.settings("admin", ssl_cafile=str(secure_kafka.pki.other_ca)), caplog,
             "CERTIFICATE_VERIFY_FAILED")
    _refused(secure_kafka.settings("admin", ssl_cafile=None), caplog, "CERTIFICATE_VERIFY_FAILED")


def test_both_pki_makers_give_a_certificate_the_clients_accept(tmp_path: Path) -> None:
    """The cryptography and the openssl PKI: a TLS server with the broker's PEM keystore is accepted by
    SkyStream's own client context (CA, chain, the 127.0.0.1 address) and refused with the other CA."""
    import socket
    import ssl
    import threading

    from aiokafka.helpers import create_ssl_context

    makers = [False, True] if shutil.which("openssl") else [False]
    for use_openssl in makers:
        pki = make_pki(tmp_path / f"openssl-{use_openssl}", use_openssl=use_openssl)
        server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_ctx.load_cert_chain(pki.keystore)  # key and chain in one PEM file, as Kafka reads it
        with socket.create_server(("127.0.0.1", 0)) as listener:
            port = listener.getsockname()[1]

            def serve(server_ctx: ssl.SSLContext = server_ctx, n: int = 2) -> None:
                for _ in range(n):
                    conn, _ = listener.accept()
                    try:
                        with server_ctx.wrap_socket(conn, server_side=True):
                            pass
                    except (ssl.SSLError, OSError):
                        pass

            server = threading.Thread(target=serve, daemon=True)
            server.start()
            for cafile, trusted in ((pki.ca, True), (pki.other_ca, False)):
                client_ctx = create_ssl_context(cafile=str(cafile))
                with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
                    if trusted:
                        client_ctx.wrap_socket(raw, server_hostname="127.0.0.1").close()
                    else:
                        with pytest.raises(ssl.SSLCertVerificationError):
                            client_ctx.wrap_socket(raw, server_hostname="127.0.0.1")
            server.join(10)


# -- what each role may do -----------------------------------------------------------------------------------


def test_subscriber_reads_alerts_but_cannot_announce_models(secure_kafka: SecureKafka) -> None:
    subscriber, worker, trainer = (secure_kafka.settings(r) for r in ("subscriber", "worker", "trainer"))
    alert = f"alert-{time.time_ns()}".encode()
    asyncio.run(_produce(worker, TOPICS["alerts"], alert))
    asyncio.run(_read_group(subscriber, TOPICS["alerts"], "subscriber-alerts", alert))
    # A filter topic (skystream.alerts.<name>): the worker makes it on first use, the subscriber reads it.
    filtered = f"{TOPICS['alerts']}.security-test"
    asyncio.run(ensure_topics(worker.broker or "", worker, extra=[filtered]))
    asyncio.run(_produce(worker, filtered, alert))
    asyncio.run(_read_group(subscriber, filtered, "subscriber-filtered", alert))

    with pytest.raises(TopicAuthorizationFailedError):
        asyncio.run(_produce(subscriber, TOPICS["models"]))
    for topic in (TOPICS["predictions"], TOPICS["files"], TOPICS["models"]):
        with pytest.raises(TopicAuthorizationFailedError):
            asyncio.run(_fetch(subscriber, topic))
    # Only its own groups: not the workers' (it could otherwise move their committed offsets).
    with pytest.raises(GroupAuthorizationFailedError):
        asyncio.run(_read_group(subscriber, TOPICS["alerts"], secure_kafka.app_id, alert))
    # Training is the one role that announces models; the workers cannot.
    asyncio.run(_produce(trainer, TOPICS["models"], b"security-test: not a ModelUpdate", key=b"security-test"))
    with pytest.raises(TopicAuthorizationFailedError):
        asyncio.run(_produce(worker, TOPICS["models"]))


def test_watcher_cannot_write_predictions_worker_can(secure_kafka: SecureKafka) -> None:
    watcher, worker = secure_kafka.settings("watcher"), secure_kafka.settings("worker")
    with pytest.raises(TopicAuthorizationFailedError):
        asyncio.run(_produce(watcher, TOPICS["predictions"]))
    for topic in (TOPICS["alerts"], TOPICS["models"], TOPICS["features.spectrum"]):
        with pytest.raises(TopicAuthorizationFailedError):
            asyncio.run(_produce(watcher, topic))
    asyncio.run(_produce(worker, TOPICS["predictions"], b"security-test: not a Prediction"))
    # The watcher's own jobs: file events and dead letters out, outcomes in.
    asyncio.run(_produce(watcher, TOPICS["files"], b"security-test: not a FileEvent"))
    asyncio.run(_fetch(watcher, TOPICS["predictions"]))
    with pytest.raises(TopicAuthorizationFailedError):
        asyncio.run(_produce(worker, TOPICS["files"]))


# -- the real processes --------------------------------------------------------------------------------------


class Deployment(Stack):
    """`skystream watch` and `skystream worker`, each with its own credentials, against the secure broker."""

    def __init__(self, kafka: SecureKafka, tmp: Path) -> None:
        super().__init__(tmp, kafka.bootstrap)
        self.kafka = kafka

    def role_env(self, role: str, password: str | None = None) -> dict[str, str]:
        """The environment of a process that logs in as ``role`` (with ``password``, else the right one)."""
        return child_environment(self.kafka.settings(role, password, state_dir=self.state,
                                                     registry=str(self.registry), sources=str(self.inbox)))

    def start_worker(self, name: str = "worker", password: str | None = None) -> subprocess.Popen[bytes]:
        """`skystream worker` logged in as the worker role."""
        return self._start(name, "worker", "--metrics-port", str(free_port()), env=self.role_env("worker", password))

    def start_watcher(self) -> subprocess.Popen[bytes]:
        """`skystream watch` logged in as the watcher role."""
        self.watcher = self._start("watch", "watch", str(self.inbox), "--settle", "0", "--interval", "0.5",
                                   "--metrics-port", "0", env=self.role_env("watcher"))
        return self.watcher

    def stop_all(self) -> None:
        """Stop every process, newest first."""
        for proc in reversed(self.procs):
            self.stop_process(proc)


@pytest.fixture()
def deployment(secure_kafka: SecureKafka, tmp_path: Path) -> Iterator[Deployment]:
    d = Deployment(secure_kafka, tmp_path)
    try:
        yield d
    finally:
        d.stop_all()


def _predicted(deployment: Deployment, ids: set[str], timeout: float) -> set[str]:
    """The ids among ``ids`` with a prediction on the topic, read as admin for up to ``timeout`` seconds."""
    out = asyncio.run(collect(deployment.kafka.bootstrap, lambda c: ids <= {p["file_id"] for p in c.predictions},
                              timeout, settings=deployment.kafka.settings("admin")))
    return ids & {p["file_id"] for p in out.predictions}


# What a worker must print, in SkyStream's own words, when the broker refuses its login: not "unreachable",
# but whose credentials were refused and which variables to check (stream/runtime/kafka.py).
AUTH_FAILED = re.compile(r"refused the credentials of user 'worker'.*SKYSTREAM_KAFKA_SASL_PASSWORD")


def test_worker_with_wrong_password_says_so_then_processes_every_file(deployment: Deployment,
                                                                     smass_dir: Path) -> None:
    files = sorted(smass_dir.iterdir())[:N_FILES]
    ids = {hashlib.sha256(f.read_bytes()).hexdigest() for f in files}
    wrong = f"wrong-{os.getpid()}-{time.time_ns()}"
    deployment.start_watcher()
    bad = deployment.start_worker("worker-wrong-password", password=wrong)
    deployment.add(files)
    # The watcher (its own, right credentials) publishes every file while no worker can get in.
    wait_until(lambda: ids <= deployment.published(), 90, f"the watcher to publish every file ({deployment.logs})")
    try:
        wait_until(lambda: AUTH_FAILED.search(deployment.log("worker-wrong-password")), 60,
                   "the worker to say that authentication failed")
    finally:
        print("worker with a wrong password logged:\n" + deployment.log("worker-wrong-password")[-4000:])
    assert not _predicted(deployment, ids, 3), "no prediction can exist while the only worker is locked out"
    assert bad.poll() is None, "the supervisor keeps trying (an operator fixes the secret, not the process)"
    deployment.stop_process(bad)

    good = deployment.start_worker("worker")
    got = _predicted(deployment, ids, 180)
    assert ids <= got, (f"{len(ids - got)} of {N_FILES} good spectra got no prediction after the worker got the "
                        f"right password: lost (logs in {deployment.logs})")
    assert good.poll() is None
    wait_until(lambda: ids <= deployment.resolved(), 60, "the watcher's ledger to see every outcome")
    deployment.stop_all()

    # No password in any log: the processes', and the broker's.
    secrets = [*deployment.kafka.passwords.values(), deployment.kafka.controller_password, wrong]
    logs = {p.name: p.read_text(errors="replace") for p in deployment.logs.glob("*.log")}
    logs["broker server.log"] = (deployment.kafka.kafka.nodes[0].directory / "server.log").read_text(errors="replace")
    leaked = {name for name, text in logs.items() for s in secrets if s in text}
    assert not leaked, f"a password appears in {sorted(leaked)}"


def test_password_is_not_in_the_settings_repr(secure_kafka: SecureKafka, monkeypatch: pytest.MonkeyPatch) -> None:
    password = secure_kafka.passwords["worker"]
    for name, value in child_environment(secure_kafka.settings("worker")).items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.sasl_password == password and settings.sasl_username == "worker"
    assert password not in repr(settings) and password not in str(settings)
    assert password in settings.secrets(), "redaction must know the password"
    assert ROLES  # every role's password is one of these hex tokens, none in the repr
    assert all(p not in repr(secure_kafka.settings(r)) for r, p in secure_kafka.passwords.items())
