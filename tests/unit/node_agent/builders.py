"""Fixture builders for the node agent's unit tests."""

from __future__ import annotations

import datetime as dt
from typing import Any

from kubenova.api.vm import RunStrategy, VirtualMachine
from kubenova.node_agent.hypervisor import Domain, DomainState, Owner, StopCause

UID = "6f1c2a4e-0d3b-4c59-9a7e-2f1b3c4d5e6f"
NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


def make_vm(
    name: str = "web-1",
    namespace: str = "team-a",
    *,
    uid: str = UID,
    annotations: dict[str, str] | None = None,
    status: dict[str, Any] | None = None,
    **spec: Any,
) -> VirtualMachine:
    body: dict[str, Any] = {"flavor": "small", "boot": {"image": "debian-12.qcow2"}}
    body.update(spec)
    return VirtualMachine.parse(
        {
            "apiVersion": "kubenova.io/v1alpha1",
            "kind": "VirtualMachine",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "uid": uid,
                "annotations": annotations or {},
            },
            "spec": body,
            "status": status or {},
        }
    )


def make_domain(
    state: DomainState = DomainState.RUNNING,
    cause: StopCause = StopCause.NONE,
    *,
    uid: str = UID,
    owned: bool = True,
    name: str = "team-a_web-1",
    restart_token: str | None = None,
) -> Domain:
    owner = Owner("team-a", name.partition("_")[2], uid) if owned else None
    return Domain(
        name=name,
        uuid=uid,
        state=state,
        cause=cause,
        owner=owner,
        restart_token=restart_token,
    )


def strategy(s: str) -> RunStrategy:
    return RunStrategy(s)
