"""The event bus: journal first, then a lossless fan-out to every subscriber.

Rules:

1. Journal before fan-out. ``publish`` returns only after the journal committed,
   and a subscriber is only ever handed committed events, so what it saw
   survives a crash and ``since=seq`` resumes exactly after it.
2. Fan-out order is seq order. One ``trio.StrictFIFOLock`` is held across the
   journal write *and* the fan-out. (A ``CapacityLimiter(1)`` around the
   worker thread alone orders the commits but not the wake-ups of the
   publishing tasks, so seq 2 could be fanned out before seq 1.)
3. The publisher never waits for a subscriber. Each subscriber has a bounded
   memory channel fed with ``send_nowait``; when it is full the subscriber is
   marked *lagging* and gets nothing more from the publisher. Once the
   subscriber has drained its channel it reads the journal from the last seq
   it accounted for, page by page, then goes live again. The lag flag is the
   "overflow marker" of the design brief.
4. Every subscriber sees every matching seq once, in order. History and live
   meet without gap or duplicate because the subscriber is registered for live
   events *before* it reads the journal, and it drops any event whose seq it
   has already accounted for (``_cursor``). Going live after a lag is the same
   seam: clear the flag first, then read the journal to its end.
5. Filters apply to history and live alike, in the subscriber (``_take``). The
   publisher pre-filters only to save queue room; it also passes on the first
   event past ``until``, matching or not, so the iteration can end on it.

Rejected: one unbounded queue per subscriber (a stuck client would grow the
daemon without bound); dropping events for slow subscribers (Docker does, we
promise not to); blocking the publisher on a full queue (one stuck client would
stall every container's state changes).
"""

from __future__ import annotations

import collections
import functools
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager

import trio

from protocols.events import Event, EventFilter

from .errors import CorralError
from .journal import EventDraft, Journal, Write

DEFAULT_QUEUE_SIZE = 256
DEFAULT_PAGE_SIZE = 1000


class EventsLost(CorralError):
    """The journal no longer holds events a subscriber has not seen (trimmed by retention).

    The client asked to resume from a point older than the journal keeps, or
    fell further behind than it keeps. It can start over with ``since_seq=0``
    (everything retained), knowing it missed events.
    """

    code = "NOT_FOUND"


class EventBus:
    """Publish events through the journal to any number of subscribers.

    Args:
        journal: where events are stored and seqs assigned; called from
            worker threads.
        queue_size: per-subscriber live queue; beyond it the subscriber reads
            from the journal instead (rule 3).
        page_size: how many events a lagging or replaying subscriber reads
            from the journal per worker-thread hop.
    """

    def __init__(self, journal: Journal, *, queue_size: int = DEFAULT_QUEUE_SIZE,
                 page_size: int = DEFAULT_PAGE_SIZE) -> None:
        if queue_size < 1 or page_size < 1:
            raise ValueError(f"queue_size and page_size must be at least 1, got {queue_size} and {page_size}")
        self._journal = journal
        self._queue_size = queue_size
        self._page_size = page_size
        self._order = trio.StrictFIFOLock()
        self._writer = trio.CapacityLimiter(1)   # one journal-writing thread at a time
        self._subscriptions: set[Subscription] = set()
        self._closed = False

    @property
    def subscriber_count(self) -> int:
        return len(self._subscriptions)

    async def publish(self, type: str, action: str, id: str,
                      attributes: Mapping[str, str] | None = None, *, writes: Iterable[Write] = ()) -> Event:
        """Journal one event, then hand it to every live subscriber.

        Args:
            writes: state rows committed in the event's transaction (journal.py rule 6).

        Returns:
            The event with its seq; it is committed to the journal.

        Raises:
            trio.ClosedResourceError: the bus was closed.
            TypeError: an attribute is not a string (nothing is stored).
        """
        (event,) = await self.publish_many([(type, action, id, attributes or {})], writes=writes)
        return event

    async def publish_many(self, drafts: Iterable[EventDraft], *, writes: Iterable[Write] = ()) -> list[Event]:
        """Journal several events in one transaction, then fan them out in order.

        Events that belong together (a ``kill`` and its ``die``) commit
        together, and a burst costs one disk flush instead of one per event.

        Args:
            drafts: as ``Journal.append_many``; empty with ``writes`` alone is a
                state change with no event, still in the one writer's order.
            writes: as ``Journal.append_many``: state rows in the same transaction.

        Returns:
            The events, with consecutive seqs.

        Raises:
            trio.ClosedResourceError: the bus was closed.
        """
        if self._closed:
            raise trio.ClosedResourceError("event bus is closed")
        append = functools.partial(self._journal.append_many, list(drafts), writes=list(writes))
        async with self._order:
            # Not abandoned on cancel (the default): a commit that happened is
            # always fanned out below; the cancel lands at the caller's next
            # checkpoint.
            events = await trio.to_thread.run_sync(append, limiter=self._writer)
            # No checkpoint from here to the end of the loop, so the set of
            # subscribers cannot change under us.
            for subscription in self._subscriptions:
                subscription._offer(events)
        return events

    @asynccontextmanager
    async def subscribe(
        self,
        filter: EventFilter | None = None,
        *,
        since_seq: int | None = None,
        since_ns: int | None = None,
        until_seq: int | None = None,
        until_ns: int | None = None,
    ) -> AsyncIterator[Subscription]:
        """Stream events: history from ``since``, then live, until ``until``.

        Args:
            filter: Docker's filters; ``None`` lets everything through.
            since_seq: start *after* this seq (the last one the client saw).
                ``0`` means everything still in the journal.
            since_ns: start at events with ``time_ns >= since_ns`` (Docker's
                ``since``). Without either ``since``, only new events.
            until_seq: end after this seq (inclusive).
            until_ns: end at the first event after this time, or when the wall
                clock reaches it while waiting (Docker's ``until``).

        Yields:
            A ``Subscription``: ``async for event in subscription``.

        Raises:
            trio.ClosedResourceError: the bus was closed.
            EventsLost: (from the iterator) a resume point older than the
                journal's retention, or a subscriber that lagged past it.
        """
        if self._closed:
            raise trio.ClosedResourceError("event bus is closed")
        subscription = Subscription(self, filter or EventFilter(), since_ns=since_ns,
                                    until_seq=until_seq, until_ns=until_ns)
        # Live first, history second (rule 4).
        self._subscriptions.add(subscription)
        try:
            await subscription._start(since_seq=since_seq, since_ns=since_ns)
            yield subscription
        finally:
            self._subscriptions.discard(subscription)
            subscription._send.close()
            subscription._receive.close()

    def close(self) -> None:
        """Refuse new publishes and subscriptions; end every subscriber's iteration.

        A subscriber still gets what is already in its queue. Idempotent.
        """
        self._closed = True
        for subscription in self._subscriptions:
            subscription._send.close()


class Subscription:
    """One subscriber's position in the event stream; an async iterator of ``Event``.

    Made by ``EventBus.subscribe``. ``lag_count`` says how often its queue
    overflowed and it resumed from the journal (for metrics and tests).
    """

    def __init__(self, bus: EventBus, filter: EventFilter, *, since_ns: int | None,
                 until_seq: int | None, until_ns: int | None) -> None:
        self._bus = bus
        self._filter = filter
        self._since_ns = since_ns
        self._until_seq = until_seq
        self._until_ns = until_ns
        self._send, self._receive = trio.open_memory_channel[Event](bus._queue_size)
        self._cursor = 0              # every seq up to here is delivered or filtered out
        self._backlog: collections.deque[Event] = collections.deque()
        self._replaying = True        # reading the journal rather than the channel
        self._expect_contiguous = True
        self._lagging = False         # set by the publisher, cleared by us (rule 3)
        self._done = False
        self.lag_count = 0

    async def _start(self, *, since_seq: int | None, since_ns: int | None) -> None:
        journal = self._bus._journal
        if since_seq is not None:
            self._cursor = since_seq
            # since_seq=0 asks for whatever is retained; a real resume point
            # must still be in the journal.
            self._expect_contiguous = since_seq > 0
        elif since_ns is not None:
            self._cursor = await trio.to_thread.run_sync(journal.seq_before, since_ns)
            self._expect_contiguous = False
        else:
            self._cursor = await trio.to_thread.run_sync(journal.last_seq)
            self._replaying = False   # nothing to replay: everything newer arrives live

    def _offer(self, events: list[Event]) -> None:
        # Called by the publisher, synchronously, for each committed batch.
        if self._lagging:
            return
        for event in events:
            if not (self._filter.matches(event) or self._past_until(event)):
                continue
            try:
                self._send.send_nowait(event)
            except trio.WouldBlock:
                self._lagging = True
                self.lag_count += 1
                return
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                return   # closing: bus.close() or the subscriber's exit

    def _past_until(self, event: Event) -> bool:
        return ((self._until_seq is not None and event.seq >= self._until_seq)
                or (self._until_ns is not None and event.time_ns > self._until_ns))

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        while not self._done:
            if self._backlog:
                event = self._take(self._backlog.popleft())
            elif self._replaying:
                await self._read_page()
                continue
            else:
                try:
                    event = self._receive.receive_nowait()
                except trio.WouldBlock:
                    if self._lagging:
                        # Everything sent before the overflow is delivered; the
                        # rest is in the journal. Clear the flag *before* reading
                        # so nothing committed from now on is missed (rule 4).
                        self._lagging = False
                        self._replaying = True
                        continue
                    event = await self._receive_live()
                except trio.EndOfChannel:
                    event = None
                if event is None:
                    self._done = True
                    break
                event = self._take(event)
            if event is not None:
                return event
        raise StopAsyncIteration

    async def _receive_live(self) -> Event | None:
        if self._until_ns is None:
            try:
                return await self._receive.receive()
            except trio.EndOfChannel:
                return None
        # Docker's `until` also ends a quiet stream when the time comes.
        with trio.move_on_after(max(0.0, (self._until_ns - time.time_ns()) / 1e9)):
            try:
                return await self._receive.receive()
            except trio.EndOfChannel:
                return None
        return None

    async def _read_page(self) -> None:
        if self._until_seq is not None and self._cursor >= self._until_seq:
            self._done = True
            return
        read = functools.partial(self._bus._journal.read, since_seq=self._cursor,
                                 until_seq=self._until_seq, limit=self._bus._page_size)
        page = await trio.to_thread.run_sync(read)
        if page and page[0].seq != self._cursor + 1 and self._expect_contiguous:
            raise EventsLost(f"events {self._cursor + 1} to {page[0].seq - 1} were trimmed from the journal "
                             "before this subscriber read them")
        self._expect_contiguous = True
        self._backlog.extend(page)
        if len(page) < self._bus._page_size:
            # The journal's end as of this read; anything newer is in the
            # channel, or the channel overflowed and we come back here.
            self._replaying = False

    def _take(self, event: Event) -> Event | None:
        """Account for ``event``; return it if it is to be delivered."""
        if event.seq <= self._cursor:
            return None   # already delivered by the other source (rule 4)
        if (self._until_seq is not None and event.seq > self._until_seq) or (
                self._until_ns is not None and event.time_ns > self._until_ns):
            self._done = True
            return None
        self._cursor = event.seq
        if self._until_seq is not None and event.seq == self._until_seq:
            self._done = True   # this one is the last
        if self._since_ns is not None and event.time_ns < self._since_ns:
            return None
        return event if self._filter.matches(event) else None
