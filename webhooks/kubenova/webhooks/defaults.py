"""Defaults a new VM gets at admission: its size copied from the flavor, its run strategy, its
pool, a trace id, the domain-cleanup finalizer, and the quota marks (the charge annotation and
the release finalizer); its managedFields are dropped. Pure:
computes the new object from the old; the server turns the difference into a JSON patch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kubenova.api import constants
from kubenova.api.flavor import Flavor
from kubenova.api.pool import ResourcePool
from kubenova.api.quota import QuotaAmounts
from kubenova.api.vm import RunStrategy, VirtualMachine, VMResources
from kubenova.quota import arithmetic


def pick_pool(namespace: str, pools: Sequence[ResourcePool]) -> str | None:
    """The pool of a VM that names none: the one pool dedicated to its namespace, else the
    default pool when it exists, else none (the scheduler then considers every host)."""
    dedicated = sorted(p.metadata.name for p in pools if namespace in p.spec.namespaces)
    if len(dedicated) == 1:
        return dedicated[0]
    if any(p.metadata.name == constants.DEFAULT_POOL and not p.spec.namespaces for p in pools):
        return constants.DEFAULT_POOL
    return None


@dataclass(frozen=True)
class VMDefaults:
    resources: VMResources | None
    pool: str | None
    run_strategy: RunStrategy
    charge: QuotaAmounts | None
    charge_text: str | None = None
    """`charge` as the annotation records it (computed from `charge` when not given)."""


def vm_defaults(
    vm: VirtualMachine, flavor: Flavor | None, pools: Sequence[ResourcePool]
) -> VMDefaults:
    """What a new VM is given. Resources always come from the flavor (the flavor is the
    authority on size; a size the user wrote is replaced)."""
    pool = vm.spec.pool or pick_pool(vm.metadata.namespace or "", pools)
    strategy = vm.spec.run_strategy or RunStrategy.ALWAYS
    if flavor is None:
        return VMDefaults(None, pool, strategy, None)
    p = arithmetic.price(flavor)
    if flavor.metadata.name != vm.spec.flavor:  # a flavor passed under another name
        charge = arithmetic.charge_for(vm.spec.flavor, p.resources)
        return VMDefaults(p.resources, pool, strategy, charge)
    return VMDefaults(p.resources, pool, strategy, p.charge, p.charge_text)


def apply_vm_defaults(raw: dict[str, Any], d: VMDefaults, trace_id: str) -> dict[str, Any]:
    """`raw` (the VM as sent) with the defaults and marks in place."""
    # Copy only what changes (spec, metadata, annotations, finalizers): a deep copy of the
    # whole VM was the largest cost of a mutating review.
    out = dict(raw)
    spec = out["spec"] = dict(raw.get("spec") or {})
    if d.resources is not None:
        spec["resources"] = d.resources.to_dict()
    if d.pool is not None and not spec.get("pool"):
        spec["pool"] = d.pool
    spec.setdefault("runStrategy", str(d.run_strategy))
    meta = out["metadata"] = dict(raw.get("metadata") or {})
    annotations = dict(meta.get("annotations") or {})
    annotations.setdefault(constants.ANNOTATION_TRACE_ID, trace_id)
    if d.charge is not None:
        annotations[constants.ANNOTATION_QUOTA_CHARGED] = d.charge_text or arithmetic.format_charge(
            d.charge
        )
    else:
        annotations.pop(constants.ANNOTATION_QUOTA_CHARGED, None)
    meta["annotations"] = annotations
    # No field ownership is kept for a VM: the API server skips its bookkeeping on every later
    # write (a status write of the operator or an agent, a user's patch) when the object has
    # none; without it the API server's CPU per bind fell from 4.41 to 2.62 ms net at 1,000
    # hosts (docs/benchmarks.md). A user's server-side apply starts tracking again.
    meta.pop("managedFields", None)
    finalizers = list(meta.get("finalizers") or [])
    # Given here, at create, so the operator's bind is one status write with nothing to add
    # (a VM created while no webhook ran gets it from the operator when bound).
    if constants.VM_FINALIZER not in finalizers:
        finalizers.append(constants.VM_FINALIZER)
    if d.charge is not None and constants.QUOTA_FINALIZER not in finalizers:
        finalizers.append(constants.QUOTA_FINALIZER)
    if finalizers:
        meta["finalizers"] = finalizers
    return out
