"""The operator's side of quota: it recounts usage to heal drift, and releases the charge of a
deleted VM exactly once even while the webhook's release loop does the same."""

from __future__ import annotations

import uuid

import pytest
import yaml

from kubenova.quota import arithmetic
from tests.fixtures.cluster import LocalCluster, wait_for
from tests.fixtures.operator import Operators
from tests.fixtures.webhook import Webhook, create_vms

pytestmark = [pytest.mark.apiserver, pytest.mark.e2e]


def _used_vms(tc: LocalCluster, ns: str) -> int | None:
    used: int | None = (
        tc.get("vmquota", "limits", "-n", ns).get("status", {}).get("used", {}).get("vms")
    )
    return used


def test_the_operator_recounts_drifted_usage_and_releases_once(
    test_cluster: LocalCluster, webhook: Webhook, wh_namespace: str, operators: Operators
) -> None:
    tc, ns = test_cluster, wh_namespace
    flavor = f"q-{uuid.uuid4().hex[:8]}"
    docs = [
        {"apiVersion": "kubenova.io/v1alpha1", "kind": "Flavor", "metadata": {"name": flavor},
         "spec": {"vcpus": 1, "memory": "1Gi", "disk": "10Gi"}},
        {"apiVersion": "kubenova.io/v1alpha1", "kind": "VMQuota",
         "metadata": {"name": "limits", "namespace": ns}, "spec": {"hard": {"vms": 10}}},
    ]  # fmt: skip
    tc.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
    replies = create_vms(tc, ns, ["a", "b", "c"], flavor)
    assert [r.status for r in replies] == [201, 201, 201], [r.message for r in replies]
    assert wait_for("usage 3", lambda: _used_vms(tc, ns) == 3)

    # Drift: someone (a crash between admission and a failed create, say) left usage wrong.
    tc.kubectl("patch", "vmquota", "limits", "-n", ns, "--subresource=status", "--type=merge",
               "-p", '{"status":{"used":{"vms":7}}}')  # fmt: skip
    assert _used_vms(tc, ns) == 7
    operators.start("op-1", "--quota-recount-period", "1")
    # A recount lowers nothing within the settle time of the last charge (the creates above).
    heal = arithmetic.CHARGE_SETTLE_SECONDS + 30
    assert wait_for("the operator to heal usage", lambda: _used_vms(tc, ns) == 3, timeout=heal)

    # Two releasers (the operator and the webhook's loop) free a deleted, never-bound VM once.
    tc.kubectl("delete", "vm", "a", "-n", ns, "--timeout=60s")
    assert wait_for("usage 2", lambda: _used_vms(tc, ns) == 2)
    usage_after = [_used_vms(tc, ns) for _ in range(5)]
    assert usage_after == [2] * 5, usage_after
