"""Reading the host from libvirt's XML and the Host status the agent writes."""

from __future__ import annotations

import pytest

from kubenova.node_agent import hostfacts, simulate
from kubenova.node_agent.hypervisor import HostFacts, Load, NUMACell, PCIDevice
from tests.unit.node_agent.builders import NOW

pytestmark = pytest.mark.unit

CAPS = """<capabilities><host><topology><cells num='2'>
<cell id='0'><memory unit='KiB'>8388608</memory><cpus num='4'/></cell>
<cell id='1'><memory unit='KiB'>4194304</memory><cpus num='2'/></cell>
</cells></topology></host></capabilities>"""

NET = """<device><name>net_eth0</name><capability type='net'><interface>eth0</interface>
</capability></device>"""


def test_numa_cells_are_read_from_the_capabilities() -> None:
    assert hostfacts.numa_cells(CAPS) == (
        NUMACell(id=0, cpus=4, memory_bytes=8 * 1024**3),
        NUMACell(id=1, cpus=2, memory_bytes=4 * 1024**3),
    )


def test_a_gpu_node_device_becomes_a_pci_device_with_its_model() -> None:
    host = simulate.host_xml(simulate.HostShape("h", cpus=8, memory_gib=16, gpus=1))
    start = host.index("<device>")
    dev = hostfacts.pci_device(host[start : host.index("</device>") + len("</device>")])
    assert dev == PCIDevice("0000:3b:00.0", "10de", "20b0", "0x030200", numa_node=0)
    assert dev.is_gpu
    assert hostfacts.gpu_model(dev) == "nvidia-a100"


def test_an_unknown_pci_device_is_named_by_its_ids() -> None:
    dev = PCIDevice("0000:01:00.0", "1234", "abcd", "0x030000")
    assert hostfacts.gpu_model(dev) == "pci-1234-abcd"


def test_a_device_that_is_not_pci_is_ignored() -> None:
    assert hostfacts.pci_device(NET) is None


def test_host_status_reports_capacity_load_and_only_gpus() -> None:
    facts = HostFacts(
        cpus=64,
        memory_bytes=256 * 1024**3,
        numa_cells=(NUMACell(0, 64, 256 * 1024**3),),
        pci_devices=(
            PCIDevice("0000:3b:00.0", "10de", "20b0", "0x030200", 0),
            PCIDevice("0000:00:1f.2", "8086", "a102", "0x010601"),
        ),
        hypervisor="test:///x (libvirt 9.0.0)",
    )
    status = hostfacts.host_status(
        facts, Load(cpu_percent=120.0, memory_percent=12.345), 3, 2 * 1024**4, "0.1.0", NOW
    ).to_dict()
    assert status["capacity"] == {
        "cpus": 64,
        "memory": "256Gi",
        "disk": "2Ti",
        "gpus": [{"model": "nvidia-a100", "pciAddress": "0000:3b:00.0", "numaNode": 0}],
        "numaCells": [{"id": 0, "cpus": 64, "memory": "256Gi"}],
    }
    assert status["load"]["cpuPercent"] == 100.0, "clamped to the API's range"
    assert status["load"]["memoryPercent"] == 12.35
    assert (status["domains"], status["agentVersion"]) == (3, "0.1.0")
