"""A body that is not a well-formed AdmissionReview gets a 400 that says what is wrong with
it -- never a 500 with a traceback -- and the server goes on answering."""

from __future__ import annotations

from typing import Any

import pytest

from kubenova.webhooks import server
from tests.fixtures.webhook import Webhook, review, vm_manifest

pytestmark = pytest.mark.apiserver


def _with(**request: Any) -> dict[str, Any]:
    body = review("CREATE", vm_manifest("m", "default"))
    body["request"].update(request)
    return body


MALFORMED: list[tuple[str, Any, str]] = [
    ("object-as-list", _with(object=[1, 2]), "request.object must be an object, not list"),
    ("old-as-string", _with(oldObject="x"), "request.oldObject must be an object, not str"),
    (
        "metadata-as-list",
        _with(object={"metadata": ["a"]}),
        "request.object.metadata must be an object, not list",
    ),
    ("uid-as-number", _with(uid=7), "request.uid must be a non-empty string"),
    ("kind-as-string", _with(kind="VirtualMachine"), "request.kind must be an object"),
    ("bad-operation", _with(operation="EXPLODE"), "request.operation must be one of"),
    ("namespace-as-list", _with(namespace=["a"]), "request.namespace must be a string"),
    ("dry-run-as-string", _with(dryRun="yes"), "request.dryRun must be true or false"),
    ("user-as-list", _with(userInfo=["root"]), "request.userInfo must be an object"),
    ("not-json", b"{not json", "the body is not JSON"),
    ("deeply-nested", b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    ("not-utf8", b"\xff\xfe{}", "not UTF-8"),
]


@pytest.mark.parametrize(
    ("body", "expected"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED]
)
def test_a_malformed_review_is_a_bad_request_with_a_reason(
    webhook: Webhook, body: Any, expected: str
) -> None:
    for path in ("/validate", "/mutate"):
        reply = webhook.post(path, body, client=webhook.api_server_client)
        assert reply.status == 400, (path, reply)
        assert expected in reply.message, (path, reply)
        assert "Traceback" not in reply.message
    assert webhook.healthy()


def test_a_review_larger_than_any_admitted_vm_can_make_is_refused_unread(
    webhook: Webhook,
) -> None:
    body = review("CREATE", vm_manifest("huge", "default"))
    body["request"]["object"]["metadata"]["annotations"] = {"a": "x" * server.MAX_REVIEW_BYTES}
    reply = webhook.post("/validate", body, client=webhook.api_server_client)
    assert reply.status == 413, reply.status
    assert f"at most {server.MAX_REVIEW_BYTES} bytes" in reply.message, reply.message
    assert webhook.healthy()
