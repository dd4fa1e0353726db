"""Drains (leader only): every VM bound to a Host annotated `kubenova.io/drain` leaves by its
eviction strategy, as `draining.plan()` says: a VMMigration, a shutdown by its agent, or an
unbind; a VM that cannot leave without losing its disk stays, and the drain says so. The
Host's `Drained` condition tells when it is empty (reason `DrainBlocked`, naming the VMs and
what their owners can do, when some cannot leave). Does I/O."""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING

from kubernetes.client.exceptions import ApiException

from kubenova.api import Host, constants
from kubenova.api.meta import Condition, ConditionStatus, set_condition
from kubenova.api.migration import MigrationPhase
from kubenova.kube.events import ref_of
from kubenova.operator import draining, loops, migration_flow
from kubenova.operator.hostfailure import reschedule

if TYPE_CHECKING:
    from kubenova.operator.context import Context
    from kubenova.operator.migrations import MigrationController

log = logging.getLogger(__name__)


class DrainController:
    def __init__(
        self,
        ctx: Context,
        migrations: MigrationController,
        max_attempts: int = 3,
        period: float = 1.0,
    ) -> None:
        self.ctx = ctx
        self.migrations = migrations
        self.max_attempts = max_attempts
        self.period = period

    async def run(self) -> None:
        await loops.while_leading(lambda: self.period, self.ctx.leading, self.sync, "drain pass")

    async def sync(self) -> None:
        for name in sorted(self.ctx.world.draining):
            host = self.ctx.world.hosts.get(name)
            if host is None:
                continue
            try:
                if constants.ANNOTATION_DRAIN in host.metadata.annotations:
                    await self._drain(name, host)
                elif any(c.type == constants.COND_DRAINED for c in host.status.conditions):
                    await self._undrained(host)  # uncordoned: the condition no longer applies
            except ApiException as e:
                if e.status not in (404, 409):
                    raise

    async def _drain(self, name: str, host: Host) -> None:
        ctx = self.ctx
        active: set[str] = set()
        failed: dict[str, int] = {}
        for m in [*self.migrations.migrations.values(), *self.migrations.finished.values()]:
            key = migration_flow.vm_key(m)
            if m.status.phase not in migration_flow.DONE:
                active.add(key)
            elif (
                m.metadata.labels.get(constants.LABEL_DRAIN_HOST) == name
                and m.status.phase is not MigrationPhase.SUCCEEDED
            ):
                failed[key] = failed.get(key, 0) + 1
        plan = draining.plan(name, ctx.world.vms_on(name), active, failed, self.max_attempts)
        for vm in plan.of(draining.Move.MIGRATE):
            m = await self.migrations.create(
                vm,
                "drain",
                {constants.LABEL_INITIATOR: "drain", constants.LABEL_DRAIN_HOST: name},
            )
            ctx.recorder.emit(
                ref_of(vm),
                "Normal",
                "Evicting",
                f"host {name} is drained: migrating live (VMMigration {m.metadata.name})",
            )
        for vm in plan.of(draining.Move.SHUT_DOWN):
            await ctx.writes.vm_meta(
                vm,
                {
                    "resourceVersion": vm.metadata.resource_version,
                    "annotations": {constants.ANNOTATION_EVICT: name},
                },
            )
            ctx.recorder.emit(
                ref_of(vm),
                "Normal",
                "Evicting",
                f"host {name} is drained: shutting down, to start elsewhere if it should run",
            )
        for vm in plan.of(draining.Move.UNBIND):
            await reschedule(ctx, vm, f"host {name} is drained", "drain")
        await self._condition(host, plan)

    async def _undrained(self, host: Host) -> None:
        conds = [c for c in host.status.conditions if c.type != constants.COND_DRAINED]
        await self.ctx.writes.cluster_status(
            "hosts", host.metadata.name, {"conditions": [c.to_dict() for c in conds]}
        )

    async def _condition(self, host: Host, plan: draining.Plan) -> None:
        now = dt.datetime.now(dt.UTC)
        done = plan.drained
        blocked = plan.blocked
        if done:
            reason, message = constants.REASON_DRAINED, "no VM is bound to the host"
        elif blocked:
            why = "; ".join(f"{draining.vm_key(s.vm)}: {s.why}" for s in blocked)
            reason, message = constants.REASON_DRAIN_BLOCKED, f"VMs left: {plan.summary()}; {why}"
        else:
            reason, message = constants.REASON_DRAINING, f"VMs left: {plan.summary()}"
        cond = Condition(
            type=constants.COND_DRAINED,
            status=ConditionStatus.TRUE if done else ConditionStatus.FALSE,
            reason=reason,
            message=message[:4096],
        )
        current = next(
            (c for c in host.status.conditions if c.type == constants.COND_DRAINED), None
        )
        if current is not None and (current.status, current.message) == (cond.status, cond.message):
            return
        conds = set_condition(host.status.conditions, cond, now)
        await self.ctx.writes.cluster_status(
            "hosts", host.metadata.name, {"conditions": [c.to_dict() for c in conds]}
        )
        if done:
            self.ctx.recorder.emit(ref_of(host), "Normal", "Drained", cond.message)
        for step in blocked:  # told once per change of the condition, not every pass
            text = f"host {host.metadata.name} is drained but this VM stays: {step.why}"
            self.ctx.recorder.emit(ref_of(step.vm), "Warning", constants.REASON_DRAIN_BLOCKED, text)
        if blocked:
            self.ctx.recorder.emit(ref_of(host), "Warning", constants.REASON_DRAIN_BLOCKED, message)
