"""Shared fixtures: the real embedded broker, real SMASSII files, bad files."""

from __future__ import annotations

import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests import data_paths as a plain module

from data_paths import require_data  # noqa: E402
from helpers import REPORTED  # noqa: E402

from stream.runtime.embedded_broker import EmbeddedBroker  # noqa: E402


@pytest.fixture(scope="session")
def smass_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The observed SMASSII spectra (not the .spfit fits), unpacked once per session."""
    archive = require_data("smass2/smass2data.tar.gz")
    dest = tmp_path_factory.mktemp("smass2")
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers()
                   if m.isfile() and ".spfit" not in m.name and Path(m.name).name.startswith("a")]
        for m in members:
            m.name = Path(m.name).name
        tar.extractall(dest, members=members, filter="data")
    return dest


@pytest.fixture()
def embedded_broker(tmp_path: Path):
    """A fresh tansu broker on a free loopback port (in-memory: nothing leaks between tests)."""
    with EmbeddedBroker(log_file=tmp_path / "broker.log") as broker:
        yield broker


# A SMASS-format table (0.435-0.925 um) cut off mid-line after ~0.53 um, as a broken download leaves it.
_TABLE = "".join(f"{0.435 + i * 0.0025:.4f}\t{1 + 0.3 * i / 196:.4f}\t0.0100\n" for i in range(197)).encode()
BAD_FILES = {
    # name -> (content, reason codes acceptable for it)
    "truncated.txt": (_TABLE[:800], {"insufficient-coverage"}),
    "garbage.bin": (np.random.default_rng(1).bytes(4096), {"binary-content"}),
    "empty.txt": (b"", {"empty-file"}),
    "wrong_columns.txt": (b"\n".join(f"{0.44 + i * 0.01:.2f} 1.0 0.01 5 6".encode() for i in range(49)),
                          {"unknown-kind", "wrong-columns"}),
    "all_nan.txt": (b"\n".join(f"{0.44 + i * 0.01:.2f}\tnan\t0.01".encode() for i in range(49)), {"all-nan"}),
}


@pytest.fixture()
def bad_files(tmp_path: Path) -> dict[str, set[str]]:
    """Writes the bad inputs into ``tmp_path / 'bad'``; returns name -> acceptable reasons."""
    d = tmp_path / "bad"
    d.mkdir()
    for name, (content, _) in BAD_FILES.items():
        (d / name).write_bytes(content)
    return {name: reasons for name, (_, reasons) in BAD_FILES.items()}


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The figures tests measured (helpers.report), e.g. the time each fault took to recover from."""
    if REPORTED:
        terminalreporter.section("measured")
        for line in REPORTED:
            terminalreporter.write_line(line)
