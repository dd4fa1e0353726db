"""kubenova's own labels, annotations, finalizers and statuses are kubenova's: a tenant whose
Role gives it every verb on every kubenova.io resource in its namespace still cannot touch them
(the chart's metadata ValidatingAdmissionPolicy, with the real admission webhooks in front).
Each attack is refused with a message that names the object and the key, and changes nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from kubenova.api import constants
from tests.fixtures.cluster import LocalCluster
from tests.fixtures.identities import (
    Client,
    Policies,
    chart_policies,
    in_force,
    policy_helm,
    service_account_token,
    token_client,
    user_client,
)
from tests.fixtures.webhook import Webhook, vm_manifest

__all__ = ["chart_policies", "policy_helm"]  # fixtures used by name

pytestmark = pytest.mark.apiserver

HOST = "kubenova.io/host"
"""A kubenova-reserved label key: older releases bound VMs by it; nothing writes or reads it
now, and the policy keeps it, like every kubenova.io/ key, kubenova's."""
RUNNING_STATUS = {"phase": "Running", "host": "host-x", "domainUUID": "d0"}


@pytest.fixture(scope="module")
def flavor(test_cluster: LocalCluster, webhook: Webhook) -> Iterator[str]:
    name = f"sec-{uuid.uuid4().hex[:8]}"
    doc = {
        "apiVersion": constants.API_VERSION,
        "kind": "Flavor",
        "metadata": {"name": name},
        "spec": {"vcpus": 2, "memory": "1Gi", "disk": "10Gi"},
    }
    test_cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))
    yield name
    # Refused while VMs in deleted namespaces still use it; the session's end removes it then.
    test_cluster.kubectl(
        "delete", "flavor", name, "--ignore-not-found", "--wait=false", check=False
    )


@pytest.fixture
def tenant(
    test_cluster: LocalCluster, wh_namespace: str, chart_policies: Policies, flavor: str
) -> Iterator[Client]:
    """A tenant with a generous edit-like Role in its namespace: every verb on every
    kubenova.io resource, subresources included (what `resources: ["*"]` grants)."""
    user = f"tenant-{wh_namespace}"
    rbac = [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "vm-edit", "namespace": wh_namespace},
            "rules": [{"apiGroups": [constants.GROUP], "resources": ["*"], "verbs": ["*"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "vm-edit", "namespace": wh_namespace},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "vm-edit"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
        },
    ]
    test_cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(rbac))
    client = user_client(test_cluster, user, groups=("tenants",))
    probe = vm_manifest("probe", wh_namespace, flavor)
    probe["metadata"]["labels"] = {HOST: "host-x"}
    # RBAC and the policy load asynchronously: wait until the tenant is allowed in and the
    # policy refuses it (a dry run changes nothing).
    in_force(
        "the metadata policy to refuse a tenant",
        lambda: client.create("virtualmachines", probe, dry_run=True),
        "is kubenova's",
    )
    yield client
    # No agent runs here to remove the domain-cleanup finalizer: the admin does, so the
    # namespace can go.
    for vm in test_cluster.get("vm", "-n", wh_namespace)["items"]:
        fins = [f for f in vm["metadata"].get("finalizers", []) if f != constants.VM_FINALIZER]
        patch = yaml.safe_dump({"metadata": {"finalizers": fins}})
        name = vm["metadata"]["name"]
        test_cluster.kubectl("patch", "vm", "-n", wh_namespace, name, "--type=merge", "-p", patch)


def _quota(tc: LocalCluster, ns: str) -> dict[str, Any]:
    doc = {
        "apiVersion": constants.API_VERSION,
        "kind": "VMQuota",
        "metadata": {"name": "limits", "namespace": ns},
        "spec": {"hard": {"vms": 10, "vcpus": 20}},
    }
    tc.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))
    used: dict[str, Any] = tc.get("vmquota", "limits", "-n", ns).get("status", {}).get("used", {})
    return used


def _used(tc: LocalCluster, ns: str) -> dict[str, Any]:
    used: dict[str, Any] = tc.get("vmquota", "limits", "-n", ns).get("status", {}).get("used", {})
    return used


def _bound_vm(tc: LocalCluster, tenant: Client, ns: str, name: str, flavor: str) -> dict[str, Any]:
    """A VM the tenant created, then bound and running as the operator and agent make it
    (written here by the cluster admin, whom the policy trusts like kubenova's components)."""
    assert tenant.create("virtualmachines", vm_manifest(name, ns, flavor)) == ""
    fins = tc.get("vm", "-n", ns, name)["metadata"].get("finalizers", [])
    assert constants.VM_FINALIZER in fins, "the webhook gives it at create"
    meta = {"labels": {HOST: "host-x"}}
    tc.kubectl(
        "patch", "vm", "-n", ns, name, "--type=merge", "-p", yaml.safe_dump({"metadata": meta})
    )
    tc.kubectl(
        "patch", "vm", "-n", ns, name, "--subresource=status", "--type=merge",
        "-p", yaml.safe_dump({"status": RUNNING_STATUS}),
    )  # fmt: skip
    vm: dict[str, Any] = tc.get("vm", "-n", ns, name)
    return vm


def _meta(vm: dict[str, Any]) -> tuple[Any, ...]:
    m = vm["metadata"]
    return (m.get("labels"), m.get("annotations"), m.get("finalizers"), m.get("deletionTimestamp"))


def test_a_tenant_cannot_remove_the_domain_cleanup_finalizer_to_free_its_quota(
    test_cluster: LocalCluster, tenant: Client, wh_namespace: str, flavor: str
) -> None:
    ns = wh_namespace
    _quota(test_cluster, ns)
    before = _bound_vm(test_cluster, tenant, ns, "web", flavor)
    used = _used(test_cluster, ns)
    assert used.get("vms") == 1, used  # the webhook charged it

    fins = [f for f in before["metadata"]["finalizers"] if f != constants.VM_FINALIZER]
    answer = tenant.patch(
        "virtualmachines", "web", {"metadata": {"finalizers": fins}}, namespace=ns
    )
    assert answer.startswith("403"), answer
    assert f"VirtualMachine {ns}/web: finalizer {constants.VM_FINALIZER}" in answer, answer
    assert "only kubenova may add or remove it" in answer, answer

    # Deleting is the tenant's right; the finalizer keeps the VM (and its charge) until the
    # agent has removed the domain.
    assert (
        tenant.attempt(
            lambda: tenant.custom.delete_namespaced_custom_object(
                constants.GROUP, constants.VERSION, ns, "virtualmachines", "web"
            )
        )
        == ""
    )
    after = test_cluster.get("vm", "-n", ns, "web")
    assert constants.VM_FINALIZER in after["metadata"]["finalizers"]
    assert after["metadata"]["deletionTimestamp"]
    assert after["status"] == before["status"]
    assert _used(test_cluster, ns) == used


def test_a_tenant_cannot_rewrite_the_migration_annotations(
    test_cluster: LocalCluster, tenant: Client, wh_namespace: str, flavor: str
) -> None:
    ns = wh_namespace
    _bound_vm(test_cluster, tenant, ns, "db", flavor)
    marks = {
        constants.ANNOTATION_MIGRATION: "m-1",
        constants.ANNOTATION_MIGRATION_TARGET: "host-y",
        constants.ANNOTATION_MIGRATION_URI: "qemu+tls://host-y/system",
        constants.ANNOTATION_MIGRATION_ADDRESS: "10.0.0.7",
    }
    test_cluster.kubectl("annotate", "vm", "-n", ns, "db", *(f"{k}={v}" for k, v in marks.items()))
    before = test_cluster.get("vm", "-n", ns, "db")

    evil = {
        constants.ANNOTATION_MIGRATION_URI: "qemu+ext:///system?command=/bin/sh",
        constants.ANNOTATION_MIGRATION_ADDRESS: "203.0.113.9",
    }
    for key, value in evil.items():
        answer = tenant.patch(
            "virtualmachines", "db", {"metadata": {"annotations": {key: value}}}, namespace=ns
        )
        assert answer.startswith("403"), (key, answer)
        assert f"VirtualMachine {ns}/db: annotation {key} is kubenova's" in answer, answer
    removed = tenant.patch(
        "virtualmachines", "db",
        {"metadata": {"annotations": {constants.ANNOTATION_MIGRATION_ABORT: "now"}}},
        namespace=ns,
    )  # fmt: skip
    assert constants.ANNOTATION_MIGRATION_ABORT in removed, removed
    assert _meta(test_cluster.get("vm", "-n", ns, "db")) == _meta(before)


def test_a_tenant_cannot_bind_its_vm_by_label_nor_move_it(
    test_cluster: LocalCluster, tenant: Client, wh_namespace: str, flavor: str
) -> None:
    ns = wh_namespace
    forged = vm_manifest("squatter", ns, flavor)
    forged["metadata"]["labels"] = {HOST: "host-x"}
    forged["metadata"]["finalizers"] = [constants.VM_FINALIZER]
    answer = tenant.create("virtualmachines", forged)
    assert answer.startswith("403") and "is kubenova's" in answer, answer
    assert test_cluster.kubectl("get", "vm", "-n", ns, "squatter", check=False).returncode != 0
    del forged["metadata"]["name"]
    forged["metadata"]["generateName"] = "squatter-"
    answer = tenant.create("virtualmachines", forged)
    # (the API server has generated the name before admission: the message names it)
    assert answer.startswith("403") and f"VirtualMachine {ns}/squatter-" in answer, answer
    assert test_cluster.get("vm", "-n", ns)["items"] == []

    before = _bound_vm(test_cluster, tenant, ns, "app", flavor)
    for labels in ({HOST: "host-y"}, {HOST: None}, {"kubenova.io/pool": "gpu"}):
        answer = tenant.patch("virtualmachines", "app", {"metadata": {"labels": labels}}, ns)
        assert answer.startswith("403"), (labels, answer)
        assert f"VirtualMachine {ns}/app: label" in answer and "is kubenova's" in answer, answer
    assert _meta(test_cluster.get("vm", "-n", ns, "app")) == _meta(before)


def test_a_tenant_cannot_write_any_kubenova_status(
    test_cluster: LocalCluster, tenant: Client, wh_namespace: str, flavor: str
) -> None:
    ns = wh_namespace
    _quota(test_cluster, ns)
    before = _bound_vm(test_cluster, tenant, ns, "calc", flavor)
    used = _used(test_cluster, ns)
    writes = {
        ("virtualmachines", "calc"): {"status": {"host": "host-y", "phase": "Pending"}},
        ("vmquotas", "limits"): {"status": {"used": {"vms": 0, "vcpus": 0}}},
    }
    for (plural, name), body in writes.items():
        answer = tenant.patch(plural, name, body, namespace=ns, status=True)
        assert answer.startswith("403"), (plural, answer)
        assert "is written by kubenova only" in answer and f"{ns}/{name}" in answer, answer
    assert test_cluster.get("vm", "-n", ns, "calc")["status"] == before["status"]
    assert _used(test_cluster, ns) == used


def test_migrations_carry_no_kubenova_marks_from_a_tenant(
    test_cluster: LocalCluster, tenant: Client, wh_namespace: str, flavor: str
) -> None:
    ns = wh_namespace
    _bound_vm(test_cluster, tenant, ns, "job", flavor)
    migration = {
        "apiVersion": constants.API_VERSION,
        "kind": "VMMigration",
        "metadata": {
            "name": "fake-drain",
            "namespace": ns,
            "labels": {constants.LABEL_INITIATOR: "drain", constants.LABEL_DRAIN_HOST: "host-x"},
        },
        "spec": {"vmName": "job"},
    }
    answer = tenant.create("vmmigrations", migration)
    assert answer.startswith("403"), answer
    assert f"VMMigration {ns}/fake-drain: label" in answer, answer
    assert test_cluster.kubectl("get", "vmim", "-n", ns, "fake-drain", check=False).returncode != 0


def test_what_is_the_tenants_stays_the_tenants(
    test_cluster: LocalCluster, tenant: Client, wh_namespace: str, flavor: str
) -> None:
    """The user-facing keys (docs/security.md) and every label outside kubenova.io/."""
    ns = wh_namespace
    mine = vm_manifest("own", ns, flavor)
    mine["metadata"]["labels"] = {"app": "web", "team.example.com/owner": "ana"}
    mine["metadata"]["annotations"] = {constants.ANNOTATION_TRACE_ID: "trace-from-ci"}
    assert tenant.create("virtualmachines", mine) == ""
    _bound_vm_meta = {"metadata": {"finalizers": [constants.VM_FINALIZER]}}
    test_cluster.kubectl("patch", "vm", "-n", ns, "own", "--type=merge", "-p",
                         yaml.safe_dump(_bound_vm_meta))  # fmt: skip
    restart = {
        "metadata": {
            "annotations": {constants.ANNOTATION_RESTART_REQUESTED: "2026-01-01T00:00:00Z"}
        }
    }
    assert tenant.patch("virtualmachines", "own", restart, namespace=ns) == ""
    relabel = {"metadata": {"labels": {"app": "api"}, "annotations": {"note": "mine"}}}
    assert tenant.patch("virtualmachines", "own", relabel, namespace=ns) == ""
    vm = test_cluster.get("vm", "-n", ns, "own")
    ann = vm["metadata"]["annotations"]
    assert ann[constants.ANNOTATION_TRACE_ID] == "trace-from-ci"
    assert ann[constants.ANNOTATION_RESTART_REQUESTED] == "2026-01-01T00:00:00Z"
    assert vm["metadata"]["labels"]["app"] == "api"
    # ...but the trace id is fixed once the VM exists.
    answer = tenant.patch(
        "virtualmachines", "own",
        {"metadata": {"annotations": {constants.ANNOTATION_TRACE_ID: "other"}}}, namespace=ns,
    )  # fmt: skip
    assert answer.startswith("403") and constants.ANNOTATION_TRACE_ID in answer, answer


def test_the_webhooks_account_changes_only_its_quota_marks(
    test_cluster: LocalCluster, tenant: Client, wh_namespace: str, flavor: str,
    chart_policies: Policies,
) -> None:  # fmt: skip
    """kubenova's webhooks are the part reachable from the network: their ServiceAccount may
    release a charge (its annotation and finalizer) and write VMQuota status, nothing else."""
    ns, p = wh_namespace, chart_policies
    _quota(test_cluster, ns)
    before = _bound_vm(test_cluster, tenant, ns, "svc", flavor)
    token = service_account_token(test_cluster, p.namespace, p.account("webhooks"), None)
    webhooks = token_client(test_cluster, p.user("webhooks"), token)
    fins = before["metadata"]["finalizers"]
    assert constants.QUOTA_FINALIZER in fins and constants.VM_FINALIZER in fins, fins
    strip = {"metadata": {"finalizers": [constants.QUOTA_FINALIZER]}}
    answers = {
        "domain-cleanup": webhooks.patch("virtualmachines", "svc", strip, namespace=ns),
        "host label": webhooks.patch(
            "virtualmachines", "svc", {"metadata": {"labels": {HOST: None}}}, namespace=ns
        ),
    }
    assert all(a.startswith("403") for a in answers.values()), answers
    assert all("changes only the kubenova.io/quota-charged" in a for a in answers.values())
    assert _meta(test_cluster.get("vm", "-n", ns, "svc")) == _meta(before)

    release = {
        "metadata": {
            "finalizers": [f for f in fins if f != constants.QUOTA_FINALIZER],
            "annotations": {constants.ANNOTATION_QUOTA_CHARGED: None},
        }
    }
    assert webhooks.patch("virtualmachines", "svc", release, namespace=ns) == ""
    after = test_cluster.get("vm", "-n", ns, "svc")["metadata"]
    assert after["finalizers"] == [constants.VM_FINALIZER]
    assert constants.ANNOTATION_QUOTA_CHARGED not in after.get("annotations", {})
