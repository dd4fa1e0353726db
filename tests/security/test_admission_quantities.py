"""Quantities a tenant writes cost bounded time: the CRD schema refuses long exponents and
long texts before any webhook runs (what took ~30 s of CPU on the webhook's single event loop,
or raised decimal.InvalidOperation as a 500), the parser refuses values beyond any real size
at once, and a review carrying such a quantity is answered at once, charging nothing."""

from __future__ import annotations

import json
import time

import pytest
import yaml

from kubenova.api.quantity import Quantity, QuantityError
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
from tests.security.test_admission_charge import as_mutated

pytestmark = pytest.mark.apiserver

HUGE = ["1e999999", "1e9999999999", "1" * 100, "9Ei"]


flavor = module_flavor("qty")


@pytest.mark.unit
@pytest.mark.parametrize("text", HUGE)
def test_the_parser_refuses_huge_quantities_at_once(text: str) -> None:
    started = time.perf_counter()
    with pytest.raises(QuantityError, match="quantity"):
        Quantity(text)
    # Computing such a number takes minutes or all memory; a refusal, microseconds. The bound
    # tells them apart with room for a loaded CI machine, where 50 ms is a few lost time slices.
    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize("text", ["1e999999", "1e9999999999", "1" * 100])
def test_the_schema_refuses_a_huge_quantity_in_a_vm(
    test_cluster: LocalCluster, wh_namespace: str, flavor: str, text: str
) -> None:
    apply(test_cluster, quota_doc(wh_namespace, vms=5))
    vm = vm_manifest("huge", wh_namespace, flavor)
    vm["spec"]["resources"] = {"vcpus": 1, "memory": text, "disk": "1Gi"}
    started = time.monotonic()
    proc = test_cluster.kubectl("create", "-f", "-", input=yaml.safe_dump(vm), check=False)
    assert time.monotonic() - started < 10
    assert proc.returncode != 0
    assert "spec.resources.memory" in proc.stderr, proc.stderr
    assert "webhook failed" not in proc.stderr, proc.stderr
    assert not test_cluster.get("vm", "-n", wh_namespace)["items"]
    assert quota_used(test_cluster, wh_namespace).get("vms", 0) == 0


def test_a_review_carrying_a_huge_quantity_is_answered_at_once(
    test_cluster: LocalCluster, webhook: Webhook, wh_namespace: str, flavor: str
) -> None:
    apply(test_cluster, quota_doc(wh_namespace, vms=5, memory="10Gi"))
    charge = {"flavors": {flavor: 1}, "gpus": 0, "memory": "1e999999", "vcpus": 2, "vms": 1}
    vm = as_mutated(vm_manifest("slow", wh_namespace, flavor), flavor, charge)
    started = time.monotonic()
    reply = webhook.post("/validate", review("CREATE", vm), client=webhook.api_server_client)
    elapsed = time.monotonic() - started
    assert elapsed < 5, f"{elapsed:.1f} s"
    answer = reply.body["response"]
    assert answer["allowed"] is False, answer
    assert "quota-charged" in answer["status"]["message"], answer
    assert quota_used(test_cluster, wh_namespace) == {}, "never charged"
    assert json.loads(vm["metadata"]["annotations"]["kubenova.io/quota-charged"])
