"""Image locality: prefer hosts whose image cache already holds the VM's base image, so the VM
starts without a download and the image server is not asked again. Pure; O(1) per host.

Modelled on kube-scheduler's ImageLocality: the score grows with the size of the image the
host holds (a bigger download saved is worth more), scaled by the share of all hosts that hold
it, and mapped linearly from `MIN_MIB` (0: a download that small costs next to nothing) to
`MAX_MIB` (100). The scaling is kube-scheduler's guard against "node heating": an image that
only one host of many holds would otherwise pull every VM of that image onto that host, while
one held by many hosts can prefer them all without piling VMs anywhere. Pre-caching an image on
a pool's hosts raises its share, and with it the score.

The score is absolute, not min-max normalised (kube-scheduler's plugin has no NormalizeScore
either): when every candidate holds the image, they all get the same score and the other
plugins decide.
"""

from __future__ import annotations

from collections.abc import Sequence

from kubenova.scheduler.cache import HostEntry
from kubenova.scheduler.model import Weights
from kubenova.scheduler.plugins.base import CycleState

MIN_MIB = 23
"""Scaled sizes up to this score 0 (kube-scheduler's minThreshold, 23 MB)."""
MAX_MIB = 1000
"""Scaled sizes from this on score 100 (kube-scheduler's maxContainerThreshold, 1000 MB)."""
MAX_SCORE = 100.0


def locality(size_mib: int, holders: int, hosts: int) -> float:
    """The score of a host holding an image of `size_mib` that `holders` of `hosts` hold."""
    if size_mib <= 0 or holders <= 0 or hosts <= 0:
        return 0.0
    scaled = size_mib * min(holders, hosts) / hosts
    if scaled <= MIN_MIB:
        return 0.0
    if scaled >= MAX_MIB:
        return MAX_SCORE
    return MAX_SCORE * (scaled - MIN_MIB) / (MAX_MIB - MIN_MIB)


class ImageLocality:
    def weight(self, weights: Weights) -> int:
        return weights.image

    def score(self, state: CycleState, host: HostEntry) -> float:
        image = state.vm.image
        if image is None:
            return 0.0
        size = host.info.images.get(image)
        if size is None:
            return 0.0
        cache = state.cache
        return locality(size, cache.image_hosts.get(image, 0), len(cache.hosts))

    def normalize(self, scores: Sequence[float]) -> list[float]:
        return list(scores)  # already 0..100, comparable across decisions
