"""Prometheus metrics of the quota ledger. Registered in no registry of their own: the
admission server registers them in its registry (`kubenova.webhooks.metrics`), where they are
scraped, so their names keep the `kubenova_webhook_` prefix the dashboards use. Does no I/O.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

QUOTA_CONFLICTS = Counter(
    "kubenova_webhook_quota_conflicts_total",
    "Compare-and-swap writes of a VMQuota that lost to another writer and were retried.",
    registry=None,
)
QUOTA_CHARGES = Counter(
    "kubenova_webhook_quota_charges_total",
    "VM creates charged against a VMQuota.",
    registry=None,
)
QUOTA_WRITE_SECONDS = Histogram(
    "kubenova_webhook_quota_write_seconds",
    "Time of one compare-and-swap write of a VMQuota's status, and the batch size it carried.",
    buckets=(0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25),
    registry=None,
)
QUOTA_BATCH_SIZE = Histogram(
    "kubenova_webhook_quota_batch_size",
    "Charges decided together and written with one compare-and-swap.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
    registry=None,
)
QUOTA_RESERVED_CHARGES = Counter(
    "kubenova_webhook_quota_reserved_charges_total",
    "Charges admitted from this process's reservation, without a write of their own.",
    registry=None,
)

COLLECTORS = (
    QUOTA_CONFLICTS,
    QUOTA_CHARGES,
    QUOTA_WRITE_SECONDS,
    QUOTA_BATCH_SIZE,
    QUOTA_RESERVED_CHARGES,
)
