"""S3 speed against moto on loopback: listing by the watcher's source (full and incremental after a
restart), ranged and whole reads of a real light curve, registry publish/load.

    .venv/bin/python tests/benchmarks/bench_s3.py [--keys 10000]

moto runs in this process (as in the tests), so client and server share one interpreter: the
numbers say what the code costs against this server, not what AWS S3 would give.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--reads", type=int, default=200)
    args = parser.parse_args()

    from data_paths import require_data
    from moto.server import ThreadedMotoServer
    from s3_fixtures import FAKE_KEY_ID, FAKE_SECRET, admin_client, seed_objects

    from stream.ingest import s3, storage
    from stream.models.registry import S3Registry

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    os.environ.update({"AWS_ACCESS_KEY_ID": FAKE_KEY_ID, "AWS_SECRET_ACCESS_KEY": FAKE_SECRET,
                       "AWS_DEFAULT_REGION": "us-east-1", s3.ENV_ENDPOINT: endpoint})
    admin = admin_client(endpoint)
    admin.create_bucket(Bucket="bench")
    seed_objects("bench", {f"in/s{i // 1000:04d}/obj{i:07d}.txt": b"x" * 100 for i in range(args.keys)})

    # Client CPU to parse one 1000-key listing page (botocore's default timestamp parser vs ours).
    import urllib.request

    from botocore.parsers import ResponseParserFactory

    body = urllib.request.urlopen(f"{endpoint}/bench?list-type=2&prefix=in/&max-keys=1000").read()
    shape = admin.meta.service_model.operation_model("ListObjectsV2").output_shape
    for label, defaults in (("botocore default", {}), ("stream.ingest.s3 client", {"timestamp_parser": s3._timestamp})):
        factory = ResponseParserFactory()
        factory.set_parser_defaults(**defaults)
        parser = factory.create_parser("rest-xml")
        t = time.process_time()
        for _ in range(10):
            parser.parse({"body": body, "headers": {}, "status_code": 200}, shape)
        print(f"parse a 1000-key listing page, {label}: {(time.process_time() - t) * 100:.0f} ms CPU")

    t = time.perf_counter()
    pages = admin.get_paginator("list_objects_v2").paginate(Bucket="bench", Prefix="in/")
    n = sum(len(p.get("Contents", [])) for p in pages)
    dt = time.perf_counter() - t
    print(f"plain boto3 paginate, for comparison: {n} keys in {dt:.2f} s = {n / dt:,.0f} keys/s")

    with tempfile.TemporaryDirectory() as state:
        src = s3.S3Source("s3://bench/in/", state_dir=state)
        t = time.perf_counter()
        n = sum(1 for _ in src.scan())
        dt = time.perf_counter() - t
        print(f"full scan: {n} keys offered in {dt:.2f} s = {n / dt:,.0f} keys/s ({src.stats['pages']} pages)")
        src.close()

        src = s3.S3Source("s3://bench/in/", state_dir=state)
        t = time.perf_counter()
        n = sum(1 for _ in src.scan())
        dt = time.perf_counter() - t
        print(f"after restart, incremental scan: {n} offered, {src.stats['pages']} page(s), {dt * 1000:.0f} ms")
        seed_objects("bench", {f"in/s9999/new{i:04d}.txt": b"y" for i in range(100)})
        t = time.perf_counter()
        n = sum(1 for _ in src.scan())
        dt = time.perf_counter() - t
        print(f"incremental scan with 100 new keys: {n} offered in {dt * 1000:.0f} ms")
        src.full_rescan_seconds = 0
        t = time.perf_counter()
        n = sum(1 for _ in src.scan())
        dt = time.perf_counter() - t
        print(f"full rescan, nothing new: {n} offered, {src.stats['listed']} keys listed so far, {dt:.2f} s")
        src.close()

    lc = require_data("tess/lc/tic25155310_s06_lc.fits").read_bytes()
    admin.put_object(Bucket="bench", Key="lc.fits", Body=lc)
    t = time.perf_counter()
    for _ in range(args.reads):
        storage.read_head("s3://bench/lc.fits", 16384)
    dt = time.perf_counter() - t
    print(f"read_head 16 KB: {args.reads / dt:.0f} reads/s ({dt / args.reads * 1000:.1f} ms each)")
    t = time.perf_counter()
    for _ in range(20):
        storage.read_bytes("s3://bench/lc.fits")
    dt = time.perf_counter() - t
    mb = len(lc) / 1e6
    print(f"read_bytes {mb:.1f} MB light curve: {dt / 20 * 1000:.0f} ms each, {20 * mb / dt:.0f} MB/s")

    reg = S3Registry("s3://bench/registry", seed_from=None)
    model = os.urandom(200_000)
    t = time.perf_counter()
    for i in range(10):
        reg.publish("smass", model, {"metrics": {"accuracy": i / 10}})
    dt = time.perf_counter() - t
    print(f"registry publish (200 KB model, promote): {dt / 10 * 1000:.0f} ms each")
    t = time.perf_counter()
    for _ in range(10):
        reg.load("smass")
    dt = time.perf_counter() - t
    print(f"registry load champion (checksum checked): {dt / 10 * 1000:.0f} ms each")
    server.stop()


if __name__ == "__main__":
    main()
