"""The generated CRDs and every example against the real API server."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import EXAMPLES, INVALID, ROOT, load_documents
from tests.fixtures.cluster import LocalCluster, assert_test_cluster

pytestmark = pytest.mark.apiserver


def _in_namespace(path: Path, namespace: str) -> str:
    """The example's YAML moved into the test's namespace (cluster-scoped kinds untouched)."""
    return path.read_text().replace("namespace: default", f"namespace: {namespace}")


def test_every_crd_is_established_and_in_the_category(test_cluster: LocalCluster) -> None:
    names = {p.name.removesuffix(".yaml") for p in (ROOT / "crds").glob("*.yaml")}
    crds = test_cluster.get("crd")["items"]
    established = {
        c["metadata"]["name"]
        for c in crds
        if any(
            x["type"] == "Established" and x["status"] == "True" for x in c["status"]["conditions"]
        )
    }
    assert names <= established
    resources = test_cluster.kubectl("api-resources", "--categories=kubenova", "-o", "name").stdout
    assert {f"{n.split('.')[0]}.kubenova.io" for n in names} == set(resources.split())


def test_every_example_applies(test_cluster: LocalCluster, namespace: str) -> None:
    for path in sorted(EXAMPLES.glob("*.yaml")):
        docs = load_documents(path)
        text = _in_namespace(path, namespace)
        if any(d["kind"] == "Namespace" for d in docs):
            continue  # applied below with its own namespace
        out = test_cluster.kubectl("apply", "-f", "-", input=text).stdout
        assert len(out.strip().splitlines()) == len(docs), out
    gpu = EXAMPLES / "vm-gpu.yaml"
    out = test_cluster.kubectl("apply", "-f", str(gpu)).stdout
    assert "virtualmachine.kubenova.io/trainer-1" in out
    listed = test_cluster.kubectl("get", "kubenova", "-n", namespace, "-o", "name").stdout.split()
    assert "virtualmachine.kubenova.io/web-1" in listed
    assert "vmquota.kubenova.io/default" in listed
    assert "flavor.kubenova.io/gpu-a100" in listed


def test_printer_columns_show_in_kubectl_get(test_cluster: LocalCluster, namespace: str) -> None:
    test_cluster.kubectl("apply", "-f", str(EXAMPLES / "flavors.yaml"))
    test_cluster.kubectl(
        "apply", "-f", "-", input=_in_namespace(EXAMPLES / "vm-web.yaml", namespace)
    )
    test_cluster.kubectl(
        "patch",
        "vm",
        "web-1",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status":{"phase":"Running","host":"host-7","ip":"10.1.2.3"}}',
    )
    header, row = test_cluster.kubectl("get", "vm", "web-1", "-n", namespace).stdout.splitlines()
    assert header.split() == ["NAME", "PHASE", "FLAVOR", "HOST", "IP", "AGE"]
    assert row.split()[:5] == ["web-1", "Running", "small", "host-7", "10.1.2.3"]
    wide = test_cluster.kubectl("get", "vm", "web-1", "-n", namespace, "-o", "wide").stdout
    assert wide.splitlines()[0].split()[-3:] == ["POOL", "RUN", "REASON"]
    header, *_ = test_cluster.kubectl("get", "flv", "small").stdout.splitlines()
    assert header.split() == ["NAME", "VCPUS", "MEMORY", "DISK", "VMS", "AGE"]


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("vm.spec.runStrategy", "Start or stop a VM by changing"),
        ("vm.spec.placement.antiAffinity.topologyKey", "Host label whose values are the domains"),
        ("flv.spec.memory", "Guest memory"),
        ("pool.spec.reservations.count", "How many VMs of that flavor must always fit"),
        ("vmq.spec.hard.flavors", "VMs per flavor"),
        ("vmim.spec.targetHost", "unset lets the scheduler pick one"),
        ("vmhost.status.load.cpuPercent", "CPU use of the whole host"),
    ],
)
def test_kubectl_explain_documents_fields(
    test_cluster: LocalCluster, path: str, field: str
) -> None:
    out = test_cluster.kubectl("explain", path).stdout
    assert field in " ".join(out.split())


@pytest.mark.parametrize(
    ("file", "says"),
    [
        ("bad-quantity.yaml", 'spec.memory: Invalid value: "4 gigs"'),
        ("unknown-field.yaml", 'unknown field "spec.runStrategyy"'),
        ("missing-flavor.yaml", "spec.flavor: Required value"),
    ],
)
def test_malformed_examples_are_rejected_naming_the_field(
    test_cluster: LocalCluster, namespace: str, file: str, says: str
) -> None:
    proc = test_cluster.kubectl(
        "apply", "-f", "-", input=_in_namespace(INVALID / file, namespace), check=False
    )
    assert proc.returncode != 0
    assert says in proc.stderr
    (doc,) = load_documents(INVALID / file)
    kind = "flavors" if doc["kind"] == "Flavor" else "vm"
    gone = test_cluster.kubectl("get", kind, "-n", namespace, doc["metadata"]["name"], check=False)
    assert gone.returncode != 0, "a rejected object must not exist"


_VM = """
apiVersion: kubenova.io/v1alpha1
kind: VirtualMachine
metadata: {{name: {name}, namespace: {ns}}}
spec:
  flavor: small
  boot: {boot}
  priority: {priority}
"""


@pytest.mark.parametrize(
    ("boot", "priority", "says"),
    [
        (
            "{image: a.qcow2, kernel: {name: k}}",
            1,
            'spec.boot: Invalid value: "object": set exactly one of image or kernel',
        ),
        ("{}", 1, "set exactly one of image or kernel"),
        ("{image: a.qcow2}", 5000, "spec.priority in body should be less than or equal to 1000"),
    ],
)
def test_cel_and_range_rules_reject_with_their_message(
    test_cluster: LocalCluster, namespace: str, boot: str, priority: int, says: str
) -> None:
    text = _VM.format(name="bad", ns=namespace, boot=boot, priority=priority)
    proc = test_cluster.kubectl("apply", "-f", "-", input=text, check=False)
    assert proc.returncode != 0
    assert says in proc.stderr


def test_resources_are_immutable_once_set(test_cluster: LocalCluster, namespace: str) -> None:
    text = _VM.format(name="fixed", ns=namespace, boot="{image: a.qcow2}", priority=0)
    test_cluster.kubectl("apply", "-f", "-", input=text)
    patch = '{"spec":{"resources":{"vcpus":1,"memory":"1Gi","disk":"10Gi"}}}'
    test_cluster.kubectl("patch", "vm", "fixed", "-n", namespace, "--type=merge", "-p", patch)
    proc = test_cluster.kubectl(
        "patch",
        "vm",
        "fixed",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec":{"resources":{"vcpus":2}}}',
        check=False,
    )
    assert 'spec.resources: Invalid value: "object": is immutable' in proc.stderr
    vm = test_cluster.get("vm", "fixed", "-n", namespace)
    assert vm["spec"]["resources"]["vcpus"] == 1


def test_selector_rule_needs_values_for_in(test_cluster: LocalCluster) -> None:
    text = """
apiVersion: kubenova.io/v1alpha1
kind: ResourcePool
metadata: {name: bad-selector}
spec:
  hostSelector:
    matchExpressions: [{key: a, operator: In}]
"""
    proc = test_cluster.kubectl("apply", "-f", "-", input=text, check=False)
    assert "values must be non-empty for In and NotIn" in proc.stderr


def test_namespaces_are_deleted_by_the_controller_manager(test_cluster: LocalCluster) -> None:
    test_cluster.kubectl("create", "namespace", "gone-soon")
    test_cluster.kubectl("delete", "namespace", "gone-soon", "--timeout=60s")
    assert test_cluster.kubectl("get", "namespace", "gone-soon", check=False).returncode != 0


def test_guard_refuses_a_kubeconfig_that_is_not_the_test_clusters(
    test_cluster: LocalCluster, tmp_path: Path
) -> None:
    other = tmp_path / "other.kubeconfig"
    other.write_text(
        test_cluster.kubeconfig.read_text().replace("https://127.0.0.1:", "https://10.9.9.9:")
    )
    with pytest.raises(pytest.fail.Exception, match="refusing"):
        assert_test_cluster(test_cluster, other)


def test_agents_select_by_status_host_which_a_create_cannot_set(
    test_cluster: LocalCluster, namespace: str
) -> None:
    """status.host is the binding and the agents' field selector: a VM created with a status
    (a tenant aiming a VM at some host's agent) has it dropped, and only a status write, which
    the metadata policy keeps kubenova's, makes a VM show in that selector."""
    text = _VM.format(name="aimed", ns=namespace, boot="{image: a.qcow2}", priority=0)
    aimed = text + "status: {host: node-x, phase: Running}\n"
    test_cluster.kubectl("apply", "-f", "-", input=aimed)
    assert "host" not in test_cluster.get("vm", "aimed", "-n", namespace).get("status", {})

    def on_node_x() -> list[str]:
        listing = test_cluster.get("vm", "-n", namespace, "--field-selector", "status.host=node-x")
        return [v["metadata"]["name"] for v in listing["items"]]

    assert on_node_x() == []
    test_cluster.kubectl("patch", "vm", "aimed", "-n", namespace, "--subresource=status",
                         "--type=merge", "-p", '{"status": {"host": "node-x"}}')  # fmt: skip
    assert on_node_x() == ["aimed"]
    proc = test_cluster.kubectl(
        "get", "vm", "-n", namespace, "--field-selector", "status.phase=Running", check=False
    )
    assert proc.returncode != 0 and "field label not supported" in proc.stderr, proc.stderr
