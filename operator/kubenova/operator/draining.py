"""Draining a host: for each VM bound to it, how it leaves, by its eviction strategy. Pure.

    Running, LiveMigrate   → a VMMigration (the scheduler picks the target)
    Running, Shutdown      → its agent shuts it down (ACPI, then destroy after the grace);
                             then unbound and started elsewhere from its image, as its
                             owner allowed by choosing Shutdown
    Stopped or Failed      → stays on its host, and the drain is blocked saying why: its disk
                             (the qcow2 overlay over its image) lives on the host and kubenova
                             has no shared storage to move it; unbinding would recreate it
                             from the base image elsewhere. Only a Halted VM with nothing on
                             the host (a kernel boot) is unbound: it moves and stays stopped.
                             A Manual or RerunOnFailure VM the guest powered off would be
                             started again by its new agent, so it stays too.
    LiveMigrate that cannot migrate live (GPUs passed through, `max_attempts` failed
    migrations) → blocked, saying what to do: shutting it down would move it without its disk
    Migrating, Stopping, Scheduled, Starting, being deleted → wait for it to settle

This is KubeVirt's behaviour (a VM that cannot migrate with evictionStrategy LiveMigrate
blocks the node's drain) and Nova's without shared storage (no cold migration of a disk that
cannot move): a drain ends, or says which VMs hold it and what their owners can do.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from kubenova.api import VirtualMachine, constants
from kubenova.api.vm import EvictionStrategy, RunStrategy, VMPhase


class Move(StrEnum):
    MIGRATE = "migrate"
    SHUT_DOWN = "shut-down"
    UNBIND = "unbind"
    WAIT = "wait"
    BLOCKED = "blocked"
    """It cannot leave without losing its disk or being started against its run strategy:
    the drain waits for its owner (the step's `why` says what to do)."""


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

    @property
    def blocked(self) -> list[Step]:
        return [s for s in self.steps if s.move is Move.BLOCKED]

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
    evicted = vm.metadata.annotations.get(constants.ANNOTATION_EVICT) == host
    if phase in (VMPhase.STOPPED, VMPhase.FAILED):
        return _stopped(vm, phase, evicted)
    if phase is VMPhase.UNKNOWN:
        return Step(vm, Move.WAIT, "its host is lost")
    if evicted:
        return Step(vm, Move.WAIT, "shutting down")
    if phase is not VMPhase.RUNNING:
        return Step(vm, Move.WAIT, f"{phase.value}: waiting for it to settle")
    failures = failed_attempts.get(key, 0)
    if vm.spec.eviction_strategy is EvictionStrategy.SHUTDOWN:
        return Step(vm, Move.SHUT_DOWN, "evictionStrategy Shutdown")
    if vm.spec.resources is not None and vm.spec.resources.gpus:
        return Step(vm, Move.BLOCKED, f"passed-through GPUs cannot migrate live; {_ALLOW}")
    if failures >= max_attempts:
        return Step(vm, Move.BLOCKED, f"{failures} live migrations failed; {_ALLOW}")
    return Step(vm, Move.MIGRATE, "evictionStrategy LiveMigrate")


_ALLOW = (
    "set spec.evictionStrategy Shutdown to let the drain restart it elsewhere from its image "
    "(its disk stays behind), or delete it"
)


def _stopped(vm: VirtualMachine, phase: VMPhase, evicted: bool) -> Step:
    if evicted:
        # Shut down by this drain (evictionStrategy Shutdown): its owner chose a restart
        # elsewhere, from its image.
        return Step(vm, Move.UNBIND, f"{phase.value} for the drain: started elsewhere")
    if vm.spec.boot.image is not None:
        return Step(
            vm,
            Move.BLOCKED,
            f"{phase.value} with its disk on this host, which kubenova cannot move: start it "
            "(spec.runStrategy) so it migrates live, or delete it",
        )
    if vm.spec.run_strategy is not RunStrategy.HALTED:
        return Step(
            vm,
            Move.BLOCKED,
            f"{phase.value}; moved, it would start again (runStrategy "
            f"{vm.spec.run_strategy.value}): set spec.runStrategy Halted to move it stopped, "
            "start it, or delete it",
        )
    return Step(vm, Move.UNBIND, f"{phase.value}, Halted, nothing on the host: moved stopped")
