"""Agents confined to their host's needs: the chart's agent ServiceAccount, with real tokens
from the TokenRequest API bound to pods on two Nodes (as the kubelet gets them for the
DaemonSet), against the chart's RBAC and agent-confinement policy. The agent of node A may
write its Host's status (not the operator's part, not labels, admin annotations or spec), its
Lease, and the agent's fields of VMs bound to it; a migration URI it offers must name its own
address. Each refusal names what was refused, and changes nothing.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import kubernetes
import pytest
import yaml

from kubenova.api import constants
from tests.fixtures.cluster import LocalCluster
from tests.fixtures.identities import (
    Client,
    Policies,
    chart_policies,
    in_force,
    policy_helm,
    service_account_token,
    token_client,
)

__all__ = ["chart_policies", "policy_helm"]  # fixtures used by name

pytestmark = pytest.mark.apiserver

# The chart's agent.hostLabels: the only labels (with kubenova.io/hostname) an agent sets.
POLICY_VALUES = {"agent": {"hostLabels": {"kubenova.io/class": "general"}}}
CLASS = "kubenova.io/class"


@dataclass
class Agents:
    a: Client
    """The agent of node `node_a`."""
    b: Client
    unbound: Client
    """The agent's ServiceAccount with a token bound to no pod (not from its DaemonSet)."""
    node_a: str
    node_b: str
    policies: Policies


def _host(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": constants.API_VERSION,
        "kind": "Host",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {},
    }


@pytest.fixture(scope="module")
def agents(test_cluster: LocalCluster, chart_policies: Policies) -> Iterator[Agents]:
    tc, p = test_cluster, chart_policies
    node_a, node_b = f"{p.release}-a", f"{p.release}-b"
    account, user = p.account("agent"), p.user("agent")
    a = token_client(tc, user, service_account_token(tc, p.namespace, account, node_a))
    b = token_client(tc, user, service_account_token(tc, p.namespace, account, node_b))
    unbound = token_client(tc, user, service_account_token(tc, p.namespace, account, None))
    in_force(
        "the agent-confinement policy",
        lambda: a.create("hosts", _host(node_b), dry_run=True),
        f"may write only Host {node_a}",
    )
    yield Agents(a, b, unbound, node_a, node_b, p)
    tc.kubectl("delete", "host", node_a, node_b, "--ignore-not-found", "--wait=false")
    tc.kubectl("delete", "node", node_a, node_b, "--ignore-not-found", "--wait=false")


def _admin_host(tc: LocalCluster, name: str, **meta: Any) -> dict[str, Any]:
    """Host `name` as an admin leaves it: created if missing, then `meta` merged in."""
    if tc.kubectl("get", "host", name, check=False).returncode != 0:
        tc.kubectl("create", "-f", "-", input=yaml.safe_dump(_host(name)))
    if meta:
        tc.kubectl("patch", "host", name, "--type=merge", "-p", yaml.safe_dump(meta))
    host: dict[str, Any] = tc.get("host", name)
    return host


def _same(before: dict[str, Any], after: dict[str, Any]) -> bool:
    """Nothing but bookkeeping changed."""

    def strip(o: dict[str, Any]) -> dict[str, Any]:
        o = copy.deepcopy(o)
        for k in ("resourceVersion", "managedFields", "generation"):
            o["metadata"].pop(k, None)
        return o

    return strip(before) == strip(after)


# -- Hosts -------------------------------------------------------------------------------------


def test_an_agent_registers_only_its_own_host_with_only_the_charts_labels(
    test_cluster: LocalCluster, agents: Agents
) -> None:
    a, me, other = agents.a, agents.node_a, agents.node_b
    refused = {
        "other host": a.create("hosts", _host(other), dry_run=True),
        "dedicated pool label": a.create("hosts", _host(me, {CLASS: "dedicated"}), dry_run=True),
        "cordoned": a.create("hosts", {**_host(me), "spec": {"unschedulable": True}}, dry_run=True),
    }
    assert all(v.startswith("403") for v in refused.values()), refused
    assert f"may write only Host {me}" in refused["other host"]
    assert (
        f"may not set, change or remove the labels {CLASS} of Host {me}"
        in refused["dedicated pool label"]
    )
    assert "may not write the spec" in refused["cordoned"]
    assert test_cluster.kubectl("get", "host", other, check=False).returncode != 0

    labels = {constants.LABEL_HOSTNAME: me, CLASS: "general"}
    test_cluster.kubectl("delete", "host", me, "--ignore-not-found")  # a fresh registration
    assert a.create("hosts", _host(me, labels)) == ""
    assert test_cluster.get("host", me)["metadata"]["labels"] == labels
    # What ensure_host does on every start: set the chart's labels again.
    assert a.patch("hosts", me, {"metadata": {"labels": labels}}) == ""


def test_an_agent_cannot_relabel_its_host_into_another_pool(
    test_cluster: LocalCluster, agents: Agents
) -> None:
    a, me = agents.a, agents.node_a
    # The admin dedicated this host: even the chart's own value may not be put back.
    before = _admin_host(test_cluster, me, metadata={"labels": {CLASS: "dedicated", "rack": "r1"}})
    for labels in ({CLASS: "general"}, {"pool": "ml"}, {"rack": None}, {"rack": "r2"}):
        answer = a.patch("hosts", me, {"metadata": {"labels": labels}})
        assert answer.startswith("403"), (labels, answer)
        assert f"may not set, change or remove the labels {next(iter(labels))}" in answer, answer
    assert _same(before, test_cluster.get("host", me))


def test_an_agent_cannot_clear_the_admins_cordon_taints_or_drain(
    test_cluster: LocalCluster, agents: Agents
) -> None:
    a, me = agents.a, agents.node_a
    taint = {"key": "maintenance", "value": "disk", "effect": "NoSchedule"}
    before = _admin_host(
        test_cluster,
        me,
        metadata={"annotations": {constants.ANNOTATION_DRAIN: "2026-01-01T00:00:00Z"}},
        spec={"unschedulable": True, "taints": [taint]},
    )
    attempts = {
        "uncordon": {"spec": {"unschedulable": False}},
        "untaint": {"spec": {"taints": []}},
        "undrain": {"metadata": {"annotations": {constants.ANNOTATION_DRAIN: None}}},
        "annotate": {"metadata": {"annotations": {"kubenova.io/fenced": "true"}}},
    }
    answers = {k: a.patch("hosts", me, body) for k, body in attempts.items()}
    assert all(v.startswith("403") for v in answers.values()), answers
    assert "may not write the spec (cordon, taints)" in answers["uncordon"], answers
    assert f"the annotations {constants.ANNOTATION_DRAIN} of Host {me}" in answers["undrain"]
    assert _same(before, test_cluster.get("host", me))

    # Removing the fencing confirmation once it runs again is the agent's part.
    _admin_host(test_cluster, me, metadata={"annotations": {constants.ANNOTATION_FENCED: "true"}})
    assert (
        a.patch("hosts", me, {"metadata": {"annotations": {constants.ANNOTATION_FENCED: None}}})
        == ""
    )
    annotations = test_cluster.get("host", me)["metadata"]["annotations"]
    assert constants.ANNOTATION_FENCED not in annotations
    assert constants.ANNOTATION_DRAIN in annotations


def test_an_agent_reports_its_hosts_status_but_not_the_operators_part(
    test_cluster: LocalCluster, agents: Agents
) -> None:
    a, b, me = agents.a, agents.b, agents.node_a
    _admin_host(test_cluster, me)
    test_cluster.kubectl(
        "patch", "host", me, "--subresource=status", "--type=merge",
        "-p", yaml.safe_dump({"status": {"phase": "NotReady"}}),
    )  # fmt: skip
    report = {"status": {"capacity": {"cpus": 16, "memory": "64Gi", "disk": "1Ti"}, "domains": 3}}
    assert a.patch("hosts", me, report, status=True) == ""
    before = test_cluster.get("host", me)
    condition = {"type": "Ready", "status": "True", "reason": "HeartbeatFresh",
                 "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}  # fmt: skip
    answers = {
        "phase": a.patch("hosts", me, {"status": {"phase": "Ready"}}, status=True),
        "conditions": a.patch("hosts", me, {"status": {"conditions": [condition]}}, status=True),
        "other agent": b.patch("hosts", me, report, status=True),
    }
    assert all(v.startswith("403") for v in answers.values()), answers
    assert "may not write status.phase or status.conditions" in answers["phase"]
    assert f"may write only Host {agents.node_b}" in answers["other agent"]
    assert _same(before, test_cluster.get("host", me))


def test_an_agent_offers_live_migrations_only_at_its_own_address(
    test_cluster: LocalCluster, agents: Agents
) -> None:
    a, me = agents.a, agents.node_a
    _admin_host(test_cluster, me)

    def offer(uri: str, address: str) -> str:
        body = {"status": {"migration": {"uri": uri, "address": address}}}
        return a.patch("hosts", me, body, status=True)

    assert offer(f"qemu+tcp://{me}:16509/system", "") == ""
    assert offer("qemu+tls://10.9.0.1/system", "10.9.0.1") == ""
    before = test_cluster.get("host", me)
    hostile = [
        ("qemu+ext:///system?command=/bin/sh", ""),  # libvirtd on the source runs it
        ("qemu+tcp://10.9.0.1/system?socket=/run/x", "10.9.0.1"),
        ("qemu+tcp://10.9.0.2/system", "10.9.0.1"),  # someone else's address
        (f"qemu+tcp://{agents.node_b}/system", ""),  # another host by name
        ("qemu+ssh://root@10.9.0.1/system", "10.9.0.1"),
        ("qemu:///system", ""),
        ("qemu+tcp://10.9.0.1/system", "10.9.0.1 --evil"),
    ]
    answers = {uri: offer(uri, address) for uri, address in hostile}
    assert all(v.startswith("403") for v in answers.values()), answers
    assert all("may offer status.migration.uri only as" in v for v in answers.values()), answers
    assert _same(before, test_cluster.get("host", me))
    assert before["status"]["migration"] == {"uri": "qemu+tls://10.9.0.1/system",
                                             "address": "10.9.0.1"}  # fmt: skip


# -- Leases ------------------------------------------------------------------------------------


def test_an_agent_writes_only_its_own_lease_and_deletes_nothing(
    test_cluster: LocalCluster, agents: Agents
) -> None:
    ns = agents.policies.namespace

    def lease(client: Client, host: str) -> str:
        meta = kubernetes.client.V1ObjectMeta(name=f"kubenova-host-{host}", namespace=ns)
        spec = kubernetes.client.V1LeaseSpec(holder_identity=host, lease_duration_seconds=40)
        body = kubernetes.client.V1Lease(metadata=meta, spec=spec)
        return client.attempt(lambda: client.coord.create_namespaced_lease(ns, body))

    assert lease(agents.a, agents.node_a) == ""
    other = lease(agents.a, agents.node_b)
    assert (
        other.startswith("403") and f"may write only Lease kubenova-host-{agents.node_a}" in other
    )
    name = f"kubenova-host-{agents.node_a}"
    gone = agents.a.attempt(lambda: agents.a.coord.delete_namespaced_lease(name, ns))
    assert gone.startswith("403"), gone  # RBAC already: the Role has no delete
    leases = test_cluster.kubectl("get", "lease", "-n", ns, "-o", "name").stdout.split()
    assert leases == [f"lease.coordination.k8s.io/{name}"]


# -- VirtualMachines ---------------------------------------------------------------------------


def _bound_vm(tc: LocalCluster, ns: str, name: str, host: str) -> dict[str, Any]:
    """A VM the operator bound to `host` (written by the admin: no operator runs here)."""
    doc = {
        "apiVersion": constants.API_VERSION,
        "kind": "VirtualMachine",
        "metadata": {
            "name": name,
            "namespace": ns,
            "finalizers": [constants.VM_FINALIZER],
        },
        "spec": {"flavor": "small", "boot": {"image": "test.qcow2"}},
    }
    tc.kubectl("create", "-f", "-", input=yaml.safe_dump(doc))
    status = {"status": {"phase": "Scheduled", "host": host, "gpuDevices": ["0000:01:00.0"]}}
    tc.kubectl("patch", "vm", "-n", ns, name, "--subresource=status", "--type=merge",
               "-p", yaml.safe_dump(status))  # fmt: skip
    vm: dict[str, Any] = tc.get("vm", "-n", ns, name)
    return vm


def test_an_agent_writes_only_the_agents_fields_of_vms_bound_to_it(
    test_cluster: LocalCluster, agents: Agents, namespace: str
) -> None:
    a, me, other, ns = agents.a, agents.node_a, agents.node_b, namespace
    _bound_vm(test_cluster, ns, "mine", me)
    theirs = _bound_vm(test_cluster, ns, "theirs", other)
    running = {"status": {"phase": "Running", "domainUUID": "0d5c", "addresses": ["10.1.0.5"],
                          "ip": "10.1.0.5", "reason": None}}  # fmt: skip
    assert a.patch("virtualmachines", "mine", running, ns, status=True) == ""
    before = test_cluster.get("vm", "-n", ns, "mine")

    status_attempts = {
        "move it": {"status": {"host": other}},
        "take GPUs": {"status": {"gpuDevices": ["0000:02:00.0"]}},
        "unschedule": {"status": {"phase": "Pending"}},
        "claim a migration": {"status": {"phase": "Migrating"}},
    }
    answers = {k: a.patch("virtualmachines", "mine", b, ns, status=True)
               for k, b in status_attempts.items()}  # fmt: skip
    meta_attempts = {
        "relabel": {"metadata": {"labels": {constants.LABEL_POOL: other}}},
        "annotate": {"metadata": {"annotations": {constants.ANNOTATION_MIGRATION_URI: "qemu:///"}}},
        "spec": {"spec": {"runStrategy": "Halted"}},
        "finalizer": {"metadata": {"finalizers": ["example.com/keep"]}},
    }
    answers |= {k: a.patch("virtualmachines", "mine", b, ns) for k, b in meta_attempts.items()}
    answers["other host's vm"] = a.patch("virtualmachines", "theirs", running, ns, status=True)
    assert all(v.startswith("403") for v in answers.values()), answers
    assert "may not write status.host or status.gpuDevices" in answers["move it"]
    assert "nor set phase Pending" in answers["unschedule"]
    assert "may only remove the kubenova.io/domain-cleanup finalizer" in answers["relabel"]
    assert "may only remove the kubenova.io/domain-cleanup finalizer" in answers["annotate"]
    assert "may write only VMs bound to it" in answers["other host's vm"]
    assert _same(before, test_cluster.get("vm", "-n", ns, "mine"))
    assert _same(theirs, test_cluster.get("vm", "-n", ns, "theirs"))

    # Its part once the domain is gone: remove the domain-cleanup finalizer.
    assert a.patch("virtualmachines", "mine", {"metadata": {"finalizers": None}}, ns) == ""
    assert test_cluster.get("vm", "-n", ns, "mine")["metadata"].get("finalizers") is None
    test_cluster.kubectl("patch", "vm", "-n", ns, "theirs", "--type=merge",
                         "-p", '{"metadata":{"finalizers":null}}')  # fmt: skip


def test_an_agent_reports_only_the_transfer_of_migrations_from_its_host(
    test_cluster: LocalCluster, agents: Agents, namespace: str
) -> None:
    a, ns = agents.a, namespace
    for name, source in (("from-me", agents.node_a), ("from-other", agents.node_b)):
        doc = {
            "apiVersion": constants.API_VERSION,
            "kind": "VMMigration",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"vmName": "vm"},
        }
        test_cluster.kubectl("create", "-f", "-", input=yaml.safe_dump(doc))
        status = {"status": {"phase": "Running", "sourceHost": source, "targetHost": "t"}}
        test_cluster.kubectl("patch", "vmim", "-n", ns, name, "--subresource=status",
                             "--type=merge", "-p", yaml.safe_dump(status))  # fmt: skip
    progress = {"status": {"progressPercent": 40, "transfer": {"state": "Running"}}}
    assert a.patch("vmmigrations", "from-me", progress, ns, status=True) == ""
    before = [test_cluster.get("vmim", "-n", ns, n) for n in ("from-me", "from-other")]
    answers = {
        "succeed it": a.patch("vmmigrations", "from-me", {"status": {"phase": "Succeeded"}}, ns,
                              status=True),
        "retarget": a.patch("vmmigrations", "from-me", {"status": {"targetHost": "x"}}, ns,
                            status=True),
        "other source": a.patch("vmmigrations", "from-other", progress, ns, status=True),
    }  # fmt: skip
    assert all(v.startswith("403") for v in answers.values()), answers
    assert all(f"migrations from {agents.node_a}" in v for v in answers.values()), answers
    after = [test_cluster.get("vmim", "-n", ns, n) for n in ("from-me", "from-other")]
    assert all(_same(x, y) for x, y in zip(before, after, strict=True))


def test_a_token_not_bound_to_a_node_writes_nothing(
    test_cluster: LocalCluster, agents: Agents
) -> None:
    answer = agents.unbound.create("hosts", _host(agents.node_a), dry_run=True)
    assert answer.startswith("403") and "not bound to a node" in answer, answer
