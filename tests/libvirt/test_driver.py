"""The libvirt `Hypervisor` against libvirt's test driver (`test:///<host file>`, no daemon):
domain life cycle, idempotent calls, lifecycle events, host facts, owner metadata."""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path

import pytest

from kubenova.api.quantity import Quantity
from kubenova.api.vm import VMResources
from kubenova.node_agent import domain_xml, hostfacts
from kubenova.node_agent.domain_xml import DomainSettings
from kubenova.node_agent.hypervisor import DomainState, StopCause
from kubenova.node_agent.libvirt_driver import LibvirtHypervisor
from tests.fixtures.libvirt import Loop
from tests.unit.node_agent.builders import UID, make_vm

pytestmark = pytest.mark.libvirt

SIZE = VMResources(vcpus=2, memory=Quantity("512Mi"), disk=Quantity("1Gi"))
SETTINGS = DomainSettings(domain_type="test", state_dir="/nonexistent/kn")


def _xml(name: str = "web-1", uid: str = UID, **kw: object) -> str:
    spec, _ = domain_xml.plan(make_vm(name, uid=uid, **kw), SIZE, SETTINGS)  # type: ignore[arg-type]
    return domain_xml.build(spec)


async def _opened(test_host: Path, events: list[str] | None = None) -> LibvirtHypervisor:
    hv = LibvirtHypervisor(f"test://{test_host}", host="lv-host")
    await hv.open((events if events is not None else []).append)
    return hv


async def _wait_for(cond: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not met within the deadline")
        await asyncio.sleep(0.01)


def test_define_start_shutdown_undefine(aio: Loop, test_host: Path) -> None:
    async def scenario() -> None:
        hv = await _opened(test_host)
        assert await hv.domain("team-a_web-1") is None
        await hv.define(_xml())
        defined = await hv.domain("team-a_web-1")
        assert defined is not None
        assert (defined.state, defined.uuid) == (DomainState.SHUTOFF, UID)
        assert defined.owner is not None and defined.owner.key == "team-a/web-1"
        await hv.start("team-a_web-1")
        running = await hv.domain("team-a_web-1")
        assert running is not None and running.state == DomainState.RUNNING
        await hv.shutdown("team-a_web-1")
        off = await hv.domain("team-a_web-1")
        assert off is not None
        assert (off.state, off.cause) == (DomainState.SHUTOFF, StopCause.SHUTDOWN)
        await hv.undefine("team-a_web-1")
        assert await hv.domain("team-a_web-1") is None
        await hv.close()

    aio.run(scenario())


def test_repeated_calls_are_harmless(aio: Loop, test_host: Path) -> None:
    async def scenario() -> None:
        hv = await _opened(test_host)
        await hv.define(_xml())
        await hv.define(_xml())  # redefining the same domain updates it
        await hv.start("team-a_web-1")
        await hv.start("team-a_web-1")
        await hv.shutdown("team-a_web-1")
        await hv.shutdown("team-a_web-1")
        await hv.destroy("team-a_web-1")
        domains = await hv.domains()
        assert [d.name for d in domains] == ["team-a_web-1"]
        await hv.undefine("team-a_web-1")
        assert await hv.domains() == []
        await hv.close()

    aio.run(scenario())


def test_lifecycle_events_name_the_domain(aio: Loop, test_host: Path) -> None:
    events: list[str] = []

    async def scenario() -> None:
        hv = await _opened(test_host, events)
        await hv.define(_xml("db-1"))
        await hv.start("team-a_db-1")
        await _wait_for(lambda: events.count("team-a_db-1") >= 2)  # defined, started
        await hv.destroy("team-a_db-1")
        await _wait_for(lambda: events.count("team-a_db-1") >= 3)
        await hv.close()

    aio.run(scenario())


def test_a_domain_of_another_vm_with_the_same_name_is_refused(aio: Loop, test_host: Path) -> None:
    async def scenario() -> None:
        hv = await _opened(test_host)
        await hv.define(_xml())
        with pytest.raises(Exception, match="team-a_web-1"):
            await hv.define(_xml(uid="11111111-2222-3333-4444-555555555555"))
        await hv.close()

    aio.run(scenario())


def test_restart_token_is_kept_in_the_domain_metadata(aio: Loop, test_host: Path) -> None:
    async def scenario() -> None:
        hv = await _opened(test_host)
        await hv.define(_xml())
        await hv.start("team-a_web-1")
        await hv.set_restart_token("team-a_web-1", "2026-01-01T00:00:00Z")
        await hv.reboot("team-a_web-1")
        d = await hv.domain("team-a_web-1")
        assert d is not None and d.restart_token == "2026-01-01T00:00:00Z"
        assert d.state == DomainState.RUNNING
        await hv.close()

    aio.run(scenario())


def test_host_facts_come_from_the_host_file(aio: Loop, test_host: Path) -> None:
    async def scenario() -> None:
        hv = await _opened(test_host)
        facts = await hv.host_facts()
        assert (facts.cpus, facts.memory_bytes) == (64, 256 * 1024**3)
        gpus = [d for d in facts.pci_devices if d.is_gpu]
        assert [(d.address, hostfacts.gpu_model(d)) for d in gpus] == [
            ("0000:3b:00.0", "nvidia-a100"),
            ("0000:3c:00.0", "nvidia-a100"),
        ]
        assert facts.hypervisor.startswith(f"test://{test_host} (libvirt ")
        await hv.define(_xml())
        await hv.start("team-a_web-1")
        usage = await hv.usage()
        assert (usage.running, usage.vcpus, usage.memory_bytes) == (1, 2, 512 * 1024**2)
        await hv.close()

    aio.run(scenario())


def test_define_and_start_latency_on_the_test_driver(
    aio: Loop, test_host: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async def scenario() -> list[float]:
        hv = await _opened(test_host)
        took = []
        for i in range(50):
            xml = _xml(f"vm-{i}", uid=f"00000000-0000-0000-0000-{i:012d}")
            t = time.perf_counter()
            await hv.define(xml)
            await hv.start(f"team-a_vm-{i}")
            took.append(time.perf_counter() - t)
        assert len(await hv.domains()) == 50
        await hv.close()
        return took

    took = aio.run(scenario())
    with capsys.disabled():
        print(
            f"\ndefine+start on test:///: median {statistics.median(took) * 1000:.2f} ms, "
            f"max {max(took) * 1000:.2f} ms over {len(took)}"
        )
    assert statistics.median(took) < 0.1


_TWO_LOOPS = """
import asyncio, sys, time
from pathlib import Path
from kubenova.node_agent.libvirt_driver import LibvirtHypervisor
from tests.libvirt.test_driver import _xml

async def one(round: int) -> int:
    events: list[str] = []
    hv = LibvirtHypervisor(f"test://{sys.argv[1]}", host="lv-host")
    await hv.open(events.append)
    name = f"r{round}"
    await hv.define(_xml(name, uid=f"00000000-0000-0000-0000-00000000000{round}"))
    await hv.start(f"team-a_{name}")
    deadline = time.monotonic() + 5
    while events.count(f"team-a_{name}") < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    await hv.close()
    return events.count(f"team-a_{name}")

print(asyncio.run(one(1)), asyncio.run(one(2)))
"""


def test_events_reach_a_second_event_loop_in_the_same_process(test_host: Path) -> None:
    # libvirt's event loop is process-wide; the agent's asyncio loop need not be the first
    # one the process ran (a restarted loop, a test run). Events follow the hypervisor's loop.
    import subprocess
    import sys

    from tests.conftest import ROOT

    proc = subprocess.run(
        [sys.executable, "-c", _TWO_LOOPS, str(test_host)],
        capture_output=True, text=True, timeout=120, check=False, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    first, second = (int(n) for n in proc.stdout.split())
    assert first >= 2, "defined and started: two events on the first loop"
    assert second >= 2, f"only {second} events reached the second loop"
