"""The image cache's decisions, apart from its I/O: which cached images to evict (least
recently used first, never one a VM on the host or a pre-cache request needs), when to retry
a failed import, how to name a failure, and which pools a Host is in. Pure.

`imagecache` does what these decide.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from kubenova.api.meta import LabelSelector, SelectorOperator
from kubenova.node_agent import domain_xml

CACHED_DISK = "disk"
"""A cached disk image's file in its cache entry (`<store>/cache/<name>_<sha>/disk`)."""
RETRY_FIRST_SECONDS = 10.0
RETRY_MAX_SECONDS = 600.0


@dataclass(frozen=True)
class CachedImage:
    """One verified image in the cache."""

    name: str
    sha256: str
    size: int
    """Bytes on disk."""
    last_used: float
    """When a VM last booted from it (seconds since the epoch), or when it arrived."""


@dataclass(frozen=True)
class Eviction:
    remove: tuple[str, ...]
    """Names to delete, least recently used first."""
    short: int
    """Bytes still over the limit after removing them (everything left is needed); 0: fits."""


def plan_eviction(
    held: Iterable[CachedImage], keep: set[str], limit: int, incoming: int = 0
) -> Eviction:
    """What to delete so the cache plus `incoming` bytes fits in `limit` (0: no limit).
    Images in `keep` stay whatever it costs: a domain's overlay is backed by its image."""
    entries = list(held)
    total = sum(e.size for e in entries) + incoming
    if limit <= 0 or total <= limit:
        return Eviction((), 0)
    remove: list[str] = []
    for e in sorted(entries, key=lambda e: (e.last_used, e.name)):
        if total <= limit:
            break
        if e.name in keep:
            continue
        remove.append(e.name)
        total -= e.size
    return Eviction(tuple(remove), max(0, total - limit))


def retry_after(failures: int) -> float:
    """Seconds before a host tries a failed import again: 10 s, doubling, at most 10 min (a
    boot storm against a broken URL must not become a download storm)."""
    return min(RETRY_FIRST_SECONDS * 2.0 ** max(0, failures - 1), RETRY_MAX_SECONDS)


def checksum_mismatch(expected: str, got: str, url: str) -> str:
    return (
        f"checksum mismatch: expected {expected}, got {got} for {url}; the file served is not "
        "the one spec.sha256 names (fix the URL or the checksum in a new VMImage)"
    )


def selector_matches(selector: LabelSelector, labels: Mapping[str, str]) -> bool:
    """Whether a Host with `labels` is selected (an empty selector selects every host)."""
    if any(labels.get(k) != v for k, v in selector.match_labels.items()):
        return False
    for req in selector.match_expressions:
        present = req.key in labels
        match req.operator:
            case SelectorOperator.IN:
                ok = present and labels[req.key] in req.values
            case SelectorOperator.NOT_IN:
                ok = not present or labels[req.key] not in req.values
            case SelectorOperator.EXISTS:
                ok = present
            case SelectorOperator.DOES_NOT_EXIST:
                ok = not present
        if not ok:
            return False
    return True


def use_cached(
    spec: domain_xml.DomainSpec, storage: domain_xml.Storage, files: Mapping[str, str]
) -> tuple[domain_xml.DomainSpec, domain_xml.Storage]:
    """The domain and its files booting from a VMImage's verified copies in the image cache
    (`disk`, or `vmlinuz` and `initrd`) instead of the admin's files of that name."""
    if spec.kernel is not None:
        kernel = dataclasses.replace(
            spec.kernel, kernel=files[domain_xml.KERNEL_FILE], initrd=files[domain_xml.INITRD_FILE]
        )
        boot = tuple(
            dataclasses.replace(f, path=kernel.kernel if i == 0 else kernel.initrd)
            for i, f in enumerate(storage.boot_files)
        )
        return dataclasses.replace(spec, kernel=kernel), dataclasses.replace(
            storage, boot_files=boot
        )
    disk = files[CACHED_DISK]
    boot = tuple(dataclasses.replace(f, path=disk) for f in storage.boot_files)
    return spec, dataclasses.replace(storage, boot_files=boot, base_image=disk)
