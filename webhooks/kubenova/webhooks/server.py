"""The HTTPS admission server (aiohttp): `/mutate`, `/validate`, `/healthz` and `/metrics`.
Does I/O; turns AdmissionReviews into calls on `admission.Admission` and times them.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import prometheus_client
from aiohttp import web

from kubenova.kube import logs
from kubenova.webhooks import admission, metrics, review

log = logging.getLogger(__name__)

ADMISSION_KEY = web.AppKey("admission", admission.Admission)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _handler(name: str) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        try:
            req = review.parse(await request.json())
        except (ValueError, review.ReviewError) as e:
            raise web.HTTPBadRequest(text=str(e)) from e
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


def app(adm: admission.Admission) -> web.Application:
    application = web.Application()
    application[ADMISSION_KEY] = adm
    application.add_routes(
        [
            web.post("/mutate", _handler("mutate")),
            web.post("/validate", _handler("validate")),
            web.get("/healthz", healthz),
            web.get("/metrics", metrics_endpoint),
        ]
    )
    return application


def tls(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert), str(key))
    return context
