"""A fault-injecting proxy in front of kube-apiserver, for tests and chaos runs. Does I/O:
serves TLS on loopback, forwards to the real API server, writes kubeconfigs and certificates.

    python -m kubenova.dev.faultproxy --kubeconfig admin.kubeconfig --folder /tmp/fp \\
        --component operator --component agents --seed 7 --mix 0.02 \\
        --rule 'drop-reply:verb=patch,resource=virtualmachines/status,times=1'

Each component gets its own listener (a loopback port) and a kubeconfig,
`<folder>/<component>.kubeconfig`, to point it at: rules can target a component by its
listener, besides a verb, a resource or a User-Agent (`kubenova.dev.faults`). What a fault
does is described there; `FaultProxy.counts()` says how many of each were injected, and the
command line writes them to `<folder>/counts.json` every second and prints them on exit; with
`--hold` it starts without faults, and SIGUSR1 / SIGUSR2 turn its rules on and off (a chaos run
sets up cleanly, then arms it).

Identity. The proxy terminates TLS with a serving certificate from its own CA (in
`<folder>/pki`) and re-originates TLS to the API server. Upstream, each listener presents the
client certificate of the kubeconfig it was made from (the proxy's own by default), and a
bearer token the client sends is passed through untouched, so a component acts as itself
whether it logs in with a certificate (given to the proxy) or a token (sent by the component).
The written kubeconfig keeps the source's user entry for that reason; the proxy does not ask
for client certificates, so a certificate in it is never presented to the proxy. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import logging
import signal
import ssl
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web

from kubenova.dev import cluster, faults, pki

log = logging.getLogger(__name__)

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
REASONS = {409: "Conflict", 429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable"}


@dataclass(frozen=True)
class Upstream:
    """Where and how to reach the real API server, read from a kubeconfig."""

    server: str
    ca: Path | None
    cert: Path | None
    key: Path | None
    token: str | None
    user: dict[str, Any]
    """The kubeconfig's user entry, copied into the proxy's kubeconfigs."""

    @classmethod
    def from_kubeconfig(cls, path: Path, scratch: Path) -> Upstream:
        """Inline `*-data` fields are written to files in `scratch`."""
        config = yaml.safe_load(path.read_text())
        current = config.get("current-context")
        ctx = next(c["context"] for c in config["contexts"] if c["name"] == current)
        cl = next(c["cluster"] for c in config["clusters"] if c["name"] == ctx["cluster"])
        users = [u["user"] for u in config.get("users", []) if u["name"] == ctx.get("user")]
        user: dict[str, Any] = users[0] if users else {}
        scratch.mkdir(parents=True, exist_ok=True)
        stem = path.stem

        def file(entry: dict[str, Any], key: str, name: str) -> Path | None:
            if entry.get(key):
                return (path.parent / str(entry[key])).resolve()
            data = entry.get(f"{key}-data")
            if not data:
                return None
            out = scratch / f"{stem}-{name}"
            out.write_bytes(base64.b64decode(data))
            out.chmod(0o600)
            return out

        return cls(
            server=cl["server"].rstrip("/"),
            ca=file(cl, "certificate-authority", "ca.crt"),
            cert=file(user, "client-certificate", "client.crt"),
            key=file(user, "client-key", "client.key"),
            token=user.get("token"),
            user=user,
        )

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca) if self.ca else None)
        if self.cert and self.key:
            context.load_cert_chain(str(self.cert), str(self.key))
        return context


class Listener:
    """One component's port: its own upstream identity and connection pool."""

    def __init__(self, proxy: FaultProxy, component: str, upstream: Upstream, port: int) -> None:
        self.proxy, self.component, self.upstream, self.port = proxy, component, upstream, port
        self.kubeconfig = proxy.folder / f"{component}.kubeconfig"
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.ServerRunner | None = None
        self._site: web.TCPSite | None = None
        self._refusing_until = 0.0

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=self.upstream.ssl_context(), limit=0),
            auto_decompress=False,  # bytes pass through as the API server encoded them
            timeout=aiohttp.ClientTimeout(total=None, connect=10, sock_read=None),
            # Only what the client sent: a body without a Content-Type is JSON to the API
            # server, and would be application/octet-stream (415) if aiohttp filled it in.
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
        )
        # Open watches would hold a graceful shutdown for a minute; they are cut instead.
        self._runner = web.ServerRunner(
            web.Server(self._handle), handle_signals=False, shutdown_timeout=0.5
        )
        await self._runner.setup()
        await self._open()
        self._write_kubeconfig()

    async def _open(self) -> None:
        assert self._runner is not None
        self._site = web.TCPSite(
            self._runner, "127.0.0.1", self.port, ssl_context=self.proxy.server_ssl
        )
        await self._site.start()
        if self.port == 0:
            server = self._site._server  # the port the OS chose
            assert isinstance(server, asyncio.base_events.Server)
            self.port = server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def _write_kubeconfig(self) -> None:
        cluster.write_kubeconfig(
            self.kubeconfig, self.url, self.proxy.ca.cert_path, self.upstream.user, self.component
        )

    async def _refuse_for(self, seconds: float) -> None:
        """Close the listening socket: new connections are refused (ECONNREFUSED)."""
        until = time.monotonic() + seconds
        if self._refusing_until > time.monotonic():
            self._refusing_until = max(self._refusing_until, until)
            return
        self._refusing_until = until
        if self._site is not None:
            await self._site.stop()
        while time.monotonic() < self._refusing_until:
            await asyncio.sleep(self._refusing_until - time.monotonic())
        await self._open()

    # -- one request ---------------------------------------------------------------------

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        ask = faults.Request(
            self.component,
            request.method,
            request.path,
            dict(request.query),
            request.headers.get("User-Agent", ""),
        )
        decision = self.proxy.plan.decide(ask)
        fault = decision.fault if decision else None
        delay = decision.delay if decision else 0.0
        if fault is faults.Fault.REFUSE:
            asyncio.ensure_future(self._refuse_for(delay))  # noqa: RUF006 - runs to its end
            return _reset(request)
        if fault is not None and fault.status is not None:
            return _status(fault.status)
        if fault is faults.Fault.TIMEOUT:
            await asyncio.sleep(delay)
            return _reset(request)
        body = await request.read()
        info = ask.info
        if fault is faults.Fault.LATENCY and not info.watch:
            await asyncio.sleep(delay)
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        try:
            upstream = await self._session.request(
                request.method,
                self.upstream.server + request.path_qs,
                headers=headers,
                data=body if body else None,
                allow_redirects=False,
            )
        except (aiohttp.ClientError, OSError) as e:
            log.info("upstream unreachable for %s %s: %s", request.method, request.path, e)
            return _reset(request)  # what the client would see without the proxy
        async with upstream:
            out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}
            if fault is faults.Fault.DROP_REPLY:
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    await upstream.read()  # the server has answered: the write landed
                return _reset(request)
            if not info.watch and fault is not faults.Fault.CUT_WATCH:
                try:
                    payload = await upstream.read()
                except (aiohttp.ClientError, OSError):
                    return _reset(request)
                return web.Response(status=upstream.status, headers=out_headers, body=payload)
            return await self._stream(request, upstream, out_headers, fault, delay)

    async def _stream(
        self,
        request: web.BaseRequest,
        upstream: aiohttp.ClientResponse,
        headers: dict[str, str],
        fault: faults.Fault | None,
        delay: float,
    ) -> web.StreamResponse:
        response = web.StreamResponse(status=upstream.status, headers=headers)
        response.enable_chunked_encoding()
        await response.prepare(request)
        cut_at = time.monotonic() + delay if fault is faults.Fault.CUT_WATCH else None
        lag = delay if fault is faults.Fault.LATENCY else 0.0
        try:
            if lag:
                await _stream_late(upstream, response, lag)
            else:
                while True:
                    timeout = None if cut_at is None else max(0.0, cut_at - time.monotonic())
                    try:
                        chunk = await asyncio.wait_for(upstream.content.readany(), timeout)
                    except TimeoutError:
                        return _reset(request, response)
                    if not chunk:
                        break
                    await response.write(chunk)
            await response.write_eof()
        except (ConnectionResetError, aiohttp.ClientError, OSError):
            return _reset(request, response)
        return response


async def _stream_late(
    upstream: aiohttp.ClientResponse, response: web.StreamResponse, lag: float
) -> None:
    """Every chunk `lag` seconds after it arrived, in order."""
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def read() -> None:
        while True:
            chunk = await upstream.content.readany()
            await queue.put((time.monotonic() + lag, chunk))
            if not chunk:
                return

    reader = asyncio.ensure_future(read())
    try:
        while True:
            due, chunk = await queue.get()
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            if not chunk:
                return
            await response.write(chunk)
    finally:
        reader.cancel()


def _reset(
    request: web.BaseRequest, response: web.StreamResponse | None = None
) -> web.StreamResponse:
    """Abort the client's connection: it sees a reset, never an answer."""
    if request.transport is not None:
        request.transport.abort()
    return response if response is not None else web.Response(status=502)


def _status(code: int) -> web.Response:
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": f"injected by kubenova faultproxy: {code}",
        "reason": REASONS.get(code, "Unknown"),
        "code": code,
    }
    headers = {"Retry-After": "1"} if code in (429, 503) else {}
    return web.json_response(body, status=code, headers=headers)


class FaultProxy:
    """Listeners for components, all deciding by one plan. Runs on an asyncio loop;
    `ProxyThread` runs it beside synchronous code."""

    def __init__(
        self, kubeconfig: Path, folder: Path, plan: faults.FaultPlan | None = None
    ) -> None:
        self.folder = folder.resolve()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.plan = plan or faults.FaultPlan()
        self.upstream = Upstream.from_kubeconfig(kubeconfig, self.folder / "upstream")
        self.ca = pki.CertificateAuthority(self.folder / "pki", name="kubenova-faultproxy-ca")
        serving = self.ca.issue("proxy", "kubenova-faultproxy", hosts=("127.0.0.1", "localhost"))
        self.server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.server_ssl.load_cert_chain(str(serving.cert), str(serving.key))
        self.listeners: dict[str, Listener] = {}

    async def add(self, component: str, kubeconfig: Path | None = None, port: int = 0) -> Listener:
        """A listener for `component`, authenticating upstream as `kubeconfig` says (the
        proxy's own by default); its kubeconfig is `<folder>/<component>.kubeconfig`."""
        if component in self.listeners:
            raise ValueError(f"faultproxy: component {component!r} already has a listener")
        upstream = (
            self.upstream
            if kubeconfig is None
            else Upstream.from_kubeconfig(kubeconfig, self.folder / "upstream")
        )
        listener = Listener(self, component, upstream, port)
        await listener.start()
        self.listeners[component] = listener
        return listener

    async def stop(self) -> None:
        for listener in self.listeners.values():
            await listener.stop()

    def counts(self) -> dict[str, int]:
        return self.plan.counts()

    def report(self) -> str:
        counts = self.counts()
        injected = sum(n for k, n in counts.items() if k != "requests")
        kinds = ", ".join(f"{k} {n}" for k, n in counts.items() if k != "requests")
        return f"faults injected: {injected} in {counts['requests']} requests ({kinds})"


class ProxyThread:
    """A FaultProxy on its own event loop in a daemon thread, for synchronous callers."""

    def __init__(self, proxy: FaultProxy) -> None:
        self.proxy = proxy
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="faultproxy", daemon=True
        )
        self._thread.start()

    def add(self, component: str, kubeconfig: Path | None = None, port: int = 0) -> Listener:
        future = asyncio.run_coroutine_threadsafe(
            self.proxy.add(component, kubeconfig, port), self._loop
        )
        return future.result(30)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _shutdown(self) -> None:
        """Close the listeners, then end what is still running (watches being streamed, a
        refusal waiting to reopen), so nothing runs on after its loop is gone."""
        await self.proxy.stop()
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    def counts(self) -> dict[str, int]:
        return self.proxy.counts()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m kubenova.dev.faultproxy",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--kubeconfig", type=Path, required=True, help="the real API server's")
    p.add_argument("--folder", type=Path, required=True)
    p.add_argument(
        "--component",
        action="append",
        default=[],
        help="NAME[=KUBECONFIG]: a listener; its upstream identity from KUBECONFIG",
    )
    p.add_argument("--rule", action="append", default=[], help="see kubenova.dev.faults")
    p.add_argument("--mix", type=float, default=0.0, help="add faults.chaos_mix(RATE)")
    p.add_argument("--watch-cut-after", type=float, default=20.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--hold",
        action="store_true",
        help="start with no faults; SIGUSR1 turns the rules on, SIGUSR2 off again",
    )
    a = p.parse_args(argv)
    try:
        rules = [faults.parse_rule(r) for r in a.rule]
    except faults.RuleError as e:
        p.error(str(e))
    if a.mix:
        rules += faults.chaos_mix(a.mix, a.watch_cut_after)
    for spec in a.component:
        if "/" in spec.partition("=")[0]:
            p.error(f"--component {spec}: a component name cannot contain '/'")
    logging.basicConfig(level=logging.WARNING)
    return asyncio.run(_serve(a, rules))


async def _serve(a: argparse.Namespace, rules: Sequence[faults.Rule]) -> int:
    plan = faults.FaultPlan([] if a.hold else rules, a.seed)
    proxy = FaultProxy(a.kubeconfig, a.folder, plan)
    for spec in a.component or ["default"]:
        name, _, config = spec.partition("=")
        listener = await proxy.add(name, Path(config) if config else None)
        print(f"{name} {listener.url} {listener.kubeconfig}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, plan.replace_rules, rules)
    loop.add_signal_handler(signal.SIGUSR2, plan.replace_rules, [])
    counts = proxy.folder / "counts.json"
    while not stop.is_set():
        counts.write_text(json.dumps(proxy.counts()))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
    counts.write_text(json.dumps(proxy.counts()))
    print(proxy.report(), flush=True)
    await proxy.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
