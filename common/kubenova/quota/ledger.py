"""The quota ledger: charging a new VM against its namespace's VMQuota, releasing the charge
when the VM is finally removed, and recounting a namespace. Does I/O.

Every write of `status.used` is a compare-and-swap: a PUT of the status subresource carrying
the resourceVersion the new value was computed from. On 409 the quota is read again and the
decision made again, a bounded number of times, so two writers (webhook replicas, the
operator's recount) never lose each other's updates and a namespace is never over-admitted.

Within one process the charges of a namespace do not race each other: those that arrive while
a write is in flight are decided together, in arrival order, and written with one PUT built on
the previous one's answer (group commit), so a burst costs a few writes, not one each.

Release is exactly once, against other releasers and against recounts in any process: the
releaser first subtracts the recorded charge and adds the VM's uid to the quota's
`status.released`, in one compare-and-swap, and only then removes the VM's quota finalizer and
charge annotation. A second release of the same uid finds it recorded and subtracts nothing; a
recount skips the VMs whose uid is recorded (their charge is already off `used`) and prunes the
uids of VMs that hold no charge any more. Because uids are pruned, a releaser whose copy of the
VM is stale (a lagging watch) checks, between reading the quota and writing it, that the VM
still holds its quota finalizer: a pruned uid's VM never does. Removing the finalizer first,
as this module once did, let a recount that ran between the two writes stop counting the VM,
and the subtraction then took its charge off a second time.

A charge is written before the API server stores its VM, so it stamps `status.lastChargeTime`
and a recount lowers no usage for `arithmetic.CHARGE_SETTLE_SECONDS` after it.

With `reservation` > 0 a ledger also holds headroom in the quota's `status.reservations`
(`reservations` says why the count stays exact): a create that fits in it is admitted from
memory at once, and what was admitted is written into `used` within `COMMIT_SECONDS`, by the
same compare-and-swap that tops the reservation up and renews it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from kubenova.api import constants
from kubenova.api.quota import QuotaAmounts, QuotaReservation, VMQuota
from kubenova.api.vm import VirtualMachine
from kubenova.kube import aio
from kubenova.quota import arithmetic, metrics, reservations, store

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 12
"""Compare-and-swap attempts before a charge is refused as contended (fail closed)."""
MAX_HOLDERS = 64
"""Reservations a VMQuota holds at most (the CRD's `maxProperties`)."""


@dataclass(frozen=True)
class ChargeResult:
    admitted: bool
    quota: str | None = None
    """The VMQuota charged or that denied; None when the namespace has none."""
    exceeded: list[arithmetic.Exceeded] = field(default_factory=list)
    contended: bool = False
    """Denied because the quota kept changing under us: retry."""
    conflicts: int = 0
    reserved_elsewhere: bool = False
    """Denied while other processes hold reservations in the quota (room that may come
    free as they give them back)."""


class ReleaseOutcome(StrEnum):
    RELEASED = "Released"
    """The charge was subtracted and the finalizer removed."""
    NOT_CHARGED = "NotCharged"
    """The VM held no charge (no annotation); only the finalizer was removed."""
    WAITING = "Waiting"
    """Other finalizers remain: the VM's resources are not free yet."""
    NOT_OURS = "NotOurs"
    """Not being deleted, no quota finalizer, or another releaser got there first."""


def _age(q: dict[str, Any]) -> tuple[str, str]:
    return (q["metadata"].get("creationTimestamp", ""), q["metadata"]["name"])


def oldest(quotas: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The namespace's VMQuota: the oldest, should validation ever have been bypassed."""
    if not quotas:
        return None
    return min(
        quotas, key=lambda q: (q["metadata"].get("creationTimestamp", ""), q["metadata"]["name"])
    )


Waiter = tuple[arithmetic.Request, "asyncio.Future[ChargeResult]"]


def default_holder() -> str:
    """A name no other process holds a reservation under: this host (the pod's name) and a
    random part, new at every start (a restarted process must not take on what the last one
    admitted from its reservation)."""
    return f"{socket.gethostname()[:200]}-{os.getpid()}-{secrets.token_hex(4)}"


@dataclass
class Slab:
    """This process's reservation in one namespace, as it knows it."""

    quota: str
    hard: QuotaAmounts
    """`spec.hard` as of the last write: the resources a reservation covers."""
    amount: QuotaAmounts
    """The reservation as last written (`reservations.limited` form)."""
    seq: int
    valid_until: float
    """Monotonic time after which nothing is admitted from it (until a write renews it)."""
    renewed: float
    """Monotonic time the last write that landed was sent."""
    shape: QuotaAmounts
    """The last charge admitted: what the next top-up is made of."""
    consumed: QuotaAmounts = field(default_factory=arithmetic.zero)
    """Admitted from it since the last write that landed; not in `used` yet."""
    remaining: QuotaAmounts = field(default_factory=QuotaAmounts)
    """`amount - consumed` (`limited` form)."""
    last_charge: float = 0.0
    closing: bool = False
    """Being given back: nothing is admitted from it meanwhile."""
    sent: tuple[int, QuotaAmounts, QuotaAmounts | None, float] | None = None
    """The write whose answer is not known yet (lost, or failed in a way that may have
    landed): its seq, what it moved into `used`, the reservation it wrote (None: given back),
    and when it was sent."""

    def usable(self, now: float) -> bool:
        return not self.closing and now < self.valid_until

    def take(self, charge: QuotaAmounts, now: float) -> None:
        self.consumed = arithmetic.add(self.consumed, charge)
        self.remaining = reservations.limited(
            arithmetic.subtract(self.remaining, charge), self.hard
        )
        self.shape = charge
        self.last_charge = now


class QuotaLedger:
    """Charges, releases and recounts against VMQuotas, for one process."""

    def __init__(
        self,
        quotas: store.QuotaStore,
        clock: Callable[[], float] = time.time,
        *,
        reservation: int = 0,
        holder: str | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = quotas
        self.clock = clock
        """Wall-clock seconds: charges are stamped with it and recounts compare against it."""
        self.reservation = reservation
        """How many charges of the last size a reservation holds; 0: none (every create waits
        for its own compare-and-swap)."""
        self.holder = holder or default_holder()
        self.monotonic = monotonic
        self._slabs: dict[str, Slab] = {}
        self._observer = reservations.Observer()
        """When this ledger's recounts first saw each reservation as it is."""
        self._locks: dict[str, asyncio.Lock] = {}
        self._last: dict[str, dict[str, Any]] = {}
        """The quota as we last wrote or read it; a guess, checked by the CAS."""
        self._view: dict[
            str, tuple[dict[str, Any], str, QuotaAmounts, QuotaAmounts, dict[str, QuotaReservation]]
        ] = {}
        """Per namespace, the quota this ledger last wrote with its name, `spec.hard`,
        `status.used` and the others' reservations as they went into the write, so the next
        batch built on that answer does not parse it again (the identity of the object says
        the view is of it)."""
        self._pending: dict[str, list[Waiter]] = {}
        self._flushing: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._finalized: dict[str, set[str]] = {}
        """Per namespace, uids in `status.released` whose VM has let go of its finalizer."""
        self._seq: dict[str, int] = {}
        """Per namespace, the `seq` of this holder's last write (reservation or receipt)."""

    def _lock(self, namespace: str) -> asyncio.Lock:
        lock = self._locks.get(namespace)
        if lock is None:
            lock = self._locks[namespace] = asyncio.Lock()
        return lock

    def forget(self, namespace: str) -> None:
        self._last.pop(namespace, None)
        self._view.pop(namespace, None)

    async def _read(self, namespace: str) -> dict[str, Any] | None:
        return oldest(await self.store.quotas(namespace))

    async def _used(self, raw: dict[str, Any]) -> QuotaAmounts:
        """The quota's usage; a quota never written yet starts from a recount."""
        used = (raw.get("status") or {}).get("used")
        if used is not None:
            return arithmetic.normalized(QuotaAmounts.model_validate(used))
        ns = raw["metadata"]["namespace"]
        return arithmetic.recount(await self.store.vms(ns), await self.store.flavors())

    async def _write(
        self,
        raw: dict[str, Any],
        used: QuotaAmounts,
        *,
        entries: dict[str, QuotaReservation] | None = None,
        released: list[str] | None = None,
        charged: bool = False,
    ) -> dict[str, Any]:
        """Write `used`, and in the same compare-and-swap the reservations and
        `status.released` when given; `charged` stamps `status.lastChargeTime`."""
        started = time.perf_counter()
        body = store.status_body(raw, used)
        if entries is not None:
            body["status"]["reservations"] = reservations.to_status(entries)
        if released is not None:
            body["status"]["released"] = released
        if charged:
            stamp = dt.datetime.fromtimestamp(self.clock(), dt.UTC)
            body["status"]["lastChargeTime"] = stamp.isoformat().replace("+00:00", "Z")
        out = await self.store.write_status(body)
        metrics.QUOTA_WRITE_SECONDS.observe(time.perf_counter() - started)
        return out

    async def charge(
        self, namespace: str, amount: QuotaAmounts, *, dry_run: bool = False
    ) -> ChargeResult:
        """Add `amount` to the namespace's usage if every hard limit allows it.

        Charges that arrive while a write for their namespace is in flight wait for it, then
        are decided together and written with one compare-and-swap (group commit): a
        namespace takes as many creates a second as batches fit in, not as many PUTs. With a
        reservation that the charge fits in, it is admitted at once (and written within
        `reservations.COMMIT_SECONDS`)."""
        slab = self._slabs.get(namespace)
        if slab is not None:
            now = self.monotonic()
            if slab.usable(now) and reservations.fits(slab.remaining, amount):
                if not dry_run:
                    slab.take(amount, now)
                    metrics.QUOTA_RESERVED_CHARGES.inc()
                return ChargeResult(True, slab.quota)
        waiter: asyncio.Future[ChargeResult] = asyncio.get_running_loop().create_future()
        self._pending.setdefault(namespace, []).append(
            (arithmetic.Request(amount, dry_run), waiter)
        )
        if namespace not in self._flushing:
            self._flushing.add(namespace)
            task = asyncio.create_task(self._flush(namespace))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await waiter

    async def _flush(self, namespace: str) -> None:
        try:
            while self._pending.get(namespace):
                batch = self._pending.pop(namespace)
                try:
                    async with self._lock(namespace):
                        results = await self._charge_batch(namespace, [r for r, _ in batch])
                except Exception as e:
                    self.forget(namespace)
                    for _, waiter in batch:
                        if not waiter.done():
                            waiter.set_exception(e)
                    continue
                for (_, waiter), result in zip(batch, results, strict=True):
                    if not waiter.done():
                        waiter.set_result(result)
        finally:
            self._flushing.discard(namespace)

    async def _charge_batch(
        self, namespace: str, requests: list[arithmetic.Request], *, commit: bool = False
    ) -> list[ChargeResult]:
        """Decide `requests` and write them, with what was admitted from this process's
        reservation since its last write, and the reservation topped up and renewed (`commit`:
        a round of the commit loop, which may also give an idle reservation back)."""
        if requests:
            metrics.QUOTA_BATCH_SIZE.observe(len(requests))
        pending = self._slabs.get(namespace)
        if pending is not None and pending.sent is not None:
            self.forget(namespace)  # whether our last write landed: the quota as it is says
        raw = self._last.get(namespace)
        fresh = raw is None
        if fresh:
            raw = await self._read(namespace)
        conflicts = 0
        sent: tuple[int, list[ChargeResult]] | None = None
        """The write answered 409: its seq, and the answers it carried."""
        for _ in range(MAX_ATTEMPTS):
            if raw is None:
                self._slabs.pop(namespace, None)
                return [ChargeResult(True, conflicts=conflicts) for _ in requests]
            view = self._view.get(namespace)
            if view is not None and view[0] is raw:
                _, name, hard, used, others = view
            else:
                quota = VMQuota.parse(raw)
                name, hard = quota.metadata.name, quota.spec.hard
                used = await self._used(raw)
                others = dict(quota.status.reservations)
                mine = others.pop(self.holder, None)
                self._reconcile(namespace, mine, others)
                if sent is not None and mine is not None and mine.seq == sent[0]:
                    # A retried PUT whose first attempt landed: decided and counted already.
                    log.info("the quota write in %s had landed (its reply was lost)", namespace)
                    self._last[namespace] = raw
                    return sent[1]
            slab = self._slabs.get(namespace)
            now = self.monotonic()
            admitting = [r.amount for r in requests if not r.dry_run]
            if slab is not None and admitting:
                slab.last_charge, slab.shape = now, admitting[-1]
            shape = admitting[-1] if admitting else slab.shape if slab is not None else None
            closing = (
                commit
                and slab is not None
                and slab.seq > 0
                and now - slab.last_charge > reservations.IDLE_SECONDS
            )
            moved = slab.consumed if slab is not None else arithmetic.zero()
            left = slab.remaining if slab is not None else arithmetic.zero()
            base = reservations.held(arithmetic.add(used, moved), others)
            if slab is not None:
                # A limit lowered under what we hold: the reservation is granted afresh on top
                # of the rest, and nothing is admitted from the old one meanwhile. Set with
                # `moved` taken and no await in between: nothing slips in.
                shrink = slab.seq > 0 and bool(arithmetic.exceeded(hard, base, left))
                slab.closing = closing or shrink
                if shrink:
                    left = reservations.limited(arithmetic.zero(), hard)
            held_now = arithmetic.add(base, left)
            decisions, total = arithmetic.decide_batch(hard, held_now, requests)
            if not fresh and any(decisions):
                # A denial must rest on the quota as it is now, not on our last view of it.
                raw, fresh = await self._read(namespace), True
                continue
            new_used = arithmetic.add(
                arithmetic.add(used, moved), arithmetic.subtract(total, held_now)
            )
            amount = None if closing else self._topped_up(others, hard, total, left, slab, shape)
            if amount is not None and slab is None:
                assert shape is not None, "a reservation is granted for a charge's shape"
                slab = self._new_slab(namespace, name, hard, shape)
            durable = slab.amount if slab is not None and slab.seq > 0 else None
            renew = commit and slab is not None
            elsewhere = reservations.holding(others)
            results = [
                ChargeResult(
                    not over, name, over, conflicts=conflicts, reserved_elsewhere=elsewhere
                )
                for over in decisions
            ]
            if (
                new_used != used
                or amount != durable
                or renew
                or (raw.get("status") or {}).get("used") is None
            ):
                seq = self._seq[namespace] = self._seq.get(namespace, 0) + 1
                entries = dict(others)
                # Ours: the reservation, or else a receipt of this write (none while giving
                # back, or where the quota has no place for it).
                ours = amount
                if ours is None and not closing and len(others) < MAX_HOLDERS - 1:
                    ours = reservations.limited(arithmetic.zero(), hard)
                if ours is not None:
                    entries[self.holder] = reservations.entry(ours, self.clock(), seq)
                if slab is not None:
                    slab.sent = (seq, moved, amount, self.monotonic())
                try:
                    raw = await self._write(
                        raw, new_used, entries=entries, charged=new_used != used
                    )
                except store.ConflictError:
                    conflicts += 1
                    sent = (seq, results) if ours is not None else None
                    raw, fresh = await self._read(namespace), True
                    continue
                finally:
                    if slab is not None:
                        slab.closing = False
                if slab is not None:
                    self._landed(namespace, slab, hard)
                # The answer to our own compare-and-swap: `new_used` is its usage, and a
                # status write leaves `spec.hard` as it was (a changed spec would have
                # conflicted).
                self._view[namespace] = (raw, name, hard, new_used, others)
            elif slab is not None:
                slab.closing = False
            self._last[namespace] = raw
            return results
        self.forget(namespace)
        last = raw["metadata"]["name"] if raw else None
        return [ChargeResult(False, last, contended=True, conflicts=conflicts) for _ in requests]

    def _topped_up(
        self,
        others: dict[str, QuotaReservation],
        hard: QuotaAmounts,
        held_now: QuotaAmounts,
        left: QuotaAmounts,
        slab: Slab | None,
        shape: QuotaAmounts | None,
    ) -> QuotaAmounts | None:
        """The reservation to write: what is left of ours, topped up to `self.reservation` of
        `shape` (the last charge) as far as the limits allow; None for none (reservations off,
        or none held and no room for one)."""
        if not self.reservation:
            return None
        if slab is None and len(others) >= MAX_HOLDERS - 1:
            return None  # keep a place for whoever comes next; decided one at a time meanwhile
        if shape is None:
            return None
        granted = reservations.grant(hard, held_now, left, shape, self.reservation)
        if granted.charges == 0 and slab is None:
            return None
        return granted.amount

    def _new_slab(self, namespace: str, name: str, hard: QuotaAmounts, shape: QuotaAmounts) -> Slab:
        """A reservation of nothing yet, usable once its first write lands; and the loop that
        writes what is admitted from it."""
        none = reservations.limited(arithmetic.zero(), hard)
        slab = Slab(name, hard, none, 0, 0.0, 0.0, shape, remaining=none)
        slab.last_charge = self.monotonic()
        self._slabs[namespace] = slab
        task = asyncio.create_task(self._commits(namespace, slab))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return slab

    def _landed(self, namespace: str, slab: Slab, hard: QuotaAmounts) -> None:
        """Our write `slab.sent` landed: what it moved into `used` is off the reservation."""
        assert slab.sent is not None, "a write was sent"
        seq, moved, amount, sent = slab.sent
        slab.sent = None
        slab.seq = seq
        slab.consumed = arithmetic.subtract(slab.consumed, moved)
        if amount is None:
            self._slabs.pop(namespace, None)  # given back
            return
        slab.hard, slab.amount, slab.renewed = hard, amount, sent
        slab.remaining = reservations.limited(arithmetic.subtract(amount, slab.consumed), hard)
        slab.valid_until = sent + reservations.TTL_SECONDS - reservations.MARGIN_SECONDS

    def _reconcile(
        self,
        namespace: str,
        mine: QuotaReservation | None,
        others: dict[str, QuotaReservation],
    ) -> None:
        """Bring this process's reservation in line with the quota as read: a write whose
        answer was lost may have landed (its seq says), and a recount may have dropped the
        reservation once it settled (and counted what was admitted from it)."""
        slab = self._slabs.get(namespace)
        if slab is None:
            if mine is not None and not reservations.covers_nothing(mine.amount):
                # Not ours to account for any more: it settles and goes. (A receipt of ours
                # holds nothing; the next write replaces it.)
                others[self.holder] = mine
                self.holder = default_holder()
            return
        if slab.sent is not None:
            if mine is not None and mine.seq == slab.sent[0]:
                self._landed(namespace, slab, slab.hard)
                return
            if mine is None and slab.sent[2] is None:
                self._slabs.pop(namespace, None)  # given back (or dropped: counted either way)
                return
            slab.sent = None  # it did not land
        if mine is None:
            if slab.seq > 0:
                # Dropped by a recount after it settled: what we admitted from it is counted.
                self._slabs.pop(namespace, None)
            return
        if mine.seq != slab.seq:  # not what we wrote: leave it to settle, hold no more under it
            log.warning(
                "reservation %s in %s is not as written; starting afresh", self.holder, namespace
            )
            self._slabs.pop(namespace, None)
            others[self.holder] = mine
            self.holder = default_holder()

    async def give_back(self) -> None:
        """Write what was admitted from this process's reservations and give them back (at
        shutdown; one that fails to is held until it settles)."""
        for namespace, slab in list(self._slabs.items()):
            slab.last_charge = -float("inf")
            try:
                async with self._lock(namespace):
                    await self._charge_batch(namespace, [], commit=True)
            except Exception as e:
                log.warning("giving back the quota reservation in %s failed: %s", namespace, e)

    async def _commits(self, namespace: str, slab: Slab) -> None:
        """Every `COMMIT_SECONDS`, write what was admitted from the reservation, and renew and
        top it up before it runs low or out; give it back once idle."""
        half = max(1, self.reservation // 2)
        renew_every = reservations.TTL_SECONDS / 3
        while self._slabs.get(namespace) is slab:
            await asyncio.sleep(reservations.COMMIT_SECONDS)
            if self._slabs.get(namespace) is not slab or slab.seq == 0:
                continue
            now = self.monotonic()
            due = (
                (slab.consumed.vms or 0) > 0
                or now - slab.renewed > renew_every
                or now - slab.last_charge > reservations.IDLE_SECONDS
                or not reservations.fits(slab.remaining, reservations.times(slab.shape, half))
            )
            if not due:
                continue
            try:
                async with self._lock(namespace):
                    await self._charge_batch(namespace, [], commit=True)
            except Exception as e:
                self.forget(namespace)
                log.warning("writing the quota reservation in %s failed: %s", namespace, e)

    async def release(
        self,
        namespace: str,
        amount: QuotaAmounts,
        uid: str | None = None,
        holds: Callable[[], Awaitable[bool]] | None = None,
    ) -> bool:
        """Subtract `amount` from the namespace's usage; False when it has no quota.

        With the VM's `uid`, exactly once: the uid is recorded in `status.released` in the
        same write, and a release of a uid already recorded subtracts nothing. `holds` says
        whether the VM still holds its quota finalizer, read afresh: it is asked after the
        quota is read and before the write, because a recorded uid is pruned once its VM let
        go of the finalizer, and a releaser acting on a stale copy of the VM (a lagging watch)
        must then find the finalizer gone rather than the uid missing."""
        async with self._lock(namespace):
            self.forget(namespace)
            for _ in range(MAX_ATTEMPTS * 4):
                raw = await self._read(namespace)
                if raw is None:
                    return False
                status = raw.get("status") or {}
                if status.get("used") is None:
                    return True  # never written: its first charge recounts
                released = [u for u in status.get("released") or [] if isinstance(u, str)]
                if uid is not None and uid in released:
                    return True  # released before (by another releaser, or before a crash)
                if holds is not None and not await holds():
                    return True  # released and let go of already; nothing is charged for it
                done = self._finalized.get(namespace, set())
                keep = [u for u in released if u not in done]
                if uid is not None:
                    keep.append(uid)
                used = await self._used(raw)
                try:
                    await self._write(raw, arithmetic.subtract(used, amount), released=keep)
                except store.ConflictError:
                    continue
                done.difference_update(set(released) - set(keep))
                return True
            raise RuntimeError(f"VMQuota in {namespace} kept changing; release not written")

    def finalized(self, namespace: str, uid: str) -> None:
        """The VM `uid` no longer holds its quota finalizer: its entry in `status.released` may
        go with this process's next release (a recount prunes it too)."""
        self._finalized.setdefault(namespace, set()).add(uid)

    async def recount(self, namespace: str) -> QuotaAmounts | None:
        """Set the namespace's usage to what its VMs hold; None when it has no quota.

        VMs whose uid is in `status.released` are not counted (their charge is already off);
        uids of VMs that hold no charge any more are pruned, in the same compare-and-swap. The
        quota is read before the VMs are listed, so a release that lands in between makes the
        write conflict and the recount start again."""
        async with self._lock(namespace):
            self.forget(namespace)
            for _ in range(MAX_ATTEMPTS * 4):
                raw = await self._read(namespace)
                if raw is None:
                    return None
                released = set((raw.get("status") or {}).get("released") or [])
                vms = await self.store.vms(namespace)
                charged = [
                    vm
                    for vm in vms
                    if arithmetic.holds_charge(vm) and vm.metadata.uid not in released
                ]
                still = sorted(
                    str(vm.metadata.uid)
                    for vm in vms
                    if vm.metadata.uid in released and arithmetic.holds_charge(vm)
                )
                counted = arithmetic.recount(charged, await self.store.flavors())
                status = VMQuota.parse(raw).status
                last = status.last_charge_time
                kept = status.reservations
                unsettled = self._observer.unsettled(namespace, kept, self.monotonic())
                fresh = {h: kept[h] for h in unsettled}
                if reservations.holding(fresh):
                    # A reservation may cover VMs admitted and not in `used` yet, which the
                    # count includes: its holder writes them in. Nothing to correct now.
                    used = arithmetic.normalized(status.used)
                else:
                    # The settled go: what was admitted from them is stored, and counted. Fresh
                    # receipts stay, so their holders can still tell a lost reply apart.
                    kept = fresh
                    used = arithmetic.recounted_usage(
                        counted,
                        arithmetic.normalized(status.used),
                        last.timestamp() if last else None,
                        self.clock(),
                    )
                try:
                    await self._write(raw, used, entries=kept, released=still)
                    return used
                except store.ConflictError:
                    continue
            raise RuntimeError(f"VMQuota in {namespace} kept changing; recount not written")


async def release_charge(
    session: aio.Session,
    vm: VirtualMachine,
    ledger: QuotaLedger | None = None,
    *,
    ignore_finalizers: Collection[str] = (),
) -> ReleaseOutcome:
    """Release a deleted VM's quota charge exactly once and remove its quota finalizer.

    Call it for a VM that has a deletionTimestamp and the `kubenova.io/quota-release`
    finalizer; it waits (returns WAITING) while other finalizers remain, because the VM's
    resources are not free until its domain is gone. A caller that holds a finalizer of its
    own on the VM (kopf's, when called from a kopf deletion handler) names it in
    `ignore_finalizers`. Safe to call again, after a crash and from several processes at once:
    the charge comes off `used` together with the VM's uid going into `status.released` (one
    compare-and-swap, so once), and only then does the finalizer go.
    """
    meta = vm.metadata
    if meta.deletion_timestamp is None or constants.QUOTA_FINALIZER not in meta.finalizers:
        return ReleaseOutcome.NOT_OURS
    others = set(meta.finalizers) - {constants.QUOTA_FINALIZER, *ignore_finalizers}
    if others:
        return ReleaseOutcome.WAITING
    assert meta.namespace is not None, "VirtualMachines are namespaced"
    assert meta.uid is not None, "an object read from the API server has a uid"
    recorded = meta.annotations.get(constants.ANNOTATION_QUOTA_CHARGED)
    charge = arithmetic.parse_charge(recorded) if recorded else None
    api = store.ApiStore(session)
    ledger = ledger or QuotaLedger(api)
    namespace = meta.namespace

    async def holds_finalizer() -> bool:
        """Whether the VM as it is now (not as the caller's copy shows it) is this one and
        still holds the quota finalizer."""
        raw = await api.read_vm(namespace, meta.name)
        if raw is None:
            return False
        m = raw.get("metadata") or {}
        return m.get("uid") == meta.uid and constants.QUOTA_FINALIZER in (m.get("finalizers") or [])

    if charge is not None:
        # Whether it was released meanwhile, the finalizer patch below finds out (404/409).
        await ledger.release(namespace, charge, meta.uid, holds_finalizer)
    current = meta
    for _ in range(MAX_ATTEMPTS):
        patch = {
            "metadata": {
                "resourceVersion": current.resource_version,
                "finalizers": [f for f in current.finalizers if f != constants.QUOTA_FINALIZER],
                "annotations": {constants.ANNOTATION_QUOTA_CHARGED: None},
            }
        }
        try:
            await api.patch_vm(namespace, meta.name, patch)
            break
        except store.ConflictError:
            pass
        # Changed since it was read, or gone: read it again; the subtraction above is not
        # repeated.
        raw = await api.read_vm(namespace, meta.name)
        if raw is None:
            return ReleaseOutcome.NOT_OURS  # gone: another releaser finished it
        fresh = VirtualMachine.parse(raw)
        if fresh.metadata.uid != meta.uid or constants.QUOTA_FINALIZER not in (
            fresh.metadata.finalizers
        ):
            return ReleaseOutcome.NOT_OURS  # another releaser removed it
        current = fresh.metadata
    else:
        raise RuntimeError(
            f"VM {namespace}/{meta.name} kept changing; its quota finalizer is still there"
        )
    ledger.finalized(namespace, meta.uid)
    if charge is None:
        return ReleaseOutcome.NOT_CHARGED
    log.info(
        "released quota charge of %s/%s",
        namespace,
        meta.name,
        extra={"charge": recorded},
    )
    return ReleaseOutcome.RELEASED


async def recount_namespace(
    session: aio.Session, namespace: str, ledger: QuotaLedger | None = None
) -> QuotaAmounts | None:
    """Recompute the namespace's VMQuota usage from its VMs and write it (compare-and-swap).
    The operator calls it periodically and when a VMQuota appears, to heal drift."""
    return await (ledger or QuotaLedger(store.ApiStore(session))).recount(namespace)
