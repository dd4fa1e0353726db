"""The hypervisor as the agent sees it: a small protocol and the facts it reports. Pure: the
libvirt implementation lives in `libvirt_driver`, tests may bring their own."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, runtime_checkable


class DomainState(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    SHUTTING_DOWN = "shutting-down"
    SHUTOFF = "shutoff"
    CRASHED = "crashed"
    OTHER = "other"


class StopCause(StrEnum):
    """Why a domain is shut off, from libvirt's state reason."""

    NONE = "none"
    SHUTDOWN = "shutdown"
    """The guest powered off (by itself or on an ACPI request)."""
    DESTROYED = "destroyed"
    CRASHED = "crashed"
    FAILED = "failed"
    OTHER = "other"


@dataclass(frozen=True)
class Owner:
    """The VirtualMachine a domain belongs to, stored in the domain's metadata."""

    namespace: str
    name: str
    uid: str

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Domain:
    """One libvirt domain as observed."""

    name: str
    uuid: str
    state: DomainState
    cause: StopCause = StopCause.NONE
    owner: Owner | None = None
    """None for a domain kubenova did not create."""
    restart_token: str | None = None
    """The last `kubenova.io/restart-requested-at` value this domain was restarted for."""
    serial_log: str | None = None
    """The serial console's log file, if it has one."""

    @property
    def active(self) -> bool:
        return self.state in (DomainState.RUNNING, DomainState.PAUSED, DomainState.SHUTTING_DOWN)


@dataclass(frozen=True)
class NUMACell:
    id: int
    cpus: int
    memory_bytes: int


@dataclass(frozen=True)
class PCIDevice:
    """A PCI device the host could pass through."""

    address: str
    """domain:bus:slot.function, lower-case hex."""
    vendor_id: str
    product_id: str
    device_class: str
    """The PCI class, e.g. 0x030200 for a 3D controller."""
    numa_node: int | None = None

    @property
    def is_gpu(self) -> bool:
        return self.device_class.lower().startswith("0x03")


@dataclass(frozen=True)
class HostFacts:
    """What the hypervisor says about the host's hardware."""

    cpus: int
    memory_bytes: int
    numa_cells: tuple[NUMACell, ...] = ()
    pci_devices: tuple[PCIDevice, ...] = ()
    hypervisor: str = ""


@dataclass(frozen=True)
class Load:
    cpu_percent: float
    memory_percent: float


@dataclass(frozen=True)
class Usage:
    """What the host's domains take, for the load report."""

    running: int
    vcpus: int
    memory_bytes: int
    by_state: dict[DomainState, int] = field(default_factory=dict)


DomainEventHandler = Callable[[str], None]
"""Called with a domain's name when libvirt reports a lifecycle event for it."""


class HypervisorError(RuntimeError):
    """A hypervisor call failed; the message names the call and the domain."""


class Hypervisor(Protocol):
    """The calls the agent makes. Every method may be slow: implementations keep the event
    loop free (threads)."""

    uri: str

    async def open(self, on_event: DomainEventHandler) -> None: ...
    async def close(self) -> None: ...
    async def domains(self) -> list[Domain]: ...
    async def domain(self, name: str) -> Domain | None: ...
    async def define(self, xml: str) -> None: ...
    async def start(self, name: str) -> None: ...
    async def shutdown(self, name: str) -> None: ...
    async def destroy(self, name: str) -> None: ...
    async def undefine(self, name: str) -> None: ...
    async def reboot(self, name: str) -> None: ...
    async def set_restart_token(self, name: str, token: str) -> None: ...
    async def addresses(self, name: str) -> list[str]: ...
    async def host_facts(self) -> HostFacts: ...
    async def cpu_percent(self) -> float | None: ...
    async def usage(self) -> Usage: ...


@dataclass(frozen=True)
class JobProgress:
    """A migration job on the source, as libvirt reports it while it runs."""

    data_total: int | None = None
    data_processed: int | None = None
    data_remaining: int | None = None
    elapsed_ms: int | None = None


@runtime_checkable
class Migrator(Protocol):
    """A hypervisor that can move a running domain live to another host (libvirt's
    peer-to-peer migration); the test:/// driver cannot."""

    async def migrate(self, name: str, dest_uri: str, address: str) -> None:
        """Move domain `name` to the libvirt at `dest_uri` (data over tcp://`address` when
        set); returns when the guest runs there and is gone here."""

    async def job(self, name: str) -> JobProgress | None:
        """The migration job under way for `name`; None when there is none."""

    async def abort_job(self, name: str) -> None:
        """Stop the job under way; the guest keeps running here."""
