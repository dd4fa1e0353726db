"""The real node agent under the chart's confinement: with a token bound to its node (from
the TokenRequest API, as its DaemonSet pod gets it) and nothing else, it registers its Host,
heartbeats, runs a VM to Running, clears its fencing confirmation and releases the VM's
finalizer when it is deleted. The policy that refuses everything else refuses none of this."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubenova.api import constants
from tests.e2e.bind import bind, flavor_yaml, phase, vm, vm_yaml
from tests.fixtures.cluster import LocalCluster, wait_for
from tests.fixtures.identities import (
    Policies,
    chart_policies,
    in_force,
    policy_helm,
    service_account_token,
    token_client,
    token_kubeconfig,
)
from tests.fixtures.libvirt import Agents, unique_host

__all__ = ["chart_policies", "policy_helm"]  # fixtures used by name

pytestmark = [pytest.mark.e2e, pytest.mark.libvirt]

POLICY_VALUES = {"agent": {"hostLabels": {constants.LABEL_RACK: "r1"}}}


def test_the_agent_does_its_whole_job_within_the_confinement(
    test_cluster: LocalCluster,
    chart_policies: Policies,
    agents: Agents,
    namespace: str,
    test_host: Path,
    tmp_path: Path,
) -> None:
    tc, p = test_cluster, chart_policies
    host = unique_host()
    token = service_account_token(tc, p.namespace, p.account("agent"), host)
    probe = token_client(tc, p.user("agent"), token)
    in_force(
        "the agent-confinement policy",
        lambda: probe.create("hosts", {"apiVersion": constants.API_VERSION, "kind": "Host",
                                       "metadata": {"name": f"{host}-x"}}, dry_run=True),
        f"may write only Host {host}",
    )  # fmt: skip
    kubeconfig = token_kubeconfig(tc, token, tmp_path / "agent.kubeconfig")
    agent = agents.start(
        host, f"test://{test_host}", KUBECONFIG=str(kubeconfig),
        KUBENOVA_NAMESPACE=p.namespace, KUBENOVA_HOST_LABELS=f"{constants.LABEL_RACK}=r1",
    )  # fmt: skip

    def registered() -> bool:
        proc = tc.kubectl(
            "get", "host", host, "-o", "jsonpath={.status.capacity.cpus}", check=False
        )
        return proc.stdout.strip() == "64"

    wait_for("the agent to register and report its Host", registered)
    assert tc.get("host", host)["metadata"]["labels"] == {
        constants.LABEL_HOSTNAME: host, constants.LABEL_RACK: "r1",
    }  # fmt: skip
    wait_for("its heartbeat Lease", lambda: tc.kubectl(
        "get", "lease", "-n", p.namespace, f"kubenova-host-{host}", check=False
    ).returncode == 0)  # fmt: skip

    flavor = f"f-{namespace}"
    tc.kubectl("apply", "-f", "-", input=flavor_yaml(flavor))
    tc.kubectl("apply", "-f", "-", input=vm_yaml("web", namespace, flavor))
    bind(tc, namespace, "web", host)
    wait_for("web Running", lambda: phase(tc, namespace, "web") == "Running")

    tc.kubectl("annotate", "host", host, f"{constants.ANNOTATION_FENCED}=true")
    wait_for("the agent to clear its fencing confirmation", lambda: constants.ANNOTATION_FENCED
             not in tc.get("host", host)["metadata"].get("annotations", {}))  # fmt: skip

    tc.kubectl("delete", "vm", "-n", namespace, "web", "--wait=false")
    wait_for("the agent to release web's finalizer", lambda: vm(tc, namespace, "web") is None)
    assert agent.alive()
    assert "denied request" not in agent.log_text()

    # An admin moves the host to another rack; a restarted agent keeps the admin's value.
    tc.kubectl("label", "host", host, f"{constants.LABEL_RACK}=r9", "--overwrite")
    agent.stop()
    again = agents.start(
        host, f"test://{test_host}", KUBECONFIG=str(kubeconfig),
        KUBENOVA_NAMESPACE=p.namespace, KUBENOVA_HOST_LABELS=f"{constants.LABEL_RACK}=r1",
    )  # fmt: skip
    wait_for("the restarted agent to keep its Host's labels", lambda: "keeps the labels"
             in again.log_text())  # fmt: skip
    assert tc.get("host", host)["metadata"]["labels"][constants.LABEL_RACK] == "r9"
    assert again.alive() and "denied request" not in again.log_text()
