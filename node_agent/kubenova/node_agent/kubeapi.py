"""The agent's Kubernetes calls: the VMs bound to its host (list + watch with the server-side
field selector status.host), their status and finalizer, Flavors, its Host object and events.
Does I/O.

One-shot calls go through the synchronous client (`kube.client.call()`, in a worker thread);
the VMs come through `kube.watch.Reflector` on the event loop, the operator's own
list-and-watch (pages, bookmarks, resume, a list again after 410).
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import logging
import uuid
from collections.abc import Callable
from typing import Any, cast

import kubernetes
from kubernetes.client.exceptions import ApiException

from kubenova.api import constants
from kubenova.api.flavor import Flavor
from kubenova.kube import aio, client, watch
from kubenova.node_agent import transfer

log = logging.getLogger(__name__)

RawObject = dict[str, Any]
VM_PLURAL = "virtualmachines"
MERGE_PATCH = "application/merge-patch+json"
HOST_EVENT_NAMESPACE = "default"


async def _call(fn: Callable[..., object], *args: Any, **kwargs: Any) -> RawObject:
    """`client.call()` of a custom-objects method, whose answers are plain dicts."""
    return cast(RawObject, await client.call(fn, *args, **kwargs))


def vm_key(obj: RawObject) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


class KubeAPI:
    def __init__(self, api: kubernetes.client.ApiClient, host: str, namespace: str) -> None:
        self.custom = kubernetes.client.CustomObjectsApi(api)
        self.core = kubernetes.client.CoreV1Api(api)
        self.host = host
        self.namespace = namespace
        # The VMs bound here: status.host is a selectable field of the CRD, so the API server
        # filters the list and the watch (and a VM migrated away leaves this watch as DELETED).
        self.selector = f"{constants.FIELD_HOST}={host}"
        self.http = aio.Session(api)
        self._flavors: dict[str, Flavor] = {}

    # -- VirtualMachines ------------------------------------------------------------------

    async def patch_vm_status(self, namespace: str, name: str, body: RawObject) -> RawObject:
        return await _call(
            self.custom.patch_namespaced_custom_object_status,
            constants.GROUP,
            constants.VERSION,
            namespace,
            VM_PLURAL,
            name,
            body,
            _content_type=MERGE_PATCH,
        )

    async def get_vm(self, namespace: str, name: str) -> RawObject | None:
        """A VM by name, wherever it is bound (None: it does not exist)."""
        try:
            return await _call(
                self.custom.get_namespaced_custom_object,
                constants.GROUP,
                constants.VERSION,
                namespace,
                VM_PLURAL,
                name,
            )
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    async def patch_migration_status(self, namespace: str, name: str, status: RawObject) -> None:
        """The source agent's part of a VMMigration's status: `transfer`, `progressPercent`."""
        await client.call(
            self.custom.patch_namespaced_custom_object_status,
            constants.GROUP,
            constants.VERSION,
            namespace,
            "vmmigrations",
            name,
            {"status": status},
            _content_type=MERGE_PATCH,
        )

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
                await client.call(
                    self.custom.patch_namespaced_custom_object,
                    constants.GROUP,
                    constants.VERSION,
                    namespace,
                    VM_PLURAL,
                    name,
                    body,
                    _content_type=MERGE_PATCH,
                )
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
        try:
            raw = await _call(
                self.custom.get_cluster_custom_object,
                constants.GROUP,
                constants.VERSION,
                "flavors",
                name,
            )
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        flavor = Flavor.parse(raw)
        self._flavors[name] = flavor
        return flavor

    async def secret_data(self, namespace: str, name: str) -> dict[str, bytes] | None:
        """A Secret's data, decoded (None: it does not exist). Callers must keep the values out
        of logs, events and statuses: they may be credentials."""
        try:
            secret: Any = await client.call(self.core.read_namespaced_secret, name, namespace)
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        return {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}

    # -- VMImages (the host's image cache) -----------------------------------------------

    async def vmimage(self, name: str) -> RawObject | None:
        """A VMImage by name (None: there is none, so the name is an admin's pre-provisioned
        file in the image store)."""
        return await self._cluster_object("vmimages", name)

    async def list_vmimages(self) -> list[RawObject]:
        listing = await _call(
            self.custom.list_cluster_custom_object, constants.GROUP, constants.VERSION, "vmimages"
        )
        return list(listing.get("items") or [])

    async def patch_vmimage_status(self, name: str, body: RawObject) -> RawObject:
        """A merge patch of a VMImage's status; `body` carries the resourceVersion it was
        computed from, so a stale write fails with 409."""
        return await _call(
            self.custom.patch_cluster_custom_object_status,
            constants.GROUP,
            constants.VERSION,
            "vmimages",
            name,
            body,
            _content_type=MERGE_PATCH,
        )

    async def pool(self, name: str) -> RawObject | None:
        """A ResourcePool by name (None: it does not exist)."""
        return await self._cluster_object("resourcepools", name)

    async def _cluster_object(self, plural: str, name: str) -> RawObject | None:
        try:
            return await _call(
                self.custom.get_cluster_custom_object,
                constants.GROUP,
                constants.VERSION,
                plural,
                name,
            )
        except ApiException as e:
            if e.status == 404:
                return None
            raise

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
        try:
            await client.call(
                self.custom.create_cluster_custom_object,
                constants.GROUP,
                constants.VERSION,
                "hosts",
                body,
            )
            return
        except ApiException as e:
            if e.status != 409:
                raise
        current = await _call(
            self.custom.get_cluster_custom_object,
            constants.GROUP,
            constants.VERSION,
            "hosts",
            self.host,
        )
        have: dict[str, str] = (current.get("metadata") or {}).get("labels") or {}
        missing = {k: v for k, v in labels.items() if k not in have}
        kept = sorted(k for k, v in labels.items() if k in have and have[k] != v)
        if kept:
            log.info("Host %s keeps the labels %s as set on it", self.host, ", ".join(kept))
        if not missing:
            return
        await client.call(
            self.custom.patch_cluster_custom_object,
            constants.GROUP,
            constants.VERSION,
            "hosts",
            self.host,
            {"metadata": {"labels": missing}},
            _content_type=MERGE_PATCH,
        )

    async def migration_offer(self, host: str) -> transfer.Offer | None:
        """What Host `host` offers live migrations at, in its own status (None: no such Host)."""
        try:
            raw = await _call(
                self.custom.get_cluster_custom_object,
                constants.GROUP,
                constants.VERSION,
                "hosts",
                host,
            )
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        offered = (raw.get("status") or {}).get("migration") or {}
        return transfer.Offer(str(offered.get("uri") or ""), str(offered.get("address") or ""))

    async def patch_host_status(self, status: RawObject) -> RawObject:
        """Returns the Host as it is now."""
        return await _call(
            self.custom.patch_cluster_custom_object_status,
            constants.GROUP,
            constants.VERSION,
            "hosts",
            self.host,
            {"status": status},
            _content_type=MERGE_PATCH,
        )

    async def clear_host_annotation(self, key: str) -> None:
        await client.call(
            self.custom.patch_cluster_custom_object,
            constants.GROUP,
            constants.VERSION,
            "hosts",
            self.host,
            {"metadata": {"annotations": {key: None}}},
            _content_type=MERGE_PATCH,
        )

    async def host_event(self, reason: str, message: str, kind: str = "Warning") -> None:
        """An event about this Host. The Host is cluster-scoped, so its events live in
        `default`, as a Node's do (the API server refuses any other namespace)."""
        now = dt.datetime.now(dt.UTC)
        body = kubernetes.client.CoreV1Event(
            metadata=kubernetes.client.V1ObjectMeta(
                name=f"{self.host}.{uuid.uuid4().hex[:12]}", namespace=HOST_EVENT_NAMESPACE
            ),
            involved_object=kubernetes.client.V1ObjectReference(
                api_version=constants.API_VERSION, kind="Host", name=self.host
            ),
            reason=reason,
            message=message,
            type=kind,
            source=kubernetes.client.V1EventSource(component="kubenova-agent", host=self.host),
            first_timestamp=now,
            last_timestamp=now,
            count=1,
        )
        try:
            await client.call(self.core.create_namespaced_event, HOST_EVENT_NAMESPACE, body)
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
