"""The queue of pending VMs, as kube-scheduler's: an active heap (priority, then age), a
back-off heap for VMs that failed recently, and an unschedulable set that waits for an event
that could help it (a host added or changed, capacity freed, a pool changed) — never polled.
`next_wake` tells the caller when to come back for the earliest back-off. Pure.

Cost, as in kube-scheduler's `PriorityQueue`: `pop` is O(log n). Back-off completions are
flushed to active at most once per `backoff_flush_period` (1 s) and VMs parked longer than
`unschedulable_timeout` at most once per `leftover_flush_period` (30 s), on a grid of the
injected clock, and each flush touches only the heap tops that are due: nothing is walked per
pop. An event wakes only the VMs parked on it (one index per event), `counts()` reads
maintained counters and `next_wake()` the heap tops. Heaps drop stale entries lazily (an
entry is live while its sequence number is the one its VM holds) and are rebuilt when most of
what they hold is stale, so their size stays within a constant of the pending count."""

from __future__ import annotations

import enum
import heapq
import math
from dataclasses import dataclass, field

from kubenova.scheduler.explain import Reason
from kubenova.scheduler.model import Clock, VMRequest


class Event(enum.Enum):
    HOST_ADDED = "HostAdded"
    HOST_CHANGED = "HostChanged"
    """Labels, taints, cordon, readiness, heartbeat or capacity."""
    CAPACITY_FREED = "CapacityFreed"
    """A VM or reservation slot left a host."""
    VM_PLACED = "VMPlaced"
    """A VM landed somewhere (it may be the group an affinity rule waits for)."""
    POOL_CHANGED = "PoolChanged"


_HOSTS = frozenset({Event.HOST_ADDED, Event.HOST_CHANGED, Event.POOL_CHANGED})
HELPS: dict[Reason, frozenset[Event]] = {
    Reason.INSUFFICIENT_MEMORY: _HOSTS | {Event.CAPACITY_FREED},
    Reason.INSUFFICIENT_CPU: _HOSTS | {Event.CAPACITY_FREED},
    Reason.INSUFFICIENT_DISK: _HOSTS | {Event.CAPACITY_FREED},
    Reason.INSUFFICIENT_GPU: _HOSTS | {Event.CAPACITY_FREED},
    Reason.ANTI_AFFINITY: _HOSTS | {Event.CAPACITY_FREED},
    Reason.AFFINITY: _HOSTS | {Event.VM_PLACED},
}
"""Which events can turn a reason around; any other reason waits for host or pool events."""

ACTIVE = "active"
BACKOFF = "backoff"
UNSCHEDULABLE = "unschedulable"


@dataclass(slots=True)
class _Entry:
    vm: VMRequest
    seq: int
    attempts: int = 0
    backoff_until: float = 0.0
    waiting_for: frozenset[Event] = field(default_factory=frozenset)
    parked_at: float = 0.0
    where: str = ACTIVE


def _grid(t: float, period: float) -> float:
    """The first flush at or after `t` on a grid of `period` (t itself when unperiodic)."""
    return t if period <= 0 else math.ceil(t / period) * period


class SchedulingQueue:
    def __init__(
        self,
        clock: Clock,
        *,
        initial_backoff: float = 1.0,
        max_backoff: float = 60.0,
        unschedulable_timeout: float = 300.0,
        backoff_flush_period: float = 1.0,
        leftover_flush_period: float = 30.0,
    ) -> None:
        self.clock = clock
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.unschedulable_timeout = unschedulable_timeout
        """Retry a parked VM after this long even without an event (kube-scheduler's net)."""
        self.backoff_flush_period = backoff_flush_period
        """How often back-offs that ended move to active (kube-scheduler: every second)."""
        self.leftover_flush_period = leftover_flush_period
        """How often VMs parked past `unschedulable_timeout` are retried (kube-scheduler: 30 s)."""
        self._entries: dict[str, _Entry] = {}
        self._active: list[tuple[int, float, int, str]] = []
        self._backoff: list[tuple[float, int, str]] = []
        self._parked_since: list[tuple[float, int, str]] = []
        """(parked_at, seq, key) of parked VMs: the leftover flush reads only its top."""
        self._waiting: dict[Event, dict[str, _Entry]] = {e: {} for e in Event}
        """Parked VMs by the events that could help them."""
        self._counts = {ACTIVE: 0, BACKOFF: 0, UNSCHEDULABLE: 0}
        self._in_flight: dict[str, _Entry] = {}
        """Popped and not yet reported: kept so attempts survive the round trip."""
        self._seq = 0
        self._next_backoff_flush = -math.inf
        self._next_leftover_flush = -math.inf

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def counts(self) -> dict[str, int]:
        """Pending VMs per sub-queue: active, backoff, unschedulable."""
        return dict(self._counts)

    def request(self, key: str) -> VMRequest | None:
        """The request queued (or in flight) for `key`: what the next attempt places."""
        e = self._entries.get(key) or self._in_flight.get(key)
        return e.vm if e is not None else None

    def push(self, vm: VMRequest) -> None:
        """A new or changed pending VM: straight to active (a change may make it fit)."""
        old = self._entries.get(vm.key)
        entry = self._new_entry(vm)
        if old is not None:
            self._detach(old)
            entry.attempts = old.attempts
        self._activate(entry)

    def pop(self) -> VMRequest | None:
        """The next VM to schedule, or None. Runs the flushes that are due first."""
        self._periodic_flush(self.clock())
        while self._active:
            _, _, seq, key = heapq.heappop(self._active)
            e = self._live(key, seq, ACTIVE)
            if e is not None:
                self._detach(e)
                e.where = "in-flight"
                self._in_flight[key] = e
                return e.vm
        return None

    def done(self, key: str) -> None:
        """The popped VM was placed; forget its attempts."""
        self._in_flight.pop(key, None)

    def unschedulable(self, vm: VMRequest, reasons: frozenset[Reason]) -> float:
        """The popped VM did not fit: back off and wait for an event that could help.
        Returns the time its back-off ends."""
        queued = self._entries.get(vm.key)
        if queued is not None:
            self._detach(queued)  # this verdict replaces a push made while it was in flight
        prior = self._in_flight.pop(vm.key, None) or queued
        entry = self._new_entry(vm)
        entry.attempts = (prior.attempts if prior else 0) + 1
        now = self.clock()
        delay = min(self.initial_backoff * 2 ** (entry.attempts - 1), self.max_backoff)
        entry.backoff_until = now + delay
        entry.parked_at = now
        waits: set[Event] = set()
        for r in reasons:
            waits |= HELPS.get(r, _HOSTS)
        entry.waiting_for = frozenset(waits or _HOSTS)
        self._attach(entry, UNSCHEDULABLE)
        for event in entry.waiting_for:
            self._waiting[event][vm.key] = entry
        self._push_heap(self._parked_since, (now, entry.seq, vm.key), UNSCHEDULABLE)
        return entry.backoff_until

    def on_event(self, event: Event) -> int:
        """Wake the parked VMs this event could help; returns how many moved. O(moved)."""
        waiting = self._waiting[event]
        if not waiting:
            return 0
        now = self.clock()
        woken = list(waiting.values())
        for e in woken:
            self._wake(e, now)
        return len(woken)

    def remove(self, key: str) -> None:
        """The VM was deleted or bound elsewhere."""
        e = self._entries.get(key)
        if e is not None:
            self._detach(e)
        self._in_flight.pop(key, None)

    def flush(self) -> None:
        """Run both flushes now, whatever their period."""
        now = self.clock()
        self._flush_backoff(now)
        self._flush_leftovers(now)

    def next_wake(self) -> float | None:
        """When the caller should call `pop` again even if no event arrives: the flush that
        will move the earliest back-off or leftover. O(log n) amortised."""
        times = []
        top = self._top(self._backoff, BACKOFF)
        if top is not None:
            times.append(_grid(top[0], self.backoff_flush_period))
        if self.unschedulable_timeout > 0:
            top = self._top(self._parked_since, UNSCHEDULABLE)
            if top is not None:
                due = top[0] + self.unschedulable_timeout
                times.append(_grid(due, self.leftover_flush_period))
        return min(times, default=None)

    # -- internals -----------------------------------------------------------------------

    def _periodic_flush(self, now: float) -> None:
        if now >= self._next_backoff_flush:
            self._flush_backoff(now)
            self._next_backoff_flush = self._after(now, self.backoff_flush_period)
        if now >= self._next_leftover_flush:
            self._flush_leftovers(now)
            self._next_leftover_flush = self._after(now, self.leftover_flush_period)

    @staticmethod
    def _after(now: float, period: float) -> float:
        """The next grid point strictly after `now` (every pop, when unperiodic)."""
        return -math.inf if period <= 0 else (math.floor(now / period) + 1) * period

    def _flush_backoff(self, now: float) -> None:
        while (top := self._top(self._backoff, BACKOFF)) is not None and top[0] <= now:
            heapq.heappop(self._backoff)
            e = self._entries[top[2]]
            self._detach(e)
            self._activate(e)

    def _flush_leftovers(self, now: float) -> None:
        if self.unschedulable_timeout <= 0:
            return
        limit = now - self.unschedulable_timeout
        while (top := self._top(self._parked_since, UNSCHEDULABLE)) is not None and (
            top[0] <= limit
        ):
            heapq.heappop(self._parked_since)
            self._wake(self._entries[top[2]], now)

    def _top(self, heap: list[tuple[float, int, str]], where: str) -> tuple[float, int, str] | None:
        """The heap's first live item, dropping stale ones above it."""
        while heap:
            item = heap[0]
            if self._live(item[2], item[1], where) is not None:
                return item
            heapq.heappop(heap)
        return None

    def _live(self, key: str, seq: int, where: str) -> _Entry | None:
        e = self._entries.get(key)
        return e if e is not None and e.seq == seq and e.where == where else None

    def _new_entry(self, vm: VMRequest) -> _Entry:
        self._seq += 1
        return _Entry(vm=vm, seq=self._seq)

    def _attach(self, e: _Entry, where: str) -> None:
        e.where = where
        self._entries[e.vm.key] = e
        self._counts[where] += 1

    def _detach(self, e: _Entry) -> None:
        """Take the entry out of its sub-queue (its heap items go stale)."""
        if self._entries.get(e.vm.key) is not e:
            return
        del self._entries[e.vm.key]
        self._counts[e.where] -= 1
        if e.where == UNSCHEDULABLE:
            for event in e.waiting_for:
                self._waiting[event].pop(e.vm.key, None)
        e.where = "detached"

    def _activate(self, e: _Entry) -> None:
        self._seq += 1
        e.seq = self._seq
        self._attach(e, ACTIVE)
        item = (-e.vm.priority, e.vm.created_at, e.seq, e.vm.key)
        heapq.heappush(self._active, item)
        if len(self._active) > 2 * self._counts[ACTIVE] + 64:
            self._active = [i for i in self._active if self._live(i[3], i[2], ACTIVE) is not None]
            heapq.heapify(self._active)

    def _wake(self, e: _Entry, now: float) -> None:
        self._detach(e)
        if e.backoff_until <= now:
            self._activate(e)
            return
        self._seq += 1
        e.seq = self._seq
        self._attach(e, BACKOFF)
        self._push_heap(self._backoff, (e.backoff_until, e.seq, e.vm.key), BACKOFF)

    def _push_heap(
        self, heap: list[tuple[float, int, str]], item: tuple[float, int, str], where: str
    ) -> None:
        heapq.heappush(heap, item)
        if len(heap) > 2 * self._counts[where] + 64:
            heap[:] = [i for i in heap if self._live(i[2], i[1], where) is not None]
            heapq.heapify(heap)
