"""The operator against the real control plane: placement, explanations, status of the rest.
These tests play the node agents' part (Hosts and heartbeat Leases)."""

from __future__ import annotations

import functools
import re
from collections import Counter
from typing import Any

import pytest

from kubenova.api import constants
from tests.fixtures.cluster import wait_for
from tests.fixtures.operator import Cluster, Operators

pytestmark = [pytest.mark.apiserver, pytest.mark.e2e]


def _host_of(kn: Cluster, name: str) -> str | None:
    host: str | None = kn.get_vm(name).get("status", {}).get("host")
    return host


def _explained(reason: str) -> dict[str, int]:
    """`0/N hosts: 3 insufficient memory, 1 not in pool p` → {"insufficient memory": 3, ...}"""
    m = re.fullmatch(r"0/(\d+) hosts: (.*)", reason)
    assert m, f"not an explanation: {reason!r}"
    counts = {}
    for part in m.group(2).split(", "):
        n, what = part.split(" ", 1)
        counts[what] = int(n)
    assert sum(counts.values()) == int(m.group(1)), f"every host is accounted for: {reason}"
    return counts


def _finalizers(kn: Cluster, name: str) -> list[str]:
    found: list[str] = kn.get_vm(name)["metadata"].get("finalizers", [])
    return found


def _bound(kn: Cluster, names: list[str]) -> dict[str, str] | None:
    hosts = {n: _host_of(kn, n) for n in names}
    return {n: h for n, h in hosts.items() if h} if all(hosts.values()) else None


def test_vms_land_on_hosts_that_satisfy_pool_capacity_selector_and_anti_affinity(
    kn: Cluster, operators: Operators, namespace: str
) -> None:
    ns = namespace
    kn.host(f"{ns}-a1", cpus=4, memory="8Gi", labels={"rack": "a"})
    kn.host(f"{ns}-a2", cpus=4, memory="8Gi", labels={"rack": "a"})
    kn.host(f"{ns}-b1", cpus=4, memory="8Gi", labels={"rack": "b"})
    kn.host(f"{ns}-big", cpus=64, memory="256Gi", labels={"rack": "b", "other": "yes"})
    small = kn.flavor(f"{ns}-small", vcpus=2, memory="4Gi")
    big = kn.flavor(f"{ns}-big", vcpus=32, memory="128Gi")
    pool = kn.pool(
        f"{ns}-pool",
        hostSelector={
            "matchLabels": {"test": ns},
            "matchExpressions": [{"key": "other", "operator": "DoesNotExist"}],
        },
    )
    operators.start("op-1")
    anti = {"groups": ["web"], "antiAffinity": [{"group": "web", "topologyKey": "rack"}]}
    kn.vm("web-1", small, pool, placement=anti)
    kn.vm("web-2", small, pool, placement=anti)
    kn.vm("pinned", small, pool, placement={"nodeSelector": {"rack": "a"}})

    bound = wait_for("three VMs bound", lambda: _bound(kn, ["web-1", "web-2", "pinned"]))
    assert f"{ns}-big" not in bound.values(), "the pool's selector excludes that host"
    rack = {f"{ns}-a1": "a", f"{ns}-a2": "a", f"{ns}-b1": "b"}
    assert rack[bound["web-1"]] != rack[bound["web-2"]], "anti-affinity over rack"
    assert rack[bound["pinned"]] == "a"
    for name, host in bound.items():
        # The finalizer of a VM no webhook saw (none runs here) is the bind's second write,
        # after status.host: wait for it, not assume it.
        finalizers = wait_for(f"finalizer on {name}", functools.partial(_finalizers, kn, name))
        assert constants.VM_FINALIZER in finalizers
        vm = kn.get_vm(name)
        assert (vm["status"]["host"], vm["status"]["phase"]) == (host, "Scheduled")
        assert constants.ANNOTATION_TRACE_ID in vm["metadata"]["annotations"]
        assert [h["action"] for h in vm["status"]["history"]] == ["Scheduled"]

    # No host in the pool has room for 32 vCPUs / 128Gi: the VM says why, in one line.
    kn.vm("huge", big, pool)
    reason = wait_for("an explanation", lambda: kn.get_vm("huge").get("status", {}).get("reason"))
    counts = _explained(reason)
    assert counts["insufficient memory"] == 3, reason
    assert set(counts) == {"insufficient memory", f"not in pool {pool}"}, reason
    vm = kn.get_vm("huge")
    (cond,) = [c for c in vm["status"]["conditions"] if c["type"] == "Scheduled"]
    assert (cond["status"], cond["reason"]) == ("False", "Unschedulable")
    events = wait_for(
        "a FailedScheduling event",
        lambda: [e for e in kn.events("huge") if e.reason == "FailedScheduling"],
    )
    assert events[0].message == reason

    # Capacity appears: the VM is placed without anyone touching it.
    kn.host(f"{ns}-c1", cpus=64, memory="256Gi")
    host = wait_for("the big VM bound", lambda: _host_of(kn, "huge"), timeout=60)
    assert host == f"{ns}-c1"


def test_no_host_is_ever_over_allocated_under_a_burst(
    kn: Cluster, operators: Operators, namespace: str
) -> None:
    ns = namespace
    for i in range(4):
        kn.host(f"{ns}-h{i}", cpus=4, memory="8Gi")  # room for 4 x (1 vCPU, 2Gi) each
    flavor = kn.flavor(f"{ns}-f", vcpus=1, memory="2Gi")
    pool = kn.pool(f"{ns}-pool")
    operators.start("op-1")
    for i in range(20):
        kn.vm(f"vm-{i}", flavor, pool)

    def settled() -> list[dict[str, Any]] | None:
        vms = kn.vms()
        bound = [v for v in vms if v.get("status", {}).get("host")]
        explained = [v for v in vms if v.get("status", {}).get("reason")]
        return vms if len(bound) == 16 and len(explained) == 4 else None

    vms = wait_for("16 bound and 4 explained", settled, timeout=60)
    per_host = Counter(v["status"]["host"] for v in vms if v["status"].get("host"))
    assert sorted(per_host.values()) == [4, 4, 4, 4]


def test_a_host_whose_lease_expired_is_not_ready_and_gets_no_vms(
    kn: Cluster, operators: Operators, namespace: str
) -> None:
    ns = namespace
    kn.host(f"{ns}-fresh", cpus=2, memory="4Gi")
    kn.host(f"{ns}-stale", cpus=64, memory="256Gi", heartbeat=False)
    kn.heartbeat(f"{ns}-stale", duration=10, age=60)
    flavor = kn.flavor(f"{ns}-f", vcpus=1, memory="1Gi")
    pool = kn.pool(f"{ns}-pool", placementPolicy="Spread")
    operators.start("op-1")
    phase = wait_for(
        "the stale host NotReady",
        lambda: kn.get_cluster("hosts", f"{ns}-stale").get("status", {}).get("phase") == "NotReady",
    )
    assert phase
    host = kn.get_cluster("hosts", f"{ns}-stale")
    (cond,) = [c for c in host["status"]["conditions"] if c["type"] == "Ready"]
    assert (cond["status"], cond["reason"]) == ("False", "HeartbeatExpired")
    for i in range(3):
        kn.vm(f"vm-{i}", flavor, pool)
    bound = wait_for("VMs placed", lambda: _bound(kn, ["vm-0", "vm-1"]))
    assert set(bound.values()) == {f"{ns}-fresh"}, "spread would prefer the big host if ready"
    reason = wait_for(
        "the third explained", lambda: kn.get_vm("vm-2").get("status", {}).get("reason")
    )
    counts = _explained(reason)
    assert (counts["insufficient cpu"], counts["not ready"]) == (1, 1), reason
    # Hosts of other tests, if any are left, are only "not in pool".
    assert set(counts) <= {"insufficient cpu", "not ready", f"not in pool {pool}"}, reason

    # The heartbeat comes back: Ready again, and the waiting VM lands there.
    kn.heartbeat(f"{ns}-stale")
    assert wait_for("vm-2 bound to the recovered host", lambda: _host_of(kn, "vm-2")) == (
        f"{ns}-stale"
    )


def test_flavor_and_pool_status(kn: Cluster, operators: Operators, namespace: str) -> None:
    ns = namespace
    kn.host(f"{ns}-h", cpus=8, memory="16Gi")
    flavor = kn.flavor(f"{ns}-f", vcpus=2, memory="4Gi")
    pool = kn.pool(
        f"{ns}-pool", overcommit={"cpu": 2.0}, reservations=[{"flavor": flavor, "count": 1}]
    )
    operators.start("op-1")
    kn.vm("a", flavor, pool)
    kn.vm("b", flavor, pool)
    wait_for("two bound", lambda: _bound(kn, ["a", "b"]))

    def pool_status() -> dict[str, Any] | None:
        st: dict[str, Any] = kn.get_cluster("resourcepools", pool).get("status", {})
        return st if st.get("allocated", {}).get("vcpus") == 4 else None

    st = wait_for("pool status with two VMs", pool_status)
    assert st["hosts"] == 1 and st["readyHosts"] == 1
    assert st["capacity"]["vcpus"] == 16  # 8 CPUs x over-commit 2
    assert st["capacity"]["memory"] == "16Gi"
    assert st["reserved"]["vcpus"] == 2 and st["reserved"]["memory"] == "4Gi"
    fits = {f["flavor"]: f["count"] for f in st["available"]}
    # 16Gi - 8Gi used - 4Gi reserved = 4Gi free: one more, plus the reserved slot
    assert fits[flavor] == 2
    count = wait_for(
        "flavor vmCount",
        lambda: kn.get_cluster("flavors", flavor).get("status", {}).get("vmCount") == 2,
    )
    assert count


def test_deleting_an_unbound_vm_releases_it_and_a_bound_one_waits_for_its_agent(
    kn: Cluster, operators: Operators, namespace: str
) -> None:
    ns = namespace
    kn.host(f"{ns}-h", cpus=2, memory="2Gi")
    flavor = kn.flavor(f"{ns}-f", vcpus=2, memory="2Gi")
    pool = kn.pool(f"{ns}-pool")
    operators.start("op-1")
    kn.vm("bound", flavor, pool)
    kn.vm("waiting", flavor, pool)
    wait_for("one bound", lambda: _host_of(kn, "bound"))
    wait_for("the bound VM's finalizer", functools.partial(_finalizers, kn, "bound"))
    # With no webhook to give it at create, the finalizer comes with the bind (its second
    # write): a VM never bound has no domain anywhere to wait for, and no write went to it.
    assert constants.VM_FINALIZER not in kn.get_vm("waiting")["metadata"].get("finalizers", [])
    for name in ("bound", "waiting"):
        kn.custom.delete_namespaced_custom_object(
            "kubenova.io", "v1alpha1", ns, "virtualmachines", name
        )
    wait_for(
        "the unbound VM gone", lambda: all(v["metadata"]["name"] != "waiting" for v in kn.vms())
    )
    vm = wait_for(
        "the bound VM Deleting",
        lambda: (v := kn.get_vm("bound"))["status"]["phase"] == "Deleting" and v,
    )
    assert vm["metadata"]["finalizers"] == [constants.VM_FINALIZER]
    # The agent confirms the domain is gone by removing the finalizer.
    kn.custom.patch_namespaced_custom_object(
        "kubenova.io",
        "v1alpha1",
        ns,
        "virtualmachines",
        "bound",
        {"metadata": {"finalizers": []}},
        _content_type="application/merge-patch+json",
    )
    wait_for("the bound VM gone", lambda: not kn.vms())
