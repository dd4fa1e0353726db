"""What the operator's controllers share, as one narrow interface: the scheduling loop's
Controller and the controllers beside it (host failure, drains, migrations, re-balance) each
get a `Context` — the cache, the API writes, the event recorder, whether this replica leads —
and none of them reaches into another's privates.

`Writes` is every API write the controllers make (and the reads that settle one), on the
asynchronous client (`kube.aio`). VM status writes are JSON patches of what changed
(`World.status_patch`): a bind carries a few hundred bytes, not the whole status.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes.client.exceptions import ApiException

from kubenova.api import VirtualMachine, constants
from kubenova.kube import aio
from kubenova.kube.events import EventRecorder
from kubenova.operator.world import World

GROUP_PATH = f"/apis/{constants.GROUP}/{constants.VERSION}"
WRITE_TIMEOUT = 15.0
"""Seconds a VM write may wait for its answer. Without one, a write whose connection was cut
after it landed (a retried PATCH through a faulty network) could wait forever and hold its
bind; timed out, it is retried and answered 409, which the bind settles by reading the VM."""
LIST_PAGE = 500
"""Objects per page of the leader's lists."""


def path_of(plural: str, name: str, namespace: str | None = None) -> str:
    return aio.object_path(constants.GROUP, constants.VERSION, plural, name, namespace)


def vm_path(vm: VirtualMachine) -> str:
    return path_of("virtualmachines", vm.metadata.name, vm.metadata.namespace)


class Writes:
    def __init__(self, http: aio.Session, world: World) -> None:
        self.http = http
        self.world = world

    async def vm_status(
        self, vm: VirtualMachine, status: dict[str, Any], *, metadata_only: bool = False
    ) -> dict[str, Any]:
        """Write `status` (merge-patch form: keys left out stay, None removes) over `vm`'s,
        with its resourceVersion as precondition: a JSON patch of only what changed, history
        entries appended. The server's answer to a patch that no longer applies (422: the
        object moved on since `vm`) is a conflict like 409. The VM as it is after, or only its
        metadata (`metadata_only`: the bind, which needs no more, saves the API server the
        rest)."""
        ops = self.world.status_patch(vm, status)
        try:
            return await self.http.call(
                "PATCH",
                vm_path(vm) + "/status",
                body=ops,
                content_type=aio.JSON_PATCH,
                accept=aio.METADATA_ONLY if metadata_only else aio.JSON,
                timeout=WRITE_TIMEOUT,
            )
        except ApiException as e:
            if e.status == 422:
                e.status = 409
            raise

    async def read_vm(self, vm: VirtualMachine) -> dict[str, Any]:
        return await self.http.call("GET", vm_path(vm))

    async def vm_meta(self, vm: VirtualMachine, meta: dict[str, Any]) -> dict[str, Any]:
        """A merge patch of `vm`'s metadata; the VM as it is after."""
        return await self.patch(vm_path(vm), {"metadata": meta})

    async def patch(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """A merge patch of the object at `path`; the object as it is after."""
        return await self.http.call(
            "PATCH", path, body=body, content_type=aio.MERGE_PATCH, timeout=WRITE_TIMEOUT
        )

    async def cluster_status(self, plural: str, name: str, status: dict[str, Any]) -> None:
        """A merge patch of a cluster-scoped object's status; one deleted meanwhile is not
        an error."""
        try:
            await self.patch(path_of(plural, name) + "/status", {"status": status})
        except ApiException as e:
            if e.status != 404:
                raise

    async def create(self, plural: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        path = f"{GROUP_PATH}/namespaces/{namespace}/{plural}"
        return await self.http.call("POST", path, body=body)

    async def delete(self, path: str, body: dict[str, Any] | None = None) -> None:
        await self.http.call("DELETE", path, body=body)

    async def list(self, plural: str) -> list[dict[str, Any]]:
        """Every object of `plural`, cluster-wide, read a page of LIST_PAGE at a time."""
        return [
            item
            async for page in self.http.pages(f"{GROUP_PATH}/{plural}", LIST_PAGE)
            for item in page.get("items") or ()
        ]


@dataclass(frozen=True)
class Context:
    world: World
    writes: Writes
    recorder: EventRecorder
    leading: Callable[[], bool]
    wake: asyncio.Event
    """Set to make the scheduling loop look at its queue now."""
