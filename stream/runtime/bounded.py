"""Run untrusted-input work in a child process with a time budget and a memory bound per item.

A ``BoundedChild`` owns one child process. It sends the child a batch of jobs in one message (so
cheap jobs pay one round trip per batch, not per item); the child answers job by job. Each answer
must come within the time budget, else the child is killed and replaced (the job: ``timeout``). The
child's address space is bounded (RLIMIT_AS, set beyond what the process holds when it starts), so a
job that asks for too much memory gets a MemoryError (the job: ``out-of-memory``, and the child is
replaced, its heap may be fragmented). A child that dies (a crash in a C library, the kernel's OOM
killer) costs its current job ``preprocess-crashed``. In every case the rest of the batch goes on in a
new child: one bad input never takes others, or the caller, down with it.

Children are forked from a forkserver, which starts as a fresh interpreter: the caller's threads and
locks (Kafka client, asyncio) never reach a child, and modules preloaded in the server cost nothing
per child.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import resource
import signal
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from stream.errors import Rejected, Unavailable

__all__ = ["BoundedChild", "ChildFailed", "Bounds", "preload", "start_forkserver"]

log = logging.getLogger(__name__)

COALESCE_SECONDS = 0.005  # BoundedChild._answer

_CONTEXT = multiprocessing.get_context("forkserver")


def preload(modules: list[str]) -> None:
    """Modules the forkserver imports once, before it forks any child (no effect once it runs)."""
    _CONTEXT.set_forkserver_preload(modules)


def start_forkserver() -> None:
    """Start the forkserver now (thread-safe; no-op once it runs): it imports the preloaded modules,
    about a second of CPU that the first batch would otherwise wait for."""
    from multiprocessing import forkserver

    forkserver.ensure_running()


@dataclass(frozen=True)
class Bounds:
    """What one job may take."""

    seconds: float  # wall-clock time from the previous answer (or the batch being sent) to this one
    memory_bytes: int  # address space the child may add to what it holds when it starts


class ChildFailed(Exception):
    """A job raised an unexpected exception in the child (its type and traceback are in the message)."""


def _address_space() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[0]) * resource.getpagesize()


def _serve(conn: Connection, work: Callable[..., Any], memory_bytes: int) -> None:
    """The child: bound the address space, then answer each job of each batch received, in order."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is the parent's to handle
    limit = _address_space() + memory_bytes
    resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
    while True:
        try:
            jobs = conn.recv()
        except EOFError:  # the parent is gone
            return
        for job in jobs:
            try:
                answer: tuple = ("ok", work(*job))
            except Rejected as exc:
                answer = ("rejected", exc.reason, str(exc))
            except Unavailable as exc:  # not the file's fault: the parent pauses and retries
                answer = ("unavailable", exc.reason, str(exc))
            except MemoryError:
                conn.send(("out-of-memory",))
                return  # the parent starts a new child for the rest
            except Exception as exc:
                answer = ("error", f"{type(exc).__name__}: {exc}", traceback.format_exc())
            conn.send(answer)


class BoundedChild:
    """One child process that runs ``work(*job)`` for jobs sent in batches, within ``bounds`` each.

    ``work`` must be picklable (a module-level function or a functools.partial of one).
    """

    def __init__(self, name: str, work: Callable[..., Any], bounds: Bounds) -> None:
        self.name = name
        self.work = work
        self.bounds = bounds
        self._proc: Any = None
        self._conn: Connection | None = None

    @property
    def pid(self) -> int | None:
        """The current child's process id (None before the first batch and after a replacement)."""
        return self._proc.pid if self._proc is not None else None

    def _start(self) -> Connection:
        ours, theirs = _CONTEXT.Pipe(duplex=True)
        proc = _CONTEXT.Process(target=_serve, args=(theirs, self.work, self.bounds.memory_bytes),
                                name=f"skystream-{self.name}", daemon=True)
        proc.start()
        theirs.close()
        self._proc, self._conn = proc, ours
        return ours

    def stop(self) -> None:
        """Kill the child (if any); the next batch starts a new one."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.join(5)
        if self._conn is not None:
            self._conn.close()
        self._proc = self._conn = None

    async def _answer(self, conn: Connection, coalesce: bool) -> tuple:
        """The child's next answer within the time budget (TimeoutError), EOFError when it died.

        ``coalesce``: more answers of this batch are coming, so first give the child a few ms to write
        several. Waking on each answer cost a pipe wake-up on both sides per file (about 0.1 ms of CPU
        per spectrum, whose own preprocessing takes 0.15 ms); the budget grows by those few ms.
        """
        if coalesce and not conn.poll():
            await asyncio.sleep(COALESCE_SECONDS)
        if not conn.poll():
            loop = asyncio.get_running_loop()
            ready = loop.create_future()
            fd = conn.fileno()
            loop.add_reader(fd, lambda: ready.done() or ready.set_result(None))
            try:
                await asyncio.wait_for(ready, self.bounds.seconds)
            finally:
                loop.remove_reader(fd)
        return conn.recv()

    async def run(self, jobs: Sequence[tuple]) -> list[Any]:
        """Each job's result, or the exception it ends with (Rejected, ChildFailed), in order."""
        results: list[Any] = []
        pending = list(jobs)
        while pending:
            if self._proc is not None and not self._proc.is_alive():
                self.stop()  # died while idle (killed from outside): not the next job's fault
            conn = self._conn or self._start()
            conn.send(pending)
            sent = len(pending)
            while pending:
                try:
                    answer = await self._answer(conn, coalesce=len(pending) < sent)
                except TimeoutError:
                    results.append(Rejected("timeout", f"preprocessing took more than its {self.bounds.seconds:g} s "
                                                       "budget; the process was killed"))
                except (EOFError, OSError):
                    results.append(Rejected("preprocess-crashed", "the preprocessing process died on this file"))
                else:
                    results.append(self._result(answer))
                    pending.pop(0)
                    if answer[0] != "out-of-memory":
                        continue
                    self.stop()
                    break
                pending.pop(0)
                self.stop()
                break
        return results

    def _result(self, answer: tuple) -> Any:
        status = answer[0]
        if status == "ok":
            return answer[1]
        if status == "rejected":
            return Rejected(answer[1], answer[2])
        if status == "unavailable":
            return Unavailable(answer[1], answer[2])
        if status == "out-of-memory":
            mib = self.bounds.memory_bytes / 2**20
            return Rejected("out-of-memory", f"preprocessing needed more than its {mib:g} MiB of memory")
        log.error("%s failed in the child:\n%s", self.name, answer[2])
        return ChildFailed(answer[1])
