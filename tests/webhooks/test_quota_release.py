"""Releasing a deleted VM's quota charge exactly once while other processes recount the
namespace (the operator's periodic recount, a second releaser), through the real API server.

The interleavings are forced, not hoped for: the releaser's store runs another ledger's recount
right before each of its reads or right after each of its writes, as a recount in another
process would land there. The VMs carry one more finalizer, which the releaser is told to
ignore (as the operator names kopf's): it keeps the webhook fixture's release loop, which
acts only on VMs whose last finalizer is the quota's, out of these races."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest

from kubenova.api import constants
from kubenova.api.quota import QuotaAmounts, VMQuota
from kubenova.api.vm import VirtualMachine
from kubenova.kube import aio
from kubenova.quota import arithmetic, ledger, store

pytestmark = pytest.mark.apiserver

G, V = constants.GROUP, constants.VERSION
CHARGE = arithmetic.charge_for(
    "small", VirtualMachine.parse(
        {"kind": "VirtualMachine", "metadata": {"name": "x"},
         "spec": {"flavor": "small", "boot": {"image": "i"},
                  "resources": {"vcpus": 1, "memory": "1Gi", "disk": "10Gi"}}}
    ).spec.resources  # type: ignore[arg-type]
)  # fmt: skip


HOLD = "test.kubenova.io/hold"


async def release(
    api: Any, vm: VirtualMachine, book: ledger.QuotaLedger | None = None
) -> ledger.ReleaseOutcome:
    return await ledger.release_charge(aio.Session(api), vm, book, ignore_finalizers=[HOLD])


class RecountAround(store.ApiStore):
    """The releaser's store: another process's recount lands before each quota read
    (`before_read`) or after each status write (`after_write`)."""

    def __init__(self, api: Any, *, before_read: bool = False, after_write: bool = False) -> None:
        super().__init__(aio.Session(api))
        self.other = ledger.QuotaLedger(store.ApiStore(aio.Session(api)))
        self.before_read = before_read
        self.after_write = after_write
        self.recounted: list[int | None] = []

    async def _recount(self, namespace: str) -> None:
        used = await self.other.recount(namespace)
        self.recounted.append(used.vms if used else None)

    async def quotas(self, namespace: str) -> list[dict[str, Any]]:
        if self.before_read:
            await self._recount(namespace)
        return await super().quotas(namespace)

    async def write_status(self, body: dict[str, Any]) -> dict[str, Any]:
        out = await super().write_status(body)
        if self.after_write:
            await self._recount(body["metadata"]["namespace"])
        return out


@pytest.fixture
def custom(api: Any) -> Any:
    return kubernetes.client.CustomObjectsApi(api)


def _vm(custom: Any, ns: str, name: str) -> VirtualMachine:
    """A VM as the webhook leaves it: charged (annotation) and holding the quota finalizer."""
    body = {
        "apiVersion": constants.API_VERSION,
        "kind": "VirtualMachine",
        "metadata": {
            "name": name,
            "namespace": ns,
            "finalizers": [constants.QUOTA_FINALIZER, HOLD],
            "annotations": {constants.ANNOTATION_QUOTA_CHARGED: arithmetic.format_charge(CHARGE)},
        },
        "spec": {"flavor": "small", "boot": {"image": "test.qcow2"}},
    }
    return VirtualMachine.parse(
        custom.create_namespaced_custom_object(G, V, ns, "virtualmachines", body)
    )


def _quota(custom: Any, ns: str, vms: int) -> None:
    body = {
        "apiVersion": constants.API_VERSION,
        "kind": "VMQuota",
        "metadata": {"name": "limits", "namespace": ns},
        "spec": {"hard": {"vms": 10}},
    }
    custom.create_namespaced_custom_object(G, V, ns, "vmquotas", body)
    raw = custom.get_namespaced_custom_object(G, V, ns, "vmquotas", "limits")
    used = arithmetic.zero()
    for _ in range(vms):
        used = arithmetic.add(used, CHARGE)
    custom.replace_namespaced_custom_object_status(
        G, V, ns, "vmquotas", "limits", store.status_body(raw, used)
    )


def _status(custom: Any, ns: str) -> tuple[QuotaAmounts, dict[str, Any]]:
    q = VMQuota.parse(custom.get_namespaced_custom_object(G, V, ns, "vmquotas", "limits"))
    raw = custom.get_namespaced_custom_object(G, V, ns, "vmquotas", "limits")
    return q.status.used, raw.get("status") or {}


def _deleting(custom: Any, ns: str, name: str) -> VirtualMachine:
    custom.delete_namespaced_custom_object(G, V, ns, "virtualmachines", name)
    return VirtualMachine.parse(
        custom.get_namespaced_custom_object(G, V, ns, "virtualmachines", name)
    )


def _exists(custom: Any, ns: str, name: str) -> bool:
    """Whether the VM still holds its quota finalizer (it is kept by HOLD after that)."""
    try:
        raw = custom.get_namespaced_custom_object(G, V, ns, "virtualmachines", name)
    except kubernetes.client.exceptions.ApiException as e:
        if e.status == 404:
            return False
        raise
    return constants.QUOTA_FINALIZER in (raw["metadata"].get("finalizers") or [])


@pytest.fixture
def two_charged_vms(custom: Any, namespace: str) -> Iterator[str]:
    _vm(custom, namespace, "keep")
    _vm(custom, namespace, "gone")
    _quota(custom, namespace, vms=2)
    yield namespace


def test_a_recount_during_a_release_does_not_take_the_charge_off_twice(
    api: Any, custom: Any, two_charged_vms: str
) -> None:
    ns = two_charged_vms
    vm = _deleting(custom, ns, "gone")
    releasing = RecountAround(api, before_read=True)
    outcome = asyncio.run(release(api, vm, ledger.QuotaLedger(releasing)))
    assert outcome is ledger.ReleaseOutcome.RELEASED
    assert not _exists(custom, ns, "gone")
    used, _ = _status(custom, ns)
    assert used.vms == 1, f"one VM is alive; recounts seen meanwhile: {releasing.recounted}"
    assert used.memory == CHARGE.memory
    # And once more from the other side: a recount afterwards agrees and keeps no bookkeeping.
    again = asyncio.run(ledger.QuotaLedger(store.ApiStore(aio.Session(api))).recount(ns))
    assert again is not None and again.vms == 1
    assert not _status(custom, ns)[1].get("released")


def test_a_recount_between_the_subtraction_and_the_finalizer_removal_counts_the_vm_once(
    api: Any, custom: Any, two_charged_vms: str
) -> None:
    ns = two_charged_vms
    vm = _deleting(custom, ns, "gone")
    releasing = RecountAround(api, after_write=True)
    asyncio.run(release(api, vm, ledger.QuotaLedger(releasing)))
    assert releasing.recounted and all(n == 1 for n in releasing.recounted), releasing.recounted
    assert _status(custom, ns)[0].vms == 1


def test_a_release_retried_after_a_crash_subtracts_once(
    api: Any, custom: Any, two_charged_vms: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ns = two_charged_vms
    vm = _deleting(custom, ns, "gone")

    class ProcessDiedError(Exception):
        pass

    async def dies_at_the_finalizer_patch(*args: Any, **kwargs: Any) -> None:
        raise ProcessDiedError

    with monkeypatch.context() as m:
        m.setattr(store.ApiStore, "patch_vm", dies_at_the_finalizer_patch)
        with pytest.raises(ProcessDiedError):
            asyncio.run(release(api, vm, ledger.QuotaLedger(store.ApiStore(aio.Session(api)))))
    assert _exists(custom, ns, "gone"), "the finalizer is still there"
    recounted = asyncio.run(ledger.QuotaLedger(store.ApiStore(aio.Session(api))).recount(ns))
    assert recounted is not None and recounted.vms is not None and recounted.vms >= 1
    fresh = VirtualMachine.parse(
        custom.get_namespaced_custom_object(G, V, ns, "virtualmachines", "gone")
    )
    asyncio.run(release(api, fresh))
    assert not _exists(custom, ns, "gone")
    used = _status(custom, ns)[0]
    assert (used.vms, used.flavors) == (1, {"small": 1}), "the retry must not subtract again"


def test_two_releasers_at_once_subtract_once(api: Any, custom: Any, two_charged_vms: str) -> None:
    ns = two_charged_vms
    vm = _deleting(custom, ns, "gone")

    async def both() -> list[ledger.ReleaseOutcome]:
        a = ledger.QuotaLedger(store.ApiStore(aio.Session(api)))
        b = ledger.QuotaLedger(store.ApiStore(aio.Session(api)))
        return list(await asyncio.gather(release(api, vm, a), release(api, vm, b)))

    outcomes = asyncio.run(both())
    assert ledger.ReleaseOutcome.RELEASED in outcomes, outcomes
    assert not _exists(custom, ns, "gone")
    assert _status(custom, ns)[0].vms == 1


def test_a_release_from_a_stale_copy_after_its_uid_was_pruned_subtracts_nothing(
    api: Any, custom: Any, two_charged_vms: str
) -> None:
    """Found by the chaos run: a releaser acting on a VM from a lagging watch, after another
    process released it and a recount pruned its uid, took the charge off a second time."""
    ns = two_charged_vms
    stale = _deleting(custom, ns, "gone")  # as a watch that has not caught up still shows it
    first = ledger.QuotaLedger(store.ApiStore(aio.Session(api)))
    assert asyncio.run(release(api, stale, first)) is ledger.ReleaseOutcome.RELEASED
    pruned = asyncio.run(ledger.QuotaLedger(store.ApiStore(aio.Session(api))).recount(ns))
    assert pruned is not None and pruned.vms == 1
    assert not _status(custom, ns)[1].get("released"), "the uid is pruned"
    late = asyncio.run(release(api, stale, ledger.QuotaLedger(store.ApiStore(aio.Session(api)))))
    assert late is ledger.ReleaseOutcome.NOT_OURS
    assert _status(custom, ns)[0].vms == 1, "a stale copy took the charge off a second time"


def _admitted_not_stored(api: Any, custom: Any, ns: str) -> ledger.QuotaLedger:
    """One VM exists and is charged; the webhook then admits a second (charged, not yet
    stored by the API server): the window every create passes through."""
    _vm(custom, ns, "stored")
    _quota(custom, ns, vms=1)
    webhook = ledger.QuotaLedger(store.ApiStore(aio.Session(api)))
    assert asyncio.run(webhook.charge(ns, CHARGE)).admitted
    assert _status(custom, ns)[0].vms == 2
    return webhook


def test_a_recount_between_a_charge_and_the_create_keeps_the_charge(
    api: Any, custom: Any, namespace: str
) -> None:
    """Found by the chaos run (used 101 with 102 VMs): a recount that lands after the webhook
    charged a create but before the API server stored the VM counted one VM too few and wrote
    that, so the VM ran uncharged."""
    ns = namespace
    _admitted_not_stored(api, custom, ns)
    recounted = asyncio.run(ledger.QuotaLedger(store.ApiStore(aio.Session(api))).recount(ns))
    _vm(custom, ns, "admitted")  # the API server stores it now
    assert recounted is not None and recounted.vms == 2
    assert _status(custom, ns)[0].vms == 2, "two VMs exist, both charged"


def test_a_recount_after_the_settle_time_heals_a_charge_whose_create_never_landed(
    api: Any, custom: Any, namespace: str
) -> None:
    ns = namespace
    _admitted_not_stored(api, custom, ns)  # ... and the create then failed after admission
    later = time.time() + arithmetic.CHARGE_SETTLE_SECONDS + 1
    book = ledger.QuotaLedger(store.ApiStore(aio.Session(api)), clock=lambda: later)
    recounted = asyncio.run(book.recount(ns))
    assert recounted is not None and recounted.vms == 1
    assert _status(custom, ns)[0].vms == 1, "the drift is healed once no charge is in flight"
