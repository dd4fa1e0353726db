"""The agent's console endpoint (docs/console.md): serves the serial ports of the VMs bound
to this host to the kubenova console server, and nobody else. Does I/O.

Mutual TLS: the agent presents its console certificate and accepts only a client certificate
of the console CA with the console server's common name. Each VM's serial port is a unix
socket qemu listens on (`domain_xml.console_socket`); qemu takes one connection at a time, so
one `SerialPort` per VM holds it and fans what the guest prints out to every viewer, and
writes what any viewer types. A viewer that cannot keep up is dropped rather than slowing the
guest's other viewers. The log (`serial.log`, written by qemu) is served from the VM's
folder, so it stays readable after the VM stopped, as long as the VM exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from kubenova.console import protocol
from kubenova.node_agent import domain_xml

log = logging.getLogger(__name__)

RawObject = dict[str, Any]
VIEWER_BACKLOG = 1024
"""Chunks queued for one viewer before it counts as too slow and is dropped."""
LOG_TAIL_WINDOW = 8 << 20
"""At most this many bytes from the log's end are served (the log only grows)."""


@dataclass(frozen=True)
class ConsoleTLS:
    cert: str
    key: str
    client_ca: str
    client_names: tuple[str, ...] = ("kubenova-console",)

    def context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=self.client_ca)
        ctx.load_cert_chain(self.cert, self.key)
        ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx


@dataclass(eq=False)
class Viewer:
    queue: asyncio.Queue[bytes | None] = field(
        default_factory=lambda: asyncio.Queue(VIEWER_BACKLOG)
    )
    ended: str = ""


class SerialPort:
    """The one connection to one domain's serial socket."""

    def __init__(self, path: str, on_closed: Callable[[SerialPort], None]) -> None:
        self.path = path
        self.viewers: set[Viewer] = set()
        self._on_closed = on_closed
        self._writer: asyncio.StreamWriter | None = None
        self._pump: asyncio.Task[None] | None = None

    async def open(self) -> None:
        reader, self._writer = await asyncio.open_unix_connection(self.path)
        self._pump = asyncio.create_task(self._run(reader))

    async def _run(self, reader: asyncio.StreamReader) -> None:
        reason = "the guest's serial port closed (the VM stopped)"
        try:
            while chunk := await reader.read(65536):
                for viewer in list(self.viewers):
                    try:
                        viewer.queue.put_nowait(chunk)
                    except asyncio.QueueFull:
                        self._end(viewer, "too slow: dropped to keep the console moving")
        except OSError as e:
            reason = f"the guest's serial port failed: {e}"
        finally:
            for viewer in list(self.viewers):
                self._end(viewer, reason)
            self.close()

    def _end(self, viewer: Viewer, reason: str) -> None:
        self.viewers.discard(viewer)
        viewer.ended = reason
        # Make room for the sentinel: what the viewer has not read yet is lost anyway.
        while viewer.queue.full():
            viewer.queue.get_nowait()
        viewer.queue.put_nowait(None)

    def add(self) -> Viewer:
        viewer = Viewer()
        self.viewers.add(viewer)
        return viewer

    def remove(self, viewer: Viewer) -> None:
        self.viewers.discard(viewer)
        if not self.viewers:
            self.close()

    async def write(self, data: bytes) -> None:
        if self._writer is None:
            return
        self._writer.write(data)
        await self._writer.drain()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            if self._pump is not None and self._pump is not asyncio.current_task():
                self._pump.cancel()
            self._on_closed(self)


class ConsoleEndpoint:
    """The HTTPS endpoint: `/v1/namespaces/NS/virtualmachines/NAME/console` (WebSocket) and
    `/consolelog?tail=N`, only for VMs `bound(key)` finds bound to `host`."""

    def __init__(
        self,
        host: str,
        settings: domain_xml.DomainSettings,
        tls: ConsoleTLS,
        bound: Callable[[str], RawObject | None],
    ) -> None:
        self.host = host
        self.settings = settings
        self.tls = tls
        self.bound = bound
        self.ports: dict[str, SerialPort] = {}
        self._runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        app = web.Application()
        base = "/v1/namespaces/{namespace}/virtualmachines/{name}/"
        app.router.add_get(base + protocol.CONSOLE, self.console)
        app.router.add_get(base + protocol.CONSOLE_LOG, self.console_log)
        return app

    async def start(self, address: str, port: int) -> int:
        """Listen on address:port (0: a free port); returns the port."""
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, address, port, ssl_context=self.tls.context())
        await site.start()
        server = site._server
        assert server is not None and isinstance(server, asyncio.base_events.Server)
        bound_port: int = server.sockets[0].getsockname()[1]
        log.info("console endpoint on %s:%d", address, bound_port)
        return bound_port

    async def stop(self) -> None:
        for port in list(self.ports.values()):
            port.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # -- checks ---------------------------------------------------------------------------

    def _caller_ok(self, request: web.Request) -> None:
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        names = protocol.common_names(peer)
        if not set(names) & set(self.tls.client_names):
            raise protocol.ConsoleError(403, f"client {list(names)} is not the console server")

    def _vm(self, request: web.Request) -> tuple[str, RawObject]:
        """The VM a request names, if it is bound to this host (a 404 otherwise: the agent
        tells nobody about VMs elsewhere)."""
        self._caller_ok(request)
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        protocol.check_names(namespace, name)
        key = f"{namespace}/{name}"
        vm = self.bound(key)
        if vm is None or (vm.get("status") or {}).get("host") != self.host:
            raise protocol.ConsoleError(404, f"virtualmachine {key} is not on host {self.host}")
        return key, vm

    # -- handlers -------------------------------------------------------------------------

    async def console(self, request: web.Request) -> web.StreamResponse:
        try:
            key, vm = self._vm(request)
            uid = str((vm.get("metadata") or {}).get("uid") or "")
            path = domain_xml.console_socket(self.settings, uid)
            port = await self._port(key, uid, path)
        except protocol.ConsoleError as e:
            return web.json_response(protocol.status(e.status, e.message), status=e.status)
        user = request.headers.get(protocol.USER_HEADER, "?")
        ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=1 << 20)
        await ws.prepare(request)
        viewer = port.add()
        log.info("console of %s opened for %s", key, user, extra={"vm": key, "user": user})

        async def forward() -> None:
            while (chunk := await viewer.queue.get()) is not None:
                await ws.send_bytes(chunk)
            await ws.close(code=1000, message=viewer.ended.encode()[:120])

        sender = asyncio.create_task(forward())
        try:
            async for msg in ws:
                if msg.type == WSMsgType.BINARY:
                    await port.write(msg.data)
                elif msg.type == WSMsgType.TEXT:
                    await port.write(msg.data.encode())
        except (OSError, ConnectionError) as e:
            log.info("console of %s: %s", key, e)
        finally:
            port.remove(viewer)
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender
            log.info("console of %s closed for %s", key, user, extra={"vm": key, "user": user})
        return ws

    async def _port(self, key: str, uid: str, path: str) -> SerialPort:
        port = self.ports.get(uid)
        if port is not None:
            return port
        if not uid or not Path(path).is_socket():
            raise protocol.ConsoleError(
                409,
                f"virtualmachine {key} has no serial port to attach to (it is not running "
                "here); `kubectl vm console --log` shows its log",
            )
        port = SerialPort(path, lambda p: self._closed(uid, p))
        try:
            await port.open()
        except OSError as e:
            raise protocol.ConsoleError(
                409, f"virtualmachine {key}: its serial port is not accepting ({e.strerror})"
            ) from None
        self.ports[uid] = port
        return port

    def _closed(self, uid: str, port: SerialPort) -> None:
        if self.ports.get(uid) is port:
            del self.ports[uid]

    async def console_log(self, request: web.Request) -> web.StreamResponse:
        try:
            key, _vm = self._vm(request)
            tail = protocol.parse_tail(request.query.get("tail"))
        except protocol.ConsoleError as e:
            return web.json_response(protocol.status(e.status, e.message), status=e.status)
        namespace, name = key.split("/", 1)
        path = Path(self.settings.state_dir) / domain_xml.domain_name(namespace, name)
        data = await asyncio.to_thread(_read_log, path / "serial.log", tail)
        if data is None:
            return web.json_response(
                protocol.status(404, f"virtualmachine {key} has no console log on {self.host}"),
                status=404,
            )
        return web.Response(body=data, content_type="text/plain", charset="utf-8")


def _read_log(path: Path, tail: int) -> bytes | None:
    try:
        with path.open("rb") as f:
            size = f.seek(0, 2)
            f.seek(max(0, size - LOG_TAIL_WINDOW))
            return protocol.tail_lines(f.read(), tail)
    except FileNotFoundError:
        return None
