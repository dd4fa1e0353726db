"""The node agent end to end: real control plane, agent processes on libvirt's test driver,
the operator's part played by the test (tests/e2e/bind.py)."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from kubenova.api import constants
from kubenova.dev import faults
from kubenova.dev.cluster import free_port
from tests.e2e.bind import bind, flavor_yaml, phase, vm, vm_yaml
from tests.fixtures.cluster import LocalCluster, wait_for
from tests.fixtures.faultproxy import Proxy
from tests.fixtures.libvirt import Agents, unique_host

pytestmark = [pytest.mark.e2e, pytest.mark.libvirt]


def _host(cluster: LocalCluster, name: str) -> dict[str, Any] | None:
    proc = cluster.kubectl("get", "hosts.kubenova.io", name, "-o", "json", check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def _scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def _phase_is(cluster: LocalCluster, ns: str, name: str, want: str) -> bool:
    return phase(cluster, ns, name) == want


def test_vm_runs_stops_and_is_deleted_with_its_domain(
    test_cluster: LocalCluster, namespace: str, agents: Agents, test_host: Path
) -> None:
    host = unique_host()
    flavor = f"f-{namespace}"
    test_cluster.kubectl("apply", "-f", "-", input=flavor_yaml(flavor, vcpus=2))
    port = free_port()
    agent = agents.start(
        host, f"test://{test_host}", KUBENOVA_HOST_LABELS="kubenova.io/rack=r1",
        KUBENOVA_HOST_DISK="2Ti", KUBENOVA_METRICS_PORT=str(port),
    )  # fmt: skip

    def reported() -> dict[str, Any] | None:
        h = _host(test_cluster, host)
        return h if h and h.get("status", {}).get("capacity", {}).get("cpus") else None

    registered = wait_for("the Host with capacity", reported)
    assert registered["metadata"]["labels"] == {
        constants.LABEL_HOSTNAME: host,
        constants.LABEL_RACK: "r1",
    }
    capacity = registered["status"]["capacity"]
    assert (capacity["cpus"], capacity["memory"], capacity["disk"]) == (64, "256Gi", "2Ti")
    assert [g["model"] for g in capacity["gpus"]] == ["nvidia-a100", "nvidia-a100"]
    assert registered["status"]["agentVersion"]
    lease = test_cluster.get("lease", f"kubenova-host-{host}", "-n", namespace)
    assert lease["spec"]["holderIdentity"] == host

    nic = [{"name": "eth0", "network": "default"}]
    test_cluster.kubectl(
        "apply", "-f", "-", input=vm_yaml("web-1", namespace, flavor, networks=nic)
    )
    bind(test_cluster, namespace, "web-1", host)
    wait_for("web-1 Running", lambda: _phase_is(test_cluster, namespace, "web-1", "Running"))
    running = vm(test_cluster, namespace, "web-1")
    assert running is not None
    assert running["status"]["domainUUID"] == running["metadata"]["uid"]
    assert running["status"]["ip"].startswith("192.168.122."), "the test network's lease"
    assert running["status"]["addresses"] == [running["status"]["ip"]]
    assert [h["action"] for h in running["status"]["history"]][-1] == "Started"
    assert {h["actor"] for h in running["status"]["history"]} == {f"agent/{host}"}
    wait_for("the Host to count the domain", lambda: (
        (_host(test_cluster, host) or {}).get("status", {}).get("domains") == 1
    ))  # fmt: skip
    metrics = _scrape(port)
    assert metrics[f'kubenova_agent_domains{{host="{host}",state="running"}}'] == 1
    assert metrics[f'kubenova_agent_heartbeat_age_seconds{{host="{host}"}}'] < 10
    assert metrics[f'kubenova_agent_libvirt_call_seconds_count{{call="define",host="{host}"}}'] >= 1

    test_cluster.kubectl(
        "patch", "vm", "web-1", "-n", namespace, "--type=merge",
        "-p", '{"spec":{"runStrategy":"Halted"}}',
    )  # fmt: skip
    wait_for("web-1 Stopped", lambda: _phase_is(test_cluster, namespace, "web-1", "Stopped"))

    test_cluster.kubectl("delete", "vm", "web-1", "-n", namespace, "--timeout=30s")
    assert vm(test_cluster, namespace, "web-1") is None
    wait_for("the Host to count no domain", lambda: (
        (_host(test_cluster, host) or {}).get("status", {}).get("domains") == 0
    ))  # fmt: skip
    assert agent.alive(), agent.log_text()[-3000:]


def test_the_agent_only_watches_vms_bound_to_its_host(
    test_cluster: LocalCluster, namespace: str, agents: Agents, test_host: Path
) -> None:
    mine, other = unique_host(), unique_host()
    flavor = f"f-{namespace}"
    test_cluster.kubectl("apply", "-f", "-", input=flavor_yaml(flavor))
    agent = agents.start(mine, f"test://{test_host}")
    test_cluster.kubectl("apply", "-f", "-", input=vm_yaml("elsewhere", namespace, flavor))
    test_cluster.kubectl("apply", "-f", "-", input=vm_yaml("here", namespace, flavor))
    bind(test_cluster, namespace, "elsewhere", other)
    bind(test_cluster, namespace, "here", mine)
    wait_for("here Running", lambda: _phase_is(test_cluster, namespace, "here", "Running"))
    assert phase(test_cluster, namespace, "elsewhere") == "Scheduled"
    assert f"status.host={mine}" in agent.log_text()


def test_a_vm_whose_flavor_is_missing_fails_naming_the_flavor(
    test_cluster: LocalCluster, namespace: str, agents: Agents, test_host: Path
) -> None:
    host = unique_host()
    agents.start(host, f"test://{test_host}")
    test_cluster.kubectl("apply", "-f", "-", input=vm_yaml("lost", namespace, f"none-{namespace}"))
    bind(test_cluster, namespace, "lost", host)
    wait_for("lost Failed", lambda: _phase_is(test_cluster, namespace, "lost", "Failed"))
    failed = vm(test_cluster, namespace, "lost")
    assert failed is not None
    assert f"spec.flavor 'none-{namespace}' does not exist" in failed["status"]["reason"]
    test_cluster.kubectl("delete", "vm", "lost", "-n", namespace, "--timeout=30s")


def test_an_agent_that_starts_while_the_api_server_fails_waits_for_it(
    test_cluster: LocalCluster, agents: Agents, test_host: Path, fault_proxy: Proxy
) -> None:
    # Seen in a chaos run: the API server restarted while a freshly started agent process was
    # still registering its Host; the start-up gave up after its retries and the process
    # exited. An agent waits for the API server at start, as the kubelet does.
    fault_proxy.rules(
        faults.Rule(faults.Fault.UNAVAILABLE, resources=frozenset({"hosts"}), times=14)
    )
    host = unique_host()
    agent = agents.start(host, f"test://{test_host}", KUBECONFIG=str(fault_proxy.kubeconfig()))

    def registered() -> bool:
        out = test_cluster.kubectl("get", "hosts.kubenova.io", host, check=False)
        return out.returncode == 0

    wait_for("the Host registered once the faults ran out", registered, timeout=120)
    assert fault_proxy.counts().get("503", 0) == 14, fault_proxy.counts()
    assert agent.alive(), agent.log_text()[-3000:]
