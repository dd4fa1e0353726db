"""What the host-facing security tests share (tests/security/test_host_*.py): manifests, an
image store with real qcow2 files, and a real node agent on libvirt's test driver that manages
files (overlays and seeds are real; the machines are simulated)."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kubenova.api import constants
from tests.e2e.bind import vm
from tests.fixtures.cluster import LocalCluster, wait_for
from tests.fixtures.libvirt import AgentProcess, Agents, unique_host
from tests.fixtures.webhook import Webhook

BASE_IMAGE = "base.qcow2"
"""The one good image in `image_store`."""


def apply(tc: LocalCluster, doc: dict[str, Any]) -> tuple[int, str]:
    """`kubectl apply` of one object: the exit code and stderr on one line."""
    proc = tc.kubectl("apply", "-f", "-", input=json.dumps(doc), check=False)
    return proc.returncode, " ".join(proc.stderr.split())


def vm_doc(name: str, namespace: str, flavor: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": constants.API_VERSION,
        "kind": "VirtualMachine",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"flavor": flavor, "boot": {"image": BASE_IMAGE}, **spec},
    }


def flavor_doc(name: str) -> dict[str, Any]:
    return {
        "apiVersion": constants.API_VERSION,
        "kind": "Flavor",
        "metadata": {"name": name},
        "spec": {"vcpus": 1, "memory": "256Mi", "disk": "1Gi"},
    }


def pool_doc(name: str, networks: list[str], namespaces: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": constants.API_VERSION,
        "kind": "ResourcePool",
        "metadata": {"name": name},
        "spec": {"hostSelector": {}, "networks": networks, "namespaces": namespaces},
    }


def new_flavor(tc: LocalCluster) -> str:
    name = f"sec-{uuid.uuid4().hex[:8]}"
    code, err = apply(tc, flavor_doc(name))
    assert code == 0, err
    return name


@pytest.fixture
def flavor(test_cluster: LocalCluster, webhook: Webhook) -> Iterator[str]:
    """A flavor of the test's own (import it into the module: `from tests.security.hostkit
    import flavor`)."""
    name = new_flavor(test_cluster)
    yield name
    test_cluster.kubectl(
        "delete", "flavor", name, "--ignore-not-found", "--wait=false", check=False
    )


def qcow2(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "64M"], check=True)
    return path


def image_store(root: Path) -> Path:
    """An image store holding one real base image, `BASE_IMAGE`."""
    store = root / "images"
    qcow2(store / BASE_IMAGE)
    return store


def start_agent(agents: Agents, test_host: Path, store: Path, state: Path) -> AgentProcess:
    """A real agent on `test:///` that creates overlays and seeds (KUBENOVA_STORAGE=files)."""
    return agents.start(
        unique_host("sec"),
        f"test://{test_host}",
        KUBENOVA_STORAGE="files",
        KUBENOVA_IMAGE_DIR=str(store),
        KUBENOVA_STATE_DIR=str(state),
    )


def status(tc: LocalCluster, namespace: str, name: str) -> dict[str, Any]:
    obj = vm(tc, namespace, name)
    assert obj is not None, f"VM {namespace}/{name} is gone"
    found: dict[str, Any] = obj.get("status", {})
    return found


def wait_phase(tc: LocalCluster, namespace: str, name: str, phase: str) -> dict[str, Any]:
    """The VM's status once it reached `phase`."""

    seen: dict[str, Any] = {}

    def reached() -> dict[str, Any] | None:
        seen.update(status(tc, namespace, name))
        return seen if seen.get("phase") == phase else None

    try:
        found: dict[str, Any] = wait_for(f"{namespace}/{name} {phase}", reached, timeout=60)
    except BaseException as e:  # pytest's Failed is no Exception
        raise AssertionError(f"{namespace}/{name} never became {phase}; status: {seen}") from e
    return found


def host_domains(tc: LocalCluster, host: str) -> int | None:
    """How many domains the host's agent reports (None before its first report)."""
    proc = tc.kubectl("get", "hosts.kubenova.io", host, "-o", "json", check=False)
    if proc.returncode != 0:
        return None
    found = json.loads(proc.stdout).get("status", {}).get("domains")
    return int(found) if found is not None else None
