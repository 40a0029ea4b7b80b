"""Retraining from feedback: read curated labels and merge them into each task's base data.

Pure functions (no TensorFlow); the trainers call them between loading their data and training:

    labels = load_labels(args.with_labels)                 # broker host:port, or a JSON-lines dump
    merged = merge_smass(labels, taxonomy, spectrum_objects)   # or merge_tess(labels, examples)
    print(merged.summary()); metadata["feedback"] = merged.report

Rules:
- Labels are deduplicated per (task, object) and, when they carry a period, per signal (two periods
  of one object within ``PERIOD_TOLERANCE`` are one signal): the newest (``at_ms``, then the latest
  on the topic) wins, so a correction simply publishes a newer label.
- Curated labels override the base catalogue's label. A SMASS object that the base catalogue does
  not list counts only when a spectrum file for it exists (a class without data trains nothing).
- A TESS label applies to the examples of the same TIC id whose period agrees within
  ``PERIOD_TOLERANCE`` (relative; optionally also 2x and 1/2x aliases); labels without a period
  cannot name a signal and are not applied.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import schemas
from stream.ingest.labels import SMASS_TASK, TESS_TASK, latest_labels
from stream.scoring.toi import PERIOD_TOLERANCE

__all__ = ["PERIOD_TOLERANCE", "Merged", "dedup_labels", "labels_sha256", "load_labels", "merge_smass",
           "merge_tess", "read_jsonl"]

_BROKER = re.compile(r"(kafka://)?[\w.\-]+:\d+([,;](kafka://)?[\w.\-]+:\d+)*")


@dataclass
class Merged:
    """The base data with the curated labels applied, and what changed (``report``, JSON-ready).

    ``sources`` gives, per row of ``data`` (per example for TESS, per object for SMASS), the label's
    source: "" for the base label, else the Label's ``source`` (e.g. "TFOPWG:CP").
    """

    data: Any
    report: dict[str, Any]
    sources: Any = field(default=None)

    def summary(self) -> str:
        """One paragraph saying what the feedback labels changed."""
        r = self.report
        moves = ", ".join(f"{k} {v}" for k, v in sorted(r.get("transitions", {}).items(), key=lambda kv: -kv[1]))
        ignored = ", ".join(f"{k} {v}" for k, v in r.get("ignored", {}).items() if v)
        if r["task"] == TESS_TASK:
            head = (f"{r['applied']} matched {r['examples_matched']} of {r['examples']} examples "
                    f"({r['changed']} relabelled, {r['confirmed']} unchanged)")
        else:
            head = (f"{r['applied']} applied ({r['changed']} changed, {r['added']} added, "
                    f"{r['confirmed']} unchanged)")
        return (f"{r['task']} feedback: {r['labels']} labels; {head}"
                + (f"; changes: {moves}" if moves else "") + (f"; ignored: {ignored}" if ignored else ""))


# -- reading -----------------------------------------------------------------------------------------
def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Label records from a JSON-lines file (`skystream labels dump`); every line must be a valid Label."""
    records = []
    with Path(path).open() as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                schemas.validate("Label", record)
            except (json.JSONDecodeError, schemas.SchemaError) as exc:
                raise ValueError(f"{path}:{number}: not a Label record: {exc}") from None
            records.append(record)
    return records


def dedup_labels(labels: Iterable[Mapping[str, Any]], period_tolerance: float = PERIOD_TOLERANCE
                 ) -> list[dict[str, Any]]:
    """The newest label per (task, object[, signal period]); see the module doc."""
    return latest_labels([dict(r) for r in labels], period_tolerance)


def load_labels(source: str | Path | None = None, task: str | None = None, *,
                period_tolerance: float = PERIOD_TOLERANCE) -> list[dict[str, Any]]:
    """Deduplicated labels (of ``task``, or all) from a broker or a JSON-lines file.

    ``source``: an existing file path (JSON lines), or Kafka bootstrap servers (``host:port[,...]``,
    ``kafka://`` allowed) whose labels topic is read from the beginning to its end; None means
    $SKYSTREAM_BROKER.
    """
    import asyncio

    from stream.settings import Settings

    settings = Settings()
    source = source if source is not None else settings.broker
    if not source:
        raise ValueError("no labels source: give a JSON-lines file or a broker host:port (or set SKYSTREAM_BROKER)")
    if Path(source).exists():
        records = read_jsonl(source)
    elif _BROKER.fullmatch(str(source)):
        from stream.ingest.labels import read_labels

        records, _bad = asyncio.run(read_labels(str(source), settings))
    else:
        raise ValueError(f"labels source {str(source)!r} is neither an existing JSON-lines file nor a broker host:port")
    if task is not None:
        records = [r for r in records if r["task"] == task]
    return dedup_labels(records, period_tolerance)


def labels_sha256(labels: Iterable[Mapping[str, Any]]) -> str:
    """A digest of a set of labels (order-independent), for the training-data hash in model metadata."""
    lines = sorted(json.dumps(dict(r), sort_keys=True) for r in labels)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def _newest_last(labels: Iterable[Mapping[str, Any]], task: str, period_tolerance: float) -> list[dict[str, Any]]:
    """This task's labels, deduplicated, oldest first (so applying them in order lets the newest win)."""
    own = dedup_labels((r for r in labels if r["task"] == task), period_tolerance)
    return sorted(own, key=lambda r: r["at_ms"])


# -- SMASS -------------------------------------------------------------------------------------------
def merge_smass(labels: Iterable[Mapping[str, Any]], taxonomy_rows: Mapping[str, Any],
                spectrum_objects: Collection[str], known_classes: Collection[str] | None = None) -> Merged:
    """Bus classes by object after applying the curated ``smass`` labels to the base catalogue.

    ``taxonomy_rows``: object -> Bus class, or -> an entry with a ``.bus`` attribute (what
    training.smass.parse_taxonomy returns); "" means unclassified. ``spectrum_objects``: the objects
    that have a spectrum file (stream.spectra.object_name of each file). ``known_classes``: classes
    the trainer can learn (others are ignored and counted), default all.

    ``Merged.data`` is {object: Bus class} for every classified object (base or curated);
    ``Merged.sources`` is {object: label source} for the objects a label set.
    """
    base = {obj: (row if isinstance(row, str) else getattr(row, "bus", "")) or "" for obj, row in taxonomy_rows.items()}
    classes = dict(base)
    sources: dict[str, str] = {}
    have_spectrum = set(spectrum_objects)
    ignored: Counter[str] = Counter()
    transitions: Counter[str] = Counter()
    changes = []
    own = _newest_last(labels, SMASS_TASK, 0.0)
    for r in own:
        obj, new = r["object"], r["label"]
        if known_classes is not None and new not in known_classes:
            ignored["unknown_class"] += 1
            continue
        if obj not in base and obj not in have_spectrum:
            ignored["no_spectrum"] += 1  # a new object without data trains nothing
            continue
        old = classes.get(obj, "")
        classes[obj], sources[obj] = new, r["source"]
        if old != new:
            transitions[f"{old or 'none'}->{new}"] += 1
            changes.append({"object": obj, "from": old or None, "to": new, "source": r["source"],
                            "spectrum": obj in have_spectrum})
    applied = len(sources)
    changed = sum(1 for c in changes if c["from"] is not None)
    added = sum(1 for c in changes if c["from"] is None)
    report = {
        "task": SMASS_TASK, "labels": len(own), "applied": applied, "changed": changed, "added": added,
        "confirmed": applied - changed - added,
        "changed_with_spectrum": sum(1 for c in changes if c["spectrum"]),
        "transitions": dict(transitions), "ignored": dict(ignored), "changes": changes,
        "labels_sha256": labels_sha256(own),
    }
    return Merged({obj: c for obj, c in classes.items() if c}, report, sources)


# -- TESS --------------------------------------------------------------------------------------------
def merge_tess(labels: Iterable[Mapping[str, Any]], examples: Mapping[str, np.ndarray], *,
               classes: tuple[str, ...] | None = None, tolerance: float = PERIOD_TOLERANCE, aliases: bool = False,
               tic_key: str = "tic_id", period_key: str = "Period", label_key: str = "Disposition",
               index_key: str | None = "label") -> Merged:
    """Relabel TESS examples (columns, as training.tess.load_split returns them) from ``tess`` labels.

    An example takes the label whose TIC id equals its ``tic_key`` and whose period is closest to its
    ``period_key`` within ``tolerance`` (relative; with ``aliases`` also at 2x or 1/2x, which BLS
    finds for equal eclipses or gaps). ``label_key`` (class names) and ``index_key`` (indices into
    ``classes``, default stream.transit_model.CLASSES) are rewritten; every other column is shared.
    """
    if classes is None:
        from stream.scoring.transit_predictor import CLASSES as classes  # the model's class order
    tics = np.asarray(examples[tic_key]).astype(np.int64)
    periods = np.asarray(examples[period_key], dtype=np.float64)
    old = np.asarray(examples[label_key]).astype(str)
    new = old.copy()
    sources = np.full(len(tics), "", dtype=object)
    ignored: Counter[str] = Counter()
    by_tic: dict[int, list[dict[str, Any]]] = {}
    own = _newest_last(labels, TESS_TASK, tolerance)
    for r in own:
        if r["label"] not in classes:
            ignored["unknown_class"] += 1
        elif r.get("period_days") is None or not r["period_days"] > 0:
            ignored["no_period"] += 1
        elif not r["object"].isdigit():
            ignored["not_a_tic_id"] += 1
        else:
            by_tic.setdefault(int(r["object"]), []).append(r)
    factors = (1.0, 2.0, 0.5) if aliases else (1.0,)
    used: set[int] = set()
    for i in np.flatnonzero(np.isin(tics, np.fromiter(by_tic, dtype=np.int64, count=len(by_tic)))):
        best: tuple[float, int, dict[str, Any]] | None = None
        for r in by_tic[int(tics[i])]:
            for f in factors:
                error = abs(periods[i] / (r["period_days"] * f) - 1.0)
                if error <= tolerance and (best is None or error < best[0]):
                    best = (error, id(r), r)
        if best is not None:
            new[i], sources[i] = best[2]["label"], best[2]["source"]
            used.add(best[1])
    ignored["no_matching_example"] = sum(1 for rs in by_tic.values() for r in rs if id(r) not in used)
    matched = sources != ""
    changed = matched & (new != old)
    transitions = Counter(f"{a}->{b}" for a, b in zip(old[changed], new[changed], strict=True))
    data = dict(examples)
    data[label_key] = new
    if index_key is not None and index_key in examples:
        lookup = {c: k for k, c in enumerate(classes)}
        keep = np.array([c in lookup for c in new])
        if not keep.all():  # a base label outside the model's classes (e.g. O) that no label replaced
            raise ValueError(f"examples have labels outside {classes}: {sorted(set(new[~keep]))}")
        data[index_key] = np.array([lookup[c] for c in new], dtype=np.asarray(examples[index_key]).dtype)
    report = {
        "task": TESS_TASK, "labels": len(own), "applied": int(len(used)), "examples": int(len(tics)),
        "examples_matched": int(matched.sum()), "changed": int(changed.sum()),
        "confirmed": int((matched & ~changed).sum()), "tolerance": tolerance, "aliases": aliases,
        "transitions": dict(transitions), "ignored": dict(ignored),
        "labels_sha256": labels_sha256(own),
    }
    return Merged(data, report, sources)
