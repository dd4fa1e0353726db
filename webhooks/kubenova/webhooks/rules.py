"""Validation the CRD schema cannot express: references to other objects (flavor, pool, VM),
fields that must not change once a VM is scheduled, flavors in use, label selector syntax, one
quota per namespace. Pure: the caller looks the other objects up and passes them in.

Every problem names the field and says what to do; `message()` prefixes the object.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from kubenova.api import constants
from kubenova.api.flavor import Flavor
from kubenova.api.meta import LabelSelector, SelectorOperator
from kubenova.api.migration import VMMigration
from kubenova.api.pool import ResourcePool
from kubenova.api.quota import QuotaAmounts
from kubenova.api.text import control_character
from kubenova.api.vm import VirtualMachine, VMPhase, VMResources
from kubenova.quota import arithmetic

REASON_INVALID = "Invalid"
"""Denial reason (and metric label) of a validation failure."""

_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")

FIXED_ONCE_SCHEDULED = ("pool", "boot", "placement", "networks")
"""VM spec fields the bound host depends on; changing them would need a new placement."""


@dataclass(frozen=True)
class Problem:
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


def message(who: str, problems: Sequence[Problem]) -> str:
    """One line naming the object and every problem."""
    return f"{who}: " + "; ".join(str(p) for p in problems)


def _choices(names: Collection[str], kind: str) -> str:
    if not names:
        return f"no {kind} exists yet; create one first"
    shown = ", ".join(sorted(names)[:8])
    more = "" if len(names) <= 8 else f" and {len(names) - 8} more"
    return f"use one of {shown}{more} (kubectl get {kind})"


# -- VirtualMachine --------------------------------------------------------------------------


def vm_create(
    vm: VirtualMachine,
    flavor: Flavor | None,
    pool: ResourcePool | None,
    flavor_names: Collection[str],
    pool_names: Collection[str],
) -> list[Problem]:
    """A new VM's flavor and pool exist and the pool admits its namespace. `flavor` and `pool`
    are the objects its spec names (None when missing)."""
    problems: list[Problem] = []
    if flavor is None:
        problems.append(
            Problem(
                "spec.flavor",
                f"flavor {vm.spec.flavor!r} does not exist; {_choices(flavor_names, 'flavors')}",
            )
        )
    if vm.spec.pool is not None:
        if pool is None:
            problems.append(
                Problem(
                    "spec.pool",
                    f"pool {vm.spec.pool!r} does not exist; "
                    f"{_choices(pool_names, 'resourcepools')}",
                )
            )
        elif pool.spec.namespaces and vm.metadata.namespace not in pool.spec.namespaces:
            problems.append(
                Problem(
                    "spec.pool",
                    f"pool {vm.spec.pool!r} is dedicated to namespaces "
                    f"{', '.join(pool.spec.namespaces)}; choose another pool or ask an admin "
                    f"to add {vm.metadata.namespace!r} to its spec.namespaces",
                )
            )
    if vm.spec.pool is None or pool is not None:
        problems += host_inputs(vm, pool)
    return problems


XML_ANNOTATIONS = (constants.ANNOTATION_TRACE_ID, constants.ANNOTATION_RESTART_REQUESTED)
"""Annotations whose values the agent writes into the domain XML."""


def host_inputs(
    vm: VirtualMachine, pool: ResourcePool | None, old: VirtualMachine | None = None
) -> list[Problem]:
    """What the VM asks of its host that its pool must allow: every network one the pool lists
    in spec.networks; and annotations the domain XML carries free of control characters. On an
    update (`old`), only what changed is checked, so a pool narrowed later does not freeze its
    VMs. `pool` is the VM's pool (None: it has none)."""
    problems: list[Problem] = []
    moved = old is None or (old.spec.networks, old.spec.pool) != (vm.spec.networks, vm.spec.pool)
    allowed = pool.spec.networks if pool is not None else []
    for i, nic in enumerate(vm.spec.networks if moved else []):
        if nic.network in allowed:
            continue
        if pool is None:
            why = (
                f"pool {vm.spec.pool!r} does not exist"
                if vm.spec.pool
                else "the VM has no pool, and only a ResourcePool's spec.networks allows one"
            )
            fix = "set spec.pool to a pool that lists it"
        elif not allowed:
            why = f"pool {pool.metadata.name!r} allows no networks (its spec.networks is empty)"
            fix = "ask an admin to list the host networks its VMs may use"
        else:
            why = f"pool {pool.metadata.name!r} allows only {', '.join(sorted(allowed))}"
            fix = "use one of those, or ask an admin to add it to the pool's spec.networks"
        problems.append(
            Problem(f"spec.networks[{i}].network", f"network {nic.network!r}: {why}; {fix}")
        )
    for key in XML_ANNOTATIONS:
        value = vm.metadata.annotations.get(key)
        if value is None or (old is not None and old.metadata.annotations.get(key) == value):
            continue
        bad = control_character(value)
        if bad:
            problems.append(
                Problem(
                    f"metadata.annotations[{key}]",
                    f"contains the control character {bad}; use printable text only",
                )
            )
    return problems


def quota_marks(
    vm: VirtualMachine, charge: QuotaAmounts, size: VMResources, charge_text: str | None = None
) -> list[Problem]:
    """The charge annotation and spec.resources the mutating webhook wrote from the flavor,
    unchanged: a VM never brings its own price or size. They differ only when the review did
    not come through the mutating webhook, or the flavor changed in between. `charge_text`
    is `format_charge(charge)` when the caller has it already."""
    problems: list[Problem] = []
    expected = charge_text or arithmetic.format_charge(charge)
    key = constants.ANNOTATION_QUOTA_CHARGED
    recorded = vm.metadata.annotations.get(key)
    if recorded is None:
        problems.append(
            Problem(
                f"metadata.annotations[{key}]",
                f"is missing: kubenova's mutating webhook sets it from flavor {vm.spec.flavor!r} "
                "(the flavor may have appeared meanwhile); create the VM again",
            )
        )
    elif recorded != expected:
        problems.append(
            Problem(
                f"metadata.annotations[{key}]",
                f"is set by kubenova from flavor {vm.spec.flavor!r} (to "
                f"{expected}), never by the VM; remove it and create "
                "the VM again",
            )
        )
    if vm.spec.resources != size:
        problems.append(
            Problem(
                "spec.resources",
                f"is copied from flavor {vm.spec.flavor!r} by kubenova; remove it and create "
                "the VM again",
            )
        )
    return problems


def is_scheduled(vm: VirtualMachine) -> bool:
    return vm.status.host is not None or vm.status.phase not in (VMPhase.PENDING,)


def vm_update(old: VirtualMachine, new: VirtualMachine) -> list[Problem]:
    """What may not change on an existing VM: its flavor (the quota charge and the resources
    copied from it depend on it), once it is scheduled the fields its placement depends on,
    and the quota marks only the webhook sets."""
    problems: list[Problem] = []
    if new.spec.flavor != old.spec.flavor:
        problems.append(
            Problem(
                "spec.flavor",
                f"cannot change from {old.spec.flavor!r} to {new.spec.flavor!r}; "
                "create a new VM with the new flavor instead",
            )
        )
    if old.spec.resources is not None and new.spec.resources != old.spec.resources:
        problems.append(
            Problem(
                "spec.resources",
                "is copied from the flavor at creation and cannot change or be removed; "
                "leave it out of your change, or create a new VM",
            )
        )
    if is_scheduled(old):
        where = f"host {old.status.host}" if old.status.host else f"phase {old.status.phase}"
        for name in FIXED_ONCE_SCHEDULED:
            if getattr(new.spec, name) != getattr(old.spec, name):
                problems.append(
                    Problem(
                        f"spec.{_camel(name)}",
                        f"cannot change once the VM is scheduled ({where}); "
                        "create a new VM, or migrate it with a VMMigration",
                    )
                )
    key = constants.ANNOTATION_QUOTA_CHARGED
    before, after = old.metadata.annotations.get(key), new.metadata.annotations.get(key)
    if after is not None and after != before:
        problems.append(
            Problem(
                f"metadata.annotations[{key}]",
                "is set by the admission webhook only; remove it from your change",
            )
        )
    fin = constants.QUOTA_FINALIZER
    if fin in new.metadata.finalizers and fin not in old.metadata.finalizers:
        problems.append(
            Problem(
                "metadata.finalizers",
                f"{fin} is added by the admission webhook only; remove it from your change",
            )
        )
    return problems


def spec_changed(old: VirtualMachine, new: VirtualMachine) -> bool:
    """A user's change (rate limited), as opposed to controllers' metadata bookkeeping."""
    return old.spec != new.spec


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


# -- Flavor ----------------------------------------------------------------------------------


def flavor_change(old: Flavor, new: Flavor | None, users: Sequence[str]) -> list[Problem]:
    """A flavor used by VMs (`users`, as namespace/name) cannot change or be deleted."""
    if not users or (new is not None and new.spec == old.spec):
        return []
    shown = ", ".join(sorted(users)[:5]) + ("" if len(users) <= 5 else ", ...")
    what = "cannot be deleted" if new is None else "cannot change"
    return [
        Problem(
            "spec" if new is not None else "metadata.name",
            f"{what} while {len(users)} VM(s) use it ({shown}); create a new flavor instead",
        )
    ]


# -- ResourcePool ----------------------------------------------------------------------------


def label_key_problem(key: str) -> str | None:
    """Why `key` is not a Kubernetes label key, or None."""
    prefix, slash, name = key.rpartition("/")
    if slash and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        return f"prefix {prefix!r} of {key!r} must be a DNS subdomain (lower case, dots)"
    if not name or len(name) > 63 or not _NAME.match(name):
        return (
            f"{key!r} is not a label key: the name part needs 1-63 letters, digits, '-', '_' "
            "or '.', starting and ending with a letter or digit"
        )
    return None


def label_value_problem(value: str) -> str | None:
    """Why `value` is not a Kubernetes label value, or None."""
    if value == "" or (len(value) <= 63 and _NAME.match(value)):
        return None
    return (
        f"{value!r} is not a label value: up to 63 letters, digits, '-', '_' or '.', "
        "starting and ending with a letter or digit"
    )


def selector(sel: LabelSelector, field: str) -> list[Problem]:
    problems: list[Problem] = []
    for key, value in sel.match_labels.items():
        bad = label_key_problem(key) or label_value_problem(value)
        if bad:
            problems.append(Problem(f"{field}.matchLabels[{key}]", bad))
    seen: set[tuple[str, SelectorOperator]] = set()
    for i, req in enumerate(sel.match_expressions):
        where = f"{field}.matchExpressions[{i}]"
        bad = label_key_problem(req.key)
        if bad:
            problems.append(Problem(f"{where}.key", bad))
        for value in req.values:
            bad = label_value_problem(value)
            if bad:
                problems.append(Problem(f"{where}.values", bad))
        if (req.key, req.operator) in seen:
            problems.append(
                Problem(where, f"repeats {req.operator} on {req.key!r}; merge the two terms")
            )
        seen.add((req.key, req.operator))
        if req.key in sel.match_labels and req.operator == SelectorOperator.DOES_NOT_EXIST:
            problems.append(
                Problem(
                    where,
                    f"{req.key!r} must not exist but matchLabels requires it: "
                    "the pool could never select a host; drop one of the two",
                )
            )
    return problems


def pool(p: ResourcePool, flavor_names: Collection[str]) -> list[Problem]:
    """A pool's host selector is a valid label selector and its reservations name flavors."""
    problems = selector(p.spec.host_selector, "spec.hostSelector")
    for i, r in enumerate(p.spec.reservations):
        if r.flavor not in flavor_names:
            problems.append(
                Problem(
                    f"spec.reservations[{i}].flavor",
                    f"flavor {r.flavor!r} does not exist; {_choices(flavor_names, 'flavors')}",
                )
            )
    return problems


# -- VMQuota and VMMigration -----------------------------------------------------------------


def quota_create(name: str, others: Collection[str]) -> list[Problem]:
    """One VMQuota per namespace: the webhook charges exactly one object atomically."""
    others = [o for o in others if o != name]
    if not others:
        return []
    return [
        Problem(
            "metadata.name",
            f"this namespace already has VMQuota {sorted(others)[0]!r}; edit its spec.hard "
            "instead of adding a second quota",
        )
    ]


def migration_create(m: VMMigration, vm: VirtualMachine | None) -> list[Problem]:
    """A migration names an existing VM that is not being deleted."""
    if vm is None:
        return [
            Problem(
                "spec.vmName",
                f"VirtualMachine {m.spec.vm_name!r} does not exist in namespace "
                f"{m.metadata.namespace}; check the name with kubectl get vm",
            )
        ]
    if vm.metadata.deletion_timestamp is not None:
        return [Problem("spec.vmName", f"VirtualMachine {m.spec.vm_name!r} is being deleted")]
    return []
