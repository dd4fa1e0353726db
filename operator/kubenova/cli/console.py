"""`kubectl vm console`: attach to a VM's serial console, or print its log, through the
Kubernetes API server (`virtualmachines/console` and `/consolelog` in
`subresources.kubenova.io`, docs/console.md), with the kubeconfig's credentials. Does I/O.

On a terminal, stdin goes raw (every key reaches the guest) until the detach key (Ctrl-] by
default) or the end of the session. When stdin is no terminal, what it holds is sent as
typed; at its end the session lingers `linger` seconds for the guest's answer, then detaches.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import ssl
import sys
import termios
import tty
from dataclasses import dataclass
from typing import Any, cast

import aiohttp
import kubernetes

from kubenova.console import protocol


class ConsoleError(RuntimeError):
    """Shown to the user as is."""


@dataclass(frozen=True)
class Endpoint:
    server: str
    ssl: ssl.SSLContext | bool
    headers: dict[str, str]
    namespace: str


def endpoint(kubeconfig: str | None, context: str | None, namespace: str | None) -> Endpoint:
    """The API server and credentials of a kubeconfig (exec plugins and tokens included, as
    the Kubernetes client loads them)."""
    cfg = kubernetes.client.Configuration()
    loader: Any = kubernetes.config
    try:
        loader.load_kube_config(config_file=kubeconfig, context=context, client_configuration=cfg)
        _contexts, current = loader.list_kube_config_contexts(config_file=kubeconfig)
    except (kubernetes.config.ConfigException, OSError) as e:
        raise ConsoleError(f"kubeconfig: {e}") from None
    if context:
        current = next((c for c in _contexts if c["name"] == context), current)
    ns = namespace or (current or {}).get("context", {}).get("namespace") or "default"
    tls: ssl.SSLContext | bool = False
    if cfg.host.startswith("https"):
        if cfg.verify_ssl:
            tls = ssl.create_default_context(cafile=cfg.ssl_ca_cert or None)
        else:
            tls = ssl.create_default_context()
            tls.check_hostname = False
            tls.verify_mode = ssl.CERT_NONE
        if cfg.cert_file:
            tls.load_cert_chain(cfg.cert_file, cfg.key_file)
    # Tokens (static, or an exec plugin's) as the client would send them; the identifier of
    # the key differs between client versions ('authorization', 'BearerToken').
    auths = cast(dict[str, dict[str, Any]], cfg.auth_settings())
    headers = {
        str(auth["key"]).title(): str(auth["value"])
        for auth in auths.values()
        if auth.get("in") == "header" and auth.get("value")
    }
    return Endpoint(cfg.host.rstrip("/"), tls, headers, ns)


async def _refusal(session: aiohttp.ClientSession, ep: Endpoint, url: str, status: int) -> str:
    """Why the API server (or the console server) refused an upgrade: the same request
    without the upgrade returns the Status with the message."""
    with contextlib.suppress(aiohttp.ClientError):
        async with session.get(url, ssl=ep.ssl, headers=ep.headers) as r:
            body = await r.read()
            with contextlib.suppress(ValueError):
                return f"{r.status}: {json.loads(body).get('message', '')}"
            return f"{r.status}: {body.decode(errors='replace')[:300]}"
    return f"{status}"


def _url(ep: Endpoint, name: str, subresource: str) -> str:
    """The subresource's URL; a name no VM can have is refused here, before it is put in a
    URL that a client library might normalise into another path."""
    try:
        protocol.check_names(ep.namespace, name)
    except protocol.ConsoleError as e:
        raise ConsoleError(e.message) from None
    return ep.server + protocol.subresource_path(ep.namespace, name, subresource)


async def read_log(ep: Endpoint, name: str, tail: int) -> bytes:
    url = _url(ep, name, protocol.CONSOLE_LOG)
    async with aiohttp.ClientSession() as session:
        try:
            async with session.get(
                url, ssl=ep.ssl, headers=ep.headers, params={"tail": str(tail)}
            ) as r:
                body = await r.read()
                if r.status != 200:
                    try:
                        message = json.loads(body).get("message", "")
                    except ValueError:
                        message = body.decode(errors="replace")[:300]
                    raise ConsoleError(f"{r.status}: {message}")
                return body
        except aiohttp.ClientError as e:
            raise ConsoleError(f"{ep.server}: {e}") from None


async def attach(
    ep: Endpoint,
    name: str,
    detach_key: int = protocol.DETACH_KEY,
    linger: float = 2.0,
    stdin_fd: int | None = None,
    out: Any = None,
) -> str:
    """Attach until detached or closed; returns why it ended."""
    fd = sys.stdin.fileno() if stdin_fd is None else stdin_fd
    output = out if out is not None else sys.stdout.buffer
    url = _url(ep, name, protocol.CONSOLE)
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as session:
        try:
            ws = await session.ws_connect(url, ssl=ep.ssl, headers=ep.headers, heartbeat=30.0)
        except aiohttp.WSServerHandshakeError as e:
            raise ConsoleError(await _refusal(session, ep, url, e.status)) from None
        except aiohttp.ClientError as e:
            raise ConsoleError(f"{ep.server}: {e}") from None
        detacher = protocol.Detacher(detach_key)
        typed: asyncio.Queue[bytes | None] = asyncio.Queue()

        def readable() -> None:
            try:
                data = os.read(fd, 4096)
            except OSError:
                data = b""
            if not data:
                loop.remove_reader(fd)
                typed.put_nowait(None)
                return
            send, detached = detacher.feed(data)
            if send:
                typed.put_nowait(send)
            if detached:
                loop.remove_reader(fd)
                typed.put_nowait(b"")

        loop.add_reader(fd, readable)

        async def up() -> str:
            while True:
                data = await typed.get()
                if data is None:  # stdin ended: let the guest answer, then go
                    await asyncio.sleep(linger)
                    return "input ended"
                if data == b"":
                    return "detached"
                await ws.send_bytes(data)

        async def down() -> str:
            while True:
                msg = await ws.receive()
                if msg.type == aiohttp.WSMsgType.BINARY:
                    output.write(msg.data)
                    output.flush()
                elif msg.type == aiohttp.WSMsgType.CLOSE:
                    return f"closed: {msg.extra}" if msg.extra else "closed"
                elif msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                    return "closed"

        tasks = [asyncio.create_task(up()), asyncio.create_task(down())]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            reason = next(iter(done)).result()
        finally:
            loop.remove_reader(fd)
            for t in tasks:
                t.cancel()
            await ws.close()
        return reason


def run_console(ep: Endpoint, name: str, detach_key: int, linger: float) -> str:
    """`attach` with the terminal in raw mode when stdin is one."""
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd) if os.isatty(fd) else None
    if saved is not None:
        key = f"^{chr(detach_key + 0x40)}" if detach_key < 0x20 else chr(detach_key)
        print(f"attached to {ep.namespace}/{name}; {key} detaches", file=sys.stderr)
        tty.setraw(fd)
    try:
        return asyncio.run(attach(ep, name, detach_key, linger))
    finally:
        if saved is not None:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)
