"""The work queue: one entry per waiting key, never two workers on a key, a key added while
busy is handled again."""

from __future__ import annotations

import asyncio

import pytest

from kubenova.node_agent.queueing import WorkQueue

pytestmark = pytest.mark.unit


def test_a_waiting_key_is_queued_once() -> None:
    async def scenario() -> list[str]:
        q = WorkQueue()
        for key in ("a", "b", "a", "a"):
            q.add(key)
        return [await q.get(), await q.get(), str(len(q))]

    assert asyncio.run(scenario()) == ["a", "b", "0"]


def test_a_key_added_while_busy_comes_back_after_done() -> None:
    async def scenario() -> tuple[int, str]:
        q = WorkQueue()
        q.add("a")
        key = await q.get()
        q.add("a")  # changed while being handled
        waiting_while_busy = len(q)
        q.done(key)
        return waiting_while_busy, await asyncio.wait_for(q.get(), 1)

    assert asyncio.run(scenario()) == (0, "a")


def test_add_after_keeps_the_earlier_timer() -> None:
    async def scenario() -> str:
        q = WorkQueue()
        q.add_after("a", 0.05)
        q.add_after("a", 30)
        return await asyncio.wait_for(q.get(), 2)

    assert asyncio.run(scenario()) == "a"
