"""List-and-watch of one resource on the event loop, as client-go's reflector does it.

List (a page at a time), then watch from the list's resourceVersion with bookmarks; a watch
that ends is resumed from the last version seen, and an expired one (410) lists again, with
objects that vanished in between delivered as DELETED. Events reach `on_event(type, object)`
in the event loop as raw JSON dicts, the object's `managedFields` dropped. `reach(version)`
is a new leader's consistency barrier: it waits until the watch has delivered everything up to
a consistent list's version, so a warm cache need not be listed again.

Why not kopf or the official client's watch: kopf runs each event through its cause detection,
per-object workers and handler invocation (about 40 % of the operator's CPU while binding, by
py-spy), and the synchronous client's watch needs a thread per stream. This is one aiohttp
stream per resource (aiohttp is kopf's own HTTP client), read in chunks and split on newlines,
so an object of any size fits.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import aiohttp

from kubenova.kube.aio import ExpiredError, RawObject, Session

log = logging.getLogger(__name__)

OnEvent = Callable[[str, RawObject], None]


def lines(buffer: bytearray, chunk: bytes) -> Iterator[bytes]:
    """Complete lines of a newline-delimited stream: `chunk` is appended to `buffer`, the
    whole lines are taken out of it and yielded, the incomplete tail stays for the next."""
    buffer += chunk
    start = 0
    while (end := buffer.find(b"\n", start)) >= 0:
        if end > start:
            yield bytes(buffer[start:end])
        start = end + 1
    del buffer[:start]


def _key(obj: RawObject) -> str:
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{ns}/{meta.get('name')}" if ns else str(meta.get("name"))


def _lean(obj: RawObject) -> RawObject:
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        meta.pop("managedFields", None)
    return obj


HURRY_TIMEOUT = 3
"""Seconds of a watch opened for `Reflector.reach`: the API server sends a bookmark 2 s before
a watch's time-out, so its current resourceVersion arrives about a second in."""


@dataclass
class Reflector:
    """One resource's list-and-watch (`path`: e.g. /apis/kubenova.io/v1alpha1/virtualmachines,
    cluster-wide). `run()` never returns: failures are logged and retried with capped
    back-off; only cancellation stops it."""

    session: Session
    path: str
    on_event: OnEvent
    name: str = ""
    page: int = 500
    timeout: int = 60
    """Seconds the API server keeps each watch open (it ends them; we resume)."""
    on_synced: Callable[[], None] | None = None
    """Called after each complete list, when the objects delivered are the API's."""
    params: dict[str, str] = field(default_factory=dict)
    """Of the list and the watch alike: a label or field selector."""
    keys: set[str] = field(default_factory=set)
    resource_version: str | None = None
    lists: int = 0
    """Complete lists so far (1 + relists after expiry or failure)."""
    _moved: asyncio.Event = field(default_factory=asyncio.Event)
    _hurry: int = 0
    _stream: aiohttp.ClientResponse | None = None
    _interrupted: bool = False
    _relist: bool = False

    async def run(self) -> None:
        delay = 0.5
        while True:
            try:
                if self.resource_version is None or self._relist:
                    self._relist = False
                    await self._list()
                    delay = 0.5
                await self._watch()
                delay = 0.5
            except asyncio.CancelledError:
                raise
            except ExpiredError:
                log.info("%s: watch expired; listing again", self.name or self.path)
                self.resource_version = None
            except Exception as e:
                what = self.name or self.path
                log.warning("%s: list/watch failed (%s); retrying in %.1f s", what, e, delay)
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 30.0)

    async def reach(self, version: str, timeout: float) -> bool:
        """True once every event up to resourceVersion `version` has been delivered: given
        the version of a consistent list read just before, the objects delivered so far are
        then at least as new as that list's, without listing them again. The watch open now
        is replaced by short ones, whose bookmarks carry the API server's progress, until
        then. False after `timeout`, or when the versions are not etcd's integers (they are
        opaque to clients by contract; the caller lists instead)."""
        try:
            want = int(version)
        except ValueError:
            return False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self._hurry += 1
        try:
            if not self._reached(want):
                self._interrupt()  # `run` opens a short watch next
            while not self._reached(want):
                self._moved.clear()
                left = deadline - loop.time()
                if left <= 0:
                    return False
                try:
                    await asyncio.wait_for(self._moved.wait(), left)
                except TimeoutError:
                    return False
            return True
        finally:
            self._hurry -= 1

    async def listed(self) -> None:
        """Return once the first list is delivered, however long it takes (100,000 objects
        take a while): catching up to a version makes sense only from there."""
        while self.lists == 0:
            self._moved.clear()
            await self._moved.wait()

    async def relist(self) -> None:
        """List again now (the watch open is ended), and return once that list is delivered:
        objects that vanished meanwhile come as DELETED, the others as ADDED."""
        target = self.lists + 1
        self._relist = True
        self._interrupt()
        while self.lists < target:
            self._moved.clear()
            await self._moved.wait()

    def _interrupt(self) -> None:
        if self._stream is not None:
            self._interrupted = True
            self._stream.close()  # `_watch` returns; `run` goes on

    def _reached(self, want: int) -> bool:
        try:
            return self.resource_version is not None and int(self.resource_version) >= want
        except ValueError:
            return False

    def _advanced(self, version: str) -> None:
        self.resource_version = version
        self._moved.set()

    async def _list(self) -> None:
        seen: set[str] = set()
        rv = ""
        pages = self.session.pages(self.path, self.page, seen.clear, self.params)
        async for listing in pages:
            for obj in listing.get("items") or ():
                seen.add(_key(obj))
                self._deliver("ADDED", _lean(obj))
            rv = (listing.get("metadata") or {}).get("resourceVersion") or rv
        for key in self.keys - seen:  # deleted while we were not watching
            ns, _, name = key.rpartition("/")
            gone: RawObject = {"metadata": {"name": name, **({"namespace": ns} if ns else {})}}
            self._deliver("DELETED", gone)
        self.keys = seen
        self.lists += 1
        self._advanced(rv)
        if self.on_synced is not None:
            self.on_synced()

    async def _watch(self) -> None:
        timeout = HURRY_TIMEOUT if self._hurry else self.timeout
        params = {
            **self.params,
            "watch": "true",
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout),
            "resourceVersion": self.resource_version or "",
        }
        self._interrupted = False
        async with self.session.http().get(
            self.session.base + self.path,
            params=params,
            headers=self.session.headers(),
            # As kopf's client timeout: a stream that stalls (or a proxy holding it) is cut
            # 15 s after the server should have ended it, and resumed.
            timeout=aiohttp.ClientTimeout(total=timeout + 15, sock_connect=10),
        ) as resp:
            await self.session.check(resp)
            if self._hurry and timeout != HURRY_TIMEOUT:
                return  # `reach` began while this watch was opening: open a short one instead
            buffer = bytearray()
            self._stream = resp
            try:
                async for chunk in resp.content.iter_any():
                    for line in lines(buffer, chunk):
                        self._event(json.loads(line))
            except (aiohttp.ClientError, ConnectionError):
                if not self._interrupted:
                    raise
            finally:
                self._stream = None

    def _event(self, event: RawObject) -> None:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise ExpiredError(str(obj.get("message")))
            raise RuntimeError(f"watch error: {obj.get('message') or obj}")
        if kind == "BOOKMARK" or not isinstance(kind, str):
            if rv := (obj.get("metadata") or {}).get("resourceVersion"):
                self._advanced(rv)
            return
        key = _key(obj)
        if kind == "DELETED":
            self.keys.discard(key)
        else:
            self.keys.add(key)
        self._deliver(kind, _lean(obj))
        if rv := (obj.get("metadata") or {}).get("resourceVersion"):
            self._advanced(rv)  # after delivery: `reach` means delivered

    def _deliver(self, kind: str, obj: RawObject) -> None:
        """One bad object or a handler's bug does not end the stream (and cost a relist)."""
        try:
            self.on_event(kind, obj)
        except Exception:
            log.exception("%s: handling %s %s failed", self.name or self.path, kind, _key(obj))
