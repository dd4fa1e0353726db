"""Scores: pack (fullest host after placement), spread (emptiest), and load-aware (lowest of
the latest load report and a decayed history of peaks). Pure."""

from __future__ import annotations

from collections.abc import Sequence

from kubenova.scheduler.cache import HostEntry
from kubenova.scheduler.model import Weights
from kubenova.scheduler.plugins.base import CycleState, min_max


def utilisation_after(state: CycleState, host: HostEntry) -> float:
    """Mean of CPU and memory use after placing the VM, 0..1 (more when over-committed)."""
    size = state.vm.size
    cpu = (host.used_cpu + size.vcpus) / max(host.alloc_cpu, 1)
    mem = (host.used_mem + size.memory_mib) / max(host.alloc_mem, 1)
    return (cpu + mem) / 2


class Pack:
    def weight(self, weights: Weights) -> int:
        return weights.pack

    def score(self, state: CycleState, host: HostEntry) -> float:
        return utilisation_after(state, host)

    def normalize(self, scores: Sequence[float]) -> list[float]:
        return min_max(scores)


class Spread:
    def weight(self, weights: Weights) -> int:
        return weights.spread

    def score(self, state: CycleState, host: HostEntry) -> float:
        return 1.0 - utilisation_after(state, host)

    def normalize(self, scores: Sequence[float]) -> list[float]:
        return min_max(scores)


class Load:
    def weight(self, weights: Weights) -> int:
        return weights.load

    def __init__(self, hot_share: float = 0.5) -> None:
        self.hot_share = hot_share
        """How much the latest report counts against the decayed peak."""

    def score(self, state: CycleState, host: HostEntry) -> float:
        hot = max(host.load_cpu, host.load_mem)
        cold = state.cache.decayed_peak(host, state.now)
        return 100.0 - (self.hot_share * hot + (1.0 - self.hot_share) * cold)

    def normalize(self, scores: Sequence[float]) -> list[float]:
        return min_max(scores)
