from __future__ import annotations

import pytest

from kubenova.scheduler import framework, model
from kubenova.scheduler.rebalance import MigrationLedger, plan
from tests.unit.scheduler.builders import make_host, make_pool, make_scheduler, make_size, make_vm

pytestmark = pytest.mark.unit

ON = model.RebalanceSettings(
    enabled=True, cpu_threshold=80.0, memory_threshold=85.0, max_migrations_per_hour=10
)


def loaded(
    loads: dict[str, float], vms_per_host: int = 4
) -> tuple[framework.Scheduler, dict[str, model.VMRequest]]:
    s = make_scheduler([make_host(h, cpus=32) for h in loads], [make_pool(rebalance=ON)])
    vms = {}
    for h, cpu in loads.items():
        for i in range(vms_per_host):
            vm = make_vm(f"{h}-{i}", size=make_size(vcpus=4, mem_gib=8))
            s.cache.add_vm(vm, h)
            vms[vm.key] = vm
        s.cache.report_load(h, cpu, 30.0, at=1000.0)
    return s, vms


def run(
    s: framework.Scheduler, vms: dict[str, model.VMRequest], ledger: MigrationLedger
) -> list[tuple[str, str]]:
    moves = plan(s.cache, "general", ON, vms, s.check, ledger, now=1000.0)
    return [(m.source, m.target) for m in moves]


def test_the_hot_host_is_cooled_onto_the_coolest_host_without_making_it_hot() -> None:
    s, vms = loaded({"hot": 96.0, "warm": 60.0, "cool": 10.0})
    moves = run(s, vms, MigrationLedger())
    # Each VM is ~24% of the hot host: one move brings it to 72%; the target stays cool.
    assert moves == [("hot", "cool")]


def test_no_target_that_would_become_hot() -> None:
    s, vms = loaded({"hot": 96.0, "warm": 70.0})
    assert run(s, vms, MigrationLedger()) == []


def test_the_budget_bounds_the_plan() -> None:
    s, vms = loaded({"a": 99.0, "b": 99.0, "c": 0.0, "d": 0.0, "e": 0.0})
    ledger = MigrationLedger()
    for i in range(ON.max_migrations_per_hour - 1):
        ledger.record(f"team/x{i}", "general", "z", at=900.0)
    assert len(run(s, vms, ledger)) == 1


def test_a_vm_moved_recently_or_back_to_where_it_was_is_left_alone() -> None:
    s, vms = loaded({"hot": 96.0, "cool": 10.0}, vms_per_host=1)
    ledger = MigrationLedger(cooldown=600.0)
    ledger.record("team/hot-0", "general", "cool", at=900.0)
    assert run(s, vms, ledger) == []  # moved 100 s ago
    ledger.prune(now=5000.0)
    ledger.record("team/hot-0", "general", "cool", at=0.0)  # long ago, but it came from cool
    assert run(s, vms, ledger) == []


def test_targets_must_pass_the_filters() -> None:
    s, vms = loaded({"hot": 96.0, "cool": 10.0})
    s.cache.upsert_host(make_host("cool", cpus=32, unschedulable=True))
    assert run(s, vms, MigrationLedger()) == []


def test_a_disabled_pool_plans_nothing() -> None:
    s, vms = loaded({"hot": 96.0, "cool": 10.0})
    off = model.RebalanceSettings(enabled=False)
    assert plan(s.cache, "general", off, vms, s.check, MigrationLedger(), now=1000.0) == []
