"""The agent reports phase changes through the VM lifecycle state machine: a Running VM is
`Ready` (so `kubectl wait --for=condition=Ready` works), and its conditions, history and events
tell the same story. Real kubectl, real control plane, an agent on libvirt's test driver; the
operator's bind is done by hand (tests/e2e/bind.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kubenova.api import constants
from tests.e2e.bind import bind, flavor_yaml, vm, vm_yaml
from tests.fixtures.cluster import LocalCluster, wait_for
from tests.fixtures.libvirt import Agents, unique_host

pytestmark = [pytest.mark.e2e, pytest.mark.libvirt]


def _conditions(obj: dict[str, Any] | None) -> dict[str, str]:
    conds = (obj or {}).get("status", {}).get("conditions") or []
    return {c["type"]: c["status"] for c in conds}


def _with_phase(obj: dict[str, Any] | None, phase: str) -> dict[str, Any] | None:
    return obj if obj is not None and obj.get("status", {}).get("phase") == phase else None


def _agent_events(cluster: LocalCluster, ns: str, name: str) -> list[str]:
    listing = cluster.get("events", "-n", ns, "--field-selector", f"involvedObject.name={name}")
    return [
        e["reason"]
        for e in sorted(listing["items"], key=lambda e: e.get("firstTimestamp") or "")
        if (e.get("source") or {}).get("component") == "kubenova-agent"
    ]


def test_kubectl_wait_for_ready_succeeds_on_a_running_vm(
    test_cluster: LocalCluster, namespace: str, agents: Agents, test_host: Path
) -> None:
    host = unique_host()
    flavor = f"f-{namespace}"
    test_cluster.kubectl("apply", "-f", "-", input=flavor_yaml(flavor))
    agents.start(host, f"test://{test_host}")
    test_cluster.kubectl("apply", "-f", "-", input=vm_yaml("web-1", namespace, flavor))
    bind(test_cluster, namespace, "web-1", host)

    waited = test_cluster.kubectl(
        "wait", "--for=condition=Ready", "vm/web-1", "-n", namespace, "--timeout=60s", check=False
    )
    running = vm(test_cluster, namespace, "web-1")
    assert waited.returncode == 0, (waited.stderr, (running or {}).get("status"))
    assert running is not None and running["status"]["phase"] == "Running"
    assert _conditions(running) == {
        constants.COND_SCHEDULED: "True",
        constants.COND_RUNNING: "True",
        constants.COND_READY: "True",
    }
    history = running["status"]["history"]
    assert history[-1]["action"] == "Started" and history[-1]["actor"] == f"agent/{host}"
    assert wait_for(
        "a Started event from the agent",
        lambda: "Started" in _agent_events(test_cluster, namespace, "web-1"),
    )

    test_cluster.kubectl(
        "patch", "vm", "web-1", "-n", namespace, "--type=merge",
        "-p", '{"spec":{"runStrategy":"Halted"}}',
    )  # fmt: skip
    waited = test_cluster.kubectl(
        "wait", "--for=condition=Ready=false", "vm/web-1", "-n", namespace, "--timeout=60s",
        check=False,
    )  # fmt: skip
    assert waited.returncode == 0, waited.stderr
    stopped = wait_for(
        "web-1 Stopped",
        lambda: _with_phase(vm(test_cluster, namespace, "web-1"), "Stopped"),
    )
    assert _conditions(stopped)[constants.COND_RUNNING] == "False"
    actions = [h["action"] for h in stopped["status"]["history"]]
    assert actions[-1] == "Stopped", actions
    # One history entry per phase change, and an event for each of the agent's.
    changes = [h["action"] for h in stopped["status"]["history"] if h["actor"] == f"agent/{host}"]
    wait_for(
        f"the agent's events to be one per history entry it wrote, {changes}",
        lambda: sorted(_agent_events(test_cluster, namespace, "web-1")) == sorted(changes),
    )
