"""The operator's I/O: watch events into the World, leader election, the scheduling loop that
binds VMs, and the status writes of VMs, Hosts, Flavors and ResourcePools.

Writes happen only while this replica leads, and every write that rests on a decision carries
the object's resourceVersion, so a deposed leader's stale decision fails with 409 instead of
landing.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import kubernetes
from kubernetes.client.exceptions import ApiException

from kubenova.api import (
    Flavor,
    Host,
    InvalidObjectError,
    ResourcePool,
    VirtualMachine,
    constants,
    lifecycle,
)
from kubenova.api.host import HostPhase
from kubenova.api.meta import Condition, ConditionStatus, Resource, set_condition
from kubenova.api.vm import VMPhase
from kubenova.kube import aio, logs
from kubenova.kube.events import EventRecorder, ref_of
from kubenova.kube.leases import LeaseClient, LeaseRecord
from kubenova.kube.watch import Reflector
from kubenova.operator import (
    drains,
    fencing,
    hostfailure,
    loops,
    metrics,
    migrations,
    rebalancing,
)
from kubenova.operator.context import Context, Writes
from kubenova.operator.election import ElectionConfig, LeaderElector, deposed_at
from kubenova.operator.migration_flow import Limits
from kubenova.operator.world import HostLease, World, vm_key
from kubenova.quota import ledger
from kubenova.quota import store as quota_store
from kubenova.scheduler.framework import Decision, SchedulerConfig, Unschedulable

log = logging.getLogger(__name__)
R = TypeVar("R", bound=Resource)

HOST_LEASE_PREFIX = "kubenova-host-"
ACTOR = "operator"
CATCH_UP_SECONDS = 10.0
"""How long a new leader waits for a watch to catch up with a consistent read before it lists
that kind again instead."""
NOTHING = "kubenova.io/consistency-barrier=none"
"""A label selector no object matches: a list with it is a consistent read of a collection's
resourceVersion that carries no objects."""


@dataclass(frozen=True)
class Settings:
    identity: str
    namespace: str = "kubenova-system"
    """Where the leader Lease and the hosts' heartbeat Leases live."""
    leader_lease: str = "kubenova-operator"
    election: ElectionConfig = field(default_factory=ElectionConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    bind_concurrency: int = 256
    """Binds in flight at once. More than the client's connections (`aio.CONNECTIONS`): the
    waiting ones take a connection as soon as one is free, and the API server and etcd get the
    writes in larger batches (at 1,000 hosts, against 16: etcd's CPU per bind -40 %, binds/s
    +18 %; docs/benchmarks.md, 4 Dec 2026)."""
    status_period: float = 1.0
    pool_status_period: float = 5.0
    """Seconds between two computations of a pool's status while its hosts or VMs change
    (each walks the pool's hosts and allocations: 0.1 s at 10,000 hosts / 100,000 VMs)."""
    pool_status_resync: float = 60.0
    """Seconds after which every pool's status is computed again, changed or not (a host's
    heartbeat grows stale with time alone)."""
    quota_recount_period: float = 60.0
    watch_timeout: int = 60
    migration_limits: Limits = field(default_factory=Limits)
    host_failure_grace: float = 60.0
    """Seconds after a host's Lease expired before its (fenced) VMs are recreated elsewhere."""
    rebalance_period: float = 60.0
    drain_max_attempts: int = 3
    """Failed live migrations of a VM before a drain shuts it down instead."""
    assumption_ttl: float = 30.0
    """Seconds an assumed placement may wait for the watch to confirm it before the API is
    asked what became of its bind."""
    migration_retention: float = 3600.0
    """Seconds a finished VMMigration stays before the leader deletes it."""


def _older(a: Resource, b: Resource) -> bool:
    """Is `a` an older copy of the object than `b`? resourceVersions are opaque to clients,
    but kube-apiserver's are etcd revisions; anything else counts as not older."""
    try:
        return int(a.metadata.resource_version or "") < int(b.metadata.resource_version or "")
    except ValueError:
        return False


def _rv_not_newer(rv: str | None, known: str | None) -> bool:
    """Is `rv` the version `known` or an older one (see `_older`)?"""
    if rv is not None and rv == known:
        return True
    try:
        return int(rv or "") < int(known or "")
    except ValueError:
        return False


def parse(kind: type[R], body: Mapping[str, Any]) -> R | None:
    try:
        return kind.parse(dict(body))
    except InvalidObjectError as e:
        log.error("ignoring invalid object: %s", e)
        return None


class Controller:
    def __init__(self, settings: Settings, api: kubernetes.client.ApiClient) -> None:
        self.settings = settings
        self.api = api
        self.http = aio.Session(api)
        """The asynchronous client of the hot paths (binds, status writes, lists)."""
        self.watches: list[Reflector] = []
        """The list-and-watches of VMs, Hosts and Leases (`handlers` starts them); a new
        leader catches each up instead of listing its kind again."""
        self.ledger = ledger.QuotaLedger(quota_store.ApiStore(self.http))
        self.world = World(clock=time.monotonic, config=settings.scheduler)
        self.recorder = EventRecorder(api, "kubenova-operator", settings.identity)
        self.elector = LeaderElector(
            LeaseClient(api, settings.namespace, settings.leader_lease),
            settings.identity,
            settings.election,
            on_started=self._takeover,
            on_stopped=self._stepdown,
            on_expiring=self._expiring,
        )
        self._preparing: asyncio.Task[dt.datetime] | None = None
        """A standby's catch-up of its watches, started when the leader went silent."""
        self.wake = asyncio.Event()
        self.writes = Writes(self.http, self.world)
        self.ctx = Context(self.world, self.writes, self.recorder, self.leading, self.wake)
        """What the controllers beside this one get (none of them gets this Controller)."""
        self.binds = asyncio.Semaphore(settings.bind_concurrency)
        self._tasks: list[asyncio.Task[None]] = []
        self._pools_changed: set[str] = set()
        self._pools_synced_at = self._pools_resynced_at = float("-inf")
        self._binding_tasks: set[asyncio.Task[None]] = set()
        self._leading = False
        self.migrations = migrations.MigrationController(
            self.ctx, settings.migration_limits, retention=settings.migration_retention
        )
        self.host_failure = hostfailure.HostFailureController(
            self.ctx, settings.host_failure_grace, fencing.AdminConfirmation()
        )
        self.drains = drains.DrainController(self.ctx, self.migrations, settings.drain_max_attempts)
        self.rebalance = rebalancing.RebalanceController(
            self.ctx, self.migrations, settings.rebalance_period
        )

    # -- watch events (every replica) ---------------------------------------------------------

    def parse_vm(self, body: Mapping[str, Any]) -> VirtualMachine | None:
        """A VM from the API as the operator holds it (`World.arrive`: lean, its history
        length remembered). Every VM the operator reads goes through here."""
        return parse(VirtualMachine, self.world.arrive(body))

    def on_vm(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        meta = body["metadata"]
        key = f"{meta.get('namespace', 'default')}/{meta['name']}"
        if event_type == "DELETED":
            self.world.remove_vm(key)
        else:
            known = self.world.records.get(key)
            if known is not None and _rv_not_newer(
                meta.get("resourceVersion"), known.resource_version
            ):
                # A lagging watch's copy of a VM this replica has since read afresh, or the
                # same version again (a re-list): nothing to parse.
                return
            vm = self.parse_vm(body)
            if vm is None:
                return
            self.world.upsert_vm(vm)
        self.wake.set()

    def on_host(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        if event_type == "DELETED":
            self.world.remove_host(body["metadata"]["name"])
            return
        host = parse(Host, body)
        if host is not None:
            self.world.upsert_host(host, dt.datetime.now(dt.UTC))
            self.wake.set()

    def on_flavor(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        if event_type == "DELETED":
            self.world.remove_flavor(body["metadata"]["name"])
            return
        flavor = parse(Flavor, body)
        if flavor is not None:
            self.world.upsert_flavor(flavor)
            self.wake.set()

    def on_pool(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        if event_type == "DELETED":
            self.world.remove_pool(body["metadata"]["name"])
            return
        pool = parse(ResourcePool, body)
        if pool is not None:
            self.world.upsert_pool(pool)
            self.wake.set()

    def on_migration(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        self.migrations.on_event(event_type, body)

    def on_lease(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        name = (body.get("metadata") or {}).get("name") or ""
        if not name.startswith(HOST_LEASE_PREFIX):
            return
        host = name.removeprefix(HOST_LEASE_PREFIX)
        if event_type == "DELETED":
            self.world.remove_lease(host, dt.datetime.now(dt.UTC))
            self.wake.set()
            return
        spec = body.get("spec") or {}
        renewed = spec.get("renewTime")
        try:
            renew_time = dt.datetime.fromisoformat(renewed) if renewed else None
        except (TypeError, ValueError):
            log.error("ignoring Lease %s: renewTime %r is not a time", name, renewed)
            return
        record = HostLease(renew_time, spec.get("leaseDurationSeconds") or 40)
        self.world.upsert_lease(host, record, dt.datetime.now(dt.UTC))
        self.wake.set()

    # -- running --------------------------------------------------------------------------------

    def start(self) -> None:
        loops = (
            self.elector.run(),
            self.recorder.run(),
            self._schedule_loop(),
            self._status_loop(),
            self._quota_loop(),
            self.migrations.run(),
            self.host_failure.run(),
            self.drains.run(),
            self.rebalance.run(),
            self._assumption_loop(),
        )
        self._tasks = [asyncio.create_task(c) for c in loops]

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await self.elector.release()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.http.close()
        await self.elector.leases.close()

    async def _takeover(self) -> None:
        """Before the first decision, the caches must be the API's as of now, as kube-scheduler
        waits for its informers to sync: bindings the previous leader made just before it
        stepped down are counted (nothing is double-booked) and no VM is judged against a
        half-known cluster. Every replica watches VMs, Hosts and Leases, so a warm standby
        holds them already: each watch is caught up to a consistent read instead of listing
        100,000 VMs again. The kinds kopf watches are few, and listed."""
        for plural, handler in (("flavors", self.on_flavor), ("resourcepools", self.on_pool)):
            for item in await self.writes.list(plural):
                handler("ADDED", item)
        if not await self._prepared():
            await asyncio.gather(*(self._catch_up(w) for w in self.watches))
        for item in await self.writes.list("vmmigrations"):
            self.on_migration("ADDED", item)
        self._pools_resynced_at = float("-inf")  # every pool's status on the first pass
        self._leading = True
        metrics.LEADER.set(1)
        vms, hosts = len(self.world.vms), len(self.world.hosts)
        log.info("leading: %d VMs, %d hosts in the cache", vms, hosts)
        self.wake.set()

    def _expiring(self, previous: LeaseRecord) -> None:
        """The leader has been silent past its renew deadline, so it writes no more (it deposes
        itself then), and its lease is about to run out: catch the watches up now, while
        waiting for it, rather than after taking the lease."""
        if self._preparing is not None and not self._preparing.done():
            return
        if not self.watches or any(w.lists == 0 for w in self.watches):
            return  # not listed yet: nothing warm to catch up
        self._preparing = asyncio.create_task(self._prepare())

    async def _prepare(self) -> dt.datetime:
        at = dt.datetime.now(dt.UTC)
        await asyncio.gather(*(self._catch_up(w) for w in self.watches))
        return at

    async def _prepared(self) -> bool:
        """Whether the watches were caught up, while this replica waited for the lease, to a
        read taken after the previous leader's renew deadline: everything it wrote is then
        in the caches, and the take-over need not catch up again."""
        task, self._preparing = self._preparing, None
        previous = self.elector.took_over
        deposed = deposed_at(previous, self.settings.election) if previous else None
        if task is None or deposed is None:
            if task is not None:
                task.cancel()
            return False
        try:
            at = await task
        except Exception as e:
            log.warning("catching up before the lease expired failed: %s", e)
            return False
        if at < deposed:
            return False
        log.info(
            "caught up before the lease expired (%.2f s after the leader's renew deadline)",
            (at - deposed).total_seconds(),
        )
        return True

    async def _catch_up(self, watch: Reflector) -> None:
        """`watch` has delivered everything a consistent read now sees (its list's
        resourceVersion, reached by the watch's events and bookmarks); where that cannot be
        shown within CATCH_UP_SECONDS (opaque versions, a stalled watch), it lists again."""
        started = time.monotonic()
        barrier = await self.http.call("GET", watch.path, params={"labelSelector": NOTHING})
        version = (barrier.get("metadata") or {}).get("resourceVersion") or ""
        # A replica that leads as soon as it starts is still listing: the list, then the
        # watch from its version, brings it to the barrier; listing again would not.
        await watch.listed()
        if await watch.reach(version, CATCH_UP_SECONDS):
            how = "caught up"
        else:
            log.warning("%s: the watch did not reach %r; listing again", watch.name, version)
            await watch.relist()
            how = "listed again"
        log.info("%s: %s in %.2f s", watch.name, how, time.monotonic() - started)

    def _stepdown(self) -> None:
        self._leading = False
        metrics.LEADER.set(0)

    def leading(self) -> bool:
        return self._leading and self.elector.is_leader()

    # -- the scheduling loop (leader) ------------------------------------------------------------

    async def _schedule_loop(self) -> None:
        while True:
            if not self.leading():
                await self._sleep_until_woken(1.0)
                continue
            req = self.world.queue.pop()
            self._report_queue()
            if req is None:
                nxt = self.world.queue.next_wake()
                delay = 1.0 if nxt is None else max(0.0, min(1.0, nxt - time.monotonic()))
                await self._sleep_until_woken(delay)
                continue
            vm = self.world.vms.get(req.key)
            if vm is None or not self.world.schedulable(vm):
                self.world.queue.done(req.key)
                continue
            started = time.perf_counter()
            result = self.world.scheduler.schedule(req)
            metrics.SCHEDULING_SECONDS.observe(time.perf_counter() - started)
            if isinstance(result, Unschedulable):
                self.world.queue.unschedulable(req, result.reasons)
                await self._mark_unschedulable(vm, result)
                continue
            self.world.binding.add(req.key)
            await self.binds.acquire()
            task = asyncio.create_task(self._bind(vm, result, self.world.created_at.get(req.key)))
            self._binding_tasks.add(task)
            task.add_done_callback(self._binding_tasks.discard)
            await asyncio.sleep(0)  # let watch events in between decisions

    async def _sleep_until_woken(self, timeout: float) -> None:
        self.wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wake.wait(), timeout)

    def _report_queue(self) -> None:
        for name, n in self.world.queue.counts().items():
            metrics.QUEUE_DEPTH.labels(name).set(n)

    async def _bind(self, vm: VirtualMachine, decision: Decision, seen_at: float | None) -> None:
        key = vm_key(vm)
        # The webhook gives each VM its trace id; without webhooks the operator does, here.
        trace_id = vm.metadata.annotations.get(constants.ANNOTATION_TRACE_ID) or logs.new_trace_id()
        try:
            with logs.trace(trace_id):
                ok = await self._write_binding(vm, decision, trace_id)
            if ok:
                metrics.BINDS.labels("success").inc()
                if seen_at is not None:
                    metrics.PENDING_TO_BOUND_SECONDS.observe(time.monotonic() - seen_at)
                self.world.queue.done(key)
            elif ok is None:
                self._forget(key)  # not leading: nothing was written
            else:
                # A conflict may follow our own write whose reply was lost, whether or not we
                # still lead: the API says which.
                await self._settle_bind(vm, decision.host)
        except Exception:
            log.exception("binding %s failed", key)
            metrics.BINDS.labels("error").inc()
            await self._settle_bind(vm, decision.host)
        finally:
            self.world.binding.discard(key)
            self.binds.release()

    def _forget(self, key: str, fresh: VirtualMachine | None = None) -> None:
        """Undo the assumption and queue the VM again if it is still pending (as `fresh`, when
        the API was just read, so the next bind carries a current resourceVersion)."""
        self.world.binding.discard(key)  # so the upsert below can queue it again
        self.world.cache.forget(key)
        self.world.queue.done(key)
        vm = self._newest(fresh) if fresh is not None else self.world.vms.get(key)
        if vm is not None:
            self.world.upsert_vm(vm)  # back in the queue if still pending
        self.wake.set()

    def _newest(self, fresh: VirtualMachine) -> VirtualMachine | None:
        """`fresh` unless the watch has since delivered a newer copy; None if it saw the VM
        deleted."""
        known = self.world.vms.get(vm_key(fresh))
        if known is None:
            return None
        return known if _older(fresh, known) else fresh

    async def _settle_bind(self, vm: VirtualMachine, host: str) -> None:
        """A bind that failed may have landed: a status write whose reply was lost is retried
        by the client and answered 409 (the first attempt moved the resourceVersion on), and a
        write that timed out or lost its connection may or may not have happened. Forgetting
        the assumption then would free room the VM really holds, and the next decision would
        over-commit the host. So the API is asked. Unreadable now: the room stays held, and
        `_settle_expired` asks again once the assumption has waited `assumption_ttl`."""
        key = vm_key(vm)
        try:
            body = await self.writes.read_vm(vm)
        except ApiException as e:
            if e.status == 404:
                self._forget(key)  # gone; the watch's DELETED event removes it
                return
            log.warning("bind of %s to %s: outcome unknown (%s); room kept", key, host, e.status)
            metrics.BINDS.labels("uncertain").inc()
            return
        except Exception as e:
            log.warning("bind of %s to %s: outcome unknown (%s); room kept", key, host, e)
            metrics.BINDS.labels("uncertain").inc()
            return
        fresh = self.parse_vm(body)
        if fresh is None:
            self._forget(key)
            return
        if fresh.status.host == host:
            # It landed; only its reply was lost. Count it as bound, as the watch will.
            log.info("bind of %s to %s had landed (its reply was lost)", key, host)
            metrics.BINDS.labels("landed-unseen").inc()
            self.world.queue.done(key)
            newest = self._newest(fresh)
            if newest is not None:
                self.world.upsert_vm(newest)
            try:
                await self._add_finalizer(fresh, host, fresh.metadata.resource_version or "")
            except Exception as e:  # the status loop adds it on its next pass
                log.warning("adding the finalizer to %s failed: %s", key, e)
            return
        if fresh.status.host:
            log.info("%s is bound to %s by another decision", key, fresh.status.host)
        self._forget(key, fresh)  # unbound: queued again; bound elsewhere: counted there

    async def _assumption_loop(self) -> None:
        await loops.while_leading(
            lambda: max(1.0, self.settings.assumption_ttl / 4),
            self.leading,
            self._settle_expired,
            "assumption sweep",
        )

    async def _settle_expired(self) -> None:
        """Assumptions the watch never confirmed — their bind's outcome was unknown and the
        API could not be read then — are settled by reading the API now."""
        now = self.world.clock()
        for key in self.world.cache.expired_assumptions(now, self.settings.assumption_ttl):
            alloc = self.world.cache.allocations.get(key)
            vm = self.world.vms.get(key)
            if key in self.world.binding or alloc is None:
                continue  # a bind is in flight: it settles itself
            if vm is None:
                self.world.cache.forget(key)  # deleted meanwhile
                continue
            await self._settle_bind(vm, alloc.host)
        metrics.HOSTS_OVER_CAPACITY.set(len(self.world.cache.hosts_over_capacity()))

    async def _write_binding(
        self, vm: VirtualMachine, decision: Decision, trace_id: str | None
    ) -> bool | None:
        """One status write (host, GPUs, phase Scheduled) with the VM's resourceVersion as
        precondition: status.host is the binding, and the agents' field selector. A VM the
        webhook never saw lacks the domain-cleanup finalizer; only then a second write adds it.
        True: bound; False: 404/409, which may follow a write of ours that landed; None: not
        leading, nothing written."""
        if not self.leading():
            return None
        now = dt.datetime.now(dt.UTC)
        message = f"bound to host {decision.host}"
        if decision.reservation:
            message += " (reserved slot)"
        change = lifecycle.Change(lifecycle.Event.BOUND, ACTOR, message, trace_id)
        new_status, _ = lifecycle.apply(vm.status, change, now)
        new_status = new_status.model_copy(
            update={"host": decision.host, "gpu_devices": list(decision.gpus)}
        )
        started = time.perf_counter()
        try:
            updated = await self.writes.vm_status(vm, new_status.to_dict(), metadata_only=True)
        except ApiException as e:
            if e.status in (404, 409):
                metrics.BINDS.labels("conflict").inc()
                log.info("bind of %s lost a race (%s); retrying", vm_key(vm), e.status)
                return False
            raise
        # The API answered: bound, whenever the watch shows it (under load it lags by tens of
        # seconds, and the sweep of unconfirmed binds would read each such VM back).
        self.world.cache.confirm(vm_key(vm))
        if constants.VM_FINALIZER not in vm.metadata.finalizers:
            await self._add_finalizer(vm, decision.host, updated["metadata"]["resourceVersion"])
        metrics.BIND_SECONDS.observe(time.perf_counter() - started)
        log.info("bound %s to %s", vm_key(vm), decision.host, extra={"score": decision.score})
        self.recorder.emit(ref_of(vm), "Normal", "Scheduled", message)
        return True

    async def _add_finalizer(self, vm: VirtualMachine, host: str, rv: str) -> None:
        """The domain-cleanup finalizer of a bound VM that lacks it (created while no webhook
        ran), with a trace id when it has none. Retried on conflicts while the VM stays bound
        to `host`: a merge patch replaces the list, so each try carries the list it read."""
        meta: dict[str, Any] = {}
        if constants.ANNOTATION_TRACE_ID not in vm.metadata.annotations:
            trace = next((h.trace_id for h in reversed(vm.status.history) if h.trace_id), None)
            meta["annotations"] = {constants.ANNOTATION_TRACE_ID: trace or logs.new_trace_id()}
        fins = list(vm.metadata.finalizers)
        for _ in range(5):
            if vm.metadata.deletion_timestamp is not None or constants.VM_FINALIZER in fins:
                return
            patch = {"resourceVersion": rv, **meta, "finalizers": [*fins, constants.VM_FINALIZER]}
            try:
                await self.writes.vm_meta(vm, patch)
                return
            except ApiException as e:
                if e.status != 409:
                    raise
                fresh = await self.writes.read_vm(vm)
                if fresh.get("status", {}).get("host") != host:
                    return  # someone else decided since
                vm = self.parse_vm(fresh) or vm
                rv = fresh["metadata"]["resourceVersion"]
                fins = list(fresh["metadata"].get("finalizers") or [])
        log.error("could not add the finalizer to %s after 5 conflicts", vm_key(vm))

    async def _mark_unschedulable(self, vm: VirtualMachine, why: Unschedulable) -> None:
        reason = min(why.reasons, key=lambda r: r.value).value if why.reasons else "Unknown"
        metrics.UNSCHEDULABLE.labels(reason).inc()
        change = lifecycle.Change(
            lifecycle.Event.UNSCHEDULABLE,
            ACTOR,
            why.message,
            vm.metadata.annotations.get(constants.ANNOTATION_TRACE_ID),
        )
        new_status, _ = lifecycle.apply(vm.status, change, dt.datetime.now(dt.UTC))
        if new_status is vm.status or not self.leading():
            return  # the same explanation is already there
        try:
            await self.writes.vm_status(vm, new_status.to_dict())
        except ApiException as e:
            if e.status not in (404, 409):
                raise
            return
        self.recorder.emit(ref_of(vm), "Warning", "FailedScheduling", why.message)

    # -- status of VMs being deleted, Hosts, Flavors, Pools (leader) ---------------------------

    async def _status_loop(self) -> None:
        await loops.while_leading(
            lambda: self.settings.status_period, self.leading, self._sync_statuses, "status sync"
        )

    async def _quota_loop(self) -> None:
        await loops.while_leading(
            lambda: self.settings.quota_recount_period, self.leading, self._recount, "quota recount"
        )

    async def _recount(self) -> None:
        """Recount every namespace's quota usage from its VMs, healing drift (a charge whose
        VM create failed after admission, a release lost to a crash)."""
        for q in await self.writes.list("vmquotas"):
            await ledger.recount_namespace(self.http, q["metadata"]["namespace"], self.ledger)

    async def _sync_statuses(self) -> None:
        now = dt.datetime.now(dt.UTC)
        if self.world.expire_leases(now):
            self.wake.set()
        await self._sync_vm_metadata()
        phases = self.world.phases()
        for phase in VMPhase:
            metrics.VMS.labels(phase.value).set(phases.get(phase.value, 0))
        # Only the hosts a Host or Lease event, or a Lease running out, may have changed.
        checks = self.world.take_phase_checks()
        for i, name in enumerate(checks):
            host = self.world.hosts.get(name)
            if host is None:
                continue
            host_phase = self.world.host_phase(name, now)
            self.world.note_host_phase(name, host_phase)
            if host.status.phase is not host_phase:
                try:
                    await self._set_host_phase(host, host_phase, now)
                except Exception:
                    self.world.phase_checks.update(checks[i:])  # again on the next pass
                    raise
        by_phase = self.world.host_phase_counts()
        for state in HostPhase:
            metrics.HOSTS.labels(state.value).set(by_phase.get(state, 0))
        counts = self.world.flavor_counts()
        for name, flavor in list(self.world.flavors.items()):
            used = counts.get(name, 0)
            if flavor.status.vm_count != used or (
                flavor.status.observed_generation != flavor.metadata.generation
            ):
                status = {"vmCount": used, "observedGeneration": flavor.metadata.generation}
                await self.writes.cluster_status("flavors", name, status)
        await self._sync_pools()
        metrics.EVENTS_DROPPED.set(self.recorder.dropped)

    async def _sync_pools(self) -> None:
        """The status of the pools whose hosts, VMs, flavors or selector changed, at most
        every `pool_status_period`, and of every pool every `pool_status_resync`: a pass
        walks a pool's hosts and allocations, so it is not run every second for nothing."""
        self._pools_changed |= self.world.cache.take_changed_pools()
        now = self.world.clock()
        if now - self._pools_resynced_at >= self.settings.pool_status_resync:
            self._pools_resynced_at = now
            self._pools_changed.update(self.world.pools)
        elif now - self._pools_synced_at < self.settings.pool_status_period:
            return
        self._pools_synced_at = now
        names, self._pools_changed = sorted(self._pools_changed), set()
        for i, name in enumerate(names):
            pool = self.world.pools.get(name)
            if pool is None:
                continue
            try:
                await self._sync_pool(pool)
            except Exception:
                self._pools_changed.update(names[i:])  # not written: again on the next pass
                raise

    async def _sync_vm_metadata(self) -> None:
        """Finalizers (a leader may die between a bind and the finalizer of a VM no webhook
        saw), and the Deleting phase: only the VMs the World marks as needing one."""
        for vm in self.world.needing_metadata():
            fins = vm.metadata.finalizers
            deleting = vm.metadata.deletion_timestamp is not None
            host = vm.status.host
            try:
                if host and not deleting and constants.VM_FINALIZER not in fins:
                    if vm_key(vm) not in self.world.binding:  # the bind adds it itself
                        await self._add_finalizer(vm, host, vm.metadata.resource_version or "")
                elif deleting and fins == [constants.QUOTA_FINALIZER]:
                    # The domain is gone (no other finalizer left): give the quota back.
                    await ledger.release_charge(self.http, vm, self.ledger)
                elif deleting and not vm.status.host and constants.VM_FINALIZER in fins:
                    # Never bound: no agent has a domain to clean up.
                    await self.writes.vm_meta(
                        vm,
                        {
                            "resourceVersion": vm.metadata.resource_version,
                            "finalizers": [f for f in fins if f != constants.VM_FINALIZER],
                        },
                    )
                elif deleting and vm.status.host and vm.status.phase is not VMPhase.DELETING:
                    change = lifecycle.Change(
                        lifecycle.Event.DELETE_REQUESTED,
                        ACTOR,
                        f"deleting; waiting for the agent on {vm.status.host}",
                        vm.metadata.annotations.get(constants.ANNOTATION_TRACE_ID),
                    )
                    new_status, _ = lifecycle.apply(vm.status, change, dt.datetime.now(dt.UTC))
                    await self.writes.vm_status(vm, new_status.to_dict())
                    self.recorder.emit(ref_of(vm), "Normal", "Deleting", change.message)
            except ApiException as e:
                if e.status not in (404, 409):
                    raise

    async def _set_host_phase(self, host: Host, phase: HostPhase, now: dt.datetime) -> None:
        ready = phase is HostPhase.READY
        cond = Condition(
            type=constants.COND_HOST_READY,
            status=ConditionStatus.TRUE if ready else ConditionStatus.FALSE,
            reason=constants.REASON_HEARTBEAT_FRESH
            if ready
            else constants.REASON_HEARTBEAT_EXPIRED,
            message="heartbeat Lease is fresh" if ready else "heartbeat Lease expired or missing",
        )
        conds = set_condition(host.status.conditions, cond, now)
        status = {"phase": phase.value, "conditions": [c.to_dict() for c in conds]}
        await self.writes.cluster_status("hosts", host.metadata.name, status)
        log.info("host %s is %s", host.metadata.name, phase.value)
        kind = "Normal" if ready else "Warning"
        self.recorder.emit(ref_of(host), kind, f"Host{phase.value}", cond.message)

    async def _sync_pool(self, pool: ResourcePool) -> None:
        from kubenova.scheduler import adapt  # the only adapter back to the API

        computed = self.world.pool_status(pool.metadata.name)
        if computed is None:
            return
        new = adapt.pool_status(computed).model_copy(
            update={
                "observed_generation": pool.metadata.generation,
                "conditions": pool.status.conditions,
            }
        )
        for res, cap, alloc, held in (
            ("vcpus", computed.capacity.vcpus, computed.allocated.vcpus, computed.reserved.vcpus),
            (
                "memory_bytes",
                computed.capacity.memory_mib * 2**20,
                computed.allocated.memory_mib * 2**20,
                computed.reserved.memory_mib * 2**20,
            ),
            ("gpus", computed.capacity.gpus, computed.allocated.gpus, computed.reserved.gpus),
        ):
            metrics.POOL_CAPACITY.labels(pool.metadata.name, res).set(cap)
            metrics.POOL_ALLOCATED.labels(pool.metadata.name, res).set(alloc)
            metrics.POOL_RESERVED.labels(pool.metadata.name, res).set(held)
        for flavor, n in computed.available.items():
            metrics.POOL_FITS.labels(pool.metadata.name, flavor).set(n)
        if new.to_dict() != pool.status.to_dict():
            await self.writes.cluster_status("resourcepools", pool.metadata.name, new.to_dict())
