"""Small helpers shared by the tests (imported as a plain module: tests/ is on sys.path)."""

from __future__ import annotations

import importlib.util
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TypeVar

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.25) -> T:
    """Poll ``predicate`` every ``interval`` seconds until it returns something truthy, and return that;
    AssertionError naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (result := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)
    return result


def load_module(path: Path) -> ModuleType:
    """deploy/ scripts are standalone files, not packages: load them by path."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module


def process_gone(pid: int) -> bool:
    """The process has exited (a zombie waiting for a parent that is not this test counts as exited)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            return "zombie" in status.read().lower()
    except FileNotFoundError:
        return True


# Figures a test measured (fault recovery times, ...), printed at the end of the run by conftest's
# pytest_terminal_summary, so CI logs show them without `pytest -s`.
REPORTED: list[str] = []


def report(line: str) -> None:
    """Print ``line`` in the run's closing summary (and now, under ``pytest -s``)."""
    REPORTED.append(line)
    print(line)
