"""Prometheus metrics of the admission server. Does I/O only when scraped."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from kubenova.quota import metrics as quota_metrics

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
# The quota ledger's own metrics live with it (kubenova.quota.metrics); the admission server
# is where they are scraped.
for _collector in quota_metrics.COLLECTORS:
    REGISTRY.register(_collector)
