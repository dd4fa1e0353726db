from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubenova.api import constants, lifecycle
from kubenova.api.lifecycle import Change, Event, InvalidTransitionError
from kubenova.api.vm import RunStrategy, VirtualMachineStatus, VMPhase

pytestmark = pytest.mark.unit
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
P = VMPhase


def _walk(*events: Event) -> VirtualMachineStatus:
    status = VirtualMachineStatus()
    for i, ev in enumerate(events):
        status, _ = lifecycle.apply(status, Change(ev, "test"), T0 + dt.timedelta(seconds=i))
    return status


def test_the_happy_path_and_its_history() -> None:
    s = _walk(Event.BOUND, Event.DOMAIN_STARTING, Event.DOMAIN_RUNNING)
    assert s.phase is P.RUNNING
    assert [h.action for h in s.history] == ["Scheduled", "Starting", "Started"]
    conds = {c.type: c.status.value for c in s.conditions}
    assert conds == {"Scheduled": "True", "Running": "True", "Ready": "True"}


def test_stop_and_start_again() -> None:
    s = _walk(
        Event.BOUND,
        Event.DOMAIN_RUNNING,
        Event.STOP_REQUESTED,
        Event.DOMAIN_STOPPED,
        Event.DOMAIN_STARTING,
        Event.DOMAIN_RUNNING,
    )
    assert s.phase is P.RUNNING
    assert [h.action for h in s.history][-3:] == ["Stopped", "Starting", "Started"]


@pytest.mark.parametrize(
    ("phase", "event"),
    [
        (P.RUNNING, Event.BOUND),
        (P.PENDING, Event.DOMAIN_RUNNING),
        (P.STOPPED, Event.MIGRATION_STARTED),
        (P.PENDING, Event.HOST_LOST),
        (P.RUNNING, Event.RESCHEDULED),
    ],
)
def test_events_that_make_no_sense_are_refused(phase: VMPhase, event: Event) -> None:
    with pytest.raises(InvalidTransitionError, match=f"{event.value} is not valid in phase"):
        lifecycle.apply(VirtualMachineStatus(phase=phase), Change(event, "test"), T0)


def test_a_repeated_explanation_changes_nothing() -> None:
    why = Change(Event.UNSCHEDULABLE, "operator", "0/3 hosts: 3 insufficient memory")
    once, changed = lifecycle.apply(VirtualMachineStatus(), why, T0)
    assert once.reason == why.message and len(once.history) == 1
    assert changed is False, "the phase stays Pending"
    twice, _ = lifecycle.apply(once, why, T0 + dt.timedelta(seconds=5))
    assert twice is once
    other = Change(Event.UNSCHEDULABLE, "operator", "0/4 hosts: 4 cordoned")
    third, _ = lifecycle.apply(once, other, T0)
    assert third.reason == other.message and len(third.history) == 2


def test_binding_clears_the_explanation_and_marks_scheduled() -> None:
    s = _walk(Event.UNSCHEDULABLE, Event.BOUND)
    assert s.reason is None
    (cond,) = [c for c in s.conditions if c.type == constants.COND_SCHEDULED]
    assert cond.status.value == "True"


def test_history_is_bounded_oldest_first_out() -> None:
    events = [Event.BOUND] + [Event.DOMAIN_RUNNING, Event.STOP_REQUESTED, Event.DOMAIN_STOPPED] * 10
    s = _walk(*events)
    assert len(s.history) == constants.MAX_HISTORY
    assert s.history[-1].action == "Stopped"
    assert s.history == sorted(s.history, key=lambda h: h.time)


@given(st.lists(st.sampled_from(list(Event)), max_size=40))
def test_any_sequence_keeps_a_known_phase_and_a_bounded_history(events: list[Event]) -> None:
    s = VirtualMachineStatus()
    for ev in events:
        if lifecycle.allowed(s.phase, ev):
            s, _ = lifecycle.apply(s, Change(ev, "test"), T0)
        else:
            with pytest.raises(InvalidTransitionError):
                lifecycle.next_phase(s.phase, ev)
    assert s.phase in set(VMPhase)
    assert len(s.history) <= constants.MAX_HISTORY
    assert len({c.type for c in s.conditions}) == len(s.conditions)


@pytest.mark.parametrize(
    ("strategy", "events", "wants"),
    [
        (RunStrategy.ALWAYS, [Event.BOUND], True),
        (RunStrategy.HALTED, [Event.BOUND], False),
        (
            RunStrategy.RERUN_ON_FAILURE,
            [Event.BOUND, Event.DOMAIN_RUNNING, Event.DOMAIN_CRASHED],
            True,
        ),
        (
            RunStrategy.RERUN_ON_FAILURE,
            [Event.BOUND, Event.DOMAIN_RUNNING, Event.GUEST_SHUTDOWN],
            False,
        ),
        (RunStrategy.MANUAL, [Event.BOUND], True),
        (RunStrategy.MANUAL, [Event.BOUND, Event.DOMAIN_RUNNING, Event.GUEST_SHUTDOWN], False),
    ],
)
def test_wants_running_follows_the_run_strategy(
    strategy: RunStrategy, events: list[Event], wants: bool
) -> None:
    assert lifecycle.wants_running(strategy, _walk(*events)) is wants


AGENT_EVENTS = [
    Event.DOMAIN_STARTING,
    Event.DOMAIN_RUNNING,
    Event.STOP_REQUESTED,
    Event.DOMAIN_STOPPED,
    Event.GUEST_SHUTDOWN,
    Event.DOMAIN_CRASHED,
    Event.DOMAIN_FAILED,
    Event.DOMAIN_UNKNOWN,
]
AGENT_PHASES = [P.SCHEDULED, P.STARTING, P.RUNNING, P.STOPPING, P.STOPPED, P.FAILED, P.UNKNOWN]


@pytest.mark.parametrize("phase", AGENT_PHASES)
@pytest.mark.parametrize("event", AGENT_EVENTS)
def test_what_the_agent_observes_is_valid_from_every_phase_it_owns(
    phase: VMPhase, event: Event
) -> None:
    s, _ = lifecycle.apply(VirtualMachineStatus(phase=phase), Change(event, "agent/h1"), T0)
    assert s.phase is lifecycle.target(event)


@pytest.mark.parametrize("event", AGENT_EVENTS)
@pytest.mark.parametrize("phase", [P.PENDING, P.DELETING])
def test_the_agent_cannot_move_a_pending_or_deleting_vm(phase: VMPhase, event: Event) -> None:
    with pytest.raises(InvalidTransitionError):
        lifecycle.apply(VirtualMachineStatus(phase=phase), Change(event, "agent/h1"), T0)


def test_a_repeated_observation_appends_no_history_but_updates_the_reason() -> None:
    running = _walk(Event.BOUND, Event.DOMAIN_RUNNING)
    paused, changed = lifecycle.apply(
        running, Change(Event.DOMAIN_RUNNING, "agent/h1", "paused", reason="paused"), T0
    )
    assert not changed
    assert (paused.reason, paused.history) == ("paused", running.history)
    again, _ = lifecycle.apply(
        paused, Change(Event.DOMAIN_RUNNING, "agent/h1", "paused", reason="paused"), T0
    )
    assert again is paused, "nothing to write"


def test_a_running_vm_written_without_ready_gets_it_from_its_next_observation() -> None:
    old = VirtualMachineStatus(phase=P.RUNNING)  # written by an agent that bypassed apply()
    s, _ = lifecycle.apply(old, Change(Event.DOMAIN_RUNNING, "agent/h1"), T0)
    assert {c.type: c.status.value for c in s.conditions}[constants.COND_READY] == "True"
    assert s.history == [], "no phase change, no history entry"


@given(st.lists(st.sampled_from([*AGENT_EVENTS, Event.HOST_BACK, Event.HOST_LOST]), max_size=40))
def test_ready_history_and_phase_never_disagree(events: list[Event]) -> None:
    s, _ = lifecycle.apply(VirtualMachineStatus(), Change(Event.BOUND, "operator"), T0)
    assert {c.type for c in s.conditions} == {constants.COND_SCHEDULED}, "the bind: only that"
    ran = False
    for i, ev in enumerate(events):
        if not lifecycle.allowed(s.phase, ev):
            continue
        before = s
        s, changed = lifecycle.apply(s, Change(ev, "agent/h1"), T0 + dt.timedelta(seconds=i))
        conds = {c.type: c.status.value for c in s.conditions}
        ran = ran or s.phase in (P.RUNNING, P.MIGRATING)
        ready = "True" if s.phase in (P.RUNNING, P.MIGRATING) else "False" if ran else None
        # absent until the guest first runs, then always there and agreeing with the phase
        assert conds.get(constants.COND_READY) == conds.get(constants.COND_RUNNING) == ready
        if changed:
            assert s.history[-1].action == lifecycle.action(ev)
        else:
            assert s.history == before.history
