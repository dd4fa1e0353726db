"""Each admission rule, allowed and denied, through kubectl against the real API server with the
webhook registered by URL."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Mapping

import pytest
import yaml

from kubenova.api import constants
from tests.fixtures.cluster import LocalCluster, wait_for
from tests.fixtures.webhook import Webhook

pytestmark = pytest.mark.apiserver


def _apply(tc: LocalCluster, doc: Mapping[str, object]) -> tuple[int, str]:
    proc = tc.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc), check=False)
    return proc.returncode, " ".join(proc.stderr.split())


def _vm(name: str, ns: str, flavor: str, **spec: object) -> dict[str, object]:
    return {
        "apiVersion": "kubenova.io/v1alpha1",
        "kind": "VirtualMachine",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"flavor": flavor, "boot": {"image": "a.qcow2"}, **spec},
    }


@pytest.fixture
def flavor(test_cluster: LocalCluster, webhook: Webhook) -> Iterator[str]:
    """A flavor of its own per test (flavors are cluster-scoped)."""
    name = f"f-{uuid.uuid4().hex[:8]}"
    doc = {
        "apiVersion": "kubenova.io/v1alpha1",
        "kind": "Flavor",
        "metadata": {"name": name},
        "spec": {"vcpus": 2, "memory": "3Gi", "disk": "20Gi"},
    }
    code, err = _apply(test_cluster, doc)
    assert code == 0, err
    yield name


def _pool(name: str, namespaces: list[str], selector: Mapping[str, object]) -> dict[str, object]:
    return {
        "apiVersion": "kubenova.io/v1alpha1",
        "kind": "ResourcePool",
        "metadata": {"name": name},
        "spec": {"hostSelector": selector, "namespaces": namespaces},
    }


def _quota(ns: str, name: str = "q", **hard: object) -> dict[str, object]:
    return {
        "apiVersion": "kubenova.io/v1alpha1",
        "kind": "VMQuota",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"hard": hard},
    }


class TestDefaults:
    def test_a_new_vm_gets_its_size_pool_trace_id_and_quota_marks(
        self, test_cluster: LocalCluster, wh_namespace: str, flavor: str
    ) -> None:
        pool = f"p-{wh_namespace}"
        assert _apply(test_cluster, _pool(pool, [wh_namespace], {}))[0] == 0
        wait_for("the pool to exist", lambda: test_cluster.get("resourcepool", pool))
        code, err = _apply(test_cluster, _vm("web", wh_namespace, flavor))
        assert code == 0, err
        vm = test_cluster.get("vm", "web", "-n", wh_namespace)
        assert vm["spec"]["resources"] == {"vcpus": 2, "memory": "3Gi", "disk": "20Gi", "gpus": {}}
        assert vm["spec"]["pool"] == pool
        assert vm["spec"]["runStrategy"] == "Always"
        annotations = vm["metadata"]["annotations"]
        assert len(annotations[constants.ANNOTATION_TRACE_ID]) == 16
        charge = json.loads(annotations[constants.ANNOTATION_QUOTA_CHARGED])
        assert charge == {"vms": 1, "vcpus": 2, "memory": "3Gi", "gpus": 0, "flavors": {flavor: 1}}
        assert constants.QUOTA_FINALIZER in vm["metadata"]["finalizers"]

    def test_a_trace_id_and_a_pool_given_by_the_user_are_kept(
        self, test_cluster: LocalCluster, wh_namespace: str, flavor: str
    ) -> None:
        pool = f"mine-{wh_namespace}"
        assert _apply(test_cluster, _pool(pool, [], {}))[0] == 0
        doc = _vm("kept", wh_namespace, flavor, pool=pool)
        doc["metadata"] = {
            "name": "kept",
            "namespace": wh_namespace,
            "annotations": {constants.ANNOTATION_TRACE_ID: "from-the-user"},
        }
        code, err = _apply(test_cluster, doc)
        assert code == 0, err
        vm = test_cluster.get("vm", "kept", "-n", wh_namespace)
        assert vm["metadata"]["annotations"][constants.ANNOTATION_TRACE_ID] == "from-the-user"
        assert vm["spec"]["pool"] == pool

    def test_a_new_vm_has_no_managed_fields_and_later_writes_add_none_until_an_apply(
        self, test_cluster: LocalCluster, wh_namespace: str, flavor: str
    ) -> None:
        ns = wh_namespace
        code, err = _apply(test_cluster, _vm("lean", ns, flavor))
        assert code == 0, err

        def managers() -> list[str]:
            vm = test_cluster.get("vm", "lean", "-n", ns, "--show-managed-fields")
            return [m["manager"] for m in vm["metadata"].get("managedFields") or []]

        assert managers() == []
        # a status write (the operator's bind, an agent's report) and a user's patch: the API
        # server tracks no fields of an object that has none
        test_cluster.kubectl("patch", "vm", "lean", "-n", ns, "--subresource=status",
                             "--type=merge", "-p", '{"status": {"reason": "waiting"}}')  # fmt: skip
        test_cluster.kubectl("label", "vm", "lean", "-n", ns, "team=a")
        assert managers() == []
        # a server-side apply still works, and is tracked from then on
        doc = _vm("lean", ns, flavor)
        doc["metadata"]["labels"] = {"team": "b"}  # type: ignore[index]
        test_cluster.kubectl("apply", "--server-side", "--field-manager=alice",
                             "--force-conflicts", "-f", "-", input=yaml.safe_dump(doc))  # fmt: skip
        assert "alice" in managers()
        assert test_cluster.get("vm", "lean", "-n", ns)["metadata"]["labels"] == {"team": "b"}


class TestReferences:
    def test_a_vm_naming_a_missing_flavor_is_denied_naming_the_field(
        self, test_cluster: LocalCluster, wh_namespace: str, flavor: str
    ) -> None:
        code, err = _apply(test_cluster, _vm("x", wh_namespace, "no-such-flavor"))
        assert code != 0
        assert f"VirtualMachine {wh_namespace}/x: spec.flavor: flavor 'no-such-flavor'" in err
        assert "does not exist; use one of" in err
        assert flavor in err, "the message lists flavors to choose from"

    def test_a_vm_naming_a_missing_pool_is_denied(
        self, test_cluster: LocalCluster, wh_namespace: str, flavor: str
    ) -> None:
        code, err = _apply(test_cluster, _vm("x", wh_namespace, flavor, pool="no-such-pool"))
        assert code != 0
        assert "spec.pool: pool 'no-such-pool' does not exist" in err

    def test_a_pool_dedicated_to_other_namespaces_is_denied(
        self, test_cluster: LocalCluster, wh_namespace: str, flavor: str
    ) -> None:
        pool = f"ded-{wh_namespace}"
        assert _apply(test_cluster, _pool(pool, ["someone-else"], {}))[0] == 0
        code, err = _apply(test_cluster, _vm("x", wh_namespace, flavor, pool=pool))
        assert code != 0
        assert f"pool '{pool}' is dedicated to namespaces someone-else" in err

    def test_a_migration_of_a_missing_vm_is_denied_and_of_an_existing_one_allowed(
        self, test_cluster: LocalCluster, wh_namespace: str, flavor: str
    ) -> None:
        mig = {
            "apiVersion": "kubenova.io/v1alpha1",
            "kind": "VMMigration",
            "metadata": {"name": "m", "namespace": wh_namespace},
            "spec": {"vmName": "ghost"},
        }
        code, err = _apply(test_cluster, mig)
        assert code != 0
        assert "spec.vmName: VirtualMachine 'ghost' does not exist" in err
        assert _apply(test_cluster, _vm("ghost", wh_namespace, flavor))[0] == 0
        code, err = _apply(test_cluster, mig)
        assert code == 0, err


class TestImmutability:
    def test_placement_fields_are_fixed_once_scheduled_and_free_before(
        self, test_cluster: LocalCluster, wh_namespace: str, flavor: str
    ) -> None:
        assert _apply(test_cluster, _vm("v", wh_namespace, flavor))[0] == 0
        ns = ["-n", wh_namespace]
        boot = '{"spec":{"boot":{"image":"b.qcow2"}}}'
        test_cluster.kubectl("patch", "vm", "v", *ns, "--type=merge", "-p", boot)
        test_cluster.kubectl(
            "patch",
            "vm",
            "v",
            *ns,
            "--subresource=status",
            "--type=merge",
            "-p",
            '{"status":{"phase":"Scheduled","host":"host-1"}}',
        )
        proc = test_cluster.kubectl(
            "patch",
            "vm",
            "v",
            *ns,
            "--type=merge",
            "-p",
            '{"spec":{"boot":{"image":"c"}}}',
            check=False,
        )
        assert proc.returncode != 0
        assert "spec.boot: cannot change once the VM is scheduled (host host-1)" in proc.stderr
        prio = '{"spec":{"priority":7}}'
        test_cluster.kubectl("patch", "vm", "v", *ns, "--type=merge", "-p", prio)
        vm = test_cluster.get("vm", "v", *ns)
        assert (vm["spec"]["boot"]["image"], vm["spec"]["priority"]) == ("b.qcow2", 7)

    def test_a_vms_flavor_never_changes(
        self, test_cluster: LocalCluster, wh_namespace: str, flavor: str
    ) -> None:
        assert _apply(test_cluster, _vm("v", wh_namespace, flavor))[0] == 0
        proc = test_cluster.kubectl(
            "patch",
            "vm",
            "v",
            "-n",
            wh_namespace,
            "--type=merge",
            "-p",
            '{"spec":{"flavor":"other"}}',
            check=False,
        )
        assert proc.returncode != 0
        assert f"spec.flavor: cannot change from '{flavor}' to 'other'" in proc.stderr

    def test_the_size_from_the_flavor_cannot_be_replaced_away(
        self, test_cluster: LocalCluster, wh_namespace: str, flavor: str
    ) -> None:
        assert _apply(test_cluster, _vm("v", wh_namespace, flavor))[0] == 0
        vm = test_cluster.get("vm", "v", "-n", wh_namespace)
        del vm["spec"]["resources"]
        proc = test_cluster.kubectl("replace", "-f", "-", input=yaml.safe_dump(vm), check=False)
        assert proc.returncode != 0
        assert "spec.resources: is copied from the flavor at creation" in proc.stderr
        assert test_cluster.get("vm", "v", "-n", wh_namespace)["spec"]["resources"]["vcpus"] == 2

    def test_the_quota_marks_cannot_be_forged(
        self, test_cluster: LocalCluster, wh_namespace: str, flavor: str
    ) -> None:
        assert _apply(test_cluster, _vm("v", wh_namespace, flavor))[0] == 0
        proc = test_cluster.kubectl(
            "annotate",
            "vm",
            "v",
            "-n",
            wh_namespace,
            "--overwrite",
            f"{constants.ANNOTATION_QUOTA_CHARGED}={{}}",
            check=False,
        )
        assert proc.returncode != 0
        assert "is set by the admission webhook only" in proc.stderr

    def test_a_flavor_in_use_cannot_change_or_go_and_an_unused_one_can(
        self, test_cluster: LocalCluster, wh_namespace: str, flavor: str
    ) -> None:
        patch = '{"spec":{"description":"bigger now"}}'
        test_cluster.kubectl("patch", "flavor", flavor, "--type=merge", "-p", patch)
        assert _apply(test_cluster, _vm("user", wh_namespace, flavor))[0] == 0
        proc = test_cluster.kubectl(
            "patch", "flavor", flavor, "--type=merge", "-p", '{"spec":{"vcpus":4}}', check=False
        )
        assert proc.returncode != 0
        assert (
            f"Flavor {flavor}: spec: cannot change while 1 VM(s) use it ({wh_namespace}/user)"
            in (" ".join(proc.stderr.split()))
        )
        proc = test_cluster.kubectl("delete", "flavor", flavor, check=False)
        assert proc.returncode != 0
        assert "cannot be deleted while 1 VM(s) use it" in proc.stderr
        assert test_cluster.get("flavor", flavor)["spec"]["vcpus"] == 2


class TestPoolsAndQuotas:
    @pytest.mark.parametrize(
        ("selector", "says"),
        [
            ({"matchLabels": {"bad key!": "x"}}, "is not a label key"),
            ({"matchLabels": {"rack": "not a value"}}, "is not a label value"),
            (
                {"matchExpressions": [{"key": "Upper.Case/x", "operator": "Exists"}]},
                "must be a DNS subdomain",
            ),
        ],
    )
    def test_a_pool_with_an_invalid_selector_is_denied(
        self, test_cluster: LocalCluster, webhook: Webhook, selector: dict[str, object], says: str
    ) -> None:
        name = f"bad-{uuid.uuid4().hex[:6]}"
        code, err = _apply(test_cluster, _pool(name, [], selector))
        assert code != 0
        assert f"ResourcePool {name}: spec.hostSelector." in err
        assert says in err

    def test_a_pool_with_a_valid_selector_is_allowed(
        self, test_cluster: LocalCluster, webhook: Webhook
    ) -> None:
        name = f"good-{uuid.uuid4().hex[:6]}"
        selector = {
            "matchLabels": {"kubenova.io/class": "general"},
            "matchExpressions": [{"key": "rack", "operator": "In", "values": ["a", "b-1"]}],
        }
        code, err = _apply(test_cluster, _pool(name, [], selector))
        assert code == 0, err

    def test_a_second_quota_in_a_namespace_is_denied(
        self, test_cluster: LocalCluster, wh_namespace: str
    ) -> None:
        assert _apply(test_cluster, _quota(wh_namespace, "first", vms=3))[0] == 0
        code, err = _apply(test_cluster, _quota(wh_namespace, "second", vms=5))
        assert code != 0
        assert "already has VMQuota 'first'; edit its spec.hard" in err
