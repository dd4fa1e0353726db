"""kube.aio's requests against a small HTTP server on loopback: what a caller gets back for
the API server's failures, and which of them are retried."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import kubernetes
import pytest
from aiohttp import web
from kubernetes.client.exceptions import ApiException

from kubenova.kube import aio, client

pytestmark = pytest.mark.unit


def _status(code: int, message: str) -> web.Response:
    body = {"kind": "Status", "status": "Failure", "message": message, "code": code}
    return web.json_response(body, status=code)


async def _serve(
    answers: list[Any], seen: list[tuple[str, str, bytes]]
) -> tuple[web.AppRunner, str]:
    async def handle(request: web.Request) -> web.StreamResponse:
        seen.append((request.method, request.headers.get("Content-Type", ""), await request.read()))
        answer = answers.pop(0)
        if isinstance(answer, float):  # no answer in time
            await asyncio.sleep(answer)
            return web.json_response({"late": True})
        assert isinstance(answer, web.StreamResponse)
        return answer

    return await _listen(handle)


async def _listen(
    handle: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> tuple[web.AppRunner, str]:
    """A server on loopback answering every request with `handle`; its runner and base URL."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


def _run(answers: list[Any], method: str = "GET", **kwargs: Any) -> tuple[Any, list[Any]]:
    seen: list[tuple[str, str, bytes]] = []

    async def scenario() -> Any:
        runner, base = await _serve(answers, seen)
        session = aio.Session(kubernetes.client.ApiClient(kubernetes.client.Configuration(base)))
        try:
            return await session.call(method, "/apis/x/v1/things/a", **kwargs)
        except Exception as e:
            return e
        finally:
            await session.close()
            await runner.cleanup()

    return asyncio.run(scenario()), seen


@pytest.fixture(autouse=True)
def _no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    real = client.retrying

    async def quick(attempt: Any, attempts: int = 6, **_: Any) -> Any:
        return await real(attempt, attempts=attempts, base_delay=0.01, max_delay=0.01)

    monkeypatch.setattr(client, "retrying", quick)


def test_a_conflict_comes_back_at_once_with_the_servers_message() -> None:
    got, seen = _run([_status(409, "the object has been modified")], "PATCH", body=[{"op": "x"}],
                     content_type=aio.JSON_PATCH)  # fmt: skip
    assert isinstance(got, ApiException) and not isinstance(got, aio.ExpiredError)
    assert (got.status, got.reason) == (409, "the object has been modified")
    assert json.loads(got.body or "{}")["code"] == 409
    assert seen == [("PATCH", aio.JSON_PATCH, b'[{"op": "x"}]')], "not retried"


def test_busy_failing_and_slow_answers_are_retried_until_one_succeeds() -> None:
    answers = [
        web.json_response({}, status=429, headers={"Retry-After": "0"}),
        _status(500, "etcd leader changed"),
        5.0,  # the reply never comes within the request's time-out
        web.json_response({"kind": "Thing", "ok": True}),
    ]
    got, seen = _run(answers, timeout=0.5)
    assert got == {"kind": "Thing", "ok": True}
    assert len(seen) == 4


def test_gone_is_an_expired_error_and_the_last_failure_is_raised() -> None:
    got, _ = _run([_status(410, "too old resource version")])
    assert isinstance(got, aio.ExpiredError) and got.status == 410
    got, seen = _run([_status(503, "unavailable") for _ in range(6)])
    assert isinstance(got, ApiException) and got.status == 503 and len(seen) == 6
    got, _ = _run([web.Response(status=404, text="not json")])
    assert isinstance(got, ApiException) and (got.status, got.reason) == (404, "not json")


def test_object_paths_quote_what_they_carry() -> None:
    assert aio.object_path("kubenova.io", "v1alpha1", "virtualmachines", "a", "ns") == (
        "/apis/kubenova.io/v1alpha1/namespaces/ns/virtualmachines/a"
    )
    assert aio.object_path("", "v1", "nodes", "a/b?c", None) == "/api/v1/nodes/a%2Fb%3Fc"


def _rotating(base: str, tokens: list[str], asked: list[str]) -> kubernetes.client.Configuration:
    """A configuration whose refresh hook hands out the next of `tokens` at each ask."""
    config = kubernetes.client.Configuration(base)
    config.api_key_prefix["BearerToken"] = "Bearer"
    config.api_key["BearerToken"] = "stale"
    left = iter(tokens)

    def refresh(c: kubernetes.client.Configuration) -> None:
        asked.append("refresh")
        c.api_key["BearerToken"] = next(left)

    config.refresh_api_key_hook = refresh  # type: ignore[assignment]  # typed as None in the stubs
    return config


def test_the_auth_headers_are_read_again_only_after_their_ttl() -> None:
    """Each ask for the official client's auth settings reloads a kubeconfig's credentials,
    so a Session keeps them for AUTH_TTL seconds; a token rotated meanwhile arrives after."""
    asked: list[str] = []
    config = _rotating("https://127.0.0.1:1", ["first", "second"], asked)
    now = [100.0]
    session = aio.Session(kubernetes.client.ApiClient(config), clock=lambda: now[0])
    for _ in range(50):
        assert session.headers()["authorization"] == "Bearer first"
    assert asked == ["refresh"]
    session.headers()["authorization"] = "changed by a caller"
    now[0] += aio.AUTH_TTL - 0.1
    assert session.headers()["authorization"] == "Bearer first"
    now[0] += 0.1
    assert session.headers()["authorization"] == "Bearer second"
    assert asked == ["refresh", "refresh"]


def test_a_401_makes_the_next_request_read_the_credentials_again() -> None:
    """A token revoked or rotated before AUTH_TTL ran out: one request is refused, the next
    carries the new token."""
    tokens: list[str] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        tokens.append(request.headers.get("Authorization", ""))
        if request.headers.get("Authorization") == "Bearer first":
            return _status(401, "Unauthorized")
        return web.json_response({"kind": "Thing"})

    async def scenario() -> tuple[Any, Any]:
        runner, base = await _listen(handle)
        config = _rotating(base, ["first", "second"], [])
        session = aio.Session(kubernetes.client.ApiClient(config), clock=lambda: 100.0)
        try:
            with pytest.raises(ApiException) as refused:
                await session.call("GET", "/api/v1/things/a")
            return refused.value.status, await session.call("GET", "/api/v1/things/a")
        finally:
            await session.close()
            await runner.cleanup()

    status, got = asyncio.run(scenario())
    assert (status, got) == (401, {"kind": "Thing"})
    assert tokens == ["Bearer first", "Bearer second"]
