"""The admission.k8s.io/v1 AdmissionReview wire format: the raw request as the API server sends
it, its parsed form, and the responses (allow, allow with a JSON patch, deny). Pure.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any, Literal, NotRequired, TypedDict

from kubenova.api.constants import ANNOTATION_TRACE_ID as TRACE_ANNOTATION
from kubenova.webhooks import jsonpatch

Op = Literal["CREATE", "UPDATE", "DELETE", "CONNECT"]


class RawKind(TypedDict):
    group: str
    version: str
    kind: str


class RawUserInfo(TypedDict, total=False):
    username: str
    groups: list[str]


class RawRequest(TypedDict):
    uid: str
    kind: RawKind
    operation: Op
    name: NotRequired[str]
    namespace: NotRequired[str]
    subResource: NotRequired[str]
    object: NotRequired[dict[str, Any] | None]
    oldObject: NotRequired[dict[str, Any] | None]
    dryRun: NotRequired[bool]
    userInfo: NotRequired[RawUserInfo]


class RawReview(TypedDict):
    apiVersion: str
    kind: str
    request: RawRequest


class ReviewError(ValueError):
    """A body that is not an AdmissionReview."""


@dataclass(frozen=True)
class Request:
    """What is being admitted."""

    uid: str
    kind: str
    operation: Op
    namespace: str
    name: str
    object: dict[str, Any] | None
    old_object: dict[str, Any] | None
    dry_run: bool
    username: str

    @property
    def trace_id(self) -> str | None:
        """The object's trace id annotation, if it has one yet."""
        for obj in (self.object, self.old_object):
            annotations = ((obj or {}).get("metadata") or {}).get("annotations") or {}
            tid = annotations.get(TRACE_ANNOTATION) if isinstance(annotations, dict) else None
            if isinstance(tid, str) and tid:
                return tid
        return None

    @property
    def who(self) -> str:
        """`Kind namespace/name` for messages (name may be generated and still unknown)."""
        name = self.name or (self.object or {}).get("metadata", {}).get("generateName", "")
        return f"{self.kind} {self.namespace + '/' if self.namespace else ''}{name}"


_OPERATIONS = ("CREATE", "UPDATE", "DELETE", "CONNECT")


def _object(raw: dict[str, Any], key: str) -> dict[str, Any] | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ReviewError(f"request.{key} must be an object, not {type(value).__name__}")
    meta = value.get("metadata", {})
    if not isinstance(meta, dict):
        raise ReviewError(f"request.{key}.metadata must be an object, not {type(meta).__name__}")
    return value


def _text(raw: dict[str, Any], key: str, where: str = "request") -> str:
    value = raw.get(key, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ReviewError(f"{where}.{key} must be a string, not {type(value).__name__}")
    return value


def parse(body: Any) -> Request:
    """The request of an AdmissionReview body, or ReviewError naming what is wrong. Checks
    the shape of everything it reads, so a malformed review is a 400, never a crash."""
    if not isinstance(body, dict) or body.get("kind") != "AdmissionReview":
        raise ReviewError("expected an admission.k8s.io/v1 AdmissionReview")
    raw = body.get("request")
    if not isinstance(raw, dict) or "uid" not in raw or "kind" not in raw:
        raise ReviewError("the AdmissionReview has no request with uid and kind")
    uid = raw["uid"]
    if not isinstance(uid, str) or not uid:
        raise ReviewError("request.uid must be a non-empty string")
    kind = raw["kind"]
    if not isinstance(kind, dict) or not isinstance(kind.get("kind", ""), str):
        raise ReviewError("request.kind must be an object with a string kind")
    operation = raw.get("operation", "CREATE")
    if operation not in _OPERATIONS:
        raise ReviewError(f"request.operation must be one of {', '.join(_OPERATIONS)}")
    obj, old = _object(raw, "object"), _object(raw, "oldObject")
    meta = (obj or old or {}).get("metadata") or {}
    namespace = _text(raw, "namespace") or _text(meta, "namespace", "request.object.metadata")
    for key, o in (("object", obj), ("oldObject", old)):
        own = (o or {}).get("metadata") or {}
        # The API server never sends an object of another namespace than the request's; a
        # review that does is forged, and would charge (and show) someone else's quota.
        theirs = _text(own, "namespace", f"request.{key}.metadata")
        if theirs and theirs != namespace:
            raise ReviewError(
                f"request.{key}.metadata.namespace {theirs!r} is not the request's "
                f"namespace {namespace!r}"
            )
    user = raw.get("userInfo") or {}
    if not isinstance(user, dict):
        raise ReviewError("request.userInfo must be an object")
    dry_run = raw.get("dryRun", False)
    if not isinstance(dry_run, bool):
        raise ReviewError("request.dryRun must be true or false")
    return Request(
        uid=uid,
        kind=str(kind.get("kind", "")),
        operation=operation,
        namespace=namespace,
        name=_text(raw, "name") or _text(meta, "name", "request.object.metadata"),
        object=obj,
        old_object=old,
        dry_run=dry_run,
        username=_text(user, "username", "request.userInfo"),
    )


@dataclass(frozen=True)
class Verdict:
    """The answer to one request."""

    allowed: bool
    code: int = 200
    reason: str = ""
    """For denials: a CamelCase reason, also the label of the denial metric."""
    message: str = ""
    patch: tuple[jsonpatch.Operation, ...] = ()
    warnings: tuple[str, ...] = ()


def allow(patch: list[jsonpatch.Operation] | None = None) -> Verdict:
    return Verdict(True, patch=tuple(patch or ()))


def deny(reason: str, message: str, code: int = 403) -> Verdict:
    return Verdict(False, code=code, reason=reason, message=message)


def response(uid: str, verdict: Verdict) -> dict[str, Any]:
    """The AdmissionReview the API server expects back."""
    resp: dict[str, Any] = {"uid": uid, "allowed": verdict.allowed}
    if not verdict.allowed:
        # The API server shows `message` to the user; `reason` must be a Kubernetes
        # StatusReason, so the kubenova reason leads the message instead.
        resp["status"] = {
            "code": verdict.code,
            "reason": "TooManyRequests" if verdict.code == 429 else "Forbidden",
            "message": verdict.message,
        }
    if verdict.patch:
        resp["patchType"] = "JSONPatch"
        resp["patch"] = base64.b64encode(json.dumps(list(verdict.patch)).encode()).decode()
    if verdict.warnings:
        resp["warnings"] = list(verdict.warnings)
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": resp}
