"""The operator's pure state: how watch events change the cache and the queue."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from kubenova.api import Flavor, Host, ResourcePool, VirtualMachine
from kubenova.api.host import HostImage, HostPhase
from kubenova.operator.world import HostLease, World
from kubenova.scheduler import status

pytestmark = pytest.mark.unit
NOW = dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _host(name: str, cpus: int = 4, memory: str = "8Gi", **labels: str) -> Host:
    return Host.parse(
        {
            "kind": "Host",
            "metadata": {"name": name, "labels": {"class": "general", **labels}},
            "spec": {},
            "status": {"capacity": {"cpus": cpus, "memory": memory, "disk": "100Gi"}},
        }
    )


def _vm(name: str, host: str | None = None, **status: Any) -> VirtualMachine:
    st: dict[str, Any] = dict(status)
    if host:
        st.setdefault("phase", "Running")
        st["host"] = host
    return VirtualMachine.parse(
        {
            "kind": "VirtualMachine",
            "metadata": {"name": name, "namespace": "ns", "resourceVersion": "1"},
            "spec": {"flavor": "f", "pool": "general", "boot": {"image": "x"}},
            "status": st,
        }
    )


def _world(*hosts: Host) -> World:
    w = World(clock=Clock())
    w.upsert_flavor(
        Flavor.parse(
            {
                "kind": "Flavor",
                "metadata": {"name": "f"},
                "spec": {"vcpus": 2, "memory": "4Gi", "disk": "10Gi"},
            }
        )
    )
    w.upsert_pool(
        ResourcePool.parse(
            {
                "kind": "ResourcePool",
                "metadata": {"name": "general"},
                "spec": {"hostSelector": {"matchLabels": {"class": "general"}}},
            }
        )
    )
    for h in hosts:
        w.upsert_lease(h.metadata.name, HostLease(NOW, 40), NOW)
        w.upsert_host(h, NOW)
    return w


def test_bound_vms_are_counted_and_pending_ones_queued() -> None:
    w = _world(_host("h1"))
    w.upsert_vm(_vm("a", host="h1"))
    w.upsert_vm(_vm("b"))
    assert w.cache.hosts["h1"].free_mem == 4096
    assert "ns/b" in w.queue and "ns/a" not in w.queue


def test_a_restart_rebuilds_the_same_allocations_in_any_event_order() -> None:
    vms = [_vm("a", host="h1"), _vm("b", host="h2"), _vm("c", host="h1")]
    first = _world(_host("h1"), _host("h2"))
    for vm in vms:
        first.upsert_vm(vm)
    # A restarted replica may see VMs before their hosts and flavors.
    second = World(clock=Clock())
    for vm in reversed(vms):
        second.upsert_vm(vm)
    second.upsert_flavor(first.flavors["f"])
    second.upsert_pool(first.pools["general"])
    for name in ("h2", "h1"):
        second.upsert_lease(name, HostLease(NOW, 40), NOW)
        second.upsert_host(first.hosts[name], NOW)
    free = {n: e.free_mem for n, e in first.cache.hosts.items()}
    assert {n: e.free_mem for n, e in second.cache.hosts.items()} == free
    assert free == {"h1": 0, "h2": 4096}
    # Seeing every VM again changes nothing.
    for vm in vms:
        second.upsert_vm(vm)
    assert {n: e.free_mem for n, e in second.cache.hosts.items()} == free


def test_an_assumed_vm_is_confirmed_not_counted_twice() -> None:
    w = _world(_host("h1"))
    vm = _vm("a")
    w.upsert_vm(vm)
    req = w.queue.pop()
    assert req is not None
    decision = w.scheduler.schedule(req)
    assert getattr(decision, "host", None) == "h1"
    assert w.cache.hosts["h1"].free_mem == 4096
    w.upsert_vm(_vm("a", host="h1", phase="Scheduled"))
    assert w.cache.hosts["h1"].free_mem == 4096
    assert not w.cache.allocations["ns/a"].assumed


def test_deleting_a_vm_frees_its_host() -> None:
    w = _world(_host("h1"))
    w.upsert_vm(_vm("a", host="h1"))
    w.remove_vm("ns/a")
    assert w.cache.hosts["h1"].free_mem == 8192
    w.remove_vm("ns/a")  # idempotent
    assert w.cache.hosts["h1"].free_mem == 8192


def test_readiness_follows_the_lease_not_the_written_phase() -> None:
    w = _world(_host("h1"))
    assert w.host_phase("h1", NOW) is HostPhase.READY
    assert w.cache.hosts["h1"].info.ready
    later = NOW + dt.timedelta(seconds=41)
    assert w.host_phase("h1", later) is HostPhase.NOT_READY
    assert w.expire_leases(later) == ["h1"]
    assert not w.cache.hosts["h1"].info.ready
    assert w.expire_leases(later) == [], "reported once"
    w.upsert_lease("h1", HostLease(later, 40), later)
    assert w.cache.hosts["h1"].info.ready
    assert w.host_phase("unknown-host", NOW) is HostPhase.UNKNOWN


def test_flavor_counts_and_unbound_deleting() -> None:
    w = _world(_host("h1"))
    w.upsert_vm(_vm("a", host="h1"))
    gone = _vm("b").model_copy(deep=True)
    gone.metadata.deletion_timestamp = NOW
    gone.metadata.finalizers = ["kubenova.io/domain-cleanup"]
    w.upsert_vm(gone)
    assert w.flavor_counts() == {"f": 2}
    assert [v.metadata.name for v in w.unbound_deleting()] == ["b"]
    assert "ns/b" not in w.queue, "a VM being deleted is not scheduled"


def _pending(name: str, node_selector: dict[str, str] | None = None) -> VirtualMachine:
    return VirtualMachine.parse(
        {
            "kind": "VirtualMachine",
            "metadata": {"name": name, "namespace": "ns", "resourceVersion": "1"},
            "spec": {
                "flavor": "f",
                "pool": "general",
                "boot": {"image": "x"},
                "placement": {"nodeSelector": node_selector or {}},
            },
            "status": {"phase": "Pending"},
        }
    )


def _pool(name: str = "general", generation: int = 1, **spec: Any) -> ResourcePool:
    return ResourcePool.parse(
        {
            "kind": "ResourcePool",
            "metadata": {"name": name, "generation": generation},
            "spec": {"hostSelector": {"matchLabels": {"class": "general"}}, **spec},
            "status": {},
        }
    )


def _park(w: World) -> None:
    """One scheduling cycle for everything queued, as the operator's loop runs it."""
    while (req := w.queue.pop()) is not None:
        result = w.scheduler.schedule(req)
        reasons = getattr(result, "reasons", None)
        assert reasons is not None, f"{req.key} was expected not to fit, got {result}"
        w.queue.unschedulable(req, reasons)


def test_an_edit_to_a_pending_vm_replaces_its_queued_request() -> None:
    w = _world(_host("h1"))
    w.upsert_vm(_pending("a", {"zone": "nowhere"}))
    _park(w)
    assert w.queue.counts()["unschedulable"] == 1
    w.upsert_vm(_pending("a", {"class": "general"}))  # the user fixes the selector
    req = w.queue.pop()
    assert req is not None, "the edit must make the VM active again"
    assert req.node_selector == (("class", "general"),)
    assert getattr(w.scheduler.schedule(req), "host", None) == "h1"


def test_a_status_echo_of_a_parked_vm_leaves_it_parked() -> None:
    w = _world(_host("h1"))
    w.upsert_vm(_pending("a", {"zone": "nowhere"}))
    _park(w)
    echo = _pending("a", {"zone": "nowhere"}).model_copy(deep=True)
    echo.status.reason = "0/1 hosts: 1 node selector"
    w.upsert_vm(echo)
    assert w.queue.counts() == {"active": 0, "backoff": 0, "unschedulable": 1}


def test_deleting_a_pool_releases_its_reservation_slots() -> None:
    w = _world(_host("h1", cpus=16, memory="16Gi"))
    w.upsert_pool(_pool(reservations=[{"flavor": "f", "count": 3}]))
    assert w.cache.hosts["h1"].free_mem == 4096, "3 slots of 4 GiB held"
    w.remove_pool("general")
    assert w.cache.hosts["h1"].free_mem == 16384
    assert not any(a.slot for a in w.cache.allocations.values())


def test_status_only_pool_and_host_events_wake_no_parked_vm() -> None:
    w = _world(_host("h1"))
    w.upsert_pool(_pool())
    for i in range(500):
        w.upsert_vm(_pending(f"vm-{i}", {"zone": "nowhere"}))
    _park(w)
    assert w.queue.counts()["unschedulable"] == 500
    echo = _pool().model_copy(deep=True)
    echo.status.hosts = 1  # the operator's own pool status write, seen again
    w.upsert_pool(echo)
    assert w.queue.counts()["unschedulable"] == 500, "a status echo woke the parked VMs"
    assert w.pools["general"].status.hosts == 1, "the latest object is still kept"
    host = _host("h1").model_copy(deep=True)
    host.status.phase = HostPhase.READY  # the operator's host phase write, seen again
    host.status.domains = 3  # the agent's report: nothing a parked VM waits for
    w.upsert_host(host, NOW)
    assert w.queue.counts()["unschedulable"] == 500, "a host status echo woke the parked VMs"
    # A real change still wakes them: the pool's selector (its spec, a new generation).
    w.upsert_pool(_pool(generation=2, hostSelector={"matchLabels": {"class": "gpu"}}))
    assert w.queue.counts()["unschedulable"] == 0


def test_reservation_slots_follow_a_host_that_joins_without_a_pool_event() -> None:
    w = _world(_host("h1"))
    w.upsert_pool(_pool(reservations=[{"flavor": "f", "count": 3}]))
    assert w.cache.hosts["h1"].free_mem == 0, "2 of 3 slots fit on h1"
    w.upsert_lease("h2", HostLease(NOW, 40), NOW)
    w.upsert_host(_host("h2"), NOW)
    assert w.cache.hosts["h2"].free_mem == 4096, "the third slot lands on the new host"


def test_reservation_slots_leave_a_host_whose_lease_expired() -> None:
    w = _world(_host("h1"), _host("h2"))
    w.upsert_pool(_pool(reservations=[{"flavor": "f", "count": 1}]))
    (slot,) = [a for a in w.cache.allocations.values() if a.slot]
    lost = slot.host
    alive = "h2" if lost == "h1" else "h1"
    later = NOW + dt.timedelta(seconds=41)
    w.upsert_lease(alive, HostLease(later, 40), later)  # only the slot's host stops renewing
    assert w.expire_leases(later) == [lost]
    (moved,) = [a for a in w.cache.allocations.values() if a.slot]
    assert moved.host == alive


def test_an_image_arriving_in_a_host_cache_reaches_the_scores_but_wakes_no_parked_vm() -> None:
    w = _world(_host("h1"))
    w.upsert_pool(_pool())
    for i in range(50):
        w.upsert_vm(_pending(f"vm-{i}", {"zone": "nowhere"}))
    _park(w)
    host = _host("h1").model_copy(deep=True)
    host.status.images = [HostImage(name="debian-12", size=3 * 2**30)]
    w.upsert_host(host, NOW)
    assert w.queue.counts()["unschedulable"] == 50, "an image cannot make a VM fit"
    assert w.cache.hosts["h1"].info.images == {"debian-12": 3072}
    assert w.cache.image_hosts == {"debian-12": 1}


def test_reservation_slots_are_placed_when_the_flavor_arrives_after_the_pool() -> None:
    # The operator's watches run side by side: a pool that wants slots of a flavor may be
    # seen before the flavor. The slot is placed when the flavor arrives, with no pool event.
    w = World(clock=Clock())
    w.upsert_lease("h1", HostLease(NOW, 40), NOW)
    w.upsert_host(_host("h1", cpus=16, memory="16Gi"), NOW)
    w.upsert_pool(_pool(reservations=[{"flavor": "f", "count": 1}]))
    assert not any(a.slot for a in w.cache.allocations.values()), "no flavor yet: no slot"
    w.upsert_flavor(
        Flavor.parse(
            {
                "kind": "Flavor",
                "metadata": {"name": "f"},
                "spec": {"vcpus": 2, "memory": "4Gi", "disk": "10Gi"},
            }
        )
    )
    assert [a.flavor for a in w.cache.allocations.values() if a.slot] == ["f"]
    assert w.cache.hosts["h1"].free_mem == 12288
    w.remove_flavor("f")
    assert not any(a.slot for a in w.cache.allocations.values()), "the flavor left: slot too"
    assert w.cache.hosts["h1"].free_mem == 16384


def test_a_host_or_flavor_arriving_retries_only_the_vms_waiting_for_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """VMs seen before the catalogue (a takeover, a restart) wait; each arrival retries only
    the VMs waiting for it. Before: every Host added retried every waiting VM, 300 Hosts
    after 3,000 VMs thawed and re-sized 900,000 of them (15 % of the operator's CPU)."""
    first = _world()
    w = World(clock=Clock())
    for i in range(50):
        w.upsert_vm(_vm(f"p{i}"))  # pending, its flavor unknown yet
    w.upsert_vm(_vm("bound", host="h9"))  # bound to a host not seen yet
    sized: list[str] = []
    real = World.request

    def counting(self: World, vm: VirtualMachine) -> Any:
        sized.append(vm.metadata.name)
        return real(self, vm)

    monkeypatch.setattr(World, "request", counting)
    w.upsert_pool(first.pools["general"])
    for name in ("h1", "h2", "h3"):
        w.upsert_lease(name, HostLease(NOW, 40), NOW)
        w.upsert_host(_host(name), NOW)
    assert sized == [], "no Host these VMs wait for arrived"
    w.upsert_flavor(first.flavors["f"])
    assert sorted(sized) == sorted(["bound", *(f"p{i}" for i in range(50))])
    assert all(f"ns/p{i}" in w.queue for i in range(50))
    assert "ns/bound" not in w.cache.allocations, "its host is still unknown"
    sized.clear()
    w.upsert_lease("h9", HostLease(NOW, 40), NOW)
    w.upsert_host(_host("h9"), NOW)
    assert sized == ["bound"]
    assert w.cache.allocations["ns/bound"].host == "h9"


def test_the_drain_pass_visits_only_drained_hosts_and_those_with_a_condition_to_clear() -> None:
    w = _world(*(_host(f"h{i}") for i in range(100)))
    assert w.draining == set(), "no Host of 100 has drain work"
    drained = _host("h7")
    drained.metadata.annotations["kubenova.io/drain"] = "maintenance"
    w.upsert_host(drained, NOW)
    assert w.draining == {"h7"}
    # Uncordoned, but its Drained condition is still there to take off: still visited.
    left = Host.parse(
        {
            **_host("h7").to_dict(),
            "status": {
                **_host("h7").to_dict()["status"],
                "conditions": [{"type": "Drained", "status": "True", "reason": "Drained"}],
            },
        }
    )
    w.upsert_host(left, NOW)
    assert w.draining == {"h7"}
    w.upsert_host(_host("h7"), NOW)  # the condition went
    assert w.draining == set()
    w.upsert_host(drained, NOW)
    w.remove_host("h7")
    assert w.draining == set()


def test_a_renewal_moves_only_the_heartbeat() -> None:
    w = _world(_host("h1"))
    w.cache.take_changed_pools()
    w.take_phase_checks()
    at = NOW + dt.timedelta(seconds=10)
    w.upsert_lease("h1", HostLease(at, 40), at)
    assert w.cache.take_changed_pools() == set(), "no pool's status to compute again"
    assert w.take_phase_checks() == [], "no written phase to compare"
    assert w.cache.hosts["h1"].heartbeat_at == w.clock(), "the heartbeat moved"


def test_a_host_takes_vms_for_as_long_as_its_own_lease_lasts() -> None:
    w = _world(_host("h1"))
    clock = w.clock
    assert isinstance(clock, Clock)
    w.upsert_lease("h1", HostLease(NOW, 400), NOW)  # renewed every 100 s, say
    clock.t += 100.0
    later = NOW + dt.timedelta(seconds=100)
    assert status.is_ready(w.cache.hosts["h1"], clock()), "100 s into a 400 s Lease"
    # The duration changes with the Lease fresh throughout: the host's limit follows it.
    w.upsert_lease("h1", HostLease(NOW, 40), later)
    assert w.host_phase("h1", later) is HostPhase.NOT_READY
    w.upsert_lease("h1", HostLease(later, 40), later)
    w.upsert_lease("h1", HostLease(later, 30), later + dt.timedelta(seconds=20))
    clock.t += 35.0
    assert not status.is_ready(w.cache.hosts["h1"], clock()), "35 s into a 30 s Lease"


def test_only_the_leases_come_due_are_looked_at() -> None:
    hosts = [_host(f"h{i}") for i in range(50)]
    w = _world(*hosts)
    asked: list[str] = []
    phase = w.host_phase

    def counting(name: str, now: dt.datetime) -> HostPhase:
        asked.append(name)
        return phase(name, now)

    w.host_phase = counting  # type: ignore[method-assign]
    w.upsert_lease("h7", HostLease(NOW - dt.timedelta(seconds=30), 40), NOW)
    assert w.expire_leases(NOW + dt.timedelta(seconds=5)) == []
    assert asked == [], "nothing came due"
    # h7's older renewal (due at +10 s) comes due; renewed since, it is not expired
    w.upsert_lease("h7", HostLease(NOW + dt.timedelta(seconds=5), 40), NOW)
    assert w.expire_leases(NOW + dt.timedelta(seconds=20)) == []
    assert asked == ["h7"]
    asked.clear()
    w.take_phase_checks()
    expired = w.expire_leases(NOW + dt.timedelta(seconds=41))
    assert sorted(expired) == sorted(f"h{i}" for i in range(50) if i != 7)
    # each entry come due once (h7's from before its renewal too), then each expired host's
    # refresh
    assert len(asked) == 50 + 49
    assert w.take_phase_checks() == sorted(f"h{i}" for i in range(50) if i != 7)


def test_the_phase_checks_and_counts_follow_hosts_and_leases() -> None:
    w = _world(_host("h1"), _host("h2"))
    assert w.take_phase_checks() == ["h1", "h2"], "new hosts"
    for name in ("h1", "h2"):
        w.note_host_phase(name, w.host_phase(name, NOW))
    assert w.host_phase_counts() == {HostPhase.READY: 2}
    w.remove_lease("h2", NOW)
    assert w.take_phase_checks() == ["h2"]
    w.note_host_phase("h2", w.host_phase("h2", NOW))
    assert w.host_phase_counts() == {HostPhase.READY: 1, HostPhase.UNKNOWN: 1}
    assert w.expire_leases(NOW) == ["h2"], "not ready from the deletion on"
    w.remove_host("h1")
    assert w.host_phase_counts() == {HostPhase.UNKNOWN: 1}
    w.upsert_host(_host("h2", cpus=8), NOW)  # a Host event: its written phase may differ
    assert w.take_phase_checks() == ["h2"]


def test_a_standby_that_never_expires_keeps_the_expiry_heap_bounded() -> None:
    w = _world(*(_host(f"h{i}") for i in range(20)))
    w.remove_lease("h3", NOW)  # deleted: must still come due after any compaction
    for k in range(1, 500):  # renewals seen, none popped (no status pass on a standby)
        at = NOW + dt.timedelta(seconds=k)
        for i in range(20):
            if i != 3:
                w.upsert_lease(f"h{i}", HostLease(at, 40), at)
    assert len(w._expiries) <= 2 * len(w.leases) + 1024 + 1
    last = NOW + dt.timedelta(seconds=499)
    assert w.expire_leases(last) == ["h3"], "the deleted Lease's host, and only it"
    gone = last + dt.timedelta(seconds=41)
    assert sorted(w.expire_leases(gone)) == sorted(f"h{i}" for i in range(20) if i != 3)
