"""The plugin interfaces and the per-cycle state they share. Pure."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from kubenova.scheduler.cache import CapacityCache, HostEntry, PoolState
from kubenova.scheduler.explain import Reason
from kubenova.scheduler.model import VMRequest, Weights


class CycleState:
    """What PreFilters learned about one VM in one cycle; Filters and Scores read it."""

    __slots__ = ("affinity", "anti_affinity", "cache", "now", "pool", "vm")

    def __init__(self, vm: VMRequest, pool: PoolState, cache: CapacityCache, now: float) -> None:
        self.vm = vm
        self.pool = pool
        self.cache = cache
        self.now = now
        self.affinity: list[tuple[str, frozenset[str]]] = []
        """(topology key, domains that hold a VM of the group) per affinity rule with members."""
        self.anti_affinity: list[tuple[str, dict[str, int], int]] = []
        """(topology key, VMs of the group per domain, max per domain) per rule."""


class PreFilter(Protocol):
    def pre_filter(self, state: CycleState) -> Reason | None:
        """Fill `state`; a Reason rejects every host of the pool at once."""


class Filter(Protocol):
    def filter(self, state: CycleState, host: HostEntry) -> Reason | None:
        """None if `host` may take `state.vm`, else why not."""


class Score(Protocol):
    def weight(self, weights: Weights) -> int:
        """Which of the pool's weights multiplies this score."""

    def score(self, state: CycleState, host: HostEntry) -> float:
        """Raw score: higher is better."""

    def normalize(self, scores: Sequence[float]) -> list[float]:
        """Map raw scores to 0..100."""


def min_max(scores: Sequence[float]) -> list[float]:
    """The default NormalizeScore: the worst candidate gets 0, the best 100."""
    lo, hi = min(scores), max(scores)
    if hi - lo < 1e-12:
        return [0.0] * len(scores)
    span = hi - lo
    return [100.0 * (s - lo) / span for s in scores]
