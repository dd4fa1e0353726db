"""Fixture builders for scheduler tests, in the spirit of kube-scheduler's `MakePod()`: every
argument has a sensible default, so a test names only what it is about."""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping

from kubenova.scheduler import cache as cache_mod
from kubenova.scheduler import framework, model

GIB = 1024


class FakeClock:
    """Time that moves only when a test says so."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_host(
    name: str,
    *,
    cpus: int = 32,
    mem_gib: int = 128,
    disk_gib: int = 1000,
    labels: Mapping[str, str] | None = None,
    gpus: Iterable[tuple[str, str]] = (),
    unschedulable: bool = False,
    taints: Iterable[model.Taint] = (),
    ready: bool = True,
    heartbeat_at: float = 1000.0,
) -> model.HostInfo:
    all_labels = {"pool": "general", "kubenova.io/hostname": name}
    all_labels.update(labels or {})
    return model.HostInfo(
        name=name,
        cpus=cpus,
        memory_mib=mem_gib * GIB,
        disk_mib=disk_gib * GIB,
        labels=all_labels,
        gpus=tuple(model.GPU(m, pci) for m, pci in gpus),
        unschedulable=unschedulable,
        taints=tuple(taints),
        ready=ready,
        heartbeat_at=heartbeat_at,
    )


def make_size(
    vcpus: int = 2, mem_gib: int = 4, disk_gib: int = 20, gpus: Mapping[str, int] | None = None
) -> model.Size:
    return model.Size(vcpus, mem_gib * GIB, disk_gib * GIB, tuple(sorted((gpus or {}).items())))


def make_vm(
    name: str,
    *,
    namespace: str = "team",
    flavor: str = "small",
    size: model.Size | None = None,
    pool: str = "general",
    priority: int = 0,
    node_selector: Mapping[str, str] | None = None,
    groups: Iterable[str] = (),
    affinity: Iterable[model.GroupRule] = (),
    anti_affinity: Iterable[model.GroupRule] = (),
    tolerations: Iterable[model.Toleration] = (),
    created_at: float = 0.0,
) -> model.VMRequest:
    return model.VMRequest(
        key=f"{namespace}/{name}",
        namespace=namespace,
        flavor=flavor,
        size=size or make_size(),
        pool=pool,
        priority=priority,
        node_selector=tuple(sorted((node_selector or {}).items())),
        groups=tuple(groups),
        affinity=tuple(affinity),
        anti_affinity=tuple(anti_affinity),
        tolerations=tuple(tolerations),
        created_at=created_at,
    )


def make_pool(
    name: str = "general",
    *,
    labels: Mapping[str, str] | None = None,
    expressions: Iterable[model.Requirement] = (),
    cpu_ratio: float = 1.0,
    memory_ratio: float = 1.0,
    weights: model.Weights | None = None,
    namespaces: Iterable[str] = (),
    reservations: Mapping[str, int] | None = None,
    rebalance: model.RebalanceSettings | None = None,
) -> model.PoolInfo:
    return model.PoolInfo(
        name=name,
        selector=model.Selector(
            tuple(sorted((labels if labels is not None else {"pool": name}).items())),
            tuple(expressions),
        ),
        cpu_ratio=cpu_ratio,
        memory_ratio=memory_ratio,
        weights=weights or model.Weights(),
        namespaces=frozenset(namespaces),
        reservations=tuple((reservations or {}).items()),
        rebalance=rebalance or model.RebalanceSettings(),
    )


def make_scheduler(
    hosts: Iterable[model.HostInfo] = (),
    pools: Iterable[model.PoolInfo] = (),
    flavors: Iterable[model.FlavorInfo] = (),
    *,
    clock: FakeClock | None = None,
    seed: int = 1,
    config: framework.SchedulerConfig | None = None,
) -> framework.Scheduler:
    cache = cache_mod.CapacityCache()
    for p in pools:
        cache.upsert_pool(p)
    for h in hosts:
        cache.upsert_host(h)
    for f in flavors:
        cache.upsert_flavor(f)
    return framework.Scheduler(cache, clock or FakeClock(), random.Random(seed), config)
