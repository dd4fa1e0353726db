"""The re-balance planner: from the hosts' latest load, a pool's thresholds and what is left of
its migration budget, propose live migrations (VM, from, to) that bring the hottest hosts under
the thresholds without making any target hot. A VM moved recently is not moved again, and never
back to a host it left: no ping-pong. Plans only; the operator creates the VMMigrations. Pure.

A VM's share of its host's load is estimated in proportion to what it is allocated (the agents
report load per host, not per VM)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from kubenova.scheduler.cache import CapacityCache, HostEntry
from kubenova.scheduler.explain import Reason
from kubenova.scheduler.model import RebalanceSettings, VMRequest


@dataclass(frozen=True, slots=True)
class Migration:
    vm: str
    source: str
    target: str
    reason: str


@dataclass(frozen=True, slots=True)
class _Done:
    vm: str
    pool: str
    source: str
    at: float


class MigrationLedger:
    """Migrations started, for the hourly budget and the no-ping-pong rule."""

    def __init__(self, *, window: float = 3600.0, cooldown: float = 3600.0) -> None:
        self.window = window
        self.cooldown = cooldown
        self._done: list[_Done] = []

    def record(self, vm: str, pool: str, source: str, at: float) -> None:
        self._done.append(_Done(vm, pool, source, at))

    def used(self, pool: str, now: float) -> int:
        return sum(1 for d in self._done if d.pool == pool and now - d.at < self.window)

    def recently_moved(self, vm: str, now: float) -> bool:
        return any(d.vm == vm and now - d.at < self.cooldown for d in self._done)

    def left(self, vm: str) -> set[str]:
        """Hosts `vm` has been migrated away from (kept until `prune`)."""
        return {d.source for d in self._done if d.vm == vm}

    def prune(self, now: float) -> None:
        keep = max(self.window, self.cooldown)
        self._done = [d for d in self._done if now - d.at < keep]


@dataclass(slots=True)
class _Projected:
    host: HostEntry
    cpu: float
    mem: float
    extra_cpu: int = 0
    extra_mem: int = 0


Check = Callable[[VMRequest, str], Reason | None]
"""Would the host take the VM now (the scheduler's filters): `Scheduler.check`."""


def plan(
    cache: CapacityCache,
    pool: str,
    settings: RebalanceSettings,
    vms: Mapping[str, VMRequest],
    check: Check,
    ledger: MigrationLedger,
    now: float,
    *,
    margin: float = 5.0,
) -> list[Migration]:
    """Migrations for one pool, hottest host first, largest VM share first."""
    p = cache.pools.get(pool)
    if p is None or not settings.enabled:
        return []
    budget = settings.max_migrations_per_hour - ledger.used(pool, now)
    hosts = {e.name: _Projected(e, e.load_cpu, e.load_mem) for e in cache.pool_hosts(pool)}

    def hot(h: _Projected) -> bool:
        return h.cpu > settings.cpu_threshold or h.mem > settings.memory_threshold

    def excess(h: _Projected) -> float:
        return max(h.cpu - settings.cpu_threshold, h.mem - settings.memory_threshold)

    out: list[Migration] = []
    moved: set[str] = set()
    for source in sorted((h for h in hosts.values() if hot(h)), key=excess, reverse=True):
        e = source.host
        shares = []
        for key in e.allocations:
            a = cache.allocations[key]
            vm = vms.get(key)
            if a.slot or a.assumed or vm is None or ledger.recently_moved(key, now):
                continue
            cpu_abs = e.load_cpu * e.info.cpus * a.size.vcpus / max(e.used_cpu, 1) / 100
            mem_abs = e.load_mem * e.info.memory_mib * a.size.memory_mib / max(e.used_mem, 1) / 100
            shares.append((cpu_abs, mem_abs, vm))
        shares.sort(key=lambda s: (s[0] / max(e.info.cpus, 1), s[2].key), reverse=True)
        for cpu_abs, mem_abs, vm in shares:
            if budget <= 0 or not hot(source):
                break
            left = ledger.left(vm.key)
            best: _Projected | None = None
            best_load = 0.0
            for t in hosts.values():
                if t is source or t.host.name in left:
                    continue
                cpu = t.cpu + 100 * cpu_abs / max(t.host.info.cpus, 1)
                mem = t.mem + 100 * mem_abs / max(t.host.info.memory_mib, 1)
                if (
                    cpu > settings.cpu_threshold - margin
                    or mem > settings.memory_threshold - margin
                ):
                    continue
                if best is not None and max(cpu, mem) >= best_load:
                    continue
                if t.host.free_cpu - t.extra_cpu < vm.size.vcpus:
                    continue
                if t.host.free_mem - t.extra_mem < vm.size.memory_mib:
                    continue
                if check(vm, t.host.name) is not None:
                    continue
                best, best_load = t, max(cpu, mem)
            if best is None:
                continue
            before = max(source.cpu, source.mem)
            source.cpu -= 100 * cpu_abs / max(e.info.cpus, 1)
            source.mem -= 100 * mem_abs / max(e.info.memory_mib, 1)
            best.cpu += 100 * cpu_abs / max(best.host.info.cpus, 1)
            best.mem += 100 * mem_abs / max(best.host.info.memory_mib, 1)
            best.extra_cpu += vm.size.vcpus
            best.extra_mem += vm.size.memory_mib
            moved.add(vm.key)
            budget -= 1
            out.append(
                Migration(
                    vm.key,
                    e.name,
                    best.host.name,
                    f"host {e.name} at {before:.0f}% is above the pool's threshold",
                )
            )
    return out
