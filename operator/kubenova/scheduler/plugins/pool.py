"""Pool: the VM's pool must admit its namespace (dedicated hosts), and a host must belong to
the pool. The indexed search visits pool members only, so `member` matters to full scans. Pure.
"""

from __future__ import annotations

from kubenova.scheduler.cache import HostEntry
from kubenova.scheduler.explain import Reason
from kubenova.scheduler.plugins.base import CycleState


class PoolAccess:
    def pre_filter(self, state: CycleState) -> Reason | None:
        allowed = state.pool.info.namespaces
        if allowed and state.vm.namespace not in allowed:
            return Reason.POOL_NAMESPACE
        return None


class PoolMember:
    def filter(self, state: CycleState, host: HostEntry) -> Reason | None:
        return None if host.id in state.pool.members else Reason.NOT_IN_POOL
