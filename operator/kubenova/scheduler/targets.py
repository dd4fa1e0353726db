"""Where a live migration goes: the best host for a VM other than the one it is on, through
the same filters and scores as a placement, and the reservation that holds the target's room
while the memory is copied. Pure.

The reservation is an assumption in the cache under its own key (`migration_key`), so during
the transfer the VM is counted on both hosts, as it really occupies both; `complete` moves the
VM's allocation to the target and drops the reservation in one step, so the target is never
counted twice and never counted zero times."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from kubenova.scheduler.cache import CacheError, CapacityCache
from kubenova.scheduler.explain import Reason
from kubenova.scheduler.framework import Decision, Scheduler, Unschedulable
from kubenova.scheduler.model import VMRequest

PREFIX = "migration:"


def migration_key(vm_key: str) -> str:
    """The cache key of the room a migration of `vm_key` holds on its target."""
    return PREFIX + vm_key


def choose(
    scheduler: Scheduler,
    vm: VMRequest,
    source: str,
    target: str | None,
    host_ok: Callable[[str], bool] = lambda _: True,
) -> Decision | Unschedulable:
    """Check `target` (or, unset, pick the best host in the VM's pool) for `vm`, which now
    runs on `source`; `host_ok` adds the caller's own limit (migrations in flight per host).
    Does not reserve."""
    if vm.size.gpus:
        return Unschedulable(vm.key, "a VM with passed-through GPUs cannot migrate live")
    if target is not None:
        if target == source:
            return Unschedulable(vm.key, f"the VM already runs on {target}")
        why = scheduler.check(vm, target)
        if why is None and not host_ok(target):
            return Unschedulable(vm.key, f"host {target} has too many migrations in flight")
        if why is not None:
            text = why.value.format(pool=vm.pool)
            return Unschedulable(vm.key, f"host {target}: {text}", {why: 1})
        return Decision(vm.key, target, (), 0.0, 1)
    state = scheduler.prepare(vm)
    if isinstance(state, Unschedulable):
        return state
    found = []
    counts: dict[Reason, int] = {}
    for e in scheduler.cache.pool_hosts(vm.pool):
        if e.name == source:
            continue
        why = scheduler.check(vm, e.name)
        if why is not None:
            counts[why] = counts.get(why, 0) + 1
        elif host_ok(e.name):
            found.append(e)
    if not found:
        detail = ", ".join(
            f"{n} {r.value.format(pool=vm.pool)}"
            for r, n in sorted(counts.items(), key=lambda c: c[0].value)
        )
        busy = "" if counts else "every other host is busy with migrations or the pool is empty"
        return Unschedulable(vm.key, f"no other host takes the VM: {detail or busy}", counts)
    totals = scheduler.score(state, found)
    best = max(range(len(found)), key=lambda i: (totals[i], found[i].name))
    return Decision(vm.key, found[best].name, (), totals[best], len(found))


def reserve(cache: CapacityCache, vm: VMRequest, target: str, now: float) -> bool:
    """Hold the VM's room on `target` for the transfer. Idempotent (a new leader re-reserves
    the migrations in flight); False when the target is unknown or already holds it elsewhere."""
    try:
        cache.assume(dataclasses.replace(vm, key=migration_key(vm.key)), target, now)
    except CacheError:
        return False
    return True


def release(cache: CapacityCache, vm_key: str) -> None:
    """The migration failed or was cancelled: free the target's room. Idempotent."""
    cache.forget(migration_key(vm_key))


def complete(cache: CapacityCache, vm: VMRequest, target: str, gpus: tuple[str, ...] = ()) -> None:
    """The VM now runs on `target`: its allocation moves there and the reservation goes."""
    cache.forget(migration_key(vm.key))
    cache.add_vm(vm, target, gpus)
