"""File -> features: recognise what a file holds and turn it into the model's inputs.

Both the preprocess agent and `skystream score` go through here, so the stream and offline scoring
cannot differ. The science lives in stream/features/spectra.py and stream/features/transits.py.
"""

from __future__ import annotations

import importlib
from typing import Any

from stream.errors import Rejected
from stream.features import lightcurves, spectra

HEAD_BYTES = 16384

# kind -> (features message type, features topic key, "module:function" of the extractor). The
# extractor is imported on first use, so a worker that sees only spectra never loads the transit search.
KINDS: dict[str, tuple[str, str, str]] = {
    "spectrum": ("SpectrumFeatures", "features.spectrum", "stream.features.spectra:spectrum_features"),
    "lightcurve": ("LightCurveFeatures", "features.lightcurve", "stream.features.transits:lightcurve_features"),
}


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
    """(features message type, record) for one file's bytes."""
    try:
        schema_name, _topic, target = KINDS[kind]
    except KeyError:
        raise Rejected("unknown-kind", f"no preprocessing for kind {kind!r}") from None
    module, func = target.split(":")
    extractor = getattr(importlib.import_module(module), func)
    return schema_name, extractor(data, uri=uri, file_id=file_id, detected_at_ms=detected_at_ms)
