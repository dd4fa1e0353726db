"""What the operator knows — the latest API objects and the scheduler state built from them —
and how each watch event changes it. Pure: no kopf, no Kubernetes client; the controller
feeds it parsed objects and performs the writes it asks for.

Every replica keeps a World warm from its watches; only the leader acts on it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import heapq
import logging
import random
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

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


_KEPT_METADATA = (
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "labels",
    "annotations",
    "finalizers",
    "deletionTimestamp",
)
"""What of a VM's metadata the operator reads; managedFields and the rest are dropped."""
_DROPPED_ANNOTATIONS = ("kubectl.kubernetes.io/last-applied-configuration",)


def lean_vm_body(body: Mapping[str, Any]) -> tuple[dict[str, Any], int]:
    """The VM as the operator holds it, and how many history entries the API server has.

    managedFields, last-applied-configuration and the other metadata nobody here reads are
    dropped on arrival, and of `status.history` only the last entry is kept: the operator
    never rewrites the history, it appends to it (`status_patch`), so it needs its length, not
    its entries. The body itself is not changed (shallow copies)."""
    meta_in = body.get("metadata") or {}
    meta = {k: meta_in[k] for k in _KEPT_METADATA if k in meta_in}
    annotations = meta.get("annotations")
    if annotations and any(a in annotations for a in _DROPPED_ANNOTATIONS):
        meta["annotations"] = {
            k: v for k, v in annotations.items() if k not in _DROPPED_ANNOTATIONS
        }
    lean = {k: v for k, v in body.items() if k not in ("metadata", "status")}
    lean["metadata"] = meta
    history_len = 0
    status = body.get("status")
    if status is not None:
        history = status.get("history")
        if history:
            history_len = len(history)
            status = {**status, "history": history[-1:]}
        lean["status"] = status
    return lean, history_len


def status_patch(
    held: VirtualMachine, new: Mapping[str, Any], history_len: int
) -> list[dict[str, Any]]:
    """A JSON patch (RFC 6902) for the status subresource taking `held` (as `lean_vm_body`
    left it; the server's history has `history_len` entries) to `new`, a status in merge-patch
    form (keys left out stay as they are, None removes one). Only what changed is written; new
    history entries are appended (`add /status/history/-`), the oldest removed beyond the
    bound, so a write never carries the whole history. The resourceVersion goes in as the
    precondition: a stale `held` gets 409, as with a merge patch."""
    ops: list[dict[str, Any]] = []
    if held.metadata.resource_version:
        rv = held.metadata.resource_version
        ops.append({"op": "replace", "path": "/metadata/resourceVersion", "value": rv})
    if "status" not in held.model_fields_set:
        whole = {k: v for k, v in new.items() if v is not None}
        ops.append({"op": "add", "path": "/status", "value": whole})
        return ops
    current = held.status.to_dict()
    for k, v in new.items():
        if k == "history":
            continue
        if v is None:
            if k in current:
                ops.append({"op": "remove", "path": f"/status/{k}"})
        elif current.get(k) != v:
            ops.append({"op": "add", "path": f"/status/{k}", "value": v})
    entries = list(new.get("history") or [])
    kept = current.get("history") or []
    if kept and kept[-1] in entries:
        entries = entries[len(entries) - entries[::-1].index(kept[-1]) :]
    elif kept and entries:
        entries = entries[-1:]  # the held entry fell off the bound: only the newest is new
    if not entries:
        return ops
    if history_len == 0 or "history" not in current:
        ops.append({"op": "add", "path": "/status/history", "value": entries})
        return ops
    n = history_len
    for entry in entries:
        if n >= constants.MAX_HISTORY:
            ops.append({"op": "remove", "path": "/status/history/0"})
            n -= 1
        ops.append({"op": "add", "path": "/status/history/-", "value": entry})
        n += 1
    return ops


class _Waiting:
    """VM keys waiting for a flavor (to know their size) or, bound ones, also for their host
    (to be counted on it), indexed by what they wait for."""

    def __init__(self) -> None:
        self._of: dict[str, tuple[str, str | None]] = {}
        self._by_flavor: dict[str, set[str]] = {}
        self._by_host: dict[str, set[str]] = {}

    def __contains__(self, key: str) -> bool:
        return key in self._of

    def __len__(self) -> int:
        return len(self._of)

    def add(self, key: str, flavor: str, host: str | None) -> None:
        self.discard(key)
        self._of[key] = (flavor, host)
        self._by_flavor.setdefault(flavor, set()).add(key)
        if host:
            self._by_host.setdefault(host, set()).add(key)

    def discard(self, key: str) -> None:
        flavor, host = self._of.pop(key, ("", None))
        for index, value in ((self._by_flavor, flavor), (self._by_host, host)):
            if value and (keys := index.get(value)) is not None:
                keys.discard(key)
                if not keys:
                    del index[value]

    def take(self, *, flavor: str | None = None, host: str | None = None) -> list[str]:
        """Remove and return the keys waiting for `flavor` or `host`."""
        keys = list(
            dict.fromkeys(
                [*self._by_flavor.get(flavor or "", ()), *self._by_host.get(host or "", ())]
            )
        )
        for key in keys:
            self.discard(key)
        return keys


def needs_metadata_write(vm: VirtualMachine) -> bool:
    """Whether the leader's metadata pass has something to do for this VM: the finalizer to
    add (bound) or remove (never bound), the quota to give back, or the Deleting phase to
    write. The pass visits only these VMs, not every VM each second."""
    fins = vm.metadata.finalizers
    deleting = vm.metadata.deletion_timestamp is not None
    host = vm.status.host
    if not deleting:
        # Bound VMs only: the webhook gives a new VM its finalizer; one it never saw gets it
        # from the bind.
        return bool(host) and constants.VM_FINALIZER not in fins
    if fins == [constants.QUOTA_FINALIZER]:
        return True
    if not host:
        return constants.VM_FINALIZER in fins
    return vm.status.phase is not VMPhase.DELETING


def _same_request(old: VMRecord | None, new: VirtualMachine) -> bool:
    """Whether `new` cannot ask for anything `old` did not: the same spec generation (the API
    server moves it on every spec change, never on a status write) and still pending. Without a
    generation (objects not from an API server) nothing is assumed."""
    return (
        old is not None
        and new.metadata.generation is not None
        and old.generation == new.metadata.generation
        and old.uid == new.metadata.uid
        and not old.host
        and old.phase is new.status.phase
        and not old.deleting
    )


@dataclass(slots=True)
class VMRecord:
    """What the World keeps of one VM: the fields its indexes and per-event passes read, the
    scheduler's request once built, and the rest of the (lean) object as JSON, parsed again
    only when an action needs the whole VM (a bind, a status write). About 2 KB where the
    parsed object took 15 (and the object as it came, with managedFields, 43)."""

    namespace: str
    resource_version: str | None
    generation: int | None
    uid: str | None
    host: str | None
    phase: VMPhase
    flavor: str
    deleting: bool
    json: bytes
    request: model.VMRequest | None = None

    @classmethod
    def of(cls, vm: VirtualMachine) -> VMRecord:
        m = vm.metadata
        return cls(
            namespace=m.namespace or "default",
            resource_version=m.resource_version,
            generation=m.generation,
            uid=m.uid,
            host=vm.status.host,
            phase=vm.status.phase,
            flavor=vm.spec.flavor,
            deleting=m.deletion_timestamp is not None,
            json=vm.model_dump_json(by_alias=True, exclude_unset=True).encode(),
        )

    def thaw(self) -> VirtualMachine:
        return VirtualMachine.model_validate_json(self.json)


class VMStore(Mapping[str, VirtualMachine]):
    """The VMs by key, as a read-only mapping of whole objects each parsed from its record
    when asked for (a fresh object every time: change one and nothing changes here)."""

    def __init__(self) -> None:
        self.records: dict[str, VMRecord] = {}

    def __getitem__(self, key: str) -> VirtualMachine:
        return self.records[key].thaw()

    def __iter__(self) -> Iterator[str]:
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def __contains__(self, key: object) -> bool:
        return key in self.records


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
        self.vms = VMStore()
        self.records = self.vms.records
        """The VMs' records: what per-event and per-second code reads instead of `vms`."""
        self.hosts: dict[str, Host] = {}
        self.flavors: dict[str, Flavor] = {}
        self.pools: dict[str, ResourcePool] = {}
        self.leases: dict[str, HostLease] = {}
        self.created_at: dict[str, float] = {}
        self.binding: set[str] = set()
        """VMs with a bind in flight: not to be queued again until it settles."""
        # Indexes kept up to date by every upsert and removal, so that no per-event or
        # per-second pass walks every VM.
        self._on_host: dict[str, dict[str, None]] = {}
        """host -> keys of the VMs whose status.host it is (insertion-ordered)."""
        self._phases: Counter[str] = Counter()
        self._flavors: Counter[str] = Counter()
        self.draining: set[str] = set()
        """Hosts the drain pass has work for: annotated `kubenova.io/drain`, or still carrying
        a `Drained` condition to take off. The pass visits only these, not every Host each
        second (28 % of the operator's CPU at 10,000 Hosts when it walked them all)."""
        self.attention: set[str] = set()
        """VMs `needs_metadata_write` says the metadata pass has work for."""
        self._expiries: list[tuple[dt.datetime, str]] = []
        """A heap of (when a Lease runs out, host), one entry per renewal seen: what
        `expire_leases` pops, instead of asking every host each second. An entry whose Lease
        was renewed since is stale and dropped when it comes due."""
        self.phase_checks: set[str] = set()
        """Hosts whose written phase may no longer be what their Lease says: a Host or Lease
        event, or a Lease running out. The status pass compares only these."""
        self._host_phases: dict[str, HostPhase] = {}
        self._in_phase: dict[HostPhase, set[str]] = {p: set() for p in HostPhase}
        """The hosts the status pass last found in each phase."""
        self._uncounted = _Waiting()
        """VMs that could not be counted or queued for want of their flavor or host: what
        `recount_pending` retries when that one appears."""
        self.history_len: dict[str, tuple[str | None, int]] = {}
        """VM key -> (resourceVersion, entries of status.history the API server holds), from
        `lean_vm_body`: what `status_patch` appends after."""

    def arrive(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """`lean_vm_body`, remembering the history length of the version that arrived."""
        lean, n = lean_vm_body(body)
        meta = lean["metadata"]
        key = f"{meta.get('namespace') or 'default'}/{meta.get('name')}"
        self.history_len[key] = (meta.get("resourceVersion"), n)
        return lean

    def status_patch(self, held: VirtualMachine, new: Mapping[str, Any]) -> list[dict[str, Any]]:
        """`status_patch` with the history length known for `held` (its own, when the latest
        arrival is another version: `held` is then stale and the patch gets 409 anyway)."""
        rv, n = self.history_len.get(vm_key(held), (None, len(held.status.history)))
        if rv != held.metadata.resource_version:
            n = max(n, len(held.status.history))
        return status_patch(held, new, n)

    def _index(
        self, key: str, old: VMRecord | None, new: VMRecord | None, vm: VirtualMachine | None
    ) -> None:
        if old is not None:
            if old.host:
                on = self._on_host.get(old.host)
                if on is not None:
                    on.pop(key, None)
                    if not on:
                        del self._on_host[old.host]
            self._phases[old.phase.value] -= 1
            self._flavors[old.flavor] -= 1
        if new is not None and vm is not None:
            if new.host:
                self._on_host.setdefault(new.host, {})[key] = None
            self._phases[new.phase.value] += 1
            self._flavors[new.flavor] += 1
            if needs_metadata_write(vm):
                self.attention.add(key)
            else:
                self.attention.discard(key)
        else:
            self.attention.discard(key)
            self._uncounted.discard(key)

    # -- VMs ----------------------------------------------------------------------------

    def upsert_vm(self, vm: VirtualMachine) -> None:
        key = vm_key(vm)
        old = self.records.get(key)
        record = VMRecord.of(vm)
        if old is not None and old.uid == record.uid and old.generation == record.generation:
            record.request = old.request  # the same spec: the same request (flavors aside)
        self.records[key] = record
        self._index(key, old, record, vm)
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
            if _same_request(old, vm) and self.queue.request(key) is not None:
                return  # its own status write seen again: the queued request stands
            req = self.request(vm)
            record.request = req
            if req is None:
                self._uncounted.add(key, vm.spec.flavor, None)
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
        record = self.records.get(key)
        if record is not None:
            record.request = req
        if req is None or host not in self.cache.hosts:
            self._uncounted.add(key, vm.spec.flavor, host)
            return  # counted once its flavor or host is known (see recount_pending)
        self._uncounted.discard(key)
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
        self._index(key, self.records.pop(key, None), None, None)
        self.history_len.pop(key, None)
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

    def recount_pending(self, *, flavor: str | None = None, host: str | None = None) -> None:
        """After `flavor` or `host` appears: count the bound VMs that waited for it, and queue
        the pending VMs that had no known size. Only those: O(VMs waiting for it), not O(all
        waiting) per Host added (a takeover sees thousands of Hosts arrive)."""
        for key in self._uncounted.take(flavor=flavor, host=host):
            if key not in self.records:
                continue
            vm = self.vms[key]
            if vm.status.host and key not in self.cache.allocations:
                self._count_bound(key, vm, vm.status.host)
            elif self.schedulable(vm) and key not in self.queue and key not in self.binding:
                req = self.request(vm)
                if req is not None:
                    self.queue.push(req)
                else:
                    self._uncounted.add(key, vm.spec.flavor, None)

    # -- hosts, leases, flavors, pools --------------------------------------------------------

    def upsert_host(self, host: Host, now: dt.datetime) -> None:
        name = host.metadata.name
        added = name not in self.hosts
        entry = self.cache.hosts.get(name)
        before = _placement_view(entry.info) if entry is not None else None
        pools_before = list(entry.pools) if entry is not None else []
        self.hosts[name] = host
        self.phase_checks.add(name)  # its written phase may have changed, or be ours, seen
        if constants.ANNOTATION_DRAIN in host.metadata.annotations or any(
            c.type == constants.COND_DRAINED for c in host.status.conditions
        ):
            self.draining.add(name)
        else:
            self.draining.discard(name)
        self._refresh_host(name, now)
        load = host.status.load
        if load.reported_at is not None:  # the agents' report: load-aware scores, re-balance
            self.cache.report_load(name, load.cpu_percent, load.memory_percent, self.clock())
        if added:
            self._refill_pools_of(name)
            self.queue.on_event(QueueEvent.HOST_ADDED)
            self.recount_pending(host=name)
        elif before != _placement_view(self.cache.hosts[name].info):
            # Only what a filter reads wakes parked VMs: a load report, a heartbeat or our own
            # phase write, seen again, cannot make a VM fit.
            self._refill_pools_of(name, also=pools_before)
            self.queue.on_event(QueueEvent.HOST_CHANGED)

    def remove_host(self, name: str) -> None:
        self.hosts.pop(name, None)
        self.draining.discard(name)
        self.phase_checks.discard(name)
        old = self._host_phases.pop(name, None)
        if old is not None:
            self._in_phase[old].discard(name)
        entry = self.cache.hosts.get(name)
        if entry is not None:
            pools = list(entry.pools)
            self.cache.remove_host(name)
            for pool in pools:
                self.scheduler.refill_reservations(pool)  # its slots are placed again elsewhere

    def _refresh_host(self, name: str, now: dt.datetime) -> None:
        """The Lease, not the Host's written phase, says whether a host is ready: the phase is
        only our own report of the Lease, and may lag it."""
        lease = self.leases.get(name)
        # Stale after the Lease's own duration, as `ready` is (with no Lease: stale already).
        max_age = lease.duration_seconds if lease is not None else 0.0
        info = adapt.host(self.hosts[name], self._heartbeat_at(name, now), max_age)
        ready = self.host_phase(name, now) is HostPhase.READY
        self.cache.upsert_host(dataclasses.replace(info, ready=ready))

    def upsert_lease(self, host: str, lease: HostLease, now: dt.datetime) -> None:
        old = self.leases.get(host)
        self.leases[host] = lease
        if lease.renew_time is not None:
            self._push_expiry(lease.renew_time + dt.timedelta(seconds=lease.duration_seconds), host)
        if host not in self.hosts:
            return
        was_fresh = old is not None and old.fresh(now)
        same = old is not None and old.duration_seconds == lease.duration_seconds
        if same and was_fresh == lease.fresh(now):
            # A renewal like every other (100/s at 10,000 hosts): only the heartbeat moves;
            # nothing a filter, a pool's status or the written phase reads.
            self.cache.heartbeat(host, self._heartbeat_at(host, now))
            return
        self._refresh_host(host, now)
        self.phase_checks.add(host)
        self._refill_pools_of(host)  # slots leave a failed host, come back to a healed one
        self.queue.on_event(QueueEvent.HOST_CHANGED)

    def remove_lease(self, host: str, now: dt.datetime) -> None:
        if self.leases.pop(host, None) is not None:
            self._push_expiry(now, host)  # the host is not ready from now on
            if host in self.hosts:
                self.phase_checks.add(host)  # Unknown now, whatever it was

    def _push_expiry(self, at: dt.datetime, host: str) -> None:
        heapq.heappush(self._expiries, (at, host))
        if len(self._expiries) > 2 * len(self.leases) + 1024:
            # Only the leader's status pass pops (a standby sees every renewal and expires
            # nothing), so the stale entries are dropped here: one entry per Lease as it now
            # is, and those of deleted Leases, still to come due.
            kept = [e for e in self._expiries if e[1] not in self.leases]
            kept += [
                (lease.renew_time + dt.timedelta(seconds=lease.duration_seconds), name)
                for name, lease in self.leases.items()
                if lease.renew_time is not None
            ]
            heapq.heapify(kept)
            self._expiries = kept

    def expire_leases(self, now: dt.datetime) -> list[str]:
        """Hosts whose Lease ran out since they were last refreshed; they take no new VMs.
        O(log n) per Lease come due, not a question to every host."""
        expired: list[str] = []
        while self._expiries and self._expiries[0][0] <= now:
            _, name = heapq.heappop(self._expiries)
            entry = self.cache.hosts.get(name)
            if entry is None or not entry.info.ready or name in expired:
                continue
            if self.host_phase(name, now) is not HostPhase.READY:
                expired.append(name)
        for name in expired:
            self._refresh_host(name, now)
            self.phase_checks.add(name)
            self._refill_pools_of(name)  # its reservation slots move to healthy hosts
        return expired

    def take_phase_checks(self) -> list[str]:
        """The hosts whose phase to compare with the written one, and forget them."""
        names, self.phase_checks = sorted(self.phase_checks), set()
        return names

    def note_host_phase(self, name: str, phase: HostPhase) -> None:
        """What the status pass found a host's phase to be, for the per-phase counts."""
        old = self._host_phases.get(name)
        if old is not None:
            self._in_phase[old].discard(name)
        self._host_phases[name] = phase
        self._in_phase[phase].add(name)

    def host_phase_counts(self) -> Counter[HostPhase]:
        return Counter({p: len(names) for p, names in self._in_phase.items() if names})

    def hosts_found(self, phase: HostPhase) -> list[str]:
        """The hosts the status pass last found in `phase`, in name order."""
        return sorted(self._in_phase[phase])

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
        self._refill_pools_wanting(name)  # a pool seen before its flavor places its slots now
        self.recount_pending(flavor=name)

    def remove_flavor(self, name: str) -> None:
        self.flavors.pop(name, None)
        self.cache.remove_flavor(name)
        self._refill_pools_wanting(name)  # its slots go back to their hosts

    def _refill_pools_wanting(self, flavor: str) -> None:
        for pool, state in sorted(self.cache.pools.items()):
            if any(f == flavor for f, _ in state.info.reservations):
                self.scheduler.refill_reservations(pool)

    def upsert_pool(self, pool: ResourcePool) -> None:
        name = pool.metadata.name
        info = adapt.pool(pool)
        self.pools[name] = pool
        known = self.cache.pools.get(name)
        if known is not None and known.info == info:
            # A status write (ours, or someone's to put right): nothing for the scheduler, but
            # its status is compared again on the next pass.
            self.cache.changed_pools.add(name)
            return
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
        return +self._flavors

    def pool_status(self, name: str) -> status.PoolStatus | None:
        return status.pool_status(self.cache, name, self.clock())

    def phases(self) -> Counter[str]:
        return +self._phases

    def vms_on(self, host: str) -> list[VirtualMachine]:
        """The VMs bound to `host`, from the index: O(its VMs)."""
        return [self.vms[k] for k in self._on_host.get(host, ())]

    def needing_metadata(self) -> list[VirtualMachine]:
        """The VMs the metadata pass has work for, in key order."""
        return [self.vms[k] for k in sorted(self.attention) if k in self.vms]

    def unbound_deleting(self) -> list[VirtualMachine]:
        """VMs being deleted that no agent will clean up: the operator releases them."""
        return [
            vm
            for vm in self.needing_metadata()
            if vm.metadata.deletion_timestamp is not None
            and not vm.status.host
            and constants.VM_FINALIZER in vm.metadata.finalizers
        ]
