"""Optional model signing: an HMAC-SHA256 of the ONNX bytes, stored in the version's metadata.

With ``SKYSTREAM_MODEL_SIGNING_KEY`` set, publishing to a registry stores ``hmac_sha256`` and workers
refuse a model whose HMAC is missing or wrong. HMAC is a *shared secret*: whoever can verify can also
sign, so every worker holding the key could sign a model too. It stops someone who can write to the
registry (but does not hold the key) from getting a model served; a real asymmetric signature
(e.g. ed25519, where workers hold only a public key) would need a new dependency.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from stream.errors import Rejected

__all__ = ["METADATA_FIELD", "sign", "verify"]

METADATA_FIELD = "hmac_sha256"


def sign(onnx: bytes, key: str) -> str:
    """The hex HMAC-SHA256 of ``onnx`` under ``key``."""
    return hmac.new(key.encode(), onnx, hashlib.sha256).hexdigest()


def verify(onnx: bytes, metadata: dict[str, Any], key: str | None, what: str) -> None:
    """Raise Rejected('unsigned' or 'bad-signature') unless ``metadata`` carries the HMAC of ``onnx``
    under ``key``; nothing to check when no key is configured."""
    if not key:
        return
    stored = metadata.get(METADATA_FIELD)
    if not stored:
        raise Rejected("unsigned", f"{what}: no {METADATA_FIELD} in its metadata, and a signing key is configured")
    if not hmac.compare_digest(str(stored), sign(onnx, key)):
        raise Rejected("bad-signature", f"{what}: {METADATA_FIELD} does not match the model under the configured key")
