"""Kubernetes API clients and retries.

The official client is synchronous; async code calls it through `call()`, which runs it in a
worker thread (`kube.aio` is the asynchronous client of the hot paths). Both retry what is
worth retrying (`retrying`: 429 with its Retry-After, 5xx, connection errors, time outs) with
capped exponential back-off and jitter. Conflicts (409) and other client errors
are returned to the caller at once: they are decisions, not accidents.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

import aiohttp
import kubernetes
import urllib3
from kubernetes.client.exceptions import ApiException

log = logging.getLogger(__name__)
T = TypeVar("T")

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})

REQUEST_TIMEOUT: tuple[float, float] = (10.0, 60.0)
"""(connect, read) seconds for a call that names no `_request_timeout`. Without one, a
connection that was accepted and never answered holds its worker thread for ever: every
`call()` shares asyncio's default executor (a few threads on a small host), so a handful of
such calls would stop every API call of the process, its heartbeats included. The read time
matches the API server's own limit for a request that is not a watch (--request-timeout)."""


def api_client(kubeconfig: str | None = None) -> kubernetes.client.ApiClient:
    """A client from `kubeconfig`, else $KUBECONFIG or ~/.kube/config, else in-cluster."""
    config: Any = kubernetes.config  # its loaders are untyped
    if kubeconfig is None:
        try:
            config.load_incluster_config()
            return kubernetes.client.ApiClient()
        except kubernetes.config.ConfigException:
            pass
    return cast(kubernetes.client.ApiClient, config.new_client_from_config(config_file=kubeconfig))


def transient(e: BaseException) -> bool:
    """An error worth trying again later: the API server busy, failing or out of reach."""
    if isinstance(e, ApiException):
        return e.status in RETRY_STATUSES
    # urllib3's for the synchronous client, aiohttp's and time outs for kube.aio
    if isinstance(e, aiohttp.ClientResponseError):
        return e.status in RETRY_STATUSES
    return isinstance(
        e, urllib3.exceptions.HTTPError | ConnectionError | aiohttp.ClientError | TimeoutError
    )


def is_conflict(e: BaseException) -> bool:
    return isinstance(e, ApiException) and e.status == 409


def is_not_found(e: BaseException) -> bool:
    return isinstance(e, ApiException) and e.status == 404


def _retry_after(e: ApiException) -> float | None:
    headers = e.headers or {}
    value = headers.get("Retry-After") if hasattr(headers, "get") else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


async def retrying(
    attempt: Callable[[], Awaitable[T]],
    attempts: int = 6,
    base_delay: float = 0.2,
    max_delay: float = 5.0,
) -> T:
    """`await attempt()`, again on what is worth retrying (`transient`: 429 with its
    Retry-After, 5xx, connection errors, time outs) with capped exponential back-off and
    jitter; anything else, or the last failure, is raised."""
    delay = base_delay
    for n in range(1, attempts + 1):
        try:
            return await attempt()
        except Exception as e:
            if not transient(e) or n == attempts:
                raise
            wait = (_retry_after(e) if isinstance(e, ApiException) else None) or delay
            if isinstance(e, ApiException):
                log.warning("API %s, retrying in %.2fs", e.status, wait, extra={"attempt": n})
            else:
                log.warning("API unreachable (%s), retrying in %.2fs", e or type(e), wait)
        await asyncio.sleep(wait * (0.5 + random.random()))
        delay = min(delay * 2, max_delay)
    raise AssertionError("unreachable")  # pragma: no cover


async def call(
    fn: Callable[..., T], *args: Any, attempts: int = 6, base_delay: float = 0.2, **kwargs: Any
) -> T:
    """`fn(*args, **kwargs)` in a thread, retried as `retrying` does; `fn` is an API method
    of the synchronous client, bounded by REQUEST_TIMEOUT unless it says."""
    kwargs.setdefault("_request_timeout", REQUEST_TIMEOUT)
    return await retrying(
        lambda: asyncio.to_thread(fn, *args, **kwargs), attempts=attempts, base_delay=base_delay
    )
