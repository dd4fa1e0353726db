"""Health: no new VMs on cordoned hosts, hosts not Ready, or hosts whose heartbeat is older
than their Lease allows (the operator may not have noticed yet that the agent died). Pure."""

from __future__ import annotations

from kubenova.scheduler.cache import HostEntry
from kubenova.scheduler.explain import Reason
from kubenova.scheduler.plugins.base import CycleState


class Health:
    def filter(self, state: CycleState, host: HostEntry) -> Reason | None:
        info = host.info
        if info.unschedulable:
            return Reason.CORDONED
        if not info.ready:
            return Reason.NOT_READY
        if state.now > host.stale_at:
            return Reason.HEARTBEAT_STALE
        return None
