"""Flavors and ResourcePools as the webhook sees them: a cache kept by list and watch, so
admitting a VM costs no API round trip for them. Does I/O.

A name missing from the cache is looked up with a GET before it is called missing, so an
object created a moment ago is never refused because its watch event is still on the way.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any, Generic, TypeVar

import kubernetes
from kubernetes.client.exceptions import ApiException

from kubenova.api import constants
from kubenova.api.flavor import Flavor
from kubenova.api.meta import InvalidObjectError, Resource
from kubenova.api.pool import ResourcePool
from kubenova.kube import client

log = logging.getLogger(__name__)
_watch: Any = kubernetes.watch  # untyped
R = TypeVar("R", bound=Resource)

WATCH_TIMEOUT = 300
"""Seconds a watch call lasts before it is renewed."""


class Store(Generic[R]):
    """Every object of one cluster-scoped kind, by name, fed by a watch thread."""

    def __init__(self, api: kubernetes.client.ApiClient, kind: type[R]) -> None:
        self.kind = kind
        self.plural = kind.crd.plural
        self.custom = kubernetes.client.CustomObjectsApi(api)
        self.objects: dict[str, R] = {}
        self.synced = threading.Event()
        self._stop = threading.Event()

    def _parse(self, raw: dict[str, Any]) -> R | None:
        try:
            return self.kind.parse(raw)
        except InvalidObjectError as e:
            log.warning("ignoring unparsable %s: %s", self.kind.__name__, e)
            return None

    def _list(self) -> str:
        listing: Any = self.custom.list_cluster_custom_object(
            constants.GROUP, constants.VERSION, self.plural
        )
        objects = {}
        for raw in listing.get("items", []):
            obj = self._parse(raw)
            if obj is not None:
                objects[obj.metadata.name] = obj
        self.objects = objects
        self.synced.set()
        return str(listing["metadata"]["resourceVersion"])

    def run(self) -> None:
        """List, then watch until stopped; relist after any error (410 Gone included)."""
        while not self._stop.is_set():
            try:
                rv = self._list()
                w = _watch.Watch()
                for event in w.stream(
                    self.custom.list_cluster_custom_object,
                    constants.GROUP,
                    constants.VERSION,
                    self.plural,
                    resource_version=rv,
                    timeout_seconds=WATCH_TIMEOUT,
                ):
                    if self._stop.is_set():
                        w.stop()
                        break
                    raw = event["object"]
                    if event["type"] == "ERROR":
                        break
                    name = raw.get("metadata", {}).get("name")
                    if event["type"] == "DELETED":
                        self.objects.pop(name, None)
                    elif (obj := self._parse(raw)) is not None:
                        self.objects[name] = obj
            except Exception as e:  # a watch thread must outlive any API hiccup
                log.warning("%s watch failed, relisting: %s", self.plural, e)
                self._stop.wait(1.0)

    def start(self) -> None:
        threading.Thread(target=self.run, name=f"watch-{self.plural}", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    async def get(self, name: str) -> R | None:
        """The object, from the cache or (on a miss) from the API server."""
        obj = self.objects.get(name)
        if obj is not None:
            return obj
        try:
            raw: Any = await client.call(
                self.custom.get_cluster_custom_object,
                constants.GROUP,
                constants.VERSION,
                self.plural,
                name,
            )
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        return self._parse(raw)

    def names(self) -> list[str]:
        return sorted(self.objects)

    def all(self) -> list[R]:
        return list(self.objects.values())


class Catalog:
    """The flavors and pools."""

    def __init__(self, api: kubernetes.client.ApiClient) -> None:
        self.flavors = Store(api, Flavor)
        self.pools = Store(api, ResourcePool)

    async def start(self, timeout: float = 30.0) -> None:
        """Start watching; return once both kinds are listed."""
        for store in (self.flavors, self.pools):
            store.start()
        for store in (self.flavors, self.pools):
            ok = await asyncio.to_thread(store.synced.wait, timeout)
            if not ok:
                raise TimeoutError(f"could not list {store.plural} within {timeout:.0f}s")

    def stop(self) -> None:
        self.flavors.stop()
        self.pools.stop()
