"""Curated labels (the feedback that retraining reads): read them from their sources, publish them
on the labels topic, read the topic back, keep the newest per object.

A Label record (schemas/avro/label.avsc) says "object X of task T is class L, according to S".
Two sources are built in:
- the TOI table (``toi_labels``): TFOPWG dispositions from the NASA Exoplanet Archive's TOI table, one label per TOI
  (TIC id + period, so a star with several TOIs gets one label per signal). The dispositions are
  mapped onto the classes of the TESS model (PC, EB, J; Yu et al. 2019's convention):

  ====  ===========================================  =====  ==========================================
  TFOP  meaning                                      label  why
  ====  ===========================================  =====  ==========================================
  CP    confirmed planet (confirmed with TESS)       PC     a planet is what the PC class stands for
  KP    known planet (known before TESS)             PC     idem
  PC    planet candidate, no contrary evidence yet   PC     passed the same by-eye bar as Yu's PC
  APC   ambiguous planetary candidate: follow-up     PC     still a transit-shaped astrophysical signal
        cannot tell planet from false positive             on the light curve alone; ``skip=("APC",)``
                                                           drops them when only settled labels count
  FP    astrophysical false positive (eclipsing      EB     EB is the model's only astrophysical
        binary on target or blended nearby, ...)           non-planet class: triage (astrophysical
                                                           vs junk) and vetting (planet vs rest) both
                                                           stay right even for the FPs that are not
                                                           literally an on-target EB
  FA    false alarm: instrumental or noise           J      what J (junk) means
  ====  ===========================================  =====  ==========================================

  The raw disposition is kept in ``source`` ("TFOPWG:FP"), so a consumer can select or remap later.

- asteroid class lists (``bus_labels``): confirmed asteroid classes (Bus & Binzel 2002 classes) for
  SMASS objects, either Bus.Taxonomy.txt-format lines (``number name<TAB>tholen<TAB>bus``; unclassified ``-`` rows are
  skipped) or a plain ``object,class`` CSV. Objects are named as stream.features.spectra.object_name names
  spectrum files ("1", "1996 UK").

``read_labels`` reads the whole topic from the beginning; ``write_jsonl`` writes one JSON object per
Label (JSON lines), the format training.feedback.load_labels also reads.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

import schemas
from stream.settings import TOPICS, Settings

__all__ = [
    "LabelInputError",
    "SMASS_TASK",
    "TESS_TASK",
    "asteroid_object",
    "bus_labels",
    "label_key",
    "latest_labels",
    "parse_bus_lines",
    "publish_labels",
    "read_labels",
    "toi_labels",
    "write_jsonl",
]

TESS_TASK = "tess"
SMASS_TASK = "smass"

# TFOPWG disposition -> class of the TESS model (stream.scoring.transit_predictor.CLASSES); see the module doc.
TFOPWG_TO_LABEL = {"CP": "PC", "KP": "PC", "PC": "PC", "APC": "PC", "FP": "EB", "FA": "J"}

# The 26 classes of the Bus (1999) / SMASSII feature-based taxonomy (Bus & Binzel 2002).
BUS_CLASSES = ("A", "B", "C", "Cb", "Cg", "Cgh", "Ch", "D", "K", "L", "Ld", "O", "Q", "R",
               "S", "Sa", "Sk", "Sl", "Sq", "Sr", "T", "V", "X", "Xc", "Xe", "Xk")

_PROVISIONAL = re.compile(r"(\d{4}) ?([A-Z]{2}\d*)")  # "1996 UK", "1998 WZ6" (also written without the space)
_NUMBERED = re.compile(r"\(?(\d+)\)?(?:\s+.*)?")  # "1", "(1) Ceres", "1 Ceres"


class LabelInputError(ValueError):
    """A labels file that cannot be turned into Label records (the message names the lines)."""


# -- building Label records --------------------------------------------------------------------------
def asteroid_object(designation: str) -> str:
    """An asteroid designation as the stream names it: "(1) Ceres" -> "1", "1996  UK" -> "1996 UK"."""
    text = " ".join(designation.split())
    if m := _PROVISIONAL.fullmatch(text):
        return f"{m.group(1)} {m.group(2)}"
    if m := _NUMBERED.fullmatch(text):
        return str(int(m.group(1)))
    return text


def toi_labels(path: str | Path, skip: Iterable[str] = (), at_ms: int | None = None
               ) -> tuple[list[dict[str, Any]], Counter[str]]:
    """Label records for every TOI whose TFOPWG disposition is mapped (and not in ``skip``).

    Returns the records and a count per raw disposition ("skipped:APC", "unmapped:XX" for the rest).
    """
    from stream.scoring.toi import TOICatalog

    catalog = TOICatalog.from_csv(path)
    skip = {s.upper() for s in skip}
    at_ms = int(time.time() * 1000) if at_ms is None else at_ms
    records, counts = [], Counter()
    for tois in catalog.by_tic.values():
        for toi in tois:
            disp = toi.disposition.strip().upper()
            if disp in skip:
                counts[f"skipped:{disp}"] += 1
                continue
            if disp not in TFOPWG_TO_LABEL:
                counts[f"unmapped:{disp or 'none'}"] += 1
                continue
            counts[disp] += 1
            records.append({"task": TESS_TASK, "object": str(toi.tic_id), "label": TFOPWG_TO_LABEL[disp],
                            "source": f"TFOPWG:{disp}", "file_id": None, "period_days": toi.period_days,
                            "at_ms": at_ms})
    return records, counts


def parse_bus_lines(text: str) -> list[tuple[int, str, str]]:
    """(line number, object, Bus class) of a Bus.Taxonomy.txt-format or ``object,class`` CSV text.

    Taxonomy rows are tab separated with the Bus class last (some rows carry extra tabs) and the
    designation first; lines without a tab are its header prose. CSV lines are ``object,class``
    (an ``object,class`` header and ``#`` comments are allowed). Unclassified rows (``-``) give none.
    """
    taxonomy = "\t" in text  # a CSV has no tabs; the taxonomy's header prose has commas but no tabs
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if taxonomy:
            if "\t" not in line:
                continue  # header prose
            fields = line.split("\t")
        else:
            fields = line.split(",")
            if [f.strip().lower() for f in fields] == ["object", "class"]:
                continue
            if len(fields) != 2:
                raise LabelInputError(f"line {number}: expected 'object,class', got {line!r}")
        obj, bus = asteroid_object(fields[0]), fields[-1].strip()
        if bus in ("", "-"):
            continue
        rows.append((number, obj, bus))
    return rows


def bus_labels(path: str | Path, source: str | None = None, at_ms: int | None = None) -> list[dict[str, Any]]:
    """Label records (task smass) from a Bus.Taxonomy.txt-format or ``object,class`` file.

    Any class outside the 26 Bus classes raises LabelInputError naming every such line: nothing is
    published from a file with typos.
    """
    path = Path(path)
    text = path.read_text(encoding="latin-1")  # Bus.Taxonomy.txt is Latin-1 (accented names)
    rows = parse_bus_lines(text)
    bad = [f"line {n}: {obj!r} has class {bus!r}" for n, obj, bus in rows if bus not in BUS_CLASSES]
    if bad:
        raise LabelInputError(f"{path}: {len(bad)} unknown Bus class(es) (known: {' '.join(BUS_CLASSES)}): "
                              + "; ".join(bad[:10]) + (" ..." if len(bad) > 10 else ""))
    if not rows:
        raise LabelInputError(f"{path}: no 'object,class' or Bus.Taxonomy.txt rows found")
    if source is None:
        source = "SMASSII" if "\t" in text else "curated"
    at_ms = int(time.time() * 1000) if at_ms is None else at_ms
    return [{"task": SMASS_TASK, "object": obj, "label": bus, "source": source, "file_id": None,
             "period_days": None, "at_ms": at_ms} for _, obj, bus in rows]


# -- the labels topic ----------------------------------------------------------------------------------
def label_key(record: dict[str, Any]) -> bytes:
    """The Kafka key of a Label: ``task/object`` (schemas/avro/label.avsc)."""
    return f"{record['task']}/{record['object']}".encode()


async def publish_labels(broker: str, records: list[dict[str, Any]], settings: Settings | None = None) -> int:
    """Validate and publish Label records on the labels topic; return how many were acknowledged."""
    from aiokafka import AIOKafkaProducer

    from stream.runtime.kafka import bootstrap_servers, client_kwargs, ensure_topics

    settings = settings or Settings()
    payloads = [(label_key(r), schemas.encode("Label", r)) for r in records]  # validate all before sending any
    await ensure_topics(broker, settings)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers(broker), acks="all", linger_ms=5,
                                **client_kwargs(settings))
    try:
        await producer.start()
        sent = [await producer.send(TOPICS["labels"], value, key=key) for key, value in payloads]
        await asyncio.gather(*sent)  # raises if any message was not acknowledged
    finally:
        await producer.stop()
    return len(payloads)


async def read_labels(broker: str, settings: Settings | None = None, idle_polls: int = 6,
                      timeout: float = 300.0) -> tuple[list[dict[str, Any]], int]:
    """Every Label on the labels topic, oldest first, and the number of messages that were not Labels.

    The end of the topic is the high watermark reported by the fetches themselves (an offsets
    request can return a stale end on some brokers). ``idle_polls`` empty polls of 0.5 s end the
    read only while no fetch has reported a watermark (an empty topic); a read that knows its end
    but cannot reach it within ``timeout`` seconds raises TimeoutError rather than return part of
    the labels.
    """
    from aiokafka import AIOKafkaConsumer

    from stream.runtime.kafka import bootstrap_servers, client_kwargs, read_to_end, topic_partitions

    settings = settings or Settings()
    topic = TOPICS["labels"]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers(broker), group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest", **client_kwargs(settings))
    records: list[dict[str, Any]] = []
    bad = 0
    try:
        await consumer.start()
        if topic not in await consumer.topics():
            return [], 0
        parts = await topic_partitions(consumer, [topic])
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        idle = 0
        deadline = time.monotonic() + timeout
        while True:
            got = await consumer.getmany(*parts, timeout_ms=500, max_records=5000)
            msgs = sorted((m for ms in got.values() for m in ms), key=lambda m: (m.partition, m.offset))
            for m in msgs:
                try:
                    records.append(schemas.decode(m.value, expect="Label")[1])
                except schemas.SchemaError:
                    bad += 1
            idle = 0 if msgs else idle + 1
            if await read_to_end(consumer, parts):
                break
            if idle >= idle_polls and any(consumer.highwater(tp) is None for tp in parts):
                break  # no fetch answered with a watermark: nothing to read
            if time.monotonic() > deadline:
                raise TimeoutError(f"read {len(records)} labels from {topic} but did not reach its end "
                                   f"within {timeout:.0f} s")
    finally:
        await consumer.stop()
    return records, bad


def write_jsonl(records: Iterable[dict[str, Any]], out: TextIO) -> int:
    """Write records as JSON lines with sorted keys; return how many."""
    n = 0
    for r in records:
        out.write(json.dumps(r, sort_keys=True) + "\n")
        n += 1
    return n


def latest_labels(records: Iterable[dict[str, Any]], period_tolerance: float) -> list[dict[str, Any]]:
    """The newest label per (task, object) and, for labels with a period, per signal: two periods of
    one object within ``period_tolerance`` (relative) are the same signal. Newest = largest at_ms,
    then latest in the input order. The result keeps the input order."""
    indexed = list(enumerate(records))
    kept: dict[tuple[str, str], list[tuple[int, dict[str, Any]]]] = {}
    for i, r in sorted(indexed, key=lambda ir: (ir[1]["at_ms"], ir[0]), reverse=True):
        same_object = kept.setdefault((r["task"], r["object"]), [])
        p = r.get("period_days")
        if any(_same_signal(p, other.get("period_days"), period_tolerance) for _, other in same_object):
            continue  # a newer label for this signal was kept already
        same_object.append((i, r))
    return [r for _, r in sorted((ir for group in kept.values() for ir in group), key=lambda ir: ir[0])]


def _same_signal(p: float | None, q: float | None, tolerance: float) -> bool:
    if p is None or q is None:
        return p is None and q is None
    return abs(p / q - 1.0) <= tolerance if q > 0 else p == q
