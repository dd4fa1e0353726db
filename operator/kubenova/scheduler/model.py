"""The scheduler's own plain types, in integer units: vCPUs, MiB of memory and disk, seconds
from the injected clock. Slotted and cheap to read in the hot path; `adapt` builds them from
the API models."""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

Clock = Callable[[], float]
"""Monotonic-ish seconds; the operator passes `time.monotonic` or a fake in tests."""

DEFAULT_POOL = "general"
NO_IMAGES: Mapping[str, int] = MappingProxyType({})
"""One shared empty image map: most hosts' caches are empty or unreported (64 B a host)."""


class SelectorOp(enum.Enum):
    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    op: SelectorOp
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        value = labels.get(self.key)
        if self.op is SelectorOp.IN:
            return value is not None and value in self.values
        if self.op is SelectorOp.NOT_IN:
            return value is None or value not in self.values
        if self.op is SelectorOp.EXISTS:
            return value is not None
        return value is None


@dataclass(frozen=True, slots=True)
class Selector:
    """matchLabels and matchExpressions, all of which must hold; empty selects everything."""

    match_labels: tuple[tuple[str, str], ...] = ()
    expressions: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        for k, v in self.match_labels:
            if labels.get(k) != v:
                return False
        return all(r.matches(labels) for r in self.expressions)


class TaintEffect(enum.Enum):
    NO_SCHEDULE = "NoSchedule"
    NO_EXECUTE = "NoExecute"


@dataclass(frozen=True, slots=True)
class Taint:
    key: str
    value: str = ""
    effect: TaintEffect = TaintEffect.NO_SCHEDULE


@dataclass(frozen=True, slots=True)
class Toleration:
    key: str
    exists: bool = False
    """True for operator Exists (any value); False for Equal."""
    value: str = ""

    def tolerates(self, taint: Taint) -> bool:
        return self.key == taint.key and (self.exists or self.value == taint.value)


@dataclass(frozen=True, slots=True)
class GPU:
    model: str
    pci_address: str


@dataclass(frozen=True, slots=True)
class HostInfo:
    """A host as the scheduler sees it; replaced whole on every change."""

    name: str
    cpus: int
    memory_mib: int
    disk_mib: int
    labels: Mapping[str, str] = field(default_factory=dict)
    gpus: tuple[GPU, ...] = ()
    unschedulable: bool = False
    taints: tuple[Taint, ...] = ()
    ready: bool = True
    heartbeat_at: float = 0.0
    """Clock time of the last heartbeat the operator saw (Lease renewal)."""
    heartbeat_max_age: float = 40.0
    """Seconds after `heartbeat_at` at which the host stops taking VMs: its Lease's duration,
    the age at which its agent itself declares the heartbeat expired."""
    images: Mapping[str, int] = field(default_factory=lambda: NO_IMAGES)
    """Images the host's image cache holds: name → size in MiB (rounded up)."""


@dataclass(frozen=True, slots=True)
class Size:
    """What one VM takes from a host."""

    vcpus: int
    memory_mib: int
    disk_mib: int
    gpus: tuple[tuple[str, int], ...] = ()
    """(model, count) pairs, sorted by model."""

    def fits_in(self, other: Size) -> bool:
        if (
            self.vcpus > other.vcpus
            or self.memory_mib > other.memory_mib
            or self.disk_mib > other.disk_mib
        ):
            return False
        theirs = dict(other.gpus)
        return all(theirs.get(m, 0) >= n for m, n in self.gpus)


@dataclass(frozen=True, slots=True)
class FlavorInfo:
    name: str
    size: Size


@dataclass(frozen=True, slots=True)
class GroupRule:
    group: str
    topology_key: str
    max_per_domain: int = 1


@dataclass(frozen=True, slots=True)
class VMRequest:
    """A VM to place. `key` is namespace/name, unique in the cluster."""

    key: str
    namespace: str
    flavor: str
    size: Size
    pool: str = DEFAULT_POOL
    priority: int = 0
    node_selector: tuple[tuple[str, str], ...] = ()
    groups: tuple[str, ...] = ()
    affinity: tuple[GroupRule, ...] = ()
    anti_affinity: tuple[GroupRule, ...] = ()
    tolerations: tuple[Toleration, ...] = ()
    created_at: float = 0.0
    image: str | None = None
    """The base image it boots (spec.boot.image), for image locality."""


@dataclass(frozen=True, slots=True)
class Weights:
    pack: int = 1
    spread: int = 0
    load: int = 0
    image: int = 1


@dataclass(frozen=True, slots=True)
class RebalanceSettings:
    enabled: bool = False
    cpu_threshold: float = 80.0
    memory_threshold: float = 85.0
    max_migrations_per_hour: int = 10


@dataclass(frozen=True, slots=True)
class PoolInfo:
    name: str
    selector: Selector = Selector()
    cpu_ratio: float = 1.0
    memory_ratio: float = 1.0
    weights: Weights = Weights()
    namespaces: frozenset[str] = frozenset()
    """Empty: any namespace; else only these (dedicated hosts)."""
    reservations: tuple[tuple[str, int], ...] = ()
    """(flavor, count) pairs."""
    rebalance: RebalanceSettings = RebalanceSettings()
