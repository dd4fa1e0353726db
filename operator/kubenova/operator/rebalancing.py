"""Load-aware re-balance (leader only): every period, for each pool with `rebalance.enabled`
and inside one of its peak windows, `scheduler.rebalance.plan()` proposes moves off hot hosts
within the pool's hourly budget; each becomes a VMMigration with a fixed target, and its reason
goes into an event on the VM and a metric. Does I/O."""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING

import prometheus_client

from kubenova.api import constants
from kubenova.api.vm import VMPhase
from kubenova.kube.events import ref_of
from kubenova.operator import loops, peakwindows
from kubenova.scheduler import rebalance
from kubenova.scheduler.model import VMRequest

if TYPE_CHECKING:
    from kubenova.operator.context import Context
    from kubenova.operator.migrations import MigrationController

log = logging.getLogger(__name__)

PLANNED = prometheus_client.Counter(
    "kubenova_rebalance_migrations_total", "Migrations the re-balance created, by pool", ["pool"]
)


class RebalanceController:
    def __init__(self, ctx: Context, migrations: MigrationController, period: float = 60.0) -> None:
        self.ctx = ctx
        self.migrations = migrations
        self.period = period
        self.ledger = rebalance.MigrationLedger()

    async def run(self) -> None:
        await loops.while_leading(
            lambda: self.period, self.ctx.leading, self.sync, "re-balance pass"
        )

    async def sync(self) -> list[rebalance.Migration]:
        world = self.ctx.world
        now = dt.datetime.now(dt.UTC)
        clock = world.clock()
        self.ledger.prune(clock)
        created: list[rebalance.Migration] = []
        for name, pool in list(world.pools.items()):
            rb = pool.spec.rebalance
            state = world.cache.pools.get(name)
            if not rb.enabled or state is None:
                continue
            if not peakwindows.inside(((w.start, w.end) for w in rb.peak_windows), now):
                continue
            movable: dict[str, VMRequest] = {}
            for key, record in world.records.items():
                if record.phase is not VMPhase.RUNNING or self.migrations.active_for(key):
                    continue
                # The request the World built when the VM was counted: no object parsed.
                req = record.request or world.request(world.vms[key])
                if req is not None and req.pool == name:
                    movable[key] = req
            moves = rebalance.plan(
                world.cache,
                name,
                state.info.rebalance,
                movable,
                world.scheduler.check,
                self.ledger,
                clock,
            )
            for mv in moves:
                moving = world.vms.get(mv.vm)
                if moving is None:
                    continue
                m = await self.migrations.create(
                    moving,
                    "rebalance",
                    {constants.LABEL_INITIATOR: "rebalance"},
                    mv.target,
                )
                self.ledger.record(mv.vm, name, mv.source, clock)
                PLANNED.labels(name).inc()
                message = f"{mv.reason}: moving to {mv.target} (VMMigration {m.metadata.name})"
                log.info("re-balance of pool %s: %s %s", name, mv.vm, message)
                self.ctx.recorder.emit(ref_of(moving), "Normal", "Rebalance", message)
                created.append(mv)
        return created
