"""Host failure: Unknown, grace, fencing, and which VMs are recreated."""

from __future__ import annotations

import datetime as dt

import pytest

from kubenova.api import constants
from kubenova.operator import fencing
from tests.unit.operator.builders import T0, make_host, make_vm

pytestmark = pytest.mark.unit
FENCE = fencing.AdminConfirmation()
LOST = T0 - dt.timedelta(seconds=100)


def test_bound_vms_become_unknown_but_not_twice_nor_while_deleted() -> None:
    vms = [
        make_vm("running"),
        make_vm("migrating", phase="Migrating"),
        make_vm("stopped", phase="Stopped"),
        make_vm("unknown", phase="Unknown"),
        make_vm("deleting", deleting=True),
    ]
    names = [vm.metadata.name for vm in fencing.to_mark_unknown(vms)]
    assert names == ["running", "migrating", "stopped"]


def test_lost_since_is_the_end_of_the_lease() -> None:
    renew = T0 - dt.timedelta(seconds=50)
    assert fencing.lost_since(renew, 40) == T0 - dt.timedelta(seconds=10)
    assert fencing.lost_since(None, 40) is None


def test_nothing_is_recreated_within_the_grace_even_when_fenced() -> None:
    host = make_host(annotations={constants.ANNOTATION_FENCED: "true"})
    v = fencing.verdict(host, LOST, 120.0, FENCE, T0)
    assert not v.recreate and "grace is 120s" in v.why


def test_after_the_grace_an_unfenced_host_keeps_its_vms_and_says_how_to_fence() -> None:
    v = fencing.verdict(make_host(), LOST, 60.0, FENCE, T0)
    assert not v.recreate
    assert f"{constants.ANNOTATION_FENCED}=true" in v.why


@pytest.mark.parametrize("value", ["true", "True", " true "])
def test_an_admins_confirmation_fences_the_host(value: str) -> None:
    host = make_host(annotations={constants.ANNOTATION_FENCED: value})
    v = fencing.verdict(host, LOST, 60.0, FENCE, T0)
    assert v.recreate and "confirmed by annotation" in v.why


def test_other_values_do_not_fence() -> None:
    host = make_host(annotations={constants.ANNOTATION_FENCED: "maybe"})
    assert not fencing.verdict(host, LOST, 60.0, FENCE, T0).recreate


def test_a_pluggable_fence_decides() -> None:
    class PowerHook:
        def confirmed(self, host: object, lost_since: dt.datetime, now: dt.datetime) -> str | None:
            return "powered off through the BMC"

    v = fencing.verdict(make_host(), LOST, 60.0, PowerHook(), T0)
    assert v.recreate and "BMC" in v.why


def test_unknown_vms_are_recreated_deleted_ones_released() -> None:
    vms = [
        make_vm("unknown", phase="Unknown"),
        make_vm("failed", phase="Failed"),
        make_vm("running"),
        make_vm("gone", phase="Unknown", deleting=True, finalizers=[constants.VM_FINALIZER]),
    ]
    assert [v.metadata.name for v in fencing.to_recreate(vms)] == ["unknown", "failed"]
    assert [v.metadata.name for v in fencing.to_release(vms)] == ["gone"]
