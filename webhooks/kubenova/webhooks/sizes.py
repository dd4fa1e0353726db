"""How large an AdmissionReview of kubenova's kinds can be, computed from the typed models'
schemas, and the request limit of the admission server that follows. Pure.

Every string, list and map of the routed kinds has a bound in the schema, so the largest
object the API server can hold is known: each character is counted at its worst JSON cost (six
bytes, the `\\u003c` the API server writes for `<`, `>`, `&` and control characters). Object
metadata is not the CRD schema's: the webhook bounds it itself (`METADATA_BUDGET`, refused
with a clear message), so a review it has to read is never larger than twice the largest
object (UPDATE carries the old and the new) plus the envelope.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from kubenova.api.meta import Resource

METADATA_BUDGET = 384 * 1024
"""Bytes of `metadata` (labels, annotations, finalizers, managedFields...) a VM may carry: the
API server's own 256 KiB cap on annotations and room for the rest. Larger is refused."""
ENVELOPE = 64 * 1024
"""The review around the objects: kind, resource, userInfo (groups and extra), options."""
_WORST_CHAR = 6
_DATE_TIME = len('"2006-01-02T15:04:05.999999999+00:00"')


class UnboundedError(ValueError):
    """A field without a bound: the largest object would be unknown."""


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _string(node: dict[str, Any], path: str) -> int:
    if "enum" in node:
        return 2 + max(len(str(v)) for v in node["enum"])
    if "const" in node:
        return 2 + len(str(node["const"]))
    if node.get("format") == "date-time":
        return _DATE_TIME
    if "maxLength" not in node:
        raise UnboundedError(f"{path}: a string without maxLength")
    return 2 + _WORST_CHAR * int(node["maxLength"])


def largest(node: dict[str, Any], defs: dict[str, Any], path: str = "") -> int:
    """The most bytes the JSON value of this (pydantic JSON) schema can take."""
    node = _resolve(node, defs)
    if "anyOf" in node or "oneOf" in node:
        branches = node.get("anyOf") or node.get("oneOf") or []
        return max(largest(b, defs, path) for b in branches)
    if "enum" in node and "type" not in node:
        return 2 + max(len(str(v)) for v in node["enum"])
    kind = node.get("type")
    if kind == "null":
        return 4
    if kind == "boolean":
        return 5
    if kind in ("integer", "number"):
        return 24
    if kind == "string":
        return _string(node, path)
    if kind == "array":
        if "maxItems" not in node:
            raise UnboundedError(f"{path}: a list without maxItems")
        item = largest(node.get("items", {}), defs, f"{path}[]")
        return 2 + int(node["maxItems"]) * (item + 1)
    if kind == "object":
        size = 2
        for name, prop in (node.get("properties") or {}).items():
            size += len(name) + 4 + largest(prop, defs, f"{path}.{name}")
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            if "maxProperties" not in node:
                raise UnboundedError(f"{path}: a map without maxProperties")
            key = _string({"type": "string", **node.get("propertyNames", {})}, f"{path} keys")
            value = largest(extra, defs, f"{path}{{}}")
            size += int(node["maxProperties"]) * (key + value + 2)
        return size
    raise UnboundedError(f"{path}: a value of no known type ({sorted(node)})")


def largest_object(kind: type[Resource]) -> int:
    """The most bytes one object of `kind` can take on the wire, metadata at its budget."""
    schema = kind.model_json_schema(by_alias=True, mode="validation")
    defs = schema.get("$defs", {})
    props = schema["properties"]
    body = sum(len(name) + 4 + largest(props[name], defs, name) for name in ("spec", "status"))
    return body + METADATA_BUDGET + 128  # apiVersion, kind, braces


def review_limit(kinds: Iterable[type[Resource]]) -> int:
    """The request size the admission server accepts: an UPDATE of the largest object of any
    routed kind (old and new) in its envelope, rounded up to a KiB."""
    biggest = max(largest_object(k) for k in kinds)
    limit = 2 * biggest + ENVELOPE
    return -(-limit // 1024) * 1024


_GO_ESCAPED = re.compile("[<>&\u2028\u2029]")


def wire_size(value: Any) -> int:
    """Bytes of `value` as the API server writes it (Go escapes `<`, `>`, `&`, U+2028 and
    U+2029 as six bytes each; Python writes them as they are)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return len(text.encode("utf-8", "surrogatepass")) + 5 * len(_GO_ESCAPED.findall(text))


def metadata_problem(obj: dict[str, Any] | None) -> str | None:
    """Why the object's metadata is too large to admit, or None. An object being deleted is
    never refused: its finalizers must be able to come off."""
    if obj is None:
        return None
    meta = obj.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return None
    size = wire_size(meta)
    if size <= METADATA_BUDGET:
        return None
    return (
        f"is {size} bytes (labels, annotations, finalizers and managed fields); kubenova "
        f"admits at most {METADATA_BUDGET}: remove labels or annotations"
    )
