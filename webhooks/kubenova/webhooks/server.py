"""The HTTPS admission server (aiohttp): `/mutate`, `/validate`, `/healthz` and `/metrics`.
Does I/O; turns AdmissionReviews into calls on `admission.Admission` and times them.

Only the API server may ask for a review: with a client CA, the TLS handshake verifies any
client certificate against it, and `/mutate` and `/validate` refuse a connection that brought
none (or one whose name is not allowed). `/healthz` and `/metrics` stay open to the kubelet's
probes and Prometheus, which present no certificate. A review larger than the largest object
kubenova admits can hold is refused before it is read (`sizes`), and a body that is not an
AdmissionReview gets a 400 that says what is wrong, never a traceback.
"""

from __future__ import annotations

import json
import logging
import ssl
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import prometheus_client
from aiohttp import web

from kubenova.api.vm import VirtualMachine
from kubenova.kube import logs
from kubenova.webhooks import admission, metrics, review, sizes

log = logging.getLogger(__name__)

ADMISSION_KEY = web.AppKey("admission", admission.Admission)

MAX_REVIEW_BYTES = sizes.review_limit([VirtualMachine])
"""The largest review the API server can send for an object kubenova admits (about 2.5 MiB)."""

KEEPALIVE_SECONDS = 120.0
"""How long an idle connection stays open. The API server's client keeps idle connections for
90 s (Go's IdleConnTimeout); closing them sooner (aiohttp's default is 75 s) races with a
review sent on a connection the server is just closing, which fails that create closed, and
makes the next review pay a new TLS handshake."""


@dataclass(frozen=True)
class ClientAuth:
    """Who may ask for reviews: a certificate signed by `ca`, and (when `names` is not empty)
    with one of these common names -- the API server's identity, not any client of that CA."""

    ca: Path
    names: frozenset[str] = frozenset()


def _peer_name(request: web.Request) -> str | None:
    """The common name of the verified client certificate, or None when there is none."""
    transport = request.transport
    cert: Any = transport.get_extra_info("peercert") if transport is not None else None
    if not cert:
        return None
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return ""


def _authenticate(request: web.Request, auth: ClientAuth | None) -> None:
    if auth is None:
        return
    name = _peer_name(request)
    if name is None:
        raise web.HTTPUnauthorized(
            text="the kubenova admission webhook answers only the Kubernetes API server: "
            "present its client certificate (signed by the webhook's --client-ca)"
        )
    if auth.names and name not in auth.names:
        raise web.HTTPForbidden(
            text=f"client certificate {name!r} may not ask for admission reviews; "
            f"allowed: {', '.join(sorted(auth.names))} (--client-name)"
        )


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_CONNECTIONS: weakref.WeakSet[Any] = weakref.WeakSet()
"""Transports that brought a review, to count connections (each is gone with its connection)."""


def _count_connection(request: web.Request) -> None:
    transport = request.transport
    if transport is not None and transport not in _CONNECTIONS:
        _CONNECTIONS.add(transport)
        metrics.CONNECTIONS.inc()


def _handler(name: str, auth: ClientAuth | None) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        _count_connection(request)
        _authenticate(request, auth)
        started = time.perf_counter()
        try:
            req = review.parse(await _body(request))
        except review.ReviewError as e:
            raise web.HTTPBadRequest(text=f"not a valid AdmissionReview: {e}") from e
        adm = request.app[ADMISSION_KEY]
        with logs.trace(req.trace_id):
            verdict = await _decide(adm, name, req)
            if not verdict.allowed:
                metrics.DENIALS.labels(verdict.reason, req.kind).inc()
                log.info("denied %s %s: %s", req.operation, req.who, verdict.message)
        metrics.ADMISSION_SECONDS.labels(name, req.kind, req.operation).observe(
            time.perf_counter() - started
        )
        return web.json_response(review.response(req.uid, verdict))

    return handle


async def _body(request: web.Request) -> Any:
    """The JSON body, or a 400/413 that says what is wrong with it."""
    try:
        text = await request.text()
    except web.HTTPRequestEntityTooLarge as e:
        raise web.HTTPRequestEntityTooLarge(
            max_size=MAX_REVIEW_BYTES,
            actual_size=request.content_length or MAX_REVIEW_BYTES + 1,
            text=f"an AdmissionReview of at most {MAX_REVIEW_BYTES} bytes is accepted: "
            "larger than any object kubenova admits can make",
        ) from e
    except UnicodeDecodeError as e:
        raise web.HTTPBadRequest(text=f"the body is not UTF-8 text: {e.reason}") from e
    try:
        return json.loads(text)
    except ValueError as e:
        raise web.HTTPBadRequest(text=f"the body is not JSON: {e}") from e
    except RecursionError as e:
        raise web.HTTPBadRequest(text="the body is JSON nested too deeply") from e


async def _decide(adm: admission.Admission, name: str, req: review.Request) -> review.Verdict:
    try:
        return await (adm.mutate(req) if name == "mutate" else adm.validate(req))
    except Exception:
        # Fail closed with a message, rather than a 500 the API server reports vaguely.
        log.exception("admission of %s failed", req.who)
        return review.deny(
            "InternalError",
            f"{req.who}: the kubenova admission webhook failed; retry, and if it persists "
            "look for this object in the webhook's logs",
            code=500,
        )


async def healthz(request: web.Request) -> web.StreamResponse:
    return web.Response(text="ok")


async def metrics_endpoint(request: web.Request) -> web.StreamResponse:
    body = prometheus_client.generate_latest(metrics.REGISTRY)
    return web.Response(body=body, headers={"Content-Type": prometheus_client.CONTENT_TYPE_LATEST})


def app(adm: admission.Admission, auth: ClientAuth | None = None) -> web.Application:
    """The routes. With `auth`, reviews need a verified client certificate (give `tls()` the
    same CA so the handshake verifies it)."""
    application = web.Application(client_max_size=MAX_REVIEW_BYTES)
    application[ADMISSION_KEY] = adm
    application.add_routes(
        [
            web.post("/mutate", _handler("mutate", auth)),
            web.post("/validate", _handler("validate", auth)),
            web.get("/healthz", healthz),
            web.get("/metrics", metrics_endpoint),
        ]
    )
    return application


def tls(cert: Path, key: Path, client_ca: Path | None = None) -> ssl.SSLContext:
    """The serving context. With `client_ca`, a client certificate is asked for and, when one
    is presented, verified against it (optional at the handshake so probes and scrapes of
    /healthz and /metrics work; the review routes insist on one)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert), str(key))
    # No session tickets: the API server's webhook client (client-go) keeps no session cache,
    # so it never resumes a session, and every ticket was a copy of the session (its client
    # certificate decoded again) and a write, on every new connection: about 0.7 of the
    # ~4.4 ms of CPU a new connection cost the webhook (docs/benchmarks.md, "Admission").
    context.num_tickets = 0
    context.options |= ssl.OP_NO_TICKET
    if client_ca is not None:
        context.load_verify_locations(cafile=str(client_ca))
        context.verify_mode = ssl.CERT_OPTIONAL
    return context
