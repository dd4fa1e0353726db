"""Fixture builders for the operator's pure modules: API objects with only what a test is
about spelled out."""

from __future__ import annotations

import datetime as dt
from typing import Any

from kubenova.api import Host, VirtualMachine, VMMigration

T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


def make_vm(
    name: str = "web",
    *,
    phase: str = "Running",
    host: str | None = "h1",
    annotations: dict[str, str] | None = None,
    deleting: bool = False,
    finalizers: list[str] | None = None,
    **spec: Any,
) -> VirtualMachine:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": "team",
        "uid": f"uid-{name}",
        "annotations": annotations or {},
        "finalizers": finalizers or [],
    }
    if deleting:
        meta["deletionTimestamp"] = T0.isoformat()
    status: dict[str, Any] = {"phase": phase}
    if host:
        status["host"] = host
    return VirtualMachine.parse(
        {
            "apiVersion": "kubenova.io/v1alpha1",
            "kind": "VirtualMachine",
            "metadata": meta,
            "spec": {"flavor": "small", "boot": {"image": "base.qcow2"}, **spec},
            "status": status,
        }
    )


def make_migration(
    name: str = "m1",
    vm: str = "web",
    *,
    target: str | None = None,
    phase: str = "Pending",
    status: dict[str, Any] | None = None,
    deleting: bool = False,
    finalizers: list[str] | None = None,
    timeout: int = 600,
) -> VMMigration:
    spec: dict[str, Any] = {"vmName": vm, "timeoutSeconds": timeout}
    if target:
        spec["targetHost"] = target
    meta: dict[str, Any] = {"name": name, "namespace": "team", "finalizers": finalizers or []}
    if deleting:
        meta["deletionTimestamp"] = T0.isoformat()
    return VMMigration.parse(
        {
            "apiVersion": "kubenova.io/v1alpha1",
            "kind": "VMMigration",
            "metadata": meta,
            "spec": spec,
            "status": {"phase": phase, **(status or {})},
        }
    )


def make_host(name: str = "h1", annotations: dict[str, str] | None = None) -> Host:
    return Host.parse(
        {
            "apiVersion": "kubenova.io/v1alpha1",
            "kind": "Host",
            "metadata": {"name": name, "annotations": annotations or {}},
        }
    )
