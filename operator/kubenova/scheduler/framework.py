"""The scheduling cycle: PreFilter → search the pool's hosts in free-memory order, filtering
until a few fit → Score → NormalizeScore → weight → pick among the best few at random →
Reserve (a reservation slot, or an assumption in the cache). Nothing fits: an explanation.

Why not scan every host (Nova): the pool's hosts are kept sorted by free memory, so hosts
without room for the VM's memory are skipped by one bisection and the search stops after
`candidates` feasible hosts. Cordoned and not-ready hosts are in no order at all; tainted
hosts have their own, searched only for VMs that tolerate something. Best-fit (pack) walks up
from the smallest host that has room, worst-fit (spread, load) walks down from the emptiest.
Pure."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from kubenova.scheduler.cache import ID_BITS, ID_MASK, CapacityCache, HostEntry, PoolState
from kubenova.scheduler.explain import Reason, Tally
from kubenova.scheduler.model import Clock, FlavorInfo, Size, VMRequest
from kubenova.scheduler.plugins import (
    base,
    fit,
    groups,
    health,
    images,
    nodeselector,
    pool,
    scores,
)
from kubenova.scheduler.plugins import taints as taints_plugin
from kubenova.scheduler.reservations import Reservations


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    candidates: int = 8
    """Feasible hosts scored per decision under pack or spread (kube-scheduler's
    percentageOfNodesToScore, as a count)."""
    load_candidates: int = 32
    """Feasible hosts scored when load dominates, since load does not follow free memory."""
    tie_tolerance: float = 1.0
    """Candidates within this many points (of 100 per unit weight) of the best are ties."""
    tie_pool: int = 3
    """At most this many of the best candidates take part in the random tie-break."""


@dataclass(frozen=True, slots=True)
class Decision:
    vm: str
    host: str
    gpus: tuple[str, ...]
    """PCI addresses of the GPUs the VM gets on that host."""
    score: float
    examined: int
    """Hosts the filters looked at."""
    reservation: str | None = None
    """The reservation slot claimed, if any."""


@dataclass(frozen=True, slots=True)
class Unschedulable:
    vm: str
    message: str
    """One line for the VM's status, e.g. `0/10 hosts: 8 insufficient memory, 2 cordoned`."""
    counts: dict[Reason, int] = field(default_factory=dict)
    """Hosts removed per reason; they add up to every host in the cache."""

    @property
    def reasons(self) -> frozenset[Reason]:
        """What the queue needs to know which events could help."""
        return frozenset(self.counts)


@dataclass(slots=True)
class Plugins:
    pre_filters: list[base.PreFilter]
    filters: list[base.Filter]
    """In order: a host is counted against the first filter that removes it."""
    scores: list[base.Score]


def default_plugins(config: SchedulerConfig) -> Plugins:
    group = groups.Groups()
    return Plugins(
        pre_filters=[pool.PoolAccess(), group],
        filters=[
            fit.Fit(),
            health.Health(),
            taints_plugin.Taints(),
            nodeselector.NodeSelector(),
            group,
        ],
        scores=[scores.Pack(), scores.Spread(), scores.Load(), images.ImageLocality()],
    )


class Scheduler:
    def __init__(
        self,
        cache: CapacityCache,
        clock: Clock,
        rng: random.Random,
        config: SchedulerConfig | None = None,
        plugins: Plugins | None = None,
    ) -> None:
        self.cache = cache
        self.clock = clock
        self.rng = rng
        self.config = config or SchedulerConfig()
        self.plugins = plugins or default_plugins(self.config)
        self.reservations = Reservations(cache)
        self._fit_free = [f for f in self.plugins.filters if not isinstance(f, fit.Fit)]
        self._slot_filters: list[base.Filter] = [
            f
            for f in self.plugins.filters
            if isinstance(f, fit.Fit | health.Health | taints_plugin.Taints)
        ]

    # -- the cycle -----------------------------------------------------------------------

    def schedule(self, vm: VMRequest) -> Decision | Unschedulable:
        """Place `vm` and count it in the cache (assumed); or say why it cannot go anywhere.
        A VM the cache already counts somewhere gets that placement back (idempotent)."""
        held = self.cache.allocations.get(vm.key)
        if held is not None and not held.slot:
            return Decision(vm.key, held.host, held.gpus, 0.0, 0)
        state = self.prepare(vm)
        if isinstance(state, Unschedulable):
            return state
        claimed = self.reservations.claim(
            vm, lambda h: _passes(self._fit_free, state, h) is None, state.now
        )
        if claimed is not None:
            self.reservations.top_up(vm.pool, vm.flavor, self.place_slot)
            return Decision(vm.key, claimed.host, claimed.gpus, 0.0, 1, claimed.key)
        found, examined, tally = self._search(state, self.plugins.filters)
        if not found:
            return Unschedulable(vm.key, tally.message(), dict(tally.counts))
        host, score = self._choose(state, found)
        a = self.cache.assume(vm, host.name, state.now)
        return Decision(vm.key, host.name, a.gpus, score, examined)

    def prepare(self, vm: VMRequest) -> base.CycleState | Unschedulable:
        """Run the PreFilters; an Unschedulable when the whole pool is out."""
        total = len(self.cache.hosts)
        p = self.cache.pools.get(vm.pool)
        if p is None:
            return _whole_pool(vm, total, Reason.NO_POOL)
        state = base.CycleState(vm, p, self.cache, self.clock())
        for pf in self.plugins.pre_filters:
            r = pf.pre_filter(state)
            if r is not None:
                return _whole_pool(vm, total, r)
        return state

    def check(self, vm: VMRequest, host: str) -> Reason | None:
        """Would `host` take `vm` now (every filter, pool membership included)?"""
        state = self.prepare(vm)
        if isinstance(state, Unschedulable):
            return next(iter(state.reasons), Reason.NO_POOL)
        e = self.cache.hosts.get(host)
        if e is None or e.id not in state.pool.members:
            return Reason.NOT_IN_POOL
        return _passes(self.plugins.filters, state, e)

    def place_slot(self, p: PoolState, flavor: FlavorInfo) -> str | None:
        """Choose a host for a reservation slot: fit, health and taints only."""
        probe = VMRequest(key="@slot", namespace="", flavor=flavor.name, size=flavor.size)
        state = base.CycleState(probe, p, self.cache, self.clock())
        found, _, _ = self._search(state, self._slot_filters)
        return self._choose(state, found)[0].name if found else None

    def refill_reservations(self, pool_name: str) -> int:
        """Re-check and top up a pool's reservation slots; returns how many are short."""
        now = self.clock()
        h = health.Health()
        p = self.cache.pools.get(pool_name)
        if p is None:
            return self.reservations.refill(pool_name, self.place_slot, lambda _: False)
        probe = VMRequest(key="@slot", namespace="", flavor="", size=_NOTHING)
        state = base.CycleState(probe, p, self.cache, now)
        return self.reservations.refill(
            pool_name, self.place_slot, lambda e: h.filter(state, e) is None
        )

    def feasible_by_scan(self, vm: VMRequest) -> list[HostEntry] | Unschedulable:
        """Every host that passes every filter, by looking at each host in the cache as
        Nova's filter scheduler does. The oracle for tests and the benchmark's baseline."""
        state = self.prepare(vm)
        if isinstance(state, Unschedulable):
            return state
        member = pool.PoolMember()
        filters = [member, *self.plugins.filters]
        return [e for e in self.cache.hosts.values() if _passes(filters, state, e) is None]

    def score(self, state: base.CycleState, found: Sequence[HostEntry]) -> list[float]:
        """Weighted, normalised total per candidate."""
        weights = state.pool.info.weights
        totals = [0.0] * len(found)
        for plugin in self.plugins.scores:
            w = plugin.weight(weights)
            if not w:
                continue
            raw = [plugin.score(state, e) for e in found]
            for i, s in enumerate(plugin.normalize(raw)):
                totals[i] += w * s
        return totals

    # -- internals -----------------------------------------------------------------------

    def _search(
        self, state: base.CycleState, filters: Sequence[base.Filter]
    ) -> tuple[list[HostEntry], int, Tally]:
        p = state.pool
        weights = p.info.weights
        load_first = weights.load > max(weights.pack, weights.spread)
        best_fit = not load_first and weights.pack >= weights.spread
        want = self.config.load_candidates if load_first else self.config.candidates
        lower = state.vm.size.memory_mib << ID_BITS
        orders = [p.order, p.tainted] if state.vm.tolerations else [p.order]
        found: list[HostEntry] = []
        counts: dict[Reason, int] = {}
        examined = 0
        by_id = self.cache.by_id
        for order in orders:
            # A separate quota per order, so tainted hosts compete with the best plain ones.
            quota = len(found) + want
            keys: Iterator[int] = order.iter_from(lower) if best_fit else order.iter_desc()
            for key in keys:
                if key < lower:
                    break
                e = by_id[key & ID_MASK]
                examined += 1
                for f in filters:
                    r = f.filter(state, e)
                    if r is not None:
                        counts[r] = counts.get(r, 0) + 1
                        break
                else:
                    found.append(e)
                    if len(found) >= quota:
                        break
        tally = Tally(len(self.cache.hosts), p.info.name, counts)
        if not found:
            # Hosts the search never visited, by why it did not need to.
            for order in orders:
                tally.add(Reason.INSUFFICIENT_MEMORY, order.count_below(lower))
            if not state.vm.tolerations:
                tally.add(Reason.TAINTED, len(p.tainted))
            tally.add(Reason.CORDONED, len(p.cordoned))
            tally.add(Reason.NOT_READY, len(p.not_ready))
            tally.add(Reason.NOT_IN_POOL, len(self.cache.hosts) - len(p.members))
        return found, examined, tally

    def _choose(
        self, state: base.CycleState, found: Sequence[HostEntry]
    ) -> tuple[HostEntry, float]:
        if len(found) == 1:
            return found[0], 0.0
        totals = self.score(state, found)
        ranked = sorted(zip(totals, range(len(found)), strict=True), reverse=True)
        best = ranked[0][0]
        ties = [
            i for s, i in ranked[: self.config.tie_pool] if s >= best - self.config.tie_tolerance
        ]
        i = ties[0] if len(ties) == 1 else self.rng.choice(ties)
        return found[i], totals[i]


_NOTHING = Size(vcpus=0, memory_mib=0, disk_mib=0)


def _passes(
    filters: Sequence[base.Filter], state: base.CycleState, host: HostEntry
) -> Reason | None:
    for f in filters:
        r = f.filter(state, host)
        if r is not None:
            return r
    return None


def _whole_pool(vm: VMRequest, total: int, reason: Reason) -> Unschedulable:
    text = reason.value.format(pool=vm.pool)
    return Unschedulable(vm.key, f"0/{total} hosts: {text}", {reason: total})
