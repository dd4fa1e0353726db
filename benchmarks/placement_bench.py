"""Placement at scale: kube-scheduler and the kubenova operator through the same API server,
side by side in one run (issue 15).

    python benchmarks/placement_bench.py                           # 1,000 hosts, 10,000 objects
    python benchmarks/placement_bench.py --hosts 100 --vms 1000    # a quick check
    python benchmarks/placement_bench.py --hosts 10000 --vms 100000

For each side, on a fresh control plane of its own (etcd, kube-apiserver and the reduced
kube-controller-manager of `kubenova.dev.cluster`, which runs no node-lifecycle controller, so
nothing taints the Nodes):

  1. N hosts: Nodes with allocatable cpu / memory / pods and a Ready condition (kube-scheduler),
     or Hosts with their capacity and phase Ready (kubenova) — the same 64 CPUs / 256 GiB each;
  2. the same Lease renewal load: a load generator in a process of its own renews every host's
     Lease every 10 s (`kube-node-lease/<node>` as a kubelet does; `kubenova-system/
     kubenova-host-<host>` as the agent does), one PUT each with the last resourceVersion;
  3. M objects of the same mix (60 % 1 vCPU / 2 GiB, 30 % 2 / 4 GiB, 10 % 4 / 8 GiB), all
     created before the scheduler starts: Pods, or VirtualMachines in a pool with three
     Flavors (no webhooks on this side: nothing admits the VMs but the API server's schema,
     so each VM is created as kubenova's mutating webhook leaves one, with its trace id and
     domain-cleanup finalizer; a kube-scheduler Pod needs neither);
  4. the scheduler starts — kube-scheduler of the control plane's own Kubernetes release, its
     client qps / burst lifted as `scheduler_perf` does, or one real operator replica
     (`python -m kubenova.operator`) — and is timed until a watch has seen every object bound
     (a Pod's `spec.nodeName`, a VM's `status.host`). Each logs in as `--identities` says;
     by default kube-scheduler with the admin's client certificate (group system:masters,
     which API Priority and Fairness exempts: the peer at its strongest) and the operator as
     the chart runs it (its ServiceAccount's token under the chart's RBAC and FlowSchemas,
     which queue its requests in APF's workload-high priority level, its leader election in
     leader-election, as kube-controller-manager's and kube-scheduler's are);
  5. kubenova only, after all are bound: a warm standby replica is started beside the leader,
     the leader is SIGKILLed, one more VM is created, and the time until the new leader binds
     it is taken.

Printed per side: all bound (s), binds/s, the scheduler's CPU seconds (utime + stime), the
API server's CPU seconds over the same window (and net of the background measured just before
the start: the lease load and the watch), API writes per bound object (kube-apiserver's own
`apiserver_request_total`, before and after, Lease writes aside), API server CPU per bind,
peak RSS (VmHWM), takeover time; and how busy the whole machine was, since it is shared.

Everything it starts dies with it: each child is in a process group of its own with
PR_SET_PDEATHSIG, and an exit handler (also on SIGINT / SIGTERM / SIGHUP) kills the groups and
the control planes. Not a pytest test: a program that prints figures; the pure helpers (mix,
bodies, metric parsing, profile summary) are unit-tested in tests/unit/benchmarks/.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import ctypes
import datetime as dt
import functools
import json
import os
import random
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from kubenova.api import constants
from kubenova.api.host import HostCapacity, HostLoad, HostPhase, HostStatus, NUMACell
from kubenova.api.meta import Condition, ConditionStatus
from kubenova.api.quantity import Quantity
from kubenova.dev import machine

NS = "bench"
SYSTEM_NS = "kubenova-system"
NODE_LEASE_NS = "kube-node-lease"
POOL = "bench"
RELEASE = "kubenova"
"""The Helm release the operator's RBAC is rendered for (its ServiceAccount: kubenova-operator)."""
CLASS_LABEL = "kubenova.io/class"
HOST_CPUS = 64
HOST_MEMORY_GIB = 256
HOST_PODS = 110
LEASE_SECONDS = 40
"""A kubelet's node Lease duration, and the one scale_bench gives its agents."""
MUTATING = frozenset({"POST", "PUT", "PATCH", "APPLY", "DELETE", "DELETECOLLECTION"})
MERGE = "application/merge-patch+json"


# -- pure: the workload ------------------------------------------------------------------------


@dataclass(frozen=True)
class Size:
    flavor: str
    vcpus: int
    memory_gib: int


SIZES = (Size("bench-small", 1, 2), Size("bench-medium", 2, 4), Size("bench-large", 4, 8))
SHARES = (0.6, 0.3, 0.1)


def object_mix(n: int, seed: int = 7) -> list[Size]:
    """`n` sizes in exactly the shares of SHARES (largest remainder), in a seeded random order:
    both sides get the same sequence."""
    exact = [n * s for s in SHARES]
    counts = [int(x) for x in exact]
    by_remainder = sorted(range(len(SIZES)), key=lambda i: exact[i] - counts[i], reverse=True)
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    out = [size for size, count in zip(SIZES, counts, strict=True) for _ in range(count)]
    random.Random(seed).shuffle(out)
    return out


def object_names(n: int, prefix: str = "o") -> list[str]:
    width = max(5, len(str(n)))
    return [f"{prefix}-{i:0{width}d}" for i in range(n)]


def host_names(n: int) -> list[str]:
    return object_names(n, "h")


def micro_time(t: dt.datetime) -> str:
    """A Kubernetes MicroTime (what Lease renewTime takes)."""
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def node_body(name: str, now: dt.datetime) -> dict[str, Any]:
    """A Node as a kubelet registers it, Ready, with no taint."""
    resources = {"cpu": str(HOST_CPUS), "memory": f"{HOST_MEMORY_GIB}Gi", "pods": str(HOST_PODS)}
    stamp = now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
            },
        },
        "spec": {},
        "status": {
            "capacity": resources,
            "allocatable": resources,
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "simulated by placement_bench",
                    "lastHeartbeatTime": stamp,
                    "lastTransitionTime": stamp,
                }
            ],
        },
    }


def pod_body(name: str, size: Size) -> dict[str, Any]:
    requests = {"cpu": str(size.vcpus), "memory": f"{size.memory_gib}Gi"}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "containers": [
                {
                    "name": "c",
                    "image": "registry.k8s.io/pause:3.10",
                    "resources": {"requests": requests},
                }
            ],
            "terminationGracePeriodSeconds": 0,
        },
    }


def host_body(name: str) -> dict[str, Any]:
    return {
        "apiVersion": constants.API_VERSION,
        "kind": "Host",
        "metadata": {"name": name, "labels": {CLASS_LABEL: "general"}},
        "spec": {},
    }


def host_status(now: dt.datetime) -> dict[str, Any]:
    """A Host's status as its agent and the operator leave it on a running cluster: capacity,
    a load report, phase Ready with its condition (so the operator has no phase to write)."""
    memory = Quantity(f"{HOST_MEMORY_GIB}Gi")
    return HostStatus(
        phase=HostPhase.READY,
        capacity=HostCapacity(
            cpus=HOST_CPUS,
            memory=memory,
            disk=Quantity("2Ti"),
            numa_cells=[NUMACell(id=0, cpus=HOST_CPUS, memory=memory)],
        ),
        load=HostLoad(cpu_percent=0.0, memory_percent=0.0, reported_at=now),
        hypervisor="placement_bench",
        agent_version="placement_bench",
        conditions=[
            Condition(
                type=constants.COND_HOST_READY,
                status=ConditionStatus.TRUE,
                reason=constants.REASON_HEARTBEAT_FRESH,
                message="heartbeat Lease is fresh",
                last_transition_time=now,
            )
        ],
    ).to_dict()


def flavor_body(size: Size) -> dict[str, Any]:
    return {
        "apiVersion": constants.API_VERSION,
        "kind": "Flavor",
        "metadata": {"name": size.flavor},
        "spec": {"vcpus": size.vcpus, "memory": f"{size.memory_gib}Gi", "disk": "20Gi"},
    }


def pool_body(policy: str) -> dict[str, Any]:
    return {
        "apiVersion": constants.API_VERSION,
        "kind": "ResourcePool",
        "metadata": {"name": POOL},
        "spec": {
            "hostSelector": {"matchLabels": {CLASS_LABEL: "general"}},
            "placementPolicy": policy,
        },
    }


def vm_body(name: str, size: Size) -> dict[str, Any]:
    """A VM as the mutating webhook leaves it (no quota here, so no charge): what a user
    writes, plus a trace id and the domain-cleanup finalizer, given at create."""
    return {
        "apiVersion": constants.API_VERSION,
        "kind": "VirtualMachine",
        "metadata": {
            "name": name,
            "namespace": NS,
            "annotations": {constants.ANNOTATION_TRACE_ID: f"bench-{name}"},
            "finalizers": [constants.VM_FINALIZER],
        },
        "spec": {"flavor": size.flavor, "pool": POOL, "boot": {"image": "base.qcow2"}},
    }


def lease_seconds(period: float) -> int:
    """A Lease's duration for renewals every `period` seconds: a kubelet's 40 s at its 10 s,
    four periods at longer ones, so a host never expires between two renewals."""
    return max(LEASE_SECONDS, int(4 * period))


def lease_body(
    name: str,
    namespace: str,
    holder: str,
    now: dt.datetime,
    resource_version: str | None = None,
    duration: int = LEASE_SECONDS,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if resource_version is not None:
        meta["resourceVersion"] = resource_version
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": meta,
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": duration,
            "renewTime": micro_time(now),
        },
    }


def scheduler_config(kubeconfig: Path, qps: float, burst: int) -> dict[str, Any]:
    """kube-scheduler's configuration: scheduler_perf's lifted client limits, no election."""
    return {
        "apiVersion": "kubescheduler.config.k8s.io/v1",
        "kind": "KubeSchedulerConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig), "qps": qps, "burst": burst},
        "leaderElection": {"leaderElect": False},
    }


# -- pure: what the processes and the API server report ----------------------------------------

_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True, order=True)
class Request:
    verb: str
    resource: str
    subresource: str = ""

    def __str__(self) -> str:
        what = f"{self.resource}/{self.subresource}" if self.subresource else self.resource
        return f"{self.verb} {what}"


def request_totals(metrics_text: str) -> Counter[Request]:
    """kube-apiserver's `apiserver_request_total`, summed over codes, scopes and versions, by
    verb, resource and subresource."""
    out: Counter[Request] = Counter()
    for line in metrics_text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        m = _SAMPLE.match(line)
        if m is None:
            continue
        labels = dict(_LABEL.findall(m.group("labels") or ""))
        key = Request(
            labels.get("verb", ""), labels.get("resource", ""), labels.get("subresource", "")
        )
        out[key] += round(float(m.group("value")))
    return out


@dataclass
class Flow:
    """What API Priority and Fairness did with one priority level's requests."""

    dispatched: float = 0.0
    rejected: float = 0.0
    """Refused with 429 (queue full, time out in queue, concurrency limit)."""
    waited: float = 0.0
    """Seconds the dispatched and rejected requests spent queued, summed."""
    queued: float = 0.0
    """How many requests `waited` is over."""


_FLOW_METRICS = {
    "apiserver_flowcontrol_dispatched_requests_total": "dispatched",
    "apiserver_flowcontrol_rejected_requests_total": "rejected",
    "apiserver_flowcontrol_request_wait_duration_seconds_sum": "waited",
    "apiserver_flowcontrol_request_wait_duration_seconds_count": "queued",
}


def flow_totals(metrics_text: str) -> dict[str, Flow]:
    """kube-apiserver's APF counters by priority level (summed over flow schemas)."""
    out: dict[str, Flow] = {}
    for line in metrics_text.splitlines():
        if not line.startswith("apiserver_flowcontrol_"):
            continue
        m = _SAMPLE.match(line)
        if m is None or m.group("name") not in _FLOW_METRICS:
            continue
        level = dict(_LABEL.findall(m.group("labels") or "")).get("priority_level", "")
        flow = out.setdefault(level, Flow())
        attr = _FLOW_METRICS[m.group("name")]
        setattr(flow, attr, getattr(flow, attr) + float(m.group("value")))
    return out


def flows_between(before: dict[str, Flow], after: dict[str, Flow]) -> dict[str, Flow]:
    """Each priority level's counts between two snapshots; levels with no request left out."""
    out = {}
    for level, a in after.items():
        b = before.get(level, Flow())
        d = Flow(*(getattr(a, f.name) - getattr(b, f.name) for f in fields(Flow)))
        if d.dispatched or d.rejected:
            out[level] = d
    return out


def render_flows(flows: dict[str, Flow], bound: int) -> str:
    """`workload-high 1.20 per bound (0.28 rejected), queued 0.4 ms on average; ...`"""
    parts = []
    for level, f in sorted(flows.items(), key=lambda kv: -kv[1].dispatched):
        rejected = f", {f.rejected / max(bound, 1):.2f} rejected (429)" if f.rejected else ""
        wait = f", queued {f.waited / f.queued * 1e3:.1f} ms on average" if f.queued else ""
        parts.append(f"{level} {f.dispatched / max(bound, 1):.2f}{rejected}{wait}")
    return "; ".join(parts) or "none"


def writes_between(
    before: Counter[Request],
    after: Counter[Request],
    skip: Iterable[str] = ("leases",),
    verbs: Iterable[str] = MUTATING,
) -> Counter[Request]:
    """The requests of `verbs` (writes by default) made between two snapshots, without those on
    `skip` resources (the Lease renewals are the load generator's, the same on both sides)."""
    skipped, wanted = set(skip), set(verbs)
    out: Counter[Request] = Counter()
    for key, n in after.items():
        if key.verb in wanted and key.resource not in skipped and n > before.get(key, 0):
            out[key] = n - before.get(key, 0)
    return out


READS = frozenset({"GET", "LIST"})


def parse_sides(spec: str, default_rev: str) -> list[tuple[str, str | None]]:
    """`kube-scheduler,kubenova@abc123,kubenova` → the sides in that order, each kubenova one
    with the commit its operator runs from (`default_rev` when none is named; None for the
    work tree as it is, `kubenova@worktree`)."""
    sides: list[tuple[str, str | None]] = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        kind, _, rev = part.partition("@")
        if kind == "kube-scheduler" and not rev:
            sides.append((kind, None))
        elif kind == "kubenova":
            rev = rev or default_rev
            sides.append((kind, None if rev == "worktree" else rev))
        else:
            raise ValueError(f"--sides: {part!r} is not kube-scheduler or kubenova[@commit]")
    return sides


def turn_names(names: list[str]) -> list[str]:
    """The sides' names, a name given twice (an A B B A run) told apart by its turn:
    `kube-scheduler`, `kubenova@abc1234`, `kubenova@abc1234 #2`, `kube-scheduler #2`."""
    seen: Counter[str] = Counter()
    out = []
    for name in names:
        seen[name] += 1
        out.append(name if seen[name] == 1 else f"{name} #{seen[name]}")
    return out


SIDE_KINDS = ("kube-scheduler", "kubenova")
IDENTITY_KINDS = ("admin", "deployed")
DEFAULT_IDENTITIES = "kube-scheduler=admin,kubenova=deployed"


def parse_identities(spec: str) -> dict[str, str]:
    """`kube-scheduler=admin,kubenova=deployed` -> {"kube-scheduler": "admin", ...}; a side
    not named logs in as the admin."""
    out = dict.fromkeys(SIDE_KINDS, "admin")
    for part in filter(None, (p.strip() for p in spec.split(","))):
        kind, sep, how = part.partition("=")
        if not sep or kind not in SIDE_KINDS or how not in IDENTITY_KINDS:
            raise ValueError(
                f"--identities: {part!r} is not kube-scheduler|kubenova=admin|deployed"
            )
        out[kind] = how
    return out


def log_summary(text: str) -> Counter[str]:
    """Warnings and errors in a JSON log (one object a line), by level and message start."""
    out: Counter[str] = Counter()
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict):
            continue
        level = str(record.get("level", ""))
        if level in ("warning", "error", "critical"):
            out[f"{level}: {str(record.get('msg', ''))[:70]}"] += 1
    return out


def last_write_time(obj: dict[str, Any]) -> float | None:
    """When the object was last written, as the writers stamped it, as a Unix time: the latest
    managedFields entry (whole seconds, the API server's), condition transition (a Pod's
    binding adds no managedFields entry, but sets its PodScheduled condition) or operation in
    a VM's history (a VM the webhook left without managedFields). None without any."""
    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    times = [m.get("time") for m in meta.get("managedFields") or []]
    times += [c.get("lastTransitionTime") for c in status.get("conditions") or []]
    times += [h.get("time") for h in status.get("history") or []]
    stamps = []
    for t in times:
        if isinstance(t, str):
            with contextlib.suppress(ValueError):
                at = dt.datetime.fromisoformat(t)
                stamps.append((at if at.tzinfo else at.replace(tzinfo=dt.UTC)).timestamp())
    return max(stamps, default=None)


def stat_cpu_seconds(stat_text: str, clock_ticks: int) -> float:
    """utime + stime of a /proc/<pid>/stat line (the command may hold spaces and parens)."""
    fields = stat_text.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / clock_ticks


def status_kib(status_text: str, key: str) -> int:
    """A `VmHWM:`-style line of /proc/<pid>/status, in KiB (0 when absent)."""
    for line in status_text.splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    return 0


def top_frames(collapsed: str, n: int = 15) -> list[tuple[str, float, float]]:
    """From py-spy's collapsed stacks ("a;b;c 12" a line): the `n` frames with the most
    samples, as (frame, own share, inclusive share) — own: the frame on top of the stack."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        frames = stack.split(";")
        total += samples
        own[frames[-1]] += samples
        for frame in set(frames):
            inclusive[frame] += samples
    if total == 0:
        return []
    ranked = sorted(inclusive, key=lambda f: (own[f], inclusive[f]), reverse=True)[:n]
    return [(f, own[f] / total, inclusive[f] / total) for f in ranked]


@dataclass
class SideResult:
    side: str
    hosts: int
    objects: int
    created_s: float = 0.0
    bound: int = 0
    all_bound_s: float = float("nan")
    scheduler_cpu_s: float = float("nan")
    apiserver_cpu_s: float = float("nan")
    apiserver_background_cpu_per_s: float = float("nan")
    background_renewals_per_s: float = float("nan")
    """The Lease renewals the load generator got through while the background was measured."""
    etcd_cpu_s: float = float("nan")
    writes: Counter[Request] = field(default_factory=Counter)
    reads: Counter[Request] = field(default_factory=Counter)
    flows: dict[str, Flow] = field(default_factory=dict)
    """API Priority and Fairness by priority level, over the same window as `writes`."""
    scheduler_peak_mib: float = float("nan")
    apiserver_peak_mib: float = float("nan")
    standby_peak_mib: float = float("nan")
    takeover_lease_s: float = float("nan")
    takeover_bind_s: float = float("nan")
    lease_renewals_per_s: float = float("nan")
    watch_lag_s: float = float("nan")
    """The worst delay between a binding's write and the benchmark's watch seeing it."""
    last_lag_s: float = float("nan")
    """That delay for the last binding: how much of "all bound" is the watch's own lag."""
    machine_busy_cores: float = float("nan")
    others_cores: float = float("nan")
    stolen_cores: float = float("nan")
    """CPU the host gave to others while ours wanted to run (/proc/stat's steal)."""
    reference_ms: float = float("nan")
    """The machine's speed over the window: the median CPU ms of `kubenova.dev.machine`'s
    fixed reference work, sampled every few seconds (lower is faster)."""
    notes: list[str] = field(default_factory=list)

    @property
    def binds_per_s(self) -> float:
        return self.bound / self.all_bound_s if self.all_bound_s > 0 else float("nan")

    @property
    def writes_per_bound(self) -> float:
        return sum(self.writes.values()) / self.bound if self.bound else float("nan")

    @property
    def apiserver_net_cpu_s(self) -> float:
        return self.apiserver_cpu_s - self.apiserver_background_cpu_per_s * self.all_bound_s

    @property
    def apiserver_net_load_cpu_s(self) -> float:
        """Net of the background scaled to the Lease renewals achieved in the window: on a
        starved machine the load generator falls behind (kube-scheduler's side got 64 of 100
        renewals/s through on 3 Dec), and subtracting the whole background then counts the
        renewals that did not happen as the scheduler's savings."""
        share = self.lease_renewals_per_s / self.background_renewals_per_s
        return self.apiserver_cpu_s - self.apiserver_background_cpu_per_s * self.all_bound_s * share

    @property
    def apiserver_net_load_ms_per_bind(self) -> float:
        return 1000 * self.apiserver_net_load_cpu_s / self.bound if self.bound else float("nan")

    @property
    def apiserver_ms_per_bind(self) -> float:
        return 1000 * self.apiserver_cpu_s / self.bound if self.bound else float("nan")

    @property
    def apiserver_net_ms_per_bind(self) -> float:
        return 1000 * self.apiserver_net_cpu_s / self.bound if self.bound else float("nan")


def renewals_per_s(before: dict[str, float], after: dict[str, float]) -> float:
    """The load generator's renewals per second between two of its stats files (NaN when
    either is missing or they are the same second's)."""
    if not before or not after or after.get("t", 0) <= before.get("t", 0):
        return float("nan")
    return (after["renewals"] - before["renewals"]) / (after["t"] - before["t"])


def _f(x: float, spec: str, unit: str = "") -> str:
    return "–" if x != x else f"{x:{spec}}{unit}"  # NaN: not measured


def render_table(results: Sequence[SideResult]) -> str:
    """The figures of each side as a Markdown table, one column per side."""
    rows: list[tuple[str, Callable[[SideResult], str]]] = [
        ("objects bound", lambda r: f"{r.bound:,} of {r.objects:,}"),
        ("all bound (from scheduler start)", lambda r: _f(r.all_bound_s, ".1f", " s")),
        ("binds/s", lambda r: _f(r.binds_per_s, ".0f")),
        ("scheduler CPU", lambda r: _f(r.scheduler_cpu_s, ".1f", " s")),
        ("kube-apiserver CPU (same window)", lambda r: _f(r.apiserver_cpu_s, ".1f", " s")),
        ("  net of the background", lambda r: _f(r.apiserver_net_cpu_s, ".1f", " s")),
        ("  net of the Lease load achieved", lambda r: _f(r.apiserver_net_load_cpu_s, ".1f", " s")),
        ("kube-apiserver CPU per bind", lambda r: _f(r.apiserver_ms_per_bind, ".2f", " ms")),
        ("  net of the background", lambda r: _f(r.apiserver_net_ms_per_bind, ".2f", " ms")),
        (
            "  net of the Lease load achieved",
            lambda r: _f(r.apiserver_net_load_ms_per_bind, ".2f", " ms"),
        ),
        ("etcd CPU (same window)", lambda r: _f(r.etcd_cpu_s, ".1f", " s")),
        ("API writes per bound object", lambda r: _f(r.writes_per_bound, ".2f")),
        ("scheduler peak RSS", lambda r: _f(r.scheduler_peak_mib, ".0f", " MiB")),
        ("warm standby peak RSS", lambda r: _f(r.standby_peak_mib, ".0f", " MiB")),
        ("kube-apiserver peak RSS", lambda r: _f(r.apiserver_peak_mib, ".0f", " MiB")),
        ("takeover: Lease taken after the kill", lambda r: _f(r.takeover_lease_s, ".1f", " s")),
        ("takeover: new VM bound after the kill", lambda r: _f(r.takeover_bind_s, ".1f", " s")),
        ("objects created before the start in", lambda r: _f(r.created_s, ".1f", " s")),
        ("Lease renewals/s (load generator)", lambda r: _f(r.lease_renewals_per_s, ".0f")),
        ("  while the background was measured", lambda r: _f(r.background_renewals_per_s, ".0f")),
        ("benchmark's watch: worst lag", lambda r: _f(r.watch_lag_s, ".0f", " s")),
        ("  at the last bind", lambda r: _f(r.last_lag_s, ".0f", " s")),
        ("machine busy (of 2 cores)", lambda r: _f(r.machine_busy_cores, ".2f", " cores")),
        ("  of which not this benchmark's", lambda r: _f(r.others_cores, ".2f", " cores")),
        ("CPU stolen by the host", lambda r: _f(r.stolen_cores, ".2f", " cores")),
        ("reference work CPU, median (machine speed)", lambda r: _f(r.reference_ms, ".1f", " ms")),
    ]
    head = f"| {results[0].hosts:,} hosts, {results[0].objects:,} objects | " + " | ".join(
        r.side for r in results
    )
    lines = [head + " |", "|---|" + "---:|" * len(results)]
    lines += [f"| {label} | " + " | ".join(cell(r) for r in results) + " |" for label, cell in rows]
    return "\n".join(lines)


def render_requests(results: Sequence[SideResult], reads: bool = False) -> str:
    """Requests per bound object by verb and resource, the most frequent first."""
    lines = []
    for r in results:
        counts = r.reads if reads else r.writes
        ranked = sorted(counts.items(), key=lambda kv: -kv[1])
        parts = ", ".join(f"{k} {n / max(r.bound, 1):.2f}" for k, n in ranked if n >= 10)
        lines.append(f"  {r.side}: {parts or 'none'}")
    return "\n".join(lines)


# -- processes: everything started dies with the benchmark -------------------------------------


def _die_with_parent() -> None:
    """In the child: SIGKILL when the benchmark dies, however it dies."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def cpu_seconds(pid: int) -> float:
    try:
        return stat_cpu_seconds(Path(f"/proc/{pid}/stat").read_text(), os.sysconf("SC_CLK_TCK"))
    except (FileNotFoundError, ProcessLookupError):
        return float("nan")


def peak_mib(pid: int) -> float:
    try:
        return status_kib(Path(f"/proc/{pid}/status").read_text(), "VmHWM") / 1024
    except (FileNotFoundError, ProcessLookupError):
        return float("nan")


class Reaper:
    """Every process group and control plane the benchmark started; `reap()` ends them all
    (at exit, on SIGINT / SIGTERM / SIGHUP, and between the sides)."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.planes: list[Any] = []
        self.folders: list[Path] = []

    def spawn(
        self, argv: Sequence[str], log: Path, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            proc = subprocess.Popen(
                list(argv),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        self.procs.append(proc)
        return proc

    @staticmethod
    def kill(proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)

    def reap(self) -> None:
        """End every process and control plane started so far."""
        for proc in reversed(self.procs):
            self.kill(proc)
        self.procs.clear()
        for plane in reversed(self.planes):
            kill_plane(plane)
        self.planes.clear()

    def cleanup(self) -> None:
        """`reap()`, then remove the state folders (at exit)."""
        self.reap()
        for folder in self.folders:
            shutil.rmtree(folder, ignore_errors=True)
        self.folders.clear()


def kill_plane(plane: Any) -> None:
    """SIGKILL the control plane's processes (its state is thrown away, so there is nothing to
    wait a graceful stop for), then let it clean up."""
    state = plane.state()
    for pid in state.pids.values() if state else ():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    plane.down(remove=True)


REAPER = Reaper()


def _on_signal(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


# -- the API, through aiohttp ------------------------------------------------------------------


class Api:
    """Plain HTTP to the API server with the admin kubeconfig's client certificate: small,
    pre-serialised requests, so the benchmark's own client costs little CPU."""

    def __init__(self, kubeconfig: Path, connections: int = 64) -> None:
        import aiohttp

        config = yaml.safe_load(kubeconfig.read_text())
        cluster_cfg = config["clusters"][0]["cluster"]
        user = config["users"][0]["user"]
        self.server: str = cluster_cfg["server"]
        self.ssl = ssl.create_default_context(cafile=cluster_cfg["certificate-authority"])
        self.ssl.load_cert_chain(user["client-certificate"], user["client-key"])
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=connections, ssl=self.ssl),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
        )

    async def close(self) -> None:
        await self.session.close()

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float = 60.0,
    ) -> tuple[int, bytes]:
        import aiohttp

        data = (
            None
            if body is None
            else (body if isinstance(body, bytes) else json.dumps(body).encode())
        )
        headers = {"Content-Type": content_type} if data is not None else {}
        async with self.session.request(
            method, self.server + path, data=data, headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as resp:  # fmt: skip
            return resp.status, await resp.read()

    async def json(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> Any:
        status, data = await self.call(method, path, body, content_type)
        if status >= 300:
            raise RuntimeError(f"{method} {path}: {status} {data[:300]!r}")
        return json.loads(data)

    async def create(self, path: str, body: Any, attempts: int = 20) -> None:
        """POST, retrying what a busy API server answers; 409 is an earlier attempt landing."""
        for attempt in range(attempts):
            try:
                status, data = await self.call("POST", path, body)
            except (TimeoutError, OSError) as e:
                status, data = 0, str(e).encode()
            if status < 300 or status == 409:
                return
            if status not in (0, 429, 500, 503, 504) or attempt == attempts - 1:
                raise RuntimeError(f"POST {path}: {status} {data[:300]!r}")
            await asyncio.sleep(0.2 * (attempt + 1))

    async def metrics_text(self) -> str:
        status, data = await self.call("GET", "/metrics")
        if status != 200:
            raise RuntimeError(f"GET /metrics: {status}")
        return data.decode()

    async def metrics(self) -> Counter[Request]:
        return request_totals(await self.metrics_text())


async def bounded(n: int, jobs: Iterable[Callable[[], Awaitable[None]]]) -> None:
    """Run the jobs with at most `n` in flight; the first failure is raised."""
    it = iter(jobs)

    async def worker() -> None:
        for job in it:
            await job()

    await asyncio.gather(*(worker() for _ in range(n)))


class Watch:
    """When each object in the namespace was first seen bound, from one watch (re-listed after
    a 410 or a dropped stream)."""

    def __init__(self, api: Api, path: str, is_bound: Callable[[dict[str, Any]], bool]) -> None:
        self.api, self.path, self.is_bound = api, path, is_bound
        self.bound: dict[str, float] = {}
        self.events = 0
        self.lag_s = 0.0
        self.worst_lag_s = 0.0
        self.task: asyncio.Task[None] | None = None

    def start(self, resource_version: str) -> None:
        self.task = asyncio.create_task(self._run(resource_version))

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    def _note(self, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        if name not in self.bound and self.is_bound(obj):
            self.bound[name] = time.monotonic()
            written = last_write_time(obj)
            if written is not None:
                # How late this watch saw the binding (1 s resolution): a starved benchmark
                # would otherwise add its own lag to "all bound".
                self.lag_s = max(0.0, time.time() - written)
                self.worst_lag_s = max(self.worst_lag_s, self.lag_s)

    async def _relist(self) -> str:
        token = ""
        while True:
            q = f"?limit=2000&continue={token}" if token else "?limit=2000"
            listing = await self.api.json("GET", self.path + q)
            for item in listing["items"]:
                self._note(item)
            token = listing["metadata"].get("continue") or ""
            if not token:
                return str(listing["metadata"]["resourceVersion"])

    async def _run(self, rv: str | None) -> None:
        import aiohttp

        while True:
            try:
                if rv is None:
                    rv = await self._relist()
                url = (f"{self.api.server}{self.path}?watch=1&resourceVersion={rv}"
                       "&allowWatchBookmarks=true&timeoutSeconds=600")  # fmt: skip
                async with self.api.session.get(
                    url, timeout=aiohttp.ClientTimeout(total=None, sock_read=120)
                ) as resp:
                    if resp.status == 410:
                        rv = None
                        continue
                    buf = b""
                    async for chunk in resp.content.iter_any():
                        buf += chunk
                        *lines, buf = buf.split(b"\n")
                        for line in lines:
                            if not line:
                                continue
                            event = json.loads(line)
                            obj = event["object"]
                            if event["type"] == "ERROR":
                                rv = None  # 410 Gone inside the stream: list again
                                break
                            rv = obj["metadata"]["resourceVersion"]
                            if event["type"] in ("ADDED", "MODIFIED"):
                                self.events += 1
                                self._note(obj)
                        if rv is None:
                            break
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the stream dropped: carry on from the last version
                print(f"  (watch {self.path}: {type(e).__name__}: {e}; resuming)", flush=True)
                await asyncio.sleep(0.5)


# -- the Lease load generator (a process of its own) -------------------------------------------


async def lease_load(spec: dict[str, Any]) -> None:
    """Create every Lease, write `ready`, then renew each every `period` seconds at its own
    offset (one PUT with the last resourceVersion, as a kubelet renews its node Lease; a 409
    reads the Lease back and retries). Writes counts to `stats` every second."""
    api = Api(Path(spec["kubeconfig"]), connections=spec.get("connections", 32))
    names: list[str] = spec["names"]
    holders: list[str] = spec["holders"]
    ns: str = spec["namespace"]
    period: float = spec["period"]
    duration = lease_seconds(period)
    base = f"/apis/coordination.k8s.io/v1/namespaces/{ns}/leases"
    rvs: dict[str, str] = {}
    stats = {"renewals": 0, "conflicts": 0, "errors": 0, "late": 0, "max_lag_s": 0.0}

    async def create(i: int) -> None:
        body = lease_body(names[i], ns, holders[i], dt.datetime.now(dt.UTC), None, duration)
        for attempt in range(20):
            status, data = await api.call("POST", base, body)
            if status < 300:
                rvs[names[i]] = json.loads(data)["metadata"]["resourceVersion"]
                return
            if status == 409:
                got = await api.json("GET", f"{base}/{names[i]}")
                rvs[names[i]] = got["metadata"]["resourceVersion"]
                return
            await asyncio.sleep(0.2 * (attempt + 1))
        raise RuntimeError(f"could not create Lease {names[i]}")

    await bounded(32, [functools.partial(create, i) for i in range(len(names))])
    Path(spec["ready"]).write_text("ready\n")

    async def renew(i: int) -> None:
        name = names[i]
        for _ in range(3):
            body = lease_body(
                name, ns, holders[i], dt.datetime.now(dt.UTC), rvs.get(name), duration
            )
            try:
                status, data = await api.call("PUT", f"{base}/{name}", body, timeout=30)
            except (TimeoutError, OSError):
                stats["errors"] += 1
                return
            if status < 300:
                rvs[name] = json.loads(data)["metadata"]["resourceVersion"]
                stats["renewals"] += 1
                return
            if status == 409:
                stats["conflicts"] += 1
                with contextlib.suppress(Exception):
                    rvs[name] = (await api.json("GET", f"{base}/{name}"))["metadata"][
                        "resourceVersion"
                    ]
                continue
            stats["errors"] += 1
            return

    slots = asyncio.Semaphore(spec.get("in_flight", 64))
    tasks: set[asyncio.Task[None]] = set()

    async def one(i: int) -> None:
        async with slots:
            await renew(i)

    n = len(names)
    start = time.monotonic()
    last_write = 0.0
    k = 0  # renewals dispatched so far; lease k % n is due at start + k * period / n
    while True:
        now = time.monotonic()
        while start + k * period / n <= now:
            lag = now - (start + k * period / n)
            if lag > 1.0:
                stats["late"] += 1
            stats["max_lag_s"] = max(stats["max_lag_s"], round(lag, 3))
            task = asyncio.create_task(one(k % n))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            k += 1
        if now - last_write >= 1.0:
            Path(spec["stats"]).write_text(json.dumps({**stats, "t": now - start}))
            last_write = now
        await asyncio.sleep(min(0.05, max(0.0, start + k * period / n - time.monotonic())))


class LeaseLoad:
    """The load generator's process, started on a side's control plane."""

    def __init__(
        self,
        folder: Path,
        kubeconfig: Path,
        namespace: str,
        names: list[str],
        holders: list[str],
        period: float,
    ) -> None:
        self.folder = folder
        self.stats_file = folder / "lease-load.json"
        ready = folder / "lease-load.ready"
        spec = {"kubeconfig": str(kubeconfig), "namespace": namespace, "names": names,
                "holders": holders, "period": period, "ready": str(ready),
                "stats": str(self.stats_file)}  # fmt: skip
        spec_file = folder / "lease-load.spec.json"
        spec_file.write_text(json.dumps(spec))
        self.ready = ready
        self.proc = REAPER.spawn(
            [sys.executable, str(Path(__file__).resolve()), "--lease-load", str(spec_file)],
            folder / "lease-load.log",
        )

    async def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = (self.folder / "lease-load.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the Lease load generator did not get ready:\n{tail}")
            await asyncio.sleep(0.2)

    def stats(self) -> dict[str, float]:
        try:
            got: dict[str, float] = json.loads(self.stats_file.read_text())
        except (OSError, ValueError):
            return {}
        return got


# -- one side ----------------------------------------------------------------------------------


@dataclass
class Run:
    """What both sides share: sizes, options, folders."""

    hosts: int
    vms: int
    folder: Path
    bin_dir: Path
    scheduler_bin: Path | None
    lease_period: float
    writers: int
    timeout: float
    policy: str
    qps: int
    operator_args: list[str]
    takeover: bool
    profile: bool
    background_s: float
    apiserver_profile_s: float = 0.0
    identities: dict[str, str] = field(default_factory=dict)
    """How each side's scheduler logs in, by side kind (`parse_identities`)."""

    @property
    def mix(self) -> list[Size]:
        return object_mix(self.vms)


class Side:
    """A fresh control plane with N hosts, their Lease load and M objects, and the
    measurements around the scheduler's start; `schedule()` is each side's own."""

    kind = ""
    object_path = ""
    profiled = False
    """Whether --profile applies (py-spy reads Python processes only)."""

    def __init__(self, run: Run, name: str = "") -> None:
        from kubenova.dev import cluster

        self.run = run
        self.name = name or self.kind
        self.slug = self.name.replace(" #", "-")
        """The name as a file name."""
        self.folder = run.folder / self.slug
        self.folder.mkdir(parents=True)
        self.plane = cluster.ControlPlane(
            self.folder / "cp", run.bin_dir, die_with_parent=True,
            profiling=bool(run.apiserver_profile_s),
        )  # fmt: skip
        self.result = SideResult(self.name, run.hosts, run.vms)
        self.api: Api | None = None
        self.load: LeaseLoad | None = None
        self.kubeconfig = self.plane.kubeconfig
        """The scheduler's kubeconfig (the identity it logs in as)."""
        self.speed_file = self.folder / "speed.txt"
        """The machine speed probe's samples (`kubenova.dev.machine`)."""

    def say(self, message: str) -> None:
        print(f"  [{self.name}] {message}", flush=True)

    def is_bound(self, obj: dict[str, Any]) -> bool:
        raise NotImplementedError

    async def prepare(self, api: Api) -> None:
        """Hosts, their Leases and whatever the side needs besides the objects."""
        raise NotImplementedError

    def object_body(self, name: str, size: Size) -> dict[str, Any]:
        raise NotImplementedError

    async def after_create(self, api: Api, names: list[str]) -> None:
        """What admission would have done to each object at create, beyond its body."""

    def deployed_identity(self) -> Path:
        """A kubeconfig for the scheduler as its real deployment logs it in."""
        raise NotImplementedError

    def start_scheduler(self) -> subprocess.Popen[bytes]:
        raise NotImplementedError

    async def after_bound(self, api: Api, watch: Watch, scheduler: subprocess.Popen[bytes]) -> None:
        """Anything measured after every object is bound (kubenova: the takeover)."""

    def summarize_logs(self) -> None:
        """Notes from the scheduler's own logs (kubenova: its warnings and errors)."""

    async def measure(self) -> SideResult:
        run, r = self.run, self.result
        REAPER.planes.append(self.plane)
        self.plane.up(log=self.say)
        self.speed_file.write_text("")
        probe = REAPER.spawn(
            [sys.executable, "-m", "kubenova.dev.machine", "--probe", str(self.speed_file)],
            self.folder / "speed-probe.log",
        )
        api = self.api = Api(self.plane.kubeconfig, connections=max(64, run.writers * 2))
        try:
            await self.prepare(api)
            if run.identities.get(self.kind) == "deployed":
                self.kubeconfig = self.deployed_identity()
            assert self.load is not None
            started = time.monotonic()
            await self.load.wait_ready(max(120.0, run.hosts / 20))
            self.say(f"{run.hosts} hosts and their Leases in {time.monotonic() - started:.1f} s")

            names = object_names(run.vms)
            bodies = [
                json.dumps(self.object_body(n, s)).encode()
                for n, s in zip(names, run.mix, strict=True)
            ]
            started = time.monotonic()
            await bounded(
                run.writers, [functools.partial(api.create, self.object_path, b) for b in bodies]
            )
            await self.after_create(api, names)
            r.created_s = time.monotonic() - started
            self.say(
                f"{run.vms} objects created in {r.created_s:.1f} s ({run.vms / r.created_s:.0f}/s)"
            )

            rv = (await api.json("GET", self.object_path + "?limit=1"))["metadata"][
                "resourceVersion"
            ]
            watch = Watch(api, self.object_path, self.is_bound)
            watch.start(rv)
            apiserver, etcd = self.plane.pid("kube-apiserver"), self.plane.pid("etcd")
            # The background: what the API server spends on the Lease load and the open watch
            # alone, so the scheduler's own share can be told apart; measured once the creates'
            # after-work has settled.
            await asyncio.sleep(run.background_s / 2)
            c0, t0, bg0 = cpu_seconds(apiserver), time.monotonic(), self.load.stats()
            await asyncio.sleep(run.background_s)
            r.apiserver_background_cpu_per_s = (cpu_seconds(apiserver) - c0) / (
                time.monotonic() - t0
            )
            load0 = self.load.stats()
            r.background_renewals_per_s = renewals_per_s(bg0, load0)

            text0 = await api.metrics_text()
            before, flows0 = request_totals(text0), flow_totals(text0)
            api0, etcd0, load_cpu0 = (
                cpu_seconds(apiserver),
                cpu_seconds(etcd),
                cpu_seconds(self.load.proc.pid),
            )
            me0, probe0 = cpu_seconds(os.getpid()), cpu_seconds(probe.pid)
            ticks0 = machine.CpuTicks.now()
            t_start = time.monotonic()
            scheduler = self.start_scheduler()
            profiler = self._profile(scheduler.pid) if run.profile and self.profiled else None
            go_profile = (
                asyncio.create_task(self._go_profiles(api, run.apiserver_profile_s))
                if run.apiserver_profile_s
                else None
            )
            last_report = t_start
            while len(watch.bound) < run.vms:
                now = time.monotonic()
                if scheduler.poll() is not None:
                    r.notes.append(f"the scheduler exited with {scheduler.returncode}")
                    break
                if now - t_start > run.timeout:
                    r.notes.append(f"timed out after {run.timeout:.0f} s")
                    break
                if now - last_report >= 10:
                    self.say(f"... {len(watch.bound)} bound after {now - t_start:.0f} s")
                    last_report = now
                await asyncio.sleep(0.05)
            ended = max(watch.bound.values(), default=time.monotonic())
            r.bound = len(watch.bound)
            r.watch_lag_s = watch.worst_lag_s
            r.last_lag_s = watch.lag_s
            r.all_bound_s = ended - t_start
            r.scheduler_cpu_s = cpu_seconds(scheduler.pid)
            r.apiserver_cpu_s = cpu_seconds(apiserver) - api0
            r.etcd_cpu_s = cpu_seconds(etcd) - etcd0
            ticks1 = machine.CpuTicks.now()
            window = time.monotonic() - t_start
            load_cpu = cpu_seconds(self.load.proc.pid) - load_cpu0
            ours = r.scheduler_cpu_s + r.apiserver_cpu_s + r.etcd_cpu_s + load_cpu
            ours += cpu_seconds(os.getpid()) - me0 + cpu_seconds(probe.pid) - probe0
            cores, r.stolen_cores = ticks1.cores_since(ticks0, os.cpu_count() or 1)
            r.machine_busy_cores = cores
            r.reference_ms = machine.median_ms(
                machine.samples_between(self.speed_file.read_text().splitlines(), t_start, ended)
            )
            r.others_cores = max(0.0, cores - ours / window)
            r.scheduler_peak_mib = peak_mib(scheduler.pid)
            load1 = self.load.stats()
            r.lease_renewals_per_s = renewals_per_s(load0, load1)
            if profiler is not None:
                self._report_profile(profiler)
            if go_profile is not None:
                await go_profile
            await self._settle_writes(api)
            text1 = await api.metrics_text()
            after = request_totals(text1)
            r.flows = flows_between(flows0, flow_totals(text1))
            r.writes = writes_between(before, after)
            r.reads = writes_between(before, after, verbs=READS)
            self.say(f"{r.bound} bound in {r.all_bound_s:.1f} s ({r.binds_per_s:.0f}/s); "
                     f"{r.writes_per_bound:.2f} writes per bound object")  # fmt: skip
            if r.bound == run.vms:
                await self.after_bound(api, watch, scheduler)
            r.apiserver_peak_mib = peak_mib(apiserver)
            await watch.stop()
            self.summarize_logs()
            if load1:
                r.notes.append(
                    "Lease load: {renewals:.0f} renewals, {conflicts:.0f} conflicts, {errors:.0f} "
                    "errors, {late:.0f} over 1 s late, worst lag {max_lag_s:.1f} s".format(**load1)
                )
            return r
        finally:
            await api.close()
            REAPER.reap()

    async def _settle_writes(self, api: Api, quiet: float = 3.0, cap: float = 30.0) -> None:
        """Wait until the write counters stand still for `quiet` seconds (the last binds' second
        writes, status echoes), at most `cap` seconds."""
        deadline = time.monotonic() + cap
        last = writes_between(Counter(), await api.metrics())
        still_since = time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - still_since < quiet:
            await asyncio.sleep(0.5)
            now = writes_between(Counter(), await api.metrics())
            if now != last:
                last, still_since = now, time.monotonic()

    def _profile(self, pid: int) -> subprocess.Popen[bytes] | None:
        spy = shutil.which("py-spy")
        if spy is None:
            self.result.notes.append("--profile: py-spy is not installed (pip install py-spy)")
            return None
        out = self.folder / "profile.txt"
        return REAPER.spawn(
            [spy, "record", "--pid", str(pid), "--format", "raw", "--rate", "50", "--gil",
             "--nonblocking", "--output", str(out)],
            self.folder / "py-spy.log",
        )  # fmt: skip

    async def _go_profiles(self, api: Api, seconds: float) -> None:
        """kube-apiserver's and etcd's own Go CPU profiles of the first `seconds` of the
        window (their /debug/pprof, which the control plane turns on for this), taken at the
        same time and summarised by `go tool pprof -top`."""
        import aiohttp

        query = f"/debug/pprof/profile?seconds={seconds:.0f}"
        timeout = seconds + 60

        async def etcd_profile() -> tuple[int, bytes]:
            state = self.plane.state()
            if state is None:
                return 0, b"no state.json: etcd's address is unknown"
            async with api.session.get(
                state.etcd + query, timeout=aiohttp.ClientTimeout(total=timeout)
            ) as resp:
                return resp.status, await resp.read()

        taken = await asyncio.gather(api.call("GET", query, timeout=timeout), etcd_profile())
        for process, (status, data) in zip(("kube-apiserver", "etcd"), taken, strict=True):
            if status != 200:
                self.say(f"{process}'s profile: {status} {data[:200]!r}")
                continue
            kept = self.run.folder.parent / f"{process}-profile-{self.slug}.pb.gz"
            kept.write_bytes(data)
            await self._summarise_profile(process, kept)

    async def _summarise_profile(self, process: str, kept: Path) -> None:
        go = shutil.which("go")
        if go is None:
            self.say(f"{process}'s profile in {kept} (no go on PATH to summarise it)")
            return
        for mode in ("-top", "-top -cum"):
            top = await asyncio.to_thread(
                subprocess.run,
                [go, "tool", "pprof", *mode.split(), "-nodecount=30", str(kept)],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            print(f"\n  [{self.name}] {process} CPU profile ({mode}, {kept}):")
            print("\n".join("    " + line for line in top.stdout.splitlines()[:40]))

    def _report_profile(self, profiler: subprocess.Popen[bytes]) -> None:
        profiler.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        with contextlib.suppress(subprocess.TimeoutExpired):
            profiler.wait(30)
        out = self.folder / "profile.txt"
        if not out.exists():
            self.say(f"py-spy wrote no profile; see {self.folder / 'py-spy.log'}")
            return
        kept = self.run.folder.parent / f"placement-profile-{self.slug}.txt"
        shutil.copy(out, kept)
        print(f"\n  [{self.name}] profile of the scheduler (py-spy, collapsed stacks in {kept}):")
        print("     own   incl.  frame")
        for frame, own, inclusive in top_frames(out.read_text(), 25):
            print(f"  {100 * own:5.1f}% {100 * inclusive:5.1f}%  {frame[:150]}")


class KubeSchedulerSide(Side):
    kind = "kube-scheduler"
    object_path = f"/api/v1/namespaces/{NS}/pods"

    def is_bound(self, obj: dict[str, Any]) -> bool:
        return bool((obj.get("spec") or {}).get("nodeName"))

    def object_body(self, name: str, size: Size) -> dict[str, Any]:
        return pod_body(name, size)

    async def prepare(self, api: Api) -> None:
        await api.create("/api/v1/namespaces", {"metadata": {"name": NS}})
        names = host_names(self.run.hosts)
        now = dt.datetime.now(dt.UTC)
        untaint = json.dumps({"spec": {"taints": None}}).encode()

        async def one(name: str) -> None:
            await api.create("/api/v1/nodes", node_body(name, now))
            # Admission (TaintNodesByCondition) gives a new Node the not-ready taint, which the
            # node-lifecycle controller lifts once the kubelet reports Ready; that is us here.
            code, data = await api.call("PATCH", f"/api/v1/nodes/{name}", untaint, MERGE)
            if code >= 300:
                raise RuntimeError(f"Node {name}: {code} {data[:300]!r}")

        await bounded(32, [functools.partial(one, n) for n in names])
        node = await api.json("GET", f"/api/v1/nodes/{names[0]}")
        if not (node.get("status") or {}).get("allocatable") or node["spec"].get("taints"):
            raise RuntimeError(f"Node {names[0]} is not as created: {node}")
        self.load = LeaseLoad(
            self.folder, self.plane.kubeconfig, NODE_LEASE_NS, names, names, self.run.lease_period
        )

    def deployed_identity(self) -> Path:
        """kubeadm's scheduler.conf: a client certificate of the cluster CA for user
        system:kube-scheduler, whose rights the API server's bootstrap RBAC grants."""
        from kubenova.dev import cluster, pki

        ca = pki.CertificateAuthority(self.plane.folder / "pki")
        pair = ca.issue("kube-scheduler", "system:kube-scheduler", client=True)
        user = {"client-certificate": str(pair.cert), "client-key": str(pair.key)}
        path = self.folder / "kube-scheduler.kubeconfig"
        return cluster.kubeconfig_as(self.plane.kubeconfig, user, path, "kube-scheduler")

    def start_scheduler(self) -> subprocess.Popen[bytes]:
        assert self.run.scheduler_bin is not None
        config = self.folder / "kube-scheduler.yaml"
        config.write_text(
            yaml.safe_dump(scheduler_config(self.kubeconfig, self.run.qps, self.run.qps))
        )
        kc = f"--kubeconfig={self.kubeconfig}"
        return REAPER.spawn(
            [str(self.run.scheduler_bin), f"--config={config}",
             kc.replace("--", "--authentication-", 1), kc.replace("--", "--authorization-", 1),
             "--secure-port=0", "--v=0"],
            self.folder / "kube-scheduler.log",
        )  # fmt: skip


class KubenovaSide(Side):
    kind = "kubenova"
    profiled = True
    object_path = f"/apis/{constants.GROUP}/{constants.VERSION}/namespaces/{NS}/virtualmachines"

    def __init__(self, run: Run, name: str, source: Path | None) -> None:
        super().__init__(run, name)
        self.source = source
        """The exported source the operator runs from (None: the installed work tree)."""
        self.operators = 0

    def is_bound(self, obj: dict[str, Any]) -> bool:
        return bool((obj.get("status") or {}).get("host"))

    def object_body(self, name: str, size: Size) -> dict[str, Any]:
        return vm_body(name, size)

    async def after_create(self, api: Api, names: list[str]) -> None:
        """The mutating webhook removes a new VM's managedFields (from 2 Dec 2026 on), which a
        create cannot do: the API server gives them at create. So each VM loses them in a
        merge patch, as the webhook leaves it, when the operator's tree has that webhook."""
        tree = self.source or ROOT
        webhook = (tree / "webhooks/kubenova/webhooks/defaults.py").read_text()
        if 'meta.pop("managedFields"' not in webhook:
            return
        body = json.dumps({"metadata": {"managedFields": [{}]}}).encode()

        async def strip(name: str) -> None:
            code, data = await api.call("PATCH", f"{self.object_path}/{name}", body, MERGE)
            if code >= 300:
                raise RuntimeError(f"VM {name}: managedFields not removed: {code} {data[:300]!r}")

        await bounded(self.run.writers, [functools.partial(strip, n) for n in names])

    async def prepare(self, api: Api) -> None:
        if self.source is not None:  # the CRDs of the operator's commit
            crds = str(self.source / "crds")
            self.plane.kubectl("apply", "--server-side", "--force-conflicts", "-f", crds)
            self.plane.kubectl(
                "wait", "--for=condition=Established", "--timeout=60s", "crd", "--all"
            )
        base = f"/apis/{constants.GROUP}/{constants.VERSION}"
        for ns in (NS, SYSTEM_NS):
            await api.create("/api/v1/namespaces", {"metadata": {"name": ns}})
        for size in SIZES:
            await api.create(f"{base}/flavors", flavor_body(size))
        await api.create(f"{base}/resourcepools", pool_body(self.run.policy))
        names = host_names(self.run.hosts)
        status = json.dumps({"status": host_status(dt.datetime.now(dt.UTC))}).encode()

        async def one(name: str) -> None:
            await api.create(f"{base}/hosts", host_body(name))
            code, data = await api.call("PATCH", f"{base}/hosts/{name}/status", status, MERGE)
            if code >= 300:
                raise RuntimeError(f"Host {name} status: {code} {data[:300]!r}")

        await bounded(32, [functools.partial(one, n) for n in names])
        self.load = LeaseLoad(
            self.folder, self.plane.kubeconfig, SYSTEM_NS,
            [f"kubenova-host-{n}" for n in names], names, self.run.lease_period,
        )  # fmt: skip

    def deployed_identity(self) -> Path:
        """The operator's pod as the chart runs it: its ServiceAccount's token (TokenRequest)
        under the chart's RBAC and FlowSchemas (of the work tree's chart, whatever commit the
        operator is)."""
        from kubenova.dev import cluster

        version = json.loads(self.plane.kubectl("version", "-o", "json").stdout)
        rbac = subprocess.run(
            [str(self.run.bin_dir / "helm"), "template", RELEASE, str(ROOT / "charts/kubenova"),
             "-n", SYSTEM_NS, "--show-only", "templates/rbac.yaml",
             "--show-only", "templates/flowcontrol.yaml",
             "--kube-version", version["serverVersion"]["gitVersion"]],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        self.plane.kubectl("apply", "-f", "-", input=rbac)
        account = f"{RELEASE}-operator"
        token = self.plane.kubectl(
            "create", "token", account, "-n", SYSTEM_NS, "--duration=24h"
        ).stdout.strip()
        path = self.folder / "operator.kubeconfig"
        return cluster.kubeconfig_as(self.plane.kubeconfig, {"token": token}, path, account)

    def _operator(self) -> subprocess.Popen[bytes]:
        identity = f"op-{self.operators}"
        self.operators += 1
        env = {**source_env(self.source), "KUBECONFIG": str(self.kubeconfig)}
        return REAPER.spawn(
            [sys.executable, "-m", "kubenova.operator", "--identity", identity,
             "--namespace", SYSTEM_NS, "--metrics-port", "0", *self.run.operator_args],
            self.folder / f"operator-{identity}.log", env,
        )  # fmt: skip

    def start_scheduler(self) -> subprocess.Popen[bytes]:
        return self._operator()

    async def _leader(self, api: Api) -> str | None:
        return (await self._lease(api))[0]

    async def _lease(self, api: Api) -> tuple[str | None, float | None]:
        """The operator Lease's holder and acquireTime (Unix time)."""
        code, data = await self.api_call(
            api, f"/apis/coordination.k8s.io/v1/namespaces/{SYSTEM_NS}/leases/kubenova-operator"
        )
        if code != 200:
            return None, None
        spec = json.loads(data).get("spec") or {}
        acquired = spec.get("acquireTime")
        at = dt.datetime.fromisoformat(acquired).timestamp() if acquired else None
        return spec.get("holderIdentity"), at

    @staticmethod
    async def api_call(api: Api, path: str) -> tuple[int, bytes]:
        try:
            return await api.call("GET", path, timeout=10)
        except (TimeoutError, OSError):
            return 0, b""

    async def after_bound(self, api: Api, watch: Watch, scheduler: subprocess.Popen[bytes]) -> None:
        if not self.run.takeover:
            return
        r = self.result
        leader = await self._leader(api)
        standby = self._operator()
        warm = await self._warm(standby.pid)
        r.standby_peak_mib = peak_mib(standby.pid)
        state = f"settled after {warm:.1f} s" if warm else "still busy at the cap"
        self.say(f"warm standby {state}, {r.standby_peak_mib:.0f} MiB; killing leader {leader}")
        r.scheduler_peak_mib = max(r.scheduler_peak_mib, peak_mib(scheduler.pid))
        killed, killed_at = time.monotonic(), time.time()
        Reaper.kill(scheduler)
        name = "takeover-canary"
        await api.create(self.object_path, vm_body(name, SIZES[0]))
        deadline = killed + 300
        while time.monotonic() < deadline and name not in watch.bound:
            await asyncio.sleep(0.1)
        if name in watch.bound:
            r.takeover_bind_s = watch.bound[name] - killed
        else:
            r.notes.append("takeover: the new VM was not bound within 300 s of the kill")
        # When the Lease changed hands, by its own acquireTime (microseconds, the new leader's
        # clock, which is this machine's): polling it raced the bind, which can follow at once.
        holder, acquired = await self._lease(api)
        if holder is not None and holder != leader and acquired is not None:
            r.takeover_lease_s = acquired - killed_at
        r.standby_peak_mib = max(r.standby_peak_mib, peak_mib(standby.pid))

    def summarize_logs(self) -> None:
        for log in sorted(self.folder.glob("operator-*.log")):
            counts = log_summary(log.read_text(errors="replace"))
            for what, n in counts.most_common(6):
                self.result.notes.append(f"{log.stem}: {n} × {what}")

    async def _warm(self, pid: int, cap: float = 600.0) -> float | None:
        """Seconds until the standby's CPU settles (under 10 % of a core for 3 s in a row, once
        it has started): by then it has listed and parsed every object. None at the cap."""
        started = time.monotonic()
        quiet = 0
        last = cpu_seconds(pid)
        while time.monotonic() - started < cap:
            await asyncio.sleep(1.0)
            now = cpu_seconds(pid)
            quiet = quiet + 1 if now - last < 0.1 and now > 1.0 else 0
            last = now
            if quiet >= 3:
                return time.monotonic() - started
        return None


# -- main --------------------------------------------------------------------------------------


ROOT = Path(__file__).resolve().parents[1]
SOURCE_ROOTS = ("crds", "common", "operator", "node_agent", "webhooks", "hack")
"""The source roots of the namespace package `kubenova` (older commits lack `common`)."""


def _roots_at(sha: str) -> list[str]:
    top = subprocess.check_output(
        ["git", "-C", str(ROOT), "ls-tree", "--name-only", sha], text=True
    )
    return [r for r in SOURCE_ROOTS if r in top.split()]


def export_source(rev: str, dest: Path) -> str:
    """The source roots at commit `rev` into `dest` (git archive: the shared work tree is left
    as it is); returns the full commit id."""
    import io
    import tarfile

    sha = subprocess.check_output(["git", "-C", str(ROOT), "rev-parse", rev], text=True).strip()
    tar = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", sha, "--", *_roots_at(sha)],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    dest.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        t.extractall(dest, filter="data")
    return sha


def source_env(src: Path | None) -> dict[str, str]:
    """The environment that runs the operator from `src` (None: from the installed tree).
    kubenova is a namespace package, so the exported roots placed first on the path win."""
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join(
            str(src / r) for r in SOURCE_ROOTS if (src / r).is_dir()
        )
    return env


def _describe_source(src: Path | None, sha: str) -> str:
    if src is not None:
        probe = subprocess.check_output(
            [sys.executable, "-c", "import kubenova.operator as m; print(m.__file__)"],
            env=source_env(src), text=True,
        ).strip()  # fmt: skip
        if not probe.startswith(str(src)):
            raise RuntimeError(f"the exported operator is not the one imported: {probe}")
        return f"commit {sha[:12]} (exported with git archive)"
    dirty = subprocess.check_output(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--", *SOURCE_ROOTS], text=True
    ).strip()
    head = subprocess.check_output(["git", "-C", str(ROOT), "rev-parse", "HEAD"], text=True)
    state = "with uncommitted changes" if dirty else "clean"
    return f"the work tree at {head.strip()[:12]} ({state})"


async def _main(a: argparse.Namespace) -> int:
    from kubenova.dev import cluster, node

    sides = parse_sides(a.sides, a.operator_commit)
    scheduler_bin = None
    if any(kind == "kube-scheduler" for kind, _ in sides):
        scheduler_bin = node.node_binaries() / "kube-scheduler"
    folder = Path(tempfile.mkdtemp(prefix="kubenova-placement-"))
    if not a.keep:
        REAPER.folders.append(folder)
    sources: dict[str, tuple[Path, str]] = {}
    for commit in {rev for _, rev in sides if rev is not None}:
        dest = folder / f"src-{len(sources)}"
        sources[commit] = (dest, export_source(commit, dest))
    run = Run(
        hosts=a.hosts, vms=a.vms, folder=folder / "run", bin_dir=cluster.ensure_binaries(),
        scheduler_bin=scheduler_bin, lease_period=a.lease_period, writers=a.writers,
        timeout=a.timeout, policy=a.policy, qps=a.qps, operator_args=a.operator_arg,
        takeover=not a.no_takeover, profile=a.profile, background_s=a.background,
        apiserver_profile_s=a.apiserver_profile, identities=parse_identities(a.identities),
    )  # fmt: skip
    run.folder.mkdir(parents=True)
    load = os.getloadavg()
    print(f"# placement: {a.hosts:,} hosts, {a.vms:,} objects; {os.cpu_count()} cores, "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; state in {folder}")  # fmt: skip
    logins = ", ".join(f"{kind} as {how}" for kind, how in run.identities.items())
    print(f"# the schedulers log in (--identities): {logins}")
    if scheduler_bin is not None:
        version = subprocess.check_output([str(scheduler_bin), "--version"], text=True).strip()
        print(f"# kube-scheduler: {scheduler_bin} ({version})")
    results: list[SideResult] = []
    names = turn_names(
        [kind if kind == "kube-scheduler" else
         f"kubenova@{sources[rev][1][:7] if rev is not None else 'worktree'}"
         for kind, rev in sides]
    )  # fmt: skip
    for (kind, rev), name in zip(sides, names, strict=True):
        side: Side
        src: Path | None = None
        src, sha = sources[rev] if rev is not None else (None, "")
        if kind == "kube-scheduler":
            side = KubeSchedulerSide(run, name)
        else:
            print(f"# {name}: the operator from {_describe_source(src, sha)}")
            side = KubenovaSide(run, name, src)
        print(f"\n## {side.name}", flush=True)
        results.append(await side.measure())
        print(render_table(results[-1:]), flush=True)  # kept even if a later side fails
    print("\n## results\n")
    print(render_table(results))
    print("\nAPI writes per bound object, by request (Lease writes aside):")
    print(render_requests(results))
    print("\nAPI reads per bound object (GET, LIST; Leases aside):")
    print(render_requests(results, reads=True))
    print("\nRequests per bound object by APF priority level (every request, Leases too):")
    for r in results:
        print(f"  {r.side}: {render_flows(r.flows, r.bound)}")
    for r in results:
        for note in r.notes:
            print(f"  {r.side}: {note}")
    return 0 if all(r.bound == r.objects for r in results) else 1


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--lease-load":
        asyncio.run(lease_load(json.loads(Path(sys.argv[2]).read_text())))
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--hosts", type=int, default=1000)
    p.add_argument(
        "--vms", type=int, default=10000, help="objects: Pods on one side, VMs on the other"
    )
    p.add_argument(
        "--sides",
        default="kube-scheduler,kubenova",
        help="which sides, in order: kube-scheduler, kubenova[@commit] (e.g. "
        "kube-scheduler,kubenova@abc123,kubenova@HEAD for a before / after in one run)",
    )
    p.add_argument(
        "--lease-period", type=float, default=10.0, help="seconds between renewals of each Lease"
    )
    p.add_argument("--writers", type=int, default=32, help="concurrent creates")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds for all to be bound")
    p.add_argument("--policy", default="Spread", help="the kubenova pool's placementPolicy")
    p.add_argument("--qps", type=int, default=5000, help="kube-scheduler's client qps and burst")
    p.add_argument(
        "--background",
        type=float,
        default=20.0,
        help="seconds of API server CPU measured before the start",
    )
    p.add_argument("--operator-arg", action="append", default=[], help="passed to the operator")
    p.add_argument(
        "--operator-commit",
        default="HEAD",
        help="the commit a plain 'kubenova' side runs the operator (and its CRDs) from, "
        "exported with git archive; 'worktree': the work tree as it is",
    )
    p.add_argument("--no-takeover", action="store_true")
    p.add_argument(
        "--profile",
        action="store_true",
        help="py-spy the operator while it binds, sampling the thread that holds the GIL "
        "(where its Python CPU goes; perturbs it)",
    )
    p.add_argument(
        "--apiserver-profile",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="take kube-apiserver's and etcd's Go CPU profiles of the window's first SECONDS",
    )
    p.add_argument(
        "--identities",
        default=DEFAULT_IDENTITIES,
        help="how each side's scheduler logs in, as kind=admin|deployed: 'admin' with the "
        "admin's client certificate (group system:masters, which API Priority and Fairness "
        "exempts), 'deployed' as its real deployment logs it in (kube-scheduler as kubeadm "
        "runs it: a client certificate for system:kube-scheduler, priority level "
        "workload-high; the operator as the chart runs it: its ServiceAccount's token under "
        "the chart's RBAC and FlowSchemas, priority level workload-high). Default: the peer "
        "at its strongest, kubenova as users run it",
    )
    p.add_argument("--keep", action="store_true", help="keep the state folder")
    a = p.parse_args()
    atexit.register(REAPER.cleanup)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    try:
        code = asyncio.run(_main(a))
    finally:
        REAPER.cleanup()
    sys.exit(code)


if __name__ == "__main__":
    main()
