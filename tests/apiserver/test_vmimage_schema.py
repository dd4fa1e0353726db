"""The VMImage CRD against the real API server: bad sources are refused with their message
and change nothing, the spec is immutable, and `kubectl get vmimages` prints the status."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest

from tests.fixtures.cluster import LocalCluster

pytestmark = pytest.mark.apiserver

SHA = "c" * 64


@pytest.fixture
def name(test_cluster: LocalCluster) -> Iterator[str]:
    n = f"img-{uuid.uuid4().hex[:8]}"
    yield n
    test_cluster.kubectl("delete", "vmimages.kubenova.io", n, "--ignore-not-found", "--wait=false")


def _apply(cluster: LocalCluster, name: str, spec: dict[str, object]) -> tuple[int, str]:
    body = {"apiVersion": "kubenova.io/v1alpha1", "kind": "VMImage", "metadata": {"name": name}}
    proc = cluster.kubectl(
        "apply", "-f", "-", input=json.dumps({**body, "spec": spec}), check=False
    )
    return proc.returncode, proc.stderr


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ({"url": "file:///etc/shadow", "sha256": SHA}, "spec.url: Invalid value"),
        ({"url": "ftp://x.example/a.qcow2", "sha256": SHA}, "must be an http:// or https:// URL"),
        ({"url": "https://x.example/a.qcow2"}, "sha256 is required with url"),
        ({"url": "https://x.example/a.qcow2", "sha256": "abc"}, "64 lower-case hex digits"),
        ({"sha256": SHA}, "set exactly one of url (a disk image) or kernel"),
        (
            {"url": "https://x.example/a", "sha256": SHA, "format": "vmdk"},
            "spec.format: Unsupported",
        ),
    ],
)
def test_bad_sources_are_refused_with_their_message(
    test_cluster: LocalCluster, name: str, spec: dict[str, object], says: str
) -> None:
    code, err = _apply(test_cluster, name, spec)
    assert code != 0 and says in err, err
    gone = test_cluster.kubectl("get", "vmimages.kubenova.io", name, check=False)
    assert gone.returncode != 0, "nothing was created"


def test_the_spec_is_immutable_and_kubectl_get_prints_the_status(
    test_cluster: LocalCluster, name: str
) -> None:
    spec: dict[str, object] = {"url": "https://images.example/deb.qcow2", "sha256": SHA}
    assert _apply(test_cluster, name, spec) == (0, "")
    code, err = _apply(test_cluster, name, {**spec, "url": "https://elsewhere.example/x.qcow2"})
    assert code != 0 and "spec: Invalid value" in err and "is immutable" in err, err
    status = {"status": {"phase": "Ready", "size": 4096, "hostCount": 2, "reason": "Imported"}}
    test_cluster.kubectl(
        "patch", "vmimages.kubenova.io", name, "--subresource=status", "--type=merge",
        "-p", json.dumps(status),
    )  # fmt: skip
    out = test_cluster.kubectl("get", "vmimages", name, "-o", "wide").stdout
    header, row = out.splitlines()
    assert header.split() == ["NAME", "PHASE", "FORMAT", "SIZE", "HOSTS", "AGE", "REASON", "URL"]
    fields = row.split()
    assert fields[:5] == [name, "Ready", "qcow2", "4096", "2"]
    assert fields[-2:] == ["Imported", "https://images.example/deb.qcow2"]
    got = test_cluster.get("vmimages.kubenova.io", name)
    assert got["spec"]["url"] == "https://images.example/deb.qcow2"
