"""Quota arithmetic: what a VM costs, sums and differences of usage, which hard limit a charge
would pass, and the recount of a namespace's usage from its VMs. Pure.

A charge is a `QuotaAmounts` with every field set: one VM, its vCPUs, memory and GPUs, and one
VM of its flavor. In `status.used` every field is set too (zero, not unset); in `spec.hard` an
unset field means "no limit".
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from kubenova.api import constants
from kubenova.api.flavor import Flavor
from kubenova.api.quantity import Quantity
from kubenova.api.quota import QuotaAmounts
from kubenova.api.vm import VirtualMachine, VMResources

_ZERO = Quantity("0")


def zero() -> QuotaAmounts:
    """Usage of a namespace without VMs."""
    return QuotaAmounts(vms=0, vcpus=0, memory=_ZERO, gpus=0, flavors={})


def resources_of(flavor: Flavor) -> VMResources:
    """The size a VM of `flavor` gets: what the mutating webhook copies into spec.resources."""
    spec = flavor.spec
    gpus: dict[str, int] = {}
    for g in spec.gpus:
        gpus[g.model] = gpus.get(g.model, 0) + g.count
    return VMResources(vcpus=spec.vcpus, memory=spec.memory, disk=spec.disk, gpus=gpus)


def charge_for(flavor_name: str, resources: VMResources) -> QuotaAmounts:
    """What one VM of this flavor and size holds against its namespace's quota."""
    return QuotaAmounts(
        vms=1,
        vcpus=resources.vcpus,
        memory=resources.memory,
        gpus=sum(resources.gpus.values()),
        flavors={flavor_name: 1},
    )


MAX_VM_MEMORY = Quantity("64Ti")
"""The most memory one VM may be charged (beyond any real host)."""


class ChargeError(ValueError):
    """A flavor whose charge would be negative or beyond any real VM."""


def charge_of(flavor: Flavor) -> QuotaAmounts:
    """What one VM of `flavor` is charged, from the flavor alone; every amount non-negative
    and bounded (ChargeError otherwise, naming the flavor's field)."""
    charge = charge_for(flavor.metadata.name, resources_of(flavor))
    name = f"Flavor {flavor.metadata.name}"
    if not 1 <= (charge.vcpus or 0) <= 1024:
        raise ChargeError(f"{name}: spec.vcpus must be 1 to 1024")
    if charge.memory is None or not Quantity("0") < charge.memory <= MAX_VM_MEMORY:
        raise ChargeError(f"{name}: spec.memory must be more than 0 and at most {MAX_VM_MEMORY}")
    if not 0 <= (charge.gpus or 0) <= 64:
        raise ChargeError(f"{name}: spec.gpus must add up to at most 64 devices")
    return charge


@dataclass(frozen=True)
class Price:
    """What a VM of one flavor gets and costs, computed once per version of the flavor.
    Shared between reviews: never modify its models."""

    resources: VMResources
    charge: QuotaAmounts
    charge_text: str
    """`format_charge(charge)`: the quota annotation's value."""
    error: str | None
    """Why `charge_of` refuses the flavor (out of bounds), or None."""


_PRICES: dict[tuple[str, str, str], Price] = {}
_PRICES_KEPT = 1024


def price(flavor: Flavor) -> Price:
    """The flavor's `resources_of`, `charge_for` and `charge_of` verdict at once. Each review
    of a VM needs them, and the Quantity arithmetic behind them was a good part of a review's
    CPU, so they are kept per flavor version (uid and resourceVersion, as the API server
    stores it); a flavor without both is priced afresh every time."""
    meta = flavor.metadata
    key = (meta.name, meta.uid or "", meta.resource_version or "")
    found = _PRICES.get(key) if meta.uid and meta.resource_version else None
    if found is not None:
        return found
    resources = resources_of(flavor)
    charge = charge_for(meta.name, resources)
    try:
        charge_of(flavor)
        error = None
    except ChargeError as e:
        error = str(e)
    out = Price(resources, charge, format_charge(charge), error)
    if meta.uid and meta.resource_version:
        if len(_PRICES) >= _PRICES_KEPT:
            _PRICES.clear()  # old versions of flavors: cheaper to recompute than to track
        _PRICES[key] = out
    return out


def _q(q: Quantity | None) -> Quantity:
    return _ZERO if q is None else q


def add(a: QuotaAmounts, b: QuotaAmounts) -> QuotaAmounts:
    """`a + b`, unset fields counting as zero."""
    flavors = dict(a.flavors)
    for name, n in b.flavors.items():
        flavors[name] = flavors.get(name, 0) + n
    return QuotaAmounts(
        vms=(a.vms or 0) + (b.vms or 0),
        vcpus=(a.vcpus or 0) + (b.vcpus or 0),
        memory=_q(a.memory) + _q(b.memory),
        gpus=(a.gpus or 0) + (b.gpus or 0),
        flavors={k: v for k, v in flavors.items() if v > 0},
    )


def subtract(a: QuotaAmounts, b: QuotaAmounts) -> QuotaAmounts:
    """`a - b`, floored at zero: a release never drives usage negative, even after drift
    (the operator's recount puts it right)."""
    flavors = dict(a.flavors)
    for name, n in b.flavors.items():
        flavors[name] = max(0, flavors.get(name, 0) - n)
    memory = _q(a.memory) - _q(b.memory)
    return QuotaAmounts(
        vms=max(0, (a.vms or 0) - (b.vms or 0)),
        vcpus=max(0, (a.vcpus or 0) - (b.vcpus or 0)),
        memory=memory if memory.value > 0 else _ZERO,
        gpus=max(0, (a.gpus or 0) - (b.gpus or 0)),
        flavors={k: v for k, v in flavors.items() if v > 0},
    )


CHARGE_SETTLE_SECONDS = 30.0
"""How long after a charge its VM may still be unstored: the API server stores an admitted
object right after its webhooks answer, and a webhook may take at most 30 s (timeoutSeconds)."""


def at_least(a: QuotaAmounts, b: QuotaAmounts) -> QuotaAmounts:
    """Each amount the larger of `a`'s and `b`'s (unset counting as zero)."""
    flavors = dict(a.flavors)
    for name, n in b.flavors.items():
        flavors[name] = max(flavors.get(name, 0), n)
    return QuotaAmounts(
        vms=max(a.vms or 0, b.vms or 0),
        vcpus=max(a.vcpus or 0, b.vcpus or 0),
        memory=max(_q(a.memory), _q(b.memory), key=lambda q: q.value),
        gpus=max(a.gpus or 0, b.gpus or 0),
        flavors={k: v for k, v in flavors.items() if v > 0},
    )


def recounted_usage(
    counted: QuotaAmounts, used: QuotaAmounts, last_charge: float | None, now: float
) -> QuotaAmounts:
    """What a recount may write: the usage counted from stored VMs, except that within
    CHARGE_SETTLE_SECONDS of a charge it lowers nothing. An admitted create is charged before
    the API server stores its VM, so a recount in that window counts it out; lowering usage
    then would let the VM run uncharged. Drift down (a create that failed after admission)
    heals at the first recount after the window. Times are seconds since the epoch."""
    if last_charge is not None and now - last_charge < CHARGE_SETTLE_SECONDS:
        return at_least(counted, used)
    return counted


@dataclass(frozen=True)
class Exceeded:
    """One hard limit a charge would pass."""

    resource: str
    """`vms`, `vcpus`, `memory`, `gpus` or `flavors[<name>]`."""
    requested: str
    used: str
    hard: str

    def __str__(self) -> str:
        return (
            f"{self.resource}: requested {self.requested}, used {self.used}, limited to {self.hard}"
        )


def exceeded(hard: QuotaAmounts, used: QuotaAmounts, charge: QuotaAmounts) -> list[Exceeded]:
    """Every limit of `hard` that `used + charge` would pass. As Kubernetes' ResourceQuota, a
    resource the charge does not ask for is never a reason to deny, even when over its limit."""
    out: list[Exceeded] = []
    counts = (
        ("vms", hard.vms, used.vms, charge.vms),
        ("vcpus", hard.vcpus, used.vcpus, charge.vcpus),
        ("gpus", hard.gpus, used.gpus, charge.gpus),
    )
    for name, limit, now, ask in counts:
        if limit is not None and ask and (now or 0) + ask > limit:
            out.append(Exceeded(name, str(ask), str(now or 0), str(limit)))
    if hard.memory is not None and charge.memory is not None and charge.memory.value > 0:
        total = _q(used.memory) + charge.memory
        if hard.memory < total:
            now_mem = str(_q(used.memory))
            out.append(Exceeded("memory", str(charge.memory), now_mem, str(hard.memory)))
    for flavor, ask in sorted(charge.flavors.items()):
        limit = hard.flavors.get(flavor)
        now = used.flavors.get(flavor, 0)
        if limit is not None and ask and now + ask > limit:
            out.append(Exceeded(f"flavors[{flavor}]", str(ask), str(now), str(limit)))
    return out


def holds_charge(vm: VirtualMachine) -> bool:
    """Does this VM still count against its namespace? Every existing VM does, except one
    being deleted whose charge was already released (its quota finalizer is gone)."""
    meta = vm.metadata
    return meta.deletion_timestamp is None or constants.QUOTA_FINALIZER in meta.finalizers


def charge_of_vm(vm: VirtualMachine, flavors: Mapping[str, Flavor]) -> QuotaAmounts:
    """What `vm` holds: the charge recorded in its annotation when there is one (what was
    really charged), else its resources, else its flavor's."""
    recorded = vm.metadata.annotations.get(constants.ANNOTATION_QUOTA_CHARGED)
    if recorded:
        parsed = parse_charge(recorded)
        if parsed is not None:
            return parsed
    resources = vm.spec.resources
    if resources is None:
        flavor = flavors.get(vm.spec.flavor)
        if flavor is None:
            # A VM whose flavor is gone and never got its size: count the VM itself.
            return QuotaAmounts(vms=1, vcpus=0, memory=_ZERO, gpus=0, flavors={vm.spec.flavor: 1})
        resources = resources_of(flavor)
    return charge_for(vm.spec.flavor, resources)


def recount(vms: Iterable[VirtualMachine], flavors: Mapping[str, Flavor]) -> QuotaAmounts:
    """The usage of a namespace recomputed from its VMs: what heals drift."""
    total = zero()
    for vm in vms:
        if holds_charge(vm):
            total = add(total, charge_of_vm(vm, flavors))
    return total


def format_charge(charge: QuotaAmounts) -> str:
    """The annotation value recording a VM's charge (compact JSON, wire names)."""
    return json.dumps(charge.to_dict(), separators=(",", ":"), sort_keys=True)


def parse_charge(text: str) -> QuotaAmounts | None:
    """The charge recorded by `format_charge`, or None when the text is not one."""
    try:
        return QuotaAmounts.model_validate(json.loads(text))
    except ValueError:
        return None


def normalized(used: QuotaAmounts) -> QuotaAmounts:
    """`used` with every field set, as the webhook writes it."""
    return add(zero(), used)


@dataclass(frozen=True)
class Request:
    """One charge waiting in a batch."""

    amount: QuotaAmounts
    dry_run: bool = False


def decide_batch(
    hard: QuotaAmounts, used: QuotaAmounts, requests: Sequence[Request]
) -> tuple[list[list[Exceeded]], QuotaAmounts]:
    """Decide a batch of charges in arrival order against one view of the quota: each is
    admitted if it fits on top of `used` and the admitted ones before it (dry runs are checked
    but take nothing). Returns, per request, the limits it would pass (empty: admitted), and
    the new usage to write with one compare-and-swap."""
    decisions: list[list[Exceeded]] = []
    total = used
    for r in requests:
        over = exceeded(hard, total, r.amount)
        decisions.append(over)
        if not over and not r.dry_run:
            total = add(total, r.amount)
    return decisions, total
