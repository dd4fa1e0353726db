"""A pool's status: hosts, ready hosts, capacity, allocated and reserved resources, and how
many more VMs of each flavor fit (free room plus the flavor's own reservation slots). Pure."""

from __future__ import annotations

from dataclasses import dataclass

from kubenova.scheduler.cache import CapacityCache, HostEntry
from kubenova.scheduler.model import Size, TaintEffect


@dataclass(frozen=True, slots=True)
class Amount:
    vcpus: int = 0
    memory_mib: int = 0
    disk_mib: int = 0
    gpus: int = 0


@dataclass(frozen=True, slots=True)
class PoolStatus:
    pool: str
    hosts: int
    ready_hosts: int
    capacity: Amount
    """Allocatable (after over-commit) of the ready hosts."""
    allocated: Amount
    """Held by VMs, on every host of the pool."""
    reserved: Amount
    """Held by reservation slots."""
    available: dict[str, int]
    """Flavor → how many more VMs of it fit now, counting its reservation slots; ignores
    per-VM rules (node selector, tolerations, affinity) that no flavor carries."""


def is_ready(e: HostEntry, now: float) -> bool:
    info = e.info
    return info.ready and not info.unschedulable and now <= e.stale_at


def fits(e: HostEntry, size: Size) -> int:
    """How many VMs of `size` fit in the host's free room."""
    n = e.free_mem // size.memory_mib if size.memory_mib else 1 << 30
    if size.vcpus:
        n = min(n, e.free_cpu // size.vcpus)
    if size.disk_mib:
        n = min(n, e.free_disk // size.disk_mib)
    for model, count in size.gpus:
        n = min(n, len(e.free_gpus.get(model, ())) // count)
    return max(n, 0)


def pool_status(cache: CapacityCache, pool: str, now: float) -> PoolStatus | None:
    p = cache.pools.get(pool)
    if p is None:
        return None
    cap = [0, 0, 0, 0]
    used = [0, 0, 0, 0]
    held = [0, 0, 0, 0]
    ready: list[HostEntry] = []
    slots: dict[str, int] = {}
    for host_id in p.members:
        e = cache.by_id[host_id]
        for key in e.allocations:
            a = cache.allocations[key]
            if a.slot and a.pool != pool:
                continue
            target = held if a.slot else used
            target[0] += a.size.vcpus
            target[1] += a.size.memory_mib
            target[2] += a.size.disk_mib
            target[3] += len(a.gpus)
            if a.slot:
                slots[a.flavor] = slots.get(a.flavor, 0) + 1
        if not is_ready(e, now):
            continue
        ready.append(e)
        cap[0] += e.alloc_cpu
        cap[1] += e.alloc_mem
        cap[2] += e.alloc_disk
        cap[3] += len(e.info.gpus)
    schedulable = [
        e
        for e in ready
        if not any(t.effect is not None for t in e.info.taints if _blocks(t.effect))
    ]
    available = {
        name: sum(fits(e, f.size) for e in schedulable) + slots.get(name, 0)
        for name, f in sorted(cache.flavors.items())
    }
    return PoolStatus(
        pool, len(p.members), len(ready), Amount(*cap), Amount(*used), Amount(*held), available
    )


def _blocks(effect: TaintEffect) -> bool:
    return effect in (TaintEffect.NO_SCHEDULE, TaintEffect.NO_EXECUTE)
