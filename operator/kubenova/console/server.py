"""The console server: an aggregated API server for `subresources.kubenova.io/v1alpha1`,
serving `virtualmachines/console` (a WebSocket) and `virtualmachines/consolelog`. Does I/O.

kube-apiserver authenticates the user, authorizes `get virtualmachines/console` in
`subresources.kubenova.io` by RBAC, and proxies the request here with its front-proxy client
certificate and the user in `X-Remote-User`. This server believes those headers only from a
certificate of the requestheader CA with an allowed name (both from
kube-system/extension-apiserver-authentication, as every aggregated API server does), looks
the VM up as its own ServiceAccount, and bridges the session to the console endpoint of the
VM's host's agent (mutual TLS with the console CA). docs/console.md has the whole path.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import ssl
import sys
import time
from dataclasses import dataclass
from typing import Any, cast

import aiohttp
import kubernetes
from aiohttp import WSMsgType, web
from kubernetes.client.exceptions import ApiException
from prometheus_client import Counter, Gauge, start_http_server

from kubenova.api import constants
from kubenova.console import protocol
from kubenova.kube import client as kube_client
from kubenova.kube import logs
from kubenova.kube.events import EventRecorder, ObjectRef

log = logging.getLogger(__name__)

SESSIONS_OPEN = Gauge("kubenova_console_sessions_open", "Console sessions open now.")
SESSIONS = Counter(
    "kubenova_console_sessions_total",
    "Console sessions and log reads, by kind and outcome (opened, refused status).",
    ["kind", "result"],
)
BYTES = Counter(
    "kubenova_console_bytes_total",
    "Bytes through console sessions: from the guest (out) and from users (in).",
    ["direction"],
)
AUTH_CONFIGMAP = ("kube-system", "extension-apiserver-authentication")
RUNNING_PHASES = ("Running", "Migrating", "Unknown")


@dataclass(frozen=True)
class Settings:
    bind: str
    port: int
    tls_cert: str
    tls_key: str
    agent_ca: str
    agent_cert: str
    agent_key: str
    requestheader_ca: str = ""
    """A PEM file; empty: read kube-system/extension-apiserver-authentication."""
    requestheader_names: tuple[str, ...] = ()


class ConsoleServer:
    def __init__(
        self,
        settings: Settings,
        api: kubernetes.client.ApiClient,
        requestheader: protocol.RequestHeaderConfig,
    ) -> None:
        self.settings = settings
        self.custom = kubernetes.client.CustomObjectsApi(api)
        self.requestheader = requestheader
        self.events = EventRecorder(api, "kubenova-console", "console")
        agent_tls = ssl.create_default_context(cafile=settings.agent_ca)
        agent_tls.load_cert_chain(settings.agent_cert, settings.agent_key)
        # The agents' certificate is one for all of them, from a CA that signs nothing else:
        # the CA, not a host name, says it is an agent (docs/console.md, "What is left").
        agent_tls.check_hostname = False
        self.agent_tls = agent_tls
        self._session: aiohttp.ClientSession | None = None

    def tls(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.settings.tls_cert, self.settings.tls_key)
        ctx.load_verify_locations(cadata=self.requestheader.client_ca)
        # Optional at the handshake so probes reach /healthz; every /apis path requires it.
        ctx.verify_mode = ssl.CERT_OPTIONAL
        return ctx

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.healthz)
        app.router.add_route("GET", "/apis", self.discovery)
        app.router.add_route("GET", "/apis/{rest:.*}", self.apis)
        app.on_startup.append(self._startup)
        app.on_cleanup.append(self._cleanup)
        return app

    async def _startup(self, _app: web.Application) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(sock_connect=10))
        self._events_task = asyncio.create_task(self.events.run())

    async def _cleanup(self, _app: web.Application) -> None:
        self._events_task.cancel()
        if self._session is not None:
            await self._session.close()

    async def healthz(self, _request: web.Request) -> web.Response:
        return web.Response(text="ok")

    # -- who is asking --------------------------------------------------------------------

    def _caller(self, request: web.Request) -> protocol.Caller:
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        return protocol.front_proxy_caller(
            self.requestheader, protocol.common_names(peer), request.headers
        )

    async def discovery(self, request: web.Request) -> web.Response:
        try:
            self._caller(request)
        except protocol.ConsoleError as e:
            return _error(e)
        return web.json_response(protocol.api_group_list())

    async def apis(self, request: web.Request) -> web.StreamResponse:
        kind = "console"
        try:
            caller = self._caller(request)
            path = request.path
            if path.rstrip("/") == f"/apis/{protocol.GROUP}":
                return web.json_response(protocol.api_group())
            if path.rstrip("/") == f"/apis/{protocol.GROUP_VERSION}":
                return web.json_response(protocol.api_resource_list())
            target = protocol.parse_path(path)
            kind = target.subresource
            vm = await self._vm(target)
            address = await self._agent_address(target, vm)
            if target.subresource == protocol.CONSOLE_LOG:
                tail = protocol.parse_tail(request.query.get("tail"))
                return await self._log(target, address, tail)
            # The phase first: a client whose upgrade was refused asks again without one
            # to read the reason, and should get this one.
            _check_running(target, vm)
            if not _is_websocket(request):
                raise protocol.ConsoleError(
                    400, f"{target.key}: the console is a WebSocket; use kubectl vm console"
                )
            return await self._console(request, caller, target, vm, address)
        except protocol.ConsoleError as e:
            SESSIONS.labels(kind, str(e.status)).inc()
            return _error(e)

    async def _vm(self, target: protocol.Target) -> dict[str, Any]:
        try:
            vm = await asyncio.to_thread(
                self.custom.get_namespaced_custom_object,
                constants.GROUP, constants.VERSION, target.namespace, "virtualmachines",
                target.name,
            )  # fmt: skip
        except ApiException as e:
            if e.status == 404:
                raise protocol.ConsoleError(404, f"virtualmachine {target.key} not found") from None
            raise protocol.ConsoleError(
                502, f"reading virtualmachine {target.key}: {e.reason}"
            ) from None
        return cast(dict[str, Any], vm)

    async def _agent_address(self, target: protocol.Target, vm: dict[str, Any]) -> str:
        status = vm.get("status") or {}
        host = status.get("host")
        if not host:
            raise protocol.ConsoleError(
                409, f"virtualmachine {target.key} is not on a host yet ({status.get('phase')})"
            )
        try:
            obj = await asyncio.to_thread(
                self.custom.get_cluster_custom_object,
                constants.GROUP, constants.VERSION, "hosts", host,
            )  # fmt: skip
        except ApiException as e:
            raise protocol.ConsoleError(502, f"reading host {host}: {e.reason}") from None
        address = str(
            ((cast(dict[str, Any], obj).get("status") or {}).get("console") or {}).get("address")
            or ""
        )
        if not address:
            raise protocol.ConsoleError(
                503, f"host {host} of virtualmachine {target.key} serves no consoles"
            )
        return address

    async def _log(self, target: protocol.Target, address: str, tail: int) -> web.Response:
        assert self._session is not None
        url = f"https://{address}{protocol.agent_path(target)}"
        try:
            async with self._session.get(url, params={"tail": str(tail)}, ssl=self.agent_tls) as r:
                body = await r.read()
                if r.status != 200:
                    raise protocol.ConsoleError(r.status, _agent_message(body, r.status))
        except aiohttp.ClientError as e:
            raise protocol.ConsoleError(502, f"the agent at {address}: {e}") from None
        SESSIONS.labels(protocol.CONSOLE_LOG, "200").inc()
        return web.Response(body=body, content_type="text/plain", charset="utf-8")

    async def _console(
        self,
        request: web.Request,
        caller: protocol.Caller,
        target: protocol.Target,
        vm: dict[str, Any],
        address: str,
    ) -> web.StreamResponse:
        assert self._session is not None
        url = f"wss://{address}{protocol.agent_path(target)}"
        try:
            upstream = await self._session.ws_connect(
                url, ssl=self.agent_tls, headers={protocol.USER_HEADER: caller.user},
                heartbeat=30.0, max_msg_size=1 << 20,
            )  # fmt: skip
        except aiohttp.WSServerHandshakeError as e:
            raise protocol.ConsoleError(
                e.status if e.status in (404, 409) else 502,
                f"virtualmachine {target.key}: the agent refused the console ({e.status}"
                f"{': not running there' if e.status == 409 else ''})",
            ) from None
        except aiohttp.ClientError as e:
            raise protocol.ConsoleError(502, f"the agent at {address}: {e}") from None
        ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=1 << 20)
        await ws.prepare(request)
        ref = ObjectRef(
            constants.API_VERSION, "VirtualMachine", target.name, target.namespace,
            (vm.get("metadata") or {}).get("uid"),
        )  # fmt: skip
        started = time.monotonic()
        SESSIONS.labels(protocol.CONSOLE, "opened").inc()
        SESSIONS_OPEN.inc()
        self.events.emit(ref, "Normal", "ConsoleOpened", f"serial console opened by {caller.user}")
        log.info("console of %s opened by %s", target.key, caller.user)
        counted = {"in": 0, "out": 0}

        async def down() -> None:  # guest → user
            reason = ""
            while True:
                msg = await upstream.receive()
                if msg.type == WSMsgType.BINARY:
                    counted["out"] += len(msg.data)
                    BYTES.labels("out").inc(len(msg.data))
                    await ws.send_bytes(msg.data)
                elif msg.type == WSMsgType.CLOSE:
                    reason = str(msg.extra or "")
                    break
                elif msg.type in (WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                    break
            # The agent's reason (the VM stopped, too slow) reaches the user.
            await ws.close(message=reason.encode()[:120])

        async def up() -> None:  # user → guest
            async for msg in ws:
                if msg.type == WSMsgType.BINARY:
                    counted["in"] += len(msg.data)
                    BYTES.labels("in").inc(len(msg.data))
                    await upstream.send_bytes(msg.data)
            await upstream.close()

        tasks = [asyncio.create_task(down()), asyncio.create_task(up())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            with contextlib.suppress(Exception):
                await upstream.close()
            with contextlib.suppress(Exception):
                await ws.close()
            SESSIONS_OPEN.dec()
            seconds = time.monotonic() - started
            self.events.emit(
                ref, "Normal", "ConsoleClosed",
                f"serial console of {caller.user} closed after {seconds:.0f} s "
                f"({counted['out']} bytes out, {counted['in']} in)",
            )  # fmt: skip
            log.info("console of %s closed for %s", target.key, caller.user)
        return ws


def _check_running(target: protocol.Target, vm: dict[str, Any]) -> None:
    phase = (vm.get("status") or {}).get("phase")
    if phase not in RUNNING_PHASES:
        raise protocol.ConsoleError(
            409,
            f"virtualmachine {target.key} is {phase}, not running; "
            "`kubectl vm console --log` shows its log",
        )


def _is_websocket(request: web.Request) -> bool:
    return request.headers.get("Upgrade", "").lower() == "websocket"


def _error(e: protocol.ConsoleError) -> web.Response:
    return web.json_response(protocol.status(e.status, e.message), status=e.status)


def _agent_message(body: bytes, status: int) -> str:
    import json

    try:
        return str(json.loads(body).get("message") or f"the agent answered {status}")
    except ValueError:
        return f"the agent answered {status}"


def requestheader_config(
    api: kubernetes.client.ApiClient, settings: Settings
) -> protocol.RequestHeaderConfig:
    """From the flags, else from the ConfigMap kube-apiserver publishes."""
    if settings.requestheader_ca:
        with open(settings.requestheader_ca) as f:  # noqa: PTH123
            pem = f.read()
        return protocol.RequestHeaderConfig(pem, settings.requestheader_names)
    cm = kubernetes.client.CoreV1Api(api).read_namespaced_config_map(
        AUTH_CONFIGMAP[1], AUTH_CONFIGMAP[0]
    )
    return protocol.RequestHeaderConfig.from_configmap(cm.data or {})


def parse_args(argv: list[str] | None) -> tuple[Settings, int]:
    p = argparse.ArgumentParser(prog="python -m kubenova.console", description=__doc__)
    p.add_argument("--bind", default="0.0.0.0")
    p.add_argument("--port", type=int, default=8443)
    p.add_argument("--tls-cert", required=True, help="serving certificate (PEM)")
    p.add_argument("--tls-key", required=True)
    p.add_argument("--agent-ca", required=True, help="CA of the agents' console certificate")
    p.add_argument("--agent-cert", required=True, help="client certificate for the agents")
    p.add_argument("--agent-key", required=True)
    p.add_argument("--requestheader-ca", default="", help="default: from the ConfigMap")
    p.add_argument("--requestheader-names", default="", help="comma-separated")
    p.add_argument("--metrics-port", type=int, default=0)
    a = p.parse_args(argv)
    names = tuple(n for n in a.requestheader_names.split(",") if n)
    settings = Settings(
        a.bind, a.port, a.tls_cert, a.tls_key, a.agent_ca, a.agent_cert, a.agent_key,
        a.requestheader_ca, names,
    )  # fmt: skip
    return settings, a.metrics_port


def main(argv: list[str] | None = None) -> int:
    logs.setup("console")
    settings, metrics_port = parse_args(argv)
    api = kube_client.api_client()
    try:
        requestheader = requestheader_config(api, settings)
    except (ValueError, ApiException, OSError) as e:
        print(f"kubenova console: {e}", file=sys.stderr)
        return 2
    if metrics_port:
        start_http_server(metrics_port)
    server = ConsoleServer(settings, api, requestheader)
    web.run_app(
        server.app(), host=settings.bind, port=settings.port, ssl_context=server.tls(),
        access_log=None, print=None,
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
