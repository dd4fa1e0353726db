"""Secrets (issue 13, item 7): cloud-init user data can come from a Secret in the VM's own
namespace (`cloudInit.userDataSecretRef`, as KubeVirt's), read by the VM's agent; it reaches
the guest's NoCloud seed and nothing else (no log line, event, condition or status), and the
seed is 0600 in a folder others cannot list. Real control plane; a real agent on test:/// that
builds real overlays and seeds."""

from __future__ import annotations

import base64
import json
import stat
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.bind import bind, vm
from tests.fixtures.cluster import LocalCluster, wait_for
from tests.fixtures.libvirt import AgentProcess, Agents
from tests.security import hostkit

pytestmark = [pytest.mark.apiserver, pytest.mark.libvirt, pytest.mark.e2e]


def _secret(namespace: str, name: str, data: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _everything_kubenova_wrote(tc: LocalCluster, namespace: str, agent: AgentProcess) -> str:
    """The agent's log, the events of the VM's namespace and of hosts, the VMs (statuses,
    conditions, history) and the Host: wherever a leak would show."""
    parts = [agent.log_text()]
    for ns in (namespace, "default"):
        parts.append(tc.kubectl("get", "events", "-n", ns, "-o", "json").stdout)
    parts.append(tc.kubectl("get", "vm", "-n", namespace, "-o", "json").stdout)
    parts.append(tc.kubectl("get", "hosts.kubenova.io", agent.host, "-o", "json").stdout)
    return "\n".join(parts)


@pytest.fixture
def host(agents: Agents, test_host: Path, tmp_path: Path) -> tuple[AgentProcess, Path]:
    """A real agent with an image store holding base.qcow2; its state folder."""
    state = tmp_path / "domains"
    return hostkit.start_agent(agents, test_host, hostkit.image_store(tmp_path), state), state


def test_user_data_from_a_secret_reaches_the_seed_and_nowhere_else(
    test_cluster: LocalCluster, namespace: str, host: tuple[AgentProcess, Path]
) -> None:
    agent, state = host
    marker = f"password-{uuid.uuid4().hex}"
    user_data = f"#cloud-config\nchpasswd: {{list: 'root:{marker}'}}\n"
    test_cluster.kubectl("apply", "-f", "-", input=json.dumps(
        _secret(namespace, "web-userdata", {"userdata": user_data})
    ))  # fmt: skip
    flavor = hostkit.new_flavor(test_cluster)
    ci = {"userDataSecretRef": {"name": "web-userdata"}}
    code, err = hostkit.apply(test_cluster, hostkit.vm_doc("web", namespace, flavor, cloudInit=ci))
    assert code == 0, err
    bind(test_cluster, namespace, "web", agent.host)
    hostkit.wait_phase(test_cluster, namespace, "web", "Running")

    folder = state / f"{namespace}_web"
    seed = folder / "seed.iso"
    assert marker.encode() in seed.read_bytes(), "the Secret's user data is in the seed"
    assert _mode(seed) == 0o600, oct(_mode(seed))
    assert _mode(folder / "root.qcow2") == 0o600, oct(_mode(folder / "root.qcow2"))
    assert _mode(folder) & 0o077 == 0o011, f"{oct(_mode(folder))}: others may not list it"
    leaked = _everything_kubenova_wrote(test_cluster, namespace, agent)
    assert marker not in leaked, "user data leaked into a log, event, status or the Host"
    assert agent.alive(), agent.log_text()[-3000:]


def test_an_inline_seed_is_private_too(
    test_cluster: LocalCluster, namespace: str, host: tuple[AgentProcess, Path]
) -> None:
    agent, state = host
    flavor = hostkit.new_flavor(test_cluster)
    ci = {"userData": "#cloud-config\nhostname: web\n"}
    code, err = hostkit.apply(test_cluster, hostkit.vm_doc("web", namespace, flavor, cloudInit=ci))
    assert code == 0, err
    bind(test_cluster, namespace, "web", agent.host)
    hostkit.wait_phase(test_cluster, namespace, "web", "Running")
    seed = state / f"{namespace}_web" / "seed.iso"
    assert _mode(seed) == 0o600, f"seed.iso is {oct(_mode(seed))}"


def test_a_missing_secret_fails_the_vm_naming_it_and_creates_nothing(
    test_cluster: LocalCluster, namespace: str, host: tuple[AgentProcess, Path]
) -> None:
    agent, state = host
    flavor = hostkit.new_flavor(test_cluster)
    ci = {"userDataSecretRef": {"name": "later"}}
    code, err = hostkit.apply(test_cluster, hostkit.vm_doc("web", namespace, flavor, cloudInit=ci))
    assert code == 0, err
    bind(test_cluster, namespace, "web", agent.host)
    failed = hostkit.wait_phase(test_cluster, namespace, "web", "Failed")
    assert failed["reason"] == (
        f"VM {namespace}/web: spec.cloudInit.userDataSecretRef: Secret 'later' does not exist "
        f"in namespace {namespace}; create it with the user data under the key userdata"
    )
    assert not failed.get("domainUUID")
    assert not (state / f"{namespace}_web").exists(), "nothing was created on the host"
    assert hostkit.host_domains(test_cluster, agent.host) in (0, None)

    # A Secret with the wrong key is named too; with the right one the VM runs (the agent
    # retries with back-off).
    secret = _secret(namespace, "later", {"user-data": "#cloud-config\n"})
    test_cluster.kubectl("apply", "-f", "-", input=json.dumps(secret))
    wait_for("the reason to name the missing key", lambda: "has no key userdata or userData" in (
        hostkit.status(test_cluster, namespace, "web").get("reason") or ""
    ))  # fmt: skip
    secret["data"] = {"userData": base64.b64encode(b"#cloud-config\n").decode()}
    test_cluster.kubectl("apply", "-f", "-", input=json.dumps(secret))
    hostkit.wait_phase(test_cluster, namespace, "web", "Running")
    assert (state / f"{namespace}_web" / "seed.iso").is_file()


@pytest.mark.parametrize(
    ("cloud_init", "says"),
    [
        (
            {"userDataSecretRef": {"name": "theirs", "namespace": "kube-system"}},
            'unknown field "spec.cloudInit.userDataSecretRef.namespace"',
        ),
        ({"userDataSecretRef": {"name": "../kube-system/x"}}, "must be a plain name"),
        (
            {"userData": "#cloud-config\n", "userDataSecretRef": {"name": "x"}},
            "set at most one of userData and userDataSecretRef",
        ),
    ],
)
def test_a_secret_outside_the_vms_namespace_cannot_be_named(
    test_cluster: LocalCluster, namespace: str, cloud_init: dict[str, Any], says: str
) -> None:
    doc = hostkit.vm_doc("web", namespace, "any", cloudInit=cloud_init)
    code, err = hostkit.apply(test_cluster, doc)
    assert code != 0
    assert says in err, err
    assert vm(test_cluster, namespace, "web") is None
