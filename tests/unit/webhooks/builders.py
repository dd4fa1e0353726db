"""Fixture builders for webhook unit tests: every argument has a default, so a test names
only what it is about."""

from __future__ import annotations

from typing import Any

from kubenova.api.flavor import Flavor
from kubenova.api.pool import ResourcePool
from kubenova.api.quota import QuotaAmounts
from kubenova.api.vm import VirtualMachine


def make_flavor(
    name: str = "small", vcpus: int = 2, memory: str = "4Gi", gpus: dict[str, int] | None = None
) -> Flavor:
    return Flavor.parse(
        {
            "kind": "Flavor",
            "metadata": {"name": name},
            "spec": {
                "vcpus": vcpus,
                "memory": memory,
                "gpus": [{"model": m, "count": c} for m, c in (gpus or {}).items()],
            },
        }
    )


def make_vm(
    name: str = "vm",
    namespace: str = "ns",
    flavor: str = "small",
    *,
    pool: str | None = None,
    status: dict[str, Any] | None = None,
    annotations: dict[str, str] | None = None,
    finalizers: list[str] | None = None,
    deleting: bool = False,
    **spec: Any,
) -> VirtualMachine:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "annotations": annotations or {},
        "finalizers": finalizers or [],
    }
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    body: dict[str, Any] = {"flavor": flavor, "boot": {"image": "a.qcow2"}, **spec}
    if pool:
        body["pool"] = pool
    return VirtualMachine.parse(
        {"kind": "VirtualMachine", "metadata": meta, "spec": body, "status": status or {}}
    )


def make_pool(
    name: str = "general",
    namespaces: list[str] | None = None,
    selector: dict[str, Any] | None = None,
    reservations: list[dict[str, Any]] | None = None,
    networks: list[str] | None = None,
) -> ResourcePool:
    return ResourcePool.parse(
        {
            "kind": "ResourcePool",
            "metadata": {"name": name},
            "spec": {
                "namespaces": namespaces or [],
                "hostSelector": selector or {},
                "reservations": reservations or [],
                "networks": networks or [],
            },
        }
    )


def amounts(**kw: Any) -> QuotaAmounts:
    return QuotaAmounts.model_validate(kw)
