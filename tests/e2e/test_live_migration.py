"""Live migration and host failure end to end: the operator, two agents, two libvirt daemons
in their own network namespaces (tests/fixtures/libvirt_pair.py) and a real tiny guest under
qemu (TCG). A VMMigration applied with kubectl moves the running guest; a killed agent's VM is
recreated on the other host once the host is fenced, and the old agent, back, removes its
copy at once."""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import libvirt
import pytest

from kubenova.api import constants
from tests.fixtures.cluster import LocalCluster, wait_for
from tests.fixtures.console import Console
from tests.fixtures.libvirt import TINY_KERNEL, Agents, unique_host
from tests.fixtures.libvirt_pair import PairHost
from tests.fixtures.operator import Operators

pytestmark = [pytest.mark.libvirt, pytest.mark.slow, pytest.mark.e2e]

MARKER = "KUBENOVA-GUEST-READY"
TICK = re.compile(r"^tick (\d+)$", re.MULTILINE)


def get(cluster: LocalCluster, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
    out = cluster.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    return json.loads(out.stdout) if out.returncode == 0 else None


def vm_status(cluster: LocalCluster, namespace: str, name: str = "tiny") -> dict[str, Any]:
    obj = get(cluster, "vm", name, namespace) or {}
    status: dict[str, Any] = obj.get("status", {})
    return status


def at(
    cluster: LocalCluster, namespace: str, host: str, phase: str = "Running", vm: str = "tiny"
) -> bool:
    status = vm_status(cluster, namespace, vm)
    return status.get("host") == host and status.get("phase") == phase


def ticks(serial: Path) -> list[int]:
    return (
        [int(n) for n in TICK.findall(serial.read_text(errors="replace"))]
        if serial.exists()
        else []
    )


def ticking(serial: Path) -> bool:
    return len(ticks(serial)) >= 1


def domains(host: PairHost) -> dict[str, int]:
    """Domain name → libvirt state on one of the pair's daemons."""
    conn = libvirt.open(host.uri)
    try:
        return {d.name(): d.state()[0] for d in conn.listAllDomains(0)}
    finally:
        conn.close()


def running_copies(pair: tuple[PairHost, PairHost], domain: str) -> int:
    return sum(domains(h).get(domain) == libvirt.VIR_DOMAIN_RUNNING for h in pair)


def setup_cluster(
    cluster: LocalCluster,
    namespace: str,
    vms: tuple[tuple[str, str], ...] = (("tiny", "LiveMigrate"),),
) -> None:
    flavor = f"tiny-{namespace}"
    docs: list[dict[str, Any]] = [
        {"apiVersion": constants.API_VERSION, "kind": "Flavor", "metadata": {"name": flavor},
         "spec": {"vcpus": 1, "memory": "128Mi", "disk": "1Gi"}},
        {"apiVersion": constants.API_VERSION, "kind": "ResourcePool",
         "metadata": {"name": f"pool-{namespace}"},
         "spec": {"hostSelector": {"matchLabels": {"test": namespace}}}},
    ]  # fmt: skip
    for name, strategy in vms:
        docs.append(tiny_vm(name, namespace, flavor, strategy))
    for d in docs:
        cluster.kubectl("apply", "-f", "-", input=json.dumps(d))


def tiny_vm(name: str, namespace: str, flavor: str, strategy: str) -> dict[str, Any]:
    return {
        "apiVersion": constants.API_VERSION, "kind": "VirtualMachine",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "flavor": flavor, "pool": f"pool-{namespace}", "evictionStrategy": strategy,
            "terminationGracePeriodSeconds": 20,
            "boot": {"kernel": {"name": TINY_KERNEL, "cmdline": "console=ttyS0 quiet panic=-1"}},
        },
    }  # fmt: skip


def start_agent(
    agents: Agents, host: str, lv: PairHost, namespace: str, state: Path, store: Path, **env: str
) -> None:
    # Each host its own state folder, as on separate machines (a domain keeps the paths it
    # was started with, so a migrated guest's console log stays in the source's folder).
    agents.start(
        host, lv.uri, KUBENOVA_STATE_DIR=str(state / host), KUBENOVA_IMAGE_DIR=str(store),
        KUBENOVA_HOST_LABELS=f"test={namespace}", KUBENOVA_ORPHAN_GRACE_SECONDS="300",
        **lv.agent_env(), **env,
    )  # fmt: skip


def test_a_vmmigration_moves_a_running_guest_live_between_two_libvirt_hosts(
    test_cluster: LocalCluster,
    namespace: str,
    operators: Operators,
    agents: Agents,
    libvirt_pair: tuple[PairHost, PairHost],
    tiny_image_store: Path,
    tmp_path: Path,
) -> None:
    lv_a, lv_b = libvirt_pair
    host_a, host_b = unique_host("src"), unique_host("dst")
    state = tmp_path / "domains"
    domain = f"{namespace}_tiny"
    serial = state / host_a / domain / "serial.log"
    operators.start("op-1")
    start_agent(agents, host_a, lv_a, namespace, state, tiny_image_store)
    setup_cluster(test_cluster, namespace)
    wait_for("tiny Running on the source", lambda: at(test_cluster, namespace, host_a), 90)
    wait_for("the guest ticking", lambda: len(ticks(serial)) >= 2, 90, interval=0.2)
    start_agent(agents, host_b, lv_b, namespace, state, tiny_image_store)
    wait_for("the target reports its migration URI", lambda: (
        (h := get(test_cluster, "hosts.kubenova.io", host_b, namespace))
        and h.get("status", {}).get("phase") == "Ready"
        and h["status"].get("migration", {}).get("uri") == lv_b.migration_uri
    ), 60)  # fmt: skip

    before = ticks(serial)[-1]
    migration = {
        "apiVersion": constants.API_VERSION, "kind": "VMMigration",
        "metadata": {"name": "move", "namespace": namespace}, "spec": {"vmName": "tiny"},
    }  # fmt: skip
    test_cluster.kubectl("apply", "-f", "-", input=json.dumps(migration))
    t0 = time.monotonic()
    done = wait_for("the migration Succeeded", lambda: (
        (m := get(test_cluster, "vmmigration", "move", namespace))
        and m.get("status", {}).get("phase") in ("Succeeded", "Failed") and m
    ), 90)  # fmt: skip
    seen_after = time.monotonic() - t0
    st = done["status"]
    assert st["phase"] == "Succeeded", st.get("message")
    assert (st["sourceHost"], st["targetHost"], st["progressPercent"]) == (host_a, host_b, 100)

    status = vm_status(test_cluster, namespace)
    assert (status["host"], status["phase"]) == (host_b, "Running")
    assert domain not in domains(lv_a), "gone from the source (undefined, not just stopped)"
    assert domains(lv_b).get(domain) == libvirt.VIR_DOMAIN_RUNNING
    # The guest kept running: its counter goes on past where it was, with no second boot.
    wait_for("the guest still ticking on the target", lambda: ticks(serial)[-1] >= before + 3, 30)
    counted = ticks(serial)
    assert counted == list(range(1, counted[-1] + 1)), "consecutive ticks: no reboot, no gap"
    assert serial.read_text(errors="replace").count(MARKER) == 1

    conn = libvirt.open(lv_b.uri)
    stats = conn.lookupByName(domain).jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
    conn.close()
    print(
        f"\nlive migration of the 128 MiB tiny guest: transfer {st['transfer']['elapsedMs']} ms "
        f"(agent), libvirt {stats.get('time_elapsed')} ms, downtime {stats.get('downtime')} ms, "
        f"{stats.get('memory_processed', 0) // 2**20} MiB sent; VMMigration applied → Succeeded "
        f"seen after {seen_after:.1f} s"
    )


def test_a_killed_agents_vm_runs_elsewhere_exactly_once_after_fencing(
    test_cluster: LocalCluster,
    namespace: str,
    operators: Operators,
    agents: Agents,
    libvirt_pair: tuple[PairHost, PairHost],
    tiny_image_store: Path,
    tmp_path: Path,
) -> None:
    lv_a, lv_b = libvirt_pair
    host_a, host_b = unique_host("lost"), unique_host("spare")
    state = tmp_path / "domains"
    domain = f"{namespace}_tiny"
    operators.start("op-1", "--host-failure-grace", "2")
    start_agent(
        agents, host_a, lv_a, namespace, state, tiny_image_store, KUBENOVA_LEASE_SECONDS="6"
    )
    setup_cluster(test_cluster, namespace)
    wait_for("tiny Running on the first host", lambda: at(test_cluster, namespace, host_a), 90)
    start_agent(agents, host_b, lv_b, namespace, state, tiny_image_store)
    wait_for("the spare host Ready", lambda: (
        (h := get(test_cluster, "hosts.kubenova.io", host_b, namespace))
        and h.get("status", {}).get("phase") == "Ready"
    ), 60)  # fmt: skip

    agent_a = next(a for a in agents.started if a.host == host_a)
    agent_a.kill()
    t0 = time.monotonic()
    wait_for(
        "tiny Unknown", lambda: vm_status(test_cluster, namespace).get("phase") == "Unknown", 30
    )
    unknown_after = time.monotonic() - t0
    assert running_copies(libvirt_pair, domain) == 1, "not fenced: it stays where it was"
    assert vm_status(test_cluster, namespace)["host"] == host_a

    # The fencing hook: freeze the host's guest (as a power-off would), then confirm.
    conn = libvirt.open(lv_a.uri)
    conn.lookupByName(domain).suspend()
    conn.close()
    test_cluster.kubectl(
        "annotate", "hosts.kubenova.io", host_a, f"{constants.ANNOTATION_FENCED}=true"
    )
    t1 = time.monotonic()
    wait_for("tiny Running on the spare host", lambda: at(test_cluster, namespace, host_b), 60)
    recreated_after = time.monotonic() - t1
    assert running_copies(libvirt_pair, domain) == 1
    assert domains(lv_a).get(domain) == libvirt.VIR_DOMAIN_PAUSED

    # The host comes back: its agent removes its copy at once (not after the orphan grace).
    start_agent(agents, host_a, lv_a, namespace, state, tiny_image_store)
    t2 = time.monotonic()
    wait_for("the old copy removed", lambda: domain not in domains(lv_a), 30)
    removed_after = time.monotonic() - t2
    wait_for("the spent fencing confirmation removed by the agent", lambda: (
        constants.ANNOTATION_FENCED not in (
            get(test_cluster, "hosts.kubenova.io", host_a, namespace) or {}
        ).get("metadata", {}).get("annotations", {})
    ), 20)  # fmt: skip
    assert running_copies(libvirt_pair, domain) == 1
    assert vm_status(test_cluster, namespace)["host"] == host_b
    print(
        f"\nhost failure: Unknown {unknown_after:.1f} s after the agent was killed (lease 6 s); "
        f"Running elsewhere {recreated_after:.1f} s after the fencing confirmation (grace 2 s); "
        f"old copy removed {removed_after:.1f} s after its agent came back"
    )


def kubectl_vm(cluster: LocalCluster, *args: str) -> subprocess.CompletedProcess[str]:
    """The `kubectl vm` plugin, run as kubectl runs it, against the test cluster."""
    env = {**os.environ, "KUBECTL": str(cluster.plane.bin_dir / "kubectl")}
    return subprocess.run(
        [sys.executable, "-m", "kubenova.cli.kubectl_vm", f"--kubeconfig={cluster.kubeconfig}",
         *args],
        capture_output=True, text=True, env=env, check=False, timeout=180,
    )  # fmt: skip


def test_kubectl_vm_drain_moves_each_guest_by_its_eviction_strategy(
    test_cluster: LocalCluster,
    namespace: str,
    operators: Operators,
    agents: Agents,
    libvirt_pair: tuple[PairHost, PairHost],
    tiny_image_store: Path,
    tmp_path: Path,
    console: Console,
) -> None:
    lv_a, lv_b = libvirt_pair
    host_a, host_b = unique_host("drain"), unique_host("keep")
    state = tmp_path / "domains"
    operators.start("op-1")
    start_agent(agents, host_a, lv_a, namespace, state, tiny_image_store, **console.agent_env())
    setup_cluster(test_cluster, namespace, (("live", "LiveMigrate"), ("shut", "Shutdown")))
    for vm in ("live", "shut"):
        wait_for(f"{vm} Running", functools.partial(at, test_cluster, namespace, host_a, vm=vm), 90)
    logs = {vm: state / host_a / f"{namespace}_{vm}" / "serial.log" for vm in ("live", "shut")}
    for vm, log in logs.items():
        wait_for(f"{vm} ticking", functools.partial(ticking, log), 90)
    start_agent(agents, host_b, lv_b, namespace, state, tiny_image_store, **console.agent_env())
    wait_for("the other host Ready", lambda: (
        (h := get(test_cluster, "hosts.kubenova.io", host_b, namespace))
        and h.get("status", {}).get("phase") == "Ready"
        and h["status"].get("migration", {}).get("uri")
    ), 60)  # fmt: skip

    t0 = time.monotonic()
    drain = kubectl_vm(test_cluster, "drain", host_a, "--wait", "--timeout", "120")
    drained_after = time.monotonic() - t0
    assert drain.returncode == 0, drain.stderr
    assert f"host/{host_a} drained" in drain.stdout
    for vm in ("live", "shut"):
        wait_for(f"{vm} Running on {host_b}", functools.partial(
            at, test_cluster, namespace, host_b, vm=vm), 60)  # fmt: skip
    assert not domains(lv_a), "nothing left on the drained host"
    assert set(domains(lv_b)) == {f"{namespace}_live", f"{namespace}_shut"}
    new_log = state / host_b / f"{namespace}_shut" / "serial.log"
    wait_for("shut booted afresh on the other host", lambda: new_log.exists() and MARKER in
             new_log.read_text(errors="replace"), 60)  # fmt: skip
    live = ticks(logs["live"])
    assert live == list(range(1, live[-1] + 1)), "LiveMigrate: the same boot, ticking on"
    assert logs["live"].read_text().count(MARKER) == 1
    shut_history = [h["action"] for h in vm_status(test_cluster, namespace, "shut")["history"]]
    assert "Stopped" in shut_history and "Rescheduled" in shut_history
    host = get(test_cluster, "hosts.kubenova.io", host_a, namespace) or {}
    assert host["spec"]["unschedulable"] is True

    # The console log of the guest that booted afresh on the other host, through the API
    # server and that host's agent (docs/console.md).
    shut_log = kubectl_vm(test_cluster, "-n", namespace, "console", "shut", "--log", "--tail", "2")
    assert shut_log.returncode == 0, shut_log.stderr
    assert len(shut_log.stdout.splitlines()) == 2 and "tick" in shut_log.stdout, shut_log.stdout
    print(f"\ndrain of 2 tiny guests (LiveMigrate + Shutdown): {drained_after:.1f} s")
