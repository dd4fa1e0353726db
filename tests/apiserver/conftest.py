"""Fixtures for tests against the real local control plane: one control plane per test
session, a fresh namespace per test, and a guard that refuses any cluster but the test one."""

from __future__ import annotations

import os
import secrets
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubenova.dev import cluster

GUARD_CONFIGMAP = "kubenova-test-cluster"


@dataclass
class LocalCluster:
    """The session's control plane and the token that proves a kubeconfig points at it."""

    plane: cluster.ControlPlane
    token: str

    @property
    def kubeconfig(self) -> Path:
        return self.plane.kubeconfig

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        assert_test_cluster(self, self.kubeconfig)
        return self.plane.kubectl(*args, check=check, input=input)

    def get(self, *args: str) -> Any:
        return yaml.safe_load(self.kubectl("get", "-o", "yaml", *args).stdout)


def assert_test_cluster(tc: LocalCluster, kubeconfig: Path) -> None:
    """Refuse to touch a cluster unless its kubeconfig is this session's and the API server
    behind it holds this session's random token."""
    config = yaml.safe_load(kubeconfig.read_text())
    servers = [c["cluster"]["server"] for c in config.get("clusters", [])]
    if config.get("current-context") != cluster.CONTEXT or not all(
        s.startswith("https://127.0.0.1:") for s in servers
    ):
        pytest.fail(f"refusing kubeconfig {kubeconfig}: not a kubenova test cluster ({servers})")
    if kubeconfig.resolve() != tc.plane.kubeconfig.resolve():
        pytest.fail(f"refusing kubeconfig {kubeconfig}: not this session's test cluster")
    proc = tc.plane.kubectl(
        "get",
        "configmap",
        "-n",
        "kube-system",
        GUARD_CONFIGMAP,
        "-o",
        "jsonpath={.data.token}",
        check=False,
    )
    if proc.stdout != tc.token:
        pytest.fail(f"refusing {servers}: the test-cluster token does not match")


@pytest.fixture(scope="session")
def test_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    bin_dir = cluster.ensure_binaries()
    folder = tmp_path_factory.mktemp("controlplane")
    # die_with_parent: a killed pytest takes its control plane with it.
    plane = cluster.ControlPlane(folder, bin_dir, die_with_parent=True)
    plane.up()
    token = secrets.token_hex(16)
    plane.kubectl(
        "create", "configmap", "-n", "kube-system", GUARD_CONFIGMAP, f"--from-literal=token={token}"
    )
    saved = os.environ.get("KUBECONFIG")
    os.environ["KUBECONFIG"] = str(plane.kubeconfig)
    try:
        yield LocalCluster(plane, token)
    finally:
        if saved is None:
            os.environ.pop("KUBECONFIG", None)
        else:
            os.environ["KUBECONFIG"] = saved
        stopped = plane.down(remove=True)
        assert set(stopped) == {"etcd", "kube-apiserver", "kube-controller-manager"}, stopped


@pytest.fixture
def namespace(test_cluster: LocalCluster) -> Iterator[str]:
    """A fresh namespace, deleted (without waiting) after the test."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    test_cluster.kubectl("create", "namespace", name)
    yield name
    test_cluster.kubectl("delete", "namespace", name, "--wait=false")
