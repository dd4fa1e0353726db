"""Flavor: a named size of VM (vCPUs, memory, disk, GPUs, CPU and memory layout), like Nova's
flavors and KubeVirt's instance types. Cluster-scoped; immutable while VMs use it. Pure."""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar, Literal

from pydantic import Field

from kubenova.api.meta import (
    Condition,
    CRDInfo,
    Model,
    PrinterColumn,
    Resource,
    cel,
)
from kubenova.api.quantity import Quantity

_POSITIVE = cel("quantity(string(self)).isGreaterThan(quantity('0'))", "must be greater than zero")


class HugePageSize(StrEnum):
    SIZE_2MI = "2Mi"
    SIZE_1GI = "1Gi"


class GPURequest(Model):
    """GPUs of one model that each VM of this flavor gets as PCI passthrough devices."""

    model: str = Field(min_length=1, max_length=128)
    """The GPU model as hosts report it, e.g. nvidia-a100."""
    count: int = Field(ge=1, le=16)
    """How many devices of this model each VM gets."""


class FlavorSpec(Model):
    """The size and layout of every VM that names this flavor."""

    vcpus: int = Field(ge=1, le=1024)
    """Virtual CPUs."""
    memory: Quantity = Field(json_schema_extra=_POSITIVE)
    """Guest memory, e.g. 4Gi."""
    disk: Quantity = Field(default_factory=lambda: Quantity("10Gi"))
    """Size of the root disk overlay, e.g. 20Gi."""
    gpus: list[GPURequest] = Field(default_factory=list, max_length=4)
    """GPUs passed through to the guest, by model."""
    huge_pages: HugePageSize | None = None
    """Back guest memory with huge pages of this size (2Mi or 1Gi); unset for normal pages."""
    dedicated_cpus: bool = False
    """Pin each vCPU to its own host CPU (Nova's hw:cpu_policy=dedicated); not over-committed."""
    numa_nodes: int | None = Field(default=None, ge=1, le=8)
    """Spread the guest over this many NUMA nodes; unset lets the hypervisor decide."""
    description: str = Field(default="", max_length=1024)
    """What this flavor is for, shown to users choosing one."""


class FlavorStatus(Model):
    """What the operator observed about this flavor."""

    vm_count: int = Field(default=0, ge=0)
    """How many VirtualMachines use this flavor."""
    observed_generation: int | None = None
    """The metadata.generation this status describes."""
    conditions: list[Condition] = Field(default_factory=list)
    """The flavor's conditions."""


class Flavor(Resource):
    """A named VM size. Cluster-scoped; a flavor in use cannot change."""

    crd: ClassVar[CRDInfo] = CRDInfo(
        plural="flavors",
        short_names=("flv",),
        scope="Cluster",
        printer_columns=(
            PrinterColumn("VCPUS", ".spec.vcpus", "integer"),
            PrinterColumn("MEMORY", ".spec.memory"),
            PrinterColumn("DISK", ".spec.disk"),
            PrinterColumn("VMS", ".status.vmCount", "integer"),
            PrinterColumn("AGE", ".metadata.creationTimestamp", "date"),
        ),
    )

    kind: Literal["Flavor"] = "Flavor"
    spec: FlavorSpec
    """The flavor's size and layout."""
    status: FlavorStatus = Field(default_factory=FlavorStatus)
    """Observed state, written by the operator."""
