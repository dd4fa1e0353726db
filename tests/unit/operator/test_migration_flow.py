"""The VMMigration state machine."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from kubenova.api import VMMigration, constants
from kubenova.api.migration import MigrationPhase
from kubenova.operator.migration_flow import Do, InFlight, Limits, in_flight, next_step
from tests.unit.operator.builders import T0, make_migration, make_vm

pytestmark = pytest.mark.unit
LIMITS = Limits(per_host=2, cluster=3)
OURS = {constants.ANNOTATION_MIGRATION: "m1", constants.ANNOTATION_MIGRATION_TARGET: "h2"}


def running(
    transfer: dict[str, str] | None = None,
    *,
    deleting: bool = False,
    finalizers: list[str] | None = None,
) -> VMMigration:
    """A migration under way from h1 to h2 since T0."""
    status: dict[str, Any] = {"sourceHost": "h1", "targetHost": "h2", "startTime": T0.isoformat()}
    if transfer:
        status["transfer"] = transfer
    return make_migration(phase="Running", status=status, deleting=deleting, finalizers=finalizers)


def test_a_running_vm_starts_migrating() -> None:
    step = next_step(make_migration(), make_vm(), True, InFlight(), LIMITS, T0)
    assert (step.do, step.target) == (Do.START, None)


def test_the_spec_target_is_passed_on() -> None:
    step = next_step(make_migration(target="h3"), make_vm(), True, InFlight(), LIMITS, T0)
    assert (step.do, step.target) == (Do.START, "h3")


@pytest.mark.parametrize(
    ("vm_phase", "do"),
    [("Starting", Do.WAIT), ("Scheduled", Do.WAIT), ("Stopped", Do.FAIL), ("Failed", Do.FAIL)],
)
def test_only_a_running_vm_migrates(vm_phase: str, do: Do) -> None:
    step = next_step(make_migration(), make_vm(phase=vm_phase), True, InFlight(), LIMITS, T0)
    assert step.do is do
    assert vm_phase in step.message


def test_a_missing_vm_fails_naming_the_field() -> None:
    step = next_step(make_migration(), None, True, InFlight(), LIMITS, T0)
    assert (step.do, step.phase) == (Do.FAIL, MigrationPhase.FAILED)
    assert "spec.vmName" in step.message


def test_the_target_cannot_be_the_source() -> None:
    step = next_step(make_migration(target="h1"), make_vm(), True, InFlight(), LIMITS, T0)
    assert step.do is Do.FAIL and "spec.targetHost" in step.message


def test_limits_keep_a_migration_pending() -> None:
    host_busy = InFlight(cluster=2, by_host={"h1": 2})
    cluster_busy = InFlight(cluster=3, by_host={"h9": 1})
    for busy, text in ((host_busy, "host h1"), (cluster_busy, "cluster")):
        step = next_step(make_migration(), make_vm(), True, busy, LIMITS, T0)
        assert step.do is Do.WAIT and text in step.message


def test_in_flight_counts_source_and_target_of_active_migrations_only() -> None:
    ms = {
        "team/a": running(),
        "team/b": make_migration("b", phase="Succeeded", status={"sourceHost": "h1"}),
        "team/c": make_migration("c"),
    }
    assert in_flight(ms) == InFlight(1, {"h1": 1, "h2": 1})
    assert in_flight(ms, besides="team/a") == InFlight(0, {})


def test_a_second_migration_of_the_same_vm_waits() -> None:
    vm = make_vm(annotations={constants.ANNOTATION_MIGRATION: "other"})
    step = next_step(make_migration(), vm, True, InFlight(), LIMITS, T0)
    assert step.do is Do.WAIT and "other" in step.message


def test_a_crash_between_marking_the_vm_and_the_status_resumes_the_start() -> None:
    vm = make_vm(phase="Migrating", annotations=OURS)
    step = next_step(make_migration(), vm, True, InFlight(), LIMITS, T0)
    assert (step.do, step.target) == (Do.START, "h2")


def test_a_completed_transfer_succeeds_even_after_a_cancel() -> None:
    vm = make_vm(phase="Migrating", annotations=OURS)
    m = running({"state": "Completed"}, deleting=True, finalizers=[constants.MIGRATION_FINALIZER])
    assert next_step(m, vm, True, InFlight(), LIMITS, T0).do is Do.SUCCEED


def test_a_failed_transfer_rolls_back_and_a_cancelled_one_says_so() -> None:
    vm = make_vm(phase="Migrating", annotations=OURS)
    failed = next_step(
        running({"state": "Failed", "message": "boom"}), vm, True, InFlight(), LIMITS, T0
    )
    cancelled = next_step(
        running({"state": "Failed"}, deleting=True), vm, True, InFlight(), LIMITS, T0
    )
    assert (failed.do, failed.phase, failed.message) == (
        Do.ROLL_BACK,
        MigrationPhase.FAILED,
        "boom",
    )
    assert (cancelled.do, cancelled.phase) == (Do.ROLL_BACK, MigrationPhase.CANCELLED)


def test_cancel_and_timeout_ask_the_agent_to_abort_once() -> None:
    vm = make_vm(phase="Migrating", annotations=OURS)
    cancel = next_step(running(deleting=True), vm, True, InFlight(), LIMITS, T0)
    late = T0 + dt.timedelta(seconds=601)
    timeout = next_step(running(), vm, True, InFlight(), LIMITS, late)
    on_time = next_step(running(), vm, True, InFlight(), LIMITS, T0 + dt.timedelta(seconds=599))
    asked = make_vm(
        phase="Migrating", annotations={**OURS, constants.ANNOTATION_MIGRATION_ABORT: "x"}
    )
    again = next_step(running(), asked, True, InFlight(), LIMITS, late)
    assert cancel.do is Do.ABORT and "cancelled" in cancel.message
    assert timeout.do is Do.ABORT and "timeoutSeconds=600" in timeout.message
    assert on_time.do is Do.WAIT
    assert again.do is Do.WAIT and "waiting for the agent" in again.message


def test_a_lost_source_is_waited_for_not_guessed() -> None:
    vm = make_vm(phase="Migrating", annotations=OURS)
    step = next_step(running(), vm, False, InFlight(), LIMITS, T0)
    assert step.do is Do.WAIT and "not ready" in step.message


def test_a_vm_already_repointed_finishes_as_success() -> None:
    vm = make_vm(phase="Running", host="h2")
    assert next_step(running(), vm, True, InFlight(), LIMITS, T0).do is Do.SUCCEED


def test_a_vm_that_left_migrating_otherwise_fails_the_migration() -> None:
    vm = make_vm(phase="Unknown", host="h1", annotations=OURS)
    step = next_step(running(), vm, False, InFlight(), LIMITS, T0)
    assert step.do is Do.FAIL and "Unknown" in step.message


def test_finished_migrations_release_their_finalizer_when_deleted() -> None:
    done = make_migration(
        phase="Succeeded", deleting=True, finalizers=[constants.MIGRATION_FINALIZER]
    )
    kept = make_migration(phase="Failed")
    assert next_step(done, None, True, InFlight(), LIMITS, T0).do is Do.RELEASE
    assert next_step(kept, None, True, InFlight(), LIMITS, T0).do is Do.WAIT
