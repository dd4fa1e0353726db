"""The real operator with only its chart ServiceAccount's token (as its pod gets it), under the
chart's RBAC and admission policies: it leads, heals drifted quota usage and releases a deleted
VM's charge. Tests elsewhere run it with the admin's certificate, which hid that its role could
not read VMQuotas at all (issue 17: look for what only works with the admin's certificate)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import yaml

from kubenova.quota import arithmetic
from tests.fixtures.cluster import LocalCluster, wait_for
from tests.fixtures.identities import (
    Policies,
    chart_policies,
    policy_helm,
    service_account_token,
    token_kubeconfig,
)
from tests.fixtures.operator import Operators
from tests.fixtures.webhook import Webhook, create_vms

__all__ = ["chart_policies", "policy_helm"]  # fixtures used by name

pytestmark = [pytest.mark.apiserver, pytest.mark.e2e]


def _used_vms(tc: LocalCluster, ns: str) -> int | None:
    status = tc.get("vmquota", "limits", "-n", ns).get("status", {})
    used: int | None = status.get("used", {}).get("vms")
    return used


def test_the_operator_heals_and_releases_quota_with_its_own_service_account(
    test_cluster: LocalCluster,
    chart_policies: Policies,
    webhook: Webhook,
    wh_namespace: str,
    tmp_path: Path,
) -> None:
    tc, p, ns = test_cluster, chart_policies, wh_namespace
    token = service_account_token(tc, p.namespace, p.account("operator"), None)
    kubeconfig = token_kubeconfig(tc, token, tmp_path / "operator.kubeconfig")
    flavor = f"q-{uuid.uuid4().hex[:8]}"
    docs = [
        {"apiVersion": "kubenova.io/v1alpha1", "kind": "Flavor", "metadata": {"name": flavor},
         "spec": {"vcpus": 1, "memory": "1Gi", "disk": "10Gi"}},
        {"apiVersion": "kubenova.io/v1alpha1", "kind": "VMQuota",
         "metadata": {"name": "limits", "namespace": ns}, "spec": {"hard": {"vms": 10}}},
    ]  # fmt: skip
    tc.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
    replies = create_vms(tc, ns, ["a", "b"], flavor)
    assert [r.status for r in replies] == [201, 201], [r.message for r in replies]
    wait_for("usage 2", lambda: _used_vms(tc, ns) == 2)

    # Drift only a recount heals; the operator's Lease lives in the release's namespace.
    tc.kubectl("patch", "vmquota", "limits", "-n", ns, "--subresource=status", "--type=merge",
               "-p", '{"status":{"used":{"vms":6}}}')  # fmt: skip
    operators = Operators(tc, p.namespace, tmp_path)
    try:
        op = operators.start("op-sa", "--quota-recount-period", "1", kubeconfig=kubeconfig)
        wait_for("the operator to lead", lambda: "became leader" in op.log_text(), timeout=60)
        # A recount lowers nothing within the settle time of the creates' charges.
        heal = arithmetic.CHARGE_SETTLE_SECONDS + 60
        wait_for("the operator to heal usage to 2", lambda: _used_vms(tc, ns) == 2, timeout=heal)
        tc.kubectl("delete", "vm", "a", "-n", ns, "--timeout=60s")
        wait_for("usage 1 after the delete", lambda: _used_vms(tc, ns) == 1)
        assert op.alive()
        # Events about other tests' VMs in namespaces being deleted are refused (403) by the
        # API server whoever posts them; the chart's RBAC test checks the operator may post.
        refused = [
            line
            for line in op.log_text().splitlines()
            if "orbidden" in line and "could not post event" not in line
        ]
        assert refused == [], refused[-5:]
    finally:
        operators.stop_all()
