"""Where the quota ledger reads and writes: the VMQuota of a namespace, its VMs and the
flavors. Does I/O. Two implementations of one small interface:

- `KubeStore`: the official client through `kubenova.kube.client.call` (a worker thread with
  retries). What the operator gets by default.
- `HTTPStore`: aiohttp straight to the API server, no thread hop. The webhook's charge path
  uses it: it saves about a millisecond per compare-and-swap, which is most of the webhook's
  own share of admission latency.

Both report a lost compare-and-swap (409) or a vanished quota (404) as `ConflictError`.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any, Protocol

import aiohttp
import kubernetes
from kubernetes.client.exceptions import ApiException

from kubenova.api import constants
from kubenova.api.flavor import Flavor
from kubenova.api.quota import QuotaAmounts, VMQuota
from kubenova.api.vm import VirtualMachine
from kubenova.kube import client

_PATH = f"/apis/{constants.GROUP}/{constants.VERSION}"
RETRY_ATTEMPTS = 5
RETRY_BASE = 0.05
RETRY_CAP = 1.0


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


class KubeStore:
    def __init__(self, api: kubernetes.client.ApiClient) -> None:
        self.custom = kubernetes.client.CustomObjectsApi(api)

    async def _list(self, namespace: str | None, plural: str) -> list[dict[str, Any]]:
        g, v = constants.GROUP, constants.VERSION
        if namespace is None:
            listing: Any = await client.call(self.custom.list_cluster_custom_object, g, v, plural)
        else:
            listing = await client.call(
                self.custom.list_namespaced_custom_object, g, v, namespace, plural
            )
        return list(listing.get("items", []))

    async def quotas(self, namespace: str) -> list[dict[str, Any]]:
        return await self._list(namespace, VMQuota.crd.plural)

    async def write_status(self, body: dict[str, Any]) -> dict[str, Any]:
        meta = body["metadata"]
        try:
            out: Any = await client.call(
                self.custom.replace_namespaced_custom_object_status,
                constants.GROUP,
                constants.VERSION,
                meta["namespace"],
                VMQuota.crd.plural,
                meta["name"],
                body,
            )
        except ApiException as e:
            if e.status in (404, 409):
                raise ConflictError(str(e.reason)) from e
            raise
        return dict(out)

    async def vms(self, namespace: str) -> list[VirtualMachine]:
        return [VirtualMachine.parse(r) for r in await self._list(namespace, "virtualmachines")]

    async def flavors(self) -> dict[str, Flavor]:
        found = (Flavor.parse(r) for r in await self._list(None, Flavor.crd.plural))
        return {f.metadata.name: f for f in found}


class HTTPStore:
    """The same calls over one aiohttp session, authenticated as the kubernetes client is
    (client certificate or bearer token, refreshed the way its configuration says)."""

    def __init__(self, api: kubernetes.client.ApiClient) -> None:
        self.config: Any = api.configuration
        self.server = str(self.config.host).rstrip("/")
        context = ssl.create_default_context(cafile=self.config.ssl_ca_cert)
        if not self.config.verify_ssl:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.config.cert_file:
            context.load_cert_chain(self.config.cert_file, self.config.key_file)
        self._ssl = context
        self._session: aiohttp.ClientSession | None = None

    def _headers(self) -> dict[str, str]:
        # What the kubernetes client itself sends: its loaders keep the token under
        # `BearerToken` (in-cluster and kubeconfig alike); asking for `authorization` found
        # nothing, so a service account called the API server as system:anonymous.
        # auth_settings() runs the refresh hook, so rotated tokens are picked up.
        headers: dict[str, str] = {}
        for setting in self.config.auth_settings().values():
            if setting.get("in") == "header" and setting.get("value"):
                headers[str(setting["key"]).title()] = str(setting["value"])
        return headers

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl, limit=32),
                timeout=aiohttp.ClientTimeout(total=10),
                cookie_jar=aiohttp.DummyCookieJar(),  # the API server sets none
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        """One request, retried on 429, 5xx and connection errors with short back-offs: an
        admission review has seconds, not minutes."""
        delay = RETRY_BASE
        for attempt in range(1, RETRY_ATTEMPTS + 1):
            try:
                async with self.session().request(
                    method, self.server + path, json=body, headers=self._headers()
                ) as r:
                    data: Any = await r.json(content_type=None)
                    if r.status in (404, 409) and method == "PUT":
                        raise ConflictError(str(data.get("message", r.status)))
                    if r.status < 400:
                        return dict(data)
                    error = f"{method} {path}: {r.status} {data.get('message', '')}"
                    if r.status not in client.RETRY_STATUSES:
                        raise StoreError(error)
                    wait = min(float(r.headers.get("Retry-After", delay)), RETRY_CAP)
            except (aiohttp.ClientConnectionError, TimeoutError) as e:
                error, wait = f"{method} {path}: {e}", delay
            if attempt == RETRY_ATTEMPTS:
                break
            await asyncio.sleep(wait)
            delay = min(delay * 2, RETRY_CAP)
        raise StoreError(error)

    async def quotas(self, namespace: str) -> list[dict[str, Any]]:
        data = await self._call("GET", f"{_PATH}/namespaces/{namespace}/{VMQuota.crd.plural}")
        return list(data.get("items", []))

    async def write_status(self, body: dict[str, Any]) -> dict[str, Any]:
        meta = body["metadata"]
        path = f"{_PATH}/namespaces/{meta['namespace']}/{VMQuota.crd.plural}/{meta['name']}"
        return await self._call("PUT", f"{path}/status", body)

    async def vms(self, namespace: str) -> list[VirtualMachine]:
        data = await self._call("GET", f"{_PATH}/namespaces/{namespace}/virtualmachines")
        return [VirtualMachine.parse(r) for r in data.get("items", [])]

    async def flavors(self) -> dict[str, Flavor]:
        data = await self._call("GET", f"{_PATH}/{Flavor.crd.plural}")
        found = (Flavor.parse(r) for r in data.get("items", []))
        return {f.metadata.name: f for f in found}
