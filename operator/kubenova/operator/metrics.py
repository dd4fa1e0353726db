"""The operator's Prometheus metrics (the seed's analytics log)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

SCHEDULING_SECONDS = Histogram(
    "kubenova_scheduling_decision_seconds",
    "Time to decide where one VM goes (filter, score, reserve), in seconds.",
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1),
)
BIND_SECONDS = Histogram(
    "kubenova_bind_seconds",
    "Time to write one binding to the API server, in seconds.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
PENDING_TO_BOUND_SECONDS = Histogram(
    "kubenova_pending_to_bound_seconds",
    "From the operator first seeing a pending VM to its binding, in seconds.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
QUEUE_DEPTH = Gauge("kubenova_scheduling_queue_depth", "Pending VMs by sub-queue.", ["queue"])
BINDS = Counter("kubenova_binds_total", "Binding attempts by result.", ["result"])
HOSTS_OVER_CAPACITY = Gauge(
    "kubenova_hosts_over_capacity",
    "Hosts with more bound to them than they have (should be 0; the operator logs each VM).",
)
UNSCHEDULABLE = Counter(
    "kubenova_scheduling_failures_total",
    "Scheduling attempts that found no host, by the reason that removed the most hosts.",
    ["reason"],
)
VMS = Gauge("kubenova_vms", "VirtualMachines by phase.", ["phase"])
HOSTS = Gauge("kubenova_hosts", "Hosts by state.", ["state"])
POOL_CAPACITY = Gauge(
    "kubenova_pool_capacity", "Allocatable resources of a pool's ready hosts.", ["pool", "resource"]
)
POOL_ALLOCATED = Gauge(
    "kubenova_pool_allocated", "Resources held by VMs in a pool.", ["pool", "resource"]
)
POOL_RESERVED = Gauge(
    "kubenova_pool_reserved", "Resources held back for reservations.", ["pool", "resource"]
)
POOL_FITS = Gauge(
    "kubenova_pool_flavor_fits", "How many more VMs of a flavor fit in a pool.", ["pool", "flavor"]
)
LEADER = Gauge("kubenova_operator_leader", "1 while this replica is the leader.")
EVENTS_DROPPED = Gauge(
    "kubenova_operator_events_dropped", "Kubernetes events dropped because the queue was full."
)
