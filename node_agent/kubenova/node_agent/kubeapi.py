"""The agent's Kubernetes calls: the VMs bound to its host (list + watch with the server-side
field selector status.host), their status and finalizer, Flavors, its Host object and events.
Does I/O.

Everything goes through `kube.aio` on the event loop (retried as `kube.client.call` retries):
one-shot calls through its `Session`, the VMs through `kube.watch.Reflector`, the operator's
own list-and-watch (pages, bookmarks, resume, a list again after 410).
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Callable
from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException

from kubenova.api import constants
from kubenova.api.flavor import Flavor
from kubenova.kube import aio, events, watch
from kubenova.node_agent import transfer

log = logging.getLogger(__name__)

RawObject = dict[str, Any]
VM_PLURAL = "virtualmachines"


def vm_key(obj: RawObject) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


def _path(plural: str, name: str, namespace: str | None = None) -> str:
    return aio.object_path(constants.GROUP, constants.VERSION, plural, name, namespace)


class KubeAPI:
    def __init__(self, api: kubernetes.client.ApiClient, host: str, namespace: str) -> None:
        self.host = host
        self.namespace = namespace
        # The VMs bound here: status.host is a selectable field of the CRD, so the API server
        # filters the list and the watch (and a VM migrated away leaves this watch as DELETED).
        self.selector = f"{constants.FIELD_HOST}={host}"
        self.http = aio.Session(api)
        self._flavors: dict[str, Flavor] = {}

    async def _get(self, path: str) -> RawObject | None:
        """The object at `path`; None if there is none (404)."""
        try:
            return await self.http.call("GET", path)
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    async def _merge(self, path: str, body: RawObject) -> RawObject:
        """A merge patch of the object at `path`; the object as it is after."""
        return await self.http.call("PATCH", path, body=body, content_type=aio.MERGE_PATCH)

    # -- VirtualMachines ------------------------------------------------------------------

    async def patch_vm_status(self, namespace: str, name: str, body: RawObject) -> RawObject:
        return await self._merge(_path(VM_PLURAL, name, namespace) + "/status", body)

    async def get_vm(self, namespace: str, name: str) -> RawObject | None:
        """A VM by name, wherever it is bound (None: it does not exist)."""
        return await self._get(_path(VM_PLURAL, name, namespace))

    async def patch_migration_status(self, namespace: str, name: str, status: RawObject) -> None:
        """The source agent's part of a VMMigration's status: `transfer`, `progressPercent`."""
        await self._merge(_path("vmmigrations", name, namespace) + "/status", {"status": status})

    async def release_finalizer(self, namespace: str, name: str) -> None:
        """Remove the domain-cleanup finalizer, keeping any other, with a resourceVersion
        precondition (re-read and retry on conflict)."""
        for _ in range(5):
            obj = await self.get_vm(namespace, name)
            if obj is None:
                return
            meta = obj["metadata"]
            finalizers = list(meta.get("finalizers") or [])
            if constants.VM_FINALIZER not in finalizers:
                return
            body = {
                "metadata": {
                    "resourceVersion": meta["resourceVersion"],
                    "finalizers": [f for f in finalizers if f != constants.VM_FINALIZER],
                }
            }
            try:
                await self._merge(_path(VM_PLURAL, name, namespace), body)
                return
            except ApiException as e:
                if e.status == 404:
                    return
                if e.status != 409:
                    raise
        raise RuntimeError(f"VM {namespace}/{name}: finalizer kept changing under the agent")

    async def flavor(self, name: str) -> Flavor | None:
        """A Flavor by name, cached: a flavor in use cannot change."""
        cached = self._flavors.get(name)
        if cached is not None:
            return cached
        raw = await self._get(_path("flavors", name))
        if raw is None:
            return None
        flavor = Flavor.parse(raw)
        self._flavors[name] = flavor
        return flavor

    async def secret_data(self, namespace: str, name: str) -> dict[str, bytes] | None:
        """A Secret's data, decoded (None: it does not exist). Callers must keep the values out
        of logs, events and statuses: they may be credentials."""
        secret = await self._get(aio.object_path("", "v1", "secrets", name, namespace))
        if secret is None:
            return None
        return {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}

    # -- VMImages (the host's image cache) -----------------------------------------------

    async def vmimage(self, name: str) -> RawObject | None:
        """A VMImage by name (None: there is none, so the name is an admin's pre-provisioned
        file in the image store)."""
        return await self._get(_path("vmimages", name))

    async def list_vmimages(self) -> list[RawObject]:
        path = f"/apis/{constants.GROUP}/{constants.VERSION}/vmimages"
        return [item async for page in self.http.pages(path) for item in page.get("items") or []]

    async def patch_vmimage_status(self, name: str, body: RawObject) -> RawObject:
        """A merge patch of a VMImage's status; `body` carries the resourceVersion it was
        computed from, so a stale write fails with 409."""
        return await self._merge(_path("vmimages", name) + "/status", body)

    async def pool(self, name: str) -> RawObject | None:
        """A ResourcePool by name (None: it does not exist)."""
        return await self._get(_path("resourcepools", name))

    # -- the Host -------------------------------------------------------------------------

    async def ensure_host(self, labels: dict[str, str]) -> None:
        """Create the Host, or add those of our labels it lacks: a label an administrator set
        or changed since is theirs (a dedicated pool, a rack) and stays as it is, which is also
        all the agent-confinement policy lets an agent do."""
        body = {
            "apiVersion": constants.API_VERSION,
            "kind": "Host",
            "metadata": {"name": self.host, "labels": labels},
            "spec": {},
        }
        hosts = f"/apis/{constants.GROUP}/{constants.VERSION}/hosts"
        try:
            await self.http.call("POST", hosts, body=body)
            return
        except ApiException as e:
            if e.status != 409:
                raise
        current = await self.http.call("GET", _path("hosts", self.host))
        have: dict[str, str] = (current.get("metadata") or {}).get("labels") or {}
        missing = {k: v for k, v in labels.items() if k not in have}
        kept = sorted(k for k, v in labels.items() if k in have and have[k] != v)
        if kept:
            log.info("Host %s keeps the labels %s as set on it", self.host, ", ".join(kept))
        if not missing:
            return
        await self._merge(_path("hosts", self.host), {"metadata": {"labels": missing}})

    async def migration_offer(self, host: str) -> transfer.Offer | None:
        """What Host `host` offers live migrations at, in its own status (None: no such Host)."""
        raw = await self._get(_path("hosts", host))
        if raw is None:
            return None
        offered = (raw.get("status") or {}).get("migration") or {}
        return transfer.Offer(str(offered.get("uri") or ""), str(offered.get("address") or ""))

    async def patch_host_status(self, status: RawObject) -> RawObject:
        """Returns the Host as it is now."""
        return await self._merge(_path("hosts", self.host) + "/status", {"status": status})

    async def clear_host_annotation(self, key: str) -> None:
        await self._merge(_path("hosts", self.host), {"metadata": {"annotations": {key: None}}})

    async def host_event(self, reason: str, message: str, kind: str = "Warning") -> None:
        """An event about this Host. The Host is cluster-scoped, so its events live in
        `default`, as a Node's do (the API server refuses any other namespace)."""
        ref = events.ObjectRef(constants.API_VERSION, "Host", self.host, None, None)
        source = {"component": "kubenova-agent", "host": self.host}
        try:
            await events.post(self.http, events.event_body(ref, kind, reason, message, source))
        except ApiException as e:  # events are best effort
            log.warning("could not record event %s: %s", reason, e.reason)


class VMInformer:
    """The VMs bound to this host, kept current by list + watch; `on_change(key)` is called
    on the loop for every VM that changed (or vanished)."""

    def __init__(self, kube: KubeAPI, on_change: Callable[[str], None]) -> None:
        self.kube = kube
        self.on_change = on_change
        self.cache: dict[str, RawObject] = {}
        self.synced = asyncio.Event()
        self.reflector = watch.Reflector(
            kube.http,
            f"/apis/{constants.GROUP}/{constants.VERSION}/{VM_PLURAL}",
            self._deliver,
            name=f"virtualmachines on {kube.host}",
            params={"fieldSelector": kube.selector},
            on_synced=self.synced.set,
        )

    def get(self, key: str) -> RawObject | None:
        return self.cache.get(key)

    async def run(self) -> None:
        await self.reflector.run()

    async def close(self) -> None:
        await self.kube.http.close()

    def _deliver(self, kind: str, obj: RawObject) -> None:
        key = vm_key(obj)
        if kind == "DELETED":
            self.cache.pop(key, None)
        else:
            self.cache[key] = obj
        self.on_change(key)
