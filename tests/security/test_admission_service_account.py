"""The webhooks log in as their ServiceAccount, as they do in a cluster: with a token from the
TokenRequest API and only the chart's RBAC for the webhooks, a VM create is admitted and
charged. (They read the token under a key the kubernetes client never uses, so every quota
lookup went out as system:anonymous and every create with a quota was denied; the tests passed
because they logged in with the admin's client certificate.)"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.fixtures.cluster import LocalCluster, wait_for
from tests.fixtures.identities import (
    Policies,
    chart_policies,
    policy_helm,
    service_account_token,
    token_kubeconfig,
)
from tests.fixtures.webhook import (
    Webhook,
    apply,
    delete_unbound_vm,
    flavor_doc,
    own_webhook,
    quota_doc,
    quota_used,
    vm_manifest,
)

__all__ = ["chart_policies", "policy_helm"]  # fixtures used by name

pytestmark = pytest.mark.apiserver

SA_LABEL = "kubenova.io/webhook-sa-test"


@pytest.fixture
def sa_webhook(
    test_cluster: LocalCluster, chart_policies: Policies, tmp_path: Path
) -> Iterator[tuple[Webhook, str]]:
    """The webhooks as the chart's ServiceAccount, for a namespace only they apply to."""
    token = service_account_token(
        test_cluster, chart_policies.namespace, chart_policies.account("webhooks"), None
    )
    kubeconfig = token_kubeconfig(test_cluster, token, tmp_path / "sa.kubeconfig")
    with own_webhook(
        test_cluster,
        tmp_path / "sa",
        kubeconfig=kubeconfig,
        name="kubenova-sa",
        label=SA_LABEL,
        prefix="sa",
    ) as sa:
        yield sa


def test_a_create_is_admitted_and_charged_through_the_service_account(
    test_cluster: LocalCluster, sa_webhook: tuple[Webhook, str], chart_policies: Policies
) -> None:
    wh, ns = sa_webhook
    flavor = f"sa-{uuid.uuid4().hex[:8]}"
    apply(test_cluster, flavor_doc(flavor), quota_doc(ns, vms=2, vcpus=4))
    vm = vm_manifest("first", ns, flavor)
    proc = test_cluster.kubectl("create", "-f", "-", input=yaml.safe_dump(vm), check=False)
    assert proc.returncode == 0, proc.stderr
    used = quota_used(test_cluster, ns)
    assert (used["vms"], used["vcpus"]) == (1, 2), used

    # The release loop, as the same ServiceAccount, gives the charge back on delete.
    delete_unbound_vm(test_cluster, ns, "first")
    wait_for("the VM to be gone", lambda: not test_cluster.get("vm", "-n", ns)["items"], 60)
    assert quota_used(test_cluster, ns)["vms"] == 0
    assert "system:anonymous" not in wh.server.log.read_text()
    test_cluster.kubectl("delete", "flavor", flavor, "--wait=false", check=False)
