"""The HTTP layer, with the decisions stubbed: status codes, the review it answers, metrics."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import test_utils

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
