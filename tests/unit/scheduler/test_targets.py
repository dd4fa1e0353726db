"""Choosing and reserving a live migration's target."""

from __future__ import annotations

import pytest

from kubenova.scheduler import targets
from kubenova.scheduler.framework import Decision, Unschedulable
from tests.unit.scheduler.builders import make_host, make_pool, make_scheduler, make_size, make_vm

pytestmark = pytest.mark.unit


def test_the_scheduler_picks_a_host_other_than_the_source() -> None:
    s = make_scheduler([make_host("a"), make_host("b", mem_gib=64)], [make_pool()])
    vm = make_vm("web")
    s.cache.add_vm(vm, "a")
    choice = targets.choose(s, vm, "a", None)
    assert isinstance(choice, Decision)
    assert choice.host == "b"


def test_an_explicit_target_goes_through_every_filter() -> None:
    s = make_scheduler(
        [make_host("a"), make_host("cordoned", unschedulable=True), make_host("small", mem_gib=2)],
        [make_pool()],
    )
    vm = make_vm("web", size=make_size(mem_gib=4))
    s.cache.add_vm(vm, "a")
    cordoned = targets.choose(s, vm, "a", "cordoned")
    small = targets.choose(s, vm, "a", "small")
    same = targets.choose(s, vm, "a", "a")
    assert isinstance(cordoned, Unschedulable) and "cordoned" in cordoned.message
    assert isinstance(small, Unschedulable) and "insufficient memory" in small.message
    assert isinstance(same, Unschedulable) and "already runs on a" in same.message


def test_hosts_at_their_migration_limit_are_skipped() -> None:
    s = make_scheduler([make_host("a"), make_host("b"), make_host("c")], [make_pool()])
    vm = make_vm("web")
    s.cache.add_vm(vm, "a")
    choice = targets.choose(s, vm, "a", None, host_ok=lambda h: h != "b")
    none_left = targets.choose(s, vm, "a", None, host_ok=lambda h: False)
    assert isinstance(choice, Decision) and choice.host == "c"
    assert isinstance(none_left, Unschedulable)
    assert "busy with migrations" in none_left.message


def test_gpu_vms_do_not_migrate_live() -> None:
    s = make_scheduler([make_host("a"), make_host("b")], [make_pool()])
    vm = make_vm("gpu", size=make_size(gpus={"nvidia-a100": 1}))
    choice = targets.choose(s, vm, "a", None)
    assert isinstance(choice, Unschedulable) and "GPUs" in choice.message


def test_the_target_room_is_held_during_the_transfer_and_counted_once_after() -> None:
    s = make_scheduler([make_host("a", mem_gib=8), make_host("b", mem_gib=8)], [make_pool()])
    vm = make_vm("web", size=make_size(vcpus=2, mem_gib=6))
    s.cache.add_vm(vm, "a")
    assert targets.reserve(s.cache, vm, "b", now=1.0)
    assert targets.reserve(s.cache, vm, "b", now=2.0)  # a new leader re-reserves: idempotent
    b = s.cache.hosts["b"]
    assert b.used_mem == 6 * 1024
    # Another VM of the same size cannot take b while the transfer holds it.
    other = make_vm("other", size=make_size(vcpus=2, mem_gib=6))
    assert isinstance(targets.choose(s, other, "a", "b"), Unschedulable)

    targets.complete(s.cache, vm, "b")
    assert (s.cache.hosts["a"].used_mem, b.used_mem) == (0, 6 * 1024)
    assert s.cache.allocations[vm.key].host == "b"
    assert targets.migration_key(vm.key) not in s.cache.allocations


def test_a_failed_transfer_frees_the_target() -> None:
    s = make_scheduler([make_host("a"), make_host("b")], [make_pool()])
    vm = make_vm("web")
    s.cache.add_vm(vm, "a")
    targets.reserve(s.cache, vm, "b", now=1.0)
    targets.release(s.cache, vm.key)
    targets.release(s.cache, vm.key)
    assert s.cache.hosts["b"].used_mem == 0
    assert s.cache.allocations[vm.key].host == "a"
