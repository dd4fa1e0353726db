"""Reading the host from libvirt's XML: NUMA cells from the capabilities, PCI devices (GPUs)
from node devices, and the Host status the agent reports. Pure."""

from __future__ import annotations

import datetime as dt
import xml.etree.ElementTree as ET
from collections.abc import Mapping

from kubenova.api.host import GPUDevice, HostCapacity, HostLoad, HostStatus
from kubenova.api.host import NUMACell as APINUMACell
from kubenova.api.quantity import Quantity
from kubenova.node_agent.hypervisor import HostFacts, Load, NUMACell, PCIDevice

KNOWN_GPUS: Mapping[str, str] = {
    "10de:20b0": "nvidia-a100",
    "10de:20b2": "nvidia-a100",
    "10de:2330": "nvidia-h100",
    "10de:1eb8": "nvidia-t4",
}
"""PCI vendor:product ids and the GPU model names flavors ask for."""


def numa_cells(capabilities_xml: str) -> tuple[NUMACell, ...]:
    root = ET.fromstring(capabilities_xml)
    cells: list[NUMACell] = []
    for cell in root.iterfind("./host/topology/cells/cell"):
        memory = cell.find("memory")
        kib = int(memory.text or 0) if memory is not None else 0
        cpus = cell.find("cpus")
        count = int(cpus.get("num", "0")) if cpus is not None else 0
        cells.append(NUMACell(id=int(cell.get("id", "0")), cpus=count, memory_bytes=kib * 1024))
    return tuple(cells)


def pci_device(nodedev_xml: str) -> PCIDevice | None:
    """The PCI device a node device describes; None for any other kind of device."""
    root = ET.fromstring(nodedev_xml)
    cap = root.find("./capability[@type='pci']")
    if cap is None:
        return None

    def number(tag: str) -> int:
        return int(cap.findtext(tag) or "0", 0)

    bus, slot, function = number("bus"), number("slot"), number("function")
    address = f"{number('domain'):04x}:{bus:02x}:{slot:02x}.{function}"
    vendor = cap.find("vendor")
    product = cap.find("product")
    numa = cap.find("numa")
    return PCIDevice(
        address=address,
        vendor_id=_hex4(vendor.get("id") if vendor is not None else None),
        product_id=_hex4(product.get("id") if product is not None else None),
        device_class=cap.findtext("class") or "",
        numa_node=int(numa.get("node", "0")) if numa is not None else None,
    )


def _hex4(value: str | None) -> str:
    return f"{int(value, 0):04x}" if value else "0000"


def gpu_model(dev: PCIDevice, names: Mapping[str, str] = KNOWN_GPUS) -> str:
    """The model name the scheduler matches against flavors' GPU requests."""
    ident = f"{dev.vendor_id}:{dev.product_id}"
    return names.get(ident, f"pci-{dev.vendor_id}-{dev.product_id}")


def host_status(
    facts: HostFacts,
    load: Load,
    domains: int,
    disk_bytes: int,
    agent_version: str,
    now: dt.datetime,
    gpu_names: Mapping[str, str] = KNOWN_GPUS,
) -> HostStatus:
    """The agent's part of the Host status (the phase is the operator's)."""
    return HostStatus(
        capacity=HostCapacity(
            cpus=facts.cpus,
            memory=Quantity.from_value(facts.memory_bytes),
            disk=Quantity.from_value(disk_bytes),
            gpus=[
                GPUDevice(
                    model=gpu_model(d, gpu_names), pci_address=d.address, numa_node=d.numa_node
                )
                for d in facts.pci_devices
                if d.is_gpu
            ],
            numa_cells=[
                APINUMACell(id=c.id, cpus=c.cpus, memory=Quantity.from_value(c.memory_bytes))
                for c in facts.numa_cells
            ],
        ),
        load=HostLoad(
            cpu_percent=_percent(load.cpu_percent),
            memory_percent=_percent(load.memory_percent),
            reported_at=now,
        ),
        domains=domains,
        hypervisor=facts.hypervisor,
        agent_version=agent_version,
    )


def _percent(v: float) -> float:
    return round(min(100.0, max(0.0, v)), 2)
