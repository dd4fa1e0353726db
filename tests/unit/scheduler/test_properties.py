"""Properties over any sequence of events: no host is over-allocated, the cache equals one
rebuilt from scratch, anti-affinity holds, decisions agree with a full scan, and reservations
are honoured."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from kubenova.scheduler import cache as cache_mod
from kubenova.scheduler import framework, model
from tests.unit.scheduler.builders import (
    FakeClock,
    make_host,
    make_pool,
    make_scheduler,
    make_size,
    make_vm,
)

pytestmark = pytest.mark.unit

HOSTS = [f"h{i}" for i in range(8)]
GPU_MODELS = ["a100", "t4"]
DB = model.GroupRule("db", "kubenova.io/hostname", 1)
WEB = model.GroupRule("web", "rack", 2)
POOLS = [
    make_pool("general", cpu_ratio=2.0, weights=model.Weights(pack=1)),
    make_pool("blue", cpu_ratio=2.0, weights=model.Weights(pack=0, spread=1, load=1)),
]


def rack_of(name: str) -> str:
    return f"r{int(name[1:]) % 3}"


host_st = st.builds(
    lambda name, cpus, mem, pool, cordon, ngpu, model_: make_host(
        name,
        cpus=cpus,
        mem_gib=mem,
        disk_gib=200,
        labels={"pool": pool, "rack": rack_of(name)},
        unschedulable=cordon,
        gpus=[(model_, f"0000:0{i}:00.0") for i in range(ngpu)],
    ),
    st.sampled_from(HOSTS),
    st.integers(4, 16),
    st.integers(8, 64),
    st.sampled_from(["general", "blue"]),
    st.booleans(),
    st.integers(0, 3),
    st.sampled_from(GPU_MODELS),
)

vm_st = st.builds(
    lambda n, vcpus, mem, gpu, pool, kind: make_vm(
        f"v{n}",
        size=make_size(vcpus, mem, 10, {gpu: 1} if gpu else None),
        pool=pool,
        groups=[kind] if kind else [],
        anti_affinity=[DB] if kind == "db" else [WEB] if kind == "web" else [],
    ),
    st.integers(0, 40),
    st.integers(1, 4),
    st.integers(1, 12),
    st.sampled_from([None, None, *GPU_MODELS]),
    st.sampled_from(["general", "blue"]),
    st.sampled_from([None, "db", "web"]),
)


def fingerprint(c: cache_mod.CapacityCache) -> dict[str, Any]:
    """Everything the cache derives, keyed by names rather than internal ids."""
    hosts = {
        e.name: (
            e.used_cpu,
            e.used_mem,
            e.used_disk,
            e.alloc_cpu,
            e.alloc_mem,
            e.alloc_disk,
            sorted((m, tuple(v)) for m, v in e.free_gpus.items() if v),
            sorted(e.pools),
            sorted(e.allocations),
            e.free_mem,
        )
        for e in c.hosts.values()
    }
    pools = {}
    for name, p in c.pools.items():
        orders = []
        for keys in (p.order, p.tainted):
            order = [(k >> cache_mod.ID_BITS, c.by_id[k & cache_mod.ID_MASK].name) for k in keys]
            assert [free for free, _ in order] == sorted(free for free, _ in order)
            # Equal free memory is ordered by host id, which depends on history: compare sets.
            orders.append(sorted(order))
        pools[name] = (
            sorted(c.by_id[i].name for i in p.members),
            orders,
            sorted(c.by_id[i].name for i in p.cordoned),
            sorted(c.by_id[i].name for i in p.not_ready),
        )
    names = {i: e.name for i, e in c.by_id.items()}
    labels = {k: sorted(names[i] for i in v) for k, v in c.labels.by_pair.items()}
    groups = {g: {names[i]: n for i, n in v.items()} for g, v in c.groups.items()}
    allocations = {k: (a.host, a.size, sorted(a.gpus), a.assumed) for k, a in c.allocations.items()}
    return {"hosts": hosts, "pools": pools, "labels": labels, "groups": groups, "a": allocations}


class SchedulerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock(1000.0)
        self.s = make_scheduler([], POOLS, clock=self.clock, seed=0)
        self.hosts: dict[str, model.HostInfo] = {}
        self.vms: dict[str, model.VMRequest] = {}

    @initialize(infos=st.lists(host_st, min_size=3, max_size=6, unique_by=lambda h: h.name))
    def some_hosts(self, infos: list[model.HostInfo]) -> None:
        for info in infos:
            self.upsert_host(info)

    @rule(info=host_st)
    def upsert_host(self, info: model.HostInfo) -> None:
        old = self.hosts.get(info.name)
        if old is not None:
            # A host keeps its capacity and devices while VMs run on it; admins change labels
            # and cordon, and those must never over-allocate.
            info = make_host(
                info.name,
                cpus=old.cpus,
                mem_gib=old.memory_mib // 1024,
                disk_gib=old.disk_mib // 1024,
                labels={"pool": info.labels["pool"], "rack": rack_of(info.name)},
                unschedulable=info.unschedulable,
                gpus=[(g.model, g.pci_address) for g in old.gpus],
            )
        self.s.cache.upsert_host(info)
        self.hosts[info.name] = info

    @precondition(lambda self: bool(self.hosts))
    @rule(data=st.data())
    def remove_host(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted(self.hosts)))
        dropped = self.s.cache.remove_host(name)
        del self.hosts[name]
        for a in dropped:
            self.vms.pop(a.key, None)

    @rule(vm=vm_st)
    def schedule(self, vm: model.VMRequest) -> None:
        if vm.key in self.vms:
            return
        feasible = self.s.feasible_by_scan(vm)
        r = self.s.schedule(vm)
        if isinstance(r, framework.Decision):
            assert isinstance(feasible, list)
            assert r.host in {e.name for e in feasible}
            self.vms[vm.key] = vm
            event(f"placed {vm.groups[0] if vm.groups else 'plain'} VM")
        else:
            assert not isinstance(feasible, list) or feasible == [], r.message
            assert sum(r.counts.values()) == len(self.hosts), r.message

    @precondition(lambda self: bool(self.vms))
    @rule(data=st.data(), op=st.sampled_from(["confirm", "forget", "remove", "informer"]))
    def vm_event(self, data: st.DataObject, op: str) -> None:
        key = data.draw(st.sampled_from(sorted(self.vms)))
        c = self.s.cache
        if op == "confirm":
            c.confirm(key)
        elif op == "forget":
            if c.forget(key):
                del self.vms[key]
        elif op == "remove":
            c.remove_vm(key)
            del self.vms[key]
        else:
            a = c.allocations[key]
            c.add_vm(self.vms[key], a.host, a.gpus)

    @invariant()
    def no_host_is_over_allocated(self) -> None:
        for e in self.s.cache.hosts.values():
            assert e.used_cpu <= e.alloc_cpu and e.used_mem <= e.alloc_mem, e.name
            assert e.used_disk <= e.alloc_disk
            held = [pci for k in e.allocations for pci in self.s.cache.allocations[k].gpus]
            assert len(held) == len(set(held))
            assert set(held).isdisjoint(pci for v in e.free_gpus.values() for pci in v)

    @invariant()
    def anti_affinity_holds(self) -> None:
        per_host: Counter[str] = Counter()
        per_rack: Counter[str] = Counter()
        for key, vm in self.vms.items():
            host = self.s.cache.allocations[key].host
            if "db" in vm.groups:
                per_host[host] += 1
            if "web" in vm.groups:
                per_rack[rack_of(host)] += 1
        assert max(per_host.values(), default=0) <= DB.max_per_domain
        assert max(per_rack.values(), default=0) <= WEB.max_per_domain

    @invariant()
    def cache_equals_a_rebuild_from_scratch(self) -> None:
        fresh = cache_mod.CapacityCache()
        for h in sorted(self.hosts.values(), key=lambda h: h.name):
            fresh.upsert_host(h)
        for p in POOLS:
            fresh.upsert_pool(p)
        for key, vm in sorted(self.vms.items()):
            a = self.s.cache.allocations[key]
            b = fresh.add_vm(vm, a.host, a.gpus)
            b.assumed = a.assumed
        assert fingerprint(fresh) == fingerprint(self.s.cache)


TestSchedulerMachine = SchedulerMachine.TestCase
TestSchedulerMachine.settings = settings(
    max_examples=100,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


POPULAR = model.FlavorInfo("popular", make_size(vcpus=2, mem_gib=8))


@settings(max_examples=60, deadline=None)
@given(
    hosts=st.lists(st.tuples(st.integers(2, 16), st.integers(8, 64)), min_size=1, max_size=6),
    count=st.integers(1, 6),
    others=st.lists(st.tuples(st.integers(1, 8), st.integers(1, 32)), max_size=40),
)
def test_reservations_are_honoured_whatever_else_is_placed(
    hosts: list[tuple[int, int]], count: int, others: list[tuple[int, int]]
) -> None:
    s = make_scheduler(
        [make_host(f"h{i}", cpus=c, mem_gib=m) for i, (c, m) in enumerate(hosts)],
        [make_pool(reservations={"popular": count})],
        [POPULAR],
    )
    short = s.refill_reservations("general")
    assert 0 <= short <= count
    for i, (vcpus, mem) in enumerate(others):
        s.schedule(make_vm(f"o{i}", flavor="other", size=make_size(vcpus, mem)))
    for i in range(count - short):
        d = s.schedule(make_vm(f"p{i}", flavor="popular", size=POPULAR.size))
        assert isinstance(d, framework.Decision) and d.reservation is not None
    for e in s.cache.hosts.values():
        assert e.used_cpu <= e.alloc_cpu and e.used_mem <= e.alloc_mem
