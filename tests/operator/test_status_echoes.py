"""The operator's own status writes, seen again through its watches, wake no parked VM: a
status-only event of a pool or a host changes nothing a VM waits for, so the queue does not
poll. Real control plane and operator; the test plays the agent's part."""

from __future__ import annotations

import urllib.request
from typing import Any

import pytest

from tests.fixtures.cluster import wait_for
from tests.fixtures.operator import GROUP, VERSION, Cluster, OperatorProcess, Operators

pytestmark = [pytest.mark.apiserver, pytest.mark.e2e]
MERGE = "application/merge-patch+json"
PARKED = 20


def _decisions(op: OperatorProcess) -> float:
    """How many scheduling decisions the operator has made (one per attempt to place a VM)."""
    url = f"http://127.0.0.1:{op.metrics_port}/metrics"
    try:
        text = urllib.request.urlopen(url, timeout=5).read().decode()
    except OSError:
        return -1.0  # not serving yet
    for line in text.splitlines():
        if line.startswith("kubenova_scheduling_decision_seconds_count"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


class Steady:
    """True once two readings in a row agree: the queue has settled."""

    def __init__(self, op: OperatorProcess) -> None:
        self.op, self.last = op, -1.0

    def __call__(self) -> float | None:
        now = _decisions(self.op)
        steady = now == self.last and now >= PARKED
        self.last = now
        return now if steady else None


def test_status_only_pool_events_wake_no_parked_vm(
    kn: Cluster, operators: Operators, namespace: str
) -> None:
    kn.host(f"{namespace}-h", cpus=8, memory="8Gi")
    too_big = kn.flavor(f"{namespace}-big", memory="16Gi")
    pool = kn.pool(f"{namespace}-p")
    op = operators.start("op-1")
    for i in range(PARKED):
        kn.vm(f"vm-{i}", too_big, pool)
    before = wait_for("every VM tried and parked", Steady(op), timeout=60, interval=2.0)

    def hosts_reported() -> Any:
        return kn.get_cluster("resourcepools", pool).get("status", {}).get("hosts") == 1

    for _ in range(3):
        # A status-only change, as the operator's own pool writes are: it puts it right again,
        # which proves it saw the event.
        kn.custom.patch_cluster_custom_object_status(
            GROUP, VERSION, "resourcepools", pool, {"status": {"hosts": 99}}, _content_type=MERGE
        )
        wait_for("the operator to correct the pool's status", hosts_reported)
    after = _decisions(op)
    assert after == before, f"{after - before:.0f} retries of parked VMs after status echoes"
