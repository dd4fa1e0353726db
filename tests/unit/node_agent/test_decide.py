"""Reconcile decisions: what the agent does for each VM wish and observed domain, and that a
second pass on the result asks for nothing more (idempotence)."""

from __future__ import annotations

import datetime as dt

import pytest

from kubenova.api.vm import RunStrategy, VMPhase
from kubenova.node_agent.decide import Action, Wish, decide, report, scan_orphans
from kubenova.node_agent.hypervisor import Domain, DomainState, StopCause
from tests.unit.node_agent.builders import NOW, UID, make_domain

pytestmark = pytest.mark.unit

A = Action
RUNNING = make_domain(DomainState.RUNNING)
CLEAN_OFF = make_domain(DomainState.SHUTOFF, StopCause.SHUTDOWN)
CRASHED_OFF = make_domain(DomainState.SHUTOFF, StopCause.CRASHED)
CRASHED = make_domain(DomainState.CRASHED)


def wish(strategy: RunStrategy = RunStrategy.ALWAYS, **kw: object) -> Wish:
    return Wish(uid=UID, run_strategy=strategy, **kw)  # type: ignore[arg-type]


class TestStartingAndKeepingRunning:
    def test_a_new_vm_is_defined_then_started(self) -> None:
        assert decide(wish(), None, None, NOW).actions == (A.DEFINE, A.START)

    @pytest.mark.parametrize("strategy", [RunStrategy.MANUAL, RunStrategy.RERUN_ON_FAILURE])
    def test_other_running_strategies_start_a_new_vm_too(self, strategy: RunStrategy) -> None:
        assert decide(wish(strategy), None, None, NOW).actions == (A.DEFINE, A.START)

    def test_a_halted_vm_gets_no_domain(self) -> None:
        assert decide(wish(RunStrategy.HALTED), None, None, NOW).actions == ()

    def test_a_running_domain_is_left_alone(self) -> None:
        assert decide(wish(), RUNNING, None, NOW).actions == ()

    @pytest.mark.parametrize(
        ("strategy", "domain", "actions"),
        [
            (RunStrategy.ALWAYS, CLEAN_OFF, (A.START,)),
            (RunStrategy.ALWAYS, CRASHED_OFF, (A.START,)),
            (RunStrategy.ALWAYS, CRASHED, (A.DESTROY, A.START)),
            (RunStrategy.RERUN_ON_FAILURE, CLEAN_OFF, ()),
            (RunStrategy.RERUN_ON_FAILURE, CRASHED_OFF, (A.START,)),
            (RunStrategy.RERUN_ON_FAILURE, CRASHED, (A.DESTROY, A.START)),
            (RunStrategy.MANUAL, CLEAN_OFF, ()),
            (RunStrategy.MANUAL, CRASHED_OFF, ()),
            (RunStrategy.MANUAL, CRASHED, ()),
        ],
    )
    def test_a_stopped_guest_is_restarted_as_the_run_strategy_says(
        self, strategy: RunStrategy, domain: Domain, actions: tuple[Action, ...]
    ) -> None:
        assert decide(wish(strategy), domain, None, NOW).actions == actions


class TestGracefulStop:
    def test_halting_a_running_vm_sends_acpi_and_waits_the_grace(self) -> None:
        d = decide(wish(RunStrategy.HALTED, grace_seconds=30), RUNNING, None, NOW)
        assert d.actions == (A.SHUTDOWN,)
        assert d.requeue_after == 30
        assert d.stopping_since == NOW

    def test_within_the_grace_the_agent_only_waits(self) -> None:
        since = NOW - dt.timedelta(seconds=10)
        d = decide(wish(RunStrategy.HALTED, grace_seconds=30), RUNNING, since, NOW)
        assert d.actions == ()
        assert d.requeue_after == 20
        assert d.stopping_since == since

    def test_after_the_grace_the_domain_is_destroyed(self) -> None:
        since = NOW - dt.timedelta(seconds=31)
        d = decide(wish(RunStrategy.HALTED, grace_seconds=30), RUNNING, since, NOW)
        assert d.actions == (A.DESTROY,)
        assert d.stopping_since is None

    def test_a_paused_guest_cannot_hear_acpi_and_is_destroyed(self) -> None:
        paused = make_domain(DomainState.PAUSED)
        assert decide(wish(RunStrategy.HALTED), paused, None, NOW).actions == (A.DESTROY,)

    def test_a_stopped_domain_of_a_halted_vm_is_left_defined(self) -> None:
        assert decide(wish(RunStrategy.HALTED), CLEAN_OFF, None, NOW).actions == ()


class TestDeletion:
    def test_a_running_domain_is_destroyed_undefined_cleaned_and_released(self) -> None:
        d = decide(wish(deleting=True), RUNNING, None, NOW)
        assert d.actions == (A.DESTROY, A.UNDEFINE, A.CLEAN_STORAGE, A.RELEASE_FINALIZER)

    def test_a_stopped_domain_is_only_undefined(self) -> None:
        d = decide(wish(deleting=True), CLEAN_OFF, None, NOW)
        assert d.actions == (A.UNDEFINE, A.CLEAN_STORAGE, A.RELEASE_FINALIZER)

    def test_without_a_domain_the_finalizer_is_released_at_once(self) -> None:
        d = decide(wish(deleting=True), None, None, NOW)
        assert d.actions == (A.CLEAN_STORAGE, A.RELEASE_FINALIZER)

    def test_a_domain_of_an_earlier_vm_with_the_same_name_is_replaced(self) -> None:
        stale = make_domain(DomainState.RUNNING, uid="0000-old")
        d = decide(wish(), stale, None, NOW)
        assert d.actions == (A.DESTROY, A.UNDEFINE, A.CLEAN_STORAGE)
        assert d.requeue_after == 0


class TestRestartRequests:
    def test_a_new_token_reboots_a_running_guest_once(self) -> None:
        first = decide(wish(restart_token="t1"), RUNNING, None, NOW)
        assert first.actions == (A.REBOOT, A.MARK_RESTARTED)
        marked = make_domain(DomainState.RUNNING, restart_token="t1")
        assert decide(wish(restart_token="t1"), marked, None, NOW).actions == ()

    def test_a_stopped_always_vm_is_started_and_the_token_recorded(self) -> None:
        d = decide(wish(restart_token="t2"), CLEAN_OFF, None, NOW)
        assert d.actions == (A.START, A.MARK_RESTARTED)


def _apply(actions: tuple[Action, ...], domain: Domain | None, token: str) -> Domain | None:
    """A model hypervisor: what the domain looks like after the actions (a guest asked to
    shut down does so at once)."""
    for a in actions:
        if a == A.DEFINE:  # the new domain's metadata carries the current token
            domain = make_domain(DomainState.SHUTOFF, StopCause.OTHER, restart_token=token)
        elif a == A.SHUTDOWN and domain is not None:
            domain = make_domain(
                DomainState.SHUTOFF, StopCause.SHUTDOWN, restart_token=domain.restart_token
            )
        elif a in (A.START, A.REBOOT) and domain is not None:
            domain = make_domain(DomainState.RUNNING, restart_token=domain.restart_token)
        elif a == A.DESTROY and domain is not None:
            domain = make_domain(
                DomainState.SHUTOFF, StopCause.DESTROYED, restart_token=domain.restart_token
            )
        elif a == A.MARK_RESTARTED and domain is not None:
            domain = make_domain(domain.state, domain.cause, restart_token=token)
        elif a == A.UNDEFINE:
            domain = None
    return domain


@pytest.mark.parametrize("strategy", list(RunStrategy))
@pytest.mark.parametrize(
    "start",
    [None, RUNNING, CLEAN_OFF, CRASHED_OFF, CRASHED],
    ids=lambda d: getattr(d, "state", "none"),
)
def test_a_second_pass_on_the_result_asks_for_nothing(
    strategy: RunStrategy, start: Domain | None
) -> None:
    w = wish(strategy, restart_token="t")
    first = decide(w, start, None, NOW)
    after = _apply(first.actions, start, "t")
    assert decide(w, after, first.stopping_since, NOW).actions == ()


class TestReportedPhase:
    @pytest.mark.parametrize(
        ("strategy", "domain", "stopping", "phase"),
        [
            (RunStrategy.ALWAYS, None, False, VMPhase.STARTING),
            (RunStrategy.HALTED, None, False, VMPhase.STOPPED),
            (RunStrategy.ALWAYS, RUNNING, False, VMPhase.RUNNING),
            (RunStrategy.HALTED, RUNNING, True, VMPhase.STOPPING),
            (RunStrategy.HALTED, CLEAN_OFF, False, VMPhase.STOPPED),
            (RunStrategy.MANUAL, CLEAN_OFF, False, VMPhase.STOPPED),
            (RunStrategy.MANUAL, CRASHED_OFF, False, VMPhase.FAILED),
            (RunStrategy.RERUN_ON_FAILURE, CRASHED_OFF, False, VMPhase.STARTING),
            (RunStrategy.ALWAYS, make_domain(DomainState.SHUTTING_DOWN), False, VMPhase.STOPPING),
        ],
    )
    def test_phase(
        self, strategy: RunStrategy, domain: Domain | None, stopping: bool, phase: VMPhase
    ) -> None:
        assert report(wish(strategy), domain, stopping).phase == phase

    def test_a_deleted_vm_reports_deleting(self) -> None:
        assert report(wish(deleting=True), RUNNING, False).phase == VMPhase.DELETING

    def test_a_crash_says_so_in_the_reason(self) -> None:
        assert "crashed" in report(wish(RunStrategy.MANUAL), CRASHED_OFF, False).reason


class TestOrphans:
    def test_owned_domains_of_vms_not_bound_here_are_orphans_removed_after_the_grace(
        self,
    ) -> None:
        orphan = make_domain(uid="gone", name="team-a_old")
        mine = make_domain()
        foreign = make_domain(owned=False, name="someone-elses")
        first = scan_orphans([orphan, mine, foreign], {UID}, {}, NOW, grace_seconds=60)
        assert first.new == ("team-a_old",)
        assert first.remove == ()
        later = NOW + dt.timedelta(seconds=61)
        second = scan_orphans([orphan, mine, foreign], {UID}, first.first_seen, later, 60)
        assert second.new == ()
        assert second.remove == ("team-a_old",)

    def test_an_orphan_whose_vm_came_back_is_forgotten(self) -> None:
        orphan = make_domain(uid="back", name="team-a_back")
        first = scan_orphans([orphan], set(), {}, NOW, 60)
        second = scan_orphans([orphan], {"back"}, first.first_seen, NOW, 60)
        assert second.first_seen == {}
        assert second.remove == ()
