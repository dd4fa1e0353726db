"""List-and-watch of one resource on the event loop, as client-go's reflector does it.

List (a page at a time), then watch from the list's resourceVersion with bookmarks; a watch
that ends is resumed from the last version seen, and an expired one (410) lists again, with
objects that vanished in between delivered as DELETED. Events reach `on_event(type, object)`
in the event loop as raw JSON dicts, the object's `managedFields` dropped.

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
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import kubernetes

log = logging.getLogger(__name__)

RawObject = dict[str, Any]
OnEvent = Callable[[str, RawObject], None]


class ExpiredError(Exception):
    """The resourceVersion to resume from is gone (410): list again."""


class Session:
    """HTTP to the API server with the official client's configuration (server, CA, client
    certificate or token). A token is read at every connect, so an in-cluster token that
    the kubelet rotates is picked up."""

    def __init__(self, api: kubernetes.client.ApiClient) -> None:
        self.config: Any = api.configuration
        self.base = str(self.config.host).rstrip("/")
        self._http: aiohttp.ClientSession | None = None

    def _ssl(self) -> ssl.SSLContext | bool:
        if not self.base.startswith("https"):
            return False
        ctx = ssl.create_default_context(cafile=self.config.ssl_ca_cert or None)
        if self.config.cert_file:
            ctx.load_cert_chain(self.config.cert_file, self.config.key_file)
        if not self.config.verify_ssl:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def headers(self) -> dict[str, str]:
        """The official client's own auth headers (its `auth_settings`, which also refreshes
        an in-cluster token), so both clients authenticate alike."""
        out = {"Accept": "application/json"}
        for auth in self.config.auth_settings().values():
            if auth.get("in") == "header" and auth.get("value"):
                out[auth["key"]] = auth["value"]
        return out

    def http(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl(), limit=16)
            )
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()

    async def get(self, path: str, params: dict[str, str], timeout: float) -> RawObject:
        async with self.http().get(
            self.base + path,
            params=params,
            headers=self.headers(),
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as resp:
            await _raise_for(resp)
            result: RawObject = json.loads(await resp.read())
            return result


async def _raise_for(resp: aiohttp.ClientResponse) -> None:
    """A list's or a watch's answer that is not a success: ExpiredError for 410, else the
    status with the start of the API server's message."""
    if resp.status < 300:
        return
    body = (await resp.read())[:300].decode(errors="replace")
    if resp.status == 410:
        raise ExpiredError(body)
    raise aiohttp.ClientResponseError(resp.request_info, (), status=resp.status, message=body)


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
    keys: set[str] = field(default_factory=set)
    resource_version: str | None = None
    lists: int = 0
    """Complete lists so far (1 + relists after expiry or failure)."""

    async def run(self) -> None:
        delay = 0.5
        while True:
            try:
                if self.resource_version is None:
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

    async def _list(self) -> None:
        seen: set[str] = set()
        token: str | None = None
        rv = ""
        while True:
            params = {"limit": str(self.page)}
            if token:
                params["continue"] = token
            try:
                listing = await self.session.get(self.path, params, timeout=60)
            except ExpiredError:
                if token is None:
                    raise
                token = None  # the continue token expired: list from the top again
                seen.clear()
                continue
            for obj in listing.get("items") or ():
                key = _key(obj)
                seen.add(key)
                self._deliver("ADDED", _lean(obj))
            meta = listing.get("metadata") or {}
            rv = meta.get("resourceVersion") or rv
            token = meta.get("continue") or None
            if token is None:
                break
        for key in self.keys - seen:  # deleted while we were not watching
            ns, _, name = key.rpartition("/")
            gone: RawObject = {"metadata": {"name": name, **({"namespace": ns} if ns else {})}}
            self._deliver("DELETED", gone)
        self.keys = seen
        self.resource_version = rv
        self.lists += 1
        if self.on_synced is not None:
            self.on_synced()

    async def _watch(self) -> None:
        params = {
            "watch": "true",
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(self.timeout),
            "resourceVersion": self.resource_version or "",
        }
        async with self.session.http().get(
            self.session.base + self.path,
            params=params,
            headers=self.session.headers(),
            # As kopf's client timeout: a stream that stalls (or a proxy holding it) is cut
            # 15 s after the server should have ended it, and resumed.
            timeout=aiohttp.ClientTimeout(total=self.timeout + 15, sock_connect=10),
        ) as resp:
            await _raise_for(resp)
            buffer = bytearray()
            async for chunk in resp.content.iter_any():
                for line in lines(buffer, chunk):
                    self._event(json.loads(line))

    def _event(self, event: RawObject) -> None:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise ExpiredError(str(obj.get("message")))
            raise RuntimeError(f"watch error: {obj.get('message') or obj}")
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        if rv:
            self.resource_version = rv
        if kind == "BOOKMARK" or not isinstance(kind, str):
            return
        key = _key(obj)
        if kind == "DELETED":
            self.keys.discard(key)
        else:
            self.keys.add(key)
        self._deliver(kind, _lean(obj))

    def _deliver(self, kind: str, obj: RawObject) -> None:
        """One bad object or a handler's bug does not end the stream (and cost a relist)."""
        try:
            self.on_event(kind, obj)
        except Exception:
            log.exception("%s: handling %s %s failed", self.name or self.path, kind, _key(obj))
