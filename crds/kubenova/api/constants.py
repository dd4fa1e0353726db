"""Names shared by every component: API group, finalizers, labels, annotations, condition types
and reasons. Pure; change a value here and everything that speaks it changes with it."""

from typing import Final

GROUP: Final = "kubenova.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
CATEGORY: Final = "kubenova"

# Finalizers
VM_FINALIZER: Final = "kubenova.io/domain-cleanup"
"""Kept on a VirtualMachine until its agent confirms the libvirt domain is gone."""
QUOTA_FINALIZER: Final = "kubenova.io/quota-release"
"""Kept on a VirtualMachine until its quota charge is released."""
MIGRATION_FINALIZER: Final = "kubenova.io/migration-rollback"
"""Kept on a VMMigration in flight, so deleting it (cancel) rolls the VM back first."""

# Field selectors
FIELD_HOST: Final = "status.host"
"""A VirtualMachine's host, a selectable field of its CRD: each agent lists and watches its
own VMs with this field selector. (Before, a label `kubenova.io/host` followed status.host in
a second write per bind; nothing writes or reads that label any more.)"""

# Labels
LABEL_POOL: Final = "kubenova.io/pool"
LABEL_FLAVOR: Final = "kubenova.io/flavor"
LABEL_HOSTNAME: Final = "kubenova.io/hostname"
"""On a Host: its own name, so affinity rules can use it as a topology key."""
LABEL_RACK: Final = "kubenova.io/rack"
LABEL_ZONE: Final = "topology.kubernetes.io/zone"
LABEL_INITIATOR: Final = "kubenova.io/initiator"
"""On a VMMigration the operator created: `drain` or `rebalance`."""
LABEL_DRAIN_HOST: Final = "kubenova.io/drain-host"
"""On a VMMigration created by a drain: the host being drained."""

# Annotations
ANNOTATION_TRACE_ID: Final = "kubenova.io/trace-id"
"""One id per user operation, carried into every log line of operator, agent and webhook."""
ANNOTATION_QUOTA_CHARGED: Final = "kubenova.io/quota-charged"
"""Set by the admission webhook once the VM's quota charge is committed."""
ANNOTATION_RESTART_REQUESTED: Final = "kubenova.io/restart-requested-at"
ANNOTATION_DRAIN: Final = "kubenova.io/drain"
"""On a Host (any value): move every VM off it by its eviction strategy. Set by admins
(`kubectl vm drain`); the scheduler treats the host as cordoned."""
ANNOTATION_FENCED: Final = "kubenova.io/fenced"
"""On a Host whose heartbeat expired: "true" confirms it is powered off (or isolated), so its
VMs may be started elsewhere. Set by an admin or a fencing hook; the host's agent removes it
when it runs again."""
ANNOTATION_EVICT: Final = "kubenova.io/evict"
"""On a VM (value: a host): its agent on that host shuts it down, so it can leave the host.
Written by the operator (drain with evictionStrategy Shutdown)."""
ANNOTATION_MIGRATION: Final = "kubenova.io/migration"
"""On a Migrating VM: the VMMigration in flight. The following three say where to."""
ANNOTATION_MIGRATION_TARGET: Final = "kubenova.io/migration-target"
ANNOTATION_MIGRATION_URI: Final = "kubenova.io/migration-uri"
"""The target host's libvirt URI, for peer-to-peer migration from the source's libvirtd."""
ANNOTATION_MIGRATION_ADDRESS: Final = "kubenova.io/migration-address"
"""The target host's address for the migration stream ('' lets libvirt choose)."""
ANNOTATION_MIGRATION_ABORT: Final = "kubenova.io/migration-abort"
"""On a Migrating VM: why the operator wants the transfer stopped (cancel, timeout)."""
MIGRATION_ANNOTATIONS: Final = (
    ANNOTATION_MIGRATION,
    ANNOTATION_MIGRATION_TARGET,
    ANNOTATION_MIGRATION_URI,
    ANNOTATION_MIGRATION_ADDRESS,
    ANNOTATION_MIGRATION_ABORT,
)

# Condition types
COND_READY: Final = "Ready"
COND_SCHEDULED: Final = "Scheduled"
COND_RUNNING: Final = "Running"
COND_MIGRATING: Final = "Migrating"
COND_HOST_READY: Final = "Ready"
COND_QUOTA_SYNCED: Final = "Synced"
COND_DRAINED: Final = "Drained"
"""On a Host with the drain annotation: True once no VM is bound to it."""

# Condition reasons
REASON_UNSCHEDULABLE: Final = "Unschedulable"
REASON_SCHEDULED: Final = "Scheduled"
REASON_BOUND: Final = "Bound"
REASON_STARTING: Final = "Starting"
REASON_RUNNING: Final = "Running"
REASON_STOPPED: Final = "Stopped"
REASON_FAILED: Final = "Failed"
REASON_DOMAIN_ERROR: Final = "DomainError"
REASON_HEARTBEAT_EXPIRED: Final = "HeartbeatExpired"
REASON_HEARTBEAT_FRESH: Final = "HeartbeatFresh"
REASON_QUOTA_EXCEEDED: Final = "QuotaExceeded"
REASON_RATE_LIMITED: Final = "RateLimited"
REASON_DRAINING: Final = "Draining"
REASON_DRAINED: Final = "Drained"
REASON_DRAIN_BLOCKED: Final = "DrainBlocked"
"""A VM cannot leave the drained host without losing its disk; its owner must act."""

# Limits that the API enforces
MAX_HISTORY: Final = 20
"""Entries kept in a VM's operation history; the oldest fall off."""
MAX_PRIORITY: Final = 1000
DEFAULT_POOL: Final = "general"
