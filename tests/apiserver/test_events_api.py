"""kube.events against the real API server: a burst of events is posted whole and as
`kubectl describe` shows them, and an event the API server refuses stops nothing."""

from __future__ import annotations

import asyncio
from typing import Any

import kubernetes
import pytest

from kubenova.api import constants
from kubenova.kube.events import EventRecorder, ObjectRef

pytestmark = [pytest.mark.apiserver]


def _ref(namespace: str, name: str) -> ObjectRef:
    return ObjectRef(constants.API_VERSION, "VirtualMachine", name, namespace, f"uid-{name}")


def test_a_burst_of_events_is_posted_whole(api: Any, namespace: str) -> None:
    recorder = EventRecorder(api, "kubenova-test", "replica-1")
    burst = 300

    async def scenario() -> None:
        task = asyncio.create_task(recorder.run())
        # one refused (its namespace does not exist), then the burst
        recorder.emit(_ref("no-such-namespace", "lost"), "Normal", "Scheduled", "nowhere")
        for i in range(burst):
            recorder.emit(_ref(namespace, f"vm-{i}"), "Normal", "Scheduled", f"bound vm-{i} to h")
        await asyncio.wait_for(recorder.queue.join(), 120)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())
    assert (recorder.posted, recorder.dropped) == (burst, 0)
    core = kubernetes.client.CoreV1Api(api)
    events = core.list_namespaced_event(namespace).items
    assert sorted(str(e.involved_object.name) for e in events) == sorted(
        f"vm-{i}" for i in range(burst)
    )
    one = next(e for e in events if e.involved_object.name == "vm-7")
    assert (one.type, one.reason, one.message, one.count) == (
        "Normal",
        "Scheduled",
        "bound vm-7 to h",
        1,
    )
    assert (one.involved_object.kind, one.involved_object.uid) == ("VirtualMachine", "uid-vm-7")
    assert (one.reporting_component, one.reporting_instance) == ("kubenova-test", "replica-1")
    assert one.source is not None and one.source.component == "kubenova-test"
    assert one.first_timestamp is not None and one.first_timestamp == one.last_timestamp


def test_a_full_queue_drops_the_newest_and_counts_them(api: Any, namespace: str) -> None:
    recorder = EventRecorder(api, "kubenova-test", "replica-1", maxsize=3)

    async def scenario() -> None:
        for i in range(5):  # nothing posts yet: the poster is not running
            recorder.emit(_ref(namespace, f"vm-{i}"), "Warning", "FailedScheduling", "no room")
        task = asyncio.create_task(recorder.run())
        await asyncio.wait_for(recorder.queue.join(), 60)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())
    assert (recorder.posted, recorder.dropped) == (3, 2)
    core = kubernetes.client.CoreV1Api(api)
    names = sorted(str(e.involved_object.name) for e in core.list_namespaced_event(namespace).items)
    assert names == ["vm-0", "vm-1", "vm-2"]
