"""Leader election over a `coordination.k8s.io` Lease, as client-go's leaderelection does.

kopf's peering only pauses lower-priority peers; it is not leader election. Here every
replica tries to hold one Lease; the holder renews it every `retry_period`. A leader that has
not renewed within `renew_deadline` (shorter than the lease duration) considers itself deposed
*before* anyone else may take the lease, so two replicas never bind at the same time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from kubenova.kube.leases import LeaseClient

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ElectionConfig:
    lease_duration: int = 15
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.retry_period < self.renew_deadline < self.lease_duration:
            raise ValueError(
                "leader election needs retry_period < renew_deadline < lease_duration, got "
                f"{self.retry_period} / {self.renew_deadline} / {self.lease_duration}"
            )


class LeaderElector:
    def __init__(
        self,
        leases: LeaseClient,
        identity: str,
        config: ElectionConfig,
        on_started: Callable[[], Awaitable[None]],
        on_stopped: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.leases = leases
        self.identity = identity
        self.config = config
        self.on_started = on_started
        self.on_stopped = on_stopped
        self.clock = clock
        self._renewed_at: float | None = None
        self.leading_changed = asyncio.Event()

    def is_leader(self) -> bool:
        """True only while the last successful renewal is within the renew deadline."""
        return (
            self._renewed_at is not None
            and self.clock() - self._renewed_at < self.config.renew_deadline
        )

    async def run(self) -> None:
        was_leader = False
        while True:
            started = self.clock()
            try:
                record = await asyncio.wait_for(
                    self.leases.try_hold(self.identity, self.config.lease_duration),
                    timeout=self.config.retry_period * 2,
                )
            except Exception as e:  # an unreachable API server must not kill the loop
                log.warning("lease renewal failed: %s", e)
                record = None
            if record is not None and record.holder == self.identity:
                self._renewed_at = started
            leader = self.is_leader()
            if leader and not was_leader:
                log.info("became leader", extra={"identity": self.identity})
                await self.on_started()
            elif was_leader and not leader:
                log.warning("lost leadership", extra={"identity": self.identity})
                self._renewed_at = None
                self.on_stopped()
            if leader != was_leader:
                self.leading_changed.set()
            was_leader = leader
            await asyncio.sleep(self.config.retry_period)

    async def release(self) -> None:
        if self.is_leader():
            self._renewed_at = None
            self.on_stopped()
            await self.leases.release(self.identity)
