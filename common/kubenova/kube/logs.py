"""JSON logs with one trace id per operation.

The trace id of a VM operation is created where the operation starts (the admission webhook,
or the operator when the VM has none), stored in the VM's `kubenova.io/trace-id` annotation,
and set with `trace()` around the work, so operator, agent and webhook lines of one operation
share it.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import json
import logging
import sys
import uuid
from collections.abc import Iterator
from typing import Any

_trace_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("trace_id", default=None)
_component: str = "kubenova"

# Attributes every LogRecord has; anything else passed with `extra=` goes into the JSON line,
# except kopf's own extras (its settings object, a flag for its event poster).
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "settings",
    "k8s_skip",
}


def new_trace_id() -> str:
    return uuid.uuid4().hex[:16]


def current_trace_id() -> str | None:
    return _trace_id.get()


@contextlib.contextmanager
def trace(trace_id: str | None) -> Iterator[str]:
    """Run the block with `trace_id` (a new one when None) on every log line."""
    tid = trace_id or new_trace_id()
    token = _trace_id.set(tid)
    try:
        yield tid
    finally:
        _trace_id.reset(token)


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "component": _component,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        tid = getattr(record, "trace_id", None) or _trace_id.get()
        if tid:
            line["trace_id"] = tid
        for key, value in vars(record).items():
            if key == "k8s_ref" and isinstance(value, dict):
                line["object"] = "/".join(
                    str(p)
                    for p in (value.get("kind"), value.get("namespace"), value.get("name"))
                    if p
                )
            elif key not in _STANDARD and key != "trace_id":
                line[key] = value
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def setup(component: str, level: int = logging.INFO) -> None:
    """Send every log line to stderr as JSON, tagged with the component's name."""
    global _component
    _component = component
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # kopf logs every handled watch event at INFO; ours say what matters.
    for noisy in ("kubernetes.client.rest", "urllib3", "aiohttp.access", "kopf.objects"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
