"""What the cache does when the informer reports a VM bound where it has no room: it counts
it (bound is bound) and says so, and the scheduler's own assumptions are settled safely."""

from __future__ import annotations

import pytest

from kubenova.scheduler.cache import CapacityCache
from tests.unit.scheduler.builders import make_host, make_pool, make_size, make_vm

pytestmark = pytest.mark.unit


def cache_with(*hosts: str, mem_gib: int = 8) -> CapacityCache:
    cache = CapacityCache()
    cache.upsert_pool(make_pool())
    for h in hosts:
        cache.upsert_host(make_host(h, cpus=4, mem_gib=mem_gib))
    return cache


BIG = make_size(vcpus=1, mem_gib=8)


class TestOverCapacity:
    def test_a_vm_reported_beyond_capacity_is_counted_and_surfaced(self) -> None:
        cache = cache_with("h1")
        cache.add_vm(make_vm("a", size=BIG), "h1")
        assert not cache.over_capacity("h1") and cache.over_commits == 0
        cache.add_vm(make_vm("b", size=BIG), "h1")
        assert cache.hosts["h1"].used_mem == 16 * 1024
        assert cache.over_capacity("h1")
        assert cache.hosts_over_capacity() == ["h1"]
        assert cache.over_commits == 1

    def test_within_capacity_nothing_is_surfaced(self) -> None:
        cache = cache_with("h1", "h2")
        cache.add_vm(make_vm("a", size=BIG), "h1")
        cache.add_vm(make_vm("b", size=BIG), "h2")
        assert cache.hosts_over_capacity() == [] and cache.over_commits == 0

    def test_it_clears_when_the_extra_vm_goes(self) -> None:
        cache = cache_with("h1")
        cache.add_vm(make_vm("a", size=BIG), "h1")
        cache.add_vm(make_vm("b", size=BIG), "h1")
        cache.remove_vm("team/b")
        assert cache.hosts_over_capacity() == []


class TestUncertainAssumptions:
    def test_an_assumption_the_informer_confirms_stays_counted_once(self) -> None:
        cache = cache_with("h1")
        cache.assume(make_vm("a", size=BIG), "h1", now=10.0)
        cache.add_vm(make_vm("a", size=BIG), "h1")  # the watch saw it bound
        assert cache.forget("team/a") is False  # a late failure cannot undo a bound VM
        assert cache.hosts["h1"].used_mem == 8 * 1024

    def test_unconfirmed_assumptions_expire_after_their_ttl(self) -> None:
        cache = cache_with("h1", "h2")
        cache.assume(make_vm("a", size=BIG), "h1", now=10.0)
        cache.assume(make_vm("b", size=BIG), "h2", now=30.0)
        assert cache.expired_assumptions(now=35.0, ttl=30.0) == []
        assert cache.expired_assumptions(now=45.0, ttl=30.0) == ["team/a"]
        cache.add_vm(make_vm("a", size=BIG), "h1")
        assert cache.expired_assumptions(now=100.0, ttl=30.0) == ["team/b"]

    def test_the_sweep_visits_only_what_is_still_assumed(self) -> None:
        cache = cache_with("h1", "h2")
        for i in range(50):  # bound VMs, as a takeover's list delivers them
            cache.add_vm(make_vm(f"bound-{i}"), "h1")
        for name in ("answered", "failed", "removed", "open"):
            cache.assume(make_vm(name), "h2", now=1.0)
        cache.confirm("team/answered")  # the API answered the bind
        cache.forget("team/failed")
        cache.remove_vm("team/removed")
        assert cache._assumed == {"team/open"}
        assert cache.expired_assumptions(now=100.0, ttl=30.0) == ["team/open"]
