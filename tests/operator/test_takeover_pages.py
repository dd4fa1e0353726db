"""A new leader's initial list comes in pages (limit/continue) from the real API server, and
the pages together hold every object exactly once."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kubenova.operator import controller as controller_mod
from kubenova.operator.controller import Controller, Settings
from tests.fixtures.operator import Cluster

pytestmark = [pytest.mark.apiserver]


def test_the_initial_list_is_paginated_and_complete(
    kn: Cluster, api: Any, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    flavor = kn.flavor(f"{namespace}-f")
    pool = kn.pool(f"{namespace}-p")
    names = [f"vm-{i}" for i in range(7)]
    for name in names:
        kn.vm(name, flavor, pool)
    monkeypatch.setattr(controller_mod, "LIST_PAGE", 2)
    ctl = Controller(Settings(identity="pages", namespace=namespace), api)
    calls: list[dict[str, Any]] = []
    real = ctl.custom.list_cluster_custom_object

    def listing(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return real(*args, **kwargs)

    ctl.custom.list_cluster_custom_object = listing

    async def pages() -> list[list[dict[str, Any]]]:
        return [page async for page in ctl._pages("virtualmachines")]

    got = asyncio.run(pages())
    ours = [
        item["metadata"]["name"]
        for page in got
        for item in page
        if item["metadata"]["namespace"] == namespace
    ]
    assert sorted(ours) == names, "every VM exactly once across the pages"
    assert all(len(page) <= 2 for page in got)
    assert len(calls) >= 4 and all(c["limit"] == 2 for c in calls)
    assert all("_continue" in c for c in calls[1:]), "later pages continue the first"
