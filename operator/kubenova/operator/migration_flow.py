"""The VMMigration state machine: from a migration, its VM, the source host's health and the
migrations in flight, the one thing the operator does next. Pure: no kopf, no Kubernetes
client, no clock (callers pass `now`).

    Pending ─Start─► Running ─transfer Completed─► Succeeded   (the VM is re-pointed)
                        ├─transfer Failed──────► Failed or Cancelled (the VM stays, Running)
                        └─deleted / timed out──► Abort asked of the agent, then as above
    Pending ─VM gone, not running, deleted─► Failed / Cancelled

The agent's transfer report decides the outcome, never the operator's wish: a transfer that
completed after a cancel still succeeded (the VM runs on the target), so it is re-pointed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from kubenova.api import VirtualMachine, VMMigration, constants
from kubenova.api.migration import MigrationPhase, TransferState
from kubenova.api.vm import VMPhase

M = MigrationPhase

ACTIVE = (M.SCHEDULING, M.RUNNING)
"""Phases that count against the concurrency limits."""
DONE = (M.SUCCEEDED, M.FAILED, M.CANCELLED)


@dataclass(frozen=True)
class Limits:
    per_host: int = 2
    """Migrations in flight that a host may be source or target of."""
    cluster: int = 5
    """Migrations in flight in the whole cluster."""


class Do(StrEnum):
    WAIT = "wait"
    """Nothing to do now; `message` says what for."""
    START = "start"
    """Pick (or check) the target, reserve it, mark the VM Migrating, hand over to its agent."""
    ABORT = "abort"
    """Ask the source agent to stop the transfer (`message`: why)."""
    SUCCEED = "succeed"
    """Re-point the VM to the target and finish."""
    ROLL_BACK = "roll-back"
    """The VM stays on the source: back to Running there; finish as `phase`."""
    FAIL = "fail"
    """Finish as `phase` without touching the VM (it never left Running, or is gone)."""
    RELEASE = "release"
    """Finished and deleted: remove the finalizer."""


@dataclass(frozen=True)
class Step:
    do: Do
    message: str = ""
    phase: MigrationPhase | None = None
    """The final phase, for ROLL_BACK and FAIL."""
    target: str | None = None
    """For START: a target already chosen (resuming after a crash), else the spec's."""


@dataclass(frozen=True)
class InFlight:
    """Migrations counting against the limits, besides the one being decided."""

    cluster: int = 0
    by_host: Mapping[str, int] = field(default_factory=dict)


def key(m: VMMigration) -> str:
    return f"{m.metadata.namespace or 'default'}/{m.metadata.name}"


def vm_key(m: VMMigration) -> str:
    return f"{m.metadata.namespace or 'default'}/{m.spec.vm_name}"


def in_flight(migrations: Mapping[str, VMMigration], besides: str | None = None) -> InFlight:
    """Count the active migrations per host (as source or target) and in all."""
    by_host: dict[str, int] = {}
    total = 0
    for k, m in migrations.items():
        if k == besides or m.status.phase not in ACTIVE:
            continue
        total += 1
        for h in (m.status.source_host, m.status.target_host):
            if h:
                by_host[h] = by_host.get(h, 0) + 1
    return InFlight(total, by_host)


def host_has_room(busy: InFlight, limits: Limits, host: str) -> bool:
    return busy.by_host.get(host, 0) < limits.per_host


def next_step(
    m: VMMigration,
    vm: VirtualMachine | None,
    source_ready: bool,
    busy: InFlight,
    limits: Limits,
    now: dt.datetime,
) -> Step:
    """What to do next with migration `m`; see the module docstring for the machine."""
    deleting = m.metadata.deletion_timestamp is not None
    phase = m.status.phase
    if phase in DONE:
        if deleting and constants.MIGRATION_FINALIZER in m.metadata.finalizers:
            return Step(Do.RELEASE)
        return Step(Do.WAIT, m.status.message)
    if phase is M.RUNNING:
        return _running(m, vm, source_ready, deleting, now)
    return _pending(m, vm, busy, limits, deleting)


def _pending(
    m: VMMigration, vm: VirtualMachine | None, busy: InFlight, limits: Limits, deleting: bool
) -> Step:
    name = f"VirtualMachine {m.metadata.namespace}/{m.spec.vm_name}"
    if vm is not None and _ours(m, vm) and vm.status.phase is VMPhase.MIGRATING:
        # A previous leader marked the VM and stopped before writing our status: carry on.
        return Step(
            Do.START, target=vm.metadata.annotations.get(constants.ANNOTATION_MIGRATION_TARGET)
        )
    if deleting:
        return Step(Do.FAIL, "cancelled before the transfer started", M.CANCELLED)
    if vm is None:
        return Step(
            Do.FAIL,
            f"{name} does not exist; spec.vmName must name a VM in this namespace",
            M.FAILED,
        )
    if vm.metadata.deletion_timestamp is not None:
        return Step(Do.FAIL, f"{name} is being deleted", M.FAILED)
    other = vm.metadata.annotations.get(constants.ANNOTATION_MIGRATION)
    if vm.status.phase is VMPhase.MIGRATING or (other and other != m.metadata.name):
        return Step(Do.WAIT, f"{name} is being migrated by VMMigration {other}")
    if vm.status.phase in (VMPhase.PENDING, VMPhase.SCHEDULED, VMPhase.STARTING):
        return Step(Do.WAIT, f"waiting for {name} to be Running (it is {vm.status.phase.value})")
    if vm.status.phase is not VMPhase.RUNNING or not vm.status.host:
        return Step(
            Do.FAIL,
            f"{name} is {vm.status.phase.value}; only a Running VM migrates live "
            "(a stopped VM moves by being started elsewhere)",
            M.FAILED,
        )
    if m.spec.target_host == vm.status.host:
        return Step(
            Do.FAIL,
            f"spec.targetHost {m.spec.target_host} is where {name} already runs; name another "
            "host or leave it unset",
            M.FAILED,
        )
    if busy.cluster >= limits.cluster:
        return Step(Do.WAIT, f"{busy.cluster} migrations in flight, the cluster's limit")
    if not host_has_room(busy, limits, vm.status.host):
        return Step(
            Do.WAIT, f"host {vm.status.host} is already in {limits.per_host} migrations, its limit"
        )
    return Step(Do.START, target=m.spec.target_host)


def _running(
    m: VMMigration, vm: VirtualMachine | None, source_ready: bool, deleting: bool, now: dt.datetime
) -> Step:
    st = m.status
    cancelled = M.CANCELLED if deleting else M.FAILED
    if vm is None:
        return Step(Do.FAIL, "the VM was deleted during the migration", cancelled)
    if not (_ours(m, vm) and vm.status.phase is VMPhase.MIGRATING):
        if vm.status.host == st.target_host:
            return Step(Do.SUCCEED, "the VM runs on the target")
        return Step(Do.FAIL, f"the VM left Migrating (it is {vm.status.phase.value})", cancelled)
    transfer = st.transfer
    if transfer is not None and transfer.state is TransferState.COMPLETED:
        return Step(Do.SUCCEED, transfer.message or "the VM runs on the target")
    if transfer is not None and transfer.state is TransferState.FAILED:
        why = vm.metadata.annotations.get(constants.ANNOTATION_MIGRATION_ABORT)
        text = f"{why}; the VM still runs on {st.source_host}" if why else transfer.message
        return Step(Do.ROLL_BACK, text, M.CANCELLED if deleting else M.FAILED)
    if not source_ready:
        return Step(Do.WAIT, f"source host {st.source_host} is not ready; waiting for its agent")
    reason = None
    if deleting:
        reason = "cancelled (the VMMigration was deleted)"
    elif st.start_time is not None and now >= st.start_time + dt.timedelta(
        seconds=m.spec.timeout_seconds
    ):
        reason = f"timed out after spec.timeoutSeconds={m.spec.timeout_seconds}"
    if reason is not None and constants.ANNOTATION_MIGRATION_ABORT not in vm.metadata.annotations:
        return Step(Do.ABORT, reason)
    if reason is not None:
        return Step(Do.WAIT, f"{reason}; waiting for the agent on {st.source_host} to stop it")
    return Step(Do.WAIT, st.message)


def _ours(m: VMMigration, vm: VirtualMachine) -> bool:
    return vm.metadata.annotations.get(constants.ANNOTATION_MIGRATION) == m.metadata.name
