"""Why a VM does not fit, in one line a user can act on: how many hosts each filter removed,
as Nova's filter scheduler can tell. Pure."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Reason(enum.Enum):
    """Why a filter removed a host. The value is the phrase shown to users."""

    NOT_IN_POOL = "not in pool {pool}"
    POOL_NAMESPACE = "pool {pool} is dedicated to other namespaces"
    NO_POOL = "pool {pool} does not exist"
    INSUFFICIENT_MEMORY = "insufficient memory"
    INSUFFICIENT_CPU = "insufficient cpu"
    INSUFFICIENT_DISK = "insufficient disk"
    INSUFFICIENT_GPU = "insufficient gpu"
    CORDONED = "cordoned"
    NOT_READY = "not ready"
    HEARTBEAT_STALE = "heartbeat stale"
    TAINTED = "untolerated taint"
    NODE_SELECTOR = "node selector mismatch"
    AFFINITY = "affinity rule not met"
    ANTI_AFFINITY = "anti-affinity rule violated"


@dataclass(slots=True)
class Tally:
    """Hosts removed per reason during one cycle."""

    total: int
    pool: str
    counts: dict[Reason, int] = field(default_factory=dict)

    def add(self, reason: Reason, n: int = 1) -> None:
        if n:
            self.counts[reason] = self.counts.get(reason, 0) + n

    def message(self) -> str:
        """E.g. `0/10000 hosts: 9100 insufficient memory, 880 not in pool gpu, 20 cordoned`."""
        parts = sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0].name))
        text = ", ".join(f"{n} {r.value.format(pool=self.pool)}" for r, n in parts)
        return f"0/{self.total} hosts: {text}" if text else f"0/{self.total} hosts"
