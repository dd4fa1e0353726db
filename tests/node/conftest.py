"""Fixtures of the node layer: two real kubelets with containerd (`kubenova-dev node up`, in a
network namespace of their own), the image built from the Dockerfile and loaded into them, the
chart's helm, and a check at the end that `kubenova-dev node down` left nothing behind."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubenova.dev import cluster, node
from tests.chart.helm import Helm
from tests.conftest import ROOT
from tests.fixtures.cluster import LocalCluster

NODES = 2
IMAGE_TAG = "node-test"


@dataclass
class NodeCluster:
    """The session's nodes: their control plane (guarded like every test cluster), helm, and
    how long each step took (printed at the end of the session)."""

    cluster: LocalCluster
    layout: node.Layout
    helm: Helm
    image: str
    timings: dict[str, float] = field(default_factory=dict)

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return self.cluster.kubectl(*args, check=check, input=input)

    def get(self, *args: str) -> Any:
        return self.cluster.get(*args)

    def node_names(self) -> list[str]:
        return [self.layout.name(i) for i in range(1, NODES + 1)]


def _step(what: str, argv: list[str], env: dict[str, str], log: Path, timeout: float) -> float:
    """Run one set-up command, its output in `log`; fail with its end. Returns seconds."""
    started = time.monotonic()
    with log.open("w") as out:
        # A file, not a pipe: what `up` starts lives on and would hold a pipe open.
        proc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, env=env, timeout=timeout)
    if proc.returncode != 0:
        pytest.fail(f"{what} failed ({' '.join(argv)}):\n{log.read_text()[-4000:]}")
    return time.monotonic() - started


def leftovers(layout: node.Layout) -> list[str]:
    """Whatever of these nodes is still on the machine: processes, mounts, the network
    namespace, cgroups, state folders."""
    found = []
    marks = (str(layout.folder), str(layout.run))
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(m in cmd for m in marks):
            found.append(f"process {proc.name}: {cmd[:120]}")
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4]
        if point.startswith(marks):
            found.append(f"mount {point}")
    if layout.netns_path.exists():
        found.append(f"network namespace {layout.netns}")
    for c in Path("/sys/fs/cgroup").glob(f"*/kubenova-{layout.key}-node*"):
        found.append(f"cgroup {c}")
    found += [f"folder {p}" for p in (layout.folder, layout.run) if p.exists()]
    return found


@pytest.fixture(scope="session")
def node_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeCluster]:
    if os.geteuid() != 0:
        pytest.skip("the node layer needs root (namespaces, mounts, cgroups): run as root")
    missing = [t for t in (*node.TOOLS, "buildah", "debootstrap") if shutil.which(t) is None]
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: run hack/setup")
    logs = tmp_path_factory.mktemp("node-logs")
    folder = tmp_path_factory.mktemp("nodes")
    env = {**os.environ, "KUBENOVA_NODE_FOLDER": str(folder)}
    env.setdefault("KUBENOVA_NODE_BIN_DIR", str(node.node_binaries()))
    timings: dict[str, float] = {}
    layout = node.Layout(folder.resolve())
    dev = [sys.executable, "-m", "kubenova.dev.cli", "node"]
    timings["node up"] = _step(
        f"kubenova-dev node up --nodes {NODES}",
        [*dev, "up", "--nodes", str(NODES)],
        env,
        logs / "node-up.log",
        300,
    )
    try:
        plane = cluster.ControlPlane(layout.plane, cluster.ensure_binaries())
        tc = LocalCluster.guarded(plane)
        # hack/image: buildah with cached layers, loaded into KUBENOVA_NODE_FOLDER's nodes
        timings["image build + load"] = _step(
            "hack/image", [str(ROOT / "hack" / "image"), IMAGE_TAG], env, logs / "image.log", 900
        )
        helm = Helm(cluster.ensure_binaries() / "helm", tmp_path_factory.mktemp("helm"))
        nc = NodeCluster(tc, layout, helm, f"localhost/kubenova:{IMAGE_TAG}", timings)
        yield nc
    finally:
        started = time.monotonic()
        down = subprocess.run([*dev, "down"], capture_output=True, text=True, env=env, timeout=180)
        timings["node down"] = time.monotonic() - started
        print("\nnode layer timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
        assert down.returncode == 0, down.stderr
        left = leftovers(layout)
        assert not left, f"kubenova-dev node down left: {left}"


def values(nc: NodeCluster, **overrides: Any) -> dict[str, Any]:
    """The chart's values on these nodes: the built image, and agents on simulated hosts
    (libvirt's test:/// in the pod) with their hostPaths inside the node folder."""
    hostpaths = nc.layout.hostpaths
    repository, tag = nc.image.rsplit(":", 1)
    base: dict[str, Any] = {
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        "agent": {
            "libvirtUri": "test:///default",
            "storage": "none",
            "domainType": "qemu",
            "libvirtSocketDir": str(hostpaths / "libvirt"),
            "stateDir": str(hostpaths / "domains"),
            "imageDir": str(hostpaths / "images"),
            # examples/pools.yaml's general pool selects hosts by this label
            "hostLabels": {"kubenova.io/class": "general"},
        },
        # debug: the webhooks log each VM they charge to a quota
        "webhooks": {"logLevel": "debug"},
    }
    for key, value in overrides.items():
        base[key] = {**base.get(key, {}), **value}
    return base


def dump(docs: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(docs)
