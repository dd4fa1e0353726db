"""Taints and tolerations: every taint on the host must be tolerated by the VM. Pure."""

from __future__ import annotations

from kubenova.scheduler.cache import HostEntry
from kubenova.scheduler.explain import Reason
from kubenova.scheduler.plugins.base import CycleState


class Taints:
    def filter(self, state: CycleState, host: HostEntry) -> Reason | None:
        taints = host.info.taints
        if not taints:
            return None
        tolerations = state.vm.tolerations
        for t in taints:
            if not any(tol.tolerates(t) for tol in tolerations):
                return Reason.TAINTED
        return None
