"""The node agent against a libvirtd that outlives it (`test+unix:///default` keeps its
domains in the daemon): a killed and restarted agent neither loses nor duplicates a domain,
guest crashes and power-offs are noticed from libvirt events, orphans are reported and
removed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libvirt
import pytest

from kubenova.api.quantity import Quantity
from kubenova.api.vm import VMResources
from kubenova.node_agent import domain_xml
from tests.e2e.bind import bind, flavor_yaml, phase, vm, vm_yaml
from tests.fixtures.cluster import LocalCluster, wait_for
from tests.fixtures.libvirt import HACK, Agents, unique_host
from tests.unit.node_agent.builders import make_vm

pytestmark = [pytest.mark.e2e, pytest.mark.libvirt]


@dataclass
class DaemonHost:
    uri: str
    conn: Any
    """Held open for the whole test: the daemon frees the shared test host when its last
    connection closes, and a real host's domains outlive the agent anyway."""


@pytest.fixture
def daemon_host(libvirtd: str, namespace: str) -> Iterator[DaemonHost]:
    """The daemon's shared test host; the test's domains are removed afterwards."""
    uri = f"test+unix:///default?socket={libvirtd}"
    libvirt.registerErrorHandler(lambda *_: None, None)
    conn = libvirt.open(uri)
    yield DaemonHost(uri, conn)
    for dom in conn.listAllDomains(0):
        if dom.name().startswith(f"{namespace}_"):
            if dom.isActive():
                dom.destroy()
            dom.undefine()
    conn.close()


def _mine(conn: Any, namespace: str) -> dict[str, Any]:
    return {d.name(): d for d in conn.listAllDomains(0) if d.name().startswith(f"{namespace}_")}


def _running(cluster: LocalCluster, ns: str, names: list[str]) -> bool:
    return all(phase(cluster, ns, n) == "Running" for n in names)


def _setup(
    cluster: LocalCluster, ns: str, names: list[str], host: str, run: str = "Always"
) -> None:
    flavor = f"f-{ns}"
    cluster.kubectl("apply", "-f", "-", input=flavor_yaml(flavor))
    for n in names:
        cluster.kubectl("apply", "-f", "-", input=vm_yaml(n, ns, flavor, run=run))
        bind(cluster, ns, n, host)


def test_a_killed_agent_restarts_without_losing_or_duplicating_domains(
    test_cluster: LocalCluster, namespace: str, agents: Agents, daemon_host: DaemonHost
) -> None:
    host = unique_host()
    names = [f"vm-{i}" for i in range(8)]
    first = agents.start(host, daemon_host.uri)
    _setup(test_cluster, namespace, names, host)
    wait_for("a first VM Running", lambda: any(
        phase(test_cluster, namespace, n) == "Running" for n in names
    ))  # fmt: skip
    first.kill()
    conn = daemon_host.conn
    before = {name: d.ID() for name, d in _mine(conn, namespace).items() if d.isActive()}

    second = agents.start(host, daemon_host.uri)
    wait_for("every VM Running", lambda: _running(test_cluster, namespace, names))
    domains = _mine(conn, namespace)
    assert sorted(domains) == sorted(f"{namespace}_{n}" for n in names)
    for n in names:
        obj = vm(test_cluster, namespace, n)
        assert obj is not None
        assert domains[f"{namespace}_{n}"].UUIDString() == obj["metadata"]["uid"]
    after = {name: domains[name].ID() for name in before}
    assert after == before, "domains running before the kill must not be restarted"
    assert second.alive(), second.log_text()[-3000:]


def test_half_done_work_of_a_dead_agent_is_finished_not_redone(
    test_cluster: LocalCluster, namespace: str, agents: Agents, daemon_host: DaemonHost
) -> None:
    host = unique_host()
    _setup(test_cluster, namespace, ["defined", "started"], host)
    conn = daemon_host.conn
    size = VMResources(vcpus=1, memory=Quantity("512Mi"), disk=Quantity("1Gi"))
    settings = domain_xml.DomainSettings(domain_type="test")
    for name in ("defined", "started"):
        raw = vm(test_cluster, namespace, name)
        assert raw is not None
        model = make_vm(name, namespace, uid=raw["metadata"]["uid"])
        conn.defineXML(domain_xml.build(domain_xml.plan(model, size, settings)[0]))
    conn.lookupByName(f"{namespace}_started").create()
    started_id = conn.lookupByName(f"{namespace}_started").ID()

    agents.start(host, daemon_host.uri)
    wait_for("both Running", lambda: _running(test_cluster, namespace, ["defined", "started"]))
    assert conn.lookupByName(f"{namespace}_started").ID() == started_id
    assert len(_mine(conn, namespace)) == 2


def test_guest_crash_and_power_off_are_noticed_from_libvirt_events(
    test_cluster: LocalCluster, namespace: str, agents: Agents, daemon_host: DaemonHost
) -> None:
    host = unique_host()
    # A resync far away: only libvirt's events can explain a quick reaction.
    agents.start(host, daemon_host.uri, KUBENOVA_RESYNC_SECONDS="600")
    _setup(test_cluster, namespace, ["always"], host, run="Always")
    _setup(test_cluster, namespace, ["manual"], host, run="Manual")
    wait_for("both Running", lambda: _running(test_cluster, namespace, ["always", "manual"]))
    conn = daemon_host.conn
    crashed = conn.lookupByName(f"{namespace}_always")
    old_id = crashed.ID()
    crashed.destroy()
    powered_off = conn.lookupByName(f"{namespace}_manual")
    t0 = time.monotonic()
    powered_off.shutdown()
    wait_for("manual Stopped", lambda: phase(test_cluster, namespace, "manual") == "Stopped", 5)
    noticed = time.monotonic() - t0
    wait_for("always restarted", lambda: crashed.isActive() and crashed.ID() != old_id, 5)
    wait_for("always Running", lambda: phase(test_cluster, namespace, "always") == "Running", 5)
    print(f"\npower-off noticed and reported in {noticed:.2f} s")


def test_orphan_domains_are_reported_then_removed_and_foreign_ones_left_alone(
    test_cluster: LocalCluster, namespace: str, agents: Agents, daemon_host: DaemonHost
) -> None:
    host = unique_host()
    conn = daemon_host.conn
    size = VMResources(vcpus=1, memory=Quantity("256Mi"), disk=Quantity("1Gi"))
    ghost = make_vm("ghost", namespace, uid="99999999-9999-4999-8999-999999999999")
    settings = domain_xml.DomainSettings(domain_type="test")
    conn.defineXML(domain_xml.build(domain_xml.plan(ghost, size, settings)[0]))
    conn.lookupByName(f"{namespace}_ghost").create()
    foreign = "test"  # the test driver's own domain carries no kubenova metadata
    assert conn.lookupByName(foreign).isActive()

    agents.start(host, daemon_host.uri, KUBENOVA_ORPHAN_GRACE_SECONDS="2")

    def orphan_events() -> list[str]:
        out = test_cluster.kubectl(
            "get", "events", "-n", "default", "-o", "json",
            f"--field-selector=involvedObject.name={host}",
        ).stdout  # fmt: skip
        return [e["reason"] for e in json.loads(out)["items"]]

    wait_for("an OrphanDomain event", lambda: "OrphanDomain" in orphan_events())
    wait_for("the orphan removed", lambda: f"{namespace}_ghost" not in _mine(conn, namespace))
    assert "OrphanDomainRemoved" in orphan_events()
    assert conn.lookupByName(foreign).isActive()


def _restart_libvirtd(libvirtd: str) -> None:
    pid_file = Path("/run/libvirtd.pid")
    pid = int(pid_file.read_text().strip())
    os.kill(pid, signal.SIGTERM)  # the daemon hack/libvirt-setup started
    wait_for("libvirtd to exit", lambda: not Path(f"/proc/{pid}").exists(), 15)
    subprocess.run(["bash", str(HACK / "libvirt-setup")], check=True, capture_output=True)
    assert Path(libvirtd).exists()


# The restart also drops this process's own connections; libvirt then schedules their clean-up
# on the session's (idle) libvirtaio loop, which warns when it closes. Nothing of the agent's.
@pytest.mark.filterwarnings("ignore:coroutine 'virEventAsyncIOImpl._ff_callback':RuntimeWarning")
def test_the_agent_reconnects_after_libvirtd_restarts(
    test_cluster: LocalCluster, namespace: str, agents: Agents, libvirtd: str
) -> None:
    host = unique_host()
    uri = f"test+unix:///default?socket={libvirtd}"
    agent = agents.start(host, uri)
    _setup(test_cluster, namespace, ["survivor"], host)
    wait_for("survivor Running", lambda: _running(test_cluster, namespace, ["survivor"]))
    _restart_libvirtd(libvirtd)
    # The test driver keeps its domains in the daemon's memory, so the restart lost the
    # domain: the reconnected agent must notice and define it again, exactly once.
    conn = libvirt.open(uri)
    try:
        wait_for("the domain back", lambda: (
            (d := _mine(conn, namespace).get(f"{namespace}_survivor")) is not None
            and d.isActive()
        ), 30)  # fmt: skip
        wait_for(
            "survivor Running", lambda: phase(test_cluster, namespace, "survivor") == "Running"
        )
        assert list(_mine(conn, namespace)) == [f"{namespace}_survivor"]
        assert "reconnected to libvirt" in agent.log_text()
    finally:
        for dom in _mine(conn, namespace).values():
            dom.destroy()
            dom.undefine()
        conn.close()
