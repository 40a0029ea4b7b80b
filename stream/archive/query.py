"""Reading the archive back: pyarrow.dataset over its Parquet files, de-duplicated.

The archiver delivers at least once, and replays (rescore, a second archiver) repeat messages, so
every query keeps one row per record key (stream/archive/store.py RecordType.key): the one
published first. DuckDB reads the same files (``read_parquet('<archive>/predictions/**/*.parquet',
hive_partitioning=true)``) for ad-hoc SQL; it is not needed here.
"""

from __future__ import annotations

import re
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from stream.archive.store import DAY, RECORD_TYPES, archive_uri, dataset_schema, open_location
from stream.settings import Settings

__all__ = ["alerts", "history", "latest_versions", "object_names", "open_dataset", "read", "unique"]

_TIC = re.compile(r"tic\s*-?\s*(\d+)", re.IGNORECASE)
_PROVISIONAL = re.compile(r"(\d{4})\s*([A-Za-z]{2})(\d*)")
_SMASS_FILE = re.compile(r"a(\d{6,7})(?:\.\[2\])?")


def open_dataset(table: str, uri: str | None = None, settings: Settings | None = None) -> ds.Dataset | None:
    """The dataset of one archived type (``predictions``, ``alerts``, ``rejected``), or None while the
    archive has no file of it. Opened with the current schema: columns older files lack read as null."""
    settings = settings or Settings()
    filesystem, base = open_location(uri or archive_uri(settings), settings)
    root = f"{base}/{table}"
    from pyarrow import fs

    if filesystem.get_file_info(root).type != fs.FileType.Directory:
        return None
    kind = RECORD_TYPES[table]
    partitioning = ds.partitioning(pa.schema([pa.field(kind.partition, pa.string()), DAY]), flavor="hive")
    return ds.dataset(root, filesystem=filesystem, format="parquet", partitioning=partitioning,
                      schema=dataset_schema(table))


def read(table: str, filter: ds.Expression | None = None, *, uri: str | None = None,
         settings: Settings | None = None, dedupe: bool = True) -> pa.Table:
    """Rows of one archived type matching ``filter``, one per record unless ``dedupe`` is False,
    in the order they were published."""
    dataset = open_dataset(table, uri, settings)
    if dataset is None:
        return dataset_schema(table).empty_table()
    rows = dataset.to_table(filter=filter)
    rows = rows.sort_by([("published_at_ms", "ascending"), ("kafka_partition", "ascending"),
                         ("kafka_offset", "ascending")])
    return unique(rows, RECORD_TYPES[table].key) if dedupe else rows


def unique(rows: pa.Table, key: tuple[str, ...]) -> pa.Table:
    """The first row of each distinct ``key`` (nulls count as a value), in the table's order."""
    numbered = rows.append_column("_row", pa.array(range(rows.num_rows), pa.int64()))
    first = numbered.group_by(list(key), use_threads=False).aggregate([("_row", "min")])["_row_min"]
    return rows.take(pc.take(first, pc.sort_indices(first)))


def object_names(text: str) -> list[str]:
    """The ``object`` values a user's name for a target may mean, as the stream writes them:
    "TIC 25155310" / "tic25155310" -> TIC 25155310; "4" / "0004" / "a000004" -> asteroid 4 (and
    TIC 4, since a bare number is either); "1996 UK" / "1996uk" -> 1996 UK."""
    name = " ".join(text.split())
    if m := _TIC.fullmatch(name):
        return [f"TIC {int(m.group(1))}"]
    if name.isdigit():
        return [str(int(name)), f"TIC {int(name)}"]
    if m := _SMASS_FILE.fullmatch(name):
        return [str(int(m.group(1)))]
    if m := _PROVISIONAL.fullmatch(name.removeprefix("au")):
        return [f"{m.group(1)} {m.group(2).upper()}{m.group(3)}"]
    return [name]


def history(object_id: str, *, uri: str | None = None, settings: Settings | None = None) -> list[dict[str, Any]]:
    """Every prediction archived for a TIC id or asteroid, across sectors, files and model versions,
    one per prediction (duplicates removed), oldest observation first (then publication); a star's
    searches over several sectors come after its one-sector ones, fewest sectors first."""
    names = object_names(object_id)
    rows = read("predictions", pc.field("object").isin(names), uri=uri, settings=settings)
    records = rows.to_pylist(maps_as_pydicts="strict")
    return sorted(records, key=lambda r: (r["object"], r["sector"] is None, r["sector"] or 0,
                                          len(r.get("sectors") or ()), r["observation_start"] or "",
                                          r["published_at_ms"]))


def alerts(*, since_ms: int | None = None, uri: str | None = None,
           settings: Settings | None = None) -> list[dict[str, Any]]:
    """Every archived alert (one per alert_id: its latest update), oldest first, as Alert records; only
    those published at or after ``since_ms`` when given. Subscribers run their filters over these
    (`alerts --archive`)."""
    where = pc.field("published_at_ms") >= since_ms if since_ms is not None else None
    rows = read("alerts", where, uri=uri, settings=settings, dedupe=False)
    return latest_versions(rows.to_pylist(maps_as_pydicts="strict"))


def latest_versions(alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One alert per alert_id, in the order given: of an alert updated by a search over more sectors
    (stream/stars), the version over the most sectors, where that version was published."""
    best: dict[str, tuple[int, dict[str, Any]]] = {}
    for i, a in enumerate(alerts):
        held = best.get(a["alert_id"])
        if held is None or len(a.get("sectors") or ()) > len(held[1].get("sectors") or ()):
            best[a["alert_id"]] = (i, a)
    return [a for _, a in sorted(best.values(), key=lambda kept: kept[0])]
