"""A denial tells the requester about its own quota only: the API server's denial names the
namespace's own VMQuota, and a review that puts an object of one namespace in a request of
another (something only a forged review does) is refused as malformed, without another
namespace's usage in the answer and without charging either."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import yaml

from tests.fixtures.cluster import LocalCluster
from tests.fixtures.webhook import (
    Webhook,
    apply,
    labelled_namespace,
    module_flavor,
    quota_doc,
    quota_used,
    review,
    vm_manifest,
)
from tests.security.test_admission_charge import as_mutated

pytestmark = pytest.mark.apiserver


flavor = module_flavor("deny")


@pytest.fixture
def victim(test_cluster: LocalCluster, webhook: Webhook, flavor: str) -> Iterator[str]:
    """Another tenant's namespace, with 3 VMs charged against a quota of 3."""
    name = labelled_namespace(test_cluster, "v")
    apply(test_cluster, quota_doc(name, vms=3))
    for i in range(3):
        vm = vm_manifest(f"secret-project-{i}", name, flavor)
        test_cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(vm))
    yield name
    test_cluster.kubectl("delete", "namespace", name, "--wait=false")


def test_a_denial_names_only_the_requesters_own_quota(
    test_cluster: LocalCluster, webhook: Webhook, wh_namespace: str, victim: str, flavor: str
) -> None:
    apply(test_cluster, quota_doc(wh_namespace, vms=0))
    theirs = quota_used(test_cluster, victim)
    assert theirs["vms"] == 3, theirs

    proc = test_cluster.kubectl(
        "apply", "-f", "-", input=yaml.safe_dump(vm_manifest("one", wh_namespace, flavor)),
        check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    assert f"exceeded VMQuota {wh_namespace}/limits: vms: requested 1, used 0" in proc.stderr
    assert victim not in proc.stderr

    # A review asking about the victim's namespace for an object of the requester's.
    vm = as_mutated(
        vm_manifest("probe", wh_namespace, flavor),
        flavor,
        {"flavors": {flavor: 1}, "gpus": 0, "memory": "1Gi", "vcpus": 2, "vms": 1},
    )
    reply = webhook.post(
        "/validate", review("CREATE", vm, namespace=victim), client=webhook.api_server_client
    )
    assert reply.status == 400, reply
    assert "is not the request's namespace" in reply.message, reply
    assert "used 3" not in reply.message and "limits" not in reply.message, reply

    assert quota_used(test_cluster, victim) == theirs
    assert quota_used(test_cluster, wh_namespace).get("vms", 0) == 0
