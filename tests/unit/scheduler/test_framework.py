"""The cycle: search, score, tie-break, assume / confirm / forget, explanations."""

from __future__ import annotations

import pytest

from kubenova.scheduler import framework, model
from kubenova.scheduler.cache import CacheError
from kubenova.scheduler.explain import Reason
from tests.unit.scheduler.builders import (
    FakeClock,
    make_host,
    make_pool,
    make_scheduler,
    make_size,
    make_vm,
)

pytestmark = pytest.mark.unit


def placed(r: framework.Decision | framework.Unschedulable) -> framework.Decision:
    assert isinstance(r, framework.Decision), r
    return r


def refused(r: framework.Decision | framework.Unschedulable) -> framework.Unschedulable:
    assert isinstance(r, framework.Unschedulable), r
    return r


def hosts_with_free_memory(*gib: int) -> list[model.HostInfo]:
    return [make_host(f"h{g}", mem_gib=g) for g in gib]


class TestPlacement:
    def test_pack_takes_the_smallest_host_that_fits(self) -> None:
        s = make_scheduler(hosts_with_free_memory(8, 16, 64, 128), [make_pool()])
        assert placed(s.schedule(make_vm("v", size=make_size(mem_gib=12)))).host == "h16"

    def test_spread_takes_the_emptiest_host(self) -> None:
        pool = make_pool(weights=model.Weights(pack=0, spread=1))
        s = make_scheduler(hosts_with_free_memory(8, 16, 64, 128), [pool])
        assert placed(s.schedule(make_vm("v"))).host == "h128"

    def test_load_aware_avoids_the_hot_host(self) -> None:
        pool = make_pool(weights=model.Weights(pack=0, spread=0, load=1))
        s = make_scheduler([make_host("hot"), make_host("cool")], [pool])
        s.cache.report_load("hot", 95.0, 50.0, at=1000.0)
        s.cache.report_load("cool", 10.0, 10.0, at=1000.0)
        assert placed(s.schedule(make_vm("v"))).host == "cool"

    def test_the_search_walks_past_hosts_that_fail_other_filters(self) -> None:
        hosts = [make_host("small", mem_gib=8, labels={"ssd": "n"}), make_host("big", mem_gib=64)]
        s = make_scheduler(hosts, [make_pool()])
        d = placed(s.schedule(make_vm("v", node_selector={"kubenova.io/hostname": "big"})))
        assert d.host == "big" and d.examined == 2

    def test_cordoned_not_ready_and_tainted_hosts_are_not_even_examined(self) -> None:
        hosts = [
            make_host("cordoned", mem_gib=8, unschedulable=True),
            make_host("down", mem_gib=8, ready=False),
            make_host("tainted", mem_gib=8, taints=[model.Taint("gpu")]),
            make_host("big", mem_gib=64),
        ]
        s = make_scheduler(hosts, [make_pool()])
        d = placed(s.schedule(make_vm("v")))
        assert d.host == "big" and d.examined == 1
        d = placed(s.schedule(make_vm("w", tolerations=[model.Toleration("gpu", exists=True)])))
        assert d.host == "tainted" and d.examined == 2
        s.cache.upsert_host(make_host("cordoned", mem_gib=8))
        assert placed(s.schedule(make_vm("x"))).host == "cordoned"

    def test_ties_are_broken_at_random_with_the_injected_rng(self) -> None:
        hosts = [make_host(f"h{i}") for i in range(3)]
        seen = set()
        for seed in range(20):
            s = make_scheduler(hosts, [make_pool()], seed=seed)
            seen.add(placed(s.schedule(make_vm("v"))).host)
        assert seen == {"h0", "h1", "h2"}
        again = {placed(make_scheduler(hosts, [make_pool()], seed=7).schedule(make_vm("v"))).host}
        assert len(again) == 1

    def test_decisions_agree_with_a_full_scan(self) -> None:
        hosts = [
            make_host(f"h{i}", mem_gib=16 * (i % 5 + 1), unschedulable=i % 7 == 0)
            for i in range(30)
        ]
        s = make_scheduler(hosts, [make_pool()])
        for i in range(80):
            vm = make_vm(f"v{i}", size=make_size(vcpus=4, mem_gib=8 + i % 3 * 8))
            feasible = s.feasible_by_scan(vm)
            assert isinstance(feasible, list)
            r = s.schedule(vm)
            if feasible:
                assert placed(r).host in {e.name for e in feasible}
            else:
                refused(r)


class TestAssume:
    def test_an_assumed_vm_is_counted_at_once_so_nothing_double_books(self) -> None:
        s = make_scheduler([make_host("h1", mem_gib=8)], [make_pool()])
        placed(s.schedule(make_vm("a", size=make_size(mem_gib=6))))
        r = refused(s.schedule(make_vm("b", size=make_size(mem_gib=6))))
        assert r.message == "0/1 hosts: 1 insufficient memory"

    def test_forget_after_a_failed_bind_frees_the_room_and_is_idempotent(self) -> None:
        s = make_scheduler([make_host("h1", mem_gib=8)], [make_pool()])
        placed(s.schedule(make_vm("a", size=make_size(mem_gib=6))))
        assert s.cache.forget("team/a") is True
        assert s.cache.forget("team/a") is False
        assert s.cache.hosts["h1"].used_mem == 0
        placed(s.schedule(make_vm("b", size=make_size(mem_gib=6))))

    def test_a_confirmed_vm_cannot_be_forgotten(self) -> None:
        s = make_scheduler([make_host("h1")], [make_pool()])
        placed(s.schedule(make_vm("a")))
        assert s.cache.confirm("team/a") and s.cache.confirm("team/a")
        assert s.cache.forget("team/a") is False
        assert "team/a" in s.cache.allocations

    def test_the_informer_seeing_the_bind_confirms_the_assumption(self) -> None:
        s = make_scheduler([make_host("h1"), make_host("h2")], [make_pool()])
        vm = make_vm("a")
        d = placed(s.schedule(vm))
        s.cache.add_vm(vm, d.host, d.gpus)
        assert s.cache.allocations["team/a"].assumed is False
        other = "h2" if d.host == "h1" else "h1"
        s.cache.add_vm(vm, other)  # bound elsewhere after all: the informer wins
        assert s.cache.allocations["team/a"].host == other
        assert s.cache.hosts[d.host].used_mem == 0

    def test_assume_is_idempotent_on_the_same_host_and_refuses_another(self) -> None:
        s = make_scheduler([make_host("h1"), make_host("h2")], [make_pool()])
        vm = make_vm("a")
        s.cache.assume(vm, "h1", 0.0)
        s.cache.assume(vm, "h1", 0.0)
        assert s.cache.hosts["h1"].used_cpu == 2
        with pytest.raises(CacheError, match="team/a is already placed on host h1"):
            s.cache.assume(vm, "h2", 0.0)

    def test_scheduling_a_vm_already_counted_returns_its_placement(self) -> None:
        s = make_scheduler([make_host("h1"), make_host("h2")], [make_pool()])
        first = placed(s.schedule(make_vm("a")))
        again = placed(s.schedule(make_vm("a")))
        assert (again.host, again.examined) == (first.host, 0)
        assert sum(e.used_cpu for e in s.cache.hosts.values()) == 2

    def test_assumptions_never_bound_expire(self) -> None:
        clock = FakeClock(0.0)
        s = make_scheduler([make_host("h1")], [make_pool()], clock=clock)
        placed(s.schedule(make_vm("a")))
        clock.advance(10)
        placed(s.schedule(make_vm("b")))
        assert s.cache.expired_assumptions(clock.now + 25, ttl=30.0) == ["team/a"]


class TestExplanations:
    def test_one_line_counts_each_reason_largest_first(self) -> None:
        hosts = [make_host(f"s{i}", mem_gib=2) for i in range(5)]
        hosts += [make_host(f"c{i}", unschedulable=True) for i in range(2)]
        hosts += [make_host(f"g{i}", labels={"pool": "gpu"}) for i in range(3)]
        hosts += [make_host("t", taints=[model.Taint("k")]), make_host("d", ready=False)]
        s = make_scheduler(hosts, [make_pool(), make_pool("gpu")])
        r = refused(s.schedule(make_vm("v")))
        assert r.message == (
            "0/12 hosts: 5 insufficient memory, 3 not in pool general, 2 cordoned, "
            "1 not ready, 1 untolerated taint"
        )
        assert r.counts == {
            Reason.INSUFFICIENT_MEMORY: 5,
            Reason.NOT_IN_POOL: 3,
            Reason.CORDONED: 2,
            Reason.NOT_READY: 1,
            Reason.TAINTED: 1,
        }

    def test_hosts_the_search_visits_are_counted_by_their_first_failing_filter(self) -> None:
        hosts = [make_host("a", cpus=1), make_host("b", labels={"zone": "x"}), make_host("c")]
        s = make_scheduler(hosts, [make_pool()])
        s.cache.add_vm(make_vm("full", size=make_size(vcpus=31)), "c")
        vm = make_vm("v", node_selector={"zone": "y"}, tolerations=[model.Toleration("k")])
        r = refused(s.schedule(vm))
        assert r.message == "0/3 hosts: 2 insufficient cpu, 1 node selector mismatch"

    def test_an_empty_cluster_says_so(self) -> None:
        s = make_scheduler([], [make_pool()])
        assert refused(s.schedule(make_vm("v"))).message == "0/0 hosts"
