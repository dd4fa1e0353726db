"""The quota ledger's batching and compare-and-swap, against an in-memory store that behaves
as the API server does for one VMQuota (resourceVersion checked on every write)."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable
from typing import Any

import pytest

from kubenova.api.flavor import Flavor
from kubenova.api.quota import QuotaAmounts
from kubenova.api.vm import VirtualMachine
from kubenova.quota import arithmetic, ledger, store
from tests.unit.webhooks.builders import amounts, make_flavor, make_vm

pytestmark = pytest.mark.unit

ONE = arithmetic.charge_for("small", arithmetic.resources_of(make_flavor("small", 1, "1Gi")))


class FakeStore:
    def __init__(self, hard: dict[str, Any], used: QuotaAmounts | None = None) -> None:
        self.rv = 1
        self.obj: dict[str, Any] | None = {
            "metadata": {"name": "q", "namespace": "ns", "resourceVersion": "1"},
            "spec": {"hard": hard},
            "status": {"used": used.to_dict()} if used is not None else {},
        }
        self.writes = 0
        self.reads = 0
        self.vm_list: list[VirtualMachine] = []
        self.before_write: Callable[[], None] = lambda: None

    def bump(self, **spec_hard: Any) -> None:
        """Another writer changes the quota."""
        assert self.obj is not None
        self.rv += 1
        self.obj["metadata"]["resourceVersion"] = str(self.rv)
        self.obj["spec"]["hard"].update(spec_hard)

    async def quotas(self, namespace: str) -> list[dict[str, Any]]:
        self.reads += 1
        await asyncio.sleep(0)
        return [copy.deepcopy(self.obj)] if self.obj else []

    async def write_status(self, body: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(0.001)  # a round trip, during which more charges arrive
        self.before_write()
        assert self.obj is not None
        if body["metadata"]["resourceVersion"] != self.obj["metadata"]["resourceVersion"]:
            raise store.ConflictError("the object has been modified")
        self.writes += 1
        self.rv += 1
        self.obj["status"] = copy.deepcopy(body["status"])
        self.obj["metadata"]["resourceVersion"] = str(self.rv)
        return copy.deepcopy(self.obj)

    async def vms(self, namespace: str) -> list[VirtualMachine]:
        return self.vm_list

    async def flavors(self) -> dict[str, Flavor]:
        return {"small": make_flavor("small", 1, "1Gi")}

    @property
    def used(self) -> QuotaAmounts:
        assert self.obj is not None
        return QuotaAmounts.model_validate(self.obj["status"]["used"])


def charge_all(
    book: ledger.QuotaLedger, n: int, amount: QuotaAmounts = ONE
) -> list[ledger.ChargeResult]:
    async def run() -> list[ledger.ChargeResult]:
        return list(await asyncio.gather(*(book.charge("ns", amount) for _ in range(n))))

    return asyncio.run(run())


def test_100_concurrent_charges_with_room_for_10_admit_10_in_few_writes() -> None:
    s = FakeStore({"vms": 10}, arithmetic.zero())
    results = charge_all(ledger.QuotaLedger(s), 100)
    assert sum(r.admitted for r in results) == 10
    assert s.used.vms == 10
    assert s.writes < 10, "charges that wait for a write are written together"
    denied = [r for r in results if not r.admitted]
    assert all(str(r.exceeded[0]) == "vms: requested 1, used 10, limited to 10" for r in denied)


def test_a_lost_compare_and_swap_is_decided_again_on_the_new_quota() -> None:
    s = FakeStore({"vms": 10}, arithmetic.zero())
    writes_seen: list[bool] = []

    def other_writer() -> None:
        if not writes_seen:  # once: someone else charges 8 VMs first
            writes_seen.append(True)
            assert s.obj is not None
            s.obj["status"]["used"] = amounts(vms=8).to_dict()
            s.bump()

    s.before_write = other_writer
    results = charge_all(ledger.QuotaLedger(s), 5)
    assert sum(r.admitted for r in results) == 2
    assert s.used.vms == 10
    assert sum(r.conflicts for r in results) >= 1


def test_a_denial_is_never_based_on_a_stale_view() -> None:
    s = FakeStore({"vms": 1}, arithmetic.zero())
    book = ledger.QuotaLedger(s)
    assert [r.admitted for r in charge_all(book, 1)] == [True]
    s.bump(vms=5)  # an admin raised the limit; the ledger's cached view still says 1
    assert [r.admitted for r in charge_all(book, 1)] == [True]
    assert s.used.vms == 2


def test_a_quota_that_never_stops_changing_is_refused_as_contended() -> None:
    s = FakeStore({"vms": 10}, arithmetic.zero())
    s.before_write = s.bump
    (r,) = charge_all(ledger.QuotaLedger(s), 1)
    assert (r.admitted, r.contended, r.conflicts) == (False, True, ledger.MAX_ATTEMPTS)
    assert s.writes == 0


def test_a_namespace_without_quota_is_not_charged() -> None:
    s = FakeStore({"vms": 0})
    s.obj = None
    (r,) = charge_all(ledger.QuotaLedger(s), 1)
    assert (r.admitted, r.quota) == (True, None)


def test_a_new_quota_starts_from_a_recount_of_the_vms_already_there() -> None:
    s = FakeStore({"vms": 3})
    s.vm_list = [make_vm("a"), make_vm("b")]
    results = charge_all(ledger.QuotaLedger(s), 3)
    assert [r.admitted for r in results] == [True, False, False]
    assert s.used.vms == 3


def test_release_subtracts_and_recount_heals() -> None:
    s = FakeStore({"vms": 10}, amounts(vms=4, vcpus=4, memory="4Gi", gpus=0, flavors={"small": 4}))
    book = ledger.QuotaLedger(s)
    assert asyncio.run(book.release("ns", ONE)) is True
    assert (s.used.vms, s.used.flavors) == (3, {"small": 3})
    s.vm_list = [make_vm("only")]
    healed = asyncio.run(book.recount("ns"))
    assert healed is not None and s.used == healed and healed.vms == 1


def test_a_failing_store_fails_every_waiting_charge() -> None:
    s = FakeStore({"vms": 10}, arithmetic.zero())

    def broken() -> None:
        raise store.StoreError("500 etcd is on fire")

    s.before_write = broken
    with pytest.raises(store.StoreError):
        charge_all(ledger.QuotaLedger(s), 3)
