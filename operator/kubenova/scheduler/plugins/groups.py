"""Affinity and anti-affinity over a topology key (a host label such as kubenova.io/hostname
or kubenova.io/rack). Groups are per namespace. Affinity: land in a domain that already holds
a VM of the group (anywhere while the group is empty, or its first VM could never land).
Anti-affinity: land in a domain holding fewer than maxPerDomain VMs of the group; a host
without the label is in no domain and is refused. Pure."""

from __future__ import annotations

from collections.abc import Mapping

from kubenova.api import constants
from kubenova.scheduler.cache import HostEntry
from kubenova.scheduler.explain import Reason
from kubenova.scheduler.plugins.base import CycleState


def domain_of(host: HostEntry, topology_key: str) -> str | None:
    value = host.info.labels.get(topology_key)
    if value is None and topology_key == constants.LABEL_HOSTNAME:
        return host.info.name
    return value


class Groups:
    def pre_filter(self, state: CycleState) -> Reason | None:
        vm = state.vm
        cache = state.cache
        for rule in vm.affinity:
            members = cache.groups.get((vm.namespace, rule.group))
            if members:
                domains = _domain_counts(cache.by_id, members, rule.topology_key)
                state.affinity.append((rule.topology_key, frozenset(domains)))
        for rule in vm.anti_affinity:
            members = cache.groups.get((vm.namespace, rule.group), {})
            counts = _domain_counts(cache.by_id, members, rule.topology_key)
            state.anti_affinity.append((rule.topology_key, counts, rule.max_per_domain))
        return None

    def filter(self, state: CycleState, host: HostEntry) -> Reason | None:
        for key, domains in state.affinity:
            if domain_of(host, key) not in domains:
                return Reason.AFFINITY
        for key, counts, limit in state.anti_affinity:
            domain = domain_of(host, key)
            if domain is None or counts.get(domain, 0) >= limit:
                return Reason.ANTI_AFFINITY
        return None


def _domain_counts(
    by_id: Mapping[int, HostEntry], members: Mapping[int, int], key: str
) -> dict[str, int]:
    counts: dict[str, int] = {}
    for host_id, n in members.items():
        domain = domain_of(by_id[host_id], key)
        if domain is not None:
            counts[domain] = counts.get(domain, 0) + n
    return counts
