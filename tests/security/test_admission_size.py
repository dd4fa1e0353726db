"""Size never blocks a VM: the request limit of the webhook fits an UPDATE of the largest VM
the schema allows (computed from it), metadata beyond kubenova's budget is refused with a
clear message at create, and a VM is deleted -- its finalizer taken off, its quota released --
even while the webhook is down (failurePolicy Fail applies to writes, never to deletes)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubenova.api import constants
from kubenova.api.vm import VirtualMachine
from kubenova.webhooks import server, sizes
from tests.fixtures.cluster import LocalCluster, wait_for
from tests.fixtures.webhook import (
    Webhook,
    apply,
    delete_unbound_vm,
    module_flavor,
    own_webhook,
    quota_doc,
    quota_used,
    vm_manifest,
)

pytestmark = pytest.mark.apiserver


flavor = module_flavor("size")


def big_vm(name: str, namespace: str, flavor: str) -> dict[str, Any]:
    """A VM near what the schema allows where it costs most on the wire: characters the API
    server writes as six-byte escapes, in cloud-init data and in annotations."""
    vm = vm_manifest(name, namespace, flavor)
    vm["spec"]["cloudInit"] = {"userData": "<" * 32768, "networkData": "&" * 8192}
    vm["metadata"]["annotations"] = {"example.com/notes": "<" * 60_000}
    return vm


def test_the_request_limit_fits_an_update_of_the_largest_vm() -> None:
    largest = sizes.largest_object(VirtualMachine)
    assert 2 * largest <= server.MAX_REVIEW_BYTES
    # The API server refuses requests above 3 MiB: nothing larger can ever be sent.
    assert server.MAX_REVIEW_BYTES <= 3 * 1024 * 1024


def test_a_large_vm_is_created_updated_and_deleted(
    test_cluster: LocalCluster, wh_namespace: str, flavor: str
) -> None:
    apply(test_cluster, quota_doc(wh_namespace, vms=5))
    vm = big_vm("big", wh_namespace, flavor)
    assert sizes.wire_size(vm) > 512 * 1024, "an update's review is over the old 1 MiB limit"
    test_cluster.kubectl("create", "-f", "-", input=yaml.safe_dump(vm))
    assert quota_used(test_cluster, wh_namespace)["vms"] == 1

    proc = test_cluster.kubectl(
        "label", "vm", "big", "-n", wh_namespace, "tier=web", check=False
    )  # an update: the review carries the old and the new object
    assert proc.returncode == 0, proc.stderr
    proc = test_cluster.kubectl(
        "patch", "vm", "big", "-n", wh_namespace, "--type=merge",
        "-p", '{"spec": {"runStrategy": "Halted"}}', check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr

    delete_unbound_vm(test_cluster, wh_namespace, "big")
    wait_for(
        "the large VM to be gone",
        lambda: not test_cluster.get("vm", "-n", wh_namespace)["items"],
        timeout=60,
    )
    assert quota_used(test_cluster, wh_namespace)["vms"] == 0


def test_metadata_beyond_the_budget_is_refused_with_a_clear_message(
    test_cluster: LocalCluster, wh_namespace: str, flavor: str
) -> None:
    apply(test_cluster, quota_doc(wh_namespace, vms=5))
    vm = vm_manifest("bloated", wh_namespace, flavor)
    vm["metadata"]["annotations"] = {"example.com/notes": "<" * 200_000}
    proc = test_cluster.kubectl("create", "-f", "-", input=yaml.safe_dump(vm), check=False)
    assert proc.returncode != 0
    assert "metadata: is " in proc.stderr and f"admits at most {sizes.METADATA_BUDGET}" in (
        proc.stderr
    ), proc.stderr
    assert "remove labels or annotations" in proc.stderr
    assert not test_cluster.get("vm", "-n", wh_namespace)["items"]
    assert quota_used(test_cluster, wh_namespace).get("vms", 0) == 0


SOLO_LABEL = "kubenova.io/webhook-solo-test"


@pytest.fixture
def solo(test_cluster: LocalCluster, tmp_path: Path) -> Iterator[tuple[Webhook, str]]:
    """A webhook of this test's own (so stopping it stops no other test's), and a namespace
    only it applies to."""
    with own_webhook(
        test_cluster, tmp_path / "solo", name="kubenova-solo", label=SOLO_LABEL, prefix="s"
    ) as solo:
        yield solo


def test_a_vm_is_deleted_while_the_webhook_is_down(
    test_cluster: LocalCluster, solo: tuple[Webhook, str], flavor: str
) -> None:
    wh, ns = solo
    apply(test_cluster, quota_doc(ns, vms=5))
    test_cluster.kubectl("create", "-f", "-", input=yaml.safe_dump(vm_manifest("a", ns, flavor)))
    stored = test_cluster.get("vm", "a", "-n", ns)
    assert constants.QUOTA_FINALIZER in stored["metadata"]["finalizers"]
    assert quota_used(test_cluster, ns)["vms"] == 1

    wh.stop()
    # Writes fail closed while it is down...
    proc = test_cluster.kubectl(
        "create", "-f", "-", input=yaml.safe_dump(vm_manifest("b", ns, flavor)), check=False
    )
    assert proc.returncode != 0 and "failed calling webhook" in proc.stderr, proc.stderr
    # ...but a delete completes: the release loop takes the finalizer off without it.
    delete_unbound_vm(test_cluster, ns, "a")
    wait_for(
        "the VM to be gone with the webhook down",
        lambda: not test_cluster.get("vm", "-n", ns)["items"],
        timeout=60,
    )
    assert quota_used(test_cluster, ns)["vms"] == 0
