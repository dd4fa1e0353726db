"""`helm install` of the chart on two real nodes, from the image the Dockerfile builds, and
what users do next: examples with kubectl, an upgrade, a lost leader, an uninstall.

The tests run in order on one release (module-scoped): each starts from the state the one
before left, as a user's session would.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.chart.helm import CHART
from tests.conftest import EXAMPLES
from tests.fixtures.cluster import wait_for
from tests.node.conftest import NODES, NodeCluster, values

pytestmark = [pytest.mark.node, pytest.mark.timeout(900)]

NS = "kubenova-system"
RELEASE = "kubenova"
OPERATORS, WEBHOOKS = 3, 2
LEASE = "kubenova-operator"
# web-2 is examples/vm-web.yaml renamed, as its comment suggests: its anti-affinity keeps the
# two web VMs on different hosts. tiny-1 is started (its example is Halted).
VMS = ("web-1", "web-2", "tiny-1")


def _examples() -> str:
    web = (EXAMPLES / "vm-web.yaml").read_text()
    tiny = (EXAMPLES / "vm-tiny.yaml").read_text()
    return "\n---\n".join(
        [
            web,
            web.replace("name: web-1", "name: web-2"),
            tiny.replace("runStrategy: Halted", "runStrategy: Always"),
        ]
    )


@pytest.fixture(scope="module")
def release(node_cluster: NodeCluster) -> Iterator[NodeCluster]:
    nc = node_cluster
    started = time.monotonic()
    nc.helm.run(
        "install", RELEASE, str(CHART), "-n", NS, "--create-namespace",
        "-f", str(nc.helm.values_file(values(nc))),
        cluster=nc.cluster,
    )  # fmt: skip
    nc.timings["helm install"] = time.monotonic() - started
    yield nc
    # Whatever a failed test left: the release and its objects, not the nodes (session).
    nc.kubectl("delete", "vm", "--all", "-A", "--wait=false", check=False)
    nc.helm.run("uninstall", RELEASE, "-n", NS, "--wait", cluster=nc.cluster, check=False)


def _pods(nc: NodeCluster) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = nc.get("pods", "-n", NS)["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def _ready(pod: dict[str, Any]) -> bool:
    conditions = {c["type"]: c["status"] for c in pod["status"].get("conditions", [])}
    return pod["status"].get("phase") == "Running" and conditions.get("Ready") == "True"


def _component(pod: dict[str, Any]) -> str:
    return str(pod["metadata"]["labels"].get("app.kubernetes.io/component", ""))


def _all_ready(nc: NodeCluster) -> list[dict[str, Any]] | None:
    pods = _pods(nc)
    want = {"operator": OPERATORS, "webhooks": WEBHOOKS, "agent": NODES}
    have = {c: sum(1 for p in pods if _component(p) == c) for c in want}
    if have == want and all(_ready(p) for p in pods):
        return pods
    return None


def _leader(nc: NodeCluster) -> str:
    lease = nc.get("lease", "-n", NS, LEASE)
    return str(lease["spec"].get("holderIdentity") or "")


def _vms(nc: NodeCluster) -> dict[str, dict[str, Any]]:
    return {v["metadata"]["name"]: v for v in nc.get("vm", "-n", "default")["items"]}


def _running(nc: NodeCluster) -> dict[str, dict[str, Any]] | None:
    vms = _vms(nc)
    ok = set(VMS) <= set(vms) and all(
        vms[n].get("status", {}).get("phase") == "Running" for n in VMS
    )
    return vms if ok else None


def test_install_runs_every_pod_running_and_ready(release: NodeCluster) -> None:
    started = time.monotonic()
    pods = wait_for("every chart pod Running and Ready", lambda: _all_ready(release), 180, 1)
    release.timings["pods ready"] = time.monotonic() - started
    # the operator's three replicas spread over the two nodes; one agent per node
    agents = sorted(p["spec"]["nodeName"] for p in pods if _component(p) == "agent")
    assert agents == release.node_names()
    assert {p["spec"]["nodeName"] for p in pods if _component(p) == "operator"} == set(agents)
    for pod in pods:
        assert pod["spec"]["containers"][0]["image"] == release.image, pod["metadata"]["name"]


def test_the_operator_leads(release: NodeCluster) -> None:
    operators = {p["metadata"]["name"] for p in _pods(release) if _component(p) == "operator"}
    leader = wait_for("an operator replica holding the Lease", lambda: _leader(release), 60, 0.5)
    assert leader in operators, f"Lease {LEASE} is held by {leader!r}, not a pod of {operators}"


def test_each_nodes_agent_reports_its_host_ready(release: NodeCluster) -> None:
    def reported() -> dict[str, dict[str, Any]] | None:
        hosts = {h["metadata"]["name"]: h for h in release.get("hosts.kubenova.io")["items"]}
        ok = set(hosts) == set(release.node_names()) and all(
            h.get("status", {}).get("phase") == "Ready"
            and h["status"].get("capacity", {}).get("cpus")
            for h in hosts.values()
        )
        return hosts if ok else None

    hosts = wait_for("each node's Host Ready with its capacity", reported, 90, 1)
    for name, host in hosts.items():
        # libvirt's test:///default, as the agent in the pod on that node sees it
        assert host["status"]["capacity"]["cpus"] == 16, (name, host["status"])
        assert host["metadata"]["labels"]["kubenova.io/hostname"] == name


def test_examples_run_on_both_nodes_with_quota_charged_by_the_webhooks(
    release: NodeCluster,
) -> None:
    nc = release
    nc.kubectl(
        "apply",
        "-f", str(EXAMPLES / "flavors.yaml"),
        "-f", str(EXAMPLES / "pools.yaml"),
        "-f", str(EXAMPLES / "quota.yaml"),
    )  # fmt: skip
    started = time.monotonic()
    created = nc.kubectl("apply", "-f", "-", check=False, input=_examples())
    # A denial here is the webhooks' answer, through the API server, from their pods.
    assert created.returncode == 0, created.stderr
    vms = wait_for("the example VMs Running", lambda: _running(nc), 120, 1)
    nc.timings["VMs Running"] = time.monotonic() - started
    hosts = {n: vms[n]["status"]["host"] for n in VMS}
    assert hosts["web-1"] != hosts["web-2"], hosts  # anti-affinity
    assert set(hosts.values()) == set(nc.node_names()), hosts

    def charged() -> dict[str, Any] | None:
        quota: dict[str, Any] = nc.get("vmquota", "-n", "default", "default")
        return quota if quota.get("status", {}).get("used", {}).get("vms") == len(VMS) else None

    quota = wait_for("VMQuota default charged for three small VMs", charged, 30, 0.5)
    assert quota["status"]["used"]["vcpus"] == 3, quota["status"]
    # The webhooks charged them: each VM's charge is in a webhook pod's log, and those pods
    # hold nothing but their service account's token to call the API server with.
    logs = ""
    for pod in _pods(nc):
        if _component(pod) == "webhooks":
            assert pod["spec"]["serviceAccountName"] == f"{RELEASE}-webhooks"
            logs += nc.kubectl("logs", "-n", NS, pod["metadata"]["name"], "-c", "webhooks").stdout
    for name in VMS:
        assert f"charged VirtualMachine default/{name} to VMQuota default" in logs, name


def test_the_console_api_goes_from_the_api_server_through_the_console_pods_to_an_agent(
    release: NodeCluster,
) -> None:
    """The aggregator routes subresources.kubenova.io to the console pods (their pod IPs);
    the console server reads the VM and its Host and dials that node's agent over mutual TLS.
    The simulated hosts keep no serial log, so the agent's own 404 is the proof the chain is
    whole (docs/console.md)."""
    nc = release
    wait_for("the console's APIService Available", lambda: nc.kubectl(
        "get", "apiservice", "v1alpha1.subresources.kubenova.io", "-o",
        "jsonpath={.status.conditions[?(@.type=='Available')].status}", check=False,
    ).stdout == "True", 120, 1)  # fmt: skip
    found = json.loads(nc.kubectl("get", "--raw", "/apis/subresources.kubenova.io/v1alpha1").stdout)
    assert {r["name"] for r in found["resources"]} == {
        "virtualmachines/console",
        "virtualmachines/consolelog",
    }
    host = _vms(nc)["web-1"]["status"]["host"]
    path = "/apis/subresources.kubenova.io/v1alpha1/namespaces/default/virtualmachines/web-1/"
    answer = nc.kubectl("get", "--raw", path + "consolelog", check=False)
    assert answer.returncode != 0
    assert f"has no console log on {host}" in answer.stderr, answer.stderr


def test_upgrade_to_a_changed_value_rolls_the_pods_and_keeps_every_vm(
    release: NodeCluster,
) -> None:
    nc = release
    before_pods = {p["metadata"]["uid"] for p in _pods(nc)}
    before = {n: (v["metadata"]["uid"], v["status"]["host"]) for n, v in _vms(nc).items()}
    started = time.monotonic()
    changed = values(nc, operator={"bindConcurrency": 8}, agent={"heartbeatSeconds": 5})
    changed["webhooks"]["logLevel"] = "info"
    upgrade = nc.helm.values_file(changed, "upgrade.yaml")
    nc.helm.run("upgrade", RELEASE, str(CHART), "-n", NS, "-f", str(upgrade), cluster=nc.cluster)

    def rolled() -> list[dict[str, Any]] | None:
        # The components whose values changed; the console's pods have nothing to roll for.
        pods = _all_ready(nc)
        changed = {p["metadata"]["uid"] for p in pods or [] if _component(p) != "console"}
        return pods if pods and not changed & before_pods else None

    pods = wait_for("every pod replaced and Ready", rolled, 240, 1)
    nc.timings["helm upgrade rolled"] = time.monotonic() - started
    operator = next(p for p in pods if _component(p) == "operator")
    assert "--bind-concurrency=8" in operator["spec"]["containers"][0]["args"]
    vms = wait_for("the VMs Running after the roll", lambda: _running(nc), 120, 1)
    after = {n: (v["metadata"]["uid"], v["status"]["host"]) for n, v in vms.items()}
    assert after == before, "a VM was re-created or moved by the upgrade"
    # Once every old replica has exited (not only been marked for deletion), each gave the
    # Lease up on its way out: none is left holding it for a lease duration, not even a
    # standby that took it as it shut down.
    rolled_uids = before_pods - {p["metadata"]["uid"] for p in pods if _component(p) == "console"}

    def exited() -> bool:
        return not {p["metadata"]["uid"] for p in nc.get("pods", "-n", NS)["items"]} & rolled_uids

    wait_for("the old pods exited", exited, 120, 1)
    operators = {p["metadata"]["name"] for p in _pods(nc) if _component(p) == "operator"}
    assert _leader(nc) in operators | {""}, "the Lease names a replica the roll removed"


def test_deleting_the_leader_pod_hands_over_to_another(release: NodeCluster) -> None:
    nc = release
    leader = wait_for("a leader", lambda: _leader(nc), 60, 0.5)
    started = time.monotonic()
    nc.kubectl("delete", "pod", "-n", NS, leader, "--wait=false")

    def new_leader() -> str | None:
        holder = _leader(nc)
        operators = {p["metadata"]["name"] for p in _pods(nc) if _component(p) == "operator"}
        return holder if holder and holder != leader and holder in operators else None

    # the leaving leader releases the Lease; at worst the others wait out leaseDuration (12 s)
    wait_for("another operator replica to take the Lease", new_leader, 60, 0.5)
    nc.timings["leader handover"] = time.monotonic() - started
    # and it schedules: a new VM is placed by the new leader
    nc.kubectl("patch", "vm", "-n", "default", "tiny-1", "--type=merge", "-p",
               json.dumps({"spec": {"runStrategy": "Halted"}}))  # fmt: skip
    wait_for(
        "tiny-1 Stopped by the new leader and its agent",
        lambda: _vms(nc)["tiny-1"].get("status", {}).get("phase") == "Stopped",
        60,
        0.5,
    )


def test_uninstall_leaves_only_the_crds(release: NodeCluster) -> None:
    nc = release
    installed = [
        d
        for d in yaml.safe_load_all(
            nc.helm.run("get", "manifest", RELEASE, "-n", NS, cluster=nc.cluster).stdout
        )
        if d
    ]
    # VMs first, while the operator and agents still run to release their finalizers.
    nc.kubectl("delete", "vm", "--all", "-n", "default", "--timeout=60s")
    started = time.monotonic()
    nc.helm.run("uninstall", RELEASE, "-n", NS, "--wait", "--timeout=120s", cluster=nc.cluster)
    nc.timings["helm uninstall"] = time.monotonic() - started

    def remaining() -> list[str]:
        left = []
        for d in installed:
            ns = ["-n", d["metadata"].get("namespace", NS)]
            ref = f"{d['kind']}/{d['metadata']['name']}"
            if nc.kubectl("get", *ns, ref, "--ignore-not-found", "-o", "name").stdout.strip():
                left.append(ref)
        return left

    wait_for("every object of the release gone", lambda: not remaining() or None, 120, 1)
    assert not [p for p in _pods(nc)], "pods left in the namespace"
    crds = nc.kubectl("get", "crd", "-o", "name").stdout.split()
    kubenova = sorted(c for c in crds if c.endswith(".kubenova.io"))
    shipped = sorted(f"customresourcedefinition.apiextensions.k8s.io/{f.stem}"
                     for f in (CHART / "crds").glob("*.kubenova.io.yaml"))  # fmt: skip
    assert kubenova == shipped
