"""Node selector: the host carries every label the VM asks for. Pure."""

from __future__ import annotations

from kubenova.scheduler.cache import HostEntry
from kubenova.scheduler.explain import Reason
from kubenova.scheduler.plugins.base import CycleState


class NodeSelector:
    def filter(self, state: CycleState, host: HostEntry) -> Reason | None:
        selector = state.vm.node_selector
        if not selector:
            return None
        labels = host.info.labels
        for k, v in selector:
            if labels.get(k) != v:
                return Reason.NODE_SELECTOR
        return None
