"""Deleting a ResourcePool gives the room its reservation slots held back to its hosts. Real
control plane and operator; the test plays the agent's part (a Host and its Lease)."""

from __future__ import annotations

import pytest

from tests.fixtures.cluster import wait_for
from tests.fixtures.operator import GROUP, VERSION, Cluster, Operators

pytestmark = [pytest.mark.apiserver, pytest.mark.e2e]


def test_deleting_a_pool_frees_the_room_its_reservations_held(
    kn: Cluster, operators: Operators, namespace: str
) -> None:
    host = f"{namespace}-h"
    kn.host(host, cpus=8, memory="16Gi")
    small = kn.flavor(f"{namespace}-small", memory="4Gi")
    whole = kn.flavor(f"{namespace}-whole", memory="16Gi")
    reserving = kn.pool(f"{namespace}-r", reservations=[{"flavor": small, "count": 3}])
    other = kn.pool(f"{namespace}-o")
    operators.start("op-1")
    held = wait_for(
        "the reservations held (12 GiB)",
        lambda: (
            kn.get_cluster("resourcepools", reserving)
            .get("status", {})
            .get("reserved", {})
            .get("memory")
            == "12Gi"
        ),
    )
    assert held
    kn.custom.delete_cluster_custom_object(GROUP, VERSION, "resourcepools", reserving)
    kn.vm("whole", whole, other)
    bound = wait_for(
        "a VM the size of the whole host bound once the pool is gone",
        lambda: kn.get_vm("whole").get("status", {}).get("host"),
        timeout=30,
    )
    assert bound == host
