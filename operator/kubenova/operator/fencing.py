"""Host failure: which VMs become Unknown when a host's heartbeat Lease expires, whether the
host counts as fenced, and which VMs may then be started elsewhere. Pure.

A host whose agent stopped renewing its Lease may be dead, or only cut off from the API server
while its guests run on. Starting those VMs elsewhere is safe only once the host is known to be
off (fenced); until then they stay Unknown, bound to it. Fencing is pluggable (`Fence`): the
built-in `AdminConfirmation` waits for an admin's (or an out-of-band power hook's) annotation
`kubenova.io/fenced=true` on the Host. A grace period after the expiry lets a host that only
blipped come back first.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from kubenova.api import Host, VirtualMachine, constants, lifecycle
from kubenova.api.vm import VMPhase


class Fence(Protocol):
    """Says whether a host that stopped heartbeating is certainly not running guests."""

    def confirmed(self, host: Host, lost_since: dt.datetime, now: dt.datetime) -> str | None:
        """How the host was fenced, in a few words; None while it is not (yet)."""


class AdminConfirmation:
    """Fenced once the Host carries `kubenova.io/fenced: "true"`: an admin, or a hook that
    powered the machine off through its BMC, vouches that it runs nothing."""

    def confirmed(self, host: Host, lost_since: dt.datetime, now: dt.datetime) -> str | None:
        value = host.metadata.annotations.get(constants.ANNOTATION_FENCED, "")
        if value.strip().lower() == "true":
            return f"confirmed by annotation {constants.ANNOTATION_FENCED}=true"
        return None


@dataclass(frozen=True)
class Verdict:
    recreate: bool
    """Whether the host's VMs may now be started elsewhere."""
    why: str
    """Why (not), for the Host's event and the operator's log."""


def lost_since(renew_time: dt.datetime | None, duration_seconds: int) -> dt.datetime | None:
    """When the Lease ran out (None: it never had a renewal)."""
    if renew_time is None:
        return None
    return renew_time + dt.timedelta(seconds=duration_seconds)


def to_mark_unknown(vms: Iterable[VirtualMachine]) -> list[VirtualMachine]:
    """The VMs of a lost host whose phase the operator sets to Unknown."""
    return [
        vm
        for vm in vms
        if vm.metadata.deletion_timestamp is None
        and vm.status.phase is not VMPhase.UNKNOWN
        and lifecycle.allowed(vm.status.phase, lifecycle.Event.HOST_LOST)
    ]


def verdict(
    host: Host,
    lost: dt.datetime | None,
    grace_seconds: float,
    fence: Fence,
    now: dt.datetime,
) -> Verdict:
    """May the VMs of this lost host be recreated elsewhere now?"""
    name = host.metadata.name
    if lost is None:
        return Verdict(False, f"host {name} never heartbeat; nothing to recover")
    waited = (now - lost).total_seconds()
    if waited < grace_seconds:
        return Verdict(False, f"host {name} lost {waited:.0f}s ago; grace is {grace_seconds:.0f}s")
    how = fence.confirmed(host, lost, now)
    if how is None:
        return Verdict(
            False,
            f"host {name} lost {waited:.0f}s ago and not fenced: its VMs stay Unknown until it "
            f"comes back or someone confirms it is off "
            f"(kubectl annotate host.kubenova.io {name} {constants.ANNOTATION_FENCED}=true)",
        )
    return Verdict(True, f"host {name} is fenced ({how})")


def to_recreate(vms: Iterable[VirtualMachine]) -> list[VirtualMachine]:
    """The VMs of a fenced host that go back to Pending, to be placed elsewhere. Every VM goes
    (a Halted one is re-homed and stays stopped; the run strategy decides on the new host)."""
    return [
        vm
        for vm in vms
        if vm.metadata.deletion_timestamp is None
        and lifecycle.allowed(vm.status.phase, lifecycle.Event.RESCHEDULED)
    ]


def to_release(vms: Iterable[VirtualMachine]) -> list[VirtualMachine]:
    """VMs deleted while their host is fenced: no agent will remove their domain (the host
    is off), so the operator releases the domain-cleanup finalizer."""
    return [
        vm
        for vm in vms
        if vm.metadata.deletion_timestamp is not None
        and constants.VM_FINALIZER in vm.metadata.finalizers
    ]
