"""Kubernetes Events, the behaviour log users read with `kubectl describe`.

Posting never blocks the caller: events are queued and written by a few background tasks,
and a full queue drops the newest event rather than slowing a scheduling loop down.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import kubernetes
from kubernetes.client.exceptions import ApiException

from kubenova.api import constants
from kubenova.api.meta import Resource
from kubenova.kube import aio

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ObjectRef:
    api_version: str
    kind: str
    name: str
    namespace: str | None
    uid: str | None


def ref_of(obj: Resource) -> ObjectRef:
    """The reference an Event about one of kubenova's objects points at."""
    meta = obj.metadata
    return ObjectRef(constants.API_VERSION, obj.kind, meta.name, meta.namespace, meta.uid)


@dataclass(frozen=True)
class _Event:
    ref: ObjectRef
    type: str
    reason: str
    message: str


class EventRecorder:
    """Writes core/v1 Events about objects, from a bounded queue, `posters` at a time over the
    asynchronous client (one POST each, no thread hop): a burst of binds gets its `Scheduled`
    events, where one synchronous poster kept up with about a fifth of them."""

    def __init__(
        self,
        api: kubernetes.client.ApiClient,
        component: str,
        instance: str,
        maxsize: int = 1000,
        posters: int = 4,
    ) -> None:
        self.session = aio.Session(api)
        self.component = component
        self.instance = instance
        self.posters = posters
        self.queue: asyncio.Queue[_Event] = asyncio.Queue(maxsize)
        self.dropped = 0
        self.posted = 0

    def emit(self, ref: ObjectRef, type_: str, reason: str, message: str) -> None:
        try:
            self.queue.put_nowait(_Event(ref, type_, reason, message[:1024]))
        except asyncio.QueueFull:
            self.dropped += 1

    async def run(self) -> None:
        try:
            await asyncio.gather(*(self._poster() for _ in range(self.posters)))
        finally:
            await self.session.close()

    async def _poster(self) -> None:
        while True:
            ev = await self.queue.get()
            try:
                await self._post(ev)
                self.posted += 1
            except ApiException as e:
                if e.status != 404:  # the namespace may be going away
                    log.warning("could not post event %s: %s", ev.reason, e.reason)
            except Exception:  # an event is never worth crashing the loop for
                log.exception("could not post event %s", ev.reason)
            finally:
                self.queue.task_done()

    async def _post(self, ev: _Event) -> None:
        body = event_body(ev.ref, ev.type, ev.reason, ev.message, {"component": self.component})
        body.update(
            reportingComponent=self.component, reportingInstance=self.instance, action=ev.reason
        )
        await post(self.session, body)


def event_body(
    ref: ObjectRef, type_: str, reason: str, message: str, source: dict[str, str]
) -> dict[str, Any]:
    """A core/v1 Event about `ref`, now, in its namespace (a cluster-scoped object's in
    `default`, as a Node's are)."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    involved = {
        "apiVersion": ref.api_version,
        "kind": ref.kind,
        "name": ref.name,
        "namespace": ref.namespace,
        "uid": ref.uid,
    }
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{ref.name}.{uuid.uuid4().hex[:12]}",
            "namespace": ref.namespace or "default",
        },
        "involvedObject": {k: v for k, v in involved.items() if v is not None},
        "type": type_,
        "reason": reason,
        "message": message,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
        "source": source,
    }


async def post(session: aio.Session, body: dict[str, Any]) -> None:
    namespace = quote(body["metadata"]["namespace"], safe="")
    await session.call("POST", f"/api/v1/namespaces/{namespace}/events", body=body)
