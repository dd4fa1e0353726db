"""Prometheus metrics of the admission server. Does I/O only when scraped."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

ADMISSION_SECONDS = Histogram(
    "kubenova_webhook_admission_seconds",
    "Time to answer one admission review, by webhook, kind and operation.",
    ["webhook", "kind", "operation"],
    buckets=(0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
    registry=REGISTRY,
)
DENIALS = Counter(
    "kubenova_webhook_denials_total",
    "Admission requests denied, by reason (Invalid, QuotaExceeded, RateLimited, ...).",
    ["reason", "kind"],
    registry=REGISTRY,
)
CONNECTIONS = Counter(
    "kubenova_webhook_connections_total",
    "Connections that brought an admission review. The API server keeps its connections "
    "open, so this stays far below the review count; close to it means a TLS handshake per "
    "review.",
    registry=REGISTRY,
)
QUOTA_CONFLICTS = Counter(
    "kubenova_webhook_quota_conflicts_total",
    "Compare-and-swap writes of a VMQuota that lost to another writer and were retried.",
    registry=REGISTRY,
)
QUOTA_CHARGES = Counter(
    "kubenova_webhook_quota_charges_total",
    "VM creates charged against a VMQuota.",
    registry=REGISTRY,
)
QUOTA_WRITE_SECONDS = Histogram(
    "kubenova_webhook_quota_write_seconds",
    "Time of one compare-and-swap write of a VMQuota's status, and the batch size it carried.",
    buckets=(0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25),
    registry=REGISTRY,
)
QUOTA_BATCH_SIZE = Histogram(
    "kubenova_webhook_quota_batch_size",
    "Charges decided together and written with one compare-and-swap.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
    registry=REGISTRY,
)
