"""`CapacityCache`: every host, pool, flavor and allocation the scheduler knows, with the
indexes that make a decision cheap — the inverted label index, pool membership resolved from
it, and per pool the hosts ordered by free memory. Fed by events (the informer's view) and by
the scheduler's own assumptions; assume → confirm / forget are idempotent. Pure."""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from kubenova.scheduler.indexes import LabelIndex
from kubenova.scheduler.model import FlavorInfo, HostInfo, PoolInfo, Size, VMRequest
from kubenova.scheduler.sortedkeys import SortedInts

ID_BITS = 20
"""Order keys are free_memory_mib << ID_BITS | host id: one int, so comparisons stay cheap."""
ID_MASK = (1 << ID_BITS) - 1


class CacheError(ValueError):
    """An event the cache cannot apply; the message names the objects involved."""


class HostEntry:
    """A host plus what is allocated on it. Mutated only by `CapacityCache`."""

    __slots__ = (
        "alloc_cpu",
        "alloc_disk",
        "alloc_mem",
        "allocations",
        "free_gpus",
        "gpu_capacity",
        "heartbeat_at",
        "id",
        "info",
        "load_cpu",
        "load_mem",
        "order_key",
        "peak",
        "peak_at",
        "pools",
        "stale_at",
        "standing",
        "used_cpu",
        "used_disk",
        "used_mem",
    )

    def __init__(self, host_id: int, info: HostInfo) -> None:
        self.id = host_id
        self.info = info
        self.heartbeat_at = info.heartbeat_at
        self.stale_at = info.heartbeat_at + info.heartbeat_max_age
        """When the host stops taking VMs unless another heartbeat comes."""
        self.pools: list[str] = []
        self.allocations: set[str] = set()
        self.used_cpu = 0
        self.used_mem = 0
        self.used_disk = 0
        self.alloc_cpu = info.cpus
        self.alloc_mem = info.memory_mib
        self.alloc_disk = info.disk_mib
        self.free_gpus: dict[str, list[str]] = {}
        self.gpu_capacity: dict[str, int] = {}
        self.order_key = -1
        self.standing = Standing.PLAIN
        self.load_cpu = 0.0
        self.load_mem = 0.0
        self.peak = 0.0
        self.peak_at = 0.0

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def free_mem(self) -> int:
        return self.alloc_mem - self.used_mem

    @property
    def free_cpu(self) -> int:
        return self.alloc_cpu - self.used_cpu

    @property
    def free_disk(self) -> int:
        return self.alloc_disk - self.used_disk


class Standing(enum.IntEnum):
    """Where a host sits in its pools' indexes. Hosts that no VM can use are kept out of the
    orders, or every search would walk past them again and again: cordoned and not-ready
    hosts stay empty while the others fill, and so gather where best- and worst-fit begin."""

    PLAIN = 0
    """No taints: in `order`."""
    TAINTED = 1
    """In `tainted`, searched only for VMs with tolerations."""
    CORDONED = 2
    NOT_READY = 3


class PoolState:
    __slots__ = ("cordoned", "info", "members", "not_ready", "order", "tainted")

    def __init__(self, info: PoolInfo, members: set[int]) -> None:
        self.info = info
        self.members = members
        self.order = SortedInts()
        """Order keys of the untainted schedulable members, ascending free memory."""
        self.tainted = SortedInts()
        """Order keys of the tainted schedulable members."""
        self.cordoned: set[int] = set()
        self.not_ready: set[int] = set()


@dataclass(slots=True)
class Allocation:
    """What one VM (or one reservation slot) holds on one host."""

    key: str
    host: str
    size: Size
    gpus: tuple[str, ...]
    """PCI addresses of the very devices taken."""
    namespace: str
    groups: tuple[str, ...]
    flavor: str
    pool: str
    assumed: bool
    """Decided by the scheduler but not yet seen bound by the informer."""
    assumed_at: float = 0.0
    slot: bool = False
    """A reservation slot: room held for a flavor, no VM yet."""


class CapacityCache:
    def __init__(self, *, peak_half_life: float = 3600.0) -> None:
        self.peak_half_life = peak_half_life
        self.labels = LabelIndex()
        self.hosts: dict[str, HostEntry] = {}
        self.by_id: dict[int, HostEntry] = {}
        self.pools: dict[str, PoolState] = {}
        self.flavors: dict[str, FlavorInfo] = {}
        self.allocations: dict[str, Allocation] = {}
        self._assumed: set[str] = set()
        """Keys of the allocations still assumed (not slots): what the sweep of unconfirmed
        binds visits, so it costs the binds in flight, not every VM."""
        self.groups: dict[tuple[str, str], dict[int, int]] = {}
        """(namespace, group) → host id → how many of its VMs are there."""
        self.image_hosts: dict[str, int] = {}
        """Image name → how many hosts' image caches hold it (image locality's spread)."""
        self._free_ids: list[int] = []
        self._next_id = 0
        self.over_commits = 0
        """VMs the informer reported bound to a host that had no room left for them: another
        scheduler's decision, or a bug; the operator logs each and exports the count."""
        self.changed_pools: set[str] = set()
        """Pools whose status may differ since `take_changed_pools`: a member host, one of
        its allocations, the pool or a flavor changed (a heartbeat growing stale with time
        is no change here: the caller refreshes the host when its Lease expires, and every
        pool now and then as well)."""

    def take_changed_pools(self) -> set[str]:
        """The pools changed since the last call, and start counting afresh."""
        changed, self.changed_pools = self.changed_pools, set()
        return changed

    # -- hosts ---------------------------------------------------------------------------

    def upsert_host(self, info: HostInfo) -> HostEntry:
        """A host appeared or changed (labels, capacity, cordon, taints, GPUs)."""
        e = self.hosts.get(info.name)
        if e is None:
            e = HostEntry(self._new_id(), info)
            self.hosts[info.name] = e
            self.by_id[e.id] = e
            self.labels.add(e.id, info.labels)
            for name, p in self.pools.items():
                if p.info.selector.matches(info.labels):
                    p.members.add(e.id)
                    e.pools.append(name)
            self._count_images(info.images, 1)
            self._refresh_capacity(e)
            self._order(e)
            return e
        self._unorder(e)
        old = e.info
        e.info = info
        e.heartbeat_at = max(e.heartbeat_at, info.heartbeat_at)
        e.stale_at = e.heartbeat_at + info.heartbeat_max_age
        if old.images != info.images:
            self._count_images(old.images, -1)
            self._count_images(info.images, 1)
        if old.labels != info.labels:
            self.labels.remove(e.id, old.labels)
            self.labels.add(e.id, info.labels)
            e.pools = []
            for name, p in self.pools.items():
                if p.info.selector.matches(info.labels):
                    p.members.add(e.id)
                    e.pools.append(name)
                else:
                    p.members.discard(e.id)
        self._refresh_capacity(e)
        self._order(e)
        return e

    def remove_host(self, name: str) -> list[Allocation]:
        """Forget a host; returns the allocations (VMs and slots) that were on it."""
        e = self.hosts.get(name)
        if e is None:
            return []
        dropped = [self.allocations[k] for k in sorted(e.allocations)]
        for a in dropped:
            self._drop(a)
        self._unorder(e)
        for p in e.pools:
            self.pools[p].members.discard(e.id)
        self.labels.remove(e.id, e.info.labels)
        self._count_images(e.info.images, -1)
        del self.hosts[name]
        del self.by_id[e.id]
        self._free_ids.append(e.id)
        return dropped

    def _count_images(self, images: Iterable[str], delta: int) -> None:
        for image in images:
            n = self.image_hosts.get(image, 0) + delta
            if n > 0:
                self.image_hosts[image] = n
            else:
                self.image_hosts.pop(image, None)

    def heartbeat(self, name: str, at: float) -> None:
        e = self.hosts.get(name)
        if e is not None:
            e.heartbeat_at = max(e.heartbeat_at, at)
            e.stale_at = e.heartbeat_at + e.info.heartbeat_max_age

    def report_load(self, name: str, cpu_percent: float, memory_percent: float, at: float) -> None:
        """Hot data (the latest report) and cold data (a peak that halves every half-life)."""
        e = self.hosts.get(name)
        if e is None:
            return
        e.load_cpu = cpu_percent
        e.load_mem = memory_percent
        now_peak = max(cpu_percent, memory_percent)
        e.peak = max(now_peak, self.decayed_peak(e, at))
        e.peak_at = at

    def decayed_peak(self, e: HostEntry, now: float) -> float:
        if e.peak == 0.0:
            return 0.0
        age = max(0.0, now - e.peak_at)
        return e.peak * math.exp(-age * math.log(2) / self.peak_half_life)

    # -- pools and flavors ---------------------------------------------------------------

    def upsert_pool(self, info: PoolInfo) -> None:
        self.changed_pools.add(info.name)
        old = self.pools.get(info.name)
        members = self.labels.resolve(info.selector)
        affected = [self.by_id[i] for i in (old.members | members if old else members)]
        for e in affected:
            self._unorder(e)
        self.pools[info.name] = PoolState(info, members)
        for e in affected:
            if info.name in e.pools:
                e.pools.remove(info.name)
            if e.id in members:
                e.pools.append(info.name)
            self._refresh_capacity(e)
            self._order(e)

    def remove_pool(self, name: str) -> None:
        old = self.pools.get(name)
        if old is None:
            return
        affected = [self.by_id[i] for i in old.members]
        for e in affected:
            self._unorder(e)
        del self.pools[name]
        for e in affected:
            e.pools.remove(name)
            self._refresh_capacity(e)
            self._order(e)

    def upsert_flavor(self, info: FlavorInfo) -> None:
        if self.flavors.get(info.name) != info:
            self.changed_pools.update(self.pools)  # what fits of it, in every pool
        self.flavors[info.name] = info

    def remove_flavor(self, name: str) -> None:
        if self.flavors.pop(name, None) is not None:
            self.changed_pools.update(self.pools)

    # -- VMs: informer events ------------------------------------------------------------

    def add_vm(self, vm: VMRequest, host: str, gpus: Sequence[str] = ()) -> Allocation:
        """The informer saw `vm` bound to `host` with these GPUs: authoritative, idempotent.
        Confirms a matching assumption; moves the VM if it was counted elsewhere."""
        a = self.allocations.get(vm.key)
        if a is not None and not a.slot and a.host == host:
            a.assumed = False
            self._assumed.discard(a.key)
            return a
        e = self._host(host, vm.key)
        taken = self._take_gpus(e, vm, gpus)
        if a is not None:
            self._drop(a)
        a = self._place(e, vm, taken, assumed=False, now=0.0)
        self._make_room(e)
        if self.over_capacity(host):
            # Bound is bound, so it is counted; but never silently (see `over_commits`).
            self.over_commits += 1
        return a

    def over_capacity(self, host: str) -> bool:
        """More allocated on `host` than it has, over-commit ratios applied."""
        e = self.hosts.get(host)
        return e is not None and (e.free_cpu < 0 or e.free_mem < 0 or e.free_disk < 0)

    def hosts_over_capacity(self) -> list[str]:
        return sorted(name for name in self.hosts if self.over_capacity(name))

    def _make_room(self, e: HostEntry) -> None:
        """Reservation slots are soft. A VM the informer reports on this host — bound by another
        replica, whose slots were elsewhere — pushes this cache's slots off the host rather than
        leaving it over-committed (a slot claimed there later would over-allocate it for real).
        `Reservations.refill` places them again; it prunes the keys of dropped slots."""
        while e.free_cpu < 0 or e.free_mem < 0 or e.free_disk < 0:
            slots = sorted(k for k in e.allocations if self.allocations[k].slot)
            if not slots:
                return
            self._drop(self.allocations[slots[0]])

    def slots_on(self, host: str) -> int:
        e = self.hosts.get(host)
        return 0 if e is None else sum(1 for k in e.allocations if self.allocations[k].slot)

    def remove_vm(self, key: str) -> Allocation | None:
        """The VM is gone (or unbound): free what it held. Idempotent."""
        a = self.allocations.get(key)
        if a is None or a.slot:
            return None
        self._drop(a)
        return a

    # -- VMs: the scheduler's own decisions ----------------------------------------------

    def assume(self, vm: VMRequest, host: str, now: float) -> Allocation:
        """Count a decision at once so the next one cannot double-book. Idempotent for the
        same host; a VM already placed elsewhere is an error."""
        a = self.allocations.get(vm.key)
        if a is not None:
            if a.host == host and not a.slot:
                return a
            raise CacheError(f"VM {vm.key} is already placed on host {a.host}")
        e = self._host(host, vm.key)
        return self._place(e, vm, self._take_gpus(e, vm, ()), assumed=True, now=now)

    def confirm(self, key: str) -> bool:
        """The bind succeeded. Idempotent; False when there is nothing to confirm."""
        a = self.allocations.get(key)
        if a is None or a.slot:
            return False
        a.assumed = False
        self._assumed.discard(key)
        return True

    def forget(self, key: str) -> bool:
        """The bind failed: undo an assumption. Idempotent; a confirmed VM is left alone."""
        a = self.allocations.get(key)
        if a is None or not a.assumed or a.slot:
            return False
        self._drop(a)
        return True

    def expired_assumptions(self, now: float, ttl: float) -> list[str]:
        """Assumptions older than `ttl` whose bind the informer never reported."""
        return sorted(k for k in self._assumed if now - self.allocations[k].assumed_at > ttl)

    # -- reservation slots ---------------------------------------------------------------

    def hold_slot(self, key: str, pool: str, flavor: FlavorInfo, host: str) -> Allocation:
        """Hold room for one VM of `flavor` on `host`; other VMs see it as used."""
        if key in self.allocations:
            raise CacheError(f"reservation slot {key} already exists")
        e = self._host(host, key)
        probe = VMRequest(key=key, namespace="", flavor=flavor.name, size=flavor.size, pool=pool)
        taken = self._take_gpus(e, probe, ())
        a = Allocation(key, host, flavor.size, taken, "", (), flavor.name, pool, False, slot=True)
        self._add(e, a)
        return a

    def release_slot(self, key: str) -> Allocation | None:
        a = self.allocations.get(key)
        if a is None or not a.slot:
            return None
        self._drop(a)
        return a

    def claim_slot(self, key: str, vm: VMRequest, now: float) -> Allocation:
        """Turn a slot into `vm`'s assumed allocation on the same host and devices."""
        slot = self.allocations.get(key)
        if slot is None or not slot.slot:
            raise CacheError(f"reservation slot {key} does not exist")
        if vm.key in self.allocations:
            raise CacheError(f"VM {vm.key} is already placed on {self.allocations[vm.key].host}")
        if not vm.size.fits_in(slot.size):
            raise CacheError(f"VM {vm.key} is larger than reservation slot {key}")
        e = self.hosts[slot.host]
        self._drop(slot)
        return self._place(e, vm, self._take_gpus(e, vm, ()), assumed=True, now=now)

    # -- iteration helpers -----------------------------------------------------------------

    def pool_hosts(self, pool: str) -> Iterator[HostEntry]:
        """Every member of `pool`, in no particular order."""
        p = self.pools.get(pool)
        if p is None:
            return
        for host_id in sorted(p.members):
            yield self.by_id[host_id]

    # -- internals -----------------------------------------------------------------------

    def _place(
        self, e: HostEntry, vm: VMRequest, gpus: tuple[str, ...], *, assumed: bool, now: float
    ) -> Allocation:
        """Count `vm` on `e` with the devices already taken for it."""
        a = Allocation(
            vm.key, e.name, vm.size, gpus, vm.namespace, vm.groups, vm.flavor, vm.pool, assumed, now
        )
        self._add(e, a)
        return a

    def _new_id(self) -> int:
        if self._free_ids:
            return self._free_ids.pop()
        i = self._next_id
        if i > ID_MASK:
            raise CacheError(f"more than {ID_MASK + 1} hosts; raise ID_BITS")
        self._next_id += 1
        return i

    def _host(self, name: str, for_key: str) -> HostEntry:
        e = self.hosts.get(name)
        if e is None:
            raise CacheError(f"{for_key}: host {name} is unknown to the scheduler cache")
        return e

    def _take_gpus(self, e: HostEntry, vm: VMRequest, wanted: Sequence[str]) -> tuple[str, ...]:
        if wanted:
            missing = [pci for pci in wanted if not any(pci in v for v in e.free_gpus.values())]
            if missing:
                raise CacheError(
                    f"VM {vm.key}: GPUs {', '.join(missing)} are not free on host {e.name}"
                )
            for free in e.free_gpus.values():
                for pci in wanted:
                    if pci in free:
                        free.remove(pci)
            return tuple(wanted)
        taken: list[str] = []
        for model, count in vm.size.gpus:
            free = e.free_gpus.get(model, [])
            if len(free) < count:
                raise CacheError(
                    f"VM {vm.key}: host {e.name} has {len(free)} free {model} GPUs, needs {count}"
                )
            taken.extend(free[:count])
            del free[:count]
        return tuple(taken)

    def _add(self, e: HostEntry, a: Allocation) -> None:
        self._unorder(e)
        self.allocations[a.key] = a
        if a.assumed and not a.slot:
            self._assumed.add(a.key)
        e.allocations.add(a.key)
        e.used_cpu += a.size.vcpus
        e.used_mem += a.size.memory_mib
        e.used_disk += a.size.disk_mib
        for g in a.groups:
            counts = self.groups.setdefault((a.namespace, g), {})
            counts[e.id] = counts.get(e.id, 0) + 1
        self._order(e)

    def _drop(self, a: Allocation) -> None:
        e = self.hosts[a.host]
        self._unorder(e)
        del self.allocations[a.key]
        self._assumed.discard(a.key)
        e.allocations.discard(a.key)
        e.used_cpu -= a.size.vcpus
        e.used_mem -= a.size.memory_mib
        e.used_disk -= a.size.disk_mib
        models = {g.pci_address: g.model for g in e.info.gpus}
        for pci in a.gpus:
            model = models.get(pci)
            if model is not None:
                free = e.free_gpus.setdefault(model, [])
                free.append(pci)
                free.sort()
        for g in a.groups:
            counts = self.groups[(a.namespace, g)]
            counts[e.id] -= 1
            if counts[e.id] == 0:
                del counts[e.id]
                if not counts:
                    del self.groups[(a.namespace, g)]
        self._order(e)

    def _refresh_capacity(self, e: HostEntry) -> None:
        # A host in several pools gets the strictest over-commit, as Nova's aggregate filters.
        cpu_ratio = min((self.pools[p].info.cpu_ratio for p in e.pools), default=1.0)
        mem_ratio = min((self.pools[p].info.memory_ratio for p in e.pools), default=1.0)
        e.alloc_cpu = int(e.info.cpus * cpu_ratio)
        e.alloc_mem = int(e.info.memory_mib * mem_ratio)
        e.alloc_disk = e.info.disk_mib
        taken = {pci for k in e.allocations for pci in self.allocations[k].gpus}
        free: dict[str, list[str]] = {}
        capacity: dict[str, int] = {}
        for g in e.info.gpus:
            capacity[g.model] = capacity.get(g.model, 0) + 1
            if g.pci_address not in taken:
                free.setdefault(g.model, []).append(g.pci_address)
        for devices in free.values():
            devices.sort()
        e.free_gpus = free
        e.gpu_capacity = capacity

    def _order(self, e: HostEntry) -> None:
        info = e.info
        if not info.ready:
            e.standing = Standing.NOT_READY
        elif info.unschedulable:
            e.standing = Standing.CORDONED
        elif info.taints:
            e.standing = Standing.TAINTED
        else:
            e.standing = Standing.PLAIN
        e.order_key = key = (max(e.free_mem, 0) << ID_BITS) | e.id
        self.changed_pools.update(e.pools)
        for name in e.pools:
            p = self.pools[name]
            if e.standing is Standing.PLAIN:
                p.order.add(key)
            elif e.standing is Standing.TAINTED:
                p.tainted.add(key)
            elif e.standing is Standing.CORDONED:
                p.cordoned.add(e.id)
            else:
                p.not_ready.add(e.id)

    def _unorder(self, e: HostEntry) -> None:
        key = e.order_key
        if key < 0:
            return
        self.changed_pools.update(e.pools)  # also the pools a host is leaving
        for name in e.pools:
            p = self.pools[name]
            if e.standing is Standing.PLAIN:
                p.order.remove(key)
            elif e.standing is Standing.TAINTED:
                p.tainted.remove(key)
            elif e.standing is Standing.CORDONED:
                p.cordoned.discard(e.id)
            else:
                p.not_ready.discard(e.id)
        e.order_key = -1
