"""How each VM leaves a drained host."""

from __future__ import annotations

import pytest

from kubenova.api import constants
from kubenova.operator.draining import Move, Plan, plan
from tests.unit.operator.builders import make_vm

pytestmark = pytest.mark.unit


def moves(p: Plan) -> dict[str, str]:
    return {s.vm.metadata.name: s.move.value for s in p.steps}


def test_each_vm_leaves_by_its_eviction_strategy() -> None:
    vms = [
        make_vm("live", evictionStrategy="LiveMigrate"),
        make_vm("shut", evictionStrategy="Shutdown"),
        make_vm("stopped", phase="Stopped"),
        make_vm("failed", phase="Failed", evictionStrategy="Shutdown"),
        make_vm("starting", phase="Starting"),
        make_vm("migrating", phase="Migrating"),
        make_vm("deleting", deleting=True),
    ]
    p = plan("h1", vms, migrating=set(), failed_attempts={})
    assert moves(p) == {
        "live": "migrate",
        "shut": "shut-down",
        "stopped": "unbind",
        "failed": "unbind",
        "starting": "wait",
        "migrating": "wait",
        "deleting": "wait",
    }
    assert not p.drained
    assert p.summary() == "1 migrate, 1 shut-down, 2 unbind, 3 wait"


def test_a_vm_with_a_migration_in_flight_is_not_migrated_again() -> None:
    p = plan("h1", [make_vm("live")], migrating={"team/live"}, failed_attempts={})
    assert moves(p) == {"live": "wait"}


def test_a_vm_shutting_down_for_this_drain_waits() -> None:
    vm = make_vm(
        "shut", evictionStrategy="Shutdown", annotations={constants.ANNOTATION_EVICT: "h1"}
    )
    assert moves(plan("h1", [vm], set(), {})) == {"shut": "wait"}


def test_after_failed_migrations_a_vm_shuts_down_so_the_drain_ends() -> None:
    p = plan("h1", [make_vm("live")], set(), {"team/live": 3}, max_attempts=3)
    assert p.of(Move.SHUT_DOWN)[0].metadata.name == "live"
    assert "3 live migrations failed" in p.steps[0].why


def test_gpu_vms_shut_down() -> None:
    vm = make_vm(
        "gpu",
        resources={"vcpus": 2, "memory": "4Gi", "disk": "10Gi", "gpus": {"nvidia-a100": 1}},
    )
    assert moves(plan("h1", [vm], set(), {})) == {"gpu": "shut-down"}


def test_an_empty_host_is_drained() -> None:
    p = plan("h1", [], set(), {})
    assert p.drained and p.summary() == "no VMs left"
