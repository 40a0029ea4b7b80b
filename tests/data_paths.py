"""Where the shared real data lives for tests: stream.settings.shared_data() ($SKYSTREAM_SHARED_DATA,
else ../shared/data beside the project root).

Tests import this (``from data_paths import SHARED_DATA, require_data``) and skip with a clear reason
when a dataset is absent, instead of failing on a machine without it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from stream.settings import shared_data

SHARED_DATA = shared_data()


def data_path(relative: str) -> Path:
    """The path of ``relative`` under the shared data directory (it may not exist)."""
    return SHARED_DATA / relative


def require_data(relative: str) -> Path:
    """The path of ``relative`` under the shared data directory; skip the test when it is absent."""
    path = data_path(relative)
    if not path.exists():
        pytest.skip(f"real data {relative!r} not found at {path} (set SKYSTREAM_SHARED_DATA, or put "
                    "the data in ../shared/data beside the repo)")
    return path
