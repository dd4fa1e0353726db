"""The VMMigration controller (leader only): each pass asks `migration_flow.next_step()` what
to do with every migration and does it. Does I/O.

Start: the target is checked (or chosen) by the scheduler and its room reserved in the cache
(`scheduler.targets`), then the VM gets the migration annotations (target, its libvirt URI)
and the phase Migrating; from there its source agent drives libvirt and reports `transfer`.
Success re-points the VM (status.host, then the host label) to the target in the same tick as
the cache moves its allocation; failure, cancel (deleting the VMMigration) and timeout leave it
Running on the source. No VM object is ever created here, so quota is charged once.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import heapq
import logging
import time
from collections.abc import Mapping
from typing import Any

import prometheus_client
from kubernetes.client.exceptions import ApiException

from kubenova.api import VirtualMachine, VMMigration, constants, lifecycle
from kubenova.api.host import HostPhase
from kubenova.api.migration import MigrationPhase
from kubenova.kube.events import ref_of
from kubenova.operator import context, migration_flow
from kubenova.operator.context import Context
from kubenova.operator.migration_flow import Do, Step
from kubenova.operator.world import World, vm_key
from kubenova.scheduler import targets
from kubenova.scheduler.framework import Unschedulable

log = logging.getLogger(__name__)

PLURAL = "vmmigrations"
ACTOR = "operator"

MIGRATIONS = prometheus_client.Counter(
    "kubenova_migrations_total", "VMMigrations finished, by result", ["result"]
)
MIGRATION_SECONDS = prometheus_client.Histogram(
    "kubenova_migration_seconds",
    "From the start of a live migration to the VM re-pointed at its target",
    buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600),
)
IN_FLIGHT = prometheus_client.Gauge("kubenova_migrations_in_flight", "Live migrations under way")
COLLECTED = prometheus_client.Counter(
    "kubenova_migrations_collected_total", "Finished VMMigrations deleted after the retention"
)
RETENTION = 3600.0
"""Seconds a finished VMMigration stays in the API (for `kubectl get vmim`, and for drains,
which count a VM's failed attempts) before the leader deletes it (`--migration-retention`)."""


def _takes(world: World, host: str) -> bool:
    """Whether the host's agent reports where migrations reach it."""
    h = world.hosts.get(host)
    return h is not None and bool(h.status.migration.uri)


class MigrationController:
    def __init__(
        self,
        ctx: Context,
        limits: migration_flow.Limits,
        period: float = 0.5,
        retention: float = RETENTION,
    ) -> None:
        self.ctx = ctx
        self.limits = limits
        self.period = period
        self.retention = retention
        self.migrations: dict[str, VMMigration] = {}
        """Migrations with work left: not finished, or finished and being deleted (our
        finalizer to release). Each pass walks only these."""
        self.finished: dict[str, VMMigration] = {}
        """Finished migrations, kept until the retention runs out and they are deleted."""
        self._expiry: list[tuple[dt.datetime, str, str]] = []
        """(completion time, key, uid) of finished migrations: the collector reads its top."""
        self._active_by_vm: dict[str, set[str]] = {}
        """VM key -> keys of its migrations not yet finished."""
        self._pending_since: dict[str, float] = {}
        self.wake = asyncio.Event()

    # -- watch events (every replica) -----------------------------------------------------

    def on_event(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        meta = body["metadata"]
        key = f"{meta.get('namespace', 'default')}/{meta['name']}"
        if event_type == "DELETED":
            self._forget(key)
            self._pending_since.pop(key, None)
        else:
            try:
                m = VMMigration.parse(dict(body))
            except ValueError as e:
                log.error("ignoring invalid VMMigration: %s", e)
                return
            self._forget(key)
            done = m.status.phase in migration_flow.DONE
            releasing = (
                m.metadata.deletion_timestamp is not None
                and constants.MIGRATION_FINALIZER in m.metadata.finalizers
            )
            if done and not releasing:
                self.finished[key] = m
                self._pending_since.pop(key, None)
                ended = m.status.completion_time or dt.datetime.now(dt.UTC)
                heapq.heappush(self._expiry, (ended, key, m.metadata.uid or ""))
            else:
                self.migrations[key] = m
                if not done:
                    self._active_by_vm.setdefault(migration_flow.vm_key(m), set()).add(key)
        self.wake.set()

    def _forget(self, key: str) -> None:
        self.finished.pop(key, None)
        m = self.migrations.pop(key, None)
        if m is not None:
            vm = migration_flow.vm_key(m)
            keys = self._active_by_vm.get(vm)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._active_by_vm[vm]

    def active_for(self, vm: str) -> bool:
        """Whether VM `vm` (namespace/name) has a migration not yet finished. O(1)."""
        return vm in self._active_by_vm

    # -- the loop (leader) -----------------------------------------------------------------

    async def run(self) -> None:
        while True:
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), self.period)
            if not self.ctx.leading():
                continue
            try:
                await self.sync()
            except Exception:
                log.exception("migration pass failed; retrying")

    async def sync(self) -> None:
        now = dt.datetime.now(dt.UTC)
        world = self.ctx.world
        running = 0
        await self._collect(now)
        for key in sorted(self.migrations, key=lambda k: self._order(k)):
            m = self.migrations.get(key)
            if m is None:
                continue
            vm = world.vms.get(migration_flow.vm_key(m))
            if m.status.phase is MigrationPhase.RUNNING:
                running += 1
                self._hold(m, vm)
            source = m.status.source_host or (vm.status.host if vm else None)
            ready = bool(source) and world.host_phase(source or "", now) is HostPhase.READY
            busy = migration_flow.in_flight(self.migrations, besides=key)
            step = migration_flow.next_step(m, vm, ready, busy, self.limits, now)
            if step.do is Do.WAIT and m.status.phase is MigrationPhase.PENDING:
                step = self._pending_timeout(key, m, step)
            log.debug("migration %s: %s %s", key, step.do.value, step.message)
            try:
                await self._act(key, m, vm, step, busy, now)
            except ApiException as e:
                if e.status not in (404, 409):
                    raise
                log.info("migration %s: %s lost a race (%s); next pass", key, step.do, e.status)
        IN_FLIGHT.set(running)

    async def _collect(self, now: dt.datetime) -> None:
        """Delete the finished migrations whose retention ran out, oldest first; the deletion
        comes back as an event (our finalizer, then DELETED) and is released from there."""
        limit = now - dt.timedelta(seconds=self.retention)
        while self._expiry and self._expiry[0][0] <= limit:
            _, key, uid = heapq.heappop(self._expiry)
            m = self.finished.get(key)
            if m is None or (m.metadata.uid or "") != uid:
                continue  # gone already, or a newer object of the same name
            try:
                await self.ctx.writes.delete(
                    _path(m), {"preconditions": {"uid": uid}} if uid else None
                )
            except ApiException as e:
                if e.status not in (404, 409):
                    raise
            COLLECTED.inc()
            log.info("collected finished migration %s (%s)", key, m.status.phase.value)

    def _order(self, key: str) -> tuple[float, str]:
        return (self._pending_since.setdefault(key, time.monotonic()), key)

    def _pending_timeout(self, key: str, m: VMMigration, step: Step) -> Step:
        waited = time.monotonic() - self._pending_since.get(key, time.monotonic())
        if waited < m.spec.timeout_seconds:
            return step
        return Step(
            Do.FAIL,
            f"not started within spec.timeoutSeconds={m.spec.timeout_seconds}: {step.message}",
            MigrationPhase.FAILED,
        )

    def _hold(self, m: VMMigration, vm: VirtualMachine | None) -> None:
        """Keep the target's room reserved while the transfer runs (idempotent; a new leader
        learns the migrations in flight from their status)."""
        if vm is None or not m.status.target_host:
            return
        if vm.metadata.annotations.get(constants.ANNOTATION_MIGRATION) != m.metadata.name:
            return
        if vm.status.host == m.status.target_host:
            return  # already moved
        req = self.ctx.world.request(vm)
        if req is not None:
            targets.reserve(self.ctx.world.cache, req, m.status.target_host, self.ctx.world.clock())

    async def _act(
        self,
        key: str,
        m: VMMigration,
        vm: VirtualMachine | None,
        step: Step,
        busy: migration_flow.InFlight,
        now: dt.datetime,
    ) -> None:
        match step.do:
            case Do.WAIT:
                if step.message and step.message != m.status.message:
                    await self._status(m, {"message": step.message[:1024]})
            case Do.START:
                if vm is not None:
                    await self._start(m, vm, step, busy, now)
            case Do.ABORT:
                if vm is not None:
                    await self._meta(vm, {constants.ANNOTATION_MIGRATION_ABORT: step.message})
                    await self._status(m, {"message": step.message})
                    self.ctx.recorder.emit(ref_of(m), "Normal", "Aborting", step.message)
            case Do.SUCCEED:
                if vm is not None:
                    await self._succeed(m, vm, step, now)
            case Do.ROLL_BACK:
                if vm is not None:
                    await self._roll_back(m, vm, step, now)
            case Do.FAIL:
                await self._fail(m, vm, step, now)
            case Do.RELEASE:
                await self._finalizer(m, add=False)

    # -- the steps -------------------------------------------------------------------------

    async def _start(
        self,
        m: VMMigration,
        vm: VirtualMachine,
        step: Step,
        busy: migration_flow.InFlight,
        now: dt.datetime,
    ) -> None:
        world = self.ctx.world
        source = vm.status.host or ""
        req = world.request(vm)
        if req is None:
            await self._status(m, {"message": f"the size of flavor {vm.spec.flavor} is unknown"})
            return
        if step.target is None or step.target == m.spec.target_host:
            choice = targets.choose(
                world.scheduler,
                req,
                source,
                m.spec.target_host,
                lambda h: migration_flow.host_has_room(busy, self.limits, h) and _takes(world, h),
            )
            if isinstance(choice, Unschedulable):
                if choice.message[:1024] != m.status.message:
                    await self._status(m, {"message": choice.message[:1024]})
                return
            target = choice.host
        else:
            target = step.target
        host = world.hosts.get(target)
        uri = host.status.migration.uri if host else ""
        if host is None or not uri:
            await self._status(
                m,
                {
                    "message": f"host {target} reports no status.migration.uri (its agent needs "
                    "KUBENOVA_MIGRATION_URI)"
                },
            )
            return
        if not targets.reserve(world.cache, req, target, world.clock()):
            await self._status(m, {"message": f"could not reserve room on host {target}"})
            return
        if constants.MIGRATION_FINALIZER not in m.metadata.finalizers:
            await self._finalizer(m, add=True)
        trace = vm.metadata.annotations.get(constants.ANNOTATION_TRACE_ID)
        try:
            if vm.status.phase is not lifecycle.P.MIGRATING:
                marked = await self._meta(
                    vm,
                    {
                        constants.ANNOTATION_MIGRATION: m.metadata.name,
                        constants.ANNOTATION_MIGRATION_TARGET: target,
                        constants.ANNOTATION_MIGRATION_URI: uri,
                        constants.ANNOTATION_MIGRATION_ADDRESS: host.status.migration.address,
                        constants.ANNOTATION_MIGRATION_ABORT: None,
                    },
                )
                change = lifecycle.Change(
                    lifecycle.Event.MIGRATION_STARTED,
                    ACTOR,
                    f"migrating live from {source} to {target} (VMMigration {m.metadata.name})",
                    trace,
                )
                new_status, _ = lifecycle.apply(marked.status, change, now)
                updated = await self.ctx.writes.vm_status(marked, new_status.to_dict())
                self._upsert_vm(updated)
        except ApiException:
            targets.release(world.cache, vm_key(vm))
            raise
        message = f"copying {vm.metadata.name} from {source} to {target}"
        await self._status(
            m,
            {
                "phase": MigrationPhase.RUNNING.value,
                "sourceHost": source,
                "targetHost": target,
                "startTime": now.isoformat(),
                "progressPercent": 0,
                "message": message,
            },
        )
        log.info("migration %s/%s started: %s", m.metadata.namespace, m.metadata.name, message)
        self.ctx.recorder.emit(ref_of(m), "Normal", "MigrationStarted", message)
        self.ctx.recorder.emit(ref_of(vm), "Normal", "MigrationStarted", message)

    async def _succeed(
        self, m: VMMigration, vm: VirtualMachine, step: Step, now: dt.datetime
    ) -> None:
        target = m.status.target_host or ""
        world = self.ctx.world
        if vm.status.host != target:
            change = lifecycle.Change(
                lifecycle.Event.MIGRATION_SUCCEEDED,
                ACTOR,
                f"now on {target}: {step.message}",
                vm.metadata.annotations.get(constants.ANNOTATION_TRACE_ID),
            )
            new_status, _ = lifecycle.apply(vm.status, change, now)
            body = {**new_status.to_dict(), "host": target}
            updated = await self.ctx.writes.vm_status(vm, body)
            req = world.request(vm)
            if req is not None:  # the room reserved becomes the VM's, in the same tick
                targets.complete(world.cache, req, target, tuple(vm.status.gpu_devices))
            vm = self._upsert_vm(updated)
        else:
            targets.release(world.cache, vm_key(vm))
        await self._repoint(vm, target)
        started = m.status.start_time
        if started is not None:
            MIGRATION_SECONDS.observe((now - started).total_seconds())
        await self._finish(m, MigrationPhase.SUCCEEDED, step.message, now, progress=100)
        self.ctx.recorder.emit(ref_of(vm), "Normal", "Migrated", f"now running on {target}")

    async def _repoint(self, vm: VirtualMachine, target: str) -> None:
        """The migration annotations go (status.host, which the agents select on, moved to
        `target` in the status write before)."""
        meta: dict[str, Any] = {
            "resourceVersion": vm.metadata.resource_version,
            "annotations": {a: None for a in constants.MIGRATION_ANNOTATIONS},
        }
        await self.ctx.writes.vm_meta(vm, meta)

    async def _roll_back(
        self, m: VMMigration, vm: VirtualMachine, step: Step, now: dt.datetime
    ) -> None:
        change = lifecycle.Change(
            lifecycle.Event.MIGRATION_FAILED,
            ACTOR,
            f"still on {vm.status.host}: {step.message}",
            vm.metadata.annotations.get(constants.ANNOTATION_TRACE_ID),
        )
        new_status, _ = lifecycle.apply(vm.status, change, now)
        updated = self._upsert_vm(await self.ctx.writes.vm_status(vm, new_status.to_dict()))
        targets.release(self.ctx.world.cache, vm_key(vm))
        await self._meta(updated, {a: None for a in constants.MIGRATION_ANNOTATIONS})
        await self._finish(m, step.phase or MigrationPhase.FAILED, step.message, now)
        self.ctx.recorder.emit(ref_of(vm), "Warning", "MigrationFailed", step.message)

    async def _fail(
        self, m: VMMigration, vm: VirtualMachine | None, step: Step, now: dt.datetime
    ) -> None:
        if vm is not None:
            targets.release(self.ctx.world.cache, vm_key(vm))
            if vm.metadata.annotations.get(constants.ANNOTATION_MIGRATION) == m.metadata.name:
                with contextlib.suppress(ApiException):
                    await self._meta(vm, {a: None for a in constants.MIGRATION_ANNOTATIONS})
        await self._finish(m, step.phase or MigrationPhase.FAILED, step.message, now)

    async def _finish(
        self,
        m: VMMigration,
        phase: MigrationPhase,
        message: str,
        now: dt.datetime,
        progress: int | None = None,
    ) -> None:
        body: dict[str, Any] = {
            "phase": phase.value,
            "message": message[:1024],
            "completionTime": now.isoformat(),
        }
        if progress is not None:
            body["progressPercent"] = progress
        await self._status(m, body)
        MIGRATIONS.labels(phase.value).inc()
        kind = "Normal" if phase is MigrationPhase.SUCCEEDED else "Warning"
        self.ctx.recorder.emit(ref_of(m), kind, f"Migration{phase.value}", message)
        log.info("migration %s/%s %s: %s", m.metadata.namespace, m.metadata.name, phase, message)

    # -- writes ----------------------------------------------------------------------------

    def _upsert_vm(self, raw: dict[str, Any]) -> VirtualMachine:
        vm = VirtualMachine.parse(self.ctx.world.arrive(raw))
        self.ctx.world.upsert_vm(vm)
        return vm

    async def _meta(self, vm: VirtualMachine, annotations: dict[str, str | None]) -> VirtualMachine:
        body = {
            "metadata": {
                "resourceVersion": vm.metadata.resource_version,
                "annotations": annotations,
            }
        }
        return self._upsert_vm(await self.ctx.writes.patch(context.vm_path(vm), body))

    async def _status(self, m: VMMigration, status: dict[str, Any]) -> None:
        raw = await self.ctx.writes.patch(_path(m) + "/status", {"status": status})
        self.on_event("MODIFIED", raw)

    async def _finalizer(self, m: VMMigration, add: bool) -> None:
        fins = [f for f in m.metadata.finalizers if f != constants.MIGRATION_FINALIZER]
        if add:
            fins.append(constants.MIGRATION_FINALIZER)
        meta = {"resourceVersion": m.metadata.resource_version, "finalizers": fins}
        raw = await self.ctx.writes.patch(_path(m), {"metadata": meta})
        if add:
            self.on_event("MODIFIED", raw)

    async def create(
        self,
        vm: VirtualMachine,
        prefix: str,
        labels: dict[str, str],
        target: str | None = None,
    ) -> VMMigration:
        """A VMMigration for `vm` from the operator itself (drain, re-balance); recorded at
        once, so the next pass does not create a second one before the watch reports it."""
        spec: dict[str, Any] = {"vmName": vm.metadata.name}
        if target is not None:
            spec["targetHost"] = target
        body = {
            "apiVersion": constants.API_VERSION,
            "kind": "VMMigration",
            "metadata": {"generateName": f"{prefix}-{vm.metadata.name}-"[:200], "labels": labels},
            "spec": spec,
        }
        raw = await self.ctx.writes.create(PLURAL, vm.metadata.namespace or "default", body)
        self.on_event("ADDED", raw)
        return VMMigration.parse(raw)


def _path(m: VMMigration) -> str:
    return context.path_of(PLURAL, m.metadata.name, m.metadata.namespace)
