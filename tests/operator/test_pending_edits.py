"""Edits to a Pending VM reach the scheduler at once, without an operator restart: the queue
holds the request built from the VM as it is now. Real control plane and operator; the test
plays the agent's part (a Host and its heartbeat Lease)."""

from __future__ import annotations

import pytest

from tests.fixtures.cluster import wait_for
from tests.fixtures.operator import GROUP, VERSION, Cluster, Operators

pytestmark = [pytest.mark.apiserver, pytest.mark.e2e]
MERGE = "application/merge-patch+json"


def test_a_fixed_node_selector_on_a_pending_vm_gets_it_placed(
    kn: Cluster, operators: Operators, namespace: str
) -> None:
    host = f"{namespace}-h"
    kn.host(host, labels={"zone": "a"})
    flavor = kn.flavor(f"{namespace}-f")
    pool = kn.pool(f"{namespace}-p")
    operators.start("op-1")
    kn.vm("web-1", flavor, pool, placement={"nodeSelector": {"zone": "b"}})
    reason = wait_for(
        "web-1 explained as unschedulable",
        lambda: kn.get_vm("web-1").get("status", {}).get("reason"),
    )
    assert "node selector" in reason or "label" in reason, reason
    kn.custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, "virtualmachines", "web-1",
        {"spec": {"placement": {"nodeSelector": {"zone": "a"}}}}, _content_type=MERGE,
    )  # fmt: skip
    # Within the first back-off, far inside the 5-minute retry of parked VMs.
    bound = wait_for(
        "web-1 bound after the edit",
        lambda: kn.get_vm("web-1").get("status", {}).get("host"),
        timeout=20,
    )
    assert bound == host
