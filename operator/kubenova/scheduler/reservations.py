"""Reservations (the seed's pre-allocation of popular flavors): a pool keeps room for N VMs of
a flavor as N slots, each a real allocation on a chosen host, so other flavors simply see that
room as used and cannot eat it. A VM of the flavor claims a slot in O(1) — the slot's host and
GPUs become the VM's — and the pool places a new slot to keep N. Pure."""

from __future__ import annotations

from collections.abc import Callable

from kubenova.scheduler.cache import Allocation, CapacityCache, HostEntry, PoolState
from kubenova.scheduler.model import FlavorInfo, VMRequest

PlaceSlot = Callable[[PoolState, FlavorInfo], str | None]
"""Chooses a host for a new slot of a flavor in a pool, or None when nothing fits."""


class Reservations:
    def __init__(self, cache: CapacityCache) -> None:
        self.cache = cache
        self._slots: dict[tuple[str, str], list[str]] = {}
        """(pool, flavor) → keys of the free slots, in the cache as slot allocations."""
        self._seq = 0

    def held(self, pool: str, flavor: str) -> int:
        """Free slots for `flavor` in `pool` (stale ones are pruned at the next refill)."""
        return len(self._slots.get((pool, flavor), ()))

    def slot_keys(self, pool: str) -> dict[str, list[str]]:
        return {f: list(keys) for (p, f), keys in self._slots.items() if p == pool}

    def claim(
        self, vm: VMRequest, usable: Callable[[HostEntry], bool], now: float
    ) -> Allocation | None:
        """Give `vm` a slot of its flavor in its pool whose host passes its other filters."""
        slots = self._slots.get((vm.pool, vm.flavor))
        if not slots:
            return None
        allocations = self.cache.allocations
        for i in range(len(slots) - 1, -1, -1):
            key = slots[i]
            a = allocations.get(key)
            if a is None or not a.slot:
                del slots[i]  # its host went away
                continue
            if not vm.size.fits_in(a.size):
                return None
            if usable(self.cache.hosts[a.host]):
                del slots[i]
                return self.cache.claim_slot(key, vm, now)
        return None

    def top_up(self, pool: str, flavor: str, place: PlaceSlot) -> int:
        """Place slots until the pool holds its count for `flavor`; returns how many short."""
        p = self.cache.pools.get(pool)
        f = self.cache.flavors.get(flavor)
        want = dict(p.info.reservations).get(flavor, 0) if p is not None else 0
        if p is None or f is None or want == 0:
            return want
        slots = self._slots.setdefault((pool, flavor), [])
        while len(slots) < want:
            host = place(p, f)
            if host is None:
                return want - len(slots)
            self._seq += 1
            key = f"@slot/{pool}/{flavor}/{self._seq}"
            self.cache.hold_slot(key, pool, f, host)
            slots.append(key)
        return 0

    def refill(self, pool: str, place: PlaceSlot, healthy: Callable[[HostEntry], bool]) -> int:
        """Re-check a pool's slots after any change to it, its hosts or its flavors: release
        slots that are no longer wanted or sit on hosts that left the pool or are unhealthy,
        then top up. Returns how many slots are short in total."""
        p = self.cache.pools.get(pool)
        wanted = dict(p.info.reservations) if p is not None else {}
        for (slot_pool, flavor), keys in list(self._slots.items()):
            if slot_pool != pool:
                continue
            keep: list[str] = []
            for key in keys:
                a = self.cache.allocations.get(key)
                if a is None or not a.slot:
                    continue
                host = self.cache.hosts[a.host]
                if (
                    p is None
                    or len(keep) >= wanted.get(flavor, 0)
                    or flavor not in self.cache.flavors
                    or host.id not in p.members
                    or not healthy(host)
                ):
                    self.cache.release_slot(key)
                else:
                    keep.append(key)
            if keep:
                self._slots[(slot_pool, flavor)] = keep
            else:
                del self._slots[(slot_pool, flavor)]
        return sum(self.top_up(pool, flavor, place) for flavor in wanted)
