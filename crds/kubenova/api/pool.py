"""ResourcePool: a logical pool of hosts selected by labels (Nova's host aggregates, the seed's
tag inverted index), with its over-commit, placement policy, reservations for popular flavors
and re-balance settings. Cluster-scoped. Pure."""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar, Literal

from pydantic import Field

from kubenova.api.meta import (
    Condition,
    CRDInfo,
    LabelSelector,
    Model,
    PrinterColumn,
    Resource,
)
from kubenova.api.quantity import Quantity
from kubenova.api.text import NetworkName


class PlacementPolicy(StrEnum):
    PACK = "Pack"
    """Fill the fullest host that fits first (fewer hosts in use, room for big VMs)."""
    SPREAD = "Spread"
    """Prefer the emptiest host (smaller blast radius, less noise)."""
    LOAD_AWARE = "LoadAware"
    """Prefer hosts whose measured load, now and at recent peaks, is lowest."""


class Overcommit(Model):
    """How far allocations may exceed physical capacity, as Nova's allocation ratios."""

    cpu: float = Field(default=1.0, ge=1.0, le=64.0)
    """vCPUs allocatable per host CPU."""
    memory: float = Field(default=1.0, ge=1.0, le=4.0)
    """Guest memory allocatable per byte of host memory."""


class ScoreWeights(Model):
    """Weights of the score plugins for this pool; 0 turns a plugin off."""

    pack: int = Field(default=1, ge=0, le=100)
    """Weight of the bin-packing score."""
    spread: int = Field(default=0, ge=0, le=100)
    """Weight of the spreading score."""
    load: int = Field(default=0, ge=0, le=100)
    """Weight of the load-aware score (hot and cold data)."""
    image: int = Field(default=1, ge=0, le=100)
    """Weight of the image-locality score: hosts whose image cache already holds the VM's
    spec.boot.image (kube-scheduler's ImageLocality)."""


class Reservation(Model):
    """Keep room for this many VMs of one flavor (the seed's pre-allocation of popular sizes)."""

    flavor: str = Field(min_length=1, max_length=253)
    """The flavor to keep room for."""
    count: int = Field(ge=1, le=10000)
    """How many VMs of that flavor must always fit."""


class PeakWindow(Model):
    """A daily window, in UTC, in which re-balance watches hosts."""

    start: str = Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
    """Start time, HH:MM."""
    end: str = Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
    """End time, HH:MM; before start means the window crosses midnight."""


class Rebalance(Model):
    """Load-based re-balance by live migration."""

    enabled: bool = False
    """Whether the re-balance controller acts on this pool."""
    cpu_threshold_percent: int = Field(default=80, ge=1, le=100)
    """A host above this CPU use is hot."""
    memory_threshold_percent: int = Field(default=85, ge=1, le=100)
    """A host above this memory use is hot."""
    max_migrations_per_hour: int = Field(default=10, ge=0, le=1000)
    """The migration budget."""
    peak_windows: list[PeakWindow] = Field(default_factory=list, max_length=8)
    """When to watch; empty means always."""


class ResourcePoolSpec(Model):
    """Which hosts form the pool and how VMs are placed on them."""

    host_selector: LabelSelector = Field(default_factory=LabelSelector)
    """Host labels that put a host in this pool."""
    overcommit: Overcommit = Field(default_factory=Overcommit)
    """CPU and memory over-commit ratios."""
    placement_policy: PlacementPolicy = PlacementPolicy.PACK
    """Pack, Spread or LoadAware; sets the default score weights."""
    score_weights: ScoreWeights | None = None
    """Explicit weights, overriding the policy's defaults."""
    namespaces: list[str] = Field(default_factory=list, max_length=256)
    """If set, only VMs in these namespaces may use the pool (dedicated hosts)."""
    reservations: list[Reservation] = Field(
        default_factory=list,
        max_length=32,
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["flavor"],
        },
    )
    """Room kept free for popular flavors; other flavors cannot use it."""
    rebalance: Rebalance = Field(default_factory=Rebalance)
    """Re-balance settings."""
    networks: list[NetworkName] = Field(
        default_factory=list, max_length=64, json_schema_extra={"x-kubernetes-list-type": "set"}
    )
    """The host networks (libvirt networks or bridges) this pool's VMs may attach to; a VM
    naming any other is refused. Empty: its VMs may have no network interface."""


class PoolResources(Model):
    """An amount of pool resources."""

    vcpus: int = Field(default=0, ge=0)
    """Virtual CPUs (after over-commit for capacity)."""
    memory: Quantity = Field(default_factory=lambda: Quantity("0"))
    """Memory (after over-commit for capacity)."""
    disk: Quantity = Field(default_factory=lambda: Quantity("0"))
    """Disk."""
    gpus: int = Field(default=0, ge=0)
    """GPU devices."""


class FlavorFit(Model):
    """How many more VMs of a flavor the pool can take now."""

    flavor: str
    """The flavor."""
    count: int = Field(ge=0)
    """VMs of it that still fit, counting its reservations."""


class ResourcePoolStatus(Model):
    """What the operator observed about the pool."""

    hosts: int = Field(default=0, ge=0)
    """Hosts whose labels match."""
    ready_hosts: int = Field(default=0, ge=0)
    """Of those, hosts with a fresh heartbeat and not cordoned."""
    capacity: PoolResources = Field(default_factory=PoolResources)
    """Total allocatable resources of the ready hosts."""
    allocated: PoolResources = Field(default_factory=PoolResources)
    """Resources held by VMs."""
    reserved: PoolResources = Field(default_factory=PoolResources)
    """Resources held back for reservations."""
    available: list[FlavorFit] = Field(default_factory=list)
    """How many more VMs of each flavor fit."""
    observed_generation: int | None = None
    """The metadata.generation this status describes."""
    conditions: list[Condition] = Field(default_factory=list)
    """The pool's conditions."""


class ResourcePool(Resource):
    """A logical pool of hosts chosen by labels. Cluster-scoped."""

    crd: ClassVar[CRDInfo] = CRDInfo(
        plural="resourcepools",
        short_names=("pool", "pools"),
        scope="Cluster",
        printer_columns=(
            PrinterColumn("POLICY", ".spec.placementPolicy"),
            PrinterColumn("HOSTS", ".status.hosts", "integer"),
            PrinterColumn("READY", ".status.readyHosts", "integer"),
            PrinterColumn("VCPUS", ".status.capacity.vcpus", "integer"),
            PrinterColumn("ALLOCATED", ".status.allocated.vcpus", "integer"),
            PrinterColumn("AGE", ".metadata.creationTimestamp", "date"),
        ),
    )

    kind: Literal["ResourcePool"] = "ResourcePool"
    spec: ResourcePoolSpec
    """Which hosts and how to place on them."""
    status: ResourcePoolStatus = Field(default_factory=ResourcePoolStatus)
    """Observed state, written by the operator."""
