"""The agent's production wiring on a real node: the chart's `qemu:///system` through the
node's libvirtd socket folder (a hostPath), not libvirt's in-pod `test:///` driver.

The node's libvirtd is a private one (hack/libvirt-pair's first host: its own /run/libvirt,
/var/lib/libvirt, ...), not the machine's, which other test runs share: an agent pointed at
that one would take their domains for its host's. One node runs the agent (a nodeSelector),
because both nodes share this machine's filesystem and so the same socket folder.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import libvirt
import pytest

from tests.chart.helm import CHART
from tests.fixtures.cluster import wait_for
from tests.fixtures.libvirt_pair import PairHost
from tests.node.conftest import NodeCluster, values

pytestmark = [pytest.mark.node, pytest.mark.libvirt, pytest.mark.timeout(600)]

NS = "kubenova-qemu"
RELEASE = "kubenova-qemu"


@pytest.fixture(scope="module")
def qemu_release(
    node_cluster: NodeCluster, libvirtd: str, libvirt_pair: tuple[PairHost, PairHost]
) -> Iterator[tuple[NodeCluster, PairHost]]:
    nc, host = node_cluster, libvirt_pair[0]
    node = nc.node_names()[0]
    prod = values(nc)
    prod["agent"].update(
        {
            "libvirtUri": "qemu:///system",
            # mounted at /var/run/libvirt in the pod, where qemu:///system looks
            "libvirtSocketDir": str(host.socket.parent),
            "storage": "files",
            "nodeSelector": {"kubernetes.io/hostname": node},
        }
    )
    # A Host an earlier release's agent registered outlives `helm uninstall` (it is data,
    # not the chart's): start from none, so what is read below is this agent's report.
    nc.kubectl("delete", "hosts.kubenova.io", node, "--ignore-not-found")
    nc.helm.run(
        "install", RELEASE, str(CHART), "-n", NS, "--create-namespace",
        "-f", str(nc.helm.values_file(prod, "qemu.yaml")),
        cluster=nc.cluster,
    )  # fmt: skip
    try:
        yield nc, host
    finally:
        nc.helm.run("uninstall", RELEASE, "-n", NS, "--wait", cluster=nc.cluster, check=False)
        nc.kubectl("delete", "hosts.kubenova.io", node, "--ignore-not-found", check=False)


def test_agent_in_its_pod_reports_the_nodes_libvirtd_by_qemu_system(
    qemu_release: tuple[NodeCluster, PairHost],
) -> None:
    nc, host = qemu_release
    node = nc.node_names()[0]
    # What that libvirtd says of its machine, asked directly over the same socket.
    conn = libvirt.open(host.uri)
    try:
        cpus = conn.getInfo()[2]
    finally:
        conn.close()

    def reported() -> dict[str, Any] | None:
        got = nc.kubectl("get", "hosts.kubenova.io", node, "-o", "json", check=False)
        if got.returncode != 0:
            return None
        status: dict[str, Any] = json.loads(got.stdout).get("status", {})
        return status if status.get("hypervisor", "").lower().startswith("qemu") else None

    status = wait_for(f"Host {node} reported from qemu:///system", reported, 120, 1)
    assert status["capacity"]["cpus"] == cpus, status["capacity"]
    pods = nc.get("pods", "-n", NS, "-l", "app.kubernetes.io/component=agent")["items"]
    assert [p["spec"]["nodeName"] for p in pods] == [node]
    env = {e["name"]: e.get("value") for e in pods[0]["spec"]["containers"][0]["env"]}
    assert env["LIBVIRT_URI"] == "qemu:///system"
