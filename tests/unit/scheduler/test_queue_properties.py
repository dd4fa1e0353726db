"""Properties of the scheduling queue over any sequence of pushes, pops, failures, events,
removals and clock moves, checked against a reference model that walks every VM (the old
linear queue, with kube-scheduler's periodic flushes): the same VM comes out of every pop,
`counts()` and `next_wake()` agree with a full walk, nothing is lost or comes back after a
removal, and the heaps stay within a constant of the pending count."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from kubenova.scheduler.explain import Reason
from kubenova.scheduler.queue import _HOSTS as HOST_EVENTS
from kubenova.scheduler.queue import HELPS, Event, SchedulingQueue
from tests.unit.scheduler.builders import FakeClock, make_vm

pytestmark = pytest.mark.unit

KEYS = [f"vm{i}" for i in range(12)]
REASONS = [
    frozenset({Reason.INSUFFICIENT_MEMORY}),
    frozenset({Reason.AFFINITY}),
    frozenset({Reason.CORDONED}),
    frozenset({Reason.AFFINITY, Reason.INSUFFICIENT_CPU}),
    frozenset(),
]
TIMEOUT = 40.0
BACKOFF_PERIOD = 1.0
LEFTOVER_PERIOD = 7.0


@dataclass
class Ref:
    priority: int
    created_at: float
    seq: int
    where: str
    attempts: int = 0
    until: float = 0.0
    parked_at: float = 0.0
    waits: frozenset[Event] = frozenset()


class QueueMachine(RuleBasedStateMachine):
    """The reference keeps every VM in one dict and walks it for each answer."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock(0.0)
        self.q = SchedulingQueue(
            self.clock,
            initial_backoff=1.0,
            max_backoff=8.0,
            unschedulable_timeout=TIMEOUT,
            backoff_flush_period=BACKOFF_PERIOD,
            leftover_flush_period=LEFTOVER_PERIOD,
        )
        self.ref: dict[str, Ref] = {}
        self.in_flight: dict[str, Ref] = {}
        self.seq = 0
        self.next_backoff = -math.inf
        self.next_leftover = -math.inf
        self.removed: set[str] = set()

    def _seq(self) -> int:
        self.seq += 1
        return self.seq

    def _wake(self, r: Ref) -> None:
        r.where = "backoff" if r.until > self.clock.now else "active"
        r.seq = self._seq()

    @rule(key=st.sampled_from(KEYS), priority=st.integers(0, 3), created=st.integers(0, 5))
    def push(self, key: str, priority: int, created: int) -> None:
        self.q.push(make_vm(key, priority=priority, created_at=created))
        old = self.ref.get(key)
        self.ref[key] = Ref(priority, created, self._seq(), "active", old.attempts if old else 0)
        self.removed.discard(f"team/{key}")

    @rule()
    def pop(self) -> None:
        self._pop()

    def _pop(self) -> bool:
        now = self.clock.now
        if now >= self.next_backoff:
            for r in sorted(self.ref.values(), key=lambda r: (r.until, r.seq)):
                if r.where == "backoff" and r.until <= now:
                    r.where, r.seq = "active", self._seq()
            self.next_backoff = (math.floor(now / BACKOFF_PERIOD) + 1) * BACKOFF_PERIOD
        if now >= self.next_leftover:
            for r in sorted(self.ref.values(), key=lambda r: (r.parked_at, r.seq)):
                if r.where == "unschedulable" and now - r.parked_at >= TIMEOUT:
                    self._wake(r)
            self.next_leftover = (math.floor(now / LEFTOVER_PERIOD) + 1) * LEFTOVER_PERIOD
        active = [(r.priority, k) for k, r in self.ref.items() if r.where == "active"]
        got = self.q.pop()
        if not active:
            assert got is None
            return False
        best = min(
            (k for _, k in active),
            key=lambda k: (-self.ref[k].priority, self.ref[k].created_at, self.ref[k].seq),
        )
        assert got is not None and got.key == f"team/{best}"
        self.in_flight[best] = self.ref.pop(best)
        return True

    @precondition(lambda self: bool(self.in_flight))
    @rule(data=st.data(), reasons=st.sampled_from(REASONS))
    def fail(self, data: st.DataObject, reasons: frozenset[Reason]) -> None:
        key = data.draw(st.sampled_from(sorted(self.in_flight)))
        r = self.in_flight.pop(key)
        until = self.q.unschedulable(
            make_vm(key, priority=r.priority, created_at=r.created_at), reasons
        )
        r.attempts += 1
        assert until == self.clock.now + min(2.0 ** (r.attempts - 1), 8.0)
        waits: set[Event] = set()
        for reason in reasons:
            waits |= HELPS.get(reason, HOST_EVENTS)
        r.where, r.seq, r.until, r.parked_at = "unschedulable", self._seq(), until, self.clock.now
        r.waits = frozenset(waits or HOST_EVENTS)
        self.ref[key] = r

    @precondition(lambda self: bool(self.in_flight))
    @rule(data=st.data())
    def placed(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(sorted(self.in_flight)))
        self.q.done(f"team/{key}")
        del self.in_flight[key]

    @rule(event=st.sampled_from(list(Event)))
    def event(self, event: Event) -> None:
        helped = [r for r in self.ref.values() if r.where == "unschedulable" and event in r.waits]
        for r in sorted(helped, key=lambda r: r.seq):
            self._wake(r)
        assert self.q.on_event(event) == len(helped)

    @rule(key=st.sampled_from(KEYS))
    def remove(self, key: str) -> None:
        self.q.remove(f"team/{key}")
        self.ref.pop(key, None)
        self.in_flight.pop(key, None)
        self.removed.add(f"team/{key}")

    @rule(seconds=st.sampled_from([0.25, 0.5, 1.0, 3.0, 7.0, 30.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule()
    def wait_for_next_wake(self) -> None:
        """Sleeping until `next_wake()` and popping moves something (or it said None)."""
        wake = self.q.next_wake()
        if wake is None:
            assert all(r.where == "active" for r in self.ref.values())
            return
        self.clock.now = max(self.clock.now, wake)
        assert self._pop()

    @invariant()
    def counts_match_a_full_walk(self) -> None:
        want = {"active": 0, "backoff": 0, "unschedulable": 0}
        for r in self.ref.values():
            want[r.where] += 1
        assert self.q.counts() == want
        assert len(self.q) == len(self.ref)
        for k in KEYS:
            assert (f"team/{k}" in self.q) == (k in self.ref)

    @invariant()
    def removed_vms_never_come_back(self) -> None:
        for key in self.removed:
            assert key not in self.q and self.q.request(key) is None

    @invariant()
    def heaps_stay_within_a_constant_of_the_pending_count(self) -> None:
        c = self.q.counts()
        assert len(self.q._active) <= 2 * c["active"] + 65
        assert len(self.q._backoff) <= 2 * c["backoff"] + 65
        assert len(self.q._parked_since) <= 2 * c["unschedulable"] + 65


QueueMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=60)
test_queue_matches_a_linear_reference = QueueMachine.TestCase


def test_a_pop_at_8000_pending_touches_no_parked_vm() -> None:
    """Popping with thousands parked costs the same as with none: a pop never walks them."""
    clock = FakeClock(0.0)
    q = SchedulingQueue(clock)
    for i in range(4000):
        q.push(make_vm(f"p{i}"))
    while (vm := q.pop()) is not None:
        q.unschedulable(vm, frozenset({Reason.INSUFFICIENT_MEMORY}))
    for i in range(4000):
        q.push(make_vm(f"a{i}"))
    walked = 0
    real_live = q._live

    def counting(key: str, seq: int, where: str) -> object:
        nonlocal walked
        walked += 1
        return real_live(key, seq, where)

    q._live = counting  # type: ignore[method-assign,assignment]
    clock.advance(0.5)
    for _ in range(4000):
        assert q.pop() is not None
        q.counts()
    assert q.next_wake() == 300.0  # parked: only the safety net, on its 30 s grid
    # One live check per pop, plus the flushes' peeks at their heap tops (one each): no walk.
    assert walked <= 4000 + 4
