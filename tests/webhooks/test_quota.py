"""Quota through the real API server: charged on create, told which limit was hit, released
once when the VM is removed, never charged for migrations or status changes or dry runs, and
exact under a 100-way race and across a webhook restart."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from kubenova.api import constants
from kubenova.api.flavor import Flavor
from kubenova.api.quota import QuotaAmounts
from kubenova.api.vm import VirtualMachine
from kubenova.dev.faults import Fault, Rule
from kubenova.kube import aio, client
from kubenova.quota import arithmetic, ledger, reservations, store
from tests.fixtures.cluster import LocalCluster, wait_for
from tests.fixtures.faultproxy import Proxy
from tests.fixtures.webhook import Webhook, create_vms, delete_unbound_vm, vm_manifest

pytestmark = pytest.mark.apiserver

UPDATE = frozenset({"update"})
QUOTA_STATUS = frozenset({"vmquotas/status"})


@pytest.fixture(scope="module")
def flavor(test_cluster: LocalCluster, webhook: Webhook) -> Iterator[str]:
    name = f"q-{uuid.uuid4().hex[:8]}"
    doc = {
        "apiVersion": "kubenova.io/v1alpha1",
        "kind": "Flavor",
        "metadata": {"name": name},
        "spec": {"vcpus": 1, "memory": "1Gi", "disk": "10Gi"},
    }
    test_cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))
    yield name


def _set_quota(tc: LocalCluster, ns: str, **hard: object) -> None:
    doc = {
        "apiVersion": "kubenova.io/v1alpha1",
        "kind": "VMQuota",
        "metadata": {"name": "limits", "namespace": ns},
        "spec": {"hard": hard},
    }
    tc.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))


def _used(tc: LocalCluster, ns: str) -> QuotaAmounts:
    q = tc.get("vmquota", "limits", "-n", ns)
    return arithmetic.normalized(QuotaAmounts.model_validate(q.get("status", {}).get("used", {})))


def _vms(tc: LocalCluster, ns: str) -> list[VirtualMachine]:
    return [VirtualMachine.parse(v) for v in tc.get("vm", "-n", ns)["items"]]


def _flavors(tc: LocalCluster) -> dict[str, Flavor]:
    return {f["metadata"]["name"]: Flavor.parse(f) for f in tc.get("flavors")["items"]}


def _recounted(tc: LocalCluster, ns: str) -> QuotaAmounts:
    return arithmetic.recount(_vms(tc, ns), _flavors(tc))


class TestCharge:
    def test_creates_are_charged_until_a_limit_and_the_denial_names_it(
        self, test_cluster: LocalCluster, wh_namespace: str, flavor: str
    ) -> None:
        _set_quota(test_cluster, wh_namespace, vms=5, vcpus=2)
        for name in ("a", "b"):
            doc = yaml.safe_dump(vm_manifest(name, wh_namespace, flavor))
            test_cluster.kubectl("apply", "-f", "-", input=doc)
        proc = test_cluster.kubectl(
            "apply",
            "-f",
            "-",
            input=yaml.safe_dump(vm_manifest("c", wh_namespace, flavor)),
            check=False,
        )
        assert proc.returncode != 0
        says = " ".join(proc.stderr.split())
        assert f"QuotaExceeded: VirtualMachine {wh_namespace}/c: exceeded VMQuota" in says
        assert "vcpus: requested 1, used 2, limited to 2" in says
        assert "vms:" not in says, "only the limit that was hit is named"
        used = _used(test_cluster, wh_namespace)
        assert (used.vms, used.vcpus, str(used.memory), used.flavors) == (2, 2, "2Gi", {flavor: 2})

    def test_a_per_flavor_limit_is_enforced(
        self, test_cluster: LocalCluster, wh_namespace: str, flavor: str
    ) -> None:
        _set_quota(test_cluster, wh_namespace, flavors={flavor: 1})
        replies = create_vms(test_cluster, wh_namespace, ["one", "two"], flavor)
        assert sorted(r.status for r in replies) == [201, 403]
        (denied,) = [r for r in replies if r.status == 403]
        assert f"flavors[{flavor}]: requested 1, used 1, limited to 1" in denied.message

    def test_a_dry_run_is_checked_but_not_charged(
        self, test_cluster: LocalCluster, wh_namespace: str, flavor: str
    ) -> None:
        _set_quota(test_cluster, wh_namespace, vms=1)
        doc = yaml.safe_dump(vm_manifest("dry", wh_namespace, flavor))
        test_cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=doc)
        assert _used(test_cluster, wh_namespace).vms == 0
        test_cluster.kubectl("apply", "-f", "-", input=doc)
        assert _used(test_cluster, wh_namespace).vms == 1

    def test_migrations_and_status_changes_are_never_charged(
        self, test_cluster: LocalCluster, wh_namespace: str, flavor: str
    ) -> None:
        _set_quota(test_cluster, wh_namespace, vms=1)
        doc = yaml.safe_dump(vm_manifest("mover", wh_namespace, flavor))
        test_cluster.kubectl("apply", "-f", "-", input=doc)
        migration = {
            "apiVersion": "kubenova.io/v1alpha1",
            "kind": "VMMigration",
            "metadata": {"name": "move", "namespace": wh_namespace},
            "spec": {"vmName": "mover"},
        }
        test_cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(migration))
        for status in (
            '{"phase":"Running","host":"h1"}',
            '{"phase":"Migrating","host":"h1"}',
            '{"phase":"Running","host":"h2"}',
        ):
            test_cluster.kubectl(
                "patch",
                "vm",
                "mover",
                "-n",
                wh_namespace,
                "--subresource=status",
                "--type=merge",
                "-p",
                f'{{"status":{status}}}',
            )
        used = _used(test_cluster, wh_namespace)
        assert (used.vms, used.vcpus) == (1, 1)
        assert test_cluster.get("vm", "mover", "-n", wh_namespace)["status"]["host"] == "h2"


class TestRelease:
    def test_a_deleted_vm_releases_its_charge_once(
        self, test_cluster: LocalCluster, wh_namespace: str, flavor: str
    ) -> None:
        _set_quota(test_cluster, wh_namespace, vms=2)
        replies = create_vms(test_cluster, wh_namespace, ["a", "b", "c"], flavor)
        assert sorted(r.status for r in replies) == [201, 201, 403]
        (admitted, _) = [r.body["metadata"]["name"] for r in replies if r.status == 201]
        delete_unbound_vm(test_cluster, wh_namespace, admitted)
        wait_for("the VM gone", lambda: not any(
            v["metadata"]["name"] == admitted
            for v in test_cluster.get("vm", "-n", wh_namespace)["items"]
        ))  # fmt: skip
        wait_for(
            "the release of one VM",
            lambda: _used(test_cluster, wh_namespace).vms == 1,
        )
        assert _used(test_cluster, wh_namespace) == _recounted(test_cluster, wh_namespace)
        # Room for exactly one more: the charge was released once, not twice.
        replies = create_vms(test_cluster, wh_namespace, ["d", "e"], flavor)
        assert sorted(r.status for r in replies) == [201, 403]

    def test_the_release_waits_for_the_other_finalizers(
        self, test_cluster: LocalCluster, wh_namespace: str, flavor: str
    ) -> None:
        _set_quota(test_cluster, wh_namespace, vms=5)
        doc = vm_manifest("held", wh_namespace, flavor)
        doc["metadata"]["finalizers"] = [constants.VM_FINALIZER]
        test_cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))
        test_cluster.kubectl("delete", "vm", "held", "-n", wh_namespace, "--wait=false")
        wait_for(
            "the deletion to be marked",
            lambda: test_cluster.get("vm", "held", "-n", wh_namespace)["metadata"].get(
                "deletionTimestamp"
            ),
        )
        assert _used(test_cluster, wh_namespace).vms == 1, "the domain is not gone yet"
        test_cluster.kubectl(
            "patch",
            "vm",
            "held",
            "-n",
            wh_namespace,
            "--type=json",
            "-p",
            '[{"op":"remove","path":"/metadata/finalizers/0"}]',
        )
        wait_for("the release", lambda: _used(test_cluster, wh_namespace).vms == 0)
        wait_for(
            "the VM to be gone",
            lambda: (
                test_cluster.kubectl(
                    "get", "vm", "held", "-n", wh_namespace, check=False
                ).returncode
                != 0
            ),
        )

    def test_two_releasers_of_one_vm_release_it_once(
        self, test_cluster: LocalCluster, wh_namespace: str, flavor: str
    ) -> None:
        """As the operator would call it from a kopf deletion handler: its own finalizer is
        still on the VM, so it names it (and the domain-cleanup finalizer the webhook gave a VM
        that was never bound, which the operator takes off in the same pass)."""
        kopf = "kopf.zalando.org/KopfFinalizerMarker"
        _set_quota(test_cluster, wh_namespace, vms=5)
        for name in ("keep", "gone"):
            doc = vm_manifest(name, wh_namespace, flavor)
            doc["metadata"]["finalizers"] = [kopf]
            test_cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))
        test_cluster.kubectl("delete", "vm", "gone", "-n", wh_namespace, "--wait=false")
        raw = wait_for(
            "the deletion to be marked",
            lambda: (
                (v := test_cluster.get("vm", "gone", "-n", wh_namespace))["metadata"].get(
                    "deletionTimestamp"
                )
                and v
            ),
        )
        vm = VirtualMachine.parse(raw)

        async def release() -> list[ledger.ReleaseOutcome]:
            session = aio.Session(client.api_client(str(test_cluster.kubeconfig)))
            ignore = [kopf, constants.VM_FINALIZER]
            try:
                waiting = await ledger.release_charge(session, vm)
                both = await asyncio.gather(
                    ledger.release_charge(session, vm, ignore_finalizers=ignore),
                    ledger.release_charge(session, vm, ignore_finalizers=ignore),
                )
            finally:
                await session.close()
            return [waiting, *both]

        waiting, *both = asyncio.run(release())
        assert waiting == ledger.ReleaseOutcome.WAITING
        assert sorted(both) == [ledger.ReleaseOutcome.NOT_OURS, ledger.ReleaseOutcome.RELEASED]
        assert _used(test_cluster, wh_namespace).vms == 1
        left = test_cluster.get("vm", "gone", "-n", wh_namespace)["metadata"]
        assert left["finalizers"] == [kopf, constants.VM_FINALIZER]
        assert constants.ANNOTATION_QUOTA_CHARGED not in left.get("annotations", {})
        for name in ("keep", "gone"):  # let the namespace go
            test_cluster.kubectl(
                "patch", "vm", name, "-n", wh_namespace, "--type=merge",
                "-p", '{"metadata": {"finalizers": null}}',
            )  # fmt: skip


def _race(tc: LocalCluster, ns: str, flavor: str, attempts: int, room: int) -> None:
    _set_quota(tc, ns, vms=room)
    names = [f"vm-{i:03d}" for i in range(attempts)]
    replies = create_vms(tc, ns, names, flavor)
    admitted = [r for r in replies if r.status == 201]
    denied = [r for r in replies if r.status != 201]
    assert len(admitted) == room
    assert all(r.status == 403 for r in denied), {r.status for r in denied}
    assert all(f"vms: requested 1, used {room}, limited to {room}" in r.message for r in denied)
    assert len(_vms(tc, ns)) == room
    assert _used(tc, ns) == _recounted(tc, ns)


@pytest.mark.parametrize("run", range(3))
def test_100_concurrent_creates_with_room_for_10_admit_exactly_10(
    test_cluster: LocalCluster, wh_namespace: str, flavor: str, run: int
) -> None:
    _race(test_cluster, wh_namespace, flavor, attempts=100, room=10)


def test_two_ledgers_racing_on_one_quota_never_over_admit(
    test_cluster: LocalCluster, wh_namespace: str, flavor: str
) -> None:
    """Two writers that do not share a lock (as two webhook replicas) meet only at the
    compare-and-swap."""
    _set_quota(test_cluster, wh_namespace, vms=10)
    one = arithmetic.charge_for(flavor, arithmetic.resources_of(_flavors(test_cluster)[flavor]))

    async def run() -> list[ledger.ChargeResult]:
        # Two writers, each with its own connections and lock, as two webhook replicas. Their
        # first charges are made to meet, whatever the machine's load: the first writer
        # reads only after the other has read, and the other writes only after it has written.
        kube_read, fast_wrote = asyncio.Event(), asyncio.Event()

        class Fast(store.ApiStore):
            async def quotas(self, namespace: str) -> list[dict[str, Any]]:
                await asyncio.wait_for(kube_read.wait(), 30)
                return await super().quotas(namespace)

            async def write_status(self, body: dict[str, Any]) -> dict[str, Any]:
                out = await super().write_status(body)
                fast_wrote.set()
                return out

        class Kube(store.ApiStore):
            async def quotas(self, namespace: str) -> list[dict[str, Any]]:
                out = await super().quotas(namespace)
                kube_read.set()
                return out

            async def write_status(self, body: dict[str, Any]) -> dict[str, Any]:
                await asyncio.wait_for(fast_wrote.wait(), 30)
                return await super().write_status(body)

        fast = Fast(aio.Session(client.api_client(str(test_cluster.kubeconfig))))
        kube = Kube(aio.Session(client.api_client(str(test_cluster.kubeconfig))))
        ledgers = [ledger.QuotaLedger(fast), ledger.QuotaLedger(kube)]
        try:
            return list(
                await asyncio.gather(*(ledgers[i % 2].charge(wh_namespace, one) for i in range(30)))
            )
        finally:
            await fast.session.close()
            await kube.session.close()

    results = asyncio.run(run())
    assert sum(r.admitted for r in results) == 10
    assert sum(r.conflicts for r in results) > 0, "the two writers did meet at the CAS"
    assert _used(test_cluster, wh_namespace).vms == 10


@pytest.mark.parametrize("size", [0, 8], ids=["exact", "reserving"])
def test_a_quota_write_whose_reply_was_lost_is_counted_once(
    test_cluster: LocalCluster, wh_namespace: str, flavor: str, fault_proxy: Proxy, size: int
) -> None:
    """The first charge's status PUT lands and its connection is reset: the client retries,
    the retry is answered 409, and the ledger must find its own write there (by its seq), not
    decide and charge the batch again."""
    _set_quota(test_cluster, wh_namespace, vms=100)
    one = arithmetic.charge_for(flavor, arithmetic.resources_of(_flavors(test_cluster)[flavor]))
    namespaces = frozenset({wh_namespace})
    fault_proxy.rules(
        Rule(Fault.DROP_REPLY, verbs=UPDATE, resources=QUOTA_STATUS, namespaces=namespaces, times=1)
    )
    session = aio.Session(client.api_client(str(fault_proxy.kubeconfig("webhook"))))

    async def run() -> list[ledger.ChargeResult]:
        book = ledger.QuotaLedger(store.ApiStore(session), reservation=size)
        try:
            first = await book.charge(wh_namespace, one)
            rest = [await book.charge(wh_namespace, one) for _ in range(4)]
            await book.give_back()
            return [first, *rest]
        finally:
            await session.close()

    results = asyncio.run(run())
    assert fault_proxy.plan.fired(0) == 1, "the reply to the first quota write was dropped"
    assert all(r.admitted for r in results)
    assert _used(test_cluster, wh_namespace).vms == 5


def _storm(
    tc: LocalCluster, ns: str, flavor: str, count: int, out: list[Any], done: threading.Event
) -> None:
    """Create `count` VMs in waves of 5 while the test restarts the webhook."""
    try:
        for wave in range(0, count, 5):
            out.extend(create_vms(tc, ns, [f"s-{i:03d}" for i in range(wave, wave + 5)], flavor))
    finally:
        done.set()


def _restart_during_storm(
    tc: LocalCluster, webhook: Webhook, ns: str, flavor: str, sig: signal.Signals
) -> tuple[list[Any], str]:
    """60 creates in waves of 5, the webhook stopped with `sig` and started again once 10 have
    been answered; the replies, and the webhook's metrics just before the stop."""
    replies: list[Any] = []
    done = threading.Event()
    storm = threading.Thread(target=_storm, args=(tc, ns, flavor, 60, replies, done))
    storm.start()
    try:
        wait_for("some creates to be admitted", lambda: len(replies) >= 10)
        metrics = webhook.metrics()
        webhook.stop(sig)
        webhook.start(webhook.limits)
    finally:
        storm.join(120)
    assert done.is_set()
    return replies, metrics


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["graceful", "killed"])
def test_a_webhook_restarted_mid_run_loses_no_accounting(
    test_cluster: LocalCluster,
    webhook: Webhook,
    wh_namespace: str,
    flavor: str,
    sig: signal.Signals,
) -> None:
    room = 30
    _set_quota(test_cluster, wh_namespace, vms=room)
    replies, _ = _restart_during_storm(test_cluster, webhook, wh_namespace, flavor, sig)
    during = [r for r in replies if r.status not in (201, 403)]
    assert during or sig == signal.SIGTERM, "some creates met the webhook down and failed closed"
    vms = _vms(test_cluster, wh_namespace)
    assert len(vms) <= room, "never over-admitted"
    used = _used(test_cluster, wh_namespace)
    if sig == signal.SIGTERM:
        # A graceful stop finishes the reviews in flight: every charge belongs to a VM.
        assert used == _recounted(test_cluster, wh_namespace)
    else:
        # A killed webhook may have charged a VM whose create then failed: usage can only be
        # too high, and the operator's recount heals it.
        assert used.vms is not None and used.vms >= len(vms)
        # Recounted as the operator would once the last charge has settled (before that, a
        # recount lowers nothing: the charged VM may not be stored yet).
        session = aio.Session(client.api_client(str(test_cluster.kubeconfig)))
        settled = time.time() + arithmetic.CHARGE_SETTLE_SECONDS + 1
        book = ledger.QuotaLedger(store.ApiStore(session), clock=lambda: settled)
        recounted = asyncio.run(ledger.recount_namespace(session, wh_namespace, book))
        assert (
            recounted == _used(test_cluster, wh_namespace) == _recounted(test_cluster, wh_namespace)
        )
    assert webhook.healthy()


def _held(tc: LocalCluster, ns: str) -> QuotaAmounts:
    status = tc.get("vmquota", "limits", "-n", ns).get("status", {})
    used = arithmetic.normalized(QuotaAmounts.model_validate(status.get("used", {})))
    return reservations.held(used, reservations.parse(status))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["graceful", "killed"])
def test_a_webhook_admitting_from_reservations_keeps_the_count_across_a_restart(
    test_cluster: LocalCluster,
    webhook: Webhook,
    wh_namespace: str,
    flavor: str,
    sig: signal.Signals,
) -> None:
    """`--quota-reservation`: creates admitted from memory, written into `used` a moment
    later. The limit holds throughout, and what a killed process admitted and never wrote
    stays held by its reservation until a recount after it settled counts it."""
    room, shipped = 30, list(webhook.limits)
    _set_quota(test_cluster, wh_namespace, vms=room)
    webhook.stop()
    webhook.start([*shipped, "--quota-reservation=8"])
    try:
        _, metrics = _restart_during_storm(test_cluster, webhook, wh_namespace, flavor, sig)
        from_memory = [
            float(line.split()[-1])
            for line in metrics.splitlines()
            if line.startswith("kubenova_webhook_quota_reserved_charges_total ")
        ]
        assert from_memory and from_memory[0] > 0, "some were admitted from a reservation"
        vms = _vms(test_cluster, wh_namespace)
        assert 0 < len(vms) <= room, "never over-admitted"
        assert (_held(test_cluster, wh_namespace).vms or 0) >= len(vms), "nothing unheld"
        if sig == signal.SIGTERM:
            # Given back at the stop and written within the commit interval after.
            wait_for(
                "used to catch up with what was admitted",
                lambda: _used(test_cluster, wh_namespace) == _recounted(test_cluster, wh_namespace),
            )
        # The operator's recount, twice: it drops a reservation it has seen unchanged for
        # SETTLE_SECONDS (its own clock, here moved on), the killed process's among them. Its
        # wall clock is past the last charge's settle window too: a killed process may have
        # charged a create that then failed (usage too high, which that recount heals).
        webhook.stop()  # the restarted process gives its reservation back
        session = aio.Session(client.api_client(str(test_cluster.kubeconfig)))
        ticks = [time.monotonic()]
        settled = time.time() + arithmetic.CHARGE_SETTLE_SECONDS + 1
        book = ledger.QuotaLedger(
            store.ApiStore(session), clock=lambda: settled, monotonic=lambda: ticks[0]
        )
        asyncio.run(ledger.recount_namespace(session, wh_namespace, book))
        ticks[0] += reservations.SETTLE_SECONDS + 1
        recounted = asyncio.run(ledger.recount_namespace(session, wh_namespace, book))
        status = test_cluster.get("vmquota", "limits", "-n", wh_namespace)["status"]
        assert not status.get("reservations")
        assert (
            recounted == _recounted(test_cluster, wh_namespace) == _used(test_cluster, wh_namespace)
        )
    finally:
        webhook.stop()
        webhook.start(shipped)
    assert webhook.healthy()
