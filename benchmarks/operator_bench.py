"""In-process benchmark of the operator's per-event and per-pop work (no API server).

    python benchmarks/operator_bench.py            # every section at its full size
    python benchmarks/operator_bench.py --quick    # smoke sizes, a few seconds

Sections, each timed on this machine's clock with the real code paths:

  queue    `SchedulingQueue` at 4,000 and 8,000 pending VMs, half of them parked unschedulable
           (as at start-up before the hosts are known): the time to pop the active half, with
           `counts()` after every pop and `next_wake()` when empty, as the scheduling loop does.
  memory   bytes the operator holds per VM (tracemalloc) after 10,000 synthetic VMs arrive
           through `Controller.on_vm`, each with what the API server sends: managedFields of
           three writers, 20 history entries, four conditions.
  events   watch events per second through `Controller.on_vm` at 10,000 bound VMs: an agent's
           status write to a bound VM, and the operator's own status write to a pending VM
           seen again (an echo); plus `World.vms_on(host)` at 1,000 hosts.
  migrations  one `MigrationController.sync()` pass with 5,000 finished VMMigrations held.
  gc       the garbage collector while 100,000 VMs arrive through `Controller.on_vm` (each body
           built and dropped, as a watch hands them over), one full collection after, and
           its time during 20,000 updates then (`gc.callbacks`).

The controller is built on a kubernetes ApiClient that is never called (no section writes).
Not a pytest test; prints one line per figure.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import datetime as dt
import gc
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import kubernetes  # noqa: E402
from tests.unit.scheduler.builders import FakeClock, make_vm  # noqa: E402

from kubenova.api import constants  # noqa: E402
from kubenova.operator.controller import Controller, Settings  # noqa: E402
from kubenova.scheduler.explain import Reason  # noqa: E402
from kubenova.scheduler.queue import SchedulingQueue  # noqa: E402

NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)


def _ts(seconds: float) -> str:
    return (NOW + dt.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def vm_body(i: int, host: str | None, rv: int) -> dict[str, Any]:
    """A VM as the API server sends it after a few weeks of life: what kubectl apply, the
    webhook, the operator and an agent each wrote, with their managedFields."""
    name = f"vm-{i:06d}"
    history = [
        {
            "time": _ts(j),
            "action": ("Scheduled", "Started", "Stopped", "Started")[j % 4],
            "actor": "operator" if j % 4 == 0 else f"agent/{host or 'h'}",
            "result": "Succeeded",
            "message": f"bound to host {host} (reserved slot)" if j % 4 == 0 else "domain running",
            "traceId": f"{i:016x}{j:016x}",
        }
        for j in range(constants.MAX_HISTORY)
    ]
    conditions = [
        {
            "type": t,
            "status": "True",
            "reason": t + "Reason",
            "message": f"{t} since a while",
            "lastTransitionTime": _ts(1),
        }
        for t in ("Scheduled", "Running", "Ready", "Migratable")
    ]
    fields_spec: dict[str, Any] = {
        "f:spec": {
            "f:flavor": {},
            "f:pool": {},
            "f:boot": {"f:image": {}},
            "f:priority": {},
            "f:placement": {"f:groups": {}, "f:antiAffinity": {}},
            "f:networks": {},
            "f:cloudInit": {"f:userData": {}},
            "f:evictionStrategy": {},
            "f:resources": {"f:vcpus": {}, "f:memory": {}, "f:disk": {}},
        }
    }
    fields_status: dict[str, Any] = {
        "f:status": {
            "f:phase": {},
            "f:host": {},
            "f:conditions": {f'k:{{"type":"{c["type"]}"}}': {".": {}} for c in conditions},
            "f:history": {},
            "f:ip": {},
            "f:addresses": {},
            "f:domainUUID": {},
            "f:serialLog": {},
        }
    }
    managed = [
        {
            "manager": m,
            "operation": "Update",
            "apiVersion": "kubenova.io/v1alpha1",
            "time": _ts(2),
            "fieldsType": "FieldsV1",
            "fieldsV1": copy.deepcopy(f),
            **({"subresource": "status"} if f is fields_status else {}),
        }
        for m, f in (
            ("kubectl-client-side-apply", fields_spec),
            ("kubenova-operator", fields_status),
            (f"kubenova-agent-{host}", fields_status),
        )
    ]
    status: dict[str, Any] = {
        "phase": "Running" if host else "Pending",
        "conditions": conditions if host else [],
        "history": history if host else history[:1],
    }
    if host:
        status.update(
            host=host,
            ip=f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}",
            addresses=[f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"],
            domainUUID=f"{i:08x}-0000-4000-8000-000000000000",
            serialLog=f"/var/lib/kubenova/domains/team_{name}/serial.log",
        )
    else:
        status["reason"] = "0/1000 hosts: 1000 insufficient memory"
    labels = {"app": "web", "tier": "frontend"}
    return {
        "apiVersion": "kubenova.io/v1alpha1",
        "kind": "VirtualMachine",
        "metadata": {
            "name": name,
            "namespace": "team",
            "uid": f"{i:08x}-1111-4111-8111-111111111111",
            "resourceVersion": str(rv),
            "generation": 1,
            "creationTimestamp": _ts(0),
            "labels": labels,
            "annotations": {
                constants.ANNOTATION_TRACE_ID: f"{i:032x}",
                "kubectl.kubernetes.io/last-applied-configuration": '{"spec":{"flavor":"small"}}'
                * 8,
            },
            "finalizers": [constants.VM_FINALIZER, constants.QUOTA_FINALIZER],
            "managedFields": managed,
        },
        "spec": {
            "flavor": "small",
            "pool": "general",
            "boot": {"image": "debian-12-genericcloud-amd64.qcow2"},
            "priority": 100,
            "placement": {
                "groups": ["web"],
                "antiAffinity": [
                    {"group": "web", "topologyKey": "kubenova.io/hostname", "maxPerDomain": 4}
                ],
            },
            "networks": [{"name": "eth0", "network": "default"}],
            "cloudInit": {"userData": "#cloud-config\npackages: [nginx]\n"},
            "evictionStrategy": "LiveMigrate",
            "resources": {"vcpus": 1, "memory": "2Gi", "disk": "20Gi"},
        },
        "status": status,
    }


def controller() -> Controller:
    return Controller(Settings(identity="bench"), kubernetes.client.ApiClient())


def bench_queue(sizes: list[int]) -> None:
    for n in sizes:
        clock = FakeClock(0.0)
        q = SchedulingQueue(clock)
        for i in range(n // 2):
            q.push(make_vm(f"p{i}", created_at=i))
        while (req := q.pop()) is not None:
            q.unschedulable(req, frozenset({Reason.INSUFFICIENT_MEMORY}))
        for i in range(n - n // 2):
            q.push(make_vm(f"a{i}", created_at=n + i))
        clock.advance(0.5)  # inside every back-off
        started = time.perf_counter()
        popped = 0
        while (req := q.pop()) is not None:
            q.counts()
            q.done(req.key)
            popped += 1
        q.next_wake()
        took = time.perf_counter() - started
        print(
            f"queue    {n:>6} pending ({n // 2} parked): {popped} pops in {took:.3f} s "
            f"({took / max(popped, 1) * 1e6:.1f} µs per pop with counts())"
        )


def _fill(ctl: Controller, n: int, hosts: int) -> list[dict[str, Any]]:
    bodies = []
    for i in range(n):
        body = vm_body(i, f"host-{i % hosts:05d}", 1000 + i)
        ctl.on_vm("ADDED", body)
        bodies.append(body)
    return bodies


def bench_memory(n: int) -> None:
    bodies = [vm_body(i, f"host-{i % 1000:05d}", 1000 + i) for i in range(n)]
    one = len(repr(bodies[0]))
    ctl = controller()
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for body in bodies:
        # The watch hands each event's object over and drops it: the copy is what arrives.
        ctl.on_vm("ADDED", copy.deepcopy(body))
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    held = sum(s.size_diff for s in after.compare_to(before, "filename"))
    print(
        f"memory   {n} VMs through on_vm: {held / n:,.0f} bytes held per VM "
        f"({held / 2**20:.1f} MiB; one object's repr is {one:,} chars)"
    )


def bench_events(n: int, hosts: int, events: int) -> None:
    ctl = controller()
    bodies = _fill(ctl, n, hosts)
    rv = 10 * n
    # An agent's status write to a bound VM (a new IP): a real change, the record updates.
    changed = []
    for k in range(events):
        body = copy.deepcopy(bodies[k % n])
        rv += 1
        body["metadata"]["resourceVersion"] = str(rv)
        body["status"]["ip"] = f"192.168.{k >> 8 & 255}.{k & 255}"
        changed.append(body)
    started = time.perf_counter()
    for body in changed:
        ctl.on_vm("MODIFIED", body)
    took = time.perf_counter() - started
    del changed
    print(f"events   bound VM status writes: {events / took:,.0f} events/s at {n} VMs")
    # The operator's own status write to a pending VM, seen again: nothing the scheduler reads.
    pending = [vm_body(n + i, None, rv + i) for i in range(1000)]
    for body in pending:
        ctl.on_vm("ADDED", body)
    rv += 1000
    echoes = []
    for k in range(events):
        body = copy.deepcopy(pending[k % len(pending)])
        rv += 1
        body["metadata"]["resourceVersion"] = str(rv)
        body["status"]["reason"] = f"0/1000 hosts: {k} insufficient memory"
        echoes.append(body)
    started = time.perf_counter()
    for body in echoes:
        ctl.on_vm("MODIFIED", body)
    took = time.perf_counter() - started
    print(f"events   pending VM status echoes: {events / took:,.0f} events/s at {n} VMs")
    started = time.perf_counter()
    for k in range(1000):
        ctl.world.vms_on(f"host-{k % hosts:05d}")
    took = time.perf_counter() - started
    print(f"events   vms_on(host): {took / 1000 * 1e6:,.1f} µs per call at {n} VMs, {hosts} hosts")


def bench_migrations(done: int) -> None:
    ctl = controller()
    ctl._leading = True
    for i in range(done):
        ctl.on_migration(
            "ADDED",
            {
                "apiVersion": "kubenova.io/v1alpha1",
                "kind": "VMMigration",
                "metadata": {
                    "name": f"m-{i}",
                    "namespace": "team",
                    "resourceVersion": str(i + 1),
                    "uid": f"{i:08x}-2222-4222-8222-222222222222",
                    "creationTimestamp": _ts(0),
                },
                "spec": {"vmName": f"vm-{i:06d}"},
                "status": {
                    "phase": "Succeeded",
                    "sourceHost": "host-00001",
                    "targetHost": "host-00002",
                    "completionTime": _ts(1),
                    "message": "done",
                },
            },
        )
    walked = len(ctl.migrations.migrations)
    started = time.perf_counter()
    asyncio.run(ctl.migrations.sync())
    took = time.perf_counter() - started
    print(
        f"migrations {done} finished VMMigrations arrived, {walked} walked by each pass: "
        f"one sync pass {took * 1e3:.1f} ms (asyncio.run included)"
    )


class CollectorClock:
    """Seconds the garbage collector ran and how often, by generation (`gc.callbacks`)."""

    def __init__(self) -> None:
        self.seconds = [0.0, 0.0, 0.0]
        self.runs = [0, 0, 0]
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        self.seconds[info["generation"]] += time.perf_counter() - self._started
        self.runs[info["generation"]] += 1

    def __str__(self) -> str:
        return ", ".join(f"gen{g} {self.seconds[g]:.2f} s in {self.runs[g]}" for g in range(3))


def bench_gc(n: int, hosts: int, updates: int) -> None:
    ctl = controller()
    fill = CollectorClock()
    gc.collect()
    gc.callbacks.append(fill)
    started = time.perf_counter()
    for i in range(n):
        ctl.on_vm("ADDED", vm_body(i, f"host-{i % hosts:05d}", 1000 + i))
    took = time.perf_counter() - started
    gc.callbacks.remove(fill)
    started = time.perf_counter()
    gc.collect()
    full = time.perf_counter() - started
    print(f"gc       {n} VMs through on_vm in {took:.1f} s, the collector in it: {fill}")
    print(f"gc       then a full collection: {full:.2f} s over {len(gc.get_objects()):,} "
          "tracked objects")  # fmt: skip
    steady = CollectorClock()
    gc.callbacks.append(steady)
    started = time.perf_counter()
    for k in range(updates):
        ctl.on_vm("MODIFIED", vm_body(k % n, f"host-{k % hosts:05d}", 10 * n + k))
    took = time.perf_counter() - started
    gc.callbacks.remove(steady)
    print(f"gc       then {updates} updates in {took:.1f} s, the collector in them: {steady}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--quick", action="store_true", help="smoke sizes")
    sections = ["queue", "memory", "events", "migrations", "gc"]
    ap.add_argument("--only", choices=sections, action="append")
    args = ap.parse_args()
    only = set(args.only or sections)
    q = args.quick
    if "queue" in only:
        bench_queue([400, 800] if q else [4000, 8000])
    if "memory" in only:
        bench_memory(1000 if q else 10_000)
    if "events" in only:
        bench_events(1000 if q else 10_000, 100 if q else 1000, 2000 if q else 20_000)
    if "migrations" in only:
        bench_migrations(500 if q else 5000)
    if "gc" in only:
        bench_gc(2000 if q else 100_000, 100 if q else 10_000, 400 if q else 20_000)


if __name__ == "__main__":
    main()
