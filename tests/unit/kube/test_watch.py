"""kube.watch: the stream splitter, and a Reflector against a small HTTP server on loopback
that speaks the API server's list and watch protocol (pages, bookmarks, a 410 ERROR event)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from aiohttp import web

from kubenova.kube import aio, client, watch
from tests.fixtures.reflectors import running, until

pytestmark = pytest.mark.unit

PATH = "/apis/kubenova.io/v1alpha1/virtualmachines"


def test_lines_come_out_whole_whatever_the_chunks() -> None:
    stream = b'{"a": 1}\n{"b": "x\\ny"}\n\n{"c": [1, 2, 3]}\n{"partial'
    for size in (1, 2, 5, 7, len(stream)):
        buffer = bytearray()
        got = [
            line
            for i in range(0, len(stream), size)
            for line in watch.lines(buffer, stream[i : i + size])
        ]
        assert [json.loads(x) for x in got] == [{"a": 1}, {"b": "x\ny"}, {"c": [1, 2, 3]}]
        assert bytes(buffer) == b'{"partial'


def _vm(name: str, rv: int, **extra: Any) -> dict[str, Any]:
    meta = {"name": name, "namespace": "ns", "resourceVersion": str(rv), **extra}
    return {"kind": "VirtualMachine", "metadata": meta}


class FakeAPI:
    """Lists from `objects` (two per page); each watch request takes its next script: a list
    of events to send, then the stream ends (as the server's timeoutSeconds does)."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.rv = 10
        self.scripts: list[list[dict[str, Any]]] = []
        self.requests: list[dict[str, str]] = []
        self.before_watch: dict[int, Callable[[], None]] = {}
        """Run as the n-th watch (from 0) starts, before its events."""
        self.watches = 0
        self.auth: list[str | None] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        params = dict(request.query)
        self.requests.append(params)
        self.auth.append(request.headers.get("Authorization"))
        if params.get("watch") != "true":
            names = sorted(self.objects)
            start = int(params.get("continue") or 0)
            page = names[start : start + 2]
            meta: dict[str, Any] = {"resourceVersion": str(self.rv)}
            if start + 2 < len(names):
                meta["continue"] = str(start + 2)
            return web.json_response({"items": [self.objects[n] for n in page], "metadata": meta})
        resp = web.StreamResponse()
        await resp.prepare(request)
        script = self.scripts.pop(0) if self.scripts else []
        self.before_watch.pop(self.watches, lambda: None)()
        self.watches += 1
        for event in script:
            line = json.dumps(event).encode() + b"\n"
            await resp.write(line[:3])  # split mid-line, as a network would
            await resp.write(line[3:])
        if not script:
            await asyncio.sleep(3600)
        return resp


async def _serve(api: FakeAPI) -> AsyncGenerator[str]:
    app = web.Application()
    app.router.add_get(PATH, api.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.5)  # the open watches end at once
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def test_a_reflector_lists_watches_resumes_and_relists_after_expiry() -> None:
    async def scenario() -> None:
        api = FakeAPI()
        for i, name in enumerate(("a", "b", "c")):
            api.objects[name] = _vm(name, 5 + i, managedFields=[{"manager": "x"}])
        api.scripts = [
            [
                {"type": "MODIFIED", "object": _vm("a", 11)},
                {"type": "BOOKMARK", "object": _vm("", 12)},
            ],
            [
                {"type": "ADDED", "object": _vm("d", 13)},
                {"type": "DELETED", "object": _vm("b", 14)},
                {"type": "ERROR", "object": {"code": 410, "message": "too old"}},
            ],
        ]
        seen: list[tuple[str, str, str | None]] = []
        synced: list[int] = []

        def on_event(kind: str, obj: dict[str, Any]) -> None:
            meta = obj["metadata"]
            assert "managedFields" not in meta
            seen.append((kind, meta["name"], meta.get("resourceVersion")))

        gen = _serve(api)
        base = await gen.__anext__()
        config = kubernetes.client.Configuration(host=base)
        session = aio.Session(kubernetes.client.ApiClient(config))
        reflector = watch.Reflector(
            session, PATH, on_event, page=2, timeout=5, on_synced=lambda: synced.append(1)
        )

        def changes() -> None:  # what the second watch's events say, and c deleted unseen
            del api.objects["c"], api.objects["b"]
            api.objects["d"] = _vm("d", 20)

        api.before_watch[1] = changes
        try:
            async with running(reflector):
                await until("a relist after the 410", lambda: reflector.lists == 2)
        finally:
            await gen.aclose()
        # Two pages of the first list, then the watch from its version, resumed from the
        # bookmark's, then (410) a list again, whose missing object comes as DELETED.
        kinds = [
            (r.get("watch"), r.get("resourceVersion"), r.get("continue")) for r in api.requests
        ]
        assert kinds[:4] == [(None, None, None), (None, None, "2"), ("true", "10", None),
                             ("true", "12", None)]  # fmt: skip
        assert seen[:5] == [("ADDED", "a", "5"), ("ADDED", "b", "6"), ("ADDED", "c", "7"),
                            ("MODIFIED", "a", "11"), ("ADDED", "d", "13")]  # fmt: skip
        assert seen[5] == ("DELETED", "b", "14")
        relist = seen[6:]
        assert ("ADDED", "a", "5") in relist and ("ADDED", "d", "20") in relist
        assert ("DELETED", "c", None) in relist, "deleted while the watch was gone"
        assert ("DELETED", "b", None) not in relist, "b's deletion was seen once already"
        assert len(synced) == 2
        assert reflector.keys == {"ns/a", "ns/d"}

    asyncio.run(scenario())


def test_a_handler_that_fails_does_not_end_the_stream_and_a_token_is_sent(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        api = FakeAPI()
        api.scripts = [[{"type": "ADDED", "object": _vm(n, 11 + i)} for i, n in enumerate("xyz")]]
        seen: list[str] = []

        def on_event(kind: str, obj: dict[str, Any]) -> None:
            if obj["metadata"]["name"] == "y":
                raise ValueError("a bug")
            seen.append(obj["metadata"]["name"])

        gen = _serve(api)
        base = await gen.__anext__()
        kubeconfig = tmp_path / "token.kubeconfig"
        kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "t",
            "clusters": [{"name": "c", "cluster": {"server": base}}],
            "users": [{"name": "u", "user": {"token": "s3cret"}}],
            "contexts": [{"name": "t", "context": {"cluster": "c", "user": "u"}}],
        }))  # fmt: skip
        session = aio.Session(client.api_client(str(kubeconfig)))
        reflector = watch.Reflector(session, PATH, on_event, timeout=5)
        try:
            async with running(reflector):
                await until("x and z", lambda: seen == ["x", "z"])
        finally:
            await gen.aclose()
        assert reflector.lists == 1, "no relist: the stream went on"
        assert set(api.auth) == {"Bearer s3cret"}, "the token, as the official client sends it"

    asyncio.run(scenario())
