"""The operator's migration, drain and host-failure controllers against the real control
plane. These tests play the node agents' part: Hosts, heartbeat Leases, the phases an agent
reports and the source agent's transfer report."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import kubernetes
import pytest
from kubernetes.client.exceptions import ApiException

from kubenova.api import constants
from kubenova.cli import kubectl_vm
from tests.fixtures.cluster import wait_for
from tests.fixtures.operator import GROUP, VERSION, Cluster, Operators

pytestmark = [pytest.mark.apiserver, pytest.mark.e2e]
MERGE = "application/merge-patch+json"


class Agents:
    """What the agents would write, written by the test."""

    def __init__(self, kn: Cluster) -> None:
        self.kn = kn

    def hosts(self, *names: str, memory: str = "8Gi") -> None:
        for name in names:
            self.kn.host(name, cpus=8, memory=memory)
            self.kn.custom.patch_cluster_custom_object_status(
                GROUP, VERSION, "hosts", name,
                {"status": {"migration": {"uri": f"qemu+tcp://{name}/system"}}},
                _content_type=MERGE,
            )  # fmt: skip

    def phase(self, vm: str, phase: str) -> None:
        self.kn.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, self.kn.namespace, "virtualmachines", vm,
            {"status": {"phase": phase}}, _content_type=MERGE,
        )  # fmt: skip

    def transfer(self, migration: str, state: str, message: str = "") -> None:
        self.kn.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, self.kn.namespace, "vmmigrations", migration,
            {"status": {"transfer": {"state": state, "message": message}}}, _content_type=MERGE,
        )  # fmt: skip


def migrate(kn: Cluster, name: str, vm: str, target: str | None = None, **labels: str) -> None:
    spec: dict[str, Any] = {"vmName": vm}
    if target:
        spec["targetHost"] = target
    body = {
        "apiVersion": constants.API_VERSION, "kind": "VMMigration",
        "metadata": {"name": name, "labels": labels}, "spec": spec,
    }  # fmt: skip
    kn.custom.create_namespaced_custom_object(GROUP, VERSION, kn.namespace, "vmmigrations", body)


def migration(kn: Cluster, name: str) -> dict[str, Any] | None:
    try:
        obj: dict[str, Any] = kn.custom.get_namespaced_custom_object(
            GROUP, VERSION, kn.namespace, "vmmigrations", name
        )
    except ApiException as e:
        if e.status == 404:
            return None
        raise
    return obj


def status_of(kn: Cluster, vm: str) -> dict[str, Any]:
    status: dict[str, Any] = kn.get_vm(vm).get("status", {})
    return status


def is_on(kn: Cluster, vm: str, host: str) -> bool:
    return status_of(kn, vm).get("host") == host


def is_phase(kn: Cluster, vm: str, phase: str) -> bool:
    return status_of(kn, vm).get("phase") == phase


def allocated_mib(kn: Cluster, pool: str) -> int:
    mem = kn.get_cluster("resourcepools", pool).get("status", {}).get("allocated", {})
    value = str(mem.get("memory", "0"))
    return (
        int(value.removesuffix("Gi")) * 1024
        if value.endswith("Gi")
        else int(value.removesuffix("Mi") or 0)
    )


def running_on(kn: Cluster, agents: Agents, vm: str, host: str) -> None:
    wait_for(f"{vm} bound to {host}", lambda: status_of(kn, vm).get("host") == host)
    agents.phase(vm, "Running")
    wait_for(f"{vm} Running", lambda: status_of(kn, vm).get("phase") == "Running")


@pytest.fixture
def setup(kn: Cluster, namespace: str) -> Callable[..., tuple[Agents, str, str]]:
    def make(*hosts: str) -> tuple[Agents, str, str]:
        agents = Agents(kn)
        agents.hosts(*hosts)
        flavor = kn.flavor(f"{namespace}-m", vcpus=1, memory="2Gi")
        pool = kn.pool(f"{namespace}-p")
        return agents, flavor, pool

    return make


def test_a_migration_reserves_the_target_then_repoints_the_vm(
    kn: Cluster, operators: Operators, namespace: str, setup: Callable[..., tuple[Agents, str, str]]
) -> None:
    h1, h2 = f"{namespace}-1", f"{namespace}-2"
    agents, flavor, pool = setup(h1)
    kn.vm("web", flavor, pool)
    operators.start("op-1")
    running_on(kn, agents, "web", h1)
    agents.hosts(h2)  # added once web runs on h1
    wait_for("pool counts the VM once", lambda: allocated_mib(kn, pool) == 2048)

    migrate(kn, "move", "web")  # no target: the scheduler picks the only other host
    m = wait_for("migration Running", lambda: (
        (o := migration(kn, "move")) and o.get("status", {}).get("phase") == "Running" and o
    ))  # fmt: skip
    assert (m["status"]["sourceHost"], m["status"]["targetHost"]) == (h1, h2)
    assert constants.MIGRATION_FINALIZER in m["metadata"]["finalizers"]
    vm = kn.get_vm("web")
    assert vm["status"]["phase"] == "Migrating"
    ann = vm["metadata"]["annotations"]
    assert (ann[constants.ANNOTATION_MIGRATION], ann[constants.ANNOTATION_MIGRATION_TARGET]) == (
        "move",
        h2,
    )
    assert ann[constants.ANNOTATION_MIGRATION_URI] == f"qemu+tcp://{h2}/system"
    wait_for("the target's room held too", lambda: allocated_mib(kn, pool) == 4096)

    agents.transfer("move", "Completed", "done")
    wait_for("migration Succeeded", lambda: (
        (o := migration(kn, "move")) and o.get("status", {}).get("phase") == "Succeeded"
    ))  # fmt: skip
    vm = kn.get_vm("web")
    assert (vm["status"]["host"], vm["status"]["phase"]) == (h2, "Running")
    assert not set(vm["metadata"].get("annotations", {})) & set(constants.MIGRATION_ANNOTATIONS)
    assert [h["action"] for h in vm["status"]["history"]][-2:] == ["MigrationStarted", "Migrated"]
    wait_for("counted once, on the target", lambda: allocated_mib(kn, pool) == 2048)
    assert len(kn.vms()) == 1, "no second VM object (quota is charged on VM creation only)"


def test_failure_and_cancel_leave_the_vm_running_on_its_source(
    kn: Cluster, operators: Operators, namespace: str, setup: Callable[..., tuple[Agents, str, str]]
) -> None:
    h1, h2 = f"{namespace}-1", f"{namespace}-2"
    agents, flavor, pool = setup(h1)
    kn.vm("web", flavor, pool)
    operators.start("op-1")
    running_on(kn, agents, "web", h1)
    agents.hosts(h2)  # added once web runs on h1

    migrate(kn, "fails", "web", target=h2)
    wait_for("migrating", lambda: status_of(kn, "web").get("phase") == "Migrating")
    agents.transfer("fails", "Failed", "libvirt: connection refused")
    failed = wait_for("migration Failed", lambda: (
        (o := migration(kn, "fails")) and o.get("status", {}).get("phase") == "Failed" and o
    ))  # fmt: skip
    assert "connection refused" in failed["status"]["message"]
    assert (status_of(kn, "web")["phase"], status_of(kn, "web")["host"]) == ("Running", h1)
    wait_for("the target's room freed", lambda: allocated_mib(kn, pool) == 2048)

    migrate(kn, "cancelled", "web", target=h2)
    wait_for("migrating again", lambda: status_of(kn, "web").get("phase") == "Migrating")
    kn.custom.delete_namespaced_custom_object(
        GROUP, VERSION, namespace, "vmmigrations", "cancelled"
    )
    abort = wait_for("the agent is asked to abort", lambda: kn.get_vm("web")["metadata"].get(
        "annotations", {}).get(constants.ANNOTATION_MIGRATION_ABORT))  # fmt: skip
    assert "cancelled" in abort
    agents.transfer("cancelled", "Failed", "operation aborted")
    wait_for("the cancelled migration is gone", lambda: migration(kn, "cancelled") is None)
    assert (status_of(kn, "web")["phase"], status_of(kn, "web")["host"]) == ("Running", h1)
    wait_for("nothing held on the target", lambda: allocated_mib(kn, pool) == 2048)


def test_migrations_per_host_are_limited(
    kn: Cluster, operators: Operators, namespace: str, setup: Callable[..., tuple[Agents, str, str]]
) -> None:
    h1, h2 = f"{namespace}-1", f"{namespace}-2"
    agents, flavor, pool = setup(h1)
    kn.vm("a", flavor, pool)
    kn.vm("b", flavor, pool)
    operators.start("op-1", "--migrations-per-host", "1")
    running_on(kn, agents, "a", h1)
    running_on(kn, agents, "b", h1)
    agents.hosts(h2)
    migrate(kn, "ma", "a", target=h2)
    wait_for("a migrating", lambda: status_of(kn, "a").get("phase") == "Migrating")
    migrate(kn, "mb", "b", target=h2)
    waiting = wait_for("mb held back", lambda: (
        (o := migration(kn, "mb")) and "limit" in o.get("status", {}).get("message", "") and o
    ))  # fmt: skip
    assert waiting["status"]["phase"] == "Pending"
    assert status_of(kn, "b")["phase"] == "Running"
    agents.transfer("ma", "Completed")
    wait_for("mb starts once ma is done", lambda: status_of(kn, "b").get("phase") == "Migrating")


def test_a_lost_host_s_vms_go_unknown_and_are_recreated_only_once_fenced(
    kn: Cluster, operators: Operators, namespace: str, setup: Callable[..., tuple[Agents, str, str]]
) -> None:
    h1, h2 = f"{namespace}-1", f"{namespace}-2"
    agents, flavor, pool = setup(h1)
    kn.vm("web", flavor, pool)
    kn.vm("halted", flavor, pool, runStrategy="Halted")
    operators.start("op-1", "--host-failure-grace", "1")
    running_on(kn, agents, "web", h1)
    wait_for("halted bound", lambda: status_of(kn, "halted").get("host") == h1)
    agents.phase("halted", "Stopped")
    agents.hosts(h2)
    kn.heartbeat(h1, duration=1, age=5)  # its agent stopped renewing 4 s ago
    for name in ("web", "halted"):
        wait_for(f"{name} Unknown", functools.partial(is_phase, kn, name, "Unknown"), 20)
    events = wait_for("the host says it waits for fencing", lambda: [
        e for e in kn.host_events(h1) if e.reason == "AwaitingFencing"] or None, 20)  # fmt: skip
    assert constants.ANNOTATION_FENCED in events[0].message
    assert status_of(kn, "web")["host"] == h1, "not fenced: it stays where it was"

    kn.custom.patch_cluster_custom_object(
        GROUP, VERSION, "hosts", h1,
        {"metadata": {"annotations": {constants.ANNOTATION_FENCED: "true"}}}, _content_type=MERGE,
    )  # fmt: skip
    for name in ("web", "halted"):
        wait_for(f"{name} placed on {h2}", functools.partial(is_on, kn, name, h2), 20)
    web = kn.get_vm("web")
    actions = [h["action"] for h in web["status"]["history"]]
    assert actions[-3:] == ["HostLost", "Rescheduled", "Scheduled"]
    assert len(kn.vms()) == 2, "the same VM objects, placed again (no second quota charge)"


def test_a_drain_moves_each_vm_by_its_eviction_strategy(
    kn: Cluster, operators: Operators, namespace: str, setup: Callable[..., tuple[Agents, str, str]]
) -> None:
    h1, h2 = f"{namespace}-1", f"{namespace}-2"
    agents, flavor, pool = setup(h1, h2)
    pin = {"nodeSelector": {"test": namespace}}
    for name, extra in (
        ("live", {}),
        ("shut", {"evictionStrategy": "Shutdown"}),
        ("halted", {"runStrategy": "Halted"}),
    ):
        kn.vm(name, flavor, pool, placement=pin, **extra)
    # Everything lands on h1 first: h2 is cordoned until the drain starts.
    kn.custom.patch_cluster_custom_object(
        GROUP, VERSION, "hosts", h2, {"spec": {"unschedulable": True}}, _content_type=MERGE
    )
    operators.start("op-1")
    running_on(kn, agents, "live", h1)
    running_on(kn, agents, "shut", h1)
    wait_for("halted bound", lambda: status_of(kn, "halted").get("host") == h1)
    agents.phase("halted", "Stopped")

    kn.custom.patch_cluster_custom_object(
        GROUP, VERSION, "hosts", h2, {"spec": {"unschedulable": False}}, _content_type=MERGE
    )
    kn.custom.patch_cluster_custom_object(
        GROUP, VERSION, "hosts", h1,
        {
            "spec": {"unschedulable": True},
            "metadata": {"annotations": {constants.ANNOTATION_DRAIN: "now"}},
        },
        _content_type=MERGE,
    )  # fmt: skip

    drain_migrations = wait_for("a VMMigration for the LiveMigrate VM", lambda: [
        m for m in kn.custom.list_namespaced_custom_object(
            GROUP, VERSION, namespace, "vmmigrations")["items"]
        if m["metadata"]["labels"].get(constants.LABEL_DRAIN_HOST) == h1
    ])  # fmt: skip
    assert [m["spec"]["vmName"] for m in drain_migrations] == ["live"]
    name = drain_migrations[0]["metadata"]["name"]
    wait_for("live migrating", lambda: status_of(kn, "live").get("phase") == "Migrating")
    agents.transfer(name, "Completed")

    evict = wait_for("shut asked to shut down", lambda: kn.get_vm("shut")["metadata"].get(
        "annotations", {}).get(constants.ANNOTATION_EVICT))  # fmt: skip
    assert evict == h1
    agents.phase("shut", "Stopped")  # its agent shut the guest down

    for name in ("live", "shut"):
        wait_for(f"{name} on {h2}", functools.partial(is_on, kn, name, h2), 20)
    assert status_of(kn, "live")["phase"] == "Running", "moved live, kept running"
    assert status_of(kn, "shut")["phase"] == "Scheduled", "placed again; its new agent starts it"
    assert constants.ANNOTATION_EVICT not in kn.get_vm("shut")["metadata"].get("annotations", {})

    # A VM that was Stopped before the drain keeps its disk: it stays, and the drain says why.
    blocked = wait_for("the drain blocked by the stopped VM", lambda: [
        c for c in kn.get_cluster("hosts", h1)["status"].get("conditions", [])
        if c["type"] == constants.COND_DRAINED and c["reason"] == constants.REASON_DRAIN_BLOCKED
    ])  # fmt: skip
    assert f"{namespace}/halted: Stopped with its disk on this host" in blocked[0]["message"]
    assert blocked[0]["status"] == "False"
    assert status_of(kn, "halted")["host"] == h1 and status_of(kn, "halted")["phase"] == "Stopped"
    wait_for("a DrainBlocked event on the VM", lambda: [
        e for e in kn.events("halted") if e.reason == constants.REASON_DRAIN_BLOCKED
    ])  # fmt: skip
    kn.custom.delete_namespaced_custom_object(
        GROUP, VERSION, namespace, "virtualmachines", "halted"
    )
    kn.custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, "virtualmachines", "halted",
        {"metadata": {"finalizers": None}}, _content_type=MERGE,
    )  # its agent, once the domain is undefined  # fmt: skip
    drained = wait_for("Drained condition", lambda: [
        c for c in kn.get_cluster("hosts", h1)["status"].get("conditions", [])
        if c["type"] == constants.COND_DRAINED and c["status"] == "True"
    ])  # fmt: skip
    assert drained[0]["reason"] == constants.REASON_DRAINED

    kn.custom.patch_cluster_custom_object(
        GROUP, VERSION, "hosts", h1, kubectl_vm.build_cordon(False), _content_type=MERGE
    )  # what `kubectl vm uncordon` sends
    wait_for("the Drained condition gone after uncordon", lambda: not [
        c for c in kn.get_cluster("hosts", h1)["status"].get("conditions", [])
        if c["type"] == constants.COND_DRAINED
    ])  # fmt: skip
    host = kn.get_cluster("hosts", h1)
    assert host["spec"]["unschedulable"] is False
    assert constants.ANNOTATION_DRAIN not in host["metadata"].get("annotations", {})


def test_rebalance_moves_a_vm_off_a_hot_host_and_says_why(
    kn: Cluster, operators: Operators, namespace: str
) -> None:
    h1, h2 = f"{namespace}-hot", f"{namespace}-cool"
    agents = Agents(kn)
    agents.hosts(h1)
    flavor = kn.flavor(f"{namespace}-m", vcpus=2, memory="2Gi")
    pool = kn.pool(
        f"{namespace}-p",
        rebalance={"enabled": True, "cpuThresholdPercent": 80, "maxMigrationsPerHour": 1},
    )
    for name in ("a", "b"):
        kn.vm(name, flavor, pool)
    operators.start("op-1", "--rebalance-period", "1")
    for name in ("a", "b"):
        running_on(kn, agents, name, h1)
    agents.hosts(h2)
    for host, cpu in ((h1, 95.0), (h2, 5.0)):
        kn.custom.patch_cluster_custom_object_status(
            GROUP, VERSION, "hosts", host,
            {"status": {"load": {"cpuPercent": cpu, "memoryPercent": 10.0,
                                 "reportedAt": "2026-01-01T00:00:00Z"}}},
            _content_type=MERGE,
        )  # fmt: skip

    def planned() -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = kn.custom.list_namespaced_custom_object(
            GROUP, VERSION, namespace, "vmmigrations"
        )["items"]
        return [m for m in items if m["metadata"]["labels"].get(constants.LABEL_INITIATOR)]

    made = wait_for("a re-balance VMMigration", planned, 20)
    assert [m["spec"]["targetHost"] for m in made] == [h2]
    assert made[0]["metadata"]["labels"][constants.LABEL_INITIATOR] == "rebalance"
    vm = made[0]["spec"]["vmName"]
    core = kubernetes.client.CoreV1Api(kn.custom.api_client)
    why = wait_for("the reason as an event on the VM", lambda: [
        e.message for e in core.list_namespaced_event(namespace).items
        if e.involved_object.name == vm and e.reason == "Rebalance"])  # fmt: skip
    assert f"host {h1} at 95% is above the pool's threshold" in why[0]
    wait_for("it starts migrating", lambda: status_of(kn, vm).get("phase") == "Migrating")
    assert len(planned()) == 1, "the hourly budget of 1 is spent"


def test_a_finished_migration_is_deleted_after_the_retention(
    kn: Cluster, operators: Operators, namespace: str, setup: Callable[..., tuple[Agents, str, str]]
) -> None:
    h1, h2 = f"{namespace}-1", f"{namespace}-2"
    agents, flavor, pool = setup(h1, h2)
    kn.vm("web", flavor, pool)
    operators.start("op-1", "--migration-retention", "3")
    host = wait_for("web bound", lambda: status_of(kn, "web").get("host"))
    running_on(kn, agents, "web", host)
    other = h2 if host == h1 else h1
    migrate(kn, "move", "web", target=other)
    wait_for("migration Running", lambda: (
        (o := migration(kn, "move")) and o.get("status", {}).get("phase") == "Running"
    ))  # fmt: skip
    agents.transfer("move", "Completed", "done")
    wait_for("migration Succeeded", lambda: (
        (o := migration(kn, "move")) and o.get("status", {}).get("phase") == "Succeeded"
    ))  # fmt: skip
    # Kept for the retention (for kubectl get vmim and the drains' count), then deleted: its
    # finalizer released by the same leader, nothing of the VM touched.
    wait_for("the finished migration collected", lambda: migration(kn, "move") is None, 30)
    assert (status_of(kn, "web")["host"], status_of(kn, "web")["phase"]) == (other, "Running")
