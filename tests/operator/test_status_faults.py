"""The status pass's writes of Hosts and ResourcePools when the API server fails them: every
try of one answered 503 (the client gives up and the pass stops there), then one that lands
with its reply lost. The operator runs against the real API server through the fault proxy."""

from __future__ import annotations

from typing import Any

import pytest

from kubenova.dev.faults import Fault, Rule
from tests.fixtures.cluster import wait_for
from tests.fixtures.faultproxy import Proxy
from tests.fixtures.operator import Cluster, Operators

pytestmark = [pytest.mark.apiserver, pytest.mark.e2e, pytest.mark.slow]

PATCH = frozenset({"patch"})
TRIES = 6
"""Attempts the client makes of a write answered 5xx (`client.retrying`) before it raises."""


def failing_then_lost(resource: str, name: str) -> tuple[Rule, Rule]:
    resources, names = frozenset({resource}), frozenset({name})
    return (
        Rule(Fault.UNAVAILABLE, verbs=PATCH, resources=resources, names=names, times=TRIES),
        Rule(Fault.DROP_REPLY, verbs=PATCH, resources=resources, names=names, times=1),
    )


def said(kn: Cluster, host: str, reason: str) -> int:
    """How many times `reason` was said about `host`."""
    return sum(e.count or 1 for e in kn.host_events(host) if e.reason == reason)


def test_host_and_pool_status_writes_that_fail_or_lose_their_reply_still_converge(
    kn: Cluster, operators: Operators, namespace: str, fault_proxy: Proxy
) -> None:
    ns = namespace
    host = f"{ns}-h1"
    flavor = kn.flavor(f"{ns}-f", vcpus=2, memory="4Gi")
    pool = kn.pool(f"{ns}-pool")
    # The Host's first phase (Ready) and the pool's first status are the writes that fail.
    rules = (
        *failing_then_lost("hosts/status", host),
        *failing_then_lost("resourcepools/status", pool),
    )
    fault_proxy.rules(*rules)
    kn.host(host, cpus=8, memory="16Gi")
    operators.start("op-1", kubeconfig=fault_proxy.kubeconfig())
    kn.vm("a", flavor, pool)
    kn.vm("b", flavor, pool)

    def ready() -> bool:
        st = kn.get_cluster("hosts", host).get("status", {})
        conds = {c["type"]: c["status"] for c in st.get("conditions", [])}
        return st.get("phase") == "Ready" and conds.get("Ready") == "True"

    wait_for("the Host Ready", ready, timeout=120)

    def pool_status() -> dict[str, Any] | None:
        st: dict[str, Any] = kn.get_cluster("resourcepools", pool).get("status", {})
        return st if st.get("allocated", {}).get("vcpus") == 4 else None

    st = wait_for("the pool's status with both VMs", pool_status, timeout=120)
    assert [fault_proxy.plan.fired(i) for i in range(4)] == [TRIES, 1, TRIES, 1]
    assert (st["hosts"], st["readyHosts"]) == (1, 1)
    assert st["allocated"]["memory"] == "8Gi"
    assert {f["flavor"]: f["count"] for f in st["available"]}[flavor] == 2
    # One transition, said once: the failed tries emitted nothing, the lost reply's retry
    # (the write had landed) was not a second transition.
    wait_for("the HostReady event", lambda: said(kn, host, "HostReady") >= 1)
    assert said(kn, host, "HostReady") == 1

    # With the faults spent, the Host's next transition is written at once.
    kn.heartbeat(host, duration=1, age=5)
    wait_for(
        "the Host NotReady",
        lambda: kn.get_cluster("hosts", host).get("status", {}).get("phase") == "NotReady",
        timeout=60,
    )
    wait_for("the HostNotReady event", lambda: said(kn, host, "HostNotReady") == 1)
