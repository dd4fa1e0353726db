"""The HTTP layer, with the decisions stubbed: status codes, the review it answers, metrics."""

from __future__ import annotations

import asyncio
import socket
import ssl
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import test_utils, web

from kubenova.dev import cluster, pki
from kubenova.webhooks import admission, review, server

pytestmark = pytest.mark.unit


class StubAdmission(admission.Admission):
    def __init__(self) -> None:  # no API, catalog or ledger behind it
        pass

    async def mutate(self, req: review.Request) -> review.Verdict:
        return review.allow([{"op": "add", "path": "/metadata/labels", "value": {"a": "b"}}])

    async def validate(self, req: review.Request) -> review.Verdict:
        if req.name == "boom":
            raise RuntimeError("the API server went away")
        return review.deny("Invalid", f"{req.who}: no")


def body(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": f"uid-{name}",
            "kind": {"group": "kubenova.io", "version": "v1alpha1", "kind": "Flavor"},
            "operation": "UPDATE",
            "name": name,
            "object": {"metadata": {"name": name}},
        },
    }


async def exchange(*calls: tuple[str, Any]) -> list[tuple[int, Any]]:
    async with test_utils.TestClient(test_utils.TestServer(server.app(StubAdmission()))) as c:
        out = []
        for path, payload in calls:
            if payload is None:
                r = await c.get(path)
                out.append((r.status, await r.text()))
            else:
                r = await c.post(
                    path,
                    data=payload if isinstance(payload, str) else None,
                    json=None if isinstance(payload, str) else payload,
                )
                is_json = r.content_type == "application/json"
                out.append((r.status, await (r.json() if is_json else r.text())))
        return out


def test_answers_each_review_with_its_uid_and_verdict() -> None:
    (m, v, boom, metrics) = asyncio.run(
        exchange(
            ("/mutate", body("a")),
            ("/validate", body("b")),
            ("/validate", body("boom")),
            ("/metrics", None),
        )
    )
    assert m[0] == 200
    assert m[1]["response"]["uid"] == "uid-a"
    assert m[1]["response"]["allowed"] is True
    assert m[1]["response"]["patchType"] == "JSONPatch"
    assert v[1]["response"]["status"]["message"] == "Flavor b: no"
    assert boom[1]["response"]["allowed"] is False, "an error fails closed"
    assert "the kubenova admission webhook failed" in boom[1]["response"]["status"]["message"]
    text = metrics[1]
    assert 'kubenova_webhook_denials_total{kind="Flavor",reason="InternalError"}' in text
    assert (
        'kubenova_webhook_admission_seconds_count{kind="Flavor",operation="UPDATE",'
        'webhook="mutate"}' in text
    )


@pytest.mark.parametrize("payload", ["not json", '{"kind": "Pod"}'])
def test_a_body_that_is_no_review_is_a_bad_request(payload: str) -> None:
    ((status, text),) = asyncio.run(exchange(("/validate", payload)))
    assert status == 400
    assert text


def test_healthz() -> None:
    assert asyncio.run(exchange(("/healthz", None))) == [(200, "ok")]


async def _review_over_tls(
    tls: ssl.SSLContext, client: pki.KeyPair, server_ca: Path, auth: server.ClientAuth
) -> int:
    """POST a review to the app served with `tls`, presenting `client`: the status."""
    runner = web.AppRunner(server.app(StubAdmission(), auth))
    await runner.setup()
    port = cluster.free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=tls).start()
    context = ssl.create_default_context(cafile=str(server_ca))
    context.load_cert_chain(str(client.cert), str(client.key))
    try:
        async with aiohttp.ClientSession() as s:
            url = f"https://127.0.0.1:{port}/mutate"
            async with s.post(url, json=body("x"), ssl=context) as r:
                return r.status
    finally:
        await runner.cleanup()


def test_only_the_client_ca_is_trusted_not_the_machines_default_cas(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client certificate signed by a CA the machine trusts by default (its system store,
    which a default server context also loads) is not the API server's: with `--client-ca`,
    that CA alone may sign the caller's certificate, as docs/security.md says."""
    ours = pki.CertificateAuthority(tmp_path / "ours", name="webhook-client-ca")
    system = pki.CertificateAuthority(tmp_path / "system", name="some-public-ca")
    serving_ca = pki.CertificateAuthority(tmp_path / "serving", name="serving-ca")
    serving = serving_ca.issue("webhook", "kubenova-webhook", hosts=("127.0.0.1",))
    name = "kube-apiserver-webhook-client"
    genuine = ours.issue("client", name, client=True)
    impostor = system.issue("client", name, client=True)
    # The machine's default trust store, as OpenSSL finds it: this CA only.
    monkeypatch.setenv("SSL_CERT_FILE", str(system.cert_path))
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path / "no-such-dir"))
    auth = server.ClientAuth(ours.cert_path, frozenset({name}))
    tls = server.tls(serving.cert, serving.key, ours.cert_path)

    assert asyncio.run(_review_over_tls(tls, genuine, serving_ca.cert_path, auth)) == 200
    with pytest.raises(aiohttp.ClientError):
        asyncio.run(_review_over_tls(tls, impostor, serving_ca.cert_path, auth))


def test_the_server_hands_out_no_session_tickets(tmp_path: Path) -> None:
    """The API server never resumes a TLS session with a webhook (its client keeps no session
    cache), so a ticket would only cost each new connection CPU."""
    ca = pki.CertificateAuthority(tmp_path / "ca", name="serving-ca")
    serving = ca.issue("webhook", "kubenova-webhook", hosts=("127.0.0.1",))

    async def run() -> tuple[bool, int]:
        runner = web.AppRunner(server.app(StubAdmission()))
        await runner.setup()
        port = cluster.free_port()
        await web.TCPSite(
            runner, "127.0.0.1", port, ssl_context=server.tls(serving.cert, serving.key)
        ).start()
        try:
            return await asyncio.to_thread(_ticket_after_one_request, port, ca.cert_path)
        finally:
            await runner.cleanup()

    has_ticket, status = asyncio.run(run())
    assert status == 200
    assert not has_ticket


def _ticket_after_one_request(port: int, ca: Path) -> tuple[bool, int]:
    """Whether the server sent a session ticket by the end of one /healthz exchange."""
    context = ssl.create_default_context(cafile=str(ca))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        reply = b""
        while chunk := tls.recv(4096):
            reply += chunk
        session = tls.session
        return bool(session is not None and session.has_ticket), int(reply.split()[1])
