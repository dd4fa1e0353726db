"""What a VM costs comes from its flavor, never from the object: a `kubenova.io/quota-charged`
annotation or a `spec.resources` the tenant wrote (negative amounts included) is replaced on
the way in through the API server, and a review whose marks disagree with the flavor -- one
that did not come through the mutating webhook -- is refused and charges nothing."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from kubenova.api import constants
from tests.fixtures.cluster import LocalCluster
from tests.fixtures.webhook import (
    Webhook,
    apply,
    module_flavor,
    quota_doc,
    quota_used,
    review,
    vm_manifest,
)

pytestmark = pytest.mark.apiserver

NEGATIVE = {"flavors": {}, "gpus": 0, "memory": "-100Gi", "vcpus": -100, "vms": 0}
KEY = constants.ANNOTATION_QUOTA_CHARGED


flavor = module_flavor("charge", vcpus=2, memory="1Gi")


def as_mutated(vm: dict[str, Any], flavor: str, charge: dict[str, Any]) -> dict[str, Any]:
    """`vm` as the mutating webhook leaves it, but with `charge` as its recorded charge."""
    vm["spec"]["resources"] = {"vcpus": 2, "memory": "1Gi", "disk": "10Gi"}
    vm["spec"]["runStrategy"] = "Always"
    vm["metadata"]["annotations"] = {KEY: json.dumps(charge, separators=(",", ":"))}
    vm["metadata"]["finalizers"] = [constants.QUOTA_FINALIZER]
    return vm


def test_a_charge_written_by_the_tenant_is_replaced_by_the_flavors(
    test_cluster: LocalCluster, wh_namespace: str, flavor: str
) -> None:
    apply(test_cluster, quota_doc(wh_namespace, vms=5, vcpus=10, memory="10Gi"))
    vm = vm_manifest("cheap", wh_namespace, flavor)
    vm["metadata"]["annotations"] = {KEY: json.dumps(NEGATIVE)}
    vm["spec"]["resources"] = {"vcpus": 1, "memory": "1Mi", "disk": "1Gi"}
    test_cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(vm))

    stored = test_cluster.get("vm", "cheap", "-n", wh_namespace)
    assert json.loads(stored["metadata"]["annotations"][KEY]) == {
        "flavors": {flavor: 1}, "gpus": 0, "memory": "1Gi", "vcpus": 2, "vms": 1
    }  # fmt: skip
    assert stored["spec"]["resources"]["vcpus"] == 2
    used = quota_used(test_cluster, wh_namespace)
    assert (used["vms"], used["vcpus"], used["memory"]) == (1, 2, "1Gi"), used


@pytest.mark.parametrize(
    "charge",
    [
        NEGATIVE,
        {"flavors": {}, "gpus": 0, "memory": "0", "vcpus": 0, "vms": 0},
        {"flavors": {"other": 1}, "gpus": 0, "memory": "1Gi", "vcpus": 2, "vms": 1},
    ],
    ids=["negative", "free", "another-flavor"],
)
def test_a_review_whose_charge_disagrees_with_the_flavor_is_refused(
    test_cluster: LocalCluster,
    webhook: Webhook,
    wh_namespace: str,
    flavor: str,
    charge: dict[str, Any],
) -> None:
    apply(test_cluster, quota_doc(wh_namespace, vms=5, vcpus=10, memory="10Gi"))
    test_cluster.kubectl(
        "apply", "-f", "-", input=yaml.safe_dump(vm_manifest("paid", wh_namespace, flavor))
    )
    before = quota_used(test_cluster, wh_namespace)

    vm = as_mutated(vm_manifest("forged", wh_namespace, flavor), flavor, charge)
    reply = webhook.post("/validate", review("CREATE", vm), client=webhook.api_server_client)

    assert reply.status == 200, reply
    answer = reply.body["response"]
    assert answer["allowed"] is False, answer
    message = answer["status"]["message"]
    assert f"metadata.annotations[{KEY}]: is set by kubenova from flavor {flavor!r}" in message
    assert "remove it and create the VM again" in message
    assert quota_used(test_cluster, wh_namespace) == before, "nothing charged or refunded"


def test_a_review_whose_size_disagrees_with_the_flavor_is_refused(
    test_cluster: LocalCluster, webhook: Webhook, wh_namespace: str, flavor: str
) -> None:
    apply(test_cluster, quota_doc(wh_namespace, vms=5))
    right = {"flavors": {flavor: 1}, "gpus": 0, "memory": "1Gi", "vcpus": 2, "vms": 1}
    vm = as_mutated(vm_manifest("big", wh_namespace, flavor), flavor, right)
    vm["spec"]["resources"]["vcpus"] = 64
    reply = webhook.post("/validate", review("CREATE", vm), client=webhook.api_server_client)
    answer = reply.body["response"]
    assert answer["allowed"] is False, answer
    assert "spec.resources: is copied from flavor" in answer["status"]["message"]
    assert quota_used(test_cluster, wh_namespace) == {}, "never written"


def test_a_review_without_the_charge_is_refused_not_admitted_free(
    test_cluster: LocalCluster, webhook: Webhook, wh_namespace: str, flavor: str
) -> None:
    """What the webhook did when the mutating webhook had not marked the VM (the flavor
    appeared in between, or a review skipped it): admit it uncharged."""
    apply(test_cluster, quota_doc(wh_namespace, vms=5))
    vm = as_mutated(vm_manifest("free", wh_namespace, flavor), flavor, {})
    del vm["metadata"]["annotations"][KEY]
    reply = webhook.post("/validate", review("CREATE", vm), client=webhook.api_server_client)
    answer = reply.body["response"]
    assert answer["allowed"] is False, answer
    assert f"metadata.annotations[{KEY}]: is missing" in answer["status"]["message"]
    assert quota_used(test_cluster, wh_namespace) == {}, "never written"
