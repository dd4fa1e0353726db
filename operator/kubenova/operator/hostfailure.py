"""Host failure (leader only): a host whose heartbeat Lease expired gets its VMs marked
Unknown; once `fencing.verdict()` allows it (the grace has passed and the host is fenced) they
go back to Pending, unbound, and the scheduler places them elsewhere. Does I/O.

Also here: `reschedule()`, the one write that unbinds a VM (host failure and drains use it).
A used fencing confirmation is removed by the host's agent when it runs again.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING, Any

import prometheus_client
from kubernetes.client.exceptions import ApiException

from kubenova.api import Host, VirtualMachine, constants, lifecycle
from kubenova.api.host import HostPhase
from kubenova.kube.events import ref_of
from kubenova.operator import fencing, loops
from kubenova.operator.world import vm_key

if TYPE_CHECKING:
    from kubenova.operator.context import Context

log = logging.getLogger(__name__)
ACTOR = "operator"
MERGE = "application/merge-patch+json"

RESCHEDULED = prometheus_client.Counter(
    "kubenova_vms_rescheduled_total",
    "VMs unbound from their host to be placed elsewhere, by cause",
    ["cause"],
)
LOST = prometheus_client.Counter(
    "kubenova_vms_host_lost_total", "VMs marked Unknown because their host stopped heartbeating"
)


async def reschedule(ctx: Context, vm: VirtualMachine, message: str, cause: str) -> None:
    """Unbind `vm` (phase Pending, no host) so the scheduler places it again: one status write
    with the VM's resourceVersion (the old host's agent sees it leave its field selector), and
    the eviction annotation taken off after it where there is one."""
    now = dt.datetime.now(dt.UTC)
    change = lifecycle.Change(
        lifecycle.Event.RESCHEDULED,
        ACTOR,
        message,
        vm.metadata.annotations.get(constants.ANNOTATION_TRACE_ID),
    )
    new_status, _ = lifecycle.apply(vm.status, change, now)
    body: dict[str, Any] = {
        **new_status.to_dict(),
        "host": None,
        "gpuDevices": [],
        "domainUUID": None,
        "ip": None,
        "addresses": [],
        "serialLog": None,
    }
    key = vm_key(vm)
    # Held out of the scheduling queue (and the leader's metadata pass) until the writes are
    # done, so the bind that follows carries the latest resourceVersion.
    ctx.world.binding.add(key)
    try:
        unbound = VirtualMachine.parse(ctx.world.arrive(await ctx.writes.vm_status(vm, body)))
        if constants.ANNOTATION_EVICT in vm.metadata.annotations:
            meta = {
                "resourceVersion": unbound.metadata.resource_version,
                "annotations": {constants.ANNOTATION_EVICT: None},
            }
            try:
                raw = await ctx.writes.vm_meta(vm, meta)
                unbound = VirtualMachine.parse(ctx.world.arrive(raw))
            except ApiException as e:
                if e.status not in (404, 409):
                    raise
    finally:
        ctx.world.binding.discard(key)
    ctx.world.upsert_vm(unbound)  # frees its room and queues it now, not at the watch event
    RESCHEDULED.labels(cause).inc()
    log.info("VM %s unbound from %s: %s", vm_key(vm), vm.status.host, message)
    ctx.recorder.emit(ref_of(vm), "Normal", "Rescheduled", message)
    ctx.wake.set()


class HostFailureController:
    def __init__(
        self, ctx: Context, grace_seconds: float, fence: fencing.Fence, period: float = 1.0
    ) -> None:
        self.ctx = ctx
        self.grace_seconds = grace_seconds
        self.fence = fence
        self.period = period
        self._waiting: set[str] = set()
        """Hosts whose users were told they wait for fencing (once per failure)."""

    async def run(self) -> None:
        await loops.while_leading(
            lambda: self.period, self.ctx.leading, self.sync, "host failure pass"
        )

    async def sync(self) -> None:
        now = dt.datetime.now(dt.UTC)
        world = self.ctx.world
        for name in list(self._waiting):
            if world.host_phase(name, now) is HostPhase.READY:
                self._waiting.discard(name)
        # The hosts the status pass found NotReady (it compares only those a Host or Lease
        # event or an expiry touched): not every host each pass.
        for name in world.hosts_found(HostPhase.NOT_READY):
            host = world.hosts.get(name)
            if host is None or world.host_phase(name, now) is not HostPhase.NOT_READY:
                continue
            try:
                await self._lost(name, host, now)
            except ApiException as e:
                if e.status not in (404, 409):
                    raise

    async def _lost(self, name: str, host: Host, now: dt.datetime) -> None:
        world = self.ctx.world
        vms = world.vms_on(name)
        for vm in fencing.to_mark_unknown(vms):
            change = lifecycle.Change(
                lifecycle.Event.HOST_LOST,
                ACTOR,
                f"host {name} stopped heartbeating; the VM's state is unknown",
                vm.metadata.annotations.get(constants.ANNOTATION_TRACE_ID),
            )
            new_status, _ = lifecycle.apply(vm.status, change, now)
            raw = await self.ctx.writes.vm_status(vm, new_status.to_dict())
            world.upsert_vm(VirtualMachine.parse(world.arrive(raw)))
            LOST.inc()
            self.ctx.recorder.emit(ref_of(vm), "Warning", "HostLost", change.message)
        lease = world.leases.get(name)
        lost = fencing.lost_since(lease.renew_time, lease.duration_seconds) if lease else None
        verdict = fencing.verdict(host, lost, self.grace_seconds, self.fence, now)
        if not verdict.recreate:
            past_grace = lost is not None and (now - lost).total_seconds() >= self.grace_seconds
            if past_grace and name not in self._waiting and vms:
                self._waiting.add(name)
                log.warning("%s", verdict.why)
                self.ctx.recorder.emit(ref_of(host), "Warning", "AwaitingFencing", verdict.why)
            return
        for vm in fencing.to_recreate(world.vms_on(name)):
            await reschedule(self.ctx, vm, f"recreated elsewhere: {verdict.why}", "host-failure")
        for vm in fencing.to_release(world.vms_on(name)):
            await self.ctx.writes.vm_meta(
                vm,
                {
                    "resourceVersion": vm.metadata.resource_version,
                    "finalizers": [
                        f for f in vm.metadata.finalizers if f != constants.VM_FINALIZER
                    ],
                },
            )
