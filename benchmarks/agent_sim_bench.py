"""Benchmark of simulated node agents against the real API server, with a baseline measured in
the same run.

    python benchmarks/agent_sim_bench.py                    # 20 hosts, 200 VMs
    python benchmarks/agent_sim_bench.py --hosts 50 --vms 500
    python benchmarks/agent_sim_bench.py --quick            # 5 hosts, 20 VMs

Starts its own local control plane and one `python -m kubenova.node_agent.simulate` process
with N agents (each its own `test:///` host), then:

  1. baseline: the agents idle with no VM (heartbeats and Host reports only) — the process's
     CPU use and resident memory;
  2. bind: M VMs created already bound round-robin (finalizer, host label, then status.host
     and phase Scheduled, as the operator does) — time until every VM is Running, p50 / p99
     of create-to-Running, CPU during the burst;
  3. steady: the same agents holding M running domains — CPU and memory.

Everything (client, API server, etcd, agents) shares this machine's cores. Not a pytest test.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import kubernetes

from kubenova.api import constants
from kubenova.dev import cluster

G, V = constants.GROUP, constants.VERSION


def _proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _cpu_over(pid: int, seconds: float) -> float:
    c0, t0 = _proc_cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return 100 * (_proc_cpu_seconds(pid) - c0) / (time.monotonic() - t0)


def _wait(what: str, check: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            sys.exit(f"timed out waiting for {what}")
        time.sleep(0.2)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--hosts", type=int, default=20)
    p.add_argument("--vms", type=int, default=200)
    p.add_argument("--idle", type=float, default=15.0, help="seconds of each CPU sample")
    p.add_argument("--quick", action="store_true")
    a = p.parse_args()
    if a.quick:
        a.hosts, a.vms, a.idle = 5, 20, 5.0

    folder = Path(tempfile.mkdtemp(prefix="kubenova-agent-bench-"))
    plane = cluster.ControlPlane(folder / "cp", cluster.ensure_binaries(), die_with_parent=True)
    plane.up(log=lambda m: print(m, file=sys.stderr))
    config: Any = kubernetes.config  # untyped; custom objects are plain JSON anyway
    api = config.new_client_from_config(config_file=str(plane.kubeconfig))
    core: Any = kubernetes.client.CoreV1Api(api)
    custom: Any = kubernetes.client.CustomObjectsApi(api)
    for ns in ("kubenova-system", "bench"):
        core.create_namespace({"metadata": {"name": ns}})
    custom.create_cluster_custom_object(G, V, "flavors", {
        "apiVersion": constants.API_VERSION, "kind": "Flavor", "metadata": {"name": "bench"},
        "spec": {"vcpus": 1, "memory": "1Gi", "disk": "10Gi"},
    })  # fmt: skip
    env = {**os.environ, "KUBECONFIG": str(plane.kubeconfig)}
    log = (folder / "sim.log").open("wb")
    sim = subprocess.Popen(
        [sys.executable, "-m", "kubenova.node_agent.simulate", "--hosts", str(a.hosts),
         "--dir", str(folder / "hosts"), "--heartbeat", "10", "--report", "30"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        hosts = [f"sim-{i}" for i in range(a.hosts)]
        _wait("every Host", lambda: len(
            custom.list_cluster_custom_object(G, V, "hosts")["items"]) == a.hosts, 120)  # fmt: skip
        time.sleep(2)  # past start-up
        base_cpu = _cpu_over(sim.pid, a.idle)
        base_rss = _rss_mib(sim.pid)

        created: dict[str, float] = {}
        c0, t0 = _proc_cpu_seconds(sim.pid), time.monotonic()
        for i in range(a.vms):
            name, host = f"vm-{i}", hosts[i % a.hosts]
            custom.create_namespaced_custom_object(G, V, "bench", "virtualmachines", {
                "apiVersion": constants.API_VERSION, "kind": "VirtualMachine",
                "metadata": {"name": name, "finalizers": [constants.VM_FINALIZER]},
                "spec": {"flavor": "bench", "boot": {"image": "x.qcow2"}},
            })  # fmt: skip
            created[name] = time.monotonic()
            custom.patch_namespaced_custom_object_status(
                G, V, "bench", "virtualmachines", name,
                {"status": {"host": host, "phase": "Scheduled"}},
                _content_type="application/merge-patch+json",
            )  # fmt: skip
        running_at: dict[str, float] = {}

        def all_running() -> bool:
            now = time.monotonic()
            items = custom.list_namespaced_custom_object(G, V, "bench", "virtualmachines")["items"]
            for vm in items:
                if vm.get("status", {}).get("phase") == "Running":
                    running_at.setdefault(vm["metadata"]["name"], now)
            return len(running_at) >= int(a.vms)

        _wait("every VM Running", all_running, 300)
        burst = time.monotonic() - t0
        burst_cpu = 100 * (_proc_cpu_seconds(sim.pid) - c0) / burst
        lat = sorted(running_at[n] - created[n] for n in created)
        time.sleep(2)
        steady_cpu = _cpu_over(sim.pid, a.idle)
        steady_rss = _rss_mib(sim.pid)
    finally:
        sim.terminate()
        sim.wait(15)
        plane.down(remove=True)

    print(f"\n{a.hosts} simulated hosts in one process, {a.vms} VMs ({os.cpu_count()} cores)")
    print(f"  baseline, idle agents:   CPU {base_cpu:5.1f}% of a core, RSS {base_rss:6.1f} MiB")
    print(f"  bind burst:              all Running in {burst:.1f} s "
          f"({a.vms / burst:.0f} VMs/s), CPU {burst_cpu:5.1f}%")  # fmt: skip
    print(f"    create→Running:        p50 {statistics.median(lat):.2f} s, "
          f"p99 {lat[int(0.99 * (len(lat) - 1))]:.2f} s, max {lat[-1]:.2f} s")  # fmt: skip
    print(
        f"  steady, {a.vms} domains:   CPU {steady_cpu:5.1f}% of a core, RSS {steady_rss:6.1f} MiB"
    )
    print(f"  per agent (steady):      {steady_rss / a.hosts:.1f} MiB, "
          f"{steady_cpu / a.hosts:.2f}% CPU")  # fmt: skip


if __name__ == "__main__":
    main()
