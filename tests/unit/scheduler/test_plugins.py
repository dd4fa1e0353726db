"""Each plugin on its own, through a scheduler built from fixtures and `Scheduler.check`."""

from __future__ import annotations

import dataclasses

import pytest

from kubenova.scheduler import model
from kubenova.scheduler.explain import Reason
from kubenova.scheduler.framework import Scheduler
from kubenova.scheduler.plugins import base, scores
from tests.unit.scheduler.builders import (
    FakeClock,
    make_host,
    make_pool,
    make_scheduler,
    make_size,
    make_vm,
)

pytestmark = pytest.mark.unit


class TestFit:
    @pytest.mark.parametrize(
        ("size", "reason"),
        [
            (make_size(vcpus=33), Reason.INSUFFICIENT_CPU),
            (make_size(mem_gib=129), Reason.INSUFFICIENT_MEMORY),
            (make_size(disk_gib=1001), Reason.INSUFFICIENT_DISK),
            (make_size(gpus={"a100": 1}), Reason.INSUFFICIENT_GPU),
            (make_size(vcpus=32, mem_gib=128, disk_gib=1000), None),
        ],
    )
    def test_each_resource_is_checked(self, size: model.Size, reason: Reason | None) -> None:
        s = make_scheduler([make_host("h1")], [make_pool()])
        assert s.check(make_vm("v", size=size), "h1") is reason

    def test_overcommit_multiplies_cpu_and_memory_but_not_disk(self) -> None:
        s = make_scheduler([make_host("h1")], [make_pool(cpu_ratio=4.0, memory_ratio=1.5)])
        assert s.check(make_vm("v", size=make_size(vcpus=128, mem_gib=192)), "h1") is None
        assert s.check(make_vm("v", size=make_size(vcpus=129)), "h1") is Reason.INSUFFICIENT_CPU
        big_disk = make_size(disk_gib=1001)
        assert s.check(make_vm("v", size=big_disk), "h1") is Reason.INSUFFICIENT_DISK

    def test_a_host_in_two_pools_gets_the_stricter_ratio(self) -> None:
        pools = [
            make_pool("a", labels={"x": "1"}, cpu_ratio=4.0),
            make_pool("b", labels={"y": "1"}, cpu_ratio=2.0),
        ]
        s = make_scheduler([make_host("h1", labels={"x": "1", "y": "1"})], pools)
        assert s.cache.hosts["h1"].alloc_cpu == 64

    def test_gpus_are_counted_per_device_and_model(self) -> None:
        gpus = [("a100", "0000:01:00.0"), ("a100", "0000:02:00.0"), ("t4", "0000:03:00.0")]
        s = make_scheduler([make_host("h1", gpus=gpus)], [make_pool()])
        two = make_size(gpus={"a100": 2})
        assert s.check(make_vm("v", size=make_size(gpus={"a100": 3})), "h1") is (
            Reason.INSUFFICIENT_GPU
        )
        d = s.schedule(make_vm("v1", size=two))
        assert d.host == "h1" and d.gpus == ("0000:01:00.0", "0000:02:00.0")  # type: ignore[union-attr]
        assert s.check(make_vm("v2", size=make_size(gpus={"a100": 1})), "h1") is (
            Reason.INSUFFICIENT_GPU
        )
        assert s.check(make_vm("v3", size=make_size(gpus={"t4": 1})), "h1") is None


class TestHealth:
    def test_cordoned_and_not_ready_hosts_take_no_vms(self) -> None:
        hosts = [make_host("c", unschedulable=True), make_host("n", ready=False)]
        s = make_scheduler(hosts, [make_pool()])
        assert s.check(make_vm("v"), "c") is Reason.CORDONED
        assert s.check(make_vm("v"), "n") is Reason.NOT_READY

    def test_a_stale_heartbeat_removes_the_host_until_the_next_one(self) -> None:
        clock = FakeClock(1000.0)
        s = make_scheduler([make_host("h1", heartbeat_at=1000.0)], [make_pool()], clock=clock)
        clock.advance(40.0)
        assert s.check(make_vm("v"), "h1") is None
        clock.advance(0.5)
        assert s.check(make_vm("v"), "h1") is Reason.HEARTBEAT_STALE
        s.cache.heartbeat("h1", clock.now)
        assert s.check(make_vm("v"), "h1") is None

    def test_a_heartbeat_lasts_as_long_as_the_hosts_own_lease(self) -> None:
        clock = FakeClock(1000.0)
        slow = dataclasses.replace(make_host("h1"), heartbeat_max_age=400.0)
        s = make_scheduler([slow, make_host("h2")], [make_pool()], clock=clock)
        clock.advance(100.0)  # renewed every 100 s: fresh, where a 40 s Lease has run out
        assert s.check(make_vm("v"), "h1") is None
        assert s.check(make_vm("v"), "h2") is Reason.HEARTBEAT_STALE
        clock.advance(300.5)
        assert s.check(make_vm("v"), "h1") is Reason.HEARTBEAT_STALE
        s.cache.heartbeat("h1", clock.now)
        clock.advance(399.0)
        assert s.check(make_vm("v"), "h1") is None


class TestTaints:
    def test_a_vm_needs_a_toleration_for_every_taint(self) -> None:
        taints = [model.Taint("gpu", "yes"), model.Taint("maint", "", model.TaintEffect.NO_EXECUTE)]
        s = make_scheduler([make_host("h1", taints=taints)], [make_pool()])
        one = [model.Toleration("gpu", value="yes")]
        both = [*one, model.Toleration("maint", exists=True)]
        wrong_value = [model.Toleration("gpu", value="no"), model.Toleration("maint", exists=True)]
        assert s.check(make_vm("v"), "h1") is Reason.TAINTED
        assert s.check(make_vm("v", tolerations=one), "h1") is Reason.TAINTED
        assert s.check(make_vm("v", tolerations=wrong_value), "h1") is Reason.TAINTED
        assert s.check(make_vm("v", tolerations=both), "h1") is None


class TestNodeSelector:
    def test_every_selected_label_must_match(self) -> None:
        s = make_scheduler([make_host("h1", labels={"zone": "a", "ssd": "y"})], [make_pool()])
        assert s.check(make_vm("v", node_selector={"zone": "a", "ssd": "y"}), "h1") is None
        assert s.check(make_vm("v", node_selector={"zone": "b"}), "h1") is Reason.NODE_SELECTOR
        assert s.check(make_vm("v", node_selector={"gpu": "y"}), "h1") is Reason.NODE_SELECTOR


class TestPool:
    def test_a_dedicated_pool_refuses_other_namespaces_with_one_line(self) -> None:
        s = make_scheduler([make_host("h1")], [make_pool(namespaces=["bank"])])
        r = s.schedule(make_vm("v", namespace="shop"))
        assert r.message == "0/1 hosts: pool general is dedicated to other namespaces"  # type: ignore[union-attr]
        assert s.check(make_vm("v", namespace="bank"), "h1") is None

    def test_hosts_outside_the_pool_are_refused(self) -> None:
        s = make_scheduler(
            [make_host("h1"), make_host("g1", labels={"pool": "gpu"})],
            [make_pool(), make_pool("gpu")],
        )
        assert s.check(make_vm("v"), "g1") is Reason.NOT_IN_POOL
        assert s.check(make_vm("v", pool="gpu"), "g1") is None

    def test_an_unknown_pool_is_explained(self) -> None:
        s = make_scheduler([make_host("h1")], [make_pool()])
        r = s.schedule(make_vm("v", pool="nope"))
        assert r.message == "0/1 hosts: pool nope does not exist"  # type: ignore[union-attr]


def rack_hosts() -> list[model.HostInfo]:
    return [make_host(f"h{i}", labels={"rack": f"r{i // 2}"}) for i in range(4)]


class TestGroups:
    def test_anti_affinity_on_hostname_allows_one_per_host(self) -> None:
        s = make_scheduler(rack_hosts(), [make_pool()])
        rule = model.GroupRule("db", "kubenova.io/hostname")
        s.cache.add_vm(make_vm("a", groups=["db"]), "h0")
        vm = make_vm("b", groups=["db"], anti_affinity=[rule])
        assert s.check(vm, "h0") is Reason.ANTI_AFFINITY
        assert s.check(vm, "h1") is None

    def test_anti_affinity_spreads_over_a_rack_label_up_to_max_per_domain(self) -> None:
        s = make_scheduler(rack_hosts(), [make_pool()])
        rule = model.GroupRule("web", "rack", max_per_domain=2)
        s.cache.add_vm(make_vm("a", groups=["web"]), "h0")
        vm = make_vm("c", groups=["web"], anti_affinity=[rule])
        assert s.check(vm, "h1") is None
        s.cache.add_vm(make_vm("b", groups=["web"]), "h1")
        assert s.check(vm, "h0") is Reason.ANTI_AFFINITY
        assert s.check(vm, "h1") is Reason.ANTI_AFFINITY
        assert s.check(vm, "h2") is None

    def test_groups_are_per_namespace(self) -> None:
        s = make_scheduler(rack_hosts(), [make_pool()])
        s.cache.add_vm(make_vm("a", namespace="other", groups=["db"]), "h0")
        vm = make_vm("b", groups=["db"], anti_affinity=[model.GroupRule("db", "rack")])
        assert s.check(vm, "h0") is None

    def test_a_host_without_the_topology_label_is_in_no_domain(self) -> None:
        s = make_scheduler([make_host("h1")], [make_pool()])
        vm = make_vm("b", anti_affinity=[model.GroupRule("db", "rack")])
        assert s.check(vm, "h1") is Reason.ANTI_AFFINITY

    def test_affinity_lands_next_to_the_group_once_it_has_members(self) -> None:
        s = make_scheduler(rack_hosts(), [make_pool()])
        vm = make_vm("b", affinity=[model.GroupRule("cache", "rack")])
        assert s.check(vm, "h3") is None  # an empty group does not block its first VM
        s.cache.add_vm(make_vm("a", groups=["cache"]), "h2")
        assert s.check(vm, "h3") is None
        assert s.check(vm, "h0") is Reason.AFFINITY


def score_of(plugin: base.Score, s: Scheduler, host: str, vm: model.VMRequest) -> float:
    state = s.prepare(vm)
    assert isinstance(state, base.CycleState)
    return plugin.score(state, s.cache.hosts[host])


class TestScores:
    def test_pack_prefers_the_fuller_host_and_spread_the_emptier(self) -> None:
        s = make_scheduler([make_host("full"), make_host("empty")], [make_pool()])
        s.cache.add_vm(make_vm("x", size=make_size(vcpus=16, mem_gib=64)), "full")
        vm = make_vm("v")
        assert score_of(scores.Pack(), s, "full", vm) > score_of(scores.Pack(), s, "empty", vm)
        assert score_of(scores.Spread(), s, "full", vm) < score_of(scores.Spread(), s, "empty", vm)

    def test_load_counts_the_latest_report_and_a_decaying_peak(self) -> None:
        clock = FakeClock(1000.0)
        s = make_scheduler([make_host("a"), make_host("b")], [make_pool()], clock=clock)
        s.cache.report_load("a", 90.0, 10.0, at=1000.0)
        s.cache.report_load("a", 20.0, 10.0, at=1000.0)
        s.cache.report_load("b", 30.0, 10.0, at=1000.0)
        vm = make_vm("v")
        # a is cooler now but its peak of 90 still counts against it.
        assert score_of(scores.Load(), s, "a", vm) < score_of(scores.Load(), s, "b", vm)
        clock.advance(4 * 3600.0)  # four half-lives: the peak has faded to ~5.6
        assert score_of(scores.Load(), s, "a", vm) > score_of(scores.Load(), s, "b", vm)

    def test_min_max_normalises_to_0_100_and_flat_scores_to_0(self) -> None:
        assert base.min_max([1.0, 3.0, 2.0]) == [0.0, 100.0, 50.0]
        assert base.min_max([5.0, 5.0]) == [0.0, 0.0]
