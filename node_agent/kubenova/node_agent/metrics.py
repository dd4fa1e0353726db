"""The agent's Prometheus metrics. Every series carries the host, so one process running many
simulated agents still tells them apart."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LIBVIRT_CALL_SECONDS = Histogram(
    "kubenova_agent_libvirt_call_seconds",
    "Latency of libvirt calls, by call.",
    ["host", "call"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
DOMAINS = Gauge(
    "kubenova_agent_domains", "libvirt domains on the host, by state.", ["host", "state"]
)
HEARTBEAT_AGE = Gauge(
    "kubenova_agent_heartbeat_age_seconds",
    "Seconds since the agent last renewed its heartbeat Lease.",
    ["host"],
)
ORPHANS = Gauge(
    "kubenova_agent_orphan_domains", "kubenova domains on the host with no VM bound here.", ["host"]
)
ORPHANS_REMOVED = Counter(
    "kubenova_agent_orphan_domains_removed_total",
    "Orphan domains removed after the grace.",
    ["host"],
)
RECONCILES = Counter(
    "kubenova_agent_reconciles_total", "Reconcile passes, by result.", ["host", "result"]
)
IMAGE_BYTES = Counter(
    "kubenova_agent_image_bytes_downloaded_total",
    "Bytes of VMImages downloaded into the host's image cache.",
    ["host"],
)
IMAGE_IMPORT_SECONDS = Histogram(
    "kubenova_agent_image_import_seconds",
    "Time to fetch, verify and store one VMImage, by result (ok, failed).",
    ["host", "result"],
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800),
)
IMAGE_IMPORT_FAILURES = Counter(
    "kubenova_agent_image_import_failures_total",
    "Failed VMImage imports, by reason (ChecksumMismatch, Unreachable, HTTPError, BadFormat...).",
    ["host", "reason"],
)
IMAGE_CACHE_BYTES = Gauge(
    "kubenova_agent_image_cache_bytes", "Bytes of verified images in the host's cache.", ["host"]
)
IMAGE_CACHE_IMAGES = Gauge(
    "kubenova_agent_image_cache_images", "Verified images in the host's cache.", ["host"]
)
IMAGE_EVICTIONS = Counter(
    "kubenova_agent_image_cache_evictions_total",
    "Images evicted from the host's cache to keep within its size limit.",
    ["host"],
)


def init_image_cache(host: str) -> None:
    """Export the image cache's series at zero from the start, so a dashboard shows "no
    downloads, no evictions" rather than no data on a host that has imported nothing yet."""
    IMAGE_BYTES.labels(host)
    IMAGE_EVICTIONS.labels(host)
    IMAGE_CACHE_BYTES.labels(host)
    IMAGE_CACHE_IMAGES.labels(host)
    for result in ("ok", "failed"):
        IMAGE_IMPORT_SECONDS.labels(host, result)
