"""Quota reservations (`--quota-reservation`): creates admitted from memory, written a batch at
a time, and the count still exact across replicas, lost replies, crashes and recounts. Against
the in-memory store of `test_ledger`, which checks the resourceVersion of every write."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import pytest

from kubenova.api.quota import QuotaAmounts
from kubenova.quota import arithmetic, ledger, reservations, store
from tests.unit.quota.test_ledger import ONE, FakeStore
from tests.unit.webhooks.builders import make_vm

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def reserving(s: store.QuotaStore, size: int = 8, **kwargs: Any) -> ledger.QuotaLedger:
    return ledger.QuotaLedger(s, reservation=size, **kwargs)


def held(s: FakeStore) -> QuotaAmounts:
    assert s.obj is not None
    status = s.obj["status"]
    used = QuotaAmounts.model_validate(status["used"])
    return reservations.held(used, reservations.parse(status))


async def charge_n(book: ledger.QuotaLedger, n: int, *, dry_run: bool = False) -> int:
    """Charge one at a time (as reviews arrive); how many were admitted."""
    admitted = 0
    for _ in range(n):
        admitted += (await book.charge("ns", ONE, dry_run=dry_run)).admitted
    return admitted


async def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait for `check` (on a busy machine the commit loop may run late)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(reservations.COMMIT_SECONDS)


def test_creates_are_admitted_from_the_reservation_and_written_in_batches() -> None:
    s = FakeStore({"vms": 1000}, arithmetic.zero())

    async def run() -> None:
        book = reserving(s, 8)
        assert await charge_n(book, 40) == 40
        assert s.writes <= 6, "one write tops the reservation up for every 8 or so creates"
        # Before its write, what was admitted from the reservation is held by it.
        assert (held(s).vms or 0) >= 40
        await eventually(lambda: s.used.vms == 40)  # the commit loop's write, within 50 ms

        await book.give_back()
        assert s.obj is not None
        assert s.obj["status"]["reservations"] == {}
        assert s.used.vms == 40

    asyncio.run(run())


def test_two_replicas_holding_reservations_never_admit_past_the_limit() -> None:
    s = FakeStore({"vms": 25}, arithmetic.zero())

    async def run() -> None:
        a, b = reserving(s, 8), reserving(s, 8)
        counts = await asyncio.gather(charge_n(a, 30), charge_n(b, 30), charge_n(a, 30))
        assert sum(counts) == 25
        assert (held(s).vms or 0) <= 25
        await a.give_back()
        await b.give_back()
        assert s.used.vms == 25

    asyncio.run(run())


def test_a_dry_run_is_checked_against_the_reservation_and_takes_nothing() -> None:
    s = FakeStore({"vms": 1000}, arithmetic.zero())

    async def run() -> None:
        book = reserving(s, 8)
        assert await charge_n(book, 2) == 2
        assert await charge_n(book, 5, dry_run=True) == 5
        await book.give_back()
        assert s.used.vms == 2

    asyncio.run(run())


class LosingStore(FakeStore):
    """Lands the next `lose` writes and loses their replies: once as an error, once as the
    409 a retried request gets after the first attempt landed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lose: list[type[Exception]] = []

    async def write_status(self, body: dict[str, Any]) -> dict[str, Any]:
        out = await super().write_status(body)
        if self.lose:
            raise self.lose.pop(0)("the reply was lost")
        return out


@pytest.mark.parametrize("lost_as", [store.StoreError, store.ConflictError])
def test_a_write_whose_reply_was_lost_is_found_by_its_seq_and_not_counted_twice(
    lost_as: type[Exception],
) -> None:
    s = LosingStore({"vms": 1000}, arithmetic.zero())

    async def run() -> None:
        book = reserving(s, 8)
        assert await charge_n(book, 5) == 5  # the first grant, then four from memory
        s.lose.append(lost_as)
        with contextlib.suppress(store.StoreError):
            await book._charge_batch("ns", [], commit=True)  # moves the four into used
        assert s.used.vms == 5, "the commit landed"
        assert await charge_n(book, 20) == 20
        await book.give_back()
        assert s.used.vms == 25

    asyncio.run(run())


@pytest.mark.parametrize("size", [0, 8], ids=["exact", "reserving"])
def test_a_charge_whose_write_landed_and_was_answered_409_is_counted_once(size: int) -> None:
    """A retried PUT whose first attempt landed is answered 409: the batch it carried must not
    be decided and written again. Its receipt (the holder's `seq`) says the write landed."""
    s = LosingStore({"vms": 1000}, arithmetic.zero())

    async def run() -> None:
        book = ledger.QuotaLedger(s, reservation=size)
        s.lose.append(store.ConflictError)
        first = await book.charge("ns", ONE)  # a slow-path charge: no reservation yet
        assert first.admitted
        assert (held(s).vms or 0) >= 1
        assert await charge_n(book, 3) == 3
        await book.give_back()
        assert s.used.vms == 4

    asyncio.run(run())


def test_a_receipt_holds_nothing_back_and_goes_once_settled() -> None:
    """Without reservations a charge leaves a receipt (its seq); it counts for nothing, blocks
    no recount and no other replica, and a recount drops it once it settled."""
    s = FakeStore({"vms": 3}, arithmetic.zero())
    wall, ticks = Clock(), Clock()

    async def run() -> None:
        a, b = ledger.QuotaLedger(s, wall), ledger.QuotaLedger(s, wall, monotonic=ticks)
        assert await charge_n(a, 2) == 2
        assert s.obj is not None
        assert set(s.obj["status"]["reservations"]) == {a.holder}
        assert held(s).vms == 2
        assert await charge_n(b, 1) == 1
        refused = await b.charge("ns", ONE)
        assert (refused.admitted, refused.reserved_elsewhere) == (False, False)
        assert set(s.obj["status"]["reservations"]) == {a.holder, b.holder}
        # Drift: one of the three creates failed after admission; the recount corrects it at
        # once (past the charges' settle window), receipts or not, and keeps them while fresh.
        s.vm_list = [make_vm(f"vm-{i}", "ns") for i in range(2)]
        wall.now += arithmetic.CHARGE_SETTLE_SECONDS + 1
        assert (await b.recount("ns") or arithmetic.zero()).vms == 2
        assert set(s.obj["status"]["reservations"]) == {a.holder, b.holder}
        ticks.now += reservations.SETTLE_SECONDS + 1
        await b.recount("ns")
        assert s.obj["status"]["reservations"] == {}
        assert await charge_n(a, 2) == 1, "room for one more, and a new receipt"
        assert s.used.vms == 3
        assert set(s.obj["status"]["reservations"]) == {a.holder}

    asyncio.run(run())


class Cut:
    """The store as seen by a holder cut off from the API server when `cut` is set."""

    def __init__(self, s: FakeStore) -> None:
        self.s, self.cut = s, False

    def __getattr__(self, name: str) -> Any:
        if self.cut:
            raise store.StoreError("connection refused")
        return getattr(self.s, name)


async def settle(recounter: ledger.QuotaLedger, ticks: Clock) -> None:
    """Recount twice, `SETTLE_SECONDS` apart on the recounter's clock."""
    await recounter.recount("ns")
    ticks.now += reservations.SETTLE_SECONDS + 1
    await recounter.recount("ns")


def test_a_holder_that_dies_keeps_its_charges_held_until_a_recount_saw_it_settle() -> None:
    s = FakeStore({"vms": 100}, arithmetic.zero())
    ticks = Clock()

    async def run() -> None:
        dead = reserving(s, 8)
        assert await charge_n(dead, 6) == 6
        # It dies here: some of its six are in no write of `used` yet.
        dead._slabs.clear()
        s.vm_list = [make_vm(f"vm-{i}", "ns") for i in range(6)]
        assert (s.used.vms or 0) < 6 <= (held(s).vms or 0)
        live = ledger.QuotaLedger(s, monotonic=ticks)
        assert await charge_n(live, 10) == 10
        before = s.used.vms or 0
        await live.recount("ns")
        ticks.now += reservations.SETTLE_SECONDS - 1
        await live.recount("ns")
        assert s.used.vms == before, "an unsettled reservation: the recount changes nothing"
        s.vm_list = s.vm_list + [make_vm(f"vm-live-{i}", "ns") for i in range(before - 6)]
        ticks.now += 2
        await live.recount("ns")
        assert s.obj is not None
        assert s.obj["status"]["reservations"] == {}
        assert s.used.vms == len(s.vm_list), "the recount counts what the dead holder admitted"

    asyncio.run(run())


def test_a_holder_whose_reservation_a_recount_dropped_does_not_write_its_charges_again() -> None:
    s = FakeStore({"vms": 1000}, arithmetic.zero())
    ticks, recounter_ticks = Clock(), Clock()

    async def run() -> None:
        view = Cut(s)
        book = reserving(view, 8, monotonic=ticks)
        assert await charge_n(book, 3) == 3  # one in used, two only in the reservation
        assert s.used.vms == 1
        # Its writes stop getting through for longer than the reservation lasts...
        view.cut = True
        ticks.now += reservations.TTL_SECONDS
        with pytest.raises(store.StoreError):  # not from memory: it could not renew
            await book.charge("ns", ONE)
        s.vm_list = [make_vm(f"vm-{i}", "ns") for i in range(3)]
        recounter = ledger.QuotaLedger(s, monotonic=recounter_ticks)
        await settle(recounter, recounter_ticks)  # ...and a recount drops it
        assert s.obj is not None
        assert s.obj["status"]["reservations"] == {}
        assert s.used.vms == 3
        view.cut = False
        book.forget("ns")
        assert await charge_n(book, 1) == 1
        await book.give_back()
        assert s.used.vms == 4, "its two unwritten charges were counted once, by the recount"

    asyncio.run(run())


def test_nothing_is_admitted_from_a_reservation_its_holder_could_not_renew() -> None:
    s = FakeStore({"vms": 1000}, arithmetic.zero())
    ticks = Clock()

    async def run() -> None:
        book = reserving(s, 8, monotonic=ticks)
        await charge_n(book, 1)
        writes = s.writes
        await charge_n(book, 1)
        assert s.writes == writes, "from memory"
        ticks.now += reservations.TTL_SECONDS - reservations.MARGIN_SECONDS
        await charge_n(book, 1)
        assert s.writes == writes + 1, "past its time: decided and written as without one"

    asyncio.run(run())


def test_the_reservation_shrinks_to_the_room_left_and_the_limit_holds() -> None:
    s = FakeStore({"vms": 5, "flavors": {"small": 3}}, arithmetic.zero())

    async def run() -> None:
        book = reserving(s, 32)
        assert await charge_n(book, 10) == 3
        assert (held(s).flavors.get("small") or 0) <= 3
        await book.give_back()
        assert s.used.vms == 3

    asyncio.run(run())


def test_a_grant_covers_only_the_limited_resources_and_never_passes_the_limit() -> None:
    hard = QuotaAmounts(vms=10, vcpus=6)
    none = reservations.limited(arithmetic.zero(), hard)
    two = QuotaAmounts(vms=1, vcpus=2, memory=ONE.memory, gpus=0, flavors={"small": 1})
    g = reservations.grant(hard, arithmetic.zero(), none, two, 32)
    # Half the room at most: 6 vCPUs free, so one charge of 2, with 4 left to everyone else.
    assert (g.charges, g.amount.vms, g.amount.vcpus, g.amount.memory) == (1, 1, 2, None)
    assert reservations.fits(g.amount, two)
    full = reservations.grant(hard, g.amount, g.amount, two, 1)
    assert full.charges == 0, "already holds the size asked for"
    left = reservations.limited(arithmetic.subtract(g.amount, two), hard)
    assert (left.vms, left.vcpus) == (0, 0)
    assert not reservations.fits(left, two)
    assert reservations.fits(left, QuotaAmounts(memory=ONE.memory)), "memory is not limited"


def test_a_lowered_limit_shrinks_the_reservation_at_the_next_write() -> None:
    s = FakeStore({"vms": 100}, arithmetic.zero())

    async def run() -> None:
        book = reserving(s, 8)
        assert await charge_n(book, 2) == 2
        assert (held(s).vms or 0) == 9, "one in used, the second inside the reservation of 8"
        s.bump(vms=3)  # an admin lowers the limit under what is held
        await book._charge_batch("ns", [], commit=True)  # the commit loop's next round
        assert held(s).vms == 2, "one free: too little to reserve half of"
        assert await charge_n(book, 5) == 1
        await book.give_back()
        assert s.used.vms == 3

    asyncio.run(run())


def test_no_reservation_is_taken_where_the_quota_has_no_place_for_another() -> None:
    s = FakeStore({"vms": 1000}, arithmetic.zero())
    assert s.obj is not None
    s.obj["status"]["reservations"] = {
        f"gone-{i}": reservations.entry(arithmetic.zero(), 0.0, 1).to_dict()
        for i in range(ledger.MAX_HOLDERS - 1)
    }

    async def run() -> None:
        book = reserving(s, 8)
        assert await charge_n(book, 3) == 3
        assert s.writes == 3, "each decided and written on its own"
        assert s.obj is not None
        assert len(s.obj["status"]["reservations"]) == ledger.MAX_HOLDERS - 1

    asyncio.run(run())


def test_near_the_limit_a_refusal_says_another_replica_holds_room_and_it_comes_free() -> None:
    s = FakeStore({"vms": 4}, arithmetic.zero())

    async def run() -> None:
        a, b = reserving(s, 8), ledger.QuotaLedger(s)
        assert await charge_n(a, 1) == 1
        assert held(s).vms == 2, "half the room left at most: 1 of 3"
        assert await charge_n(b, 2) == 2
        refused = await b.charge("ns", ONE)
        assert (refused.admitted, refused.reserved_elsewhere) == (False, True)
        await a.give_back()
        assert (await b.charge("ns", ONE)).admitted
        assert s.used.vms == 4

    asyncio.run(run())
