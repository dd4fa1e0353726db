"""RFC 6902 JSON patches: the smallest patch from one JSON document to another, and applying
one (what the API server does with a mutating webhook's answer). Pure.

Objects are diffed key by key; lists and scalars that differ are replaced whole.
"""

from __future__ import annotations

import copy
from typing import Any, Literal, TypedDict


class Operation(TypedDict, total=False):
    op: Literal["add", "remove", "replace"]
    path: str
    value: Any


def escape(key: str) -> str:
    """A key as one JSON-pointer token (`/` and `~` escaped)."""
    return key.replace("~", "~0").replace("/", "~1")


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def diff(old: Any, new: Any, path: str = "") -> list[Operation]:
    """Operations that turn `old` into `new`."""
    if isinstance(old, dict) and isinstance(new, dict):
        ops: list[Operation] = []
        for key in old:
            if key not in new:
                ops.append({"op": "remove", "path": f"{path}/{escape(key)}"})
        for key, value in new.items():
            sub = f"{path}/{escape(key)}"
            if key not in old:
                ops.append({"op": "add", "path": sub, "value": value})
            else:
                ops.extend(diff(old[key], value, sub))
        return ops
    if old == new and type(old) is type(new):
        return []
    if path == "":
        raise ValueError("cannot replace the whole document with a JSON patch here")
    return [{"op": "replace", "path": path, "value": new}]


def apply(doc: Any, ops: list[Operation]) -> Any:
    """`doc` with `ops` applied (a copy; `doc` is unchanged)."""
    out = copy.deepcopy(doc)
    for op in ops:
        *parents, last = [_unescape(t) for t in op["path"].split("/")[1:]]
        target = out
        for token in parents:
            target = target[int(token)] if isinstance(target, list) else target[token]
        key: Any = int(last) if isinstance(target, list) and last != "-" else last
        if op["op"] == "remove":
            del target[key]
        elif op["op"] == "add" and isinstance(target, list):
            if key == "-":
                target.append(copy.deepcopy(op["value"]))
            else:
                target.insert(key, copy.deepcopy(op["value"]))
        else:
            if op["op"] == "replace" and isinstance(target, dict) and key not in target:
                raise KeyError(f"replace of missing {op['path']}")
            target[key] = copy.deepcopy(op["value"])
    return out
