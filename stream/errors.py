"""Errors that stop one input without stopping a worker: rejected for good (a dead letter), or
unavailable for now (retried)."""

from __future__ import annotations

__all__ = ["Rejected", "Unavailable"]


class _Coded(Exception):
    """An exception with a short stable ``reason`` code (for metrics labels and alert rules) and a
    human-readable message; both survive pickling, since preprocessing runs in child processes."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason

    def __str__(self) -> str:
        return self.args[0]

    def __reduce__(self) -> tuple:
        return (type(self), (self.reason, self.args[0]))


class Rejected(_Coded):
    """An input that cannot be processed. It becomes a dead-letter message; the stream goes on."""


class Unavailable(_Coded):
    """Something the input needs is unreachable or missing for now (storage, the registry, a model).

    Not the input's fault: the worker pauses and retries the same input instead of dead-lettering it.
    """
