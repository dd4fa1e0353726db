"""kubenova at scale against the real control plane, with a baseline measured in the same run.

    python benchmarks/scale_bench.py --smoke                 # 100 hosts, 1,000 VMs
    python benchmarks/scale_bench.py --hosts 1000 --vms 10000
    python benchmarks/scale_bench.py --smoke --chaos         # faults during the workload

Starts its own control plane (etcd, kube-apiserver, kube-controller-manager), 3 operator
replicas, the admission webhooks (unless --no-webhooks) and N simulated hosts (node agents on
libvirt's test:/// driver, spread over a few processes), then creates M VMs over three flavors
and two pools and prints:

  - time until every VM is Running, placements per second, create→Bound and create→Running
    p50 / p99;
  - API writes per VM (kube-apiserver's own request counters for virtualmachines);
  - CPU (average % of one core over the run) and peak memory of every component;
  - the baseline: the same creates and the same two binding writes per VM made by this client
    alone, with nothing of kubenova running — what the API server and etcd cost by themselves.

With --chaos, during the workload it kills the leader, kills and restarts agent processes,
restarts kube-apiserver and etcd and deletes a tenth of the VMs (--deletes); every component
(operators, agents, webhooks) reaches the API through a fault proxy (`kubenova.dev.faultproxy`)
injecting a seeded random mix of API faults (--faults RATE, --seed N): replies dropped after
the write landed, 409, 429, 500, 503, timeouts, latency, watches cut and lagging, connections
refused. While it runs, the invariants are checked every 0.5 s from the API's own objects (no
host allocated beyond its capacity, no VM's binding moved to another host, no host with more
domains than VMs it was given, quota used never below what exists); after it, the final ones
(every VM bound once and Running with a domain, no host over-allocated, quota used equal to
what exists, no orphan domain). It prints each with its result, the faults injected per kind
and the checks made. Not a pytest test: a program that prints figures.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes
import yaml

from kubenova.api import constants
from kubenova.dev import cluster

G, V = constants.GROUP, constants.VERSION
NS = "bench"
SYSTEM_NS = "kubenova-system"
ROOT = Path(__file__).resolve().parents[1]
MERGE = "application/merge-patch+json"

FLAVORS = {  # name: (vcpus, memory) — a realistic mix, most VMs small
    "bench-small": (1, "2Gi"),
    "bench-medium": (2, "4Gi"),
    "bench-large": (4, "8Gi"),
}
MIX = ["bench-small"] * 6 + ["bench-medium"] * 3 + ["bench-large"]


# -- processes ---------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except FileNotFoundError:
        pass
    return 0.0


@dataclass
class Component:
    name: str
    argv: list[str]
    log: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    cpu_before: float = 0.0
    cpu_total: float = 0.0
    """CPU seconds of earlier incarnations (restarts in the chaos run)."""
    peak_mib: float = 0.0
    killed: bool = False
    reported: bool = False

    def start(self) -> None:
        self.killed = self.reported = False
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv, stdout=out, stderr=subprocess.STDOUT, env=self.env,
                start_new_session=True,
            )  # fmt: skip

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def account(self) -> None:
        """Fold the current process's CPU and memory into the totals (before it goes)."""
        if self.proc is not None and self.proc.poll() is None:
            self.cpu_total += cpu_seconds(self.pid)
            self.peak_mib = max(self.peak_mib, peak_rss_mib(self.pid))

    def exited(self) -> int | None:
        """The exit code of a process that ended on its own (not by `kill`), once."""
        if self.proc is None or self.reported or self.killed:
            return None
        code = self.proc.poll()
        if code is not None:
            self.reported = True
        return code

    def kill(self, sig: int = signal.SIGKILL) -> None:
        self.killed = True
        self.account()
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.pid, sig)
            self.proc.wait(30)

    def cpu_now(self) -> float:
        live = cpu_seconds(self.pid) if self.proc and self.proc.poll() is None else 0.0
        return self.cpu_total + live


@dataclass
class PlaneComponent(Component):
    """etcd, kube-apiserver or kube-controller-manager: started (and restarted) by the
    ControlPlane, which knows its current pid."""

    plane: cluster.ControlPlane | None = None

    @property
    def pid(self) -> int:
        assert self.plane is not None
        return self.plane.pid(self.name)

    def account(self) -> None:
        self.cpu_total += cpu_seconds(self.pid)
        self.peak_mib = max(self.peak_mib, peak_rss_mib(self.pid))

    def cpu_now(self) -> float:
        return self.cpu_total + cpu_seconds(self.pid)


# -- the run -------------------------------------------------------------------------------------


@dataclass
class Timings:
    created: dict[str, float] = field(default_factory=dict)
    bound: dict[str, float] = field(default_factory=dict)
    running: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def writes_for_vms(plane: cluster.ControlPlane) -> int:
    """kube-apiserver's count of mutating requests (POST, PUT, PATCH, APPLY, DELETE; any answer)
    on virtualmachines and their status."""
    text = plane.kubectl("get", "--raw", "/metrics").stdout
    total = 0
    for line in text.splitlines():
        if (
            not line.startswith("apiserver_request_total{")
            or 'resource="virtualmachines"' not in line
        ):
            continue
        if re.search(r'verb="(POST|PUT|PATCH|APPLY|DELETE)"', line):
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


def vm_body(name: str, namespace: str, flavor: str) -> dict[str, Any]:
    return {
        "apiVersion": constants.API_VERSION,
        "kind": "VirtualMachine",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"flavor": flavor, "pool": "bench", "boot": {"image": "base.qcow2"}},
    }


def create_all(
    custom: Any,
    namespace: str,
    names: list[str],
    timings: Timings | None,
    writers: int,
    then: Any = None,
) -> float:
    """Create VMs from `writers` threads; returns the seconds it took."""
    rng = random.Random(7)
    flavors = {n: rng.choice(MIX) for n in names}

    def one(name: str) -> None:
        if timings is not None:
            with timings.lock:
                timings.created[name] = time.monotonic()
        for attempt in range(10):
            try:
                custom.create_namespaced_custom_object(
                    G, V, namespace, "virtualmachines", vm_body(name, namespace, flavors[name])
                )
                break
            except kubernetes.client.exceptions.ApiException as e:
                if e.status == 409:
                    break  # created by an earlier attempt whose answer was lost
                if e.status not in (429, 500, 503, 504) or attempt == 9:
                    raise
                time.sleep(0.2 * (attempt + 1))
            except Exception:
                if attempt == 9:
                    raise
                time.sleep(0.5 * (attempt + 1))  # the API server restarting (chaos)
        if then is not None:
            then(name)

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(writers) as pool:
        list(pool.map(one, names))
    return time.monotonic() - started


def watch_vms(custom: Any, timings: Timings, stop: threading.Event) -> None:
    """Record when each VM is first seen bound and first seen Running; survives API restarts."""
    rv: str | None = None
    while not stop.is_set():
        try:
            if rv is None:
                listing = custom.list_namespaced_custom_object(G, V, NS, "virtualmachines")
                for item in listing["items"]:
                    _note(item, timings)
                rv = listing["metadata"]["resourceVersion"]
            w: Any = kubernetes.watch.Watch()  # type: ignore[no-untyped-call]
            for event in w.stream(
                custom.list_namespaced_custom_object, G, V, NS, "virtualmachines",
                resource_version=rv, timeout_seconds=30, allow_watch_bookmarks=True,
                _request_timeout=45,
            ):  # fmt: skip
                obj = event["object"]
                rv = obj["metadata"]["resourceVersion"]
                if event["type"] != "BOOKMARK":
                    _note(obj, timings)
                if stop.is_set():
                    return
        except Exception:
            rv = None  # 410 Gone or the API server went away: list again
            time.sleep(0.5)


def _note(obj: dict[str, Any], timings: Timings) -> None:
    name = obj["metadata"]["name"]
    status = obj.get("status", {})
    now = time.monotonic()
    with timings.lock:
        if status.get("host") and name not in timings.bound:
            timings.bound[name] = now
        if status.get("phase") == "Running" and name not in timings.running:
            timings.running[name] = now


def apply_yaml(plane: cluster.ControlPlane, docs: list[dict[str, Any]]) -> None:
    plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))


def setup_objects(plane: cluster.ControlPlane, with_quota: bool, vms: int) -> None:
    docs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": SYSTEM_NS}},
    ]
    for name, (vcpus, memory) in FLAVORS.items():
        docs.append({"apiVersion": constants.API_VERSION, "kind": "Flavor",
                     "metadata": {"name": name},
                     "spec": {"vcpus": vcpus, "memory": memory, "disk": "20Gi"}})  # fmt: skip
    docs.append({
        "apiVersion": constants.API_VERSION, "kind": "ResourcePool", "metadata": {"name": "bench"},
        "spec": {"hostSelector": {"matchLabels": {"kubenova.io/class": "general"}},
                 "overcommit": {"cpu": 4.0}, "placementPolicy": "Pack",
                 "reservations": [{"flavor": "bench-small", "count": 20}]},
    })  # fmt: skip
    docs.append({
        "apiVersion": constants.API_VERSION, "kind": "ResourcePool",
        "metadata": {"name": "bench-gpu"},
        "spec": {"hostSelector": {"matchLabels": {"kubenova.io/class": "gpu"}},
                 "placementPolicy": "Spread"},
    })  # fmt: skip
    if with_quota:
        docs.append({
            "apiVersion": constants.API_VERSION, "kind": "VMQuota",
            "metadata": {"name": "bench", "namespace": NS},
            "spec": {"hard": {"vms": vms * 2, "vcpus": vms * 8}},
        })  # fmt: skip
    apply_yaml(plane, docs)


def baseline(custom: Any, vms: int, writers: int) -> tuple[float, float]:
    """The same creates plus the binding write per VM (status), by this client alone: the
    floor the API server and etcd set. Returns (seconds, VMs per second)."""
    ns = "bench-baseline"
    core = kubernetes.client.CoreV1Api(custom.api_client)
    core.create_namespace(kubernetes.client.V1Namespace(metadata={"name": ns}))

    def bind(name: str) -> None:
        status = {"status": {"host": "nowhere", "phase": "Scheduled"}}
        custom.patch_namespaced_custom_object_status(
            G, V, ns, "virtualmachines", name, status, _content_type=MERGE
        )

    names = [f"base-{i:05d}" for i in range(vms)]
    seconds = create_all(custom, ns, names, None, writers, then=bind)
    core.delete_namespace(ns)
    return seconds, vms / seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--hosts", type=int, default=100)
    p.add_argument("--vms", type=int, default=1000)
    p.add_argument("--smoke", action="store_true", help="100 hosts, 1,000 VMs")
    p.add_argument("--agent-procs", type=int, default=0, help="simulate processes (0: auto)")
    p.add_argument("--writers", type=int, default=8, help="client threads creating VMs")
    p.add_argument("--no-webhooks", action="store_true")
    p.add_argument("--chaos", action="store_true")
    p.add_argument(
        "--faults",
        type=float,
        default=0.02,
        help="with --chaos: each API request's chance of a fault (0: no proxy)",
    )
    p.add_argument("--seed", type=int, default=1, help="of the fault mix")
    p.add_argument(
        "--deletes",
        type=float,
        default=0.1,
        help="with --chaos: share of the VMs deleted mid-run (0: none)",
    )
    p.add_argument("--no-baseline", action="store_true", help="skip the API-server-alone run")
    p.add_argument("--timeout", type=float, default=1800)
    p.add_argument("--keep", action="store_true", help="keep the state folder")
    a = p.parse_args()
    if a.smoke:
        a.hosts, a.vms = 100, 1000
    procs = a.agent_procs or max(1, min(8, a.hosts // 100))

    folder = Path(tempfile.mkdtemp(prefix="kubenova-scale-"))
    print(f"# kubenova scale run: {a.hosts} hosts, {a.vms} VMs, {os.cpu_count()} cores; "
          f"state in {folder}", flush=True)  # fmt: skip
    plane = cluster.ControlPlane(folder / "cp", cluster.ensure_binaries(), die_with_parent=True)
    plane.up(log=lambda m: print(f"  {m}", flush=True))
    api = kubernetes.config.new_client_from_config(config_file=str(plane.kubeconfig))  # type: ignore[no-untyped-call]
    api.configuration.connection_pool_maxsize = a.writers * 2
    custom: Any = kubernetes.client.CustomObjectsApi(api)
    setup_objects(plane, with_quota=not a.no_webhooks, vms=a.vms)

    base_rate = float("nan")
    if not a.no_baseline:
        print("\n## baseline: the API server alone", flush=True)
        counted = writes_for_vms(plane)
        base_s, base_rate = baseline(custom, a.vms, a.writers)
        counted = writes_for_vms(plane) - counted
        print(f"  {a.vms} creates + {2 * a.vms} binding writes by {a.writers} client threads: "
              f"{base_s:.1f} s, {base_rate:.0f} VMs/s; the write counter saw "
              f"{counted / a.vms:.2f} per VM", flush=True)  # fmt: skip

    env = {**os.environ, "KUBECONFIG": str(plane.kubeconfig)}
    py = sys.executable
    proxy: FaultProxyProcess | None = None
    envs = {"operator": env, "agents": env, "webhooks": env}
    if a.chaos and a.faults > 0:
        proxy = FaultProxyProcess.launch(folder, plane, env, a.faults, a.seed)
        envs = {c: {**env, "KUBECONFIG": str(k)} for c, k in proxy.kubeconfigs.items()}
        print(f"  fault proxy: {a.faults:.1%} of API requests faulted, seed {a.seed}", flush=True)
    comps: list[Component] = []
    for name in ("etcd", "kube-apiserver", "kube-controller-manager"):
        comps.append(PlaneComponent(name, [], plane.logs / f"{name}.log", env, plane=plane))
    operators = [
        Component(f"operator-{i}", [py, "-m", "kubenova.operator", "--identity", f"op-{i}",
                                    "--namespace", SYSTEM_NS, "--metrics-port", "0"],
                  folder / f"operator-{i}.log", envs["operator"])
        for i in range(3)
    ]  # fmt: skip
    per = -(-a.hosts // procs)
    agents = [
        Component(f"agents-{i}", [py, "-m", "kubenova.node_agent.simulate",
                                  "--hosts", str(min(per, a.hosts - i * per)),
                                  "--prefix", f"sim{i}", "--dir", str(folder / f"hosts-{i}"),
                                  "--namespace", SYSTEM_NS, "--heartbeat", "10", "--lease", "40",
                                  "--report", "5" if a.chaos else "30", "--resync", "300"],
                  folder / f"agents-{i}.log", envs["agents"])
        for i in range(procs)
        if a.hosts - i * per > 0
    ]  # fmt: skip
    webhooks: list[Component] = []
    if not a.no_webhooks:
        webhooks = start_webhooks(folder, plane, env, envs["webhooks"])
    for c in operators + agents:
        c.start()
    comps += operators + agents + webhooks + ([proxy] if proxy else [])

    def ready_hosts() -> int:
        hosts = custom.list_cluster_custom_object(G, V, "hosts")["items"]
        return sum(1 for h in hosts if h.get("status", {}).get("phase") == "Ready")

    t0 = time.monotonic()
    while ready_hosts() < a.hosts:
        if time.monotonic() - t0 > 300:
            sys.exit(f"only {ready_hosts()} of {a.hosts} hosts Ready after 300 s")
        time.sleep(1)
    print(f"\n## kubenova: {a.hosts} hosts Ready after {time.monotonic() - t0:.1f} s", flush=True)

    timings = Timings()
    stop = threading.Event()
    watcher = threading.Thread(target=watch_vms, args=(custom, timings, stop), daemon=True)
    watcher.start()
    writes0 = writes_for_vms(plane)
    for c in comps:
        c.cpu_before = c.cpu_now()
    names = [f"vm-{i:05d}" for i in range(a.vms)]
    chaos = None
    if a.chaos:
        chaos = Chaos(plane, comps, operators, agents, custom, timings, a.vms, a.deletes)
    watchdog: Watchdog | None = None
    if a.chaos:
        watchdog = Watchdog(custom, quota=not a.no_webhooks)
        watchdog.start()
    if proxy is not None:
        proxy.arm(True)
    started = time.monotonic()
    # Creating runs in threads; faults are injected from this (the main) thread, because the
    # control plane's processes die with the thread that started them.
    created: list[float] = []
    creator = threading.Thread(
        target=lambda: created.append(create_all(custom, NS, names, timings, a.writers)),
        daemon=True,
    )
    creator.start()
    last_report = time.monotonic()

    def running() -> int:  # of the workload's VMs, the canaries aside
        with timings.lock:
            return sum(1 for n in names if n in timings.running)

    while running() < a.vms or (chaos and not chaos.done()):
        if time.monotonic() - started > a.timeout:
            print(f"  TIMEOUT: {running()} of {a.vms} Running", flush=True)
            break
        if chaos:
            chaos.tick()
        for c in operators + agents + webhooks:
            code = c.exited()
            if code is not None:  # nothing restarts it: say so, with the end of its log
                tail = c.log.read_text(errors="replace").splitlines()[-15:]
                print(
                    f"  {c.name} EXITED with code {code} at +{time.monotonic() - started:.0f} s;"
                    " its log ends:\n    " + "\n    ".join(t[:300] for t in tail),
                    flush=True,
                )
        if created and created[0] > 0:
            print(f"  created {a.vms} VMs in {created[0]:.1f} s ({a.vms / created[0]:.0f}/s)",
                  flush=True)  # fmt: skip
            created[0] = -1.0
        if time.monotonic() - last_report > 10:
            print(f"  ... {len(timings.bound)} bound, {len(timings.running)} Running", flush=True)
            last_report = time.monotonic()
        time.sleep(0.1)
    elapsed = time.monotonic() - started
    if proxy is not None:
        proxy.arm(False)  # the final checks read a settled cluster
    creator.join()
    writes = writes_for_vms(plane) - writes0 + (chaos.writes_before_restarts if chaos else 0)

    bound_lat = [timings.bound[n] - timings.created[n] for n in names if n in timings.bound]
    run_lat = [timings.running[n] - timings.created[n] for n in names if n in timings.running]
    binds = [timings.bound[n] for n in names if n in timings.bound]  # canaries aside
    first_bind = min(binds, default=started)
    last_bind = max(binds, default=started)
    print(f"\n## results ({a.hosts} hosts, {a.vms} VMs, {'with' if webhooks else 'no'} webhooks"
          f"{', chaos' if a.chaos else ''})")  # fmt: skip
    print(f"  all Running after            {elapsed:8.1f} s   ({len(run_lat)}/{a.vms} Running)")
    rate = len(bound_lat) / max(last_bind - first_bind, 1e-9)
    print(f"  placements per second        {rate:8.0f}      (first to last bind)")
    print(f"  create → bound    p50 / p99  {pct(bound_lat, 50):8.2f} / {pct(bound_lat, 99):.2f} s")
    print(f"  create → Running  p50 / p99  {pct(run_lat, 50):8.2f} / {pct(run_lat, 99):.2f} s")
    print(f"  API writes per VM            {writes / a.vms:8.1f}      (creates, patches, updates"
          " on virtualmachines and their status)")  # fmt: skip
    if not a.no_baseline:
        print(f"  baseline (API server alone)  {base_rate:8.0f} VMs/s with 3 writes each")
    print("\n  component                    CPU % of a core   peak MiB")
    for c in comps:
        cpu = 100 * (c.cpu_now() - c.cpu_before) / elapsed
        print(f"  {c.name:28} {cpu:15.0f}   {max(c.peak_mib, peak_rss_mib(c.pid)):8.0f}")
    if a.chaos:
        print("\n## chaos")
        assert chaos is not None
        for line in chaos.log:
            print(f"  {line}")
        if proxy is not None:
            print(f"  {proxy.report()}")
        expected = a.vms + len(chaos.canaries) - len(chaos.deleted)
        # The settled state: long enough for a quota recount (every 60 s) after the faults
        # stop, which heals a charge whose create failed after admission (the API server
        # restarting under a create).
        ok = check_invariants(custom, expected, not a.no_webhooks, settle=90.0)
        assert watchdog is not None
        ok = watchdog.finish() and ok
    else:
        ok = len(run_lat) == a.vms
    stop.set()
    stop_all(operators + agents + webhooks + ([proxy] if proxy else []))
    plane.down(remove=not a.keep)
    if not a.keep:
        shutil.rmtree(folder, ignore_errors=True)
    sys.exit(0 if ok else 1)


def stop_all(comps: list[Component]) -> None:
    """SIGTERM every component at once, then wait for each: they shut down in parallel."""
    for c in comps:
        c.account()
        if c.proc is not None and c.proc.poll() is None:
            os.killpg(c.pid, signal.SIGTERM)
    for c in comps:
        if c.proc is not None:
            try:
                c.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(c.pid, signal.SIGKILL)
                c.proc.wait(10)


def start_webhooks(
    folder: Path, plane: cluster.ControlPlane, env: dict[str, str], api_env: dict[str, str]
) -> list[Component]:
    """The admission server and its quota release loop, registered by URL with a fresh CA
    (`kubenova.dev.webhooks`), with rate limits above what this run sends; they reach the API
    as `api_env` says (through the fault proxy in chaos runs)."""
    from kubenova.dev import webhooks as dev_webhooks

    env = api_env
    hooks = dev_webhooks.start(folder, plane.kubeconfig, api_kubeconfig=Path(env["KUBECONFIG"]))
    server = Component("webhooks", hooks.server_argv, folder / "webhooks.log", env, hooks.server)
    releaser = Component(
        "quota-release-loop", hooks.releaser_argv, folder / "quota-release.log", env,
        hooks.releaser,
    )  # fmt: skip
    return [server, releaser]


@dataclass
class FaultProxyProcess(Component):
    """The fault proxy in a process of its own (its CPU is not the benchmark's), with a
    listener and kubeconfig per kind of component. Started held: `arm` turns the faults on."""

    kubeconfigs: dict[str, Path] = field(default_factory=dict)
    counts_file: Path = field(default_factory=Path)

    @classmethod
    def launch(
        cls, folder: Path, plane: cluster.ControlPlane, env: dict[str, str], rate: float, seed: int
    ) -> FaultProxyProcess:
        where = folder / "faultproxy"
        kinds = ("operator", "agents", "webhooks")
        argv = [sys.executable, "-m", "kubenova.dev.faultproxy",
                f"--kubeconfig={plane.kubeconfig}", f"--folder={where}", f"--mix={rate}",
                f"--seed={seed}", "--hold", *(f"--component={k}" for k in kinds)]  # fmt: skip
        proxy = cls("fault-proxy", argv, folder / "faultproxy.log", env,
                    kubeconfigs={k: where / f"{k}.kubeconfig" for k in kinds},
                    counts_file=where / "counts.json")  # fmt: skip
        proxy.start()
        deadline = time.monotonic() + 30
        while not proxy.counts_file.exists():  # written once every listener is up
            assert proxy.proc is not None
            if time.monotonic() > deadline or proxy.proc.poll() is not None:
                sys.exit(f"the fault proxy did not start; see {proxy.log}")
            time.sleep(0.1)
        return proxy

    def arm(self, on: bool) -> None:
        os.kill(self.pid, signal.SIGUSR1 if on else signal.SIGUSR2)

    def counts(self) -> dict[str, int]:
        """As the proxy wrote them (every second)."""
        try:
            counts: dict[str, int] = json.loads(self.counts_file.read_text())
        except (OSError, ValueError):
            return {}
        return counts

    def report(self) -> str:
        counts = self.counts()
        kinds = ", ".join(f"{k} {n}" for k, n in counts.items() if k != "requests")
        total = sum(n for k, n in counts.items() if k != "requests")
        return f"API faults injected: {total} in {counts.get('requests', 0)} requests ({kinds})"


class Watchdog:
    """The invariants that must hold at every instant, not only at the end: read from the
    API's own objects every `period` seconds, in a thread, while the run goes on. Each read is
    ordered so that a write landing between two lists can only make an invariant look better
    (hosts before VMs, VMs before the quota whose `used` is judged), never a false violation;
    the quota is read before the VMs too, for the uids it has released."""

    NAMES = (
        "no host allocated beyond its capacity (cpu x4 over-commit, memory x1)",
        "no VM's binding moved to another host",
        "no host reports more domains than VMs it was given (no VM defined on two hosts)",
        "quota used never below what exists",
    )

    def __init__(self, custom: Any, quota: bool, period: float = 0.5) -> None:
        self.custom, self.quota, self.period = custom, quota, period
        self.snapshots = 0
        self.checks: Counter[str] = Counter()
        self.violations: Counter[str] = Counter()
        self.examples: dict[str, str] = {}
        self.reads_failed = 0
        self.first_host: dict[str, str] = {}
        self.released: set[str] = set()
        """uids ever seen in the quota's status.released."""
        self.ever_bound: dict[str, set[str]] = {}
        """Host → VMs ever seen bound to it: a deleted VM's domain may outlive its object
        until the agent's next report."""
        self._flavors: dict[str, dict[str, Any]] = {}
        self.started = time.monotonic()
        self.last_seen: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        due = time.monotonic()
        while not self._stop.wait(max(0.0, due - time.monotonic())):
            due += self.period  # a fixed rate: a slow read does not stretch the interval
            try:
                self.check_once()
            except Exception:
                self.reads_failed += 1  # the API server or etcd restarting: no snapshot
            due = max(due, time.monotonic())

    def _judge(self, name: str, bad: list[str]) -> None:
        self.checks[name] += 1
        if bad:
            self.violations[name] += 1
            at = f"at +{time.monotonic() - self.started:.1f} s: "
            self.examples.setdefault(name, at + "; ".join(bad[:3]))
            self.last_seen[name] = at

    def _quota(self) -> dict[str, Any] | None:
        if not self.quota:
            return None
        q: dict[str, Any] = self.custom.get_namespaced_custom_object(G, V, NS, "vmquotas", "bench")
        return q

    def check_once(self) -> None:
        if not self._flavors:
            listing = self.custom.list_cluster_custom_object(G, V, "flavors")["items"]
            self._flavors = {f["metadata"]["name"]: f["spec"] for f in listing}
        hosts = self.custom.list_cluster_custom_object(G, V, "hosts")["items"]
        items = self._vms()
        quota = self._quota()
        after = self._vms() if quota is not None else []
        self.snapshots += 1
        cpu: Counter[str] = Counter()
        mem: Counter[str] = Counter()
        moved = []
        for v in items:
            name, host = v["metadata"]["name"], v.get("status", {}).get("host")
            if not host:
                continue
            f = self._flavors[v["spec"]["flavor"]]
            cpu[host] += f["vcpus"]
            mem[host] += _bytes(f["memory"])
            self.ever_bound.setdefault(host, set()).add(name)
            first = self.first_host.setdefault(name, host)
            if first != host:
                moved.append(f"{name} on {first}, then on {host}")
        over, extra = [], []
        for h in hosts:
            name, status = h["metadata"]["name"], h.get("status", {})
            cap = status.get("capacity", {})
            if cpu[name] > cap.get("cpus", 0) * 4.0 or mem[name] > _bytes(cap.get("memory", "0")):
                over.append(f"{name}: {cpu[name]} vCPUs of {cap.get('cpus', 0)}x4, "
                            f"{mem[name] / 2**30:.0f}Gi of {cap.get('memory')}")  # fmt: skip
            ever = len(self.ever_bound.get(name, ()))
            if status.get("domains", 0) > ever:
                extra.append(f"{name}: {status.get('domains')} domains, {ever} VMs ever bound")
        self._judge(self.NAMES[0], over)
        self._judge(self.NAMES[1], moved)
        self._judge(self.NAMES[2], extra)
        if quota is not None:
            self._judge(self.NAMES[3], self._below(items, quota, after))

    def _vms(self) -> list[dict[str, Any]]:
        listing = self.custom.list_namespaced_custom_object(G, V, NS, "virtualmachines")
        return list(listing["items"])

    def _below(
        self, items: list[dict[str, Any]], quota: dict[str, Any], after: list[dict[str, Any]]
    ) -> list[str]:
        """The VMs that surely held a charge when the quota was read, against its `used`.

        Read in the order VMs, quota, VMs again. A VM in the first list was charged before
        the quota was read (admission charges before the object exists). A VM that still
        carries the quota finalizer in the second list had not let go of it when the quota
        was read, so its uid cannot have been pruned from `status.released` yet: if it was
        released, the quota read shows its uid there (a uid is pruned only after its VM drops
        the finalizer, and a release and a prune can both fall between two snapshots). VMs in
        transition between the reads are left to the next snapshot."""
        self.released.update(quota.get("status", {}).get("released") or [])
        still = {
            v["metadata"].get("uid")
            for v in after
            if constants.QUOTA_FINALIZER in (v["metadata"].get("finalizers") or [])
            or not v["metadata"].get("deletionTimestamp")
        }
        holding = [
            v
            for v in items
            if v["metadata"].get("uid") in still and v["metadata"].get("uid") not in self.released
        ]
        used = quota.get("status", {}).get("used", {})
        vcpus = sum(self._flavors[v["spec"]["flavor"]]["vcpus"] for v in holding)
        if used.get("vms", 0) >= len(holding) and used.get("vcpus", 0) >= vcpus:
            return []
        deleting = [
            f"{v['metadata']['name']} {v['metadata'].get('finalizers', [])}"
            for v in holding
            if v["metadata"].get("deletionTimestamp")
        ]
        return [
            f"used vms={used.get('vms')} vcpus={used.get('vcpus')}; "
            f"hold {len(holding)} VMs, {vcpus} vCPUs (being deleted, not released: {deleting}; "
            f"{len(self.released)} uids released; quota rv {quota['metadata']['resourceVersion']})"
        ]

    def finish(self) -> bool:
        """Stop, print each invariant with its checks and violations; True if none."""
        self._stop.set()
        self._thread.join(30)
        reads = self.snapshots + self.reads_failed
        every = (time.monotonic() - self.started) / max(reads, 1)
        print(f"\n## invariants at every instant ({self.snapshots} snapshots, one per "
              f"{every:.2f} s, aiming at {self.period} s; {self.reads_failed} failed reads, "
              "the API down)")  # fmt: skip
        ok = self.snapshots > 0
        for name in self.NAMES:
            if name not in self.checks:
                continue
            bad = self.violations[name]
            detail = f"{self.checks[name]} checks, {bad} violations"
            if bad:
                detail += f", first {self.examples[name]}; last {self.last_seen[name]}"
            print(f"  {'PASS' if not bad else 'FAIL'}  {name}: {detail}")
            ok = ok and not bad
        total = sum(self.checks.values())
        print(f"  invariant checks made: {total}; violations: {sum(self.violations.values())}")
        return ok


def _leader(custom: Any) -> str | None:
    coord = kubernetes.client.CoordinationV1Api(custom.api_client)
    try:
        lease = coord.read_namespaced_lease("kubenova-operator", SYSTEM_NS)
    except Exception:
        return None
    return lease.spec.holder_identity if lease.spec else None


class Chaos:
    """Faults at 10, 25, 40 and 55 % of the VMs bound, one at a time, injected by `tick()`
    from the main loop, then (at 70 %) a share of the running VMs deleted. After each fault a
    canary VM is created; the fault's recovery time is from the fault until its canary runs —
    the end-to-end time until kubenova works again."""

    def __init__(
        self,
        plane: cluster.ControlPlane,
        comps: list[Component],
        operators: list[Component],
        agents: list[Component],
        custom: Any,
        timings: Timings,
        vms: int,
        deletes: float = 0.1,
    ) -> None:
        self.plane, self.comps, self.operators, self.agents = plane, comps, operators, agents
        self.custom, self.timings, self.vms = custom, timings, vms
        self.deletes = deletes
        self.log: list[str] = []
        self.steps: list[tuple[float, Callable[[], str]]] = [
            (0.1, self.kill_leader),
            (0.25, self.kill_agents),
            (0.4, lambda: self.restart("kube-apiserver")),
            (0.55, lambda: self.restart("etcd")),
        ]
        if deletes > 0:
            self.steps.append((0.7, self.delete_some))
        self.canaries: list[str] = []
        self.deleted: list[str] = []
        self.watching: tuple[str, float, str] | None = None
        self.later: list[tuple[float, Component]] = []
        self.killed_leader: tuple[str, Component, float] | None = None
        self.writes_before_restarts = 0
        """API writes counted by kube-apiserver incarnations that were restarted."""

    def done(self) -> bool:
        return not self.steps and self.watching is None and not self.later

    def tick(self) -> None:
        now = time.monotonic()
        for due, comp in list(self.later):
            if now >= due:
                comp.start()
                self.later.remove((due, comp))
        if self.killed_leader is not None:
            holder, victim, since = self.killed_leader
            new = _leader(self.custom)
            if new is not None and new != holder:
                self.log.append(f"  lease taken over by {new} {now - since:.1f} s after the kill")
                self.killed_leader = None
                # Back only now: with its old identity it would simply resume its own lease.
                self.later.append((now, victim))
        if self.watching is not None:
            label, since, canary = self.watching
            if canary in self.timings.running:
                self.log.append(f"{label}: a new VM ran {now - since:.1f} s after the fault")
                self.watching = None
            elif now - since > 180:
                self.log.append(f"{label}: a new VM did not run within 180 s")
                self.watching = None
            return
        if self.steps and len(self.timings.bound) >= self.steps[0][0] * self.vms:
            _, action = self.steps.pop(0)
            started = time.monotonic()
            label = action()
            canary = f"canary-{len(self.canaries)}"
            self.canaries.append(canary)
            threading.Thread(
                target=create_all, args=(self.custom, NS, [canary], self.timings, 1), daemon=True
            ).start()
            self.watching = (label, started, canary)

    def kill_leader(self) -> str:
        holder = _leader(self.custom)
        victim = next(
            (o for o in self.operators if o.argv[o.argv.index("--identity") + 1] == holder), None
        )
        if victim is None:
            return f"found no leader to kill (lease holder {holder!r})"
        victim.kill()
        self.killed_leader = (holder or "", victim, time.monotonic())
        return f"killed the leader {holder} (SIGKILL)"

    def kill_agents(self) -> str:
        victim = self.agents[0]
        victim.kill()
        self.later.append((time.monotonic() + 5, victim))
        return f"killed {victim.name} (its hosts' domains lost), restarted 5 s later"

    def delete_some(self) -> str:
        """Delete a share of the VMs that run: the agents tear their domains down and the
        quota gives their charges back, all through the faults."""
        with self.timings.lock:
            victims = sorted(n for n in self.timings.running if n.startswith("vm-"))
        victims = victims[: max(1, int(self.vms * self.deletes))]
        for name in victims:
            try:
                self.custom.delete_namespaced_custom_object(G, V, NS, "virtualmachines", name)
            except kubernetes.client.exceptions.ApiException as e:
                if e.status != 404:
                    raise
            self.deleted.append(name)
        return f"deleted {len(victims)} running VMs"

    def restart(self, name: str) -> str:
        if name == "kube-apiserver":
            self.writes_before_restarts += writes_for_vms(self.plane)
        plane_component(self.comps, name).account()
        self.plane.restart(name, down_for=2)
        return f"restarted {name} (down 2 s)"


def plane_component(comps: list[Component], name: str) -> Component:
    return next(c for c in comps if c.name == name)


def check_invariants(custom: Any, vms: int, quota: bool, settle: float = 60.0) -> bool:
    """After the run: print each invariant and whether it holds. Agents report their domain
    counts periodically, so the domain checks wait up to `settle` seconds to agree."""
    deadline = time.monotonic() + settle
    while True:
        results = _invariants(custom, vms, quota)
        if all(ok for _, ok, _ in results) or time.monotonic() > deadline:
            break
        time.sleep(2)
    for name, ok, detail in results:
        print(f"  {'PASS' if ok else 'FAIL'}  {name}: {detail}")
    return all(ok for _, ok, _ in results)


def _invariants(custom: Any, vms: int, quota: bool) -> list[tuple[str, bool, str]]:
    items = custom.list_namespaced_custom_object(G, V, NS, "virtualmachines")["items"]
    hosts = {
        h["metadata"]["name"]: h for h in custom.list_cluster_custom_object(G, V, "hosts")["items"]
    }
    flavors = {
        f["metadata"]["name"]: f["spec"]
        for f in custom.list_cluster_custom_object(G, V, "flavors")["items"]
    }
    out: list[tuple[str, bool, str]] = []

    running = [v for v in items if v.get("status", {}).get("phase") == "Running"]
    out.append(("every VM reached its desired state (Running)", len(running) == vms == len(items),
                f"{len(running)} Running of {len(items)} objects, {vms} created"))  # fmt: skip

    def bound_badly(v: dict[str, Any]) -> bool:
        """Bound other than once. The history keeps the last MAX_HISTORY entries: in a full
        one the bind may have fallen off (a VM that went Unknown and back a few times), and
        only a second bind still shows; that a binding never moved is checked all along."""
        history = v.get("status", {}).get("history", [])
        n = [h["action"] for h in history].count("Scheduled")
        return n > 1 if len(history) >= constants.MAX_HISTORY else n != 1

    twice = [v["metadata"]["name"] for v in items if bound_badly(v)]
    out.append(("every VM was bound exactly once", not twice, f"{len(twice)} bound != 1 time"
                + (f", e.g. {twice[:3]}" if twice else "")))  # fmt: skip

    unguarded = [
        v["metadata"]["name"]
        for v in items
        if v.get("status", {}).get("host")
        and constants.VM_FINALIZER not in (v["metadata"].get("finalizers") or [])
    ]
    out.append(("every bound VM holds its domain-cleanup finalizer", not unguarded,
                f"{len(unguarded)} without, e.g. {unguarded[:3]}"))  # fmt: skip

    cpu: Counter[str] = Counter()
    mem: Counter[str] = Counter()
    per_host: Counter[str] = Counter()
    for v in items:
        host = v.get("status", {}).get("host")
        if host:
            f = flavors[v["spec"]["flavor"]]
            cpu[host] += f["vcpus"]
            mem[host] += _bytes(f["memory"])
            per_host[host] += 1
    over = []
    for name, h in hosts.items():
        cap = h.get("status", {}).get("capacity", {})
        if cpu[name] > cap.get("cpus", 0) * 4.0 or mem[name] > _bytes(cap.get("memory", "0")):
            over.append(
                f"{name} ({cpu[name]} vCPUs of {cap.get('cpus', 0)}x4, "
                f"{mem[name] / 2**30:.0f}Gi of {cap.get('memory')}, {per_host[name]} VMs)"
            )
    out.append(("no host over-allocated (cpu x4 over-commit, memory x1)", not over,
                f"{len(over)} over" + (f": {over[:3]}" if over else "")))  # fmt: skip

    wrong = [n for n, h in hosts.items() if h.get("status", {}).get("domains", 0) != per_host[n]]
    total = sum(h.get("status", {}).get("domains", 0) for h in hosts.values())
    out.append(("every VM has exactly one domain, no orphan domain (agents' reports)",
                not wrong and total == len(items),
                f"{total} domains for {len(items)} VMs; {len(wrong)} hosts disagree"))  # fmt: skip

    if quota:
        q = custom.get_namespaced_custom_object(G, V, NS, "vmquotas", "bench")
        used = q.get("status", {}).get("used", {})
        want_cpu = sum(flavors[v["spec"]["flavor"]]["vcpus"] for v in items)
        ok = used.get("vms") == len(items) and used.get("vcpus") == want_cpu
        out.append(("quota used equals what exists", ok,
                    f"used vms={used.get('vms')} vcpus={used.get('vcpus')}; "
                    f"exist {len(items)} VMs, {want_cpu} vCPUs"))  # fmt: skip
    return out


def _bytes(q: str | int) -> int:
    from kubenova.api import Quantity

    return Quantity(q).to_int()


if __name__ == "__main__":
    main()
