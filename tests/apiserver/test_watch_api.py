"""kube.aio and kube.watch against the real API server: a list read in pages, a watch caught
up to a consistent read without listing again (a new leader's barrier), and a watch from a
version the API server no longer holds (410) that lists again."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kubenova.kube import aio, watch
from kubenova.operator.controller import NOTHING
from tests.fixtures.cluster import LocalCluster
from tests.fixtures.operator import GROUP, VERSION, Cluster
from tests.fixtures.reflectors import running, until

pytestmark = [pytest.mark.apiserver]

VMS = f"/apis/{GROUP}/{VERSION}/virtualmachines"


def _ours(namespace: str, objects: dict[str, str]) -> set[str]:
    return {k.split("/", 1)[1] for k in objects if k.startswith(f"{namespace}/")}


class Seen:
    """A reflector's delivered state: key → resourceVersion."""

    def __init__(self) -> None:
        self.objects: dict[str, str] = {}
        self.events: list[tuple[str, str]] = []

    def __call__(self, kind: str, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        key = f"{meta.get('namespace')}/{meta['name']}"
        self.events.append((kind, key))
        if kind == "DELETED":
            self.objects.pop(key, None)
        else:
            self.objects[key] = meta["resourceVersion"]


def test_a_list_comes_in_pages_and_holds_every_object_once(
    kn: Cluster, api: Any, namespace: str
) -> None:
    flavor, pool = kn.flavor(f"{namespace}-f"), kn.pool(f"{namespace}-p")
    names = [f"vm-{i}" for i in range(7)]
    for name in names:
        kn.vm(name, flavor, pool)
    session = aio.Session(api)
    calls: list[dict[str, str]] = []
    real = session.call

    async def call(method: str, path: str, **kwargs: Any) -> aio.RawObject:
        calls.append(dict(kwargs["params"]))
        return await real(method, path, **kwargs)

    session.call = call  # type: ignore[method-assign]

    async def pages() -> list[list[dict[str, Any]]]:
        try:
            path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/virtualmachines"
            return [page["items"] async for page in session.pages(path, limit=2)]
        finally:
            await session.close()

    got = asyncio.run(pages())
    assert sorted(i["metadata"]["name"] for page in got for i in page) == names
    assert [len(page) for page in got] == [2, 2, 2, 1]
    assert all(c["limit"] == "2" for c in calls)
    assert "continue" not in calls[0] and all("continue" in c for c in calls[1:])


def test_a_watch_reaches_a_consistent_read_without_listing_again(
    kn: Cluster, api: Any, namespace: str, test_cluster: LocalCluster
) -> None:
    flavor, pool = kn.flavor(f"{namespace}-f"), kn.pool(f"{namespace}-p")
    kn.vm("before", flavor, pool)

    async def scenario() -> None:
        session = aio.Session(api)
        seen = Seen()
        reflector = watch.Reflector(session, VMS, seen, name="vms", timeout=60)
        async with running(reflector):
            await until("the first list", lambda: reflector.lists == 1)
            assert _ours(namespace, seen.objects) == {"before"}
            # Writes elsewhere move etcd's revision on; none of them is a VM event.
            for i in range(3):
                test_cluster.kubectl("create", "configmap", f"c{i}", "-n", namespace)
            kn.vm("just-before", flavor, pool)
            barrier = await session.call("GET", VMS, params={"labelSelector": NOTHING})
            assert barrier["items"] == [], "the barrier's read carries no objects"
            version = barrier["metadata"]["resourceVersion"]
            test_cluster.kubectl("create", "configmap", "after", "-n", namespace)
            assert await reflector.reach(version, timeout=20), "caught up by a bookmark"
            assert int(reflector.resource_version or 0) >= int(version)
            assert "just-before" in _ours(namespace, seen.objects), (
                "a VM written before the barrier's read is delivered once reach() returns"
            )
            assert reflector.lists == 1, "caught up by the watch, not by listing again"
            # Nothing moved since: reached at once.
            assert await reflector.reach(version, timeout=0.1)
            await reflector.relist()
            assert reflector.lists == 2
            assert _ours(namespace, seen.objects) == {"before", "just-before"}

    asyncio.run(scenario())


def test_a_barrier_asked_for_while_the_first_watch_opens_is_reached_by_a_short_watch(
    kn: Cluster, api: Any, namespace: str, test_cluster: LocalCluster
) -> None:
    """A replica that leads as soon as it starts asks for its barrier right after the first
    list, while the long watch is still being opened."""
    kn.vm("listed", kn.flavor(f"{namespace}-f"), kn.pool(f"{namespace}-p"))

    async def scenario() -> float:
        session = aio.Session(api)
        reflector = watch.Reflector(session, VMS, Seen(), name="vms", timeout=60)
        async with running(reflector):
            await reflector.listed()
            # Nothing yields to the loop from here to reach(): the watch is not open yet.
            # A write elsewhere moves the revision past the list's, and no VM changes: only a
            # bookmark can show the watch got there, and the 60 s watch would bring its
            # first one 58 s in.
            test_cluster.kubectl("create", "configmap", "later", "-n", namespace)
            want = str(int(reflector.resource_version or 0) + 1)
            started = asyncio.get_running_loop().time()
            assert await reflector.reach(want, timeout=20)
            assert reflector.lists == 1
            return asyncio.get_running_loop().time() - started

    took = asyncio.run(scenario())
    assert took < 10, f"reached in {took:.1f} s"


def test_a_watch_from_a_version_gone_from_the_api_server_lists_again(
    kn: Cluster, api: Any, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    flavor, pool = kn.flavor(f"{namespace}-f"), kn.pool(f"{namespace}-p")
    kn.vm("a", flavor, pool)
    kn.vm("b", flavor, pool)

    async def scenario() -> watch.Reflector:
        session = aio.Session(api)
        seen = Seen()
        reflector = watch.Reflector(session, VMS, seen, name="vms", timeout=60)
        # Resumed from a version the API server's watch cache no longer holds, e.g. after
        # the reflector was away longer than the cache's window.
        reflector.resource_version = "1"
        reflector.keys = {f"{namespace}/vanished"}
        async with running(reflector):
            await until("a list after the 410", lambda: reflector.lists == 1)
        assert _ours(namespace, seen.objects) == {"a", "b"}
        assert ("DELETED", f"{namespace}/vanished") in seen.events, (
            "an object known before and missing from the new list is delivered as deleted"
        )
        return reflector

    with caplog.at_level("INFO", logger="kubenova.kube.watch"):
        reflector = asyncio.run(scenario())
    assert "watch expired; listing again" in caplog.text, "the API server answered 410"
    assert int(reflector.resource_version or 0) > 1
