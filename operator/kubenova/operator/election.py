"""Leader election over a `coordination.k8s.io` Lease, as client-go's leaderelection does.

kopf's peering only pauses lower-priority peers; it is not leader election. Here every
replica tries to hold one Lease; the holder renews it every `retry_period`. A leader that has
not renewed within `renew_deadline` (shorter than the lease duration) considers itself deposed
*before* anyone else may take the lease, so two replicas never bind at the same time.

A standby does not find an expired lease by polling alone: it tries again the moment the
holder's lease runs out (`standby_plan`), and once the holder has been silent past its own
renew deadline (it acts no more) it is told to get ready (`on_expiring`), so the new leader's
caches are caught up before the lease is even free. Every replica is assumed to run with the
same `ElectionConfig` (one Deployment), as client-go's callers are.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from kubenova.kube.leases import LeaseClient, LeaseRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ElectionConfig:
    # 12 / 8 / 2 (client-go's callers default to 15 / 10 / 2): a dead leader's Lease runs out
    # 10-12 s after it died, so a standby binds within 15 s (issue 15's goal; 15 s cannot meet
    # it). The price: a leader whose renewals all fail for 8 s steps down.
    lease_duration: int = 12
    renew_deadline: float = 8.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.retry_period < self.renew_deadline < self.lease_duration:
            raise ValueError(
                "leader election needs retry_period < renew_deadline < lease_duration, got "
                f"{self.retry_period} / {self.renew_deadline} / {self.lease_duration}"
            )


EXPIRY_SLACK = 0.05
"""Seconds after a lease's expiry that a standby tries to take it (the two clocks differ a
little, and an attempt a moment early is refused and costs a retry period)."""


def deposed_at(record: LeaseRecord, config: ElectionConfig) -> dt.datetime | None:
    """When the holder of `record` stopped acting on it by its own rule: `renew_deadline` after
    its last renewal. None for a lease that nobody holds or that was never renewed."""
    if not record.holder or record.renew_time is None:
        return None
    return record.renew_time + dt.timedelta(seconds=config.renew_deadline)


@dataclass(frozen=True)
class StandbyPlan:
    sleep: float
    """Seconds until the next attempt."""
    prepare: bool
    """The holder is silent past its renew deadline and its lease runs out within the
    preparation time: get ready to lead now."""


def standby_plan(
    seen: LeaseRecord | None,
    me: str,
    config: ElectionConfig,
    now: dt.datetime,
    prepare_ahead: float,
    prepared: bool,
) -> StandbyPlan:
    """What a replica that does not lead does next, given the Lease as it last read it: try
    again at the lease's expiry (plus `EXPIRY_SLACK`) if that comes before the next retry
    period, and prepare (`prepared`: done already for this record) `prepare_ahead` seconds
    before the expiry, but never before the holder's renew deadline. Pure."""
    wait = config.retry_period
    deposed = deposed_at(seen, config) if seen is not None else None
    if seen is None or deposed is None or seen.holder == me or seen.renew_time is None:
        return StandbyPlan(wait, False)
    expires = seen.renew_time + dt.timedelta(seconds=seen.duration_seconds)
    ready_at = max(deposed, expires - dt.timedelta(seconds=prepare_ahead))
    prepare = not prepared and now >= ready_at
    moments = [expires + dt.timedelta(seconds=EXPIRY_SLACK)]
    if not prepared and not prepare:
        moments.append(ready_at)
    for moment in moments:
        ahead = (moment - now).total_seconds()
        if 0 < ahead < wait:
            wait = ahead
    return StandbyPlan(wait, prepare)


class LeaderElector:
    def __init__(
        self,
        leases: LeaseClient,
        identity: str,
        config: ElectionConfig,
        on_started: Callable[[], Awaitable[None]],
        on_stopped: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
        on_expiring: Callable[[LeaseRecord], None] | None = None,
        prepare_ahead: float = 2.0,
    ) -> None:
        self.leases = leases
        self.identity = identity
        self.config = config
        self.on_started = on_started
        self.on_stopped = on_stopped
        self.on_expiring = on_expiring
        """Told, once per silent holder, that its lease is about to be free (`standby_plan`)."""
        self.prepare_ahead = prepare_ahead
        self.clock = clock
        self._renewed_at: float | None = None
        self._prepared: LeaseRecord | None = None
        self._starting: asyncio.Task[None] | None = None
        self._failed = False
        self.took_over: LeaseRecord | None = None
        """The previous holder's record, as read just before this replica took the lease."""
        self.leading_changed = asyncio.Event()
        self._stopping = asyncio.Event()
        self._running: asyncio.Task[None] | None = None

    def is_leader(self) -> bool:
        """True only while the last successful renewal is within the renew deadline."""
        return (
            self._renewed_at is not None
            and self.clock() - self._renewed_at < self.config.renew_deadline
        )

    async def run(self) -> None:
        self._running = asyncio.current_task()
        was_leader = False
        while not self._stopping.is_set():
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
                if self._renewed_at is None:
                    self.took_over = self.leases.seen
                self._renewed_at = started
            leader = self.is_leader()
            if self._failed:  # the take-over failed: step down now, take over again next
                self._failed, leader = False, False
            if leader and not was_leader:
                log.info("became leader", extra={"identity": self.identity})
                # Its own task: the lease is renewed while a new leader catches up, however
                # long that takes, and a lost lease cancels the catching up.
                self._starting = asyncio.create_task(self._start())
            elif was_leader and not leader:
                log.warning("lost leadership", extra={"identity": self.identity})
                self._renewed_at = None
                if self._starting is not None and not self._starting.done():
                    self._starting.cancel()
                self.on_stopped()
            if leader != was_leader:
                self.leading_changed.set()
            was_leader = leader
            pause = self.config.retry_period if leader else self._standby()
            with contextlib.suppress(TimeoutError):  # woken early only by `release`
                await asyncio.wait_for(self._stopping.wait(), pause)

    async def _start(self) -> None:
        try:
            await self.on_started()
        except Exception:
            # Not leading after all: the next round finds it deposed, steps down, tries again.
            log.exception("taking over failed; stepping down")
            self._failed = True

    def _standby(self) -> float:
        seen = self.leases.seen
        plan = standby_plan(
            seen,
            self.identity,
            self.config,
            dt.datetime.now(dt.UTC),
            self.prepare_ahead,
            prepared=seen is not None and seen == self._prepared,
        )
        if plan.prepare and seen is not None and self.on_expiring is not None:
            self._prepared = seen
            log.info("leader %s silent past its renew deadline; preparing", seen.holder)
            self.on_expiring(seen)
        return plan.sleep

    async def release(self) -> None:
        """Stop trying, then give the lease up at shutdown so a standby takes over at once.

        The loop is let finish its round first: a try in flight when the stop began may take
        the lease on the API server after this replica stopped looking (a standby shut down
        the moment the old leader released), and a cancelled request may still land. Only
        once nothing is in flight is the Lease read and, if it names this replica, released.
        """
        self._stopping.set()
        if self._starting is not None and not self._starting.done():
            self._starting.cancel()
        running = self._running
        if running is not None and not running.done():
            # a try is bounded by `retry_period * 2` (its wait_for in `run`)
            _, pending = await asyncio.wait({running}, timeout=self.config.retry_period * 2 + 1)
            for task in pending:
                task.cancel()
        if self._renewed_at is not None:
            self._renewed_at = None
            self.on_stopped()
        await self.leases.release(self.identity)  # a no-op unless the Lease names this replica
