"""The VM lifecycle as a pure state machine, and the status change each transition makes.

Pure: no kopf, no Kubernetes client, no clock (callers pass `now`). It lives with the API
types because both the operator and the node agent change a VM's phase, and only through
`apply()`: every transition, whoever makes it, sets the same conditions and appends one entry
to the VM's bounded operation history.

    Pending ─Bound─► Scheduled ─DomainStarting─► Starting ─DomainRunning─► Running
    Running ─StopRequested─► Stopping ─DomainStopped─► Stopped ─DomainStarting─► Starting
    Running ─DomainCrashed─► Failed ─DomainStarting─► Starting          (RerunOnFailure, Always)
    Running ─GuestShutdown─► Stopped                    (the guest powered itself off)
    Running ─MigrationStarted─► Migrating ─MigrationSucceeded/Failed─► Running
    any bound phase ─HostLost─► Unknown ─HostBack─► Scheduled (its agent reports again)
    Unknown ─Rescheduled─► Pending                        (fenced host: placed elsewhere)
    Stopped, Failed ─Rescheduled─► Pending                (moved without its disk: see draining)
    any ─DeleteRequested─► Deleting

The Domain* events, StopRequested and GuestShutdown are the node agent's observations of the
VM's libvirt domain. What the agent sees is what is true, so each is valid from every phase
the agent owns (Scheduled, Starting, Running, Stopping, Stopped, Failed, Unknown): a user who
flips the run strategy back mid-stop makes Stopping → Running, a crash being restarted makes
Running → Starting. The agent never reports a Pending or Migrating VM (those are the
operator's), and nothing leaves Deleting.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum

from kubenova.api import constants
from kubenova.api.meta import Condition, ConditionStatus, set_condition
from kubenova.api.vm import Operation, RunStrategy, VirtualMachineStatus, VMPhase

P = VMPhase


class Event(StrEnum):
    BOUND = "Bound"
    UNSCHEDULABLE = "Unschedulable"
    DOMAIN_STARTING = "DomainStarting"
    DOMAIN_RUNNING = "DomainRunning"
    STOP_REQUESTED = "StopRequested"
    DOMAIN_STOPPED = "DomainStopped"
    GUEST_SHUTDOWN = "GuestShutdown"
    DOMAIN_CRASHED = "DomainCrashed"
    DOMAIN_FAILED = "DomainFailed"
    """The agent could not carry the VM out (its flavor is gone, libvirt refused the domain)."""
    DOMAIN_UNKNOWN = "DomainUnknown"
    """libvirt reports a state the agent does not know."""
    MIGRATION_STARTED = "MigrationStarted"
    MIGRATION_SUCCEEDED = "MigrationSucceeded"
    MIGRATION_FAILED = "MigrationFailed"
    HOST_LOST = "HostLost"
    HOST_BACK = "HostBack"
    RESCHEDULED = "Rescheduled"
    DELETE_REQUESTED = "DeleteRequested"


_BOUND = (P.SCHEDULED, P.STARTING, P.RUNNING, P.STOPPING, P.STOPPED, P.FAILED, P.MIGRATING)
_AGENT = (P.SCHEDULED, P.STARTING, P.RUNNING, P.STOPPING, P.STOPPED, P.FAILED, P.UNKNOWN)
"""The phases in which the node agent reports what it observes."""

_TABLE: dict[Event, tuple[tuple[tuple[VMPhase, ...], VMPhase], ...]] = {
    Event.BOUND: (((P.PENDING,), P.SCHEDULED),),
    Event.UNSCHEDULABLE: (((P.PENDING,), P.PENDING),),
    Event.DOMAIN_STARTING: ((_AGENT, P.STARTING),),
    Event.DOMAIN_RUNNING: ((_AGENT, P.RUNNING),),
    Event.STOP_REQUESTED: ((_AGENT, P.STOPPING),),
    Event.DOMAIN_STOPPED: ((_AGENT, P.STOPPED),),
    Event.GUEST_SHUTDOWN: ((_AGENT, P.STOPPED),),
    Event.DOMAIN_CRASHED: (((*_AGENT, P.MIGRATING), P.FAILED),),
    Event.DOMAIN_FAILED: ((_AGENT, P.FAILED),),
    Event.DOMAIN_UNKNOWN: ((_AGENT, P.UNKNOWN),),
    Event.MIGRATION_STARTED: (((P.RUNNING,), P.MIGRATING),),
    Event.MIGRATION_SUCCEEDED: (((P.MIGRATING,), P.RUNNING),),
    Event.MIGRATION_FAILED: (((P.MIGRATING,), P.RUNNING),),
    Event.HOST_LOST: ((_BOUND, P.UNKNOWN),),
    Event.HOST_BACK: (((P.UNKNOWN,), P.SCHEDULED),),
    Event.RESCHEDULED: (((P.UNKNOWN, P.FAILED, P.STOPPED), P.PENDING),),
    Event.DELETE_REQUESTED: ((tuple(P), P.DELETING),),
}

_ACTION = {
    Event.BOUND: "Scheduled",
    Event.UNSCHEDULABLE: "Unschedulable",
    Event.DOMAIN_STARTING: "Starting",
    Event.DOMAIN_RUNNING: "Started",
    Event.STOP_REQUESTED: "Stopping",
    Event.DOMAIN_STOPPED: "Stopped",
    Event.GUEST_SHUTDOWN: "GuestShutdown",
    Event.DOMAIN_CRASHED: "Crashed",
    Event.DOMAIN_FAILED: "Failed",
    Event.DOMAIN_UNKNOWN: "StateUnknown",
    Event.MIGRATION_STARTED: "MigrationStarted",
    Event.MIGRATION_SUCCEEDED: "Migrated",
    Event.MIGRATION_FAILED: "MigrationFailed",
    Event.HOST_LOST: "HostLost",
    Event.HOST_BACK: "HostBack",
    Event.RESCHEDULED: "Rescheduled",
    Event.DELETE_REQUESTED: "Deleting",
}

_FAILED_RESULT = {
    Event.UNSCHEDULABLE,
    Event.DOMAIN_CRASHED,
    Event.DOMAIN_FAILED,
    Event.DOMAIN_UNKNOWN,
    Event.MIGRATION_FAILED,
    Event.HOST_LOST,
}


class InvalidTransitionError(ValueError):
    """An event that makes no sense in the VM's current phase (e.g. Bound while Running)."""


def next_phase(phase: VMPhase, event: Event) -> VMPhase:
    """The phase after `event`, or InvalidTransitionError."""
    for sources, target in _TABLE[event]:
        if phase in sources:
            return target
    raise InvalidTransitionError(f"{event.value} is not valid in phase {phase.value}")


def allowed(phase: VMPhase, event: Event) -> bool:
    return any(phase in sources for sources, _ in _TABLE[event])


def action(event: Event) -> str:
    """The word the history entry and the Kubernetes event of `event` carry ("Started")."""
    return _ACTION[event]


@dataclass(frozen=True)
class Change:
    """What happened, for the status, the history and the Kubernetes event."""

    event: Event
    actor: str
    message: str = ""
    trace_id: str | None = None
    reason: str | None = None
    """`status.reason` after the change, outside Pending (where the message is the reason:
    why the VM does not fit). The agent's, e.g. "waiting for the guest to power off"."""

    @property
    def warning(self) -> bool:
        return self.event in _FAILED_RESULT


def _conditions(
    status: VirtualMachineStatus, phase: VMPhase, change: Change, now: dt.datetime
) -> list[Condition]:
    def cond(kind: str, ok: bool, reason: str) -> Condition:
        return Condition(
            type=kind,
            status=ConditionStatus.TRUE if ok else ConditionStatus.FALSE,
            reason=reason,
            message=change.message,
        )

    conds = status.conditions
    scheduled = phase not in (P.PENDING, P.DELETING)
    sched_reason = constants.REASON_SCHEDULED if scheduled else constants.REASON_UNSCHEDULABLE
    if phase is not P.DELETING:
        conds = set_condition(conds, cond(constants.COND_SCHEDULED, scheduled, sched_reason), now)
    # Running, Ready and Migrating appear once first true (a Pod's Ready, too, comes with its
    # kubelet, not its binding): the bind, the one write of every VM, carries only Scheduled.
    running = phase in (P.RUNNING, P.MIGRATING)
    for kind, ok in (
        (constants.COND_RUNNING, running),
        (constants.COND_READY, running),
        (constants.COND_MIGRATING, phase is P.MIGRATING),
    ):
        if ok or any(c.type == kind for c in conds):
            conds = set_condition(conds, cond(kind, ok, change.event.value), now)
    return conds


def _state(c: Condition) -> tuple[str, ConditionStatus]:
    return c.type, c.status


def apply(
    status: VirtualMachineStatus, change: Change, now: dt.datetime
) -> tuple[VirtualMachineStatus, bool]:
    """The status after `change`, and whether the phase changed. Raises InvalidTransitionError
    for an event the phase does not allow. Repeating an event that leaves the phase as it is
    (a second Unschedulable with the same message) changes nothing, so it writes nothing.

    Outside Pending, an event that leaves the phase as it is (the agent seeing a Running VM
    paused) appends no history entry: only the reason, and conditions that lag the phase
    (written before they were kept), are brought up to date."""
    phase = next_phase(status.phase, change.event)
    reason = change.message if phase is P.PENDING else change.reason
    same = phase is status.phase and change.event is not Event.BOUND
    if same and phase is not P.PENDING:
        conditions = _conditions(status, phase, change, now)
        if [_state(c) for c in conditions] == [_state(c) for c in status.conditions]:
            conditions = status.conditions  # only messages differ: keep what is written
        if status.reason == reason and conditions is status.conditions:
            return status, False
        return status.model_copy(update={"reason": reason, "conditions": conditions}), False
    if same and status.reason == reason:
        return status, False
    entry = Operation(
        time=now,
        action=_ACTION[change.event],
        actor=change.actor,
        result="Failed" if change.warning else "Succeeded",
        message=change.message[:1024],
        trace_id=change.trace_id,
    )
    history = [*status.history, entry][-constants.MAX_HISTORY :]
    new = status.model_copy(
        update={
            "phase": phase,
            "reason": reason,
            "conditions": _conditions(status, phase, change, now),
            "history": history,
        }
    )
    return new, phase is not status.phase


def target(event: Event) -> VMPhase:
    """The phase `event` leads to (each event has one, whatever phase it comes from)."""
    return _TABLE[event][0][1]


def wants_running(strategy: RunStrategy, status: VirtualMachineStatus) -> bool:
    """Whether the VM's domain should be running now, from its run strategy and what happened
    last (the node agent acts on this)."""
    if strategy is RunStrategy.ALWAYS:
        return True
    if strategy is RunStrategy.HALTED:
        return False
    last = status.history[-1].action if status.history else None
    if strategy is RunStrategy.RERUN_ON_FAILURE:
        # A crash restarts the VM; a shutdown from inside the guest is respected.
        return last != _ACTION[Event.GUEST_SHUTDOWN]
    # Manual: started once when created; afterwards left as the guest or the user left it.
    return status.phase in (P.SCHEDULED, P.STARTING, P.RUNNING, P.MIGRATING)
