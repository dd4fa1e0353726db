from __future__ import annotations

import pytest

from kubenova.scheduler import framework, model
from kubenova.scheduler.status import pool_status
from tests.unit.scheduler.builders import (
    FakeClock,
    make_host,
    make_pool,
    make_scheduler,
    make_size,
    make_vm,
)

pytestmark = pytest.mark.unit

POPULAR = model.FlavorInfo("popular", make_size(vcpus=4, mem_gib=16))
OTHER = model.FlavorInfo("other", make_size(vcpus=4, mem_gib=16))


def reserved_scheduler(count: int = 2, hosts: int = 2) -> framework.Scheduler:
    s = make_scheduler(
        [make_host(f"h{i}", cpus=16, mem_gib=32) for i in range(hosts)],
        [make_pool(reservations={"popular": count})],
        [POPULAR, OTHER],
    )
    assert s.refill_reservations("general") == 0
    return s


def vm_of(flavor: model.FlavorInfo, name: str) -> model.VMRequest:
    return make_vm(name, flavor=flavor.name, size=flavor.size)


def test_slots_hold_room_that_other_flavors_cannot_eat() -> None:
    s = reserved_scheduler(count=2, hosts=2)  # 4 VMs of 16 GiB fit; 2 are kept for popular
    assert isinstance(s.schedule(vm_of(OTHER, "o1")), framework.Decision)
    assert isinstance(s.schedule(vm_of(OTHER, "o2")), framework.Decision)
    r = s.schedule(vm_of(OTHER, "o3"))
    assert isinstance(r, framework.Unschedulable)
    assert "insufficient memory" in r.message


def test_a_vm_of_the_flavor_claims_a_slot_and_the_pool_tops_up() -> None:
    s = reserved_scheduler(count=1, hosts=2)
    d = s.schedule(vm_of(POPULAR, "p1"))
    assert isinstance(d, framework.Decision) and d.reservation is not None
    assert s.cache.allocations["team/p1"].assumed
    assert s.reservations.held("general", "popular") == 1  # a new slot replaced it
    assert sum(a.slot for a in s.cache.allocations.values()) == 1


def test_a_slot_on_a_host_the_vm_refuses_is_not_claimed() -> None:
    s = reserved_scheduler(count=1, hosts=2)
    slot_host = next(a.host for a in s.cache.allocations.values() if a.slot)
    vm = make_vm(
        "p1", flavor="popular", size=POPULAR.size, node_selector={"kubenova.io/hostname": "x"}
    )
    r = s.schedule(vm)
    assert isinstance(r, framework.Unschedulable)
    assert s.reservations.held("general", "popular") == 1
    assert slot_host in s.cache.hosts


def test_slots_move_off_removed_and_cordoned_hosts_on_refill() -> None:
    s = reserved_scheduler(count=1, hosts=3)
    first = next(a.host for a in s.cache.allocations.values() if a.slot)
    s.cache.remove_host(first)
    assert s.refill_reservations("general") == 0
    second = next(a.host for a in s.cache.allocations.values() if a.slot)
    assert second != first
    s.cache.upsert_host(make_host(second, cpus=16, mem_gib=32, unschedulable=True))
    assert s.refill_reservations("general") == 0
    third = next(a.host for a in s.cache.allocations.values() if a.slot)
    assert third not in {first, second}


def test_refill_reports_slots_it_cannot_place() -> None:
    s = make_scheduler(
        [make_host("h0", cpus=16, mem_gib=32)],
        [make_pool(reservations={"popular": 5})],
        [POPULAR],
    )
    assert s.refill_reservations("general") == 3


def test_status_counts_how_many_more_of_each_flavor_fit() -> None:
    clock = FakeClock()
    s = reserved_scheduler(count=1, hosts=2)
    st = pool_status(s.cache, "general", clock.now)
    assert st is not None
    # 64 GiB in all, 16 GiB held by the popular slot: 3 more of other, 3 + 1 of popular.
    assert st.available == {"other": 3, "popular": 4}
    assert st.reserved.memory_mib == 16 * 1024
    assert st.allocated.memory_mib == 0
    assert (st.hosts, st.ready_hosts, st.capacity.vcpus) == (2, 2, 32)


def test_vms_another_leader_bound_push_slots_off_a_host_instead_of_over_committing_it() -> None:
    """Each replica places its own slots. When the informer reports VMs that the previous
    leader bound onto the host where this replica holds a slot, the slot must give way: a VM
    claiming it later would over-allocate the host for real (seen in the chaos run)."""
    s = reserved_scheduler(count=1, hosts=2)  # 32 GiB hosts: two VMs of 16 GiB each
    (slot,) = [a for a in s.cache.allocations.values() if a.slot]
    for i in range(2):
        s.cache.add_vm(vm_of(POPULAR, f"bound-elsewhere-{i}"), slot.host)
    full = s.cache.hosts[slot.host]
    assert full.free_mem == 0 and full.allocations == {
        "team/bound-elsewhere-0",
        "team/bound-elsewhere-1",
    }
    assert s.refill_reservations("general") == 0, "the slot is placed again"
    (moved,) = [a for a in s.cache.allocations.values() if a.slot]
    assert moved.host != slot.host
    placed = s.schedule(vm_of(POPULAR, "new"))
    assert isinstance(placed, framework.Decision) and placed.host != slot.host
    for e in s.cache.hosts.values():
        assert e.free_mem >= 0 and e.free_cpu >= 0, e.name
