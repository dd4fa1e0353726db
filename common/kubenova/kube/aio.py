"""The asynchronous HTTP client to the API server: requests on the event loop, no thread each.

The official client is synchronous: every call through `client.call` hops to a worker thread
(a few on a small host, shared by every caller), and its urllib3 threads contend for the GIL
with the event loop — about a quarter of the operator's CPU while binding, by py-spy. The
paths that run per VM (the bind, its read-back, the status writes, the takeover's lists and
every watch) come through a `Session` instead: aiohttp (kopf's own HTTP client), the official
client's configuration (server, CA, client certificate or token) and its error type, so callers
tell a 404 or a 409 apart exactly as they do for the synchronous client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import quote

import aiohttp
import kubernetes
from kubernetes.client.exceptions import ApiException

from kubenova.kube import client

RawObject = dict[str, Any]

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
METADATA_ONLY = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
"""An `accept` asking for an answer's metadata alone: the API server then neither encodes
nor sends the rest of the object (and the caller does not parse it)."""

AUTH_TTL = 10.0
"""Seconds a Session keeps the auth headers it read (`Session.headers`)."""

CONNECTIONS = 64
"""Open connections at most (HTTP/1.1: one per request in flight). Each watch holds one."""


class ExpiredError(ApiException):
    """The resourceVersion or continue token to resume from is gone (410): list again."""

    def __init__(self, message: str) -> None:
        super().__init__(status=410, reason=message)


def object_path(group: str, version: str, plural: str, name: str, namespace: str | None) -> str:
    """The URL path of one object (`group` "" for the core group)."""
    base = f"/apis/{group}/{version}" if group else f"/api/{version}"
    ns = f"/namespaces/{quote(namespace, safe='')}" if namespace else ""
    return f"{base}{ns}/{plural}/{quote(name, safe='')}"


class Session:
    """HTTP to the API server with the official client's configuration. Its auth headers are
    read again every `AUTH_TTL` seconds, so an in-cluster token that the kubelet rotates is
    picked up."""

    def __init__(
        self, api: kubernetes.client.ApiClient, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.config: Any = api.configuration
        self.base = str(self.config.host).rstrip("/")
        self._clock = clock
        self._headers: dict[str, str] | None = None
        self._headers_at = 0.0
        self._http: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

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
        an in-cluster token), so both clients authenticate alike; asked for again every
        `AUTH_TTL` seconds, not at every request: each ask runs the client's refresh hook,
        which sets the configuration again (a kubeconfig's also reloads the credentials):
        0.1-0.5 ms, 5 % of the operator's CPU while binding. A rotated token still arrives
        in time: the kubelet writes the new one well before the old one expires."""
        now = self._clock()
        if self._headers is None or now - self._headers_at >= AUTH_TTL:
            out = {"Accept": JSON}
            for auth in self.config.auth_settings().values():
                if auth.get("in") == "header" and auth.get("value"):
                    out[auth["key"]] = auth["value"]
            self._headers, self._headers_at = out, now
        return dict(self._headers)

    async def check(self, resp: aiohttp.ClientResponse) -> None:
        """`raise_for`; a 401 (a token rotated or revoked) also makes the next request read
        the credentials again instead of waiting out `AUTH_TTL`."""
        if resp.status == 401:
            self._headers = None
        await raise_for(resp)

    def http(self) -> aiohttp.ClientSession:
        """The connection pool of the running event loop (a new loop gets a new one)."""
        loop = asyncio.get_running_loop()
        if self._http is None or self._http.closed or self._loop is not loop:
            self._http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl(), limit=CONNECTIONS)
            )
            self._loop = loop
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: Any = None,
        content_type: str = JSON,
        accept: str = JSON,
        timeout: float = client.REQUEST_TIMEOUT[1],
    ) -> RawObject:
        """One request, its JSON answer; an answer that is not a success raises ApiException
        (ExpiredError for 410) with the status, the API server's message and its headers."""
        headers = {**self.headers(), "Accept": accept}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        async with self.http().request(
            method,
            self.base + path,
            params=params,
            data=data,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout, sock_connect=client.REQUEST_TIMEOUT[0]),
        ) as resp:
            await self.check(resp)
            result: RawObject = json.loads(await resp.read())
            return result

    async def call(self, method: str, path: str, **kwargs: Any) -> RawObject:
        """`request()`, retried as `client.call` retries (429, 5xx, connection errors and time
        outs); 409 and other client errors come back at once."""
        return await client.retrying(lambda: self.request(method, path, **kwargs))

    async def pages(
        self,
        path: str,
        limit: int = 500,
        on_restart: Callable[[], None] | None = None,
        params: dict[str, str] | None = None,
    ) -> AsyncIterator[RawObject]:
        """Every object of the list at `path`, a page of `limit` at a time (limit/continue, as
        client-go's pager): the API server never builds one answer of 100,000 objects and
        only one page is held at once. Each page is yielded whole (its `items`, and in its
        `metadata` the list's resourceVersion). A continue token that expired (410) starts
        the list again from the top, after `on_restart()`. `params`: selectors."""
        token: str | None = None
        while True:
            query = {**(params or {}), "limit": str(limit)}
            if token:
                query["continue"] = token
            try:
                listing = await self.call("GET", path, params=query)
            except ExpiredError:
                if token is None:
                    raise
                token = None
                if on_restart is not None:
                    on_restart()
                continue
            yield listing
            token = (listing.get("metadata") or {}).get("continue") or None
            if token is None:
                return


async def raise_for(resp: aiohttp.ClientResponse) -> None:
    """An answer that is not a success as ApiException: ExpiredError for 410, else the
    status with the start of the API server's message (its Status object's `message`)."""
    if resp.status < 300:
        return
    raw = await resp.read()
    message = raw[:300].decode(errors="replace")
    with contextlib.suppress(ValueError, AttributeError):  # not a Status object
        message = str(json.loads(raw).get("message") or message)
    if resp.status == 410:
        raise ExpiredError(message)
    e = ApiException(status=resp.status, reason=message)
    e.body = raw.decode(errors="replace")
    e.headers = dict(resp.headers)
    raise e
