"""Adapters from the API models (pydantic, quantities) to the scheduler's plain types, and from
its pool status back to the API's. The only module of the scheduler that knows the API. Pure."""

from __future__ import annotations

from kubenova.api import Flavor, Host, Quantity, ResourcePool, VirtualMachine, constants
from kubenova.api import host as api_host
from kubenova.api import meta as api_meta
from kubenova.api import pool as api_pool
from kubenova.api import vm as api_vm
from kubenova.scheduler import model, status

MIB = 1024 * 1024


def mib_up(q: Quantity) -> int:
    """A request in MiB, rounded up (a VM never gets less than it asked for)."""
    return -(-q.to_int() // MIB)


def mib_down(q: Quantity) -> int:
    """A capacity in MiB, rounded down (a host never promises more than it has)."""
    return q.to_int() // MIB


def selector(s: api_meta.LabelSelector) -> model.Selector:
    return model.Selector(
        match_labels=tuple(sorted(s.match_labels.items())),
        expressions=tuple(
            model.Requirement(r.key, model.SelectorOp(r.operator.value), frozenset(r.values))
            for r in s.match_expressions
        ),
    )


def host(h: Host, heartbeat_at: float, heartbeat_max_age: float = 40.0) -> model.HostInfo:
    """`heartbeat_at`: the clock time of the host's last Lease renewal the operator saw;
    `heartbeat_max_age`: the Lease's duration."""
    labels = dict(h.metadata.labels)
    labels.setdefault(constants.LABEL_HOSTNAME, h.metadata.name)
    cap = h.status.capacity
    return model.HostInfo(
        name=h.metadata.name,
        cpus=cap.cpus,
        memory_mib=mib_down(cap.memory),
        disk_mib=mib_down(cap.disk),
        labels=labels,
        gpus=tuple(model.GPU(g.model, g.pci_address) for g in cap.gpus),
        # A host being drained takes no new VMs, cordoned or not.
        unschedulable=h.spec.unschedulable or constants.ANNOTATION_DRAIN in h.metadata.annotations,
        taints=tuple(
            model.Taint(t.key, t.value, model.TaintEffect(t.effect.value)) for t in h.spec.taints
        ),
        ready=h.status.phase is api_host.HostPhase.READY,
        heartbeat_at=heartbeat_at,
        heartbeat_max_age=heartbeat_max_age,
        images={i.name: -(-i.size // MIB) for i in h.status.images} or model.NO_IMAGES,
    )


def flavor(f: Flavor) -> model.FlavorInfo:
    s = f.spec
    gpus: dict[str, int] = {}
    for g in s.gpus:
        gpus[g.model] = gpus.get(g.model, 0) + g.count
    size = model.Size(s.vcpus, mib_up(s.memory), mib_up(s.disk), tuple(sorted(gpus.items())))
    return model.FlavorInfo(f.metadata.name, size)


def vm(v: VirtualMachine, size_of_flavor: model.Size | None, created_at: float) -> model.VMRequest:
    """The VM's own resources (copied from its flavor at admission) win over the flavor's.
    Raises ValueError, naming the VM, when neither is known."""
    spec = v.spec
    ns = v.metadata.namespace or "default"
    key = f"{ns}/{v.metadata.name}"
    if spec.resources is not None:
        r = spec.resources
        size = model.Size(r.vcpus, mib_up(r.memory), mib_up(r.disk), tuple(sorted(r.gpus.items())))
    elif size_of_flavor is not None:
        size = size_of_flavor
    else:
        raise ValueError(
            f"VirtualMachine {key}: spec.resources is empty and flavor {spec.flavor} is unknown;"
            " create the Flavor or let the admission webhook fill spec.resources"
        )
    pl = spec.placement
    return model.VMRequest(
        key=key,
        namespace=ns,
        flavor=spec.flavor,
        size=size,
        pool=spec.pool or constants.DEFAULT_POOL,
        priority=spec.priority,
        node_selector=tuple(sorted(pl.node_selector.items())),
        groups=tuple(pl.groups),
        affinity=tuple(_rule(r) for r in pl.affinity),
        anti_affinity=tuple(_rule(r) for r in pl.anti_affinity),
        tolerations=tuple(
            model.Toleration(t.key, t.operator == "Exists", t.value) for t in pl.tolerations
        ),
        created_at=created_at,
        image=spec.boot.image,
    )


_POLICY_WEIGHTS = {
    api_pool.PlacementPolicy.PACK: model.Weights(pack=1, spread=0, load=0, image=1),
    api_pool.PlacementPolicy.SPREAD: model.Weights(pack=0, spread=1, load=0, image=1),
    api_pool.PlacementPolicy.LOAD_AWARE: model.Weights(pack=0, spread=1, load=2, image=1),
}


def pool(p: ResourcePool) -> model.PoolInfo:
    s = p.spec
    w = s.score_weights
    weights = (
        model.Weights(w.pack, w.spread, w.load, w.image)
        if w is not None
        else _POLICY_WEIGHTS[s.placement_policy]
    )
    rb = s.rebalance
    return model.PoolInfo(
        name=p.metadata.name,
        selector=selector(s.host_selector),
        cpu_ratio=s.overcommit.cpu,
        memory_ratio=s.overcommit.memory,
        weights=weights,
        namespaces=frozenset(s.namespaces),
        reservations=tuple((r.flavor, r.count) for r in s.reservations),
        rebalance=model.RebalanceSettings(
            rb.enabled,
            float(rb.cpu_threshold_percent),
            float(rb.memory_threshold_percent),
            rb.max_migrations_per_hour,
        ),
    )


def pool_status(s: status.PoolStatus) -> api_pool.ResourcePoolStatus:
    """The API's status fields (observedGeneration and conditions are the caller's)."""
    return api_pool.ResourcePoolStatus(
        hosts=s.hosts,
        ready_hosts=s.ready_hosts,
        capacity=_resources(s.capacity),
        allocated=_resources(s.allocated),
        reserved=_resources(s.reserved),
        available=[api_pool.FlavorFit(flavor=f, count=n) for f, n in s.available.items()],
    )


def _resources(a: status.Amount) -> api_pool.PoolResources:
    return api_pool.PoolResources(
        vcpus=a.vcpus,
        memory=Quantity.from_value(a.memory_mib * MIB),
        disk=Quantity.from_value(a.disk_mib * MIB),
        gpus=a.gpus,
    )


def _rule(r: api_vm.GroupRule) -> model.GroupRule:
    return model.GroupRule(r.group, r.topology_key, r.max_per_domain)
