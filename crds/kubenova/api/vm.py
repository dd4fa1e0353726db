"""VirtualMachine: what a user applies to get a VM. Namespaced. Pure.

The spec says what the user wants (flavor, pool or placement, boot source, run strategy,
networks, cloud-init); the status says where the VM is and what it is doing, with a short
operation history a user reads with `kubectl describe`.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Annotated, ClassVar, Literal

from pydantic import ConfigDict, Field

from kubenova.api import constants
from kubenova.api.meta import Condition, CRDInfo, Model, PrinterColumn, Resource, cel
from kubenova.api.quantity import Quantity
from kubenova.api.text import NetworkName, PlainName, SingleLine

_IMMUTABLE = cel("self == oldSelf", "is immutable; create a new VM instead")
MAX_ACCESS_CREDENTIALS = 8
"""Secrets of SSH keys one VM may name."""
# The seed is a device of the domain, defined once: credentials added or removed later would
# be ignored in silence, so the list is fixed and the keys rotate in the Secret instead.
_FIXED_CREDENTIALS = cel(
    "has(self.accessCredentials) == has(oldSelf.accessCredentials) && "
    "(!has(self.accessCredentials) || self.accessCredentials == oldSelf.accessCredentials)",
    "accessCredentials is fixed once the VM exists; rotate keys by editing the Secret (it is "
    "read at every start of the VM), or create a new VM",
)
_DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"

# Every string, list and map of a VM has a bound, so the largest VM the schema admits is small
# and known: the admission webhook's request limit is computed from it (webhooks/sizes.py).
_LabelKey = Annotated[str, Field(min_length=1, max_length=317)]
_LabelValue = Annotated[str, Field(max_length=63)]
_GroupName = Annotated[str, Field(min_length=1, max_length=63, pattern=_DNS_LABEL)]
_GPUModel = Annotated[str, Field(min_length=1, max_length=128)]
_GPUCount = Annotated[int, Field(ge=1, le=16)]
_Address = Annotated[str, Field(max_length=64)]


class RunStrategy(StrEnum):
    ALWAYS = "Always"
    """Keep the VM running; restart it wherever it stops."""
    HALTED = "Halted"
    """Keep the VM stopped."""
    MANUAL = "Manual"
    """Start once; after that, leave it as the guest or the user left it."""
    RERUN_ON_FAILURE = "RerunOnFailure"
    """Restart after a crash, not after a clean shutdown from inside the guest."""


class EvictionStrategy(StrEnum):
    LIVE_MIGRATE = "LiveMigrate"
    """When its host is drained, move the VM live to another host."""
    SHUTDOWN = "Shutdown"
    """When its host is drained, shut the VM down (and start it elsewhere if it should run)."""


class VMPhase(StrEnum):
    PENDING = "Pending"
    SCHEDULED = "Scheduled"
    STARTING = "Starting"
    RUNNING = "Running"
    STOPPING = "Stopping"
    STOPPED = "Stopped"
    MIGRATING = "Migrating"
    FAILED = "Failed"
    DELETING = "Deleting"
    UNKNOWN = "Unknown"


class KernelBoot(Model):
    """Boot a kernel and initramfs directly (small appliances, tests). The pair is one an
    administrator put in every host's image store, as `kernels/<name>/vmlinuz` and
    `kernels/<name>/initrd`: a tenant names it and never gives a host path."""

    name: PlainName
    """The kernel/initrd pair in the hosts' image store, e.g. tiny-guest."""
    cmdline: SingleLine = Field(default="console=ttyS0", max_length=4096)
    """Kernel command line (one line, no control characters)."""


class BootSource(Model):
    """Where the VM boots from: a base image (copied on write) or a kernel, each by the name an
    administrator made it available under in the hosts' image store."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            "has(self.image) != has(self.kernel)", "set exactly one of image or kernel"
        )
    )

    image: PlainName | None = None
    """Base image (qcow2) in the hosts' image store, by name (e.g. debian-12.qcow2), never a
    path; the VM gets a qcow2 overlay on it."""
    kernel: KernelBoot | None = None
    """Direct kernel boot from a named kernel/initrd pair."""


class GroupRule(Model):
    """A rule about a group of VMs over a host label (the topology key)."""

    group: str = Field(min_length=1, max_length=63, pattern=_DNS_LABEL)
    """The group, as named in placement.groups of the VMs in it (same namespace)."""
    topology_key: str = Field(default=constants.LABEL_HOSTNAME, min_length=1, max_length=317)
    """Host label whose values are the domains, e.g. kubenova.io/hostname or kubenova.io/rack."""
    max_per_domain: int = Field(default=1, ge=1, le=1000)
    """For anti-affinity: at most this many VMs of the group per domain."""


class Toleration(Model):
    """Lets the VM land on hosts with a matching taint."""

    key: str = Field(min_length=1, max_length=317)
    """The taint key."""
    operator: Literal["Equal", "Exists"] = "Equal"
    """Equal matches the value too; Exists matches any value."""
    value: str = Field(default="", max_length=63)
    """The taint value for Equal."""


class Placement(Model):
    """Where the VM may go, beyond its pool."""

    node_selector: dict[_LabelKey, _LabelValue] = Field(default_factory=dict, max_length=32)
    """Host labels the chosen host must have."""
    groups: list[_GroupName] = Field(default_factory=list, max_length=16)
    """Groups this VM belongs to, for affinity rules of other VMs."""
    affinity: list[GroupRule] = Field(default_factory=list, max_length=8)
    """Land in a domain (topology key value) that already has a VM of the group."""
    anti_affinity: list[GroupRule] = Field(default_factory=list, max_length=8)
    """Land in a domain with fewer than maxPerDomain VMs of the group."""
    tolerations: list[Toleration] = Field(default_factory=list, max_length=16)
    """Taints this VM tolerates."""


class NetworkInterface(Model):
    """One network interface of the guest. kubenova gives it a MAC address (stable for the VM,
    derived from its uid) and libvirt's clean-traffic filter, so a guest cannot spoof another's
    MAC, IP or ARP."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            "!has(self.macAddress)",
            "macAddress cannot be set: kubenova assigns each interface a stable MAC address; "
            "remove the field",
        )
    )

    name: str = Field(min_length=1, max_length=15, pattern=_DNS_LABEL)
    """Interface name, unique in the VM."""
    network: NetworkName = "default"
    """The host network (libvirt network or bridge) to attach to; it must be one the VM's
    ResourcePool lists in spec.networks."""
    mac_address: str | None = Field(
        default=None, max_length=17, pattern=r"^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$"
    )
    """Not accepted (refused by the API server; ignored by the agent in objects stored before):
    kubenova assigns MAC addresses."""
    model: Literal["virtio", "e1000", "rtl8139"] = "virtio"
    """The emulated NIC model."""


class SecretRef(Model):
    """A Secret in the VM's own namespace."""

    name: PlainName
    """The Secret's name."""


class CloudInit(Model):
    """cloud-init NoCloud data given to the guest on first boot."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            "!(has(self.userData) && has(self.userDataSecretRef))",
            "set at most one of userData and userDataSecretRef",
        )
    )

    user_data: str | None = Field(default=None, max_length=32768)
    """#cloud-config or a script, inline (readable by anyone who may read the VM)."""
    user_data_secret_ref: SecretRef | None = None
    """A Secret in the VM's namespace whose key `userdata` (or `userData`) holds the user data,
    as KubeVirt's userDataSecretRef: only the VM's host agent reads it."""
    network_data: str | None = Field(default=None, max_length=8192)
    """Network configuration, version 1 or 2."""


class SecretSource(Model):
    """A Secret in the VM's own namespace (the reference has no namespace field)."""

    secret_name: PlainName
    """The Secret's name. Each key of its data holds one or more authorized_keys lines."""


class SSHPublicKeySource(Model):
    """Where the SSH public keys come from."""

    secret: SecretSource
    """A Secret in the VM's namespace."""


class SSHPublicKeyAccessCredential(Model):
    """SSH public keys for the guest's default user, delivered through cloud-init."""

    source: SSHPublicKeySource
    """The Secret that holds the keys."""


class AccessCredential(Model):
    """One way into the guest, as KubeVirt's accessCredentials (SSH public keys only)."""

    ssh_public_key: SSHPublicKeyAccessCredential
    """Keys from a Secret, added to the guest's cloud-init data as ssh_authorized_keys."""


class VMResources(Model):
    """The VM's size, copied from its flavor at admission so later flavor edits cannot change
    a VM under its user."""

    model_config = ConfigDict(json_schema_extra=_IMMUTABLE)

    vcpus: int = Field(ge=1, le=1024)
    """Virtual CPUs."""
    memory: Quantity
    """Guest memory."""
    disk: Quantity
    """Root disk size."""
    gpus: dict[_GPUModel, _GPUCount] = Field(default_factory=dict, max_length=4)
    """GPU devices by model."""


class VirtualMachineSpec(Model):
    """The VM the user wants."""

    model_config = ConfigDict(json_schema_extra=_FIXED_CREDENTIALS)

    flavor: str = Field(min_length=1, max_length=253)
    """The Flavor that sizes this VM."""
    pool: str | None = Field(default=None, min_length=1, max_length=253)
    """The ResourcePool to place it in; the admission webhook sets the default pool."""
    boot: BootSource
    """What the VM boots."""
    run_strategy: RunStrategy = RunStrategy.ALWAYS
    """Always, Halted, Manual or RerunOnFailure. Start or stop a VM by changing this."""
    priority: int = Field(default=0, ge=0, le=constants.MAX_PRIORITY)
    """Scheduling priority, 0 to 1000; higher is placed first."""
    placement: Placement = Field(default_factory=Placement)
    """Node selector, affinity, anti-affinity and tolerations."""
    networks: list[NetworkInterface] = Field(
        default_factory=list,
        max_length=16,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    """Network interfaces."""
    cloud_init: CloudInit | None = None
    """cloud-init user and network data."""
    access_credentials: list[AccessCredential] = Field(
        default_factory=list,
        max_length=MAX_ACCESS_CREDENTIALS,
    )
    """SSH public keys from Secrets in the VM's namespace, added to the guest's cloud-init
    data; the Secrets are read at every start of the domain. Fixed once the VM exists."""
    eviction_strategy: EvictionStrategy = EvictionStrategy.LIVE_MIGRATE
    """What happens when its host is drained: LiveMigrate or Shutdown."""
    termination_grace_period_seconds: int = Field(default=60, ge=0, le=3600)
    """How long an ACPI shutdown may take before the VM is destroyed."""
    resources: VMResources | None = None
    """The VM's size, filled from its flavor by the admission webhook; immutable once set."""


class Operation(Model):
    """One entry of the VM's operation log."""

    time: dt.datetime
    """When it happened."""
    action: str = Field(max_length=64)
    """What happened, e.g. Scheduled, Started, Stopped, Migrated."""
    actor: str = Field(max_length=128)
    """Who did it: operator, agent/<host>, webhook or a user."""
    result: Literal["Succeeded", "Failed", "InProgress"]
    """How it ended."""
    message: str = Field(default="", max_length=1024)
    """Details."""
    trace_id: str | None = Field(default=None, max_length=64)
    """The trace id to search the logs for."""


class VirtualMachineStatus(Model):
    """Where the VM is and what it is doing."""

    phase: VMPhase = VMPhase.PENDING
    """Pending, Scheduled, Starting, Running, Stopping, Stopped, Migrating, Failed, Deleting."""
    host: str | None = Field(default=None, max_length=253)
    """The host the VM is bound to."""
    gpu_devices: list[_Address] = Field(default_factory=list, max_length=64)
    """PCI addresses of the GPUs the scheduler assigned on that host."""
    domain_uuid: str | None = Field(default=None, alias="domainUUID", max_length=64)
    """The libvirt domain's UUID."""
    ip: str | None = Field(default=None, max_length=64)
    """The first guest address, for `kubectl get`."""
    addresses: list[_Address] = Field(default_factory=list, max_length=32)
    """All guest addresses the agent found."""
    serial_log: str | None = Field(default=None, max_length=4096)
    """Path of the serial console log on the host (`kubectl vm console`)."""
    reason: str | None = Field(default=None, max_length=1024)
    """Why the VM is in this phase, in one line (e.g. why it cannot be scheduled)."""
    observed_generation: int | None = None
    """The metadata.generation this status describes."""
    conditions: list[Condition] = Field(default_factory=list, max_length=8)
    """Scheduled, Running, Ready and others."""
    history: list[Operation] = Field(default_factory=list, max_length=constants.MAX_HISTORY)
    """The latest operations on this VM, oldest first."""


class VirtualMachine(Resource):
    """A virtual machine that kubenova places on a host and runs with libvirt."""

    crd: ClassVar[CRDInfo] = CRDInfo(
        plural="virtualmachines",
        short_names=("vm", "vms"),
        scope="Namespaced",
        printer_columns=(
            PrinterColumn("PHASE", ".status.phase"),
            PrinterColumn("FLAVOR", ".spec.flavor"),
            PrinterColumn("HOST", ".status.host"),
            PrinterColumn("IP", ".status.ip"),
            PrinterColumn("AGE", ".metadata.creationTimestamp", "date"),
            PrinterColumn("POOL", ".spec.pool", priority=1),
            PrinterColumn("RUN", ".spec.runStrategy", priority=1),
            PrinterColumn("REASON", ".status.reason", priority=1),
        ),
        # The binding: each host's agent lists and watches only its own VMs by it, so a bind
        # is one status write (no label to follow it).
        selectable_fields=(".status.host",),
    )

    kind: Literal["VirtualMachine"] = "VirtualMachine"
    spec: VirtualMachineSpec
    """The VM the user wants."""
    status: VirtualMachineStatus = Field(default_factory=VirtualMachineStatus)
    """Observed state, written by the operator and the host's agent."""
