"""What the operator knows — the latest API objects and the scheduler state built from them —
and how each watch event changes it. Pure: no kopf, no Kubernetes client; the controller
feeds it parsed objects and performs the writes it asks for.

Every replica keeps a World warm from its watches; only the leader acts on it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from kubenova.api import Flavor, Host, ResourcePool, VirtualMachine, constants
from kubenova.api.host import HostPhase
from kubenova.api.vm import VMPhase
from kubenova.scheduler import adapt, model, status
from kubenova.scheduler.cache import CacheError, CapacityCache
from kubenova.scheduler.framework import Scheduler, SchedulerConfig
from kubenova.scheduler.queue import Event as QueueEvent
from kubenova.scheduler.queue import SchedulingQueue

log = logging.getLogger(__name__)


def _placement_view(info: model.HostInfo) -> model.HostInfo:
    """A host as the filters judge it: without the heartbeat time, which every renewal moves
    (whether the heartbeat is fresh is `ready`, which stays in), and without the images its
    cache holds, which only a score reads (an image arriving makes no parked VM fit)."""
    return dataclasses.replace(info, heartbeat_at=0.0, images={})


def vm_key(vm: VirtualMachine) -> str:
    return f"{vm.metadata.namespace or 'default'}/{vm.metadata.name}"


@dataclass
class HostLease:
    """A host's heartbeat as its Lease says."""

    renew_time: dt.datetime | None
    duration_seconds: int

    def fresh(self, now: dt.datetime) -> bool:
        if self.renew_time is None:
            return False
        return now < self.renew_time + dt.timedelta(seconds=self.duration_seconds)


@dataclass
class World:
    clock: model.Clock
    config: SchedulerConfig = field(default_factory=SchedulerConfig)
    rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        self.cache = CapacityCache()
        self.scheduler = Scheduler(self.cache, self.clock, self.rng, self.config)
        self.queue = SchedulingQueue(self.clock)
        self.vms: dict[str, VirtualMachine] = {}
        self.hosts: dict[str, Host] = {}
        self.flavors: dict[str, Flavor] = {}
        self.pools: dict[str, ResourcePool] = {}
        self.leases: dict[str, HostLease] = {}
        self.created_at: dict[str, float] = {}
        self.binding: set[str] = set()
        """VMs with a bind in flight: not to be queued again until it settles."""

    # -- VMs ----------------------------------------------------------------------------

    def upsert_vm(self, vm: VirtualMachine) -> None:
        key = vm_key(vm)
        self.vms[key] = vm
        self.created_at.setdefault(key, self.clock())
        host = vm.status.host
        if host:
            self.queue.remove(key)
            self._count_bound(key, vm, host)
            return
        alloc = self.cache.allocations.get(key)
        if alloc is not None and not alloc.assumed:
            # It was bound and is not any more (rescheduled after a host failure).
            self.cache.remove_vm(key)
            self._capacity_freed(alloc.host)
        if self.schedulable(vm) and key not in self.binding:
            req = self.request(vm)
            # A new VM is queued; an edited one (its placement fixed, say) replaces the request
            # built at push time and is tried again at once. An event that changes nothing the
            # scheduler reads (our own status write, seen again) leaves the queue alone.
            if req is not None and req != self.queue.request(key):
                self.queue.push(req)

    def _count_bound(self, key: str, vm: VirtualMachine, host: str) -> None:
        alloc = self.cache.allocations.get(key)
        if alloc is not None and alloc.host == host and not alloc.slot:
            self.cache.confirm(key)
            return
        req = self.request(vm)
        if req is None or host not in self.cache.hosts:
            return  # counted once its flavor or host is known (see recount_pending)
        slots = self.cache.slots_on(host)
        over = self.cache.over_commits
        try:
            self.cache.add_vm(req, host, tuple(vm.status.gpu_devices))
        except CacheError as e:
            log.error("cannot count VM %s on host %s: %s", key, host, e)
        if self.cache.over_commits > over:
            log.error(
                "host %s is over-committed: VM %s is bound to it beyond its capacity", host, key
            )
        if self.cache.slots_on(host) < slots:
            for pool in list(self.cache.hosts[host].pools):
                self.scheduler.refill_reservations(pool)  # re-place the displaced slots
        self.queue.on_event(QueueEvent.VM_PLACED)

    def remove_vm(self, key: str) -> None:
        self.vms.pop(key, None)
        self.created_at.pop(key, None)
        self.queue.remove(key)
        self.binding.discard(key)
        freed = self.cache.remove_vm(key)
        if freed is not None:
            self._capacity_freed(freed.host)

    def _capacity_freed(self, host: str) -> None:
        self._refill_pools_of(host)  # a slot that found no room may find it now
        self.queue.on_event(QueueEvent.CAPACITY_FREED)

    def _refill_pools_of(self, host: str, also: Iterable[str] = ()) -> None:
        """Re-check the reservation slots of the host's pools (and of `also`): slots follow
        hosts that join, leave, fill up or fail, without waiting for a pool event."""
        entry = self.cache.hosts.get(host)
        for pool in sorted({*(entry.pools if entry is not None else ()), *also}):
            self.scheduler.refill_reservations(pool)

    @staticmethod
    def schedulable(vm: VirtualMachine) -> bool:
        """Unbound, not being deleted, and pending."""
        return (
            not vm.status.host
            and vm.metadata.deletion_timestamp is None
            and vm.status.phase in (VMPhase.PENDING,)
        )

    def request(self, vm: VirtualMachine) -> model.VMRequest | None:
        flavor = self.cache.flavors.get(vm.spec.flavor)
        try:
            return adapt.vm(
                vm, flavor.size if flavor else None, self.created_at.get(vm_key(vm), 0.0)
            )
        except ValueError:
            return None

    def recount_pending(self) -> None:
        """After a flavor or host appears: count bound VMs that could not be counted before,
        and queue pending VMs that had no known size."""
        for key, vm in self.vms.items():
            if vm.status.host and key not in self.cache.allocations:
                self._count_bound(key, vm, vm.status.host)
            elif self.schedulable(vm) and key not in self.queue and key not in self.binding:
                req = self.request(vm)
                if req is not None:
                    self.queue.push(req)

    # -- hosts, leases, flavors, pools --------------------------------------------------------

    def upsert_host(self, host: Host, now: dt.datetime) -> None:
        name = host.metadata.name
        added = name not in self.hosts
        entry = self.cache.hosts.get(name)
        before = _placement_view(entry.info) if entry is not None else None
        pools_before = list(entry.pools) if entry is not None else []
        self.hosts[name] = host
        self._refresh_host(name, now)
        load = host.status.load
        if load.reported_at is not None:  # the agents' report: load-aware scores, re-balance
            self.cache.report_load(name, load.cpu_percent, load.memory_percent, self.clock())
        if added:
            self._refill_pools_of(name)
            self.queue.on_event(QueueEvent.HOST_ADDED)
            self.recount_pending()
        elif before != _placement_view(self.cache.hosts[name].info):
            # Only what a filter reads wakes parked VMs: a load report, a heartbeat or our own
            # phase write, seen again, cannot make a VM fit.
            self._refill_pools_of(name, also=pools_before)
            self.queue.on_event(QueueEvent.HOST_CHANGED)

    def remove_host(self, name: str) -> None:
        self.hosts.pop(name, None)
        entry = self.cache.hosts.get(name)
        if entry is not None:
            pools = list(entry.pools)
            self.cache.remove_host(name)
            for pool in pools:
                self.scheduler.refill_reservations(pool)  # its slots are placed again elsewhere

    def _refresh_host(self, name: str, now: dt.datetime) -> None:
        """The Lease, not the Host's written phase, says whether a host is ready: the phase is
        only our own report of the Lease, and may lag it."""
        info = adapt.host(self.hosts[name], self._heartbeat_at(name, now))
        ready = self.host_phase(name, now) is HostPhase.READY
        self.cache.upsert_host(dataclasses.replace(info, ready=ready))

    def upsert_lease(self, host: str, lease: HostLease, now: dt.datetime) -> None:
        old = self.leases.get(host)
        self.leases[host] = lease
        if host in self.hosts:
            was_fresh = old is not None and old.fresh(now)
            self._refresh_host(host, now)
            if was_fresh != lease.fresh(now):
                self._refill_pools_of(host)  # slots leave a failed host, come back to a healed one
                self.queue.on_event(QueueEvent.HOST_CHANGED)

    def expire_leases(self, now: dt.datetime) -> list[str]:
        """Hosts whose Lease ran out since they were last refreshed; they take no new VMs."""
        expired = []
        for name, entry in self.cache.hosts.items():
            if entry.info.ready and self.host_phase(name, now) is not HostPhase.READY:
                expired.append(name)
        for name in expired:
            self._refresh_host(name, now)
            self._refill_pools_of(name)  # its reservation slots move to healthy hosts
        return expired

    def _heartbeat_at(self, host: str, now: dt.datetime) -> float:
        """The lease's renew time on the scheduler's clock."""
        lease = self.leases.get(host)
        if lease is None or lease.renew_time is None:
            return float("-inf")
        return self.clock() - (now - lease.renew_time).total_seconds()

    def upsert_flavor(self, flavor: Flavor) -> None:
        name = flavor.metadata.name
        info = adapt.flavor(flavor)
        self.flavors[name] = flavor
        if self.cache.flavors.get(name) == info:
            return  # a status write (vmCount), seen again: nothing to recount
        self.cache.upsert_flavor(info)
        self.recount_pending()

    def remove_flavor(self, name: str) -> None:
        self.flavors.pop(name, None)
        self.cache.remove_flavor(name)

    def upsert_pool(self, pool: ResourcePool) -> None:
        name = pool.metadata.name
        info = adapt.pool(pool)
        self.pools[name] = pool
        known = self.cache.pools.get(name)
        if known is not None and known.info == info:
            return  # a status write (ours, every status sync), seen again: nothing changed
        self.cache.upsert_pool(info)
        self.scheduler.refill_reservations(name)
        self.queue.on_event(QueueEvent.POOL_CHANGED)

    def remove_pool(self, name: str) -> None:
        self.pools.pop(name, None)
        self.cache.remove_pool(name)
        # With the pool gone no flavor is wanted: every slot it held goes back to its host.
        self.scheduler.refill_reservations(name)
        self.queue.on_event(QueueEvent.CAPACITY_FREED)

    # -- what the leader should write ----------------------------------------------------------

    def host_phase(self, name: str, now: dt.datetime) -> HostPhase:
        lease = self.leases.get(name)
        if lease is None:
            return HostPhase.UNKNOWN
        return HostPhase.READY if lease.fresh(now) else HostPhase.NOT_READY

    def flavor_counts(self) -> Counter[str]:
        return Counter(vm.spec.flavor for vm in self.vms.values())

    def pool_status(self, name: str) -> status.PoolStatus | None:
        return status.pool_status(
            self.cache, name, self.clock(), self.scheduler.config.heartbeat_max_age
        )

    def phases(self) -> Counter[str]:
        return Counter(vm.status.phase.value for vm in self.vms.values())

    def vms_on(self, host: str) -> list[VirtualMachine]:
        return [vm for vm in self.vms.values() if vm.status.host == host]

    def unbound_deleting(self) -> list[VirtualMachine]:
        """VMs being deleted that no agent will clean up: the operator releases them."""
        return [
            vm
            for vm in self.vms.values()
            if vm.metadata.deletion_timestamp is not None
            and not vm.status.host
            and constants.VM_FINALIZER in vm.metadata.finalizers
        ]
