"""A throwaway PKI and an Apache Kafka that enforces SASL_SSL (SCRAM-SHA-512) and ACLs, for the security tests.

``SecureKafka`` starts a :class:`LocalKafka` whose clients must come through the ``SECURE`` listener with TLS
(a certificate of a CA made here, for 127.0.0.1/localhost) and a SCRAM-SHA-512 user per role (ROLES); a
``StandardAuthorizer`` with ``allow.everyone.if.no.acl.found=false`` then allows each role only what
:func:`role_acls` grants (docs/kafka-security.md has the table).

The listeners and why none of them is a way around the ACLs:

* ``SECURE`` (SASL_SSL): every client, and the broker itself (inter-broker traffic as ``admin``).
* ``CONTROLLER``: SASL_PLAINTEXT with the PLAIN mechanism and one static user, ``controller`` (KRaft
  cannot use SCRAM on the controller listener: SCRAM users live in the metadata the controller serves).
  The broker registers with it as that user, so ``super.users`` names ``controller``, not ANONYMOUS;
  a client without the controller password is refused there.
* ``PLAINTEXT``: LocalKafka always opens it (it also tells when the node is up). It authenticates no one:
  its clients are ``User:ANONYMOUS``, which is no super user and has no ACL, so with
  ``allow.everyone.if.no.acl.found=false`` it sees no topic and may read, write or join nothing
  (tests/test_kafka_security.py proves it). A production cluster should not open it at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.protocol.admin import CreateAclsRequest, DescribeAclsRequest

from stream.runtime.kafka import bootstrap_servers, client_kwargs, ensure_topics
from stream.runtime.local_kafka import LocalKafka
from stream.settings import TOPICS, Settings

__all__ = ["ACL", "LISTENER", "MECHANISM", "ROLES", "Pki", "SecureKafka", "make_pki", "role_acls",
           "running_secure_kafka"]

LISTENER = "SECURE"
MECHANISM = "SCRAM-SHA-512"
ROLES = ("admin", "watcher", "worker", "subscriber", "trainer")
PREFIX = "skystream."  # every SkyStream topic's name starts with it (stream/settings.py TOPICS)

# -- a throwaway PKI ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """PEM files: the CA clients trust, the broker's keystore (key + chain), and a CA that signed nothing here."""

    ca: Path
    keystore: Path
    other_ca: Path


def make_pki(directory: Path, use_openssl: bool = False) -> Pki:
    """A CA, a broker certificate for 127.0.0.1 and localhost signed by it (with its key, in one PEM file
    that Kafka reads as ``ssl.keystore.type=PEM``: no keytool), and an unrelated CA; with the
    ``cryptography`` package, else (or with ``use_openssl``) the openssl command."""
    directory.mkdir(parents=True, exist_ok=True)
    if not use_openssl:
        try:
            import cryptography  # noqa: F401
        except ImportError:
            use_openssl = True
    if use_openssl:
        return _openssl_pki(directory)
    return _cryptography_pki(directory)


def _cryptography_pki(d: Path) -> Pki:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.now(UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def key() -> rsa.RSAPrivateKey:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def usage(ca: bool) -> x509.KeyUsage:
        return x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=not ca,
                             data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
                             encipher_only=False, decipher_only=False)

    def builder(subject: str, issuer: str, public: Any) -> x509.CertificateBuilder:
        return (x509.CertificateBuilder().subject_name(name(subject)).issuer_name(name(issuer)).public_key(public)
                .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
                .not_valid_after(now + timedelta(days=2))
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False))

    def make_ca(cn: str) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
        k = key()
        cert = (builder(cn, cn, k.public_key())
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(usage(True), critical=True)
                .sign(k, hashes.SHA256()))
        return k, cert

    ca_key, ca_cert = make_ca("SkyStream test CA")
    _, other_cert = make_ca("Some other CA")
    broker_key = key()
    broker_cert = (builder("localhost", "SkyStream test CA", broker_key.public_key())
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(usage(False), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                         ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                   .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                               x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                  critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                                  critical=False)
                   .sign(ca_key, hashes.SHA256()))

    def pem(cert: x509.Certificate) -> bytes:
        return cert.public_bytes(serialization.Encoding.PEM)

    (d / "ca.pem").write_bytes(pem(ca_cert))
    (d / "other-ca.pem").write_bytes(pem(other_cert))
    # Unencrypted PKCS#8 key, then the chain: Kafka's PEM keystore (no ssl.key.password then).
    key_pem = broker_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption())
    keystore = d / "broker.pem"
    keystore.write_bytes(key_pem + pem(broker_cert) + pem(ca_cert))
    keystore.chmod(0o600)
    return Pki(d / "ca.pem", keystore, d / "other-ca.pem")


def _openssl_pki(d: Path) -> Pki:
    if shutil.which("openssl") is None:
        pytest.skip("neither the cryptography package nor the openssl command is available")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, cwd=d, capture_output=True)

    for ca, cn in (("ca", "SkyStream test CA"), ("other-ca", "Some other CA")):
        run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{ca}.key", "-out", f"{ca}.pem",
            "-days", "2", "-subj", f"/CN={cn}", "-addext", "basicConstraints=critical,CA:TRUE,pathlen:0",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature")
    (d / "broker.ext").write_text("basicConstraints=critical,CA:FALSE\n"
                                  "keyUsage=critical,digitalSignature,keyEncipherment\n"
                                  "extendedKeyUsage=serverAuth,clientAuth\n"
                                  "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
                                  "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "broker.key", "-out", "broker.csr", "-subj", "/CN=localhost")
    run("x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "broker.crt", "-days", "2", "-extfile", "broker.ext")
    run("pkcs8", "-topk8", "-nocrypt", "-in", "broker.key", "-out", "broker.pk8")
    keystore = d / "broker.pem"
    keystore.write_bytes((d / "broker.pk8").read_bytes() + (d / "broker.crt").read_bytes()
                         + (d / "ca.pem").read_bytes())
    keystore.chmod(0o600)
    return Pki(d / "ca.pem", keystore, d / "other-ca.pem")


# -- the ACLs of each role ---------------------------------------------------------------------------------

# Kafka's wire codes (org.apache.kafka.common.acl / resource).
_RESOURCE = {"topic": 2, "group": 3, "cluster": 4}
_OPERATION = {"all": 2, "read": 3, "write": 4, "create": 5, "describe": 8, "idempotent_write": 12}
_LITERAL, _PREFIXED = 3, 4
_ALLOW = 3


@dataclass(frozen=True)
class ACL:
    """One ALLOW rule: ``User:<user>`` may ``operation`` on the ``resource`` named (or prefixed) ``name``."""

    user: str
    operation: str
    resource: str
    name: str
    prefixed: bool = False

    def __str__(self) -> str:
        return f"User:{self.user} {self.operation.upper()} {self.resource} {self.name}{'*' if self.prefixed else ''}"


def role_acls(app_id: str = "skystream", users: dict[str, str] | None = None) -> list[ACL]:
    """What each role may do, least privilege (docs/kafka-security.md). ``users`` maps role -> user name
    (default: the role's own name); ``app_id`` is the workers' consumer group (SKYSTREAM_APP_ID).

    Nobody but ``admin`` (a super user) creates the topics: the operator does that once, and the
    processes' own topic creation (stream/runtime/kafka.py ensure_topics) finds them all and creates
    nothing. The service roles can see every SkyStream topic (DESCRIBE on the prefix, which reveals names
    and partitions, no data): they list the topics to tell a broker that lost its state, and one they
    could not see would look missing and be created, which the broker would refuse.
    """
    u = {role: role for role in ROLES} | dict(users or {})
    t = TOPICS
    rules: list[ACL] = []

    def allow(role: str, operation: str, resource: str, name: str, prefixed: bool = False) -> None:
        rules.append(ACL(u[role], operation, resource, name, prefixed))

    for role in ("watcher", "worker", "trainer"):
        allow(role, "describe", "topic", PREFIX, prefixed=True)
    # The watcher publishes file events and the dead letters of files it refuses, and follows the
    # outcomes (stream/ingest/resolver.py: predictions and rejected, no consumer group).
    for key in ("files", "rejected"):
        allow("watcher", "write", "topic", t[key])
    for key in ("predictions", "rejected"):
        allow("watcher", "read", "topic", t[key])
    # Workers: file events -> features -> predictions, alerts (and the filter topics alerts.<name>, made on
    # first use), dead letters; the model announcements; a star's sectors and the stars table's changelog
    # (read back when a worker takes over a star); their group (offsets are committed there).
    for key in ("files", "features.spectrum", "features.lightcurve", "models", "alerts", "stars", "stars.state"):
        allow("worker", "read", "topic", t[key])
    for key in ("features.spectrum", "features.lightcurve", "predictions", "alerts", "rejected", "stars",
                "stars.state"):
        allow("worker", "write", "topic", t[key])
    allow("worker", "write", "topic", f"{t['alerts']}.", prefixed=True)
    allow("worker", "create", "topic", f"{t['alerts']}.", prefixed=True)
    allow("worker", "read", "group", app_id)
    # Subscribers: the alert topics only (READ implies DESCRIBE), and groups named after themselves.
    allow("subscriber", "read", "topic", t["alerts"])
    allow("subscriber", "read", "topic", f"{t['alerts']}.", prefixed=True)
    allow("subscriber", "read", "group", f"{u['subscriber']}-", prefixed=True)
    # Training: the only writer of the model announcements; reads the curated labels and the models.
    allow("trainer", "write", "topic", t["models"])
    for key in ("models", "labels"):
        allow("trainer", "read", "topic", t[key])
    return rules


async def create_acls(admin_settings: Settings, rules: list[ACL]) -> None:
    """Create ``rules`` through the broker (CreateAcls, forwarded to the KRaft controller) as ``admin``."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers(admin_settings.broker or ""),
                                **client_kwargs(admin_settings))
    await admin.start()
    try:
        for rule in rules:
            request = CreateAclsRequest(_RESOURCE[rule.resource], rule.name, _PREFIXED if rule.prefixed else _LITERAL,
                                        f"User:{rule.user}", "*", _OPERATION[rule.operation], _ALLOW)
            response = await admin._send_request(request)  # aiokafka has no public create_acls
            for error_code, message in response.creation_responses:
                if error_code:
                    raise RuntimeError(f"CreateAcls {rule} failed: error {error_code} {message}")
        # The broker answers authorization from its metadata image: wait until it has every rule.
        for _ in range(100):
            if await _acl_count(admin) >= len(rules):
                return
            await asyncio.sleep(0.1)
        raise RuntimeError("the broker does not show the ACLs just created")
    finally:
        await admin.close()


async def _acl_count(admin: AIOKafkaAdminClient) -> int:
    # Filter ANY resource / ANY name / ANY pattern / any principal, host, ANY operation / ANY permission.
    response = await admin._send_request(DescribeAclsRequest(1, None, 1, None, None, 1, 1))
    if response.error_code:
        raise RuntimeError(f"DescribeAcls failed: error {response.error_code} {response.error_message}")
    return sum(len(resource[-1]) for resource in response.resources)


# -- the broker ----------------------------------------------------------------------------------------------


def _write_cluster_id(state_dir: Path) -> None:
    """A cluster id that does not start with '-' (Kafka's own Uuid.randomUuid avoids those): LocalKafka's
    ``_new_cluster_id`` does not, and then ``StorageTool format -t -xyz`` takes the id for an option and
    fails (1 fresh state directory in 64; reported, not fixed here: local_kafka.py takes additive changes only)."""
    import base64
    import uuid

    state_dir.mkdir(parents=True, exist_ok=True)
    if not (state_dir / "cluster.id").exists():
        while (cid := base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")).startswith("-"):
            pass
        (state_dir / "cluster.id").write_text(cid)


class SecureKafka:
    """A one-node Kafka that only SCRAM users over TLS may use, each as far as its role's ACLs allow."""

    def __init__(self, state_dir: Path, app_id: str = "skystream", partitions: int = 2) -> None:
        self.state_dir = Path(state_dir)
        self.app_id = app_id
        self.partitions = partitions
        self.pki = make_pki(self.state_dir / "pki")
        # Hex: no character that the JAAS or the --add-scram syntax would need quoted.
        self.passwords = {role: secrets.token_hex(16) for role in ROLES}
        self.controller_password = secrets.token_hex(16)
        scram = [arg for role in ROLES
                 for arg in ("--add-scram", f"{MECHANISM}=[name={role},password={self.passwords[role]}]")]
        _write_cluster_id(self.state_dir / "kafka")
        self.kafka = LocalKafka(self.state_dir / "kafka", settings=Settings(partitions=partitions),
                                listeners={LISTENER: "SASL_SSL"}, extra_properties=self._properties(),
                                format_args=scram)
        self.acls = role_acls(app_id)

    def _properties(self) -> dict[str, str]:
        secure = f"listener.name.{LISTENER.lower()}"
        return {
            # CONTROLLER becomes SASL_PLAINTEXT (PLAIN, one static user); PLAINTEXT stays, but authenticates
            # nobody and ANONYMOUS is granted nothing (module docstring).
            "listener.security.protocol.map": f"PLAINTEXT:PLAINTEXT,CONTROLLER:SASL_PLAINTEXT,{LISTENER}:SASL_SSL",
            "sasl.mechanism.controller.protocol": "PLAIN",
            "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
            "listener.name.controller.plain.sasl.jaas.config":
                "org.apache.kafka.common.security.plain.PlainLoginModule required "
                f'username="controller" password="{self.controller_password}" '
                f'user_controller="{self.controller_password}";',
            # Broker to broker over TLS as the SCRAM user admin (created at format time: --add-scram).
            "inter.broker.listener.name": LISTENER,
            "sasl.mechanism.inter.broker.protocol": MECHANISM,
            f"{secure}.sasl.enabled.mechanisms": MECHANISM,
            f"{secure}.{MECHANISM.lower()}.sasl.jaas.config":
                "org.apache.kafka.common.security.scram.ScramLoginModule required "
                f'username="admin" password="{self.passwords["admin"]}";',
            f"{secure}.ssl.keystore.type": "PEM",
            f"{secure}.ssl.keystore.location": str(self.pki.keystore),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(self.pki.ca),
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "allow.everyone.if.no.acl.found": "false",
            "super.users": "User:admin;User:controller",
        }

    @property
    def bootstrap(self) -> str:
        """The SASL_SSL listener's address."""
        return self.kafka.listener_bootstrap(LISTENER)

    @property
    def controller_bootstrap(self) -> str:
        """The controller listener's address (SASL_PLAINTEXT, the controller user only)."""
        return f"127.0.0.1:{self.kafka.nodes[0].controller_port}"

    @property
    def plaintext_bootstrap(self) -> str:
        """The unauthenticated PLAINTEXT listener's address (ANONYMOUS: nothing allowed)."""
        return self.kafka.bootstrap

    def settings(self, role: str, password: str | None = None, **overrides: Any) -> Settings:
        """Settings of a SkyStream process running as ``role`` (``password``: a wrong one, for tests)."""
        fields: dict[str, Any] = dict(
            broker=self.bootstrap, security_protocol="SASL_SSL", sasl_mechanism=MECHANISM, sasl_username=role,
            sasl_password=self.passwords[role] if password is None else password, ssl_cafile=str(self.pki.ca),
            partitions=self.partitions, app_id=self.app_id, broker_engine="kafka")
        fields.update(overrides)
        return Settings(**fields)

    def start(self) -> SecureKafka:
        """Start the broker, create the topics as admin, then the ACLs of every role."""
        self.kafka.start()
        self.wait_secure_listener()
        admin = self.settings("admin")
        asyncio.run(ensure_topics(self.bootstrap, admin, timeout=60.0))
        asyncio.run(create_acls(admin, self.acls))
        return self

    def wait_secure_listener(self, timeout: float = 60.0) -> None:
        """LocalKafka waits for the PLAINTEXT port; the SASL_SSL one opens once the ACLs are loaded."""
        import socket
        import time

        host, port = self.bootstrap.split(":")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection((host, int(port)), timeout=0.5):
                return
            time.sleep(0.1)
        raise RuntimeError(f"the SASL_SSL listener {self.bootstrap} did not open within {timeout:.0f} s")

    def stop(self) -> None:
        """Stop the broker."""
        self.kafka.stop()

    def __enter__(self) -> SecureKafka:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def running_secure_kafka(state_dir: Path, app_id: str = "skystream-secure") -> Iterator[SecureKafka]:
    """A started :class:`SecureKafka` for a fixture to yield (skips without java), stopped afterwards."""
    if not LocalKafka.java_available():
        pytest.skip("no java on PATH: Apache Kafka cannot run")
    with SecureKafka(state_dir, app_id=app_id) as kafka:
        yield kafka
