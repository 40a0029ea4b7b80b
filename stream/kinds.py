"""The kinds of input SkyStream scores: one definition each, used by every stage.

A kind ties together what the watcher detects, the features message the preprocess stage writes
(its Avro type and topic), the registry task whose model scores it, and the code of each stage.
The code is named "module:function" and imported on first use, so a worker that only ever sees
spectra never loads the transit search, its predictor or its figures.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stream.errors import Rejected
from stream.settings import TOPICS, Settings

__all__ = ["KINDS", "Kind", "Limits", "by_name", "by_task", "limits", "max_bytes", "names"]


def _load(target: str) -> Callable[..., Any]:
    # Looked up at each call (a dict lookup once imported), so a patched module function takes effect.
    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)


@dataclass(frozen=True)
class Kind:
    """One kind of input and the code that handles it at each stage."""

    name: str  # the FileEvent's kind
    features_schema: str  # Avro message type of its features (schemas/avro)
    topic_key: str  # key of its features topic in stream.settings.TOPICS
    task: str  # registry task whose champion scores it
    extractor: str  # "module:function": (bytes, *, uri, file_id, detected_at_ms) -> features record
    predictor: str  # "module:function": (model, records, toi) -> Prediction records
    drift_summary: str  # "module:function": features record -> {feature: float} for the drift monitor
    # Seconds of CPU per file: score and draw alerts off the event loop.
    slow: bool = False
    # Bounds on one file (Settings SKYSTREAM_MAX_<KIND>_BYTES / _SECONDS / _MEMORY_MB override them).
    max_bytes: int = 4 * 2**20
    max_seconds: float = 10.0
    max_memory_mb: int = 512

    @property
    def features_topic(self) -> str:
        """The Kafka topic its features messages go to."""
        return TOPICS[self.topic_key]

    def extract(self, data: bytes, *, uri: str, file_id: str, detected_at_ms: int) -> dict[str, Any]:
        """The features record of one file's bytes (Rejected when the file is unusable)."""
        return _load(self.extractor)(data, uri=uri, file_id=file_id, detected_at_ms=detected_at_ms)

    def predict(self, model: Any, records: list[dict[str, Any]], toi: Any = None) -> list[dict[str, Any]]:
        """Prediction records for a batch of features records, in order (``toi``: a TOICatalog or None)."""
        return _load(self.predictor)(model, records, toi)

    def summarise(self, record: dict[str, Any]) -> dict[str, float]:
        """The scalar views of a features record that the drift monitor bins."""
        return _load(self.drift_summary)(record)


KINDS: tuple[Kind, ...] = (
    Kind(
        name="spectrum",
        features_schema="SpectrumFeatures",
        topic_key="features.spectrum",
        task="smass",
        extractor="stream.features.spectra:spectrum_features",
        predictor="stream.scoring.spectrum_predictor:predict_spectra",
        drift_summary="stream.scoring.drift:spectrum_summary",
        # A SMASS spectrum is ~10 KB and takes ~1 ms; the limits leave room for other surveys' tables.
        max_bytes=4 * 2**20,
        max_seconds=10.0,
        max_memory_mb=512,  # ~5 MB for a SMASS file; the operator's 90 MB file needed 716 MB
    ),
    Kind(
        name="lightcurve",
        features_schema="LightCurveFeatures",
        topic_key="features.lightcurve",
        task="tess",
        extractor="stream.features.transits:lightcurve_features",
        predictor="stream.scoring.transit_predictor:predict_transits",
        drift_summary="stream.scoring.drift:lightcurve_summary",
        slow=True,
        # A TESS 2-min SPOC light curve is ~2 MB (20-s cadence ~10 MB) and its period search takes
        # seconds of CPU (tens on a loaded machine).
        max_bytes=128 * 2**20,
        max_seconds=180.0,
        max_memory_mb=2048,  # ~130 MB for a 2-min SPOC sector
    ),
)

_BY_NAME = {k.name: k for k in KINDS}
_BY_TASK = {k.task: k for k in KINDS}


def names() -> list[str]:
    """Every kind's name, sorted."""
    return sorted(_BY_NAME)


def by_name(name: str) -> Kind:
    """The kind called ``name``; Rejected('unknown-kind') when there is none (names come from messages)."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise Rejected("unknown-kind", f"no kind of input called {name!r}") from None


def by_task(task: str) -> Kind:
    """The kind a registry task's models score (KeyError for a task no kind uses)."""
    return _BY_TASK[task]


@dataclass(frozen=True)
class Limits:
    """What preprocessing one file of a kind may take."""

    max_bytes: int  # larger files are refused unread (too-large)
    max_seconds: float  # wall-clock budget per file (timeout)
    max_memory_bytes: int  # address space preprocessing it may add to its process's (out-of-memory)


def limits(settings: Settings) -> dict[str, Limits]:
    """Each kind's limits: its defaults, overridden by SKYSTREAM_MAX_<KIND>_BYTES/_SECONDS/_MEMORY_MB."""

    def setting(kind: Kind, what: str, default: Any) -> Any:
        """The ``max_<kind>_<what>`` setting, or ``default`` when it is unset."""
        value = getattr(settings, f"max_{kind.name}_{what}")
        return default if value is None else value

    return {
        k.name: Limits(
            max_bytes=int(setting(k, "bytes", k.max_bytes)),
            max_seconds=float(setting(k, "seconds", k.max_seconds)),
            max_memory_bytes=int(setting(k, "memory_mb", k.max_memory_mb)) * 2**20,
        )
        for k in KINDS
    }


def max_bytes(settings: Settings) -> dict[str, int]:
    """Each kind's largest accepted file, in bytes (what the watcher checks before reading)."""
    return {name: lim.max_bytes for name, lim in limits(settings).items()}
