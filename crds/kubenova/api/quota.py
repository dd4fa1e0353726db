"""VMQuota: per-namespace hard limits on VMs and their resources, charged by the admission
webhook and recounted by the operator. Namespaced. Pure."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, ClassVar, Literal

from pydantic import Field

from kubenova.api.meta import Condition, CRDInfo, Model, PrinterColumn, Resource
from kubenova.api.quantity import Quantity

_FlavorName = Annotated[str, Field(min_length=1, max_length=253)]
_Count = Annotated[int, Field(ge=0)]


class QuotaAmounts(Model):
    """An amount of each quota-limited resource; unset means no limit (in hard)."""

    vms: int | None = Field(default=None, ge=0)
    """VirtualMachines."""
    vcpus: int | None = Field(default=None, ge=0)
    """Virtual CPUs over all VMs."""
    memory: Quantity | None = None
    """Guest memory over all VMs."""
    gpus: int | None = Field(default=None, ge=0)
    """GPU devices over all VMs."""
    flavors: dict[_FlavorName, _Count] = Field(default_factory=dict, max_length=256)
    """VMs per flavor."""


class VMQuotaSpec(Model):
    """The limits of the namespace."""

    hard: QuotaAmounts
    """Hard limits; a create that would pass one is denied."""


_Holder = Annotated[str, Field(min_length=1, max_length=253)]


class QuotaReservation(Model):
    """Headroom one webhook process holds so that it admits creates without a write each; or,
    with an amount of nothing, a receipt of its last write (a lost reply tells by `seq`)."""

    amount: QuotaAmounts
    """Held and not yet in `used`: counted against `spec.hard` as if used."""
    renew_time: dt.datetime
    """When the holder last wrote it (it stops admitting from it 7 s after its write; a
    recount drops it after seeing it unchanged for 40 s)."""
    seq: int = Field(ge=0)
    """The holder's write counter: tells it, after a lost reply, whether its write landed."""


class VMQuotaStatus(Model):
    """What is charged against the limits."""

    used: QuotaAmounts = Field(default_factory=QuotaAmounts)
    """Charged now."""
    released: list[str] = Field(default_factory=list)
    """UIDs of deleted VMs whose charge is off `used` but whose quota finalizer may remain."""
    reservations: dict[_Holder, QuotaReservation] = Field(
        default_factory=dict, max_length=64
    )  # ledger.MAX_HOLDERS
    """Headroom held by webhook processes (`--quota-reservation`), and receipts of their last
    charges (nothing held), by holder."""
    # Written together with `used` (one compare-and-swap): a recount does not count these VMs
    # and a second release does not subtract them again; recounts prune them.
    last_charge_time: dt.datetime | None = None
    """When the webhook last added a charge; a recount lowers no usage for 30 s after it (the
    charged VM may not be stored yet)."""
    observed_generation: int | None = None
    """The metadata.generation this status describes."""
    conditions: list[Condition] = Field(default_factory=list)
    """Synced and others."""


class VMQuota(Resource):
    """Hard limits on the VMs of one namespace."""

    crd: ClassVar[CRDInfo] = CRDInfo(
        plural="vmquotas",
        short_names=("vmq",),
        scope="Namespaced",
        printer_columns=(
            PrinterColumn("VMS", ".status.used.vms", "integer"),
            PrinterColumn("MAX-VMS", ".spec.hard.vms", "integer"),
            PrinterColumn("VCPUS", ".status.used.vcpus", "integer"),
            PrinterColumn("MAX-VCPUS", ".spec.hard.vcpus", "integer"),
            PrinterColumn("AGE", ".metadata.creationTimestamp", "date"),
        ),
    )

    kind: Literal["VMQuota"] = "VMQuota"
    spec: VMQuotaSpec
    """The limits."""
    status: VMQuotaStatus = Field(default_factory=VMQuotaStatus)
    """Usage, written by the webhook and the operator."""
