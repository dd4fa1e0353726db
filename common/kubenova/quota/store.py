"""Where the quota ledger reads and writes: the VMQuota of a namespace, its VMs and the
flavors. Does I/O. One small interface (`QuotaStore`, which the unit tests fake) and its
implementation over the API server, `ApiStore`: `kubenova.kube.aio`, on the event loop with no
thread hop (it saves about a millisecond per compare-and-swap against the synchronous client,
most of the webhook's own share of admission latency), retried with short back-offs (an
admission review has seconds, not minutes).

A lost compare-and-swap (409) or a vanished quota (404) is reported as `ConflictError`.
"""

from __future__ import annotations

from typing import Any, Protocol

import aiohttp
from kubernetes.client.exceptions import ApiException

from kubenova.api import constants
from kubenova.api.flavor import Flavor
from kubenova.api.quota import QuotaAmounts, VMQuota
from kubenova.api.vm import VirtualMachine
from kubenova.kube import aio, client

_PATH = f"/apis/{constants.GROUP}/{constants.VERSION}"
RETRY_ATTEMPTS = 5
RETRY_BASE = 0.05
RETRY_CAP = 1.0
TIMEOUT = 10.0


class ConflictError(Exception):
    """The object changed (409) or went away (404) since it was read."""


class StoreError(Exception):
    """The API server answered with an error that is neither a conflict nor retryable."""


class QuotaStore(Protocol):
    async def quotas(self, namespace: str) -> list[dict[str, Any]]: ...

    async def write_status(self, body: dict[str, Any]) -> dict[str, Any]:
        """PUT the status subresource; `body` carries the resourceVersion it was read at."""
        ...

    async def vms(self, namespace: str) -> list[VirtualMachine]: ...

    async def flavors(self) -> dict[str, Flavor]: ...


def status_body(raw: dict[str, Any], used: QuotaAmounts) -> dict[str, Any]:
    """The PUT body that sets `status.used`, conditional on `raw`'s resourceVersion."""
    meta = raw["metadata"]
    return {
        "apiVersion": constants.API_VERSION,
        "kind": "VMQuota",
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "resourceVersion": meta["resourceVersion"],
        },
        "spec": raw["spec"],
        "status": {**(raw.get("status") or {}), "used": used.to_dict()},
    }


class ApiStore:
    """The ledger's calls over one `aio.Session` (the official client's configuration and
    credentials; a rotated token is picked up)."""

    def __init__(self, session: aio.Session) -> None:
        self.session = session

    async def call(
        self, method: str, path: str, body: Any = None, content_type: str = aio.JSON
    ) -> dict[str, Any]:
        """One request, retried on 429, 5xx, connection errors and time-outs. A PUT answered
        404 or 409 raises `ConflictError`; any other failure `StoreError`, with the status."""
        try:
            return await client.retrying(
                lambda: self.session.request(
                    method, path, body=body, content_type=content_type, timeout=TIMEOUT
                ),
                attempts=RETRY_ATTEMPTS,
                base_delay=RETRY_BASE,
                max_delay=RETRY_CAP,
            )
        except ApiException as e:
            if e.status in (404, 409) and method in ("PUT", "PATCH"):
                raise ConflictError(str(e.reason)) from e
            raise StoreError(f"{method} {path}: {e.status} {e.reason}") from e
        except (aiohttp.ClientError, TimeoutError) as e:
            raise StoreError(f"{method} {path}: {e or type(e).__name__}") from e

    async def quotas(self, namespace: str) -> list[dict[str, Any]]:
        data = await self.call("GET", f"{_PATH}/namespaces/{namespace}/{VMQuota.crd.plural}")
        return list(data.get("items", []))

    async def write_status(self, body: dict[str, Any]) -> dict[str, Any]:
        meta = body["metadata"]
        path = f"{_PATH}/namespaces/{meta['namespace']}/{VMQuota.crd.plural}/{meta['name']}"
        return await self.call("PUT", f"{path}/status", body)

    async def vms(self, namespace: str) -> list[VirtualMachine]:
        data = await self.call("GET", f"{_PATH}/namespaces/{namespace}/virtualmachines")
        return [VirtualMachine.parse(r) for r in data.get("items", [])]

    async def flavors(self) -> dict[str, Flavor]:
        data = await self.call("GET", f"{_PATH}/{Flavor.crd.plural}")
        found = (Flavor.parse(r) for r in data.get("items", []))
        return {f.metadata.name: f for f in found}

    def vm_path(self, namespace: str, name: str) -> str:
        plural = VirtualMachine.crd.plural
        return aio.object_path(constants.GROUP, constants.VERSION, plural, name, namespace)

    async def read_vm(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The VM as it is now (a quorum read); None if it is gone."""
        try:
            return await self.call("GET", self.vm_path(namespace, name))
        except StoreError as e:
            if isinstance(e.__cause__, ApiException) and e.__cause__.status == 404:
                return None
            raise

    async def patch_vm(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        """A merge patch of the VM; `ConflictError` if it changed since (409) or is gone."""
        await self.call("PATCH", self.vm_path(namespace, name), patch, aio.MERGE_PATCH)
