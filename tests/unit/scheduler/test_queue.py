from __future__ import annotations

import pytest

from kubenova.scheduler.explain import Reason
from kubenova.scheduler.queue import Event, SchedulingQueue
from tests.unit.scheduler.builders import FakeClock, make_vm

pytestmark = pytest.mark.unit

MEMORY = frozenset({Reason.INSUFFICIENT_MEMORY})


def make_queue(clock: FakeClock) -> SchedulingQueue:
    return SchedulingQueue(clock, initial_backoff=1.0, max_backoff=8.0, unschedulable_timeout=300)


def drain(q: SchedulingQueue) -> list[str]:
    out = []
    while (vm := q.pop()) is not None:
        out.append(vm.key)
        q.done(vm.key)
    return out


def test_priority_first_then_age() -> None:
    q = make_queue(FakeClock())
    q.push(make_vm("old-low", priority=0, created_at=1))
    q.push(make_vm("new-high", priority=10, created_at=5))
    q.push(make_vm("old-high", priority=10, created_at=2))
    q.push(make_vm("new-low", priority=0, created_at=9))
    assert drain(q) == ["team/old-high", "team/new-high", "team/old-low", "team/new-low"]


def test_pushing_again_replaces_the_entry() -> None:
    q = make_queue(FakeClock())
    q.push(make_vm("a", priority=0))
    q.push(make_vm("b", priority=5))
    q.push(make_vm("a", priority=9))
    assert drain(q) == ["team/a", "team/b"]
    assert len(q) == 0


def test_an_unschedulable_vm_waits_for_a_helpful_event_not_a_poll() -> None:
    clock = FakeClock()
    q = make_queue(clock)
    q.push(make_vm("a"))
    vm = q.pop()
    assert vm is not None
    q.unschedulable(vm, MEMORY)
    clock.advance(5)
    assert q.pop() is None
    assert q.on_event(Event.VM_PLACED) == 0  # cannot free memory
    assert q.on_event(Event.CAPACITY_FREED) == 1
    assert q.pop() == vm


def test_an_event_during_back_off_waits_for_the_back_off_to_end() -> None:
    clock = FakeClock(100.0)
    q = make_queue(clock)
    q.push(make_vm("a"))
    vm = q.pop()
    assert vm is not None
    assert q.unschedulable(vm, MEMORY) == 101.0
    q.on_event(Event.HOST_ADDED)
    assert q.counts() == {"active": 0, "backoff": 1, "unschedulable": 0}
    assert q.next_wake() == 101.0
    assert q.pop() is None
    clock.advance(1.0)
    assert q.pop() == vm


def test_back_off_doubles_up_to_the_maximum() -> None:
    clock = FakeClock(0.0)
    q = make_queue(clock)
    q.push(make_vm("a"))
    delays = []
    for _ in range(6):
        clock.advance(100)
        q.on_event(Event.HOST_ADDED)
        vm = q.pop()
        assert vm is not None
        delays.append(q.unschedulable(vm, MEMORY) - clock.now)
    assert delays == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


def test_parked_vms_are_retried_after_the_timeout_even_without_events() -> None:
    clock = FakeClock(0.0)
    q = make_queue(clock)
    q.push(make_vm("a"))
    vm = q.pop()
    assert vm is not None
    q.unschedulable(vm, frozenset({Reason.CORDONED}))
    assert q.next_wake() == 300.0  # parked, not backing off: only the safety net wakes it
    clock.advance(299)
    assert q.pop() is None
    clock.advance(1)
    assert q.pop() == vm


def test_removed_vms_never_come_back() -> None:
    clock = FakeClock(0.0)
    q = make_queue(clock)
    q.push(make_vm("a"))
    q.push(make_vm("b"))
    q.remove("team/a")
    assert drain(q) == ["team/b"]
    q.push(make_vm("c"))
    vm = q.pop()
    assert vm is not None
    q.unschedulable(vm, MEMORY)
    q.remove("team/c")
    clock.advance(1000)
    q.on_event(Event.CAPACITY_FREED)
    assert q.pop() is None and len(q) == 0
