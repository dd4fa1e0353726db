"""The operator's VM status writes against the real API server: a JSON patch of what changed
with history entries appended (never the whole history rewritten), bounded at MAX_HISTORY with
the oldest dropped, and a write from a stale copy refused as a conflict."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from kubenova.api import VirtualMachine, constants, lifecycle
from kubenova.operator.controller import Controller, Settings
from tests.fixtures.operator import GROUP, VERSION, Cluster

pytestmark = [pytest.mark.apiserver]


def _change(i: int) -> lifecycle.Change:
    return lifecycle.Change(lifecycle.Event.UNSCHEDULABLE, "operator", f"0/{i} hosts: none fit")


def _one_vm(kn: Cluster, api: Any, namespace: str) -> Controller:
    """VM `web` in a pool of its own, and a controller (not started) to write it with."""
    kn.vm("web", kn.flavor(f"{namespace}-f"), kn.pool(f"{namespace}-p"))
    return Controller(Settings(identity="patch", namespace=namespace), api)


def test_status_writes_append_history_and_a_stale_copy_conflicts(
    kn: Cluster, api: Any, namespace: str
) -> None:
    ctl = _one_vm(kn, api, namespace)
    sent: list[Any] = []
    real = ctl.http.call

    async def call(method: str, path: str, **kwargs: Any) -> Any:
        if method == "PATCH" and path.endswith("/status"):
            sent.append(kwargs["body"])
        return await real(method, path, **kwargs)

    ctl.http.call = call  # type: ignore[method-assign]

    async def writes() -> VirtualMachine:
        held = ctl.parse_vm(kn.get_vm("web"))
        assert held is not None
        try:
            for i in range(constants.MAX_HISTORY + 5):
                new, _ = lifecycle.apply(held.status, _change(i), dt.datetime.now(dt.UTC))
                raw = await ctl.writes.vm_status(held, new.to_dict())
                fresh = ctl.parse_vm(raw)
                assert fresh is not None
                held = fresh
            return held
        finally:
            await ctl.http.close()

    held = asyncio.run(writes())
    history = kn.get_vm("web")["status"]["history"]
    assert len(history) == constants.MAX_HISTORY, "bounded, the oldest dropped"
    assert [h["message"] for h in history] == [
        f"0/{i} hosts: none fit" for i in range(5, constants.MAX_HISTORY + 5)
    ], "every entry appended in order, none lost or rewritten"
    assert len(held.status.history) == 1, "the operator holds only the last entry"
    later = sent[-1]
    assert not any(op["path"] == "/status/history" for op in later[1:])
    assert [op["path"] for op in later if "history" in op["path"]] == [
        "/status/history/0",
        "/status/history/-",
    ]
    assert len(json.dumps(later)) < 1500, "a write carries what changed, not the history"

    stale = held.model_copy(deep=True)
    kn.custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, "virtualmachines", "web",
        {"status": {"reason": "someone else wrote"}},
        _content_type="application/merge-patch+json",
    )  # fmt: skip

    async def stale_write() -> None:
        new, _ = lifecycle.apply(stale.status, _change(99), dt.datetime.now(dt.UTC))
        try:
            await ctl.writes.vm_status(stale, new.to_dict())
        finally:
            await ctl.http.close()

    with pytest.raises(ApiException) as e:
        asyncio.run(stale_write())
    assert e.value.status == 409
    assert kn.get_vm("web")["status"]["reason"] == "someone else wrote"


def test_a_write_asked_for_metadata_only_writes_the_status_and_answers_with_metadata(
    kn: Cluster, api: Any, namespace: str
) -> None:
    # The bind asks for this: the API server encodes no spec or status into the reply.
    ctl = _one_vm(kn, api, namespace)

    async def write() -> dict[str, Any]:
        held = ctl.parse_vm(kn.get_vm("web"))
        assert held is not None
        new, _ = lifecycle.apply(held.status, _change(1), dt.datetime.now(dt.UTC))
        try:
            return await ctl.writes.vm_status(held, new.to_dict(), metadata_only=True)
        finally:
            await ctl.http.close()

    reply = asyncio.run(write())
    stored = kn.get_vm("web")
    assert reply["kind"] == "PartialObjectMetadata"
    assert "status" not in reply and "spec" not in reply
    assert reply["metadata"]["resourceVersion"] == stored["metadata"]["resourceVersion"]
    assert reply["metadata"]["name"] == "web"
    assert stored["status"]["history"][-1]["message"] == "0/1 hosts: none fit"
