"""VMMigration: a request to move one VM live to another host. Namespaced. Pure."""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import ClassVar, Literal

from pydantic import ConfigDict, Field

from kubenova.api.meta import Condition, CRDInfo, Model, PrinterColumn, Resource, cel

_IMMUTABLE = cel(
    "self == oldSelf", "a migration's spec cannot change; delete it and create a new one"
)


class MigrationPhase(StrEnum):
    PENDING = "Pending"
    SCHEDULING = "Scheduling"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"


class VMMigrationSpec(Model):
    """Which VM to move and where."""

    model_config = ConfigDict(json_schema_extra=_IMMUTABLE)

    vm_name: str = Field(min_length=1, max_length=253)
    """The VirtualMachine to move, in this namespace."""
    target_host: str | None = Field(default=None, min_length=1, max_length=253)
    """The host to move it to; unset lets the scheduler pick one."""
    timeout_seconds: int = Field(default=600, ge=10, le=86400)
    """Give up and roll back after this long."""


class TransferState(StrEnum):
    RUNNING = "Running"
    COMPLETED = "Completed"
    FAILED = "Failed"


class MigrationTransfer(Model):
    """What the source host's agent reports about libvirt's migration job."""

    state: TransferState = TransferState.RUNNING
    """Running, Completed (the VM runs on the target) or Failed (it still runs on the
    source)."""
    message: str = Field(default="", max_length=1024)
    """libvirt's error, or how it went."""
    data_total_bytes: int | None = Field(default=None, ge=0)
    """Guest memory (and disk) to copy."""
    data_processed_bytes: int | None = Field(default=None, ge=0)
    """Copied so far, including pages sent again after the guest dirtied them."""
    elapsed_ms: int | None = Field(default=None, ge=0)
    """Duration of the transfer, as libvirt measured it."""
    downtime_ms: int | None = Field(default=None, ge=0)
    """How long the guest was paused for the switch-over, as libvirt measured it."""
    attempt: int = Field(default=1, ge=1)
    """The agent restarts a transfer that an agent restart interrupted."""


class VMMigrationStatus(Model):
    """Progress of the migration."""

    phase: MigrationPhase = MigrationPhase.PENDING
    """Pending, Scheduling, Running, Succeeded, Failed or Cancelled."""
    source_host: str | None = None
    """Where the VM was."""
    target_host: str | None = None
    """Where it is going."""
    progress_percent: int = Field(default=0, ge=0, le=100)
    """Memory copied so far."""
    start_time: dt.datetime | None = None
    """When the transfer started."""
    completion_time: dt.datetime | None = None
    """When it ended, either way."""
    message: str = Field(default="", max_length=1024)
    """Why it is in this phase."""
    transfer: MigrationTransfer | None = None
    """The libvirt job, as the source host's agent reports it."""
    conditions: list[Condition] = Field(default_factory=list)
    """The migration's conditions."""


class VMMigration(Resource):
    """A live migration of one VirtualMachine."""

    crd: ClassVar[CRDInfo] = CRDInfo(
        plural="vmmigrations",
        short_names=("vmim",),
        scope="Namespaced",
        printer_columns=(
            PrinterColumn("VM", ".spec.vmName"),
            PrinterColumn("PHASE", ".status.phase"),
            PrinterColumn("SOURCE", ".status.sourceHost"),
            PrinterColumn("TARGET", ".status.targetHost"),
            PrinterColumn("PROGRESS", ".status.progressPercent", "integer"),
            PrinterColumn("AGE", ".metadata.creationTimestamp", "date"),
        ),
    )

    kind: Literal["VMMigration"] = "VMMigration"
    spec: VMMigrationSpec
    """What to move."""
    status: VMMigrationStatus = Field(default_factory=VMMigrationStatus)
    """Progress: `transfer` and `progressPercent` are written by the source host's agent,
    everything else by the operator."""
