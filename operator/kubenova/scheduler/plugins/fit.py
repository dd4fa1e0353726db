"""Fit: the host has room for the VM's vCPUs, memory, disk and GPUs (counted per device and
model), after the pool's over-commit. Pure."""

from __future__ import annotations

from kubenova.scheduler.cache import HostEntry
from kubenova.scheduler.explain import Reason
from kubenova.scheduler.plugins.base import CycleState


class Fit:
    def filter(self, state: CycleState, host: HostEntry) -> Reason | None:
        size = state.vm.size
        if host.alloc_mem - host.used_mem < size.memory_mib:
            return Reason.INSUFFICIENT_MEMORY
        if host.alloc_cpu - host.used_cpu < size.vcpus:
            return Reason.INSUFFICIENT_CPU
        if host.alloc_disk - host.used_disk < size.disk_mib:
            return Reason.INSUFFICIENT_DISK
        if size.gpus:
            free = host.free_gpus
            for model, count in size.gpus:
                if len(free.get(model, ())) < count:
                    return Reason.INSUFFICIENT_GPU
        return None
