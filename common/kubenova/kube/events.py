"""Kubernetes Events, the behaviour log users read with `kubectl describe`.

Posting never blocks the caller: events are queued and written by one background task, and
a full queue drops the newest event rather than slowing a scheduling loop down.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import uuid
from dataclasses import dataclass

import kubernetes
from kubernetes.client.exceptions import ApiException

from kubenova.api import constants
from kubenova.api.meta import Resource
from kubenova.kube import client

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
    """Writes core/v1 Events about objects, from a bounded queue."""

    def __init__(
        self, api: kubernetes.client.ApiClient, component: str, instance: str, maxsize: int = 1000
    ) -> None:
        self.core = kubernetes.client.CoreV1Api(api)
        self.component = component
        self.instance = instance
        self.queue: asyncio.Queue[_Event] = asyncio.Queue(maxsize)
        self.dropped = 0

    def emit(self, ref: ObjectRef, type_: str, reason: str, message: str) -> None:
        try:
            self.queue.put_nowait(_Event(ref, type_, reason, message[:1024]))
        except asyncio.QueueFull:
            self.dropped += 1

    async def run(self) -> None:
        while True:
            ev = await self.queue.get()
            try:
                await self._post(ev)
            except ApiException as e:
                if e.status != 404:  # the namespace may be going away
                    log.warning("could not post event %s: %s", ev.reason, e.reason)
            except Exception:  # an event is never worth crashing the loop for
                log.exception("could not post event %s", ev.reason)

    async def _post(self, ev: _Event) -> None:
        now = dt.datetime.now(dt.UTC)
        namespace = ev.ref.namespace or "default"
        body = kubernetes.client.CoreV1Event(
            metadata=kubernetes.client.V1ObjectMeta(
                name=f"{ev.ref.name}.{uuid.uuid4().hex[:12]}", namespace=namespace
            ),
            involved_object=kubernetes.client.V1ObjectReference(
                api_version=ev.ref.api_version,
                kind=ev.ref.kind,
                name=ev.ref.name,
                namespace=ev.ref.namespace,
                uid=ev.ref.uid,
            ),
            type=ev.type,
            reason=ev.reason,
            message=ev.message,
            first_timestamp=now,
            last_timestamp=now,
            count=1,
            source=kubernetes.client.V1EventSource(component=self.component),
            reporting_component=self.component,
            reporting_instance=self.instance,
            action=ev.reason,
        )
        await client.call(self.core.create_namespaced_event, namespace, body)
