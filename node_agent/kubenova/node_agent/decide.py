"""What the agent does with a VM's domain, and what it reports. Pure: inputs are the VM's
wishes and the observed domain; outputs are actions, the lifecycle event the agent observed
(which `kubenova.api.lifecycle` turns into a phase, conditions and a history entry) and when
to look again.

`decide()` is idempotent: run it again on what the actions produced and it asks for nothing
new, so a restarted agent (or a duplicated event) never defines or starts a domain twice.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from kubenova.api import lifecycle
from kubenova.api.lifecycle import Event
from kubenova.api.vm import RunStrategy, VMPhase
from kubenova.node_agent.hypervisor import Domain, DomainState, StopCause


class Action(StrEnum):
    DEFINE = "define"
    """Prepare storage and define the domain from the VM."""
    START = "start"
    SHUTDOWN = "shutdown"
    """ACPI power button; the guest decides."""
    DESTROY = "destroy"
    """Pull the plug."""
    REBOOT = "reboot"
    MARK_RESTARTED = "mark-restarted"
    """Record the restart token on the domain."""
    UNDEFINE = "undefine"
    CLEAN_STORAGE = "clean-storage"
    RELEASE_FINALIZER = "release-finalizer"


@dataclass(frozen=True)
class Wish:
    """What the VM asks of its domain."""

    uid: str
    run_strategy: RunStrategy
    deleting: bool = False
    restart_token: str | None = None
    grace_seconds: int = 60


@dataclass(frozen=True)
class Decision:
    actions: tuple[Action, ...] = ()
    requeue_after: float | None = None
    """Look again after this many seconds (a graceful stop under way)."""
    stopping_since: dt.datetime | None = None
    """When the graceful stop this decision continues began (None: no stop under way)."""


_WANTS_RUNNING = (RunStrategy.ALWAYS, RunStrategy.MANUAL, RunStrategy.RERUN_ON_FAILURE)


def decide(
    wish: Wish, domain: Domain | None, stopping_since: dt.datetime | None, now: dt.datetime
) -> Decision:
    """The next actions for one VM's domain.

    `stopping_since` is when the agent sent the ACPI request of a graceful stop in progress;
    the caller keeps it between passes.
    """
    if domain is not None and domain.owner is not None and domain.owner.uid != wish.uid:
        # A domain left by an earlier VM of the same name: clear it, then start afresh.
        stale = (Action.DESTROY,) if domain.active else ()
        return Decision(actions=(*stale, Action.UNDEFINE, Action.CLEAN_STORAGE), requeue_after=0)
    if wish.deleting:
        gone = (Action.DESTROY,) if domain is not None and domain.active else ()
        undefine = (Action.UNDEFINE,) if domain is not None else ()
        return Decision(actions=(*gone, *undefine, Action.CLEAN_STORAGE, Action.RELEASE_FINALIZER))
    if domain is None:
        if wish.run_strategy in _WANTS_RUNNING:
            return Decision(actions=(Action.DEFINE, Action.START))
        return Decision()
    if wish.run_strategy == RunStrategy.HALTED:
        return _stop(wish, domain, stopping_since, now)
    restart = _restart(wish, domain)
    if domain.state == DomainState.CRASHED:
        if wish.run_strategy == RunStrategy.MANUAL:
            return Decision(actions=restart)
        return Decision(actions=(Action.DESTROY, Action.START, *restart))
    if domain.state == DomainState.SHUTOFF:
        if _restarts_after(wish.run_strategy, domain.cause):
            return Decision(actions=(Action.START, *restart))
        return Decision(actions=restart)
    if restart and domain.state == DomainState.RUNNING:
        return Decision(actions=(Action.REBOOT, *restart))
    return Decision(actions=restart)


def _restart(wish: Wish, domain: Domain) -> tuple[Action, ...]:
    if wish.restart_token and wish.restart_token != domain.restart_token:
        return (Action.MARK_RESTARTED,)
    return ()


def _restarts_after(strategy: RunStrategy, cause: StopCause) -> bool:
    if strategy == RunStrategy.ALWAYS:
        return True
    if strategy == RunStrategy.RERUN_ON_FAILURE:
        return cause in (StopCause.CRASHED, StopCause.FAILED)
    return False


def _stop(
    wish: Wish, domain: Domain, stopping_since: dt.datetime | None, now: dt.datetime
) -> Decision:
    if not domain.active:
        return Decision()
    if domain.state == DomainState.PAUSED:
        return Decision(actions=(Action.DESTROY,))  # a paused guest cannot hear ACPI
    if stopping_since is None:
        return Decision(
            actions=(Action.SHUTDOWN,), requeue_after=float(wish.grace_seconds), stopping_since=now
        )
    waited = (now - stopping_since).total_seconds()
    if waited >= wish.grace_seconds:
        return Decision(actions=(Action.DESTROY,))
    return Decision(requeue_after=wish.grace_seconds - waited, stopping_since=stopping_since)


@dataclass(frozen=True)
class Report:
    event: Event
    """What the agent observed, as the lifecycle event it applies."""
    reason: str = ""

    @property
    def phase(self) -> VMPhase:
        return lifecycle.target(self.event)


def report(wish: Wish, domain: Domain | None, stopping: bool) -> Report:
    """What the agent reports for what it observes."""
    if wish.deleting:
        return Report(Event.DELETE_REQUESTED, "the domain is being removed")
    if domain is None:
        if wish.run_strategy == RunStrategy.HALTED:
            return Report(Event.DOMAIN_STOPPED, "runStrategy is Halted")
        return Report(Event.DOMAIN_STARTING, "defining the domain")
    if domain.state == DomainState.RUNNING:
        if stopping or wish.run_strategy == RunStrategy.HALTED:
            return Report(Event.STOP_REQUESTED, "waiting for the guest to power off")
        return Report(Event.DOMAIN_RUNNING)
    if domain.state == DomainState.PAUSED:
        return Report(Event.DOMAIN_RUNNING, "paused")
    if domain.state == DomainState.SHUTTING_DOWN:
        return Report(Event.STOP_REQUESTED, "the guest is shutting down")
    if domain.state == DomainState.CRASHED or domain.cause in (StopCause.CRASHED, StopCause.FAILED):
        if wish.run_strategy in (RunStrategy.ALWAYS, RunStrategy.RERUN_ON_FAILURE):
            return Report(Event.DOMAIN_STARTING, "restarting after the guest crashed")
        return Report(Event.DOMAIN_CRASHED, "the guest crashed")
    if domain.state == DomainState.SHUTOFF:
        if wish.run_strategy == RunStrategy.ALWAYS:
            return Report(Event.DOMAIN_STARTING, "starting the domain")
        if wish.run_strategy == RunStrategy.HALTED:
            return Report(Event.DOMAIN_STOPPED, "runStrategy is Halted")
        if domain.cause == StopCause.SHUTDOWN:
            # The guest powered itself off: Manual and RerunOnFailure leave it so.
            return Report(Event.GUEST_SHUTDOWN, "the guest powered off")
        return Report(Event.DOMAIN_STOPPED, f"the guest stopped ({domain.cause})")
    return Report(Event.DOMAIN_UNKNOWN, f"libvirt reports state {domain.state}")


@dataclass(frozen=True)
class OrphanScan:
    """The result of comparing the host's domains with the VMs bound to it."""

    first_seen: dict[str, dt.datetime] = field(default_factory=dict)
    """Orphans by domain name, with when they were first seen (carry into the next scan)."""
    new: tuple[str, ...] = ()
    """Orphans seen for the first time: report them."""
    remove: tuple[str, ...] = ()
    """Orphans older than the grace: destroy and undefine them."""


def scan_orphans(
    domains: Iterable[Domain],
    bound_uids: set[str],
    first_seen: Mapping[str, dt.datetime],
    now: dt.datetime,
    grace_seconds: float,
    *,
    elsewhere: frozenset[str] = frozenset(),
    migrating: frozenset[str] = frozenset(),
) -> OrphanScan:
    """Domains kubenova created whose VM is gone or bound elsewhere. Domains without kubenova
    metadata are not ours and are never touched.

    `elsewhere`: uids of VMs known to be bound to another host (or to none: rescheduled after
    this host was fenced); their domains go at once, never after a grace, so a VM never runs
    twice. `migrating`: uids of VMs in a live migration, whose domain may be arriving here;
    the operator and the source agent own those."""
    seen: dict[str, dt.datetime] = {}
    new: list[str] = []
    remove: list[str] = []
    for d in domains:
        if d.owner is None or d.owner.uid in bound_uids or d.owner.uid in migrating:
            continue
        since = first_seen.get(d.name)
        if since is None:
            since = now
            new.append(d.name)
        seen[d.name] = since
        if d.owner.uid in elsewhere or (now - since).total_seconds() >= grace_seconds:
            remove.append(d.name)
    return OrphanScan(first_seen=seen, new=tuple(new), remove=tuple(remove))
