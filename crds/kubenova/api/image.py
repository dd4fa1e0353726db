"""VMImage: a boot source an administrator makes available to every tenant (Glance's images,
KubeVirt CDI's imports), and the state machine of its import. Cluster-scoped. Pure.

The spec names where the bytes come from (an http or https URL with a required sha256, or a
kernel + initrd pair for direct boot) and what they are (qcow2 or raw; raw is converted to
qcow2 when it arrives). Hosts fetch an image into their image cache the first time a VM there
boots from it, or ahead of time when `spec.preCache.pools` names the host's pool. The spec is
immutable: a new version of an image is a new VMImage, so a host's copy never goes stale.

`observe()` is the one path from an import's outcome on a host to the status users read:
whoever reports an import goes through it, so phase, conditions and reason never disagree.
`status.hosts` is the operator's, from the Hosts' `status.images`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar, Literal

from pydantic import ConfigDict, Field, JsonValue, field_validator, model_validator

from kubenova.api.meta import (
    Condition,
    ConditionStatus,
    CRDInfo,
    Model,
    PrinterColumn,
    Resource,
    cel,
    set_condition,
)
from kubenova.api.text import PlainName

SHA256 = r"^[0-9a-f]{64}$"
URL = r"^https?://[^\s/]+(/\S*)?$"
URL_MESSAGE = (
    "must be an http:// or https:// URL with a host and no spaces "
    "(like https://images.example/debian-12.qcow2)"
)
SHA256_MESSAGE = "must be the sha256 of the file: 64 lower-case hex digits (sha256sum prints it)"
COND_READY = "Ready"
MAX_HOSTS = 4096
"""Hosts listed in status.hosts (a count is kept beyond that)."""

_URL = re.compile(URL)
_URL_RULE = "self.matches('" + URL.replace("\\", "\\\\") + "')"
"""The URL pattern in a CEL string literal (backslashes doubled: CEL has no '\\s')."""
_SHA = re.compile(SHA256)


def check_url(value: str) -> str:
    """`value` if it is an http(s) URL with a host; else a ValueError naming what is wrong."""
    scheme = value.split(":", 1)[0].lower() if ":" in value else ""
    if scheme and scheme not in ("http", "https"):
        raise ValueError(f"{URL_MESSAGE}; the scheme {scheme!r} is not fetched by kubenova")
    if not _URL.fullmatch(value):
        raise ValueError(URL_MESSAGE)
    return value


def check_sha256(value: str) -> str:
    if not _SHA.fullmatch(value):
        raise ValueError(SHA256_MESSAGE)
    return value


class ImageFormat(StrEnum):
    QCOW2 = "qcow2"
    """Used as it arrives (a qcow2 with a backing file is refused)."""
    RAW = "raw"
    """Converted to qcow2 (`qemu-img convert`) once its checksum is verified."""


class FileSource(Model):
    """One file fetched over http(s), verified by its checksum before anything uses it."""

    url: str = Field(
        min_length=1,
        max_length=2048,
        json_schema_extra=cel(_URL_RULE, URL_MESSAGE),
    )
    """Where the file is: an http:// or https:// URL."""
    sha256: str = Field(
        max_length=64,
        json_schema_extra=cel(f"self.matches('{SHA256}')", SHA256_MESSAGE),
    )
    """The sha256 of the file as served (before any conversion): 64 lower-case hex digits."""

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return check_url(v)

    @field_validator("sha256")
    @classmethod
    def _sha(cls, v: str) -> str:
        return check_sha256(v)


class KernelSource(Model):
    """A kernel and initramfs for direct boot (`spec.boot.kernel.name` names the VMImage)."""

    kernel: FileSource
    """The kernel (vmlinuz)."""
    initrd: FileSource
    """The initramfs."""


class PreCache(Model):
    """Hosts that fetch the image ahead of time, before any VM asks for it (Nova's aggregate
    image pre-cache): a boot storm then reads local copies."""

    pools: list[PlainName] = Field(default_factory=list, max_length=64)
    """ResourcePools whose hosts keep a copy (pinned in their cache: never evicted)."""


_SPEC_RULES: list[JsonValue] = [
    {
        "rule": "has(self.url) != has(self.kernel)",
        "message": "set exactly one of url (a disk image) or kernel (a kernel + initrd pair)",
    },
    {
        "rule": "has(self.url) == has(self.sha256)",
        "message": "sha256 is required with url (and only with url): kubenova uses no file it "
        "cannot verify",
    },
    {"rule": "self == oldSelf", "message": "is immutable; create a new VMImage"},
]


class VMImageSpec(Model):
    """Where the image comes from and what it is. Immutable: publish a new version as a new
    VMImage."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": _SPEC_RULES})

    url: str | None = Field(
        default=None,
        min_length=1,
        max_length=2048,
        json_schema_extra=cel(_URL_RULE, URL_MESSAGE),
    )
    """A disk image to fetch: an http:// or https:// URL (needs sha256)."""
    sha256: str | None = Field(
        default=None,
        max_length=64,
        json_schema_extra=cel(f"self.matches('{SHA256}')", SHA256_MESSAGE),
    )
    """The sha256 of the file at url as served: 64 lower-case hex digits. Required with url."""
    format: ImageFormat = ImageFormat.QCOW2
    """qcow2 (used as it is) or raw (converted to qcow2 on arrival)."""
    kernel: KernelSource | None = None
    """Instead of url: a kernel + initrd pair for direct boot."""
    pre_cache: PreCache = Field(default_factory=PreCache)
    """Fetch the image ahead of time on these pools' hosts."""
    description: str = Field(default="", max_length=1024)
    """What the image is, for users choosing one."""

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        return None if v is None else check_url(v)

    @field_validator("sha256")
    @classmethod
    def _sha(cls, v: str | None) -> str | None:
        return None if v is None else check_sha256(v)

    @model_validator(mode="after")
    def _one_source(self) -> VMImageSpec:
        if (self.url is None) == (self.kernel is None):
            raise ValueError(
                "set exactly one of url (a disk image) or kernel (a kernel + initrd pair)"
            )
        if (self.url is None) != (self.sha256 is None):
            raise ValueError(
                "sha256 is required with url (and only with url): kubenova uses no file it "
                "cannot verify"
            )
        return self

    @property
    def is_kernel(self) -> bool:
        return self.kernel is not None

    def files(self) -> dict[str, FileSource]:
        """The files a host fetches, by their name in the cache entry."""
        if self.kernel is not None:
            return {"vmlinuz": self.kernel.kernel, "initrd": self.kernel.initrd}
        assert self.url is not None and self.sha256 is not None
        return {"disk": FileSource(url=self.url, sha256=self.sha256)}

    @property
    def checksum(self) -> str:
        """One checksum for the whole image: the disk's; for a kernel pair, the sha256 of the
        kernel's and the initrd's checksums joined by ':' (either changing makes another
        image)."""
        if self.kernel is not None:
            pair = f"{self.kernel.kernel.sha256}:{self.kernel.initrd.sha256}"
            return hashlib.sha256(pair.encode()).hexdigest()
        return self.sha256 or ""


class ImagePhase(StrEnum):
    PENDING = "Pending"
    """No host has fetched it yet."""
    IMPORTING = "Importing"
    """A host is fetching and verifying it."""
    READY = "Ready"
    """At least one host holds a verified copy; VMs boot from it."""
    FAILED = "Failed"
    """The last import failed (see reason); nothing was used. Hosts retry with back-off."""


class VMImageStatus(Model):
    """What the hosts found fetching the image."""

    phase: ImagePhase = ImagePhase.PENDING
    """Pending, Importing, Ready or Failed."""
    reason: str = Field(default="", max_length=64)
    """Why it is in this phase, one CamelCase word (e.g. ChecksumMismatch)."""
    message: str = Field(default="", max_length=1024)
    """What happened, for people (e.g. checksum mismatch: expected ..., got ...)."""
    size: int = Field(default=0, ge=0)
    """Bytes of the verified image on a host's disk (after any conversion)."""
    sha256: str = Field(default="", pattern=r"^([0-9a-f]{64})?$")
    """The checksum the hosts verified."""
    hosts: list[PlainName] = Field(default_factory=list, max_length=MAX_HOSTS)
    """Hosts whose image cache holds a verified copy, from their Host status.images (kept by
    the operator)."""
    host_count: int = Field(default=0, ge=0)
    """How many hosts hold it."""
    observed_generation: int | None = None
    """The metadata.generation this status describes."""
    conditions: list[Condition] = Field(default_factory=list, max_length=8)
    """Ready."""


class VMImage(Resource):
    """A boot source every tenant may name in spec.boot.image (or spec.boot.kernel.name),
    fetched and verified by each host's image cache. Cluster-scoped; made by an admin."""

    crd: ClassVar[CRDInfo] = CRDInfo(
        plural="vmimages",
        short_names=("vmi", "img"),
        scope="Cluster",
        printer_columns=(
            PrinterColumn("PHASE", ".status.phase"),
            PrinterColumn("FORMAT", ".spec.format"),
            PrinterColumn("SIZE", ".status.size", "integer"),
            PrinterColumn("HOSTS", ".status.hostCount", "integer"),
            PrinterColumn("AGE", ".metadata.creationTimestamp", "date"),
            PrinterColumn("REASON", ".status.reason", priority=1),
            PrinterColumn("URL", ".spec.url", priority=1),
        ),
    )

    kind: Literal["VMImage"] = "VMImage"
    spec: VMImageSpec
    """Where the image comes from."""
    status: VMImageStatus = Field(default_factory=VMImageStatus)
    """Import state: the phase from the hosts' agents, the hosts from the operator."""


# -- the import state machine ----------------------------------------------------------------


class ImportEvent(StrEnum):
    STARTED = "Importing"
    """A host began fetching it."""
    SUCCEEDED = "Imported"
    """A host verified its copy."""
    FAILED = "ImportFailed"
    """A host's fetch or verification failed."""


@dataclass(frozen=True)
class ImportReport:
    """What one host saw of one import."""

    event: ImportEvent
    host: str
    reason: str = ""
    """For FAILED: ChecksumMismatch, Unreachable, HTTPError, BadFormat, ConversionFailed or
    DiskError."""
    message: str = ""
    size: int = 0
    sha256: str = ""


def observe(
    status: VMImageStatus, report: ImportReport, generation: int | None, now: dt.datetime
) -> VMImageStatus:
    """The status after `report`; the same object when nothing changes (no write needed).

    A Ready image stays Ready whatever one host reports later (other hosts hold verified
    copies, and a host that fails uses nothing); a Failed one goes back to Importing when a
    host retries."""
    phase, reason, message = status.phase, status.reason, status.message
    size, sha = status.size, status.sha256
    match report.event:
        case ImportEvent.STARTED:
            if phase is ImagePhase.READY:
                return status
            phase, reason = ImagePhase.IMPORTING, "Importing"
            message = f"host {report.host} is fetching it"
        case ImportEvent.SUCCEEDED:
            if status.phase is not ImagePhase.READY:
                message = f"verified on host {report.host}"
            phase, reason, size, sha = ImagePhase.READY, "Imported", report.size, report.sha256
        case ImportEvent.FAILED:
            if phase is ImagePhase.READY:
                return status
            phase, reason = ImagePhase.FAILED, report.reason or "ImportFailed"
            message = f"host {report.host}: {report.message}"[:1024]
    ready = phase is ImagePhase.READY
    condition = Condition(
        type=COND_READY,
        status=ConditionStatus.TRUE if ready else ConditionStatus.FALSE,
        reason=reason,
        message=message[:4096],
        observed_generation=generation,
    )
    before = (phase, reason, message, size, sha, status.observed_generation)
    after = (status.phase, status.reason, status.message, status.size, status.sha256, generation)
    if before == after:
        return status
    return status.model_copy(
        update={
            "phase": phase,
            "reason": reason,
            "message": message,
            "size": size,
            "sha256": sha,
            "observed_generation": generation,
            "conditions": set_condition(status.conditions, condition, now),
        }
    )
