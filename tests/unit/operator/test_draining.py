"""How each VM leaves a drained host."""

from __future__ import annotations

import pytest

from kubenova.api import VirtualMachine, constants
from kubenova.operator.draining import Plan, plan
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
        "stopped": "blocked",
        "failed": "blocked",
        "starting": "wait",
        "migrating": "wait",
        "deleting": "wait",
    }
    assert not p.drained
    assert p.summary() == "2 blocked, 1 migrate, 1 shut-down, 3 wait"


def test_a_vm_with_a_migration_in_flight_is_not_migrated_again() -> None:
    p = plan("h1", [make_vm("live")], migrating={"team/live"}, failed_attempts={})
    assert moves(p) == {"live": "wait"}


def test_a_vm_shutting_down_for_this_drain_waits() -> None:
    vm = make_vm(
        "shut", evictionStrategy="Shutdown", annotations={constants.ANNOTATION_EVICT: "h1"}
    )
    assert moves(plan("h1", [vm], set(), {})) == {"shut": "wait"}


def test_after_failed_migrations_the_drain_is_blocked_saying_what_to_do() -> None:
    p = plan("h1", [make_vm("live")], set(), {"team/live": 3}, max_attempts=3)
    assert [s.vm.metadata.name for s in p.blocked] == ["live"]
    assert "3 live migrations failed" in p.steps[0].why
    assert "evictionStrategy Shutdown" in p.steps[0].why


GPU = {"vcpus": 2, "memory": "4Gi", "disk": "10Gi", "gpus": {"nvidia-a100": 1}}


def test_gpu_vms_that_should_migrate_live_block_the_drain() -> None:
    vm = make_vm("gpu", resources=GPU)
    p = plan("h1", [vm], set(), {})
    assert moves(p) == {"gpu": "blocked"}
    assert "GPUs cannot migrate live" in p.steps[0].why


def test_gpu_vms_whose_owner_allows_a_shutdown_shut_down() -> None:
    vm = make_vm("gpu", resources=GPU, evictionStrategy="Shutdown")
    assert moves(plan("h1", [vm], set(), {})) == {"gpu": "shut-down"}


def test_an_empty_host_is_drained() -> None:
    p = plan("h1", [], set(), {})
    assert p.drained and p.summary() == "no VMs left"


def _diskless(vm: VirtualMachine) -> VirtualMachine:
    """The VM booting a kernel instead of an image: nothing of it is written on its host."""
    spec = vm.spec.model_copy(update={"boot": vm.spec.boot.model_copy(update={"image": None})})
    return vm.model_copy(update={"spec": spec})


@pytest.mark.parametrize("phase", ["Stopped", "Failed"])
def test_a_stopped_vm_keeps_its_disk_and_blocks_the_drain_saying_why(phase: str) -> None:
    p = plan("h1", [make_vm("db", phase=phase, runStrategy="Halted")], set(), {})
    assert moves(p) == {"db": "blocked"}, "unbinding would recreate it from its image elsewhere"
    assert not p.drained
    assert "disk" in p.steps[0].why and "delete it" in p.steps[0].why


@pytest.mark.parametrize("strategy", ["Manual", "RerunOnFailure"])
def test_a_vm_the_guest_powered_off_is_not_moved_to_be_started_again(strategy: str) -> None:
    vm = _diskless(make_vm("off", phase="Stopped", runStrategy=strategy))
    p = plan("h1", [vm], set(), {})
    assert moves(p) == {"off": "blocked"}
    assert "would start again" in p.steps[0].why


def test_a_halted_vm_without_a_disk_moves_and_stays_stopped() -> None:
    vm = _diskless(make_vm("halted", phase="Stopped", runStrategy="Halted"))
    assert moves(plan("h1", [vm], set(), {})) == {"halted": "unbind"}


def test_a_vm_this_drain_shut_down_is_started_elsewhere() -> None:
    vm = make_vm(
        "shut",
        phase="Stopped",
        evictionStrategy="Shutdown",
        annotations={constants.ANNOTATION_EVICT: "h1"},
    )
    assert moves(plan("h1", [vm], set(), {})) == {"shut": "unbind"}
