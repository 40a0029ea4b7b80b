"""Read SkyStream alerts with nothing but aiokafka, fastavro and the published .avsc files.

This is what any subscriber can do without SkyStream installed (docs/subscribers.md). Each message is
Avro *single-object encoding*: the two bytes C3 01, the 8-byte little-endian CRC-64-AVRO fingerprint
of the writer schema's Parsing Canonical Form, then the Avro binary body. The fingerprint says which
released version of the Alert schema wrote the message; fastavro resolves it to the newest version
we know, so older alerts read with the same fields (defaults where the writer had none).

    python consume_alerts.py --broker localhost:9092 --schemas path/to/schemas/avro \\
        [--topic skystream.alerts.short-period] [--timeout 10]

It prints one JSON line per alert (figures as their size) and stops after --timeout seconds without
a new message.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import struct
from pathlib import Path

import fastavro
from aiokafka import AIOKafkaConsumer
from fastavro.schema import fingerprint, to_parsing_canonical_form


def alert_schemas(folder: Path) -> tuple[dict, dict[bytes, dict]]:
    """The newest Alert schema, and every released one by its wire fingerprint."""
    files = [folder / "alert.avsc", *sorted(folder.glob("v*/alert.avsc"))]
    by_fingerprint, newest = {}, None
    for path in files:
        parsed = fastavro.parse_schema(json.loads(path.read_text()))
        crc = int(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"), 16)
        by_fingerprint[struct.pack("<Q", crc)] = parsed
        newest = newest or parsed
    return newest, by_fingerprint


def decode(data: bytes, newest: dict, writers: dict[bytes, dict]) -> dict | None:
    """One alert, or None when the bytes are not an Alert we know."""
    if len(data) < 10 or data[:2] != b"\xc3\x01" or data[2:10] not in writers:
        return None
    return fastavro.schemaless_reader(io.BytesIO(data[10:]), writers[data[2:10]], newest)


async def consume(broker: str, topic: str, schema_dir: Path, timeout: float) -> None:
    newest, writers = alert_schemas(schema_dir)
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=broker, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None)
    await consumer.start()
    # Delivery is at-least-once: the same alert may come twice. The same alert_id with more sectors is no
    # repeat but an update (a signal confirmed over more sectors of its star), so both are the key.
    seen = set()
    try:
        while True:
            batches = await consumer.getmany(timeout_ms=int(timeout * 1000))
            if not batches:
                break
            for messages in batches.values():
                for m in messages:
                    alert = decode(m.value, newest, writers)
                    if alert is None:
                        continue
                    version = (alert["alert_id"], tuple(alert.get("sectors") or ()))
                    if version in seen:
                        continue
                    seen.add(version)
                    alert["figure_png"] = len(alert["figure_png"]) if alert["figure_png"] else None
                    print(json.dumps(alert), flush=True)
    finally:
        await consumer.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--broker", default="localhost:9092")
    p.add_argument("--topic", default="skystream.alerts")
    p.add_argument("--schemas", type=Path, default=Path(__file__).resolve().parents[2] / "schemas" / "avro",
                   help="the folder of .avsc files (alert.avsc and v*/alert.avsc)")
    p.add_argument("--timeout", type=float, default=10.0, help="stop after this many seconds without a message")
    args = p.parse_args()
    asyncio.run(consume(args.broker, args.topic, args.schemas, args.timeout))


if __name__ == "__main__":
    main()
