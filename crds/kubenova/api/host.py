"""Host: a physical machine as its node agent reports it (capacity read from libvirt, load,
heartbeat) plus what an admin sets (cordon, taints). Cluster-scoped. Pure."""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import ClassVar, Literal

from pydantic import Field

from kubenova.api.meta import Condition, CRDInfo, Model, PrinterColumn, Resource
from kubenova.api.quantity import Quantity
from kubenova.api.text import PlainName


class TaintEffect(StrEnum):
    NO_SCHEDULE = "NoSchedule"
    """No new VM lands here unless it tolerates the taint."""
    NO_EXECUTE = "NoExecute"
    """As NoSchedule, and VMs that do not tolerate it are evicted."""


class Taint(Model):
    """Keeps VMs off the host unless they tolerate it."""

    key: str = Field(min_length=1, max_length=317)
    """The taint key."""
    value: str = Field(default="", max_length=63)
    """The taint value."""
    effect: TaintEffect
    """NoSchedule or NoExecute."""


class HostSpec(Model):
    """What an admin decides about the host."""

    unschedulable: bool = False
    """Cordoned: no new VMs are placed here; running ones stay."""
    taints: list[Taint] = Field(default_factory=list, max_length=32)
    """Taints; VMs need a matching toleration to land here."""


class GPUDevice(Model):
    """A GPU the host can pass through."""

    model: str = Field(min_length=1, max_length=128)
    """The GPU model, e.g. nvidia-a100."""
    pci_address: str = Field(pattern=r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")
    """PCI address, domain:bus:slot.function."""
    numa_node: int | None = Field(default=None, ge=0)
    """The NUMA cell the device is attached to."""


class NUMACell(Model):
    """One NUMA cell of the host."""

    id: int = Field(ge=0)
    """Cell number."""
    cpus: int = Field(ge=0)
    """CPUs in the cell."""
    memory: Quantity
    """Memory in the cell."""


class HostCapacity(Model):
    """Physical resources of the host, as libvirt reports them."""

    cpus: int = Field(default=0, ge=0)
    """Host CPUs (threads)."""
    memory: Quantity = Field(default_factory=lambda: Quantity("0"))
    """Host memory."""
    disk: Quantity = Field(default_factory=lambda: Quantity("0"))
    """Disk for VM overlays."""
    gpus: list[GPUDevice] = Field(default_factory=list)
    """GPUs available for passthrough."""
    numa_cells: list[NUMACell] = Field(default_factory=list)
    """NUMA layout."""


class HostLoad(Model):
    """The latest load report (the scheduler's hot data)."""

    cpu_percent: float = Field(default=0.0, ge=0.0, le=100.0)
    """CPU use of the whole host, 0 to 100."""
    memory_percent: float = Field(default=0.0, ge=0.0, le=100.0)
    """Memory use of the whole host, 0 to 100."""
    reported_at: dt.datetime | None = None
    """When the agent measured it."""


class HostMigration(Model):
    """How other hosts' libvirt reaches this one for live migration."""

    uri: str = Field(default="", max_length=1024)
    """The libvirt URI a source host's libvirtd connects to (peer to peer), e.g.
    qemu+tls://host-7.example/system. Empty: this host takes no migrations."""
    address: str = Field(default="", max_length=256)
    """The address for the migration data stream (tcp://<address>); empty lets libvirt use
    the host name of the URI."""


class HostConsole(Model):
    """Where the kubenova console server reaches this host's agent for serial consoles."""

    address: str = Field(default="", max_length=256, pattern=r"^([A-Za-z0-9.:\[\]-]+:[0-9]{1,5})?$")
    """host:port of the agent's console endpoint (mutual TLS, docs/console.md); empty: this
    host serves no consoles."""


class HostImage(Model):
    """A base image the host's image cache holds, verified and ready to boot from."""

    name: PlainName
    """The VMImage's name."""
    sha256: str = Field(default="", pattern=r"^([0-9a-f]{64})?$")
    """Checksum of the cached file as verified on arrival."""
    size: int = Field(default=0, ge=0)
    """Bytes on disk."""


class HostPhase(StrEnum):
    READY = "Ready"
    NOT_READY = "NotReady"
    UNKNOWN = "Unknown"


class HostStatus(Model):
    """What the agent and the operator observed about the host."""

    phase: HostPhase = HostPhase.UNKNOWN
    """Ready while the heartbeat Lease is fresh; NotReady once it expired."""
    capacity: HostCapacity = Field(default_factory=HostCapacity)
    """Physical resources."""
    load: HostLoad = Field(default_factory=HostLoad)
    """The latest load report."""
    domains: int = Field(default=0, ge=0)
    """libvirt domains on the host."""
    hypervisor: str = Field(default="", max_length=256)
    """libvirt URI and version the agent talks to."""
    agent_version: str = Field(default="", max_length=64)
    """Version of the node agent."""
    migration: HostMigration = Field(default_factory=HostMigration)
    """Where live migrations to this host go."""
    console: HostConsole = Field(default_factory=HostConsole)
    """Where the console server reaches this host's agent."""
    images: list[HostImage] = Field(default_factory=list, max_length=1024)
    """What the host's image cache holds (the scheduler prefers hosts that hold a VM's
    image)."""
    conditions: list[Condition] = Field(default_factory=list)
    """Ready and others."""


class Host(Resource):
    """A physical host running a kubenova agent. Cluster-scoped; created by its agent."""

    crd: ClassVar[CRDInfo] = CRDInfo(
        plural="hosts",
        short_names=("vmhost",),
        scope="Cluster",
        printer_columns=(
            PrinterColumn("PHASE", ".status.phase"),
            PrinterColumn("CPUS", ".status.capacity.cpus", "integer"),
            PrinterColumn("MEMORY", ".status.capacity.memory"),
            PrinterColumn("DOMAINS", ".status.domains", "integer"),
            PrinterColumn("CORDONED", ".spec.unschedulable", "boolean"),
            PrinterColumn("CPU%", ".status.load.cpuPercent", "number", priority=1),
            PrinterColumn("AGE", ".metadata.creationTimestamp", "date"),
        ),
    )

    kind: Literal["Host"] = "Host"
    spec: HostSpec = Field(default_factory=HostSpec)
    """Admin settings: cordon and taints."""
    status: HostStatus = Field(default_factory=HostStatus)
    """Capacity, load and health, written by the agent and the operator."""
