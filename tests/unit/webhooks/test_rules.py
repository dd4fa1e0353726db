from __future__ import annotations

import pytest

from kubenova.api import constants
from kubenova.api.migration import VMMigration
from kubenova.webhooks import rules
from tests.unit.webhooks.builders import make_flavor, make_pool, make_vm

pytestmark = pytest.mark.unit


def fields(problems: list[rules.Problem]) -> list[str]:
    return [p.field for p in problems]


class TestVMCreate:
    def test_an_existing_flavor_and_pool_pass(self) -> None:
        vm = make_vm(pool="general")
        assert rules.vm_create(vm, make_flavor(), make_pool(), ["small"], ["general"]) == []

    def test_a_missing_flavor_names_the_field_and_the_choices(self) -> None:
        (p,) = rules.vm_create(make_vm(flavor="xl"), None, None, ["small", "large"], [])
        assert str(p) == (
            "spec.flavor: flavor 'xl' does not exist; use one of large, small (kubectl get flavors)"
        )

    def test_with_no_flavors_at_all_it_says_to_create_one(self) -> None:
        (p,) = rules.vm_create(make_vm(), None, None, [], [])
        assert p.message.endswith("no flavors exists yet; create one first")

    def test_a_missing_pool_is_named(self) -> None:
        problems = rules.vm_create(make_vm(pool="gpu"), make_flavor(), None, ["small"], ["a"])
        assert fields(problems) == ["spec.pool"]

    def test_a_pool_dedicated_elsewhere_is_refused_and_says_how_to_get_in(self) -> None:
        pool = make_pool("gpu", namespaces=["ml"])
        (p,) = rules.vm_create(make_vm(pool="gpu", namespace="web"), make_flavor(), pool, [], [])
        assert "dedicated to namespaces ml" in p.message
        assert "add 'web' to its spec.namespaces" in p.message

    def test_no_pool_is_fine(self) -> None:
        assert rules.vm_create(make_vm(), make_flavor(), None, ["small"], []) == []


class TestVMUpdate:
    def test_anything_may_change_before_scheduling_but_the_flavor(self) -> None:
        old = make_vm(pool="a")
        new = make_vm(pool="b", placement={"groups": ["web"]}, boot={"image": "b.qcow2"})
        assert rules.vm_update(old, new) == []
        assert fields(rules.vm_update(old, make_vm(flavor="large"))) == ["spec.flavor"]

    @pytest.mark.parametrize(
        ("change", "field"),
        [
            ({"pool": "other"}, "spec.pool"),
            ({"boot": {"image": "b.qcow2"}}, "spec.boot"),
            ({"placement": {"groups": ["x"]}}, "spec.placement"),
            ({"networks": [{"name": "eth0"}]}, "spec.networks"),
        ],
    )
    def test_placement_fields_are_fixed_once_scheduled(
        self, change: dict[str, object], field: str
    ) -> None:
        bound = {"phase": "Running", "host": "h1"}
        old = make_vm(pool="a", status=bound)
        new_args: dict[str, object] = {"pool": "a", **change}
        new = make_vm(status=bound, **new_args)  # type: ignore[arg-type]
        (p,) = rules.vm_update(old, new)
        assert p.field == field
        assert "cannot change once the VM is scheduled (host h1)" in p.message

    def test_run_strategy_and_priority_may_change_once_scheduled(self) -> None:
        bound = {"phase": "Running", "host": "h1"}
        old = make_vm(status=bound)
        new = make_vm(status=bound, runStrategy="Halted", priority=5)
        assert rules.vm_update(old, new) == []
        assert rules.spec_changed(old, new)

    def test_the_size_copied_from_the_flavor_cannot_change_or_go(self) -> None:
        size = {"vcpus": 2, "memory": "4Gi", "disk": "10Gi"}
        old = make_vm(resources=size)
        assert rules.vm_update(old, make_vm(resources=size)) == []
        assert fields(rules.vm_update(old, make_vm())) == ["spec.resources"]
        bigger = make_vm(resources={**size, "vcpus": 4})
        assert fields(rules.vm_update(old, bigger)) == ["spec.resources"]

    def test_quota_marks_may_be_removed_but_not_added_or_changed(self) -> None:
        key, fin = constants.ANNOTATION_QUOTA_CHARGED, constants.QUOTA_FINALIZER
        marked = make_vm(annotations={key: "{}"}, finalizers=[fin])
        assert rules.vm_update(marked, make_vm()) == []
        assert not rules.spec_changed(marked, make_vm())
        forged = make_vm(annotations={key: '{"vms":0}'}, finalizers=[fin])
        assert fields(rules.vm_update(marked, forged)) == [f"metadata.annotations[{key}]"]
        assert fields(rules.vm_update(make_vm(), marked)) == [
            f"metadata.annotations[{key}]",
            "metadata.finalizers",
        ]


class TestFlavor:
    def test_an_unused_flavor_may_change_and_go(self) -> None:
        assert rules.flavor_change(make_flavor(), make_flavor(vcpus=8), []) == []
        assert rules.flavor_change(make_flavor(), None, []) == []

    def test_a_used_flavor_may_not_change_or_go(self) -> None:
        users = [f"ns/vm-{i}" for i in range(7)]
        (p,) = rules.flavor_change(make_flavor(), make_flavor(vcpus=8), users)
        assert str(p) == (
            "spec: cannot change while 7 VM(s) use it "
            "(ns/vm-0, ns/vm-1, ns/vm-2, ns/vm-3, ns/vm-4, ...); create a new flavor instead"
        )
        (p,) = rules.flavor_change(make_flavor(), None, users)
        assert p.message.startswith("cannot be deleted while 7 VM(s)")

    def test_a_used_flavor_may_be_relabelled(self) -> None:
        assert rules.flavor_change(make_flavor(), make_flavor(), ["ns/vm"]) == []


class TestPool:
    @pytest.mark.parametrize(
        "key",
        ["rack", "kubenova.io/class", "a.b-c/x_y.z", "topology.kubernetes.io/zone", "A1"],
    )
    def test_valid_label_keys(self, key: str) -> None:
        assert rules.label_key_problem(key) is None

    @pytest.mark.parametrize(
        "key", ["", "bad key", "-x", "x-", "Upper.Case/x", "a/", "/x", "x" * 64, "a/b/c"]
    )
    def test_invalid_label_keys(self, key: str) -> None:
        assert rules.label_key_problem(key) is not None

    @pytest.mark.parametrize(
        ("value", "ok"),
        [("", True), ("a-b_c.d", True), ("a b", False), ("x" * 64, False), ("-a", False)],
    )
    def test_label_values(self, value: str, ok: bool) -> None:
        assert (rules.label_value_problem(value) is None) == ok

    def test_a_selector_names_every_bad_term(self) -> None:
        pool = make_pool(
            selector={
                "matchLabels": {"ok": "yes", "bad key": "v"},
                "matchExpressions": [
                    {"key": "rack", "operator": "In", "values": ["a", "b c"]},
                    {"key": "rack", "operator": "In", "values": ["d"]},
                    {"key": "ok", "operator": "DoesNotExist"},
                ],
            }
        )
        assert fields(rules.pool(pool, [])) == [
            "spec.hostSelector.matchLabels[bad key]",
            "spec.hostSelector.matchExpressions[0].values",
            "spec.hostSelector.matchExpressions[1]",
            "spec.hostSelector.matchExpressions[2]",
        ]

    def test_reservations_must_name_flavors(self) -> None:
        pool = make_pool(
            reservations=[{"flavor": "small", "count": 2}, {"flavor": "xl", "count": 1}]
        )
        assert fields(rules.pool(pool, ["small"])) == ["spec.reservations[1].flavor"]


class TestQuotaAndMigration:
    def test_one_quota_per_namespace(self) -> None:
        assert rules.quota_create("q", []) == []
        assert rules.quota_create("q", ["q"]) == [], "re-creating the same name is an update"
        (p,) = rules.quota_create("second", ["first"])
        assert "already has VMQuota 'first'" in p.message

    def test_a_migration_needs_its_vm(self) -> None:
        m = VMMigration.parse(
            {
                "kind": "VMMigration",
                "metadata": {"name": "m", "namespace": "ns"},
                "spec": {"vmName": "vm"},
            }
        )
        assert rules.migration_create(m, make_vm()) == []
        assert fields(rules.migration_create(m, None)) == ["spec.vmName"]
        assert fields(rules.migration_create(m, make_vm(deleting=True))) == ["spec.vmName"]


def test_the_message_names_the_object_and_every_problem() -> None:
    problems = [rules.Problem("spec.a", "is wrong"), rules.Problem("spec.b", "too")]
    assert rules.message("VirtualMachine ns/x", problems) == (
        "VirtualMachine ns/x: spec.a: is wrong; spec.b: too"
    )


class TestHostInputs:
    """Networks a pool allows; annotations the domain XML carries (tests/security has the same
    through the API server)."""

    def test_networks_the_pool_lists_pass(self) -> None:
        pool = make_pool(networks=["default", "storage"])
        vm = make_vm(pool="general", networks=[{"name": "a"}, {"name": "b", "network": "storage"}])
        assert rules.host_inputs(vm, pool) == []
        assert rules.vm_create(vm, make_flavor(), pool, ["small"], ["general"]) == []

    def test_a_network_the_pool_does_not_list_is_refused_with_the_choices(self) -> None:
        pool = make_pool(networks=["default", "storage"])
        vm = make_vm(pool="general", networks=[{"name": "eth0", "network": "mgmt"}])
        (p,) = rules.vm_create(vm, make_flavor(), pool, ["small"], ["general"])
        assert str(p) == (
            "spec.networks[0].network: network 'mgmt': pool 'general' allows only default, "
            "storage; use one of those, or ask an admin to add it to the pool's spec.networks"
        )

    def test_a_pool_listing_no_networks_allows_none(self) -> None:
        vm = make_vm(pool="general", networks=[{"name": "eth0"}])
        (p,) = rules.host_inputs(vm, make_pool())
        assert "pool 'general' allows no networks" in p.message

    def test_a_vm_without_a_pool_may_have_no_network(self) -> None:
        vm = make_vm(networks=[{"name": "eth0"}])
        (p,) = rules.vm_create(vm, make_flavor(), None, ["small"], [])
        assert p.field == "spec.networks[0].network"
        assert "the VM has no pool" in p.message

    def test_an_update_checks_only_networks_that_changed(self) -> None:
        narrowed = make_pool(networks=["storage"])
        old = make_vm(pool="general", networks=[{"name": "eth0"}])
        same = make_vm(pool="general", networks=[{"name": "eth0"}], priority=5)
        assert rules.host_inputs(same, narrowed, old) == []
        more = make_vm(pool="general", networks=[{"name": "eth0"}, {"name": "eth1"}])
        assert fields(rules.host_inputs(more, narrowed, old)) == [
            "spec.networks[0].network",
            "spec.networks[1].network",
        ]

    @pytest.mark.parametrize("key", rules.XML_ANNOTATIONS)
    def test_control_characters_in_annotations_the_domain_xml_carries_are_refused(
        self, key: str
    ) -> None:
        vm = make_vm(annotations={key: "t\x00"})
        (p,) = rules.vm_create(vm, make_flavor(), None, ["small"], [])
        assert str(p) == (
            f"metadata.annotations[{key}]: contains the control character U+0000; "
            "use printable text only"
        )
        old = make_vm(annotations={key: "t1"})
        assert fields(rules.host_inputs(vm, None, old)) == [f"metadata.annotations[{key}]"]
