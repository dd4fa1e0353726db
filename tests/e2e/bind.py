"""What the operator does to a VM before its agent acts, done by hand (the contract of
docs/architecture.md): the finalizer (the webhook's, at create), then status.host and phase
Scheduled (the bind, which the agent's field selector follows)."""

from __future__ import annotations

import json
from typing import Any

from kubenova.api import constants
from tests.fixtures.cluster import LocalCluster


def vm_yaml(name: str, namespace: str, flavor: str, run: str = "Always", **spec: Any) -> str:
    body = {
        "apiVersion": constants.API_VERSION,
        "kind": "VirtualMachine",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"flavor": flavor, "boot": {"image": "debian-12.qcow2"}, "runStrategy": run} | spec,
    }
    return json.dumps(body)


def flavor_yaml(name: str, vcpus: int = 1, memory: str = "512Mi") -> str:
    body = {
        "apiVersion": constants.API_VERSION,
        "kind": "Flavor",
        "metadata": {"name": name},
        "spec": {"vcpus": vcpus, "memory": memory, "disk": "1Gi"},
    }
    return json.dumps(body)


def bind(cluster: LocalCluster, namespace: str, name: str, host: str) -> None:
    meta = {"metadata": {"finalizers": [constants.VM_FINALIZER]}}
    cluster.kubectl("patch", "vm", name, "-n", namespace, "--type=merge", "-p", json.dumps(meta))
    status = {"status": {"host": host, "phase": "Scheduled"}}
    cluster.kubectl(
        "patch", "vm", name, "-n", namespace, "--subresource=status", "--type=merge",
        "-p", json.dumps(status),
    )  # fmt: skip


def vm(cluster: LocalCluster, namespace: str, name: str) -> dict[str, Any] | None:
    proc = cluster.kubectl("get", "vm", name, "-n", namespace, "-o", "json", check=False)
    if proc.returncode != 0:
        return None
    found: dict[str, Any] = json.loads(proc.stdout)
    return found


def phase(cluster: LocalCluster, namespace: str, name: str) -> str | None:
    obj = vm(cluster, namespace, name)
    found = (obj or {}).get("status", {}).get("phase")
    return str(found) if found is not None else None
