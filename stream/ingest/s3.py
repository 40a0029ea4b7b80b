"""S3 access for the watcher, the workers and the model registry (boto3).

Configuration (environment variables, read through ``stream.settings.Settings``: ``client()`` and
``S3Source`` take ``settings=``, else read it when called):

- Credentials: the standard AWS chain (env vars, shared config/credentials files, SSO, container
  and instance roles). Nothing of it is ever logged or put in a message.
- Endpoint: ``SKYSTREAM_S3_ENDPOINT`` if set (for MinIO, moto, ... without redirecting every other
  AWS client of the process), else boto3's own ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``.
- Region: the AWS chain (``AWS_REGION``, ``AWS_DEFAULT_REGION``, config file), else ``us-east-1``
  (where the public TESS bucket ``stpubdata`` lives).
- Unsigned requests: ``SKYSTREAM_S3_UNSIGNED`` = ``1`` (always: public buckets such as
  ``stpubdata``), ``0`` (never: fail when no credentials), ``auto`` (the default: unsigned exactly
  when the credential chain finds nothing). Every function also takes ``unsigned=`` explicitly.
- Watcher: ``SKYSTREAM_S3_RESCAN_SECONDS`` (default 3600), how often S3Source lists the whole prefix.
- Retries: botocore's ``standard`` mode (exponential backoff with jitter on connection errors,
  timeouts, throttling and 5xx), ``AWS_RETRY_MODE`` / ``AWS_MAX_ATTEMPTS`` honoured, default 8
  attempts. botocore cannot retry a body that breaks *after* the response headers arrived, so whole
  reads are retried here as well.

Errors: a missing object or bucket raises ``Rejected("missing-object")``, a refused one
``Rejected("access-denied")`` (bad input: a dead letter). A network failure that outlived the
retries raises ``S3Unavailable`` (a ConnectionError): the input is fine, try again later.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import boto3
import botocore.exceptions as bexc
import botocore.session
import urllib3.exceptions
from botocore import UNSIGNED
from botocore.config import Config
from botocore.utils import parse_timestamp

from stream.errors import Rejected
from stream.ingest.sources import Candidate
from stream.settings import Settings

__all__ = [
    "DEFAULT_REGION",
    "RedactingFilter",
    "S3Conflict",
    "S3Error",
    "S3Source",
    "S3Unavailable",
    "client",
    "credentials_available",
    "error_code",
    "is_s3",
    "iter_pages",
    "parse_uri",
    "put_bytes",
    "read_bytes",
    "read_head",
    "read_with_etag",
    "redact",
    "reset_clients",
    "translate",
    "with_retries",
]

log = logging.getLogger(__name__)

# Variable names, for messages and tests (their values are read by Settings).
ENV_ENDPOINT = "SKYSTREAM_S3_ENDPOINT"
ENV_UNSIGNED = "SKYSTREAM_S3_UNSIGNED"
ENV_RESCAN = "SKYSTREAM_S3_RESCAN_SECONDS"
DEFAULT_REGION = "us-east-1"

# Signed requests carry the Authorization header; botocore logs requests (and botocore.auth the
# string it signs) at DEBUG. Keep those loggers at WARNING whatever the root level is (their INFO
# lines, such as "Found credentials in environment variables", are noise on every command).
for _name in ("botocore", "boto3", "s3transfer", "urllib3"):
    if logging.getLogger(_name).level < logging.WARNING:
        logging.getLogger(_name).setLevel(logging.WARNING)

T = TypeVar("T")


class S3Error(Exception):
    """An S3 request failed for a reason that is not the input's fault (configuration, server)."""


class S3Unavailable(ConnectionError):
    """S3 could not be reached or kept failing after the retries: transient, try again later."""


class S3Conflict(S3Error):
    """A conditional write lost: the object exists already, or changed since it was read."""


# -- redaction -----------------------------------------------------------------------------------
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s]+@")
_QUERY_SECRET = re.compile(
    r"(?i)\b(X-Amz-Credential|X-Amz-Signature|X-Amz-Security-Token|AWSAccessKeyId|Signature|Credential)=[^&\s\"',]+"
)
_ACCESS_KEY_ID = re.compile(r"\b(?:AKIA|ASIA|AIDA|AROA|ABIA|ACCA)[A-Z0-9]{12,}\b")
_known_secrets: set[str] = set()


def _remember_secrets(*values: str | None) -> None:
    _known_secrets.update(v for v in values if v and len(v) >= 4)


def redact(text: str) -> str:
    """``text`` without credentials: URL user-info, signed-URL parameters, access key ids, and any
    secret this process has loaded (so an error message quoting one cannot leak it)."""
    _remember_secrets(*Settings().secrets())
    for secret in sorted(_known_secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    text = _USERINFO.sub(r"\1***@", text)
    text = _QUERY_SECRET.sub(r"\1=***", text)
    return _ACCESS_KEY_ID.sub("***", text)


class RedactingFilter(logging.Filter):
    """A logging filter that redacts every record (attach it to a handler to guard all loggers)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact credentials in the record's message; never drops a record."""
        msg = record.getMessage()
        clean = redact(msg)
        if clean != msg:
            record.msg, record.args = clean, None
        return True


# -- URIs ----------------------------------------------------------------------------------------
def is_s3(uri: str) -> bool:
    """Whether ``uri`` is an ``s3://`` URI."""
    return uri.startswith("s3://")


def parse_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/key`` -> ("bucket", "some/key"); the key may be empty."""
    if not is_s3(uri):
        raise ValueError(f"not an s3:// URI: {redact(uri)}")
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket:
        raise ValueError(f"no bucket in {redact(uri)}")
    return bucket, key


# -- clients -------------------------------------------------------------------------------------
_lock = threading.Lock()
_clients: dict[tuple, Any] = {}
_have_credentials: bool | None = None


def _after_fork() -> None:
    # A forked worker (e.g. a process pool) must not share the parent's connection pools.
    global _lock
    _lock = threading.Lock()
    _clients.clear()


os.register_at_fork(after_in_child=_after_fork)


def _unsigned_setting(settings: Settings) -> bool | None:
    value = settings.s3_unsigned.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    if value == "auto":
        return None
    raise S3Error(f"{ENV_UNSIGNED} must be 1, 0 or auto, not {value!r}")


def credentials_available() -> bool:
    """Whether the AWS credential chain finds credentials (looked up once per process)."""
    global _have_credentials
    with _lock:
        if _have_credentials is None:
            creds = boto3.session.Session().get_credentials()
            if creds is not None:
                frozen = creds.get_frozen_credentials()
                _remember_secrets(frozen.access_key, frozen.secret_key, frozen.token)
            _have_credentials = creds is not None
        return _have_credentials


def reset_clients() -> None:
    """Forget cached clients and the credential lookup (after the environment changed)."""
    global _have_credentials
    with _lock:
        _clients.clear()
        _have_credentials = None


def _timestamp(value: str) -> datetime:
    """botocore's timestamp parser goes through dateutil: ~0.2 ms per listed key, most of the client's
    CPU when listing. S3 listings use ISO 8601, which the standard library parses 400x faster."""
    try:
        return datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return parse_timestamp(value)


def client(*, unsigned: bool | None = None, endpoint_url: str | None = None, region: str | None = None,
           settings: Settings | None = None) -> Any:
    """A boto3 S3 client, cached per configuration (boto3 clients are thread-safe).

    ``unsigned=None`` follows ``SKYSTREAM_S3_UNSIGNED`` (auto: unsigned when no credentials);
    ``settings`` defaults to the environment now."""
    settings = settings or Settings()
    _remember_secrets(*settings.secrets())
    if unsigned is None:
        unsigned = _unsigned_setting(settings)
    if unsigned is None:
        unsigned = not credentials_available()
    endpoint_url = endpoint_url or settings.s3_endpoint
    mode = settings.aws_retry_mode
    attempts = settings.aws_max_attempts
    key = (unsigned, endpoint_url, region, mode, attempts)
    with _lock:
        found = _clients.get(key)
        if found is not None:
            return found
        core = botocore.session.get_session()  # sessions are not thread-safe: built under the lock
        core.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=_timestamp)
        session = boto3.session.Session(botocore_session=core)
        config = Config(
            retries={"mode": mode, "max_attempts": attempts},
            connect_timeout=10,
            read_timeout=60,
            max_pool_connections=32,
            user_agent_extra="skystream",
            **({"signature_version": UNSIGNED} if unsigned else {}),
        )
        made = session.client(
            "s3", endpoint_url=endpoint_url, region_name=region or session.region_name or DEFAULT_REGION, config=config
        )
        _clients[key] = made
        return made


# -- error translation ---------------------------------------------------------------------------
_MISSING = {"NoSuchKey", "NoSuchBucket", "404", "NotFound", "NoSuchVersion"}
_DENIED = {
    "AccessDenied", "403", "Forbidden", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch",
    "ExpiredToken", "InvalidToken", "AccountProblem", "RequestTimeTooSkewed",
}  # fmt: skip
_CONFLICT = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}
# Errors while streaming a body, after botocore handed the response over: botocore cannot retry these
# (urllib3's ProtocolError escapes botocore's wrapping when the body is checksum-validated).
_BODY_ERRORS = (
    bexc.IncompleteReadError, bexc.HTTPClientError, bexc.ConnectionError, urllib3.exceptions.HTTPError,
    http.client.HTTPException, ConnectionError,
)  # fmt: skip


def error_code(exc: BaseException) -> str:
    """The S3 error code of a botocore client error, else the exception's class name."""
    if isinstance(exc, bexc.ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return type(exc).__name__


def translate(exc: BaseException, uri: str, action: str) -> Exception:
    """The exception SkyStream raises for a boto3 failure on ``uri`` (always with a redacted message)."""
    code = error_code(exc)
    if isinstance(exc, bexc.ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in _MISSING or status == 404:
            what = "bucket" if code == "NoSuchBucket" else "object"
            return Rejected("missing-object", f"no such {what}: {uri}")
        if code in _DENIED or status == 403:
            return Rejected("access-denied", f"S3 refused to {action} {uri} ({code})")
        if code in _CONFLICT or status in (409, 412):
            return S3Conflict(f"conditional {action} of {uri} did not hold ({code})")
        if code == "InvalidRange":
            return Rejected("invalid-range", f"cannot {action} {uri}: invalid byte range")
        if status is not None and (status >= 500 or status == 429) or code in ("SlowDown", "Throttling"):
            return S3Unavailable(f"S3 kept failing to {action} {uri} ({code})")
        return S3Error(redact(f"S3 refused to {action} {uri}: {exc}"))
    if isinstance(exc, bexc.NoCredentialsError | bexc.PartialCredentialsError):
        return S3Error(f"no AWS credentials to {action} {uri}; set {ENV_UNSIGNED}=1 for a public bucket")
    if isinstance(exc, bexc.BotoCoreError | OSError | urllib3.exceptions.HTTPError | http.client.HTTPException):
        return S3Unavailable(redact(f"could not {action} {uri}: {type(exc).__name__}: {exc}"))
    return S3Error(redact(f"could not {action} {uri}: {type(exc).__name__}: {exc}"))


class _BodyBroken(Exception):
    """A response broke after its headers arrived (botocore had already returned it)."""


def with_retries(fn: Callable[[], T], attempts: int = 4, base_delay: float = 0.2) -> T:
    """Call ``fn`` again, with exponential backoff, when it raises _BodyBroken."""
    for attempt in range(attempts):
        try:
            return fn()
        except _BodyBroken as exc:
            if attempt == attempts - 1:
                raise
            delay = base_delay * 2**attempt
            log.warning("S3 read broke mid-body (%s), retrying in %.1f s", type(exc.__cause__).__name__, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


# -- objects -------------------------------------------------------------------------------------
def _get(uri: str, s3: Any, byte_range: str | None = None) -> tuple[bytes, str]:
    bucket, key = parse_uri(uri)
    if not key:
        raise Rejected("not-a-file", f"no object key in {uri}")

    def once() -> tuple[bytes, str]:
        """One GET: the body (or byte range) and the ETag."""
        kwargs = {"Range": byte_range} if byte_range else {}
        resp = s3.get_object(Bucket=bucket, Key=key, **kwargs)  # botocore retries up to here
        try:
            with resp["Body"] as body:
                return body.read(), resp.get("ETag", "").strip('"')
        except _BODY_ERRORS as exc:
            raise _BodyBroken() from exc

    try:
        return with_retries(once)
    except _BodyBroken as exc:
        raise translate(exc.__cause__, uri, "read") from None
    except (bexc.ClientError, bexc.BotoCoreError, OSError) as exc:
        raise translate(exc, uri, "read") from None


def read_bytes(uri: str, *, unsigned: bool | None = None, s3: Any = None) -> bytes:
    """The whole object."""
    return _get(uri, s3 or client(unsigned=unsigned))[0]


def read_head(uri: str, n: int, *, unsigned: bool | None = None, s3: Any = None) -> bytes:
    """The first ``n`` bytes of the object (one ranged GET; fewer bytes when the object is shorter)."""
    if n <= 0:
        return b""
    try:
        return _get(uri, s3 or client(unsigned=unsigned), f"bytes=0-{n - 1}")[0][:n]
    except Rejected as exc:
        if exc.reason == "invalid-range":  # an empty object has no byte 0
            return b""
        raise


def read_with_etag(uri: str, *, s3: Any) -> tuple[bytes, str] | None:
    """(content, ETag) or None when the object does not exist."""
    try:
        return _get(uri, s3)
    except Rejected as exc:
        if exc.reason == "missing-object":
            return None
        raise


def put_bytes(
    uri: str, data: bytes, *, s3: Any, create_only: bool = False, if_match: str | None = None,
    content_type: str = "application/octet-stream",
) -> str:  # fmt: skip
    """Write an object; return its ETag. ``create_only`` refuses to replace an existing object and
    ``if_match`` refuses unless the current ETag is that one (S3 conditional writes): S3Conflict."""
    bucket, key = parse_uri(uri)
    kwargs: dict[str, Any] = {}
    if create_only:
        kwargs["IfNoneMatch"] = "*"
    if if_match is not None:
        kwargs["IfMatch"] = f'"{if_match}"'
    try:
        resp = s3.put_object(Bucket=bucket, Key=key, Body=data, ContentType=content_type, **kwargs)
    except (bexc.ClientError, bexc.BotoCoreError, OSError) as exc:
        raise translate(exc, uri, "write") from None
    return str(resp.get("ETag", "")).strip('"')


def iter_pages(
    s3: Any, bucket: str, prefix: str, *, start_after: str | None = None, page_size: int = 1000,
    delimiter: str | None = None,
) -> Iterator[dict[str, Any]]:  # fmt: skip
    """ListObjectsV2 pages (continuation tokens handled by the paginator), keys in lexical order."""
    params: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
    if start_after:
        params["StartAfter"] = start_after
    if delimiter:
        params["Delimiter"] = delimiter
    pages = s3.get_paginator("list_objects_v2").paginate(**params, PaginationConfig={"PageSize": page_size})
    try:
        yield from pages
    except (bexc.ClientError, bexc.BotoCoreError, OSError) as exc:
        raise translate(exc, f"s3://{bucket}/{prefix}", "list") from None


# -- the watcher's source ------------------------------------------------------------------------
_SKIP_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload")


def _ignored(key: str) -> bool:
    """Folder markers, hidden and temporary names: the same rule as the directory source."""
    name = key.rsplit("/", 1)[-1]
    return key.endswith("/") or not name or name.startswith(".") or name.endswith(_SKIP_SUFFIXES)


@dataclass
class _ScanResult:
    """One scan's outcome; its objects wait in the ``pending`` table until the scan is committed."""

    full: bool
    started: float
    high_water: str | None = None


class S3Source:
    """New objects under ``s3://bucket/prefix``, for the watcher (the Source protocol).

    Objects appear whole when their upload completes, so every listed object is complete. Its
    identity is key + ETag: an overwritten object (new ETag) is offered again.

    Checkpoint (SQLite in ``state_dir``; in memory when None): the (key, ETag) of every object
    offered, the high-water key (the last key listed) and the time of the last full listing. What a
    scan in progress offered waits in a ``pending`` table, not in memory (a first scan of a
    million-object prefix stays small).

    - Incremental scans list only keys after the high-water key (``StartAfter``): a poll costs
      requests in proportion to what is new, not to the size of the prefix, when new keys sort after
      old ones (TESS sectors arrive as new ``s00NN/`` prefixes, timestamped names, ...).
    - A full listing every ``full_rescan_seconds`` (default ``SKYSTREAM_S3_RESCAN_SECONDS`` or 3600;
      also on the first scan) catches what incremental scans cannot see: keys that sort before the
      high-water mark (parallel uploads finishing out of order, arbitrary names) and overwritten
      objects. It offers only (key, ETag) pairs not in the
      checkpoint, and forgets deleted keys. ``incremental=False`` lists everything every time (for
      stores whose listings are not sorted, such as S3 Express directory buckets).

    The checkpoint of a scan is written when the next scan starts, or on ``commit()``, and only when
    the scan was iterated to its end: the watcher publishes and acknowledges what a poll offered
    before it polls again, so what the checkpoint holds has been dealt with. A scan abandoned by an
    exception writes nothing; after a crash the same objects are offered again and the watcher's
    ledger skips those it had published.

    Listing failures: a network failure that outlives the retries ends the scan early with a
    warning (the next poll resumes); a missing bucket or a refusal raises (configuration error).
    """

    def __init__(
        self,
        uri: str,
        state_dir: str | os.PathLike[str] | None = None,
        *,
        unsigned: bool | None = None,
        s3: Any = None,
        page_size: int = 1000,
        full_rescan_seconds: float | None = None,
        incremental: bool = True,
        settings: Settings | None = None,
    ) -> None:
        settings = settings or Settings()
        self.bucket, self.prefix = parse_uri(uri)
        self.name = f"s3://{self.bucket}/{self.prefix}"
        self._s3 = s3 or client(unsigned=unsigned, settings=settings)
        self.page_size = page_size
        if full_rescan_seconds is None:
            full_rescan_seconds = settings.s3_rescan_seconds
        # 0: every scan is a full listing; float("inf"): only the first
        self.full_rescan_seconds = full_rescan_seconds
        self.incremental = incremental
        self.last_error: str | None = None
        self.stats = {"scans": 0, "full_scans": 0, "pages": 0, "listed": 0, "offered": 0}
        if state_dir is None:
            path = ":memory:"
        else:
            Path(state_dir).mkdir(parents=True, exist_ok=True)
            digest = hashlib.sha256(self.name.encode()).hexdigest()[:16]
            path = str(Path(state_dir) / f"s3source-{digest}.sqlite")
        self._db_lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS objects (key TEXT PRIMARY KEY, etag TEXT NOT NULL, size INTEGER)")
        self._db.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT)")
        # gone = 1: a full listing no longer shows the key
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS pending (key TEXT PRIMARY KEY, etag TEXT, size INTEGER, gone INTEGER)"
        )
        self._db.execute("INSERT OR IGNORE INTO meta VALUES ('uri', ?)", (self.name,))
        self._db.commit()
        self._done: _ScanResult | None = None  # a scan iterated to its end, not yet checkpointed

    # -- checkpoint ---------------------------------------------------------------------------
    def _meta(self, name: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return row[0] if row else None

    @property
    def high_water(self) -> str | None:
        """The greatest key recorded so far: incremental scans start after it (None before the first)."""
        with self._db_lock:
            return self._meta("high_water")

    def commit(self) -> None:
        """Write the checkpoint of the last completed scan (the watcher has published its objects)."""
        done, self._done = self._done, None
        if done is None:
            return
        with self._db_lock, self._db:
            self._db.execute("DELETE FROM objects WHERE key IN (SELECT key FROM pending WHERE gone = 1)")
            self._db.execute("INSERT OR REPLACE INTO objects SELECT key, etag, size FROM pending WHERE gone = 0")
            self._db.execute("DELETE FROM pending")
            old = self._meta("high_water")
            if done.high_water is not None and (old is None or done.full or done.high_water > old):
                self._db.execute("INSERT OR REPLACE INTO meta VALUES ('high_water', ?)", (done.high_water,))
            if done.full:
                self._db.execute("INSERT OR REPLACE INTO meta VALUES ('last_full_scan', ?)", (str(done.started),))

    def _discard_pending(self) -> None:
        """Forget what an abandoned scan (or a crashed process) offered: it will be offered again."""
        with self._db_lock, self._db:
            self._db.execute("DELETE FROM pending")

    def _add_pending(self, rows: list[tuple[str, str, int, int]]) -> None:
        if rows:
            with self._db_lock, self._db:
                self._db.executemany("INSERT OR REPLACE INTO pending VALUES (?, ?, ?, ?)", rows)

    def close(self) -> None:
        """Checkpoint a completed scan and close the source's state database."""
        self.commit()
        self._db.close()

    # -- scanning -----------------------------------------------------------------------------
    def _full_due(self, now: float) -> bool:
        if not self.incremental or self.high_water is None:
            return True
        with self._db_lock:
            last = self._meta("last_full_scan")
        return last is None or now - float(last) >= self.full_rescan_seconds

    def scan(self) -> Iterator[Candidate]:
        """Objects that are new or changed since the last scan (every object on a full scan)."""
        if self._done is not None:
            self.commit()
        else:
            self._discard_pending()
        now = time.time()
        result = _ScanResult(full=self._full_due(now), started=now)
        start_after = None if result.full else self.high_water
        self.stats["scans"] += 1
        self.stats["full_scans"] += result.full
        previous = start_after or ""  # the key before the current page: pages cover (previous, last]
        pages = iter_pages(self._s3, self.bucket, self.prefix, start_after=start_after, page_size=self.page_size)
        while True:
            try:
                page = next(pages, None)
            except S3Unavailable as exc:
                self.last_error = str(exc)
                log.warning("listing %s stopped early, resuming at the next poll: %s", self.name, exc)
                result.full = False  # an incomplete listing proves nothing about deletions
                with self._db_lock, self._db:
                    self._db.execute("DELETE FROM pending WHERE gone = 1")
                break
            if page is None:
                self.last_error = None
                if result.full:  # everything after the last listed key is gone too
                    with self._db_lock, self._db:
                        self._db.execute(
                            "INSERT OR REPLACE INTO pending SELECT key, etag, size, 1 FROM objects WHERE key > ?",
                            (previous,),
                        )
                break
            contents = page.get("Contents", [])
            self.stats["pages"] += 1
            self.stats["listed"] += len(contents)
            if not contents:
                continue
            last = contents[-1]["Key"]
            with self._db_lock:
                rows = self._db.execute("SELECT key, etag FROM objects WHERE key > ? AND key <= ?", (previous, last))
                known = dict(rows.fetchall())
            if result.full and known:
                listed = {o["Key"] for o in contents}
                self._add_pending([(k, e, 0, 1) for k, e in known.items() if k not in listed])
            offered: list[tuple[str, str, int, int]] = []
            for obj in contents:
                key = obj["Key"]
                etag = str(obj.get("ETag", "")).strip('"')
                if not _ignored(key) and known.get(key) != etag:
                    size = int(obj.get("Size", 0))
                    offered.append((key, etag, size, 0))
                    self.stats["offered"] += 1
                    yield Candidate(uri=f"s3://{self.bucket}/{key}", size=size, version=etag, etag=etag)
                result.high_water = key  # keys come sorted: everything up to here has been seen
            self._add_pending(offered)
            previous = last
        self._done = result
