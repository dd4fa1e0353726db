"""The source agent's decisions during a live migration."""

from __future__ import annotations

import pytest

from kubenova.node_agent.hypervisor import DomainState, JobProgress
from kubenova.node_agent.transfer import Next, next_step, percent
from tests.unit.node_agent.builders import make_domain

pytestmark = pytest.mark.unit
JOB = JobProgress(data_total=1000, data_processed=300, data_remaining=700)


def test_a_running_domain_without_a_job_is_migrated() -> None:
    assert next_step(make_domain(), None, None).next is Next.MIGRATE


def test_a_job_left_from_before_an_agent_restart_is_watched_or_aborted() -> None:
    assert next_step(make_domain(), JOB, None).next is Next.WATCH
    step = next_step(make_domain(), JOB, "cancelled")
    assert (step.next, step.message) == (Next.ABORT, "cancelled")


def test_a_domain_gone_from_the_source_means_the_transfer_completed() -> None:
    assert next_step(None, None, None).next is Next.COMPLETED
    assert next_step(None, None, "cancelled").next is Next.COMPLETED  # too late to cancel


def test_an_abort_before_the_transfer_began_fails_it() -> None:
    step = next_step(make_domain(), None, "timed out")
    assert step.next is Next.FAILED and "timed out" in step.message


def test_a_stopped_domain_cannot_move_live() -> None:
    step = next_step(make_domain(DomainState.SHUTOFF), None, None)
    assert step.next is Next.FAILED and "shutoff" in step.message


def test_progress_follows_what_is_left_and_never_claims_done_early() -> None:
    assert percent(JOB) == 30
    assert percent(JobProgress(data_total=1000, data_processed=5000, data_remaining=0)) == 99
    assert percent(JobProgress(data_total=1000, data_processed=250)) == 25
    assert percent(JobProgress()) == 0
