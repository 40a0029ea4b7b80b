"""Stars followed across sectors: a new sector of a star re-opens its transit search with every sector
seen of it before.

A planet whose period is longer than half a sector (HD 21749 b, 35.6 d; TOI-216 c, 34.5 d) transits at
most once in each 27-day sector, and a search of one sector cannot give its period; stitched, the
sectors show two or more transits. The data flow:

1. preprocess (stream/features/transits.py) keeps each sector's light curve averaged into 10-minute bins
   in its features message (``bins``, ~47 KB: a tenth of the two-minute cadences, and all the search
   refines on);
2. the light-curve score agent, once a sector is scored, sends a StarSector message (the features
   message and the alerts its signals raised) keyed by TIC id to ``skystream.stars``;
3. the stars agent (stream/worker/app.py) keeps a StarState per TIC in a Faust table whose changelog is
   the compacted topic ``skystream.stars.state`` (state.py): every sector of the star, newest
   ``MAX_SECTORS``. With two sectors or more it searches them stitched, each sector normalised and
   detrended on its own, scores the signals with the serving TESS model and publishes a multi-sector
   prediction and its alerts (search.py).

Why a Faust table and not the archive: the state is read and written by the worker that owns the star's
partition, in the same at-least-once batch as the event that changed it, and a restarted or new owner
recovers it from the changelog on the broker; the archive is an optional consumer that lags the stream
and may not run at all.

Identity of what is alerted (search.py): a multi-sector signal that one of the star's sectors already
alerted on alone is sent as an update of that alert (same alert_id, the sectors listed), the earliest
sector's when several did; a signal no single sector alerted on is a ``multi-sector-candidate`` with
its own alert_id, which later searches that find it again reuse. The search runs on the sectors sorted
by sector, so the order of arrival does not change the final answer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["sector_label", "sectors_phrase", "widest_search"]


def sector_label(record: Mapping[str, Any]) -> str:
    """Which sectors a light-curve prediction (or alert) searched: "6", or "1+2+3+4" for a search over a
    star's sectors together (stream/stars); "" when it has none."""
    if record.get("sectors"):
        return "+".join(str(s) for s in record["sectors"])
    return "" if record.get("sector") is None else str(record["sector"])


def sectors_phrase(record: Mapping[str, Any]) -> str:
    """``sector_label`` in words, for titles and summaries: "sector 6", "sectors 1+6"."""
    sectors = record.get("sectors") or ()
    if len(sectors) > 1:
        return "sectors " + sector_label(record)
    return f"sector {sectors[0] if sectors else record.get('sector')}"


def widest_search(records: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """Of a star's archived predictions, its search over the most sectors (the latest published of those):
    the one the others, over fewer sectors, led up to. None when it has none."""
    searches = [r for r in records if r.get("sectors")]
    return max(searches, key=lambda r: (len(r["sectors"]), r.get("published_at_ms") or 0)) if searches else None
