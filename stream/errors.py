"""Errors that reject one input without stopping a worker."""

from __future__ import annotations

__all__ = ["Rejected", "Unavailable"]


class Rejected(Exception):
    """An input that cannot be processed. It becomes a dead-letter message; the stream goes on.

    ``reason`` is a short stable code (for metrics labels and alert rules), the message is the
    human-readable explanation.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason

    def __str__(self) -> str:
        return self.args[0]

    def __reduce__(self) -> tuple:
        # Light curves are preprocessed in a process pool: the rejection must cross back intact.
        return (type(self), (self.reason, self.args[0]))


class Unavailable(Exception):
    """Something the input needs is unreachable or missing for now (storage, the registry, a model).

    Not the input's fault: the worker pauses and retries the same input instead of dead-lettering it.
    ``reason`` is a short stable code, as for Rejected.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason

    def __str__(self) -> str:
        return self.args[0]

    def __reduce__(self) -> tuple:
        return (type(self), (self.reason, self.args[0]))
