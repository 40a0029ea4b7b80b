"""Offline scoring (`skystream score`): files -> the workers' code path without a broker.

Each file is read, detected and preprocessed as the preprocess agent does, its features go through
their Avro message (so the model sees exactly what a worker would), and the batch goes through the
same ``score_and_publish`` as the score agents, into a sink that collects. A star given in several
sectors is then searched over all of them, with the stars agent's code (stream/stars).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import schemas
from stream import kinds
from stream.errors import Rejected, Unavailable
from stream.features import detect
from stream.ingest import storage
from stream.scoring.publish import CollectingSink, score_and_publish
from stream.scoring.scorer import Scorer
from stream.stars.search import search_star
from stream.stars.state import add_sector, empty_state, sector_message

__all__ = ["data_features_message", "detect_kind", "features_message", "score_bytes", "score_files"]

log = logging.getLogger(__name__)


def features_message(path: Path) -> tuple[kinds.Kind, bytes]:
    """(kind, features message bytes) of one file, as the preprocess agent would write them
    (detected_at_ms 0: no watcher saw the file)."""
    uri = str(path.resolve())
    return data_features_message(storage.read_bytes(uri), uri)


def detect_kind(data: bytes) -> kinds.Kind:
    """The kind of a file's content (Rejected when it is neither kind)."""
    return kinds.by_name(detect.detect_kind(data[: detect.HEAD_BYTES]))


def data_features_message(data: bytes, uri: str) -> tuple[kinds.Kind, bytes]:
    """(kind, features message bytes) of content already read; ``uri`` names it (the object name of a
    spectrum comes from its last path segment) and is never opened."""
    kind = detect_kind(data)
    record = kind.extract(data, uri=uri, file_id=hashlib.sha256(data).hexdigest(), detected_at_ms=0)
    return kind, schemas.encode(kind.features_schema, record)


def score_files(scorer: Scorer, paths: Iterable[Path], stars: bool = True) -> Iterator[dict[str, Any]]:
    """One result per file, in order, as soon as it is known: its prediction (without
    ``detected_at_ms``), or ``{"source", "rejected": True, "reason", "error"}``. Never raises for one file.

    With ``stars``, then one more result per star given in two sectors or more: the search over all
    its sectors together, as the stream's stars agent makes it once every sector has arrived
    (stream/stars; a prediction with ``sectors``), or a rejection naming the star."""
    sectors: dict[int, dict[int, bytes]] = {}  # TIC -> sector -> StarSector message (the last file given)
    with asyncio.Runner() as runner:
        for path in paths:
            kept: list[tuple[dict[str, Any], bytes]] = []
            yield _score_one(runner, scorer, str(path.resolve()), lambda p=path: features_message(p), kept)
            for prediction, message in kept:
                if stars and (sector := sector_message(prediction, message, [])) is not None:
                    sectors.setdefault(int(prediction["tic_id"]), {})[int(prediction["sector"])] = sector
    for tic, by_sector in sectors.items():
        if len(by_sector) >= 2:
            yield _score_star(scorer, tic, list(by_sector.values()))


def _score_star(scorer: Scorer, tic: int, messages: list[bytes]) -> dict[str, Any]:
    """The search over a star's sectors, as ``score_files`` reports it."""
    state = empty_state(tic)
    try:
        for message in messages:
            state, _ = add_sector(state, message)
        result = search_star(state, scorer.model("tess"), scorer.toi, figures=False)
    except (Rejected, Unavailable) as exc:
        return _rejected(f"TIC {tic}", exc.reason, str(exc))
    except Exception as exc:  # never stop on one star
        log.debug("star search failed", exc_info=True)
        return _rejected(f"TIC {tic}", "internal-error", f"{type(exc).__name__}: {exc}")
    assert result is not None  # two sectors or more
    return {k: v for k, v in result.prediction.items() if k != "detected_at_ms"}


def score_bytes(scorer: Scorer, data: bytes, uri: str) -> dict[str, Any]:
    """The result ``score_files`` gives for a file, for content already in memory (the REST API's
    uploads): ``uri`` only names it. Runs its own event loop, so call it from a thread inside one."""
    with asyncio.Runner() as runner:
        return _score_one(runner, scorer, uri, lambda: data_features_message(data, uri))


def _score_one(runner: asyncio.Runner, scorer: Scorer, uri: str, features: Callable[[], tuple[kinds.Kind, bytes]],
               kept: list[tuple[dict[str, Any], bytes]] | None = None) -> dict[str, Any]:
    """One file's result; ``kept`` gets its (prediction, features message) when it has a prediction."""
    try:
        kind, message = features()
        outcome = runner.run(score_and_publish(scorer, kind, [message], CollectingSink(), alerts=False))[0]
    except (Rejected, Unavailable) as exc:
        return _rejected(uri, exc.reason, str(exc))
    except Exception as exc:  # never stop on one file
        log.debug("score failed", exc_info=True)
        return _rejected(uri, "internal-error", f"{type(exc).__name__}: {exc}")
    if outcome.prediction is None:
        dead = outcome.rejected or {}
        error = dead.get("error", "")
        if dead.get("reason") == "internal-error":
            error = f"{dead.get('error_type')}: {error}"
        return _rejected(uri, dead.get("reason", "internal-error"), error)
    if kept is not None:
        kept.append((outcome.prediction, message))
    return {k: v for k, v in outcome.prediction.items() if k != "detected_at_ms"}


def _rejected(uri: str, reason: str, error: str) -> dict[str, Any]:
    return {"source": uri, "rejected": True, "reason": reason, "error": error}
