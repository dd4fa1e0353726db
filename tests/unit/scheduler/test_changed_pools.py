"""The cache names the pools whose status may have changed, so the operator computes a pool's
status (a walk of its hosts and allocations) only for those: a pool it does not name must
have the status it had."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubenova.scheduler import cache as cache_mod
from kubenova.scheduler import model, status
from tests.unit.scheduler.builders import make_host, make_pool, make_size, make_vm

pytestmark = pytest.mark.unit

NOW = 1000.0
HOSTS = [f"h{i}" for i in range(5)]
RACKS = ["a", "b"]
FLAVORS = {"small": make_size(1, 2, 10), "big": make_size(8, 32, 100)}

op_st = st.one_of(
    st.tuples(st.just("host"), st.sampled_from(HOSTS), st.sampled_from(RACKS), st.booleans()),
    st.tuples(st.just("remove-host"), st.sampled_from(HOSTS)),
    st.tuples(
        st.just("bind"), st.integers(0, 20), st.sampled_from(HOSTS), st.sampled_from([*FLAVORS])
    ),
    st.tuples(st.just("unbind"), st.integers(0, 20)),
    st.tuples(st.just("assume"), st.integers(0, 20), st.sampled_from(HOSTS)),
    st.tuples(st.just("forget"), st.integers(0, 20)),
    st.tuples(st.just("flavor"), st.sampled_from([*FLAVORS]), st.integers(1, 8)),
    st.tuples(st.just("pool"), st.sampled_from(RACKS), st.floats(1.0, 4.0)),
    st.tuples(st.just("heartbeat"), st.sampled_from(HOSTS)),
)


def _apply(c: cache_mod.CapacityCache, op: tuple[Any, ...]) -> None:
    kind = op[0]
    if kind == "host":
        _, name, rack, ready = op
        c.upsert_host(make_host(name, labels={"rack": rack}, ready=ready))
    elif kind == "remove-host":
        c.remove_host(op[1])
    elif kind in ("bind", "assume"):
        key, host = f"team/vm{op[1]}", op[2]
        flavor = op[3] if kind == "bind" else "small"
        if host not in c.hosts or key in c.allocations:
            return
        vm = make_vm(f"vm{op[1]}", flavor=flavor, size=FLAVORS[flavor])
        if kind == "bind":
            c.add_vm(vm, host)
        else:
            c.assume(vm, host, NOW)
    elif kind == "unbind":
        c.remove_vm(f"team/vm{op[1]}")
    elif kind == "forget":
        c.forget(f"team/vm{op[1]}")
    elif kind == "flavor":
        c.upsert_flavor(model.FlavorInfo(op[1], make_size(op[2], 4 * op[2], 20)))
    elif kind == "pool":
        c.upsert_pool(make_pool(f"rack-{op[1]}", labels={"rack": op[1]}, cpu_ratio=op[2]))
    elif kind == "heartbeat":
        c.heartbeat(op[1], NOW)


def _statuses(c: cache_mod.CapacityCache) -> dict[str, status.PoolStatus | None]:
    return {name: status.pool_status(c, name, NOW) for name in c.pools}


@settings(max_examples=300, deadline=None)
@given(st.lists(op_st, max_size=40))
def test_a_pool_not_named_changed_has_the_status_it_had(ops: list[tuple[Any, ...]]) -> None:
    c = cache_mod.CapacityCache()
    for rack in RACKS:
        c.upsert_pool(make_pool(f"rack-{rack}", labels={"rack": rack}))
    c.upsert_pool(make_pool("all", labels={}))
    for name, size in FLAVORS.items():
        c.upsert_flavor(model.FlavorInfo(name, size))
    c.take_changed_pools()
    before = _statuses(c)
    for op in ops:
        _apply(c, op)
        changed = c.take_changed_pools()
        after = _statuses(c)
        for name in after.keys() - changed:
            assert after[name] == before.get(name), f"{name} changed after {op} unannounced"
        before = after


def test_nothing_announced_for_a_heartbeat_or_a_flavor_written_again() -> None:
    c = cache_mod.CapacityCache()
    c.upsert_pool(make_pool("all", labels={}))
    c.upsert_host(make_host("h1"))
    c.upsert_flavor(model.FlavorInfo("small", FLAVORS["small"]))
    assert c.take_changed_pools() == {"all"}
    c.heartbeat("h1", NOW + 5)
    c.upsert_flavor(model.FlavorInfo("small", FLAVORS["small"]))
    assert c.take_changed_pools() == set()
    c.add_vm(make_vm("a", size=FLAVORS["small"]), "h1")
    assert c.take_changed_pools() == {"all"}
