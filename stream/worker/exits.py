"""The worker child's exit codes: why a Faust worker ended itself, so that it is started again.

Each one ends the child at once (``os._exit``) with nothing committed past what it finished: what it
had not committed is replayed by the next owner of its partitions (at-least-once, idempotent results).

=====  ======================  ===================================================  ==========================
code   name                    meaning                                              who restarts it
=====  ======================  ===================================================  ==========================
75     EXIT_UNDELIVERABLE      a batch's outcomes were still refused by the broker  the supervisor (`skystream
       (EX_TEMPFAIL)           after ``FLUSH_ATTEMPTS`` sends (stream/worker/       worker`), with its restart
                               sink.py): the batch stays uncommitted                backoff; any broker
76     EXIT_OTHER_CLUSTER      the broker is another cluster than the one the       the supervisor, at once:
                               worker started on (a reset; commits are fenced by    a broker reset (tansu
                               cluster id, stream/worker/transport.py)              profile only)
77     EXIT_STALLED            a partition has messages waiting, its agent idle     the supervisor, with its
                               and no commit for SKYSTREAM_WORKER_STALL_SECONDS     restart backoff (tansu
                               (stream/worker/stall.py)                             profile only)
=====  ======================  ===================================================  ==========================

Under Kubernetes or Compose the supervisor is the container's process and keeps it up; only if it
dies does the orchestrator restart the container.
"""

from __future__ import annotations

__all__ = ["EXIT_OTHER_CLUSTER", "EXIT_STALLED", "EXIT_UNDELIVERABLE"]

EXIT_UNDELIVERABLE = 75  # EX_TEMPFAIL
EXIT_OTHER_CLUSTER = 76
EXIT_STALLED = 77
