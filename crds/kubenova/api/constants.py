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

# Labels
LABEL_HOST: Final = "kubenova.io/host"
"""On a VirtualMachine: the host it is bound to. Agents watch with this label selector."""
LABEL_POOL: Final = "kubenova.io/pool"
LABEL_FLAVOR: Final = "kubenova.io/flavor"
LABEL_HOSTNAME: Final = "kubenova.io/hostname"
"""On a Host: its own name, so affinity rules can use it as a topology key."""
LABEL_RACK: Final = "kubenova.io/rack"
LABEL_ZONE: Final = "topology.kubernetes.io/zone"

# Annotations
ANNOTATION_TRACE_ID: Final = "kubenova.io/trace-id"
"""One id per user operation, carried into every log line of operator, agent and webhook."""
ANNOTATION_QUOTA_CHARGED: Final = "kubenova.io/quota-charged"
"""Set by the admission webhook once the VM's quota charge is committed."""
ANNOTATION_RESTART_REQUESTED: Final = "kubenova.io/restart-requested-at"
ANNOTATION_DRAIN: Final = "kubenova.io/drain"

# Condition types
COND_READY: Final = "Ready"
COND_SCHEDULED: Final = "Scheduled"
COND_RUNNING: Final = "Running"
COND_MIGRATING: Final = "Migrating"
COND_HOST_READY: Final = "Ready"
COND_QUOTA_SYNCED: Final = "Synced"

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

# Limits that the API enforces
MAX_HISTORY: Final = 20
"""Entries kept in a VM's operation history; the oldest fall off."""
MAX_PRIORITY: Final = 1000
DEFAULT_POOL: Final = "general"
