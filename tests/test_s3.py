"""S3 access against a real S3 server on loopback (moto): reads, unsigned public buckets, the watcher's
S3 source over thousands of keys with a durable checkpoint, retries, and no credentials in logs."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest
from data_paths import require_data
from s3_fixtures import (  # noqa: F401 - pytest fixtures
    FAKE_KEY_ID,
    FAKE_SECRET,
    FlakyProxy,
    admin_client,
    isolate_aws_env,
    make_bucket,
    moto_endpoint,
    put_many,
    s3_env,
    seed_objects,
)

import schemas
from stream.errors import Rejected
from stream.ingest import s3, storage

# -- reading objects -----------------------------------------------------------------------------


@pytest.fixture()
def tess_file() -> Path:
    return require_data("tess/lc/tic25155310_s06_lc.fits")


def test_read_bytes_and_head_of_a_real_light_curve(s3_env, make_bucket, tess_file):  # noqa: F811
    bucket = make_bucket()
    data = tess_file.read_bytes()
    admin_client(s3_env).put_object(Bucket=bucket, Key="tess/s0006/lc.fits", Body=data)
    uri = f"s3://{bucket}/tess/s0006/lc.fits"

    assert storage.read_bytes(uri) == data
    head = storage.read_head(uri, 2880)  # one FITS block: the primary header
    assert head == data[:2880] and head.startswith(b"SIMPLE  =")
    assert storage.read_bytes(uri, limit=100) == data[:100]
    assert storage.read_head(uri, 10**9) == data  # asking for more than there is
    # local files answer the same calls
    assert storage.read_head(str(tess_file), 2880) == head


def test_empty_object_has_an_empty_head(s3_env, make_bucket):  # noqa: F811
    bucket = make_bucket()
    admin_client(s3_env).put_object(Bucket=bucket, Key="empty.txt", Body=b"")
    assert storage.read_head(f"s3://{bucket}/empty.txt", 100) == b""
    assert storage.read_bytes(f"s3://{bucket}/empty.txt") == b""


def test_missing_object_or_bucket_is_rejected(s3_env, make_bucket):  # noqa: F811
    bucket = make_bucket()
    for uri in (f"s3://{bucket}/no/such/key.fits", f"s3://no-such-bucket-{bucket}/key.fits"):
        for read in (storage.read_bytes, lambda u: storage.read_head(u, 100)):
            with pytest.raises(Rejected) as info:
                read(uri)
            assert info.value.reason == "missing-object"
            assert uri in str(info.value)


# -- unsigned access to public buckets -----------------------------------------------------------


def test_unsigned_reads_from_a_public_read_bucket(s3_env, make_bucket, monkeypatch, tess_file):  # noqa: F811
    admin = admin_client(s3_env)
    public, private = make_bucket("public"), make_bucket("private")
    data = tess_file.read_bytes()
    policy = {"Version": "2012-10-17", "Statement": [{
        "Sid": "PublicRead", "Effect": "Allow", "Principal": "*",
        "Action": ["s3:GetObject", "s3:ListBucket"],
        "Resource": [f"arn:aws:s3:::{public}", f"arn:aws:s3:::{public}/*"],
    }]}  # fmt: skip
    admin.put_bucket_policy(Bucket=public, Policy=json.dumps(policy))
    admin.put_object(Bucket=public, Key="tess/public/lc.fits", Body=data)
    admin.put_object(Bucket=public, Key="tess/public/acl.fits", Body=data[:5000], ACL="public-read")
    admin.put_object(Bucket=private, Key="secret.fits", Body=data)

    # A process with no credentials at all (like a laptop reading the TESS bucket stpubdata).
    isolate_aws_env(monkeypatch)
    monkeypatch.setenv(s3.ENV_ENDPOINT, s3_env)
    s3.reset_clients()
    assert not s3.credentials_available()
    assert storage.read_bytes(f"s3://{public}/tess/public/lc.fits") == data
    assert storage.read_head(f"s3://{public}/tess/public/acl.fits", 80) == data[:80]
    listed = [c.uri for c in s3.S3Source(f"s3://{public}/tess/public/").scan()]
    assert listed == [f"s3://{public}/tess/public/acl.fits", f"s3://{public}/tess/public/lc.fits"]
    # The same client is refused a private object: the requests really are unsigned.
    with pytest.raises(Rejected) as info:
        storage.read_bytes(f"s3://{private}/secret.fits")
    assert info.value.reason == "access-denied"

    # Forcing signed mode with no credentials fails with a hint instead of guessing.
    monkeypatch.setenv(s3.ENV_UNSIGNED, "0")
    s3.reset_clients()
    with pytest.raises(s3.S3Error, match=s3.ENV_UNSIGNED):
        storage.read_bytes(f"s3://{public}/tess/public/lc.fits")


def test_explicit_unsigned_with_credentials_present(s3_env, make_bucket, monkeypatch):  # noqa: F811
    bucket = make_bucket()
    admin_client(s3_env).put_object(Bucket=bucket, Key="k.txt", Body=b"hello", ACL="public-read")
    admin_client(s3_env).put_object(Bucket=bucket, Key="private.txt", Body=b"hello")
    monkeypatch.setenv(s3.ENV_UNSIGNED, "1")
    s3.reset_clients()
    assert storage.read_bytes(f"s3://{bucket}/k.txt") == b"hello"
    with pytest.raises(Rejected):
        storage.read_bytes(f"s3://{bucket}/private.txt")


# -- the watcher's source over thousands of keys -------------------------------------------------

N_KEYS = 2500


def _keys(n: int, start: int = 0) -> dict[str, bytes]:
    return {f"incoming/s{i // 500:04d}/obj{i:06d}.txt": f"object {i}\n".encode() for i in range(start, start + n)}


def test_source_lists_thousands_of_keys_once_across_restarts(s3_env, make_bucket, tmp_path):  # noqa: F811
    bucket = make_bucket()
    objects = _keys(N_KEYS)
    seed_objects(bucket, objects)
    admin = admin_client(s3_env)
    admin.put_object(Bucket=bucket, Key="incoming/s0000/", Body=b"")  # a folder marker
    admin.put_object(Bucket=bucket, Key="incoming/s0000/.hidden", Body=b"x")
    admin.put_object(Bucket=bucket, Key="incoming/s0000/upload.part", Body=b"x")
    admin.put_object(Bucket=bucket, Key="elsewhere/other.txt", Body=b"x")  # outside the prefix
    uri = f"s3://{bucket}/incoming/"

    source = s3.S3Source(uri, state_dir=tmp_path)
    first = list(source.scan())
    assert sorted(c.uri for c in first) == sorted(f"s3://{bucket}/{k}" for k in objects)
    assert source.stats["pages"] == 3  # 2,504 keys, 1,000 per page
    head = admin.head_object(Bucket=bucket, Key="incoming/s0000/obj000000.txt")
    by_uri = {c.uri: c for c in first}
    c0 = by_uri[f"s3://{bucket}/incoming/s0000/obj000000.txt"]
    assert c0.etag == c0.version == head["ETag"].strip('"') and c0.size == len(b"object 0\n")
    assert list(source.scan()) == []  # nothing new
    source.close()

    # Restart: the checkpoint on disk. Nothing already offered comes back; new objects do.
    source = s3.S3Source(uri, state_dir=tmp_path)
    assert list(source.scan()) == []
    assert source.stats["full_scans"] == 0  # an incremental listing after the high-water key
    put_many(s3_env, bucket, _keys(3, start=N_KEYS))
    new = [c.uri for c in source.scan()]
    assert new == [f"s3://{bucket}/incoming/s0005/obj00250{i}.txt" for i in range(3)]
    assert list(source.scan()) == []
    source.close()


def test_full_rescan_finds_late_keys_overwrites_and_forgets_deleted(s3_env, make_bucket, tmp_path):  # noqa: F811
    bucket = make_bucket()
    seed_objects(bucket, _keys(1200))
    uri = f"s3://{bucket}/incoming/"
    source = s3.S3Source(uri, state_dir=tmp_path, page_size=250)
    assert len(list(source.scan())) == 1200
    source.close()

    admin = admin_client(s3_env)
    admin.put_object(Bucket=bucket, Key="incoming/s0000/aaa-late.txt", Body=b"sorts before the high-water key")
    admin.put_object(Bucket=bucket, Key="incoming/s0001/obj000600.txt", Body=b"new content, new ETag")
    admin.delete_object(Bucket=bucket, Key="incoming/s0002/obj001000.txt")

    source = s3.S3Source(uri, state_dir=tmp_path, page_size=250)
    assert list(source.scan()) == []  # incremental: neither is after the high-water key
    source.full_rescan_seconds = 0  # due now
    found = sorted(c.uri for c in source.scan())
    assert found == [f"s3://{bucket}/incoming/s0000/aaa-late.txt", f"s3://{bucket}/incoming/s0001/obj000600.txt"]
    source.full_rescan_seconds = float("inf")
    assert list(source.scan()) == []
    # A deleted key was forgotten: uploaded again, it is offered again.
    admin.put_object(Bucket=bucket, Key="incoming/s0002/obj001000.txt", Body=b"object 1000\n")
    source.full_rescan_seconds = 0
    assert [c.uri for c in source.scan()] == [f"s3://{bucket}/incoming/s0002/obj001000.txt"]
    source.close()


def test_an_abandoned_scan_is_offered_again(s3_env, make_bucket, tmp_path):  # noqa: F811
    """A watcher that crashed mid-poll has not published what it was offered: offer it again."""
    bucket = make_bucket()
    put_many(s3_env, bucket, _keys(50))
    uri = f"s3://{bucket}/incoming/"
    source = s3.S3Source(uri, state_dir=tmp_path, page_size=20)
    for _attempt in range(2):
        with pytest.raises(RuntimeError):
            for i, _c in enumerate(source.scan()):
                if i == 30:
                    raise RuntimeError("the poll failed")
    assert len(list(source.scan())) == 50  # the same process polls again: everything is offered
    source = s3.S3Source(uri, state_dir=tmp_path)  # crash before that scan was acknowledged: again
    assert len(list(source.scan())) == 50
    source.close()
    assert list(s3.S3Source(uri, state_dir=tmp_path).scan()) == []


def test_watcher_publishes_each_object_once_across_restarts(s3_env, make_bucket, tmp_path, tess_file):  # noqa: F811
    """The project's watcher over an S3 prefix: real light curves become file events, other objects
    dead letters, each exactly once; a restart publishes nothing again; a new object is published."""
    from stream.ingest.watcher import Ledger, Watcher, ledger_path

    bucket = make_bucket()
    objects = _keys(300)
    lcs = sorted(tess_file.parent.glob("*.fits"))[:2]
    objects.update({f"incoming/tess/{p.name}": p.read_bytes() for p in lcs})
    seed_objects(bucket, objects)
    uri = f"s3://{bucket}/incoming/"

    def run_once() -> list[tuple[str, dict]]:
        sent: list[tuple[str, dict]] = []

        async def send(topic: str, key: bytes, value: bytes):
            sent.append((topic, schemas.decode(value)[1]))
            done = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done

        source = s3.S3Source(uri, state_dir=tmp_path, page_size=100)
        ledger = Ledger(ledger_path(tmp_path, source))
        try:
            asyncio.run(Watcher(source, send, ledger).poll())
        finally:
            source.close()
            ledger.close()
        return sent

    sent = run_once()
    assert len(sent) == len(objects)
    events = [r for t, r in sent if t == "skystream.files"]
    assert sorted(e["uri"] for e in events) == sorted(f"s3://{bucket}/incoming/tess/{p.name}" for p in lcs)
    assert all(e["kind"] == "lightcurve" and e["etag"] for e in events)
    assert run_once() == []  # restart: nothing twice
    admin_client(s3_env).put_object(Bucket=bucket, Key="incoming/zz/new.fits", Body=lcs[0].read_bytes())
    again = run_once()
    assert [(t, r["uri"]) for t, r in again] == [("skystream.files", f"s3://{bucket}/incoming/zz/new.fits")]


# -- network errors and credentials --------------------------------------------------------------


def test_dropped_connections_and_broken_bodies_are_retried(s3_env, make_bucket, monkeypatch, caplog):  # noqa: F811
    bucket = make_bucket()
    data = bytes(range(256)) * 800  # 200 KB
    admin_client(s3_env).put_object(Bucket=bucket, Key="big.bin", Body=data)
    uri = f"s3://{bucket}/big.bin"

    dropping = FlakyProxy(s3_env, drop=2)  # connections refused twice: botocore's retries
    cutting = FlakyProxy(s3_env, cut=2, cut_after=5000)  # body cut twice mid-transfer: our retries
    try:
        for proxy in (dropping, cutting):
            monkeypatch.setenv(s3.ENV_ENDPOINT, proxy.endpoint)
            s3.reset_clients()
            assert storage.read_bytes(uri) == data
            assert proxy.connections >= 3
        assert caplog.text.count("read broke mid-body") == 2  # the cut bodies, retried by stream.ingest.s3
    finally:
        dropping.close()
        cutting.close()


def test_unreachable_s3_is_unavailable_not_rejected_and_names_no_secret(s3_env, monkeypatch, caplog):  # noqa: F811
    proxy = FlakyProxy(s3_env, drop=10**6)  # every connection dropped
    monkeypatch.setenv(s3.ENV_ENDPOINT, proxy.endpoint)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    s3.reset_clients()
    caplog.set_level(logging.DEBUG)
    try:
        with pytest.raises(s3.S3Unavailable) as info:
            storage.read_bytes("s3://some-bucket/some/key.fits")
        # A source keeps going: the scan ends early with a warning, the next poll resumes.
        source = s3.S3Source("s3://some-bucket/prefix/")
        assert list(source.scan()) == []
        assert source.last_error
    finally:
        proxy.close()
    for text in (str(info.value), source.last_error, caplog.text):
        assert FAKE_SECRET not in text and FAKE_KEY_ID not in text


def test_no_credentials_in_debug_logs_or_messages(s3_env, make_bucket, caplog):  # noqa: F811
    bucket = make_bucket()
    caplog.set_level(logging.DEBUG)  # root at DEBUG: botocore would log signed requests
    admin_client(s3_env).put_object(Bucket=bucket, Key="a.txt", Body=b"a")
    assert storage.read_bytes(f"s3://{bucket}/a.txt") == b"a"
    with pytest.raises(Rejected) as info:
        storage.read_bytes(f"s3://{bucket}/missing.txt")
    assert "Authorization" not in caplog.text and "Signature=" not in caplog.text
    for text in (caplog.text, str(info.value)):
        assert FAKE_SECRET not in text and FAKE_KEY_ID not in text

    url = s3.client().generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "a.txt"})
    clean = s3.redact(f"fetching {url} via http://user:{FAKE_SECRET}@proxy:3128 failed")
    assert FAKE_SECRET not in clean and FAKE_KEY_ID not in clean and "Signature=***" in clean
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "bad url %s", (url,), None)
    assert s3.RedactingFilter().filter(record) and FAKE_KEY_ID not in record.getMessage()


def test_standard_aws_endpoint_variable_is_honoured(s3_env, make_bucket, monkeypatch):  # noqa: F811
    bucket = make_bucket()
    admin_client(s3_env).put_object(Bucket=bucket, Key="k.txt", Body=b"via AWS_ENDPOINT_URL")
    monkeypatch.delenv(s3.ENV_ENDPOINT)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_env)
    s3.reset_clients()
    assert storage.read_bytes(f"s3://{bucket}/k.txt") == b"via AWS_ENDPOINT_URL"
