"""Rate limits through kubectl (per namespace and for the cluster, creates and updates) and the
metrics they leave behind. Each test restarts the webhook with its limits and restores the
session's limits after."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator, Sequence

import pytest
import yaml

from tests.fixtures.cluster import LocalCluster
from tests.fixtures.webhook import TEST_LABEL, Webhook, vm_manifest

pytestmark = pytest.mark.apiserver


@pytest.fixture(scope="module")
def flavor(test_cluster: LocalCluster, webhook: Webhook) -> str:
    name = f"r-{uuid.uuid4().hex[:8]}"
    doc = {
        "apiVersion": "kubenova.io/v1alpha1",
        "kind": "Flavor",
        "metadata": {"name": name},
        "spec": {"vcpus": 1, "memory": "1Gi"},
    }
    test_cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))
    return name


def _limited(webhook: Webhook, limits: Sequence[str]) -> Iterator[Webhook]:
    normal = list(webhook.limits)
    webhook.restart([*normal, *limits])
    try:
        yield webhook
    finally:
        webhook.restart(normal)


@pytest.fixture
def creates_3_per_namespace(webhook: Webhook) -> Iterator[Webhook]:
    # 0.01/s: no token comes back during the test.
    yield from _limited(webhook, ["--namespace-creates=0.01/3"])


@pytest.fixture
def creates_4_in_the_cluster(webhook: Webhook) -> Iterator[Webhook]:
    yield from _limited(webhook, ["--namespace-creates=off", "--cluster-creates=0.01/4"])


@pytest.fixture
def updates_2_per_namespace(webhook: Webhook) -> Iterator[Webhook]:
    yield from _limited(webhook, ["--namespace-updates=0.01/2"])


def _create(tc: LocalCluster, ns: str, name: str, flavor: str) -> tuple[int, str]:
    doc = yaml.safe_dump(vm_manifest(name, ns, flavor))
    proc = tc.kubectl("create", "-f", "-", input=doc, check=False)
    return proc.returncode, " ".join(proc.stderr.split())


def _labelled_namespace(tc: LocalCluster) -> str:
    name = f"w-{uuid.uuid4().hex[:10]}"
    tc.kubectl("create", "namespace", name)
    tc.kubectl("label", "namespace", name, f"{TEST_LABEL}=true")
    return name


def test_creates_beyond_a_namespaces_burst_are_denied_with_the_limit(
    test_cluster: LocalCluster, creates_3_per_namespace: Webhook, wh_namespace: str, flavor: str
) -> None:
    results = [_create(test_cluster, wh_namespace, f"vm-{i}", flavor) for i in range(5)]
    assert [code for code, _ in results[:3]] == [0, 0, 0]
    for code, err in results[3:]:
        assert code != 0
        assert "Error from server (TooManyRequests)" in err
        assert f"RateLimited: VirtualMachine {wh_namespace}/vm-" in err
        assert f"rate limit for creates in namespace {wh_namespace} reached" in err
        assert "(0.01/s with bursts of 3); retry in" in err
    other = _labelled_namespace(test_cluster)
    try:
        assert _create(test_cluster, other, "elsewhere", flavor)[0] == 0, "namespaces are apart"
    finally:
        test_cluster.kubectl("delete", "namespace", other, "--wait=false")
    metrics = creates_3_per_namespace.metrics()
    denied = re.search(
        r'kubenova_webhook_denials_total\{kind="VirtualMachine",reason="RateLimited"\} (\S+)',
        metrics,
    )
    assert denied is not None and float(denied.group(1)) == 2.0
    count = re.search(
        r'kubenova_webhook_admission_seconds_count\{kind="VirtualMachine",operation="CREATE",'
        r'webhook="validate"\} (\S+)',
        metrics,
    )
    assert count is not None and float(count.group(1)) == 6.0


def test_the_cluster_bucket_spans_namespaces(
    test_cluster: LocalCluster, creates_4_in_the_cluster: Webhook, wh_namespace: str, flavor: str
) -> None:
    other = _labelled_namespace(test_cluster)
    try:
        codes = [
            _create(test_cluster, ns, f"vm-{i}", flavor)[0]
            for ns in (wh_namespace, other)
            for i in range(2)
        ]
        assert codes == [0, 0, 0, 0]
        code, err = _create(test_cluster, other, "fifth", flavor)
        assert code != 0
        assert "rate limit for creates in cluster reached (0.01/s with bursts of 4)" in err
    finally:
        test_cluster.kubectl("delete", "namespace", other, "--wait=false")


def test_spec_updates_are_limited_and_metadata_changes_are_not(
    test_cluster: LocalCluster, updates_2_per_namespace: Webhook, wh_namespace: str, flavor: str
) -> None:
    assert _create(test_cluster, wh_namespace, "vm", flavor)[0] == 0
    ns = ["-n", wh_namespace]

    def prio(p: int) -> tuple[int, str]:
        proc = test_cluster.kubectl(
            "patch",
            "vm",
            "vm",
            *ns,
            "--type=merge",
            "-p",
            f'{{"spec":{{"priority":{p}}}}}',
            check=False,
        )
        return proc.returncode, " ".join(proc.stderr.split())

    assert [prio(1)[0], prio(2)[0]] == [0, 0]
    code, err = prio(3)
    assert code != 0
    assert "rate limit for updates in namespace" in err
    # Labels and annotations are bookkeeping (the scheduler's bind, the release loop).
    for i in range(3):
        test_cluster.kubectl("label", "vm", "vm", *ns, "--overwrite", f"note=n{i}")
    assert test_cluster.get("vm", "vm", *ns)["spec"]["priority"] == 2
