"""The stall watch (stream/worker/stall.py): when a consumed partition counts as stalled."""

from __future__ import annotations

from typing import NamedTuple

from stream.worker.stall import StallWatch


class TP(NamedTuple):
    topic: str
    partition: int


FILES = TP("skystream.files", 0)


def test_waiting_messages_with_an_idle_agent_and_no_commit_is_a_stall() -> None:
    watch = StallWatch(after=60)
    assert not watch.stalled(FILES, committed=10, highwater=25, now=0)
    assert not watch.stalled(FILES, committed=10, highwater=25, now=59)
    assert watch.stalled(FILES, committed=10, highwater=25, now=60)


def test_a_partition_that_moves_on_or_has_nothing_waiting_is_not_stalled() -> None:
    watch = StallWatch(after=60)
    watch.stalled(FILES, committed=10, highwater=25, now=0)
    assert not watch.stalled(FILES, committed=11, highwater=25, now=70)  # a commit: the clock starts again
    assert not watch.stalled(FILES, committed=11, highwater=25, now=100)
    assert watch.stalled(FILES, committed=11, highwater=25, now=130)
    assert not watch.stalled(FILES, committed=25, highwater=25, now=500)  # all done
    assert not watch.stalled(FILES, committed=None, highwater=None, now=900)  # end unknown


def test_nothing_committed_yet_counts_from_offset_zero() -> None:
    watch = StallWatch(after=60)
    assert not watch.stalled(FILES, committed=None, highwater=0, now=0)  # an empty partition
    assert not watch.stalled(FILES, committed=None, highwater=3, now=0)
    assert watch.stalled(FILES, committed=None, highwater=3, now=61)


def test_an_agent_inside_a_batch_is_never_stalled_and_its_clock_starts_again_after() -> None:
    """A batch of slow files (each within its time budget) or a paused stage waits inside the batch."""
    watch = StallWatch(after=60)
    watch.stalled(FILES, committed=10, highwater=25, now=0)
    with watch.working(FILES.topic):
        assert not watch.stalled(FILES, committed=10, highwater=25, now=500)
        assert not watch.stalled(TP("skystream.features.spectrum", 0), committed=0, highwater=0, now=500)
    assert not watch.stalled(FILES, committed=10, highwater=25, now=501)
    assert watch.stalled(FILES, committed=10, highwater=25, now=561)


def test_other_topics_are_watched_while_one_agent_works() -> None:
    watch = StallWatch(after=60)
    features = TP("skystream.features.spectrum", 2)
    with watch.working(FILES.topic):
        watch.stalled(features, committed=4, highwater=9, now=0)
        assert watch.stalled(features, committed=4, highwater=9, now=60)


def test_zero_turns_the_watch_off() -> None:
    watch = StallWatch(after=0)
    assert not watch.stalled(FILES, committed=0, highwater=10, now=0)
    assert not watch.stalled(FILES, committed=0, highwater=10, now=10**6)
