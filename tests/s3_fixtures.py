"""A real S3 server on loopback (moto) for tests, and a proxy that breaks connections on purpose.

Import the fixtures into a test module: ``from s3_fixtures import moto_endpoint, s3_env, ...``.
"""

from __future__ import annotations

import logging
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import boto3
import pytest

from stream.ingest import s3

FAKE_KEY_ID = "AKIAFAKETESTKEY12345"
FAKE_SECRET = "fake-secret-do-not-log-8d1f0c"


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 and a free port, for the whole session."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def isolate_aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No credentials or config from the machine: only what a test sets."""
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_RETRY_MODE", "AWS_MAX_ATTEMPTS",
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                "AWS_WEB_IDENTITY_TOKEN_FILE", s3.ENV_UNSIGNED, s3.ENV_ENDPOINT):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


@pytest.fixture()
def s3_env(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Environment of a signed SkyStream process talking to the moto server; yields the endpoint."""
    isolate_aws_env(monkeypatch)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", FAKE_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET)
    monkeypatch.setenv(s3.ENV_ENDPOINT, moto_endpoint)
    s3.reset_clients()
    yield moto_endpoint
    s3.reset_clients()


def admin_client(endpoint: str):  # noqa: ANN201 - a boto3 S3 client
    """A signed client for setting buckets up, independent of SkyStream's client factory."""
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id=FAKE_KEY_ID, aws_secret_access_key=FAKE_SECRET)


@pytest.fixture()
def make_bucket(s3_env: str) -> Callable[..., str]:
    """Create a fresh bucket (unique name) and return its name."""

    def make(prefix: str = "skystream-test") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        admin_client(s3_env).create_bucket(Bucket=name)
        return name

    return make


def put_many(endpoint: str, bucket: str, items: dict[str, bytes], threads: int = 8) -> None:
    """Upload objects over HTTP, concurrently (one client: boto3 clients are thread-safe)."""
    client = admin_client(endpoint)
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda kv: client.put_object(Bucket=bucket, Key=kv[0], Body=kv[1]), items.items()))


def seed_objects(bucket: str, items: dict[str, bytes]) -> None:
    """Create thousands of objects in milliseconds, straight into the in-process moto server's store.

    Setup only: moto answers about 100 PUTs/s on this machine, so uploading 2,500 objects over HTTP
    would take most of a test's time budget. Everything the code under test does (listing, reading)
    still goes over HTTP, and the objects are the same as uploaded ones (ETag = MD5 of the content)."""
    from moto.s3.models import s3_backends

    partition, account = s3_backends.bucket_accounts[bucket]  # created over HTTP by make_bucket
    backend = s3_backends[account][partition]
    for key, value in items.items():
        backend.put_object(bucket, key, value)


class FlakyProxy:
    """A TCP proxy to ``upstream`` that drops the first ``drop`` connections at once and cuts the next
    ``cut`` responses after ``cut_after`` bytes: the network failures S3 clients must survive."""

    def __init__(self, upstream: str, drop: int = 0, cut: int = 0, cut_after: int = 0) -> None:
        host, port = upstream.removeprefix("http://").split(":")
        self.upstream = (host, int(port))
        self.drop, self.cut, self.cut_after = drop, cut, cut_after
        self.connections = 0
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            n = self.connections
            self.connections += 1
            if n < self.drop:
                conn.close()
                continue
            limit = self.cut_after if n < self.drop + self.cut else None
            threading.Thread(target=self._pipe_both, args=(conn, limit), daemon=True).start()

    def _pipe_both(self, conn: socket.socket, limit: int | None) -> None:
        up = socket.create_connection(self.upstream)
        threading.Thread(target=self._pipe, args=(conn, up, None), daemon=True).start()
        self._pipe(up, conn, limit)

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket, limit: int | None) -> None:
        sent = 0
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if limit is not None and sent + len(data) >= limit:
                    dst.sendall(data[: limit - sent])
                    break
                dst.sendall(data)
                sent += len(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self) -> None:
        self._sock.close()


class FaultyS3:
    """An HTTP proxy to the S3 server that answers chosen requests with an S3 error instead of passing
    them on: the throttling (503 SlowDown) and server errors (500 InternalError) a real S3 or MinIO
    returns under load. ``fault`` maps (method, path) to an (HTTP status, S3 error code), or None to
    pass the request on; it can be changed while clients run."""

    def __init__(self, upstream: str) -> None:
        import http.client
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        host, port = upstream.removeprefix("http://").split(":")
        self.fault: Callable[[str, str], tuple[int, str] | None] = lambda _method, _path: None
        self.faults_sent = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                answer = proxy.fault(self.command, self.path)
                if answer is not None:
                    proxy.faults_sent += 1
                    status, code = answer
                    payload = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
                               f"<Message>injected by the test</Message></Error>").encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(payload)
                    return
                up = http.client.HTTPConnection(host, int(port), timeout=30)
                up.request(self.command, self.path, body=body or None, headers=dict(self.headers))
                resp = up.getresponse()
                data = resp.read()
                self.send_response(resp.status, resp.reason)
                for name, value in resp.getheaders():
                    if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                up.close()

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _any  # noqa: N815

            def log_message(self, *args: object) -> None:  # one line per request otherwise
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
