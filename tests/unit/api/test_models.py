from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from kubenova.api import KINDS, InvalidObjectError, VirtualMachine, kind_by_name
from kubenova.api.meta import Condition, ConditionStatus, set_condition
from kubenova.api.vm import RunStrategy, VMPhase
from tests.conftest import EXAMPLES, INVALID, load_documents

pytestmark = pytest.mark.unit

EXAMPLE_DOCS = [
    pytest.param(doc, id=f"{path.name}:{doc['metadata']['name']}")
    for path in sorted(EXAMPLES.glob("*.yaml"))
    for doc in load_documents(path)
    if doc["apiVersion"].startswith("kubenova.io/")
]


def test_there_are_examples_of_every_kind_a_user_writes() -> None:
    kinds = {p.values[0]["kind"] for p in EXAMPLE_DOCS}  # type: ignore[index]
    assert {"VirtualMachine", "Flavor", "ResourcePool", "VMQuota", "VMMigration"} <= kinds


@pytest.mark.parametrize("doc", EXAMPLE_DOCS)
def test_every_example_validates_and_round_trips(doc: dict[str, Any]) -> None:
    model = kind_by_name(doc["kind"]).parse(doc)
    again = type(model).parse(model.to_dict())
    assert again == model
    _assert_contains(model.to_dict()["spec"], doc["spec"], "spec")


def _assert_contains(dumped: Any, given: Any, path: str) -> None:
    """Everything the user wrote comes back unchanged (defaults may be added around it)."""
    if isinstance(given, dict):
        for key, value in given.items():
            assert key in dumped, f"{path}.{key} lost"
            _assert_contains(dumped[key], value, f"{path}.{key}")
    elif isinstance(given, list):
        assert len(dumped) == len(given), path
        for i, (d, g) in enumerate(zip(dumped, given, strict=True)):
            _assert_contains(d, g, f"{path}[{i}]")
    else:
        assert dumped == given, f"{path}: wrote {given!r}, got back {dumped!r}"


@pytest.mark.parametrize(
    ("file", "field", "says"),
    [
        ("bad-quantity.yaml", "spec.memory", "not a quantity"),
        ("unknown-field.yaml", "spec.runStrategyy", "unknown field"),
        ("missing-flavor.yaml", "spec.flavor", "required field is missing"),
    ],
)
def test_malformed_examples_fail_naming_the_field(file: str, field: str, says: str) -> None:
    (doc,) = load_documents(INVALID / file)
    with pytest.raises(InvalidObjectError) as e:
        kind_by_name(doc["kind"]).parse(doc)
    message = str(e.value)
    assert f"{field}: " in message
    assert says in message
    assert doc["metadata"]["name"] in message


def _vm(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kubenova.io/v1alpha1",
        "kind": "VirtualMachine",
        "metadata": {"name": "t", "namespace": "n"},
        "spec": {"flavor": "small", "boot": {"image": "x.qcow2"}, **spec},
    }


def test_vm_defaults_are_what_kubevirt_users_expect() -> None:
    vm = VirtualMachine.parse(_vm())
    assert vm.spec.run_strategy is RunStrategy.ALWAYS
    assert vm.spec.eviction_strategy == "LiveMigrate"
    assert vm.status.phase is VMPhase.PENDING
    assert vm.to_dict()["spec"]["runStrategy"] == "Always"


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"priority": 1001}, "spec.priority"),
        ({"runStrategy": "Sometimes"}, "spec.runStrategy"),
        ({"networks": [{"name": "eth0", "macAddress": "nope"}]}, "spec.networks.0.macAddress"),
        (
            {"placement": {"antiAffinity": [{"group": "Web!"}]}},
            "spec.placement.antiAffinity.0.group",
        ),
    ],
)
def test_out_of_range_values_name_the_field(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidObjectError, match=field.replace(".", r"\.")):
        VirtualMachine.parse(_vm(**spec))


def test_domain_uuid_uses_the_kubernetes_spelling() -> None:
    vm = VirtualMachine.parse(_vm())
    vm.status.domain_uuid = "abc"
    assert vm.to_dict()["status"]["domainUUID"] == "abc"


def test_every_kind_has_a_short_name_and_columns() -> None:
    for kind in KINDS:
        assert kind.crd.short_names, kind
        assert kind.crd.printer_columns, kind


def test_set_condition_moves_transition_time_only_on_change() -> None:
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    t1 = t0 + dt.timedelta(minutes=1)
    ready = Condition(type="Ready", status=ConditionStatus.TRUE, reason="Running")
    conds = set_condition([], ready, t0)
    conds = set_condition(conds, ready.model_copy(update={"message": "still"}), t1)
    assert conds[0].last_transition_time == t0
    assert conds[0].message == "still"
    conds = set_condition(conds, ready.model_copy(update={"status": ConditionStatus.FALSE}), t1)
    assert len(conds) == 1
    assert conds[0].last_transition_time == t1


def test_unknown_kind_lists_the_known_ones() -> None:
    with pytest.raises(KeyError, match="VirtualMachine"):
        kind_by_name("Pod")


def test_examples_folder_is_found() -> None:
    assert Path(EXAMPLES).is_dir()
