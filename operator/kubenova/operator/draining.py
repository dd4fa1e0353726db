"""Draining a host: for each VM bound to it, how it leaves, by its eviction strategy. Pure.

    Running, LiveMigrate   → a VMMigration (the scheduler picks the target)
    Running, Shutdown      → its agent shuts it down (ACPI, then destroy after the grace)
    Stopped or Failed      → unbound: back to Pending, placed elsewhere, started there if its
                             run strategy says so
    Migrating, Stopping, Scheduled, Starting, being deleted → wait for it to settle

A VM whose live migrations failed `max_attempts` times leaves by shutting down instead, so a
drain always ends. A VM with passed-through GPUs cannot migrate live and shuts down."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from kubenova.api import VirtualMachine, constants
from kubenova.api.vm import EvictionStrategy, VMPhase


class Move(StrEnum):
    MIGRATE = "migrate"
    SHUT_DOWN = "shut-down"
    UNBIND = "unbind"
    WAIT = "wait"


@dataclass(frozen=True)
class Step:
    vm: VirtualMachine
    move: Move
    why: str


@dataclass(frozen=True)
class Plan:
    steps: tuple[Step, ...]

    @property
    def drained(self) -> bool:
        return not self.steps

    def of(self, move: Move) -> list[VirtualMachine]:
        return [s.vm for s in self.steps if s.move is move]

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for s in self.steps:
            counts[s.move.value] = counts.get(s.move.value, 0) + 1
        return ", ".join(f"{n} {m}" for m, n in sorted(counts.items())) or "no VMs left"


def vm_key(vm: VirtualMachine) -> str:
    return f"{vm.metadata.namespace or 'default'}/{vm.metadata.name}"


def plan(
    host: str,
    vms: Iterable[VirtualMachine],
    migrating: set[str],
    failed_attempts: Mapping[str, int],
    max_attempts: int = 3,
) -> Plan:
    """The next move of every VM bound to `host`. `migrating`: keys of VMs with a VMMigration
    in flight; `failed_attempts`: failed drain migrations per VM key."""
    steps = []
    for vm in sorted(vms, key=vm_key):
        steps.append(_step(host, vm, migrating, failed_attempts, max_attempts))
    return Plan(tuple(steps))


def _step(
    host: str,
    vm: VirtualMachine,
    migrating: set[str],
    failed_attempts: Mapping[str, int],
    max_attempts: int,
) -> Step:
    key = vm_key(vm)
    phase = vm.status.phase
    if vm.metadata.deletion_timestamp is not None:
        return Step(vm, Move.WAIT, "being deleted")
    if key in migrating or phase is VMPhase.MIGRATING:
        return Step(vm, Move.WAIT, "migrating")
    if phase in (VMPhase.STOPPED, VMPhase.FAILED):
        return Step(vm, Move.UNBIND, f"{phase.value}: placed elsewhere")
    if phase is VMPhase.UNKNOWN:
        return Step(vm, Move.WAIT, "its host is lost")
    shutting_down = vm.metadata.annotations.get(constants.ANNOTATION_EVICT) == host
    if shutting_down:
        return Step(vm, Move.WAIT, "shutting down")
    if phase is not VMPhase.RUNNING:
        return Step(vm, Move.WAIT, f"{phase.value}: waiting for it to settle")
    failures = failed_attempts.get(key, 0)
    if vm.spec.eviction_strategy is EvictionStrategy.SHUTDOWN:
        return Step(vm, Move.SHUT_DOWN, "evictionStrategy Shutdown")
    if vm.spec.resources is not None and vm.spec.resources.gpus:
        return Step(vm, Move.SHUT_DOWN, "passed-through GPUs cannot migrate live")
    if failures >= max_attempts:
        return Step(vm, Move.SHUT_DOWN, f"{failures} live migrations failed")
    return Step(vm, Move.MIGRATE, "evictionStrategy LiveMigrate")
