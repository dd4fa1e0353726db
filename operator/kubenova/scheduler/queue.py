"""The queue of pending VMs, as kube-scheduler's: an active heap (priority, then age), a
back-off heap for VMs that failed recently, and an unschedulable set that waits for an event
that could help it (a host added or changed, capacity freed, a pool changed) — never polled.
`next_wake` tells the caller when to come back for the earliest back-off. Pure."""

from __future__ import annotations

import enum
import heapq
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


@dataclass(slots=True)
class _Entry:
    vm: VMRequest
    seq: int
    attempts: int = 0
    backoff_until: float = 0.0
    waiting_for: frozenset[Event] = field(default_factory=frozenset)
    parked_at: float = 0.0
    where: str = "active"


class SchedulingQueue:
    def __init__(
        self,
        clock: Clock,
        *,
        initial_backoff: float = 1.0,
        max_backoff: float = 60.0,
        unschedulable_timeout: float = 300.0,
    ) -> None:
        self.clock = clock
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.unschedulable_timeout = unschedulable_timeout
        """Retry a parked VM after this long even without an event (kube-scheduler's net)."""
        self._entries: dict[str, _Entry] = {}
        self._active: list[tuple[int, float, int, str]] = []
        self._backoff: list[tuple[float, int, str]] = []
        self._in_flight: dict[str, _Entry] = {}
        """Popped and not yet reported: kept so attempts survive the round trip."""
        self._seq = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def counts(self) -> dict[str, int]:
        """Pending VMs per sub-queue: active, backoff, unschedulable."""
        out = {"active": 0, "backoff": 0, "unschedulable": 0}
        for e in self._entries.values():
            out[e.where] += 1
        return out

    def request(self, key: str) -> VMRequest | None:
        """The request queued (or in flight) for `key`: what the next attempt places."""
        e = self._entries.get(key) or self._in_flight.get(key)
        return e.vm if e is not None else None

    def push(self, vm: VMRequest) -> None:
        """A new or changed pending VM: straight to active (a change may make it fit)."""
        old = self._entries.get(vm.key)
        entry = self._new_entry(vm)
        if old is not None:
            entry.attempts = old.attempts
        self._activate(entry)

    def pop(self) -> VMRequest | None:
        """The next VM to schedule, or None. Moves due back-offs to active first."""
        self.flush()
        while self._active:
            _, _, seq, key = heapq.heappop(self._active)
            e = self._entries.get(key)
            if e is not None and e.seq == seq and e.where == "active":
                e.where = "in-flight"
                del self._entries[key]
                self._in_flight[key] = e
                return e.vm
        return None

    def done(self, key: str) -> None:
        """The popped VM was placed; forget its attempts."""
        self._in_flight.pop(key, None)

    def unschedulable(self, vm: VMRequest, reasons: frozenset[Reason]) -> float:
        """The popped VM did not fit: back off and wait for an event that could help.
        Returns the time its back-off ends."""
        prior = self._in_flight.pop(vm.key, None) or self._entries.get(vm.key)
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
        entry.where = "unschedulable"
        self._entries[vm.key] = entry
        return entry.backoff_until

    def on_event(self, event: Event) -> int:
        """Wake the parked VMs this event could help; returns how many moved."""
        now = self.clock()
        moved = 0
        for e in list(self._entries.values()):
            if e.where == "unschedulable" and event in e.waiting_for:
                self._wake(e, now)
                moved += 1
        return moved

    def remove(self, key: str) -> None:
        """The VM was deleted or bound elsewhere."""
        self._entries.pop(key, None)
        self._in_flight.pop(key, None)

    def flush(self) -> None:
        now = self.clock()
        while self._backoff and self._backoff[0][0] <= now:
            _, seq, key = heapq.heappop(self._backoff)
            e = self._entries.get(key)
            if e is not None and e.seq == seq and e.where == "backoff":
                self._activate(e)
        if self.unschedulable_timeout > 0:
            for e in list(self._entries.values()):
                if e.where == "unschedulable" and now - e.parked_at >= self.unschedulable_timeout:
                    self._wake(e, now)

    def next_wake(self) -> float | None:
        """When the caller should call `pop` again even if no event arrives."""
        times = [t for t, seq, key in self._backoff if self._live(key, seq, "backoff")]
        times += [
            e.parked_at + self.unschedulable_timeout
            for e in self._entries.values()
            if e.where == "unschedulable" and self.unschedulable_timeout > 0
        ]
        return min(times, default=None)

    # -- internals -----------------------------------------------------------------------

    def _live(self, key: str, seq: int, where: str) -> bool:
        e = self._entries.get(key)
        return e is not None and e.seq == seq and e.where == where

    def _new_entry(self, vm: VMRequest) -> _Entry:
        self._seq += 1
        return _Entry(vm=vm, seq=self._seq)

    def _activate(self, e: _Entry) -> None:
        self._seq += 1
        e.seq = self._seq
        e.where = "active"
        self._entries[e.vm.key] = e
        heapq.heappush(self._active, (-e.vm.priority, e.vm.created_at, e.seq, e.vm.key))

    def _wake(self, e: _Entry, now: float) -> None:
        if e.backoff_until <= now:
            self._activate(e)
            return
        self._seq += 1
        e.seq = self._seq
        e.where = "backoff"
        heapq.heappush(self._backoff, (e.backoff_until, e.seq, e.vm.key))
