from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubenova.api import constants
from kubenova.quota import arithmetic
from kubenova.webhooks import defaults, jsonpatch, review
from tests.unit.webhooks.builders import make_flavor, make_pool, make_vm

pytestmark = pytest.mark.unit


def raw_vm(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kubenova.io/v1alpha1",
        "kind": "VirtualMachine",
        "metadata": {"name": "vm", "namespace": "team"},
        "spec": {"flavor": "small", "boot": {"image": "a.qcow2"}, **spec},
    }


class TestPool:
    def test_the_one_pool_dedicated_to_the_namespace_wins(self) -> None:
        pools = [make_pool("general"), make_pool("team-hosts", namespaces=["team"])]
        assert defaults.pick_pool("team", pools) == "team-hosts"

    def test_else_the_default_pool(self) -> None:
        pools = [make_pool("general"), make_pool("gpu", namespaces=["ml"])]
        assert defaults.pick_pool("team", pools) == constants.DEFAULT_POOL

    def test_two_dedicated_pools_are_a_choice_the_user_makes(self) -> None:
        pools = [make_pool("a", namespaces=["team"]), make_pool("b", namespaces=["team"])]
        assert defaults.pick_pool("team", pools) is None

    def test_a_default_pool_dedicated_to_others_is_not_a_default(self) -> None:
        assert defaults.pick_pool("team", [make_pool("general", namespaces=["ml"])]) is None


class TestVMDefaults:
    def test_size_comes_from_the_flavor_even_over_what_the_user_wrote(self) -> None:
        vm = make_vm(flavor="gpu", resources={"vcpus": 1, "memory": "1Mi", "disk": "1Gi"})
        flavor = make_flavor("gpu", vcpus=16, memory="64Gi", gpus={"a100": 2})
        d = defaults.vm_defaults(vm, flavor, [])
        assert d.resources is not None
        assert (d.resources.vcpus, str(d.resources.memory), d.resources.gpus) == (
            16,
            "64Gi",
            {"a100": 2},
        )
        assert d.charge == arithmetic.charge_for("gpu", d.resources)

    def test_a_missing_flavor_gives_no_size_and_no_charge(self) -> None:
        d = defaults.vm_defaults(make_vm(), None, [])
        assert (d.resources, d.charge) == (None, None)

    def test_the_patch_adds_size_pool_run_strategy_trace_finalizer_and_quota_marks(self) -> None:
        raw = raw_vm()
        vm = make_vm(namespace="team")
        d = defaults.vm_defaults(vm, make_flavor(vcpus=2, memory="4Gi"), [make_pool()])
        out = defaults.apply_vm_defaults(raw, d, "trace-1")
        assert out["spec"]["resources"] == {"vcpus": 2, "memory": "4Gi", "disk": "10Gi", "gpus": {}}
        assert (out["spec"]["pool"], out["spec"]["runStrategy"]) == ("general", "Always")
        annotations = out["metadata"]["annotations"]
        assert annotations[constants.ANNOTATION_TRACE_ID] == "trace-1"
        assert json.loads(annotations[constants.ANNOTATION_QUOTA_CHARGED])["vcpus"] == 2
        # The domain-cleanup finalizer at create: the operator's bind is then one status write.
        assert out["metadata"]["finalizers"] == [constants.VM_FINALIZER, constants.QUOTA_FINALIZER]
        assert raw == raw_vm(), "the input is not changed"

    def test_a_vm_with_no_flavor_still_gets_the_domain_cleanup_finalizer(self) -> None:
        d = defaults.vm_defaults(make_vm(), None, [])
        out = defaults.apply_vm_defaults(raw_vm(), d, "t")
        assert out["metadata"]["finalizers"] == [constants.VM_FINALIZER]

    def test_what_the_user_set_is_kept_and_a_forged_charge_replaced(self) -> None:
        raw = raw_vm(pool="mine", runStrategy="Halted")
        raw["metadata"]["annotations"] = {
            constants.ANNOTATION_TRACE_ID: "theirs",
            constants.ANNOTATION_QUOTA_CHARGED: '{"vms":0}',
        }
        raw["metadata"]["finalizers"] = [constants.VM_FINALIZER]
        d = defaults.vm_defaults(make_vm(pool="mine"), make_flavor(), [])
        out = defaults.apply_vm_defaults(raw, d, "ours")
        assert (out["spec"]["pool"], out["spec"]["runStrategy"]) == ("mine", "Halted")
        annotations = out["metadata"]["annotations"]
        assert annotations[constants.ANNOTATION_TRACE_ID] == "theirs"
        assert arithmetic.parse_charge(annotations[constants.ANNOTATION_QUOTA_CHARGED]) == d.charge
        assert out["metadata"]["finalizers"] == [constants.VM_FINALIZER, constants.QUOTA_FINALIZER]

    def test_the_managed_fields_the_api_server_gave_at_create_are_removed(self) -> None:
        raw = raw_vm()
        raw["metadata"]["managedFields"] = [
            {"manager": "kubectl", "operation": "Update", "fieldsType": "FieldsV1"}
        ]
        d = defaults.vm_defaults(make_vm(), make_flavor(), [make_pool()])
        patch = jsonpatch.diff(raw, defaults.apply_vm_defaults(raw, d, "t"))
        assert {"op": "remove", "path": "/metadata/managedFields"} in patch

    def test_applying_the_defaults_twice_changes_nothing_more(self) -> None:
        d = defaults.vm_defaults(make_vm(), make_flavor(), [make_pool()])
        once = defaults.apply_vm_defaults(raw_vm(), d, "t")
        assert jsonpatch.diff(once, defaults.apply_vm_defaults(once, d, "t")) == []


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(alphabet="ab/~c", max_size=3), inner, max_size=3)
    ),
    max_leaves=12,
)
json_docs = st.dictionaries(st.text(alphabet="ab/~c", max_size=3), json_values, max_size=4)


class TestJSONPatch:
    @given(json_docs, json_docs)
    def test_applying_the_diff_gives_the_new_document(
        self, old: dict[str, Any], new: dict[str, Any]
    ) -> None:
        assert jsonpatch.apply(old, jsonpatch.diff(old, new)) == new

    @given(json_docs)
    def test_no_change_no_patch(self, doc: dict[str, Any]) -> None:
        assert jsonpatch.diff(doc, doc) == []

    def test_keys_with_slashes_are_escaped(self) -> None:
        ops = jsonpatch.diff({"a": {}}, {"a": {"kubenova.io/trace-id": "x"}})
        assert ops == [{"op": "add", "path": "/a/kubenova.io~1trace-id", "value": "x"}]


class TestReview:
    def body(self, **request: Any) -> dict[str, Any]:
        base = {
            "uid": "u-1",
            "kind": {"group": "kubenova.io", "version": "v1alpha1", "kind": "VirtualMachine"},
            "operation": "CREATE",
            "namespace": "team",
            "object": raw_vm(),
        }
        return {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {**base, **request},
        }

    def test_parses_what_the_api_server_sends(self) -> None:
        req = review.parse(self.body(dryRun=True))
        assert (req.uid, req.kind, req.operation, req.who, req.dry_run) == (
            "u-1",
            "VirtualMachine",
            "CREATE",
            "VirtualMachine team/vm",
            True,
        )
        assert req.trace_id is None

    @pytest.mark.parametrize("body", [None, [], {"kind": "Pod"}, {"kind": "AdmissionReview"}])
    def test_refuses_anything_else(self, body: Any) -> None:
        with pytest.raises(review.ReviewError):
            review.parse(body)

    def test_a_denial_carries_code_and_message(self) -> None:
        out = review.response("u", review.deny("RateLimited", "slow down", code=429))
        assert out["response"] == {
            "uid": "u",
            "allowed": False,
            "status": {"code": 429, "reason": "TooManyRequests", "message": "slow down"},
        }

    def test_a_patch_is_base64_json(self) -> None:
        ops: list[jsonpatch.Operation] = [{"op": "add", "path": "/x", "value": 1}]
        out = review.response("u", review.allow(ops))["response"]
        assert out["patchType"] == "JSONPatch"
        assert json.loads(base64.b64decode(out["patch"])) == ops
