"""The chaos run's watchdog (benchmarks/scale_bench.py): its quota check must see a real
shortfall and must not see one in a release and prune that fall between two of its reads."""

from __future__ import annotations

from typing import Any

import pytest

from kubenova.api import constants
from tests.unit.benchmarks import load

pytestmark = pytest.mark.unit

bench = load("scale_bench")


def _vm(name: str, *finalizers: str, deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "uid": f"uid-{name}", "finalizers": list(finalizers)}
    if deleting:
        meta["deletionTimestamp"] = "2026-12-01T00:00:00Z"
    return {"metadata": meta, "spec": {"flavor": "small"}, "status": {}}


class Reads:
    """The API as the watchdog reads it: one answer per read, in order."""

    def __init__(self, vm_lists: list[list[dict[str, Any]]], quota: dict[str, Any]) -> None:
        self.vm_lists, self.quota = vm_lists, quota

    def list_cluster_custom_object(self, *_: Any) -> dict[str, Any]:
        return {"items": []}  # no hosts, no flavors needed

    def list_namespaced_custom_object(self, *_: Any) -> dict[str, Any]:
        return {"items": self.vm_lists.pop(0)}

    def get_namespaced_custom_object(self, *_: Any) -> dict[str, Any]:
        return self.quota


def _quota(vms: int, released: list[str]) -> dict[str, Any]:
    return {
        "metadata": {"resourceVersion": "7"},
        "status": {"used": {"vms": vms, "vcpus": vms}, "released": released},
    }


def _check(first: list[dict[str, Any]], quota: dict[str, Any], then: list[dict[str, Any]]) -> int:
    dog = bench.Watchdog(Reads([first, then], quota), quota=True)
    dog._flavors = {"small": {"vcpus": 1, "memory": "1Gi"}}
    dog.check_once()
    return int(dog.violations[bench.Watchdog.NAMES[3]])


Q = constants.QUOTA_FINALIZER
D = constants.VM_FINALIZER


def test_a_release_and_prune_between_two_reads_is_not_a_shortfall() -> None:
    # b was listed with its quota finalizer; by the quota read its charge was off and its
    # uid already pruned (its finalizer went, another release followed): not held any more.
    first = [_vm("a", D), _vm("b", Q, D, deleting=True)]
    then = [_vm("a", D), _vm("b", D, deleting=True)]
    assert _check(first, _quota(1, []), then) == 0


def test_a_vm_that_still_holds_its_finalizer_and_is_not_released_is_counted() -> None:
    first = [_vm("a", D), _vm("b", Q, D, deleting=True)]
    assert _check(first, _quota(1, []), list(first)) == 1, "b's charge went missing"
    assert _check(first, _quota(1, ["uid-b"]), list(first)) == 0, "b was released"
    assert _check(first, _quota(2, []), list(first)) == 0


def test_a_vm_that_is_not_being_deleted_always_holds_a_charge() -> None:
    first = [_vm("a", D), _vm("b", D)]
    assert _check(first, _quota(1, []), list(first)) == 1
    assert _check(first, _quota(1, []), [_vm("a", D)]) == 0, "b went between the reads"
