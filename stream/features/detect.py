"""File -> features: recognise what a file holds and turn it into the model's inputs.

Both the preprocess agent and `skystream score` go through here, so the stream and offline scoring
cannot differ. The science lives in stream/features/spectra.py and stream/features/transits.py.
"""

from __future__ import annotations

from typing import Any

from stream import kinds
from stream.errors import Rejected
from stream.features import lightcurves, spectra

__all__ = ["detect_kind", "extract"]

HEAD_BYTES = 16384


def detect_kind(head: bytes) -> str:
    """The kind of input, from the first bytes of the file; Rejected when it is neither."""
    if not head:
        raise Rejected("empty-file", "the file is empty")
    if head.startswith(b"SIMPLE  ="):
        if lightcurves.looks_like_lightcurve(head):
            return "lightcurve"
        raise Rejected("unsupported-fits", "a FITS file that is not a TESS light curve")
    if spectra.looks_like_spectrum(head):
        return "spectrum"
    if b"\x00" in head[:4096]:
        raise Rejected("binary-content", "binary content that is neither FITS nor a text table")
    raise Rejected("unknown-kind", "neither a reflectance spectrum table nor a TESS light-curve FITS file")


def extract(kind: str, data: bytes, *, uri: str, file_id: str, detected_at_ms: int) -> tuple[str, dict[str, Any]]:
    """(features message type, record) for one file's bytes; the kind's extractor is imported on first use."""
    spec = kinds.by_name(kind)
    return spec.features_schema, spec.extract(data, uri=uri, file_id=file_id, detected_at_ms=detected_at_ms)
