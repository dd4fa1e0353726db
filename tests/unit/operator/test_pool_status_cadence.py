"""When the leader computes pools' status: only those the cache names changed, at most every
`pool_status_period`, and every pool every `pool_status_resync` (issue 15: no pass over every
host and VM each second)."""

from __future__ import annotations

import asyncio
import contextlib

import kubernetes
import pytest

from kubenova.api.pool import ResourcePool
from kubenova.operator.controller import Controller, Settings
from tests.unit.scheduler.builders import FakeClock

pytestmark = pytest.mark.unit


def _pool(name: str) -> dict[str, object]:
    return {
        "apiVersion": "kubenova.io/v1alpha1",
        "kind": "ResourcePool",
        "metadata": {"name": name},
        "spec": {"hostSelector": {"matchLabels": {"pool": name}}},
    }


def test_pools_are_computed_when_changed_at_most_every_period_and_all_at_resync() -> None:
    synced: list[str] = []
    failing = {"b"}

    async def scenario() -> None:
        settings = Settings(identity="t", pool_status_period=5.0, pool_status_resync=60.0)
        ctl = Controller(settings, kubernetes.client.ApiClient())
        clock = FakeClock(1000.0)
        ctl.world.clock = clock

        async def sync_pool(pool: ResourcePool) -> None:
            synced.append(pool.metadata.name)
            if pool.metadata.name in failing:
                failing.discard(pool.metadata.name)
                raise RuntimeError("the API server went away")

        ctl._sync_pool = sync_pool  # type: ignore[method-assign]

        async def tick(seconds: float) -> list[str]:
            clock.advance(seconds)
            synced.clear()
            with contextlib.suppress(RuntimeError):
                await ctl._sync_pools()
            return list(synced)

        for name in ("a", "b", "c"):
            ctl.on_pool("ADDED", _pool(name))
        assert await tick(0) == ["a", "b"], "the first pass: every pool (b's write fails)"
        assert await tick(1) == [], "nothing changed and not due"
        ctl.world.cache.changed_pools.add("c")
        assert await tick(1) == [], "changed, but the last pass was 2 s ago"
        assert await tick(3) == ["b", "c"], "due: the changed one, and the one not written"
        assert await tick(5) == [], "due, but nothing changed"
        ctl.world.cache.changed_pools.add("a")
        assert await tick(5) == ["a"]
        assert await tick(50) == ["a", "b", "c"], "the resync, changed or not"

    asyncio.run(scenario())
