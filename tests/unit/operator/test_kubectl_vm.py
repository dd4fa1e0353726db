"""The `kubectl vm` plugin's objects and patches."""

from __future__ import annotations

import datetime as dt

import pytest

from kubenova.api import VMMigration, constants
from kubenova.cli import kubectl_vm

pytestmark = pytest.mark.unit
NOW = dt.datetime(2026, 3, 1, 12, 30, 5, tzinfo=dt.UTC)


def test_migrate_builds_a_valid_vmmigration() -> None:
    body = kubectl_vm.build_migration("web", "team", "h2", 120)
    parsed = VMMigration.parse({**body, "metadata": {"name": "web-x", "namespace": "team"}})
    assert (parsed.spec.vm_name, parsed.spec.target_host, parsed.spec.timeout_seconds) == (
        "web",
        "h2",
        120,
    )
    assert body["metadata"]["generateName"] == "web-"
    assert "targetHost" not in kubectl_vm.build_migration("web", "team", None, None)["spec"]


def test_drain_cordons_and_annotates_and_uncordon_ends_it() -> None:
    drain = kubectl_vm.build_drain(NOW)
    assert drain["spec"] == {"unschedulable": True}
    assert drain["metadata"]["annotations"] == {constants.ANNOTATION_DRAIN: "2026-03-01T12:30:05Z"}
    uncordon = kubectl_vm.build_cordon(False)
    assert uncordon["metadata"]["annotations"] == {constants.ANNOTATION_DRAIN: None}
    assert "metadata" not in kubectl_vm.build_cordon(True)


def test_start_stop_restart_and_fence() -> None:
    assert kubectl_vm.build_run_strategy("Halted") == {"spec": {"runStrategy": "Halted"}}
    restart = kubectl_vm.build_restart(NOW)["metadata"]["annotations"]
    assert restart == {constants.ANNOTATION_RESTART_REQUESTED: "2026-03-01T12:30:05Z"}
    assert kubectl_vm.build_fence()["metadata"]["annotations"] == {
        constants.ANNOTATION_FENCED: "true"
    }


def test_drained_reads_the_hosts_condition() -> None:
    host = {"status": {"conditions": [
        {"type": "Ready", "status": "True"},
        {"type": constants.COND_DRAINED, "status": "False", "message": "VMs left: 1 migrate"},
    ]}}  # fmt: skip
    assert kubectl_vm.drained(host) == (False, "VMs left: 1 migrate")
    assert kubectl_vm.drained({}) == (False, "waiting for the operator")
