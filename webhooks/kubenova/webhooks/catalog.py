"""Flavors and ResourcePools as the webhook sees them: a cache kept by list and watch, so
admitting a VM costs no API round trip for them. Does I/O.

A name missing from the cache is looked up with a GET before it is called missing, so an
object created a moment ago is never refused because its watch event is still on the way.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Generic, TypeVar

from kubernetes.client.exceptions import ApiException

from kubenova.api import constants
from kubenova.api.flavor import Flavor
from kubenova.api.meta import InvalidObjectError, Resource
from kubenova.api.pool import ResourcePool
from kubenova.kube import aio
from kubenova.kube.watch import Reflector

log = logging.getLogger(__name__)
R = TypeVar("R", bound=Resource)


class Store(Generic[R]):
    """Every object of one cluster-scoped kind, by name, fed by a `Reflector` (the watch
    layer of every kubenova component) on the event loop."""

    def __init__(self, session: aio.Session, kind: type[R]) -> None:
        self.session = session
        self.kind = kind
        self.plural = kind.crd.plural
        self.objects: dict[str, R] = {}
        self.synced = asyncio.Event()
        self.reflector = Reflector(
            session,
            f"/apis/{constants.GROUP}/{constants.VERSION}/{self.plural}",
            self._on_event,
            name=self.plural,
            on_synced=self.synced.set,
        )
        self._task: asyncio.Task[None] | None = None

    def _parse(self, raw: dict[str, Any]) -> R | None:
        try:
            return self.kind.parse(raw)
        except InvalidObjectError as e:
            log.warning("ignoring unparsable %s: %s", self.kind.__name__, e)
            return None

    def _on_event(self, kind: str, raw: dict[str, Any]) -> None:
        name = str((raw.get("metadata") or {}).get("name"))
        if kind == "DELETED":
            self.objects.pop(name, None)
        elif (obj := self._parse(raw)) is not None:
            self.objects[name] = obj
        else:
            self.objects.pop(name, None)  # its last readable version is gone too

    def start(self) -> None:
        self._task = asyncio.create_task(self.reflector.run(), name=f"watch-{self.plural}")

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def get(self, name: str) -> R | None:
        """The object, from the cache or (on a miss) from the API server."""
        obj = self.objects.get(name)
        if obj is not None:
            return obj
        path = aio.object_path(constants.GROUP, constants.VERSION, self.plural, name, None)
        try:
            raw = await self.session.call("GET", path)
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

    def __init__(self, session: aio.Session) -> None:
        self.flavors = Store(session, Flavor)
        self.pools = Store(session, ResourcePool)

    async def start(self, timeout: float = 30.0) -> None:
        """Start watching; return once both kinds are listed."""
        for store in (self.flavors, self.pools):
            store.start()
        for store in (self.flavors, self.pools):
            try:
                await asyncio.wait_for(store.synced.wait(), timeout)
            except TimeoutError:
                raise TimeoutError(f"could not list {store.plural} within {timeout:.0f}s") from None

    def stop(self) -> None:
        self.flavors.stop()
        self.pools.stop()
