"""Runs the control plane's helm against the chart: rendering needs no cluster, installing
goes through the session's guard first."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import ROOT
from tests.fixtures.cluster import LocalCluster, assert_test_cluster

CHART = ROOT / "charts" / "kubenova"
# helm built from source assumes Kubernetes v1.20 when it renders without a cluster; the
# chart needs 1.31, and the test control plane runs this release.
KUBE_VERSION = "1.34.3"

# Values that switch on every optional part and change every knob a template reads.
CUSTOM_VALUES: dict[str, Any] = {
    "image": {"repository": "registry.example/kubenova", "tag": "1.2.3", "pullPolicy": "Always"},
    "imagePullSecrets": [{"name": "pull"}],
    "operator": {"replicas": 5, "metricsPort": 9090, "nodeSelector": {"role": "control"}},
    "agent": {
        "libvirtUri": "test:///default",
        "domainType": "qemu",
        "storage": "none",
        "hostLabels": {"zone": "a", "rack": "r1"},
        "hostDisk": "4Ti",
        "tolerations": [{"key": "hypervisor", "operator": "Exists", "effect": "NoSchedule"}],
    },
    "webhooks": {
        "replicas": 3,
        "timeoutSeconds": 5,
        "logLevel": "debug",
        "quotaReservation": 16,
        "rateLimits": {"namespaceCreates": "10/20", "clusterUpdates": "off"},
        "quotaReleaseLoop": False,
    },
    "certManager": {"enabled": True},
    "flowControl": {"priorityLevels": {"agents": "system"}},
    "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
    "dashboards": {"labels": {"grafana_dashboard": "1", "team": "platform"}},
}


@dataclass
class Helm:
    binary: Path
    home: Path
    """XDG homes for helm's cache and config, so tests leave the user's alone."""

    def run(
        self, *args: str, cluster: LocalCluster | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        argv = [str(self.binary), *args]
        if cluster is not None:
            assert_test_cluster(cluster, cluster.kubeconfig)
            argv.append(f"--kubeconfig={cluster.kubeconfig}")
        env = {
            "HOME": str(self.home),
            "HELM_CACHE_HOME": str(self.home / "cache"),
            "HELM_CONFIG_HOME": str(self.home / "config"),
            "HELM_DATA_HOME": str(self.home / "data"),
            "PATH": "/usr/bin:/bin",
        }
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
        if check and proc.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed:\n{proc.stderr}{proc.stdout}")
        return proc

    def values_file(self, values: dict[str, Any], name: str = "values.yaml") -> Path:
        path = self.home / name
        path.write_text(yaml.safe_dump(values))
        return path

    def template(
        self, release: str, namespace: str, values: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        args = ["template", release, str(CHART), "-n", namespace, "--kube-version", KUBE_VERSION]
        if values:
            args += ["-f", str(self.values_file(values))]
        out = self.run(*args).stdout
        return [d for d in yaml.safe_load_all(out) if d]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str, name_suffix: str = "") -> dict[str, Any]:
    found = [d for d in by_kind(docs, kind) if d["metadata"]["name"].endswith(name_suffix)]
    assert len(found) == 1, f"expected one {kind} named *{name_suffix}, got {len(found)}"
    return found[0]
