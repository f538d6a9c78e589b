"""The event bus: journal first, every seq exactly once and in order, for fast and slow subscribers."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import trio
import trio.testing

from protocols.events import Action, Event, EventFilter, EventType
from supervisor.events import EventBus, EventsLost, Subscription
from supervisor.journal import Journal

pytestmark = pytest.mark.anyio

# The autojump MockClock advances while a worker thread runs and busy-polls
# meanwhile, so tests that time the publisher, or push 100k events through
# journal threads, run on trio's real clock instead.
real_clock = pytest.mark.parametrize("anyio_backend", [("trio", {})])


@pytest.fixture
def journal(tmp_path: Path):
    with Journal(tmp_path / "state.db") as j:
        yield j


async def collect(subscription: Subscription, n: int | None = None) -> list[Event]:
    """The next n events (or all, until the iteration ends)."""
    events = []
    async for event in subscription:
        events.append(event)
        if n is not None and len(events) == n:
            break
    return events


def seqs(events: list[Event]) -> list[int]:
    return [e.seq for e in events]


async def test_publish_journals_then_delivers(journal: Journal) -> None:
    bus = EventBus(journal)
    async with bus.subscribe() as sub:
        published = [await bus.publish(EventType.CONTAINER, a, "c1", {"name": "web"})
                     for a in (Action.CREATE, Action.START, Action.DIE)]
        assert journal.read() == published          # stored before anyone reads
        assert await collect(sub, 3) == published
    assert bus.subscriber_count == 0


async def test_publishing_without_subscribers_only_journals(journal: Journal) -> None:
    bus = EventBus(journal)
    events = await bus.publish_many([(EventType.IMAGE, Action.PULL, "busybox", {})] * 5)
    assert seqs(events) == [1, 2, 3, 4, 5] and journal.last_seq() == 5


async def test_without_since_only_new_events(journal: Journal) -> None:
    bus = EventBus(journal)
    await bus.publish(EventType.CONTAINER, Action.CREATE, "old")
    async with bus.subscribe() as sub:
        new = await bus.publish(EventType.CONTAINER, Action.START, "new")
        assert await collect(sub, 1) == [new]


async def test_three_subscribers_one_stalled(journal: Journal) -> None:
    bus = EventBus(journal, queue_size=16)
    resume_slow = trio.Event()
    results: dict[str, list[Event]] = {}

    async def subscriber(name: str, sub: Subscription, gate: trio.Event | None) -> None:
        if gate is not None:
            await gate.wait()      # never reads while the publisher runs
        results[name] = await collect(sub, 200)

    async with bus.subscribe() as fast1, bus.subscribe() as fast2, bus.subscribe() as slow:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(subscriber, "fast1", fast1, None)
            nursery.start_soon(subscriber, "fast2", fast2, None)
            nursery.start_soon(subscriber, "slow", slow, resume_slow)
            for i in range(200):
                await bus.publish(EventType.CONTAINER, Action.START, f"c{i}")
            # The publisher finished all 200 while the slow one had read nothing.
            assert "slow" not in results
            resume_slow.set()
    assert seqs(results["slow"]) == list(range(1, 201))
    assert seqs(results["fast1"]) == seqs(results["fast2"]) == list(range(1, 201))
    assert slow.lag_count >= 1 and fast1.lag_count == 0


async def test_join_mid_stream_with_since_seq(journal: Journal) -> None:
    bus = EventBus(journal, queue_size=8)
    joined: list[Event] = []

    async def publisher() -> None:
        for i in range(300):
            await bus.publish(EventType.CONTAINER, Action.START, f"c{i}")
            if i == 150:
                nursery.start_soon(late_subscriber, journal.last_seq() - 100)

    async def late_subscriber(since: int) -> None:
        async with bus.subscribe(since_seq=since, until_seq=300) as sub:
            joined.extend(await collect(sub))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(publisher)
    assert seqs(joined) == list(range(52, 301))


class SeamJournal(Journal):
    """Publishes one event from inside the subscriber's first history read.

    ``before=True``: committed and fanned out before the rows are read, so it
    arrives twice (history and live) and must be delivered once. ``before=False``:
    after the rows are read, so it is only in the live queue and must not be
    lost at the seam.
    """

    bus: EventBus
    before: bool
    fired = False

    def read(self, *args, **kwargs) -> list[Event]:
        if self.fired:
            return super().read(*args, **kwargs)
        self.fired = True
        if self.before:
            trio.from_thread.run(self.bus.publish, EventType.CONTAINER, Action.DIE, "seam")
            return super().read(*args, **kwargs)
        rows = super().read(*args, **kwargs)
        trio.from_thread.run(self.bus.publish, EventType.CONTAINER, Action.DIE, "seam")
        return rows


@pytest.mark.parametrize("before", [True, False])
async def test_history_meets_live_without_gap_or_duplicate(tmp_path: Path, before: bool) -> None:
    with SeamJournal(tmp_path / "state.db") as journal:
        journal.bus, journal.before = EventBus(journal), before
        for i in range(5):
            journal.append(EventType.CONTAINER, Action.START, f"c{i}")
        async with journal.bus.subscribe(since_seq=0) as sub:
            events = await collect(sub, 6)
            last = await journal.bus.publish(EventType.CONTAINER, Action.DESTROY, "after")
            assert await collect(sub, 1) == [last]
    assert journal.fired
    assert seqs(events) == [1, 2, 3, 4, 5, 6] and events[-1].id == "seam"


async def test_filter_applies_to_history_and_live(journal: Journal) -> None:
    bus = EventBus(journal, queue_size=4, page_size=7)
    kinds = [(EventType.CONTAINER, Action.START), (EventType.IMAGE, Action.PULL), (EventType.CONTAINER, Action.DIE)]

    def drafts(start: int, n: int):
        return [(*kinds[i % 3], f"x{i}", {"name": f"n{i}"}) for i in range(start, start + n)]

    await bus.publish_many(drafts(0, 30))          # history
    only_dies = EventFilter.from_docker({"type": ["container"], "event": ["die"]})
    async with bus.subscribe(only_dies, since_seq=0) as sub:
        await bus.publish_many(drafts(30, 30))     # live, overflowing the queue of 4
        got = await collect(sub, 20)
    assert seqs(got) == list(range(3, 61, 3))
    assert all(e.type == "container" and e.action == "die" for e in got)


async def test_until_seq_ends_even_on_a_filtered_out_event(journal: Journal) -> None:
    bus = EventBus(journal)
    await bus.publish_many([(EventType.CONTAINER, Action.START, "c", {})] * 3)
    starts = EventFilter.from_docker({"event": ["start"]})
    async with bus.subscribe(starts, since_seq=0, until_seq=5) as sub:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(bus.publish_many, [(EventType.CONTAINER, Action.START, "c", {}),
                                                  (EventType.CONTAINER, Action.DIE, "c", {})])
            got = await collect(sub)      # ends at seq 5, a die, which it does not deliver
    assert seqs(got) == [1, 2, 3, 4]


async def test_until_seq_in_history(journal: Journal) -> None:
    bus = EventBus(journal)
    await bus.publish_many([(EventType.CONTAINER, Action.START, "c", {})] * 10)
    async with bus.subscribe(since_seq=2, until_seq=6) as sub:
        assert seqs(await collect(sub)) == [3, 4, 5, 6]


async def test_since_and_until_by_time(journal: Journal) -> None:
    bus = EventBus(journal)
    await bus.publish_many([(EventType.CONTAINER, Action.START, f"c{i}", {}, 1000 + i) for i in range(10)])
    async with bus.subscribe(since_ns=1003, until_ns=1006) as sub:
        # until_ns is long past on the wall clock, so the stream ends at the
        # end of history instead of waiting live.
        assert [e.time_ns for e in await collect(sub)] == [1003, 1004, 1005, 1006]


async def test_until_ns_ends_a_quiet_live_stream(journal: Journal) -> None:
    bus = EventBus(journal)
    async with bus.subscribe(until_ns=time.time_ns() + 60 * 10**9) as sub:
        # Nothing is published: the wait ends when the (mock) clock reaches until.
        assert await collect(sub) == []


async def test_close_ends_subscribers_and_refuses_publishes(journal: Journal) -> None:
    bus = EventBus(journal)
    async with bus.subscribe() as sub:
        event = await bus.publish(EventType.DAEMON, Action.RELOAD, "d")
        bus.close()
        assert await collect(sub) == [event]
    with pytest.raises(trio.ClosedResourceError):
        await bus.publish(EventType.DAEMON, Action.RELOAD, "d")
    with pytest.raises(trio.ClosedResourceError):
        async with bus.subscribe():
            pass


async def test_resume_point_older_than_retention_is_an_error(journal: Journal) -> None:
    bus = EventBus(journal)
    await bus.publish_many([(EventType.CONTAINER, Action.START, "c", {})] * 10)
    journal.trim(3)
    async with bus.subscribe(since_seq=4) as sub:
        with pytest.raises(EventsLost, match="events 5 to 7 were trimmed"):
            await collect(sub)
    async with bus.subscribe(since_seq=0, until_seq=10) as sub:   # "whatever is retained"
        assert seqs(await collect(sub)) == [8, 9, 10]


@real_clock
async def test_publisher_is_not_blocked_by_a_subscriber_that_never_reads(journal: Journal) -> None:
    bus = EventBus(journal, queue_size=2)
    async with bus.subscribe() as sub:
        # The subscriber is read by this same task, after the loop: if publish
        # waited for it, this would deadlock; the timeout turns that into a failure.
        with trio.fail_after(10):
            for i in range(50):
                await bus.publish(EventType.CONTAINER, Action.START, f"c{i}")
        assert sub.lag_count == 1
        assert seqs(await collect(sub, 50)) == list(range(1, 51))


@real_clock
async def test_100k_events_through_a_slow_subscriber(tmp_path: Path) -> None:
    total, batch = 100_000, 200
    with Journal(tmp_path / "state.db") as journal:
        bus = EventBus(journal, queue_size=256)
        got: list[int] = []
        fast: list[int] = []

        async def slow_reader(sub: Subscription) -> None:
            async for event in sub:
                got.append(event.seq)
                if len(got) % 5000 == 0:
                    # Fall behind by more than the queue holds, whatever the
                    # machine's speed, so the queue surely overflows.
                    while journal.last_seq() < event.seq + 1000 and journal.last_seq() < total:
                        await trio.sleep(0.001)
                if len(got) == total:
                    break

        async def fast_reader(sub: Subscription) -> None:
            async for event in sub:
                fast.append(event.seq)
                if len(fast) == total:
                    break

        async with bus.subscribe(since_seq=0) as slow, bus.subscribe() as quick:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(slow_reader, slow)
                nursery.start_soon(fast_reader, quick)
                for start in range(0, total, batch):
                    await bus.publish_many([(EventType.CONTAINER, Action.START, f"c{i}", {"name": "web"})
                                            for i in range(start, start + batch)])
        assert got == list(range(1, total + 1))
        assert fast == got
        assert slow.lag_count >= 15
