"""Benchmark of admission through the real API server, with a baseline measured in the same run.

    python benchmarks/admission_bench.py                      # 200 creates/s for 10 s
    python benchmarks/admission_bench.py --rate 400 --duration 5
    python benchmarks/admission_bench.py --quick              # smoke size, a few seconds

Starts its own local control plane, then sends VirtualMachine creates at a fixed rate (open
loop: each request is due at start + i/rate, whether or not earlier ones have answered) and
times each from when it was due until the API server answers:

  1. baseline: no webhook registered (schema validation, CEL, etcd write only);
  2. webhook: the mutating and validating webhooks registered by URL with failurePolicy Fail,
     a VMQuota in the namespace (so every create is a compare-and-swap charge), rate limits on
     but far above the load.

Prints admissions per second, p50 / p90 / p99 / max latency and failures for each, the
difference, and the webhook's own time per review from its Prometheus histogram. Everything
(client, API server, etcd, webhook) shares this machine's cores. Not a pytest test.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the webhook test fixtures are the harness

from tests.fixtures.cluster import LocalCluster  # noqa: E402
from tests.fixtures.webhook import TEST_LABEL, KubeHTTP, start_webhook, vm_manifest  # noqa: E402

from kubenova.dev import cluster  # noqa: E402


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Run:
    name: str
    sent: int
    ok: int
    failed: int
    elapsed: float
    latencies: list[float]
    """Seconds from when each request was due to its answer."""
    cpu: dict[str, float] = field(default_factory=dict)
    """CPU seconds each process used during the measured run."""

    @property
    def rate(self) -> float:
        return self.ok / self.elapsed if self.elapsed else 0.0

    def pct(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        s = sorted(self.latencies)
        return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


async def _drive(
    http: KubeHTTP, namespace: str, prefix: str, flavor: str, rate: float, duration: float
) -> Run:
    count = int(rate * duration)
    latencies: list[float] = []
    statuses: list[int] = []
    async with http.session(connections=256) as s:
        start = time.perf_counter() + 0.1

        async def one(i: int) -> None:
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            body = vm_manifest(f"{prefix}-{i:06d}", namespace, flavor)
            reply = await http.create(s, namespace, "virtualmachines", body)
            latencies.append(time.perf_counter() - due)
            statuses.append(reply.status)

        await asyncio.gather(*(one(i) for i in range(count)))
        elapsed = time.perf_counter() - start
    ok = sum(1 for st in statuses if st == 201)
    ok_latencies = [lat for lat, st in zip(latencies, statuses, strict=True) if st == 201]
    return Run(prefix, count, ok, count - ok, elapsed, ok_latencies)


def _measure(
    tc: LocalCluster,
    ns: str,
    name: str,
    flavor: str,
    args: argparse.Namespace,
    pids: dict[str, int],
) -> tuple[Run, int]:
    """The measured run with the CPU each process in `pids` used during it, and how many
    warm-up creates were admitted before it."""
    http = KubeHTTP(tc.kubeconfig)
    warm = None
    if args.warmup:
        warm = asyncio.run(_drive(http, ns, f"{name}-warm", flavor, args.rate, args.warmup))
    before = {n: cpu_seconds(pid) for n, pid in pids.items()}
    client_before = sum(os.times()[:2])
    run = asyncio.run(_drive(http, ns, name, flavor, args.rate, args.duration))
    cpu = {n: cpu_seconds(pid) - before[n] for n, pid in pids.items()}
    cpu["load generator"] = sum(os.times()[:2]) - client_before
    return replace(run, cpu=cpu), warm.ok if warm else 0


def _server_side(metrics: str) -> str:
    """Mean time per review inside the webhook, by webhook, from its histogram."""
    out = []
    for hook in ("mutate", "validate"):
        labels = rf'kind="VirtualMachine",operation="CREATE",webhook="{hook}"'
        total = re.search(rf"kubenova_webhook_admission_seconds_sum\{{{labels}\}} (\S+)", metrics)
        count = re.search(rf"kubenova_webhook_admission_seconds_count\{{{labels}\}} (\S+)", metrics)
        if total and count and float(count.group(1)):
            mean = float(total.group(1)) / float(count.group(1)) * 1000
            out.append(f"{hook} {mean:.2f} ms mean over {int(float(count.group(1)))} reviews")
    for metric, unit, scale in (
        ("kubenova_webhook_quota_write_seconds", "ms per quota write", 1000.0),
        ("kubenova_webhook_quota_batch_size", "charges per batch", 1.0),
    ):
        total = re.search(rf"{metric}_sum (\S+)", metrics)
        count = re.search(rf"{metric}_count (\S+)", metrics)
        if total and count and float(count.group(1)):
            mean = float(total.group(1)) / float(count.group(1)) * scale
            out.append(f"{mean:.2f} {unit} (mean of {int(float(count.group(1)))})")
    return "; ".join(out) or "no reviews recorded"


def _row(run: Run) -> str:
    ms = 1000.0
    return (
        f"{run.name:<9} {run.rate:>8.1f} {run.pct(50) * ms:>8.2f} {run.pct(90) * ms:>8.2f} "
        f"{run.pct(99) * ms:>8.2f} {max(run.latencies, default=float('nan')) * ms:>8.2f} "
        f"{run.failed:>7d}"
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rate", type=float, default=200.0, help="creates per second (default 200)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per phase (default 10)")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per phase")
    p.add_argument("--quick", action="store_true", help="2 s phases at 100/s, no warm-up")
    args = p.parse_args(argv)
    if args.quick:
        args.rate, args.duration, args.warmup = 100.0, 2.0, 0.0

    with tempfile.TemporaryDirectory(prefix="kubenova-bench-") as tmp:
        folder = Path(tmp)
        plane = cluster.ControlPlane(
            folder / "plane", cluster.ensure_binaries(), die_with_parent=True
        )
        plane.up(log=lambda line: print(f"# {line}", file=sys.stderr))
        tc = LocalCluster.guarded(plane)
        try:
            _bench(tc, folder, args)
        finally:
            plane.down(remove=True)


def _bench(tc: LocalCluster, folder: Path, args: argparse.Namespace) -> None:
    flavor = {
        "apiVersion": "kubenova.io/v1alpha1",
        "kind": "Flavor",
        "metadata": {"name": "bench"},
        "spec": {"vcpus": 1, "memory": "1Gi"},
    }
    tc.kubectl("apply", "-f", "-", input=yaml.safe_dump(flavor))
    # A namespace per phase: the quota's first charge recounts the VMs already there.
    base_ns, ns = "bench-baseline", "bench"
    tc.kubectl("create", "namespace", base_ns)
    tc.kubectl("create", "namespace", ns)
    tc.kubectl("label", "namespace", ns, f"{TEST_LABEL}=true")
    quota = {
        "apiVersion": "kubenova.io/v1alpha1",
        "kind": "VMQuota",
        "metadata": {"name": "limits", "namespace": ns},
        "spec": {"hard": {"vms": 1_000_000, "vcpus": 1_000_000}},
    }
    tc.kubectl("apply", "-f", "-", input=yaml.safe_dump(quota))

    print(
        f"# {args.rate:g} creates/s for {args.duration:g} s per phase "
        f"(+{args.warmup:g} s warm-up), open loop, one namespace",
        file=sys.stderr,
    )
    state = tc.plane.state()
    assert state is not None, "the control plane is up"
    plane_pids = {n: state.pids[n] for n in ("kube-apiserver", "etcd")}
    baseline, _ = _measure(tc, base_ns, "baseline", "bench", args, plane_pids)
    wh = start_webhook(
        tc,
        folder / "webhook",
        ["--namespace-creates=100000/100000", "--cluster-creates=100000/100000"],
        release_loop=False,
    )
    try:
        assert wh.server.proc is not None, "the webhook is running"
        pids = {**plane_pids, "webhook": wh.server.proc.pid}
        hooked, warm_ok = _measure(tc, ns, "webhook", "bench", args, pids)
        metrics = wh.metrics()
    finally:
        wh.unregister()
        wh.stop()
    used = tc.get("vmquota", "limits", "-n", ns)["status"]["used"]["vms"]

    print(
        f"{'phase':<9} {'adm/s':>8} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8} "
        f"{'failed':>7}"
    )
    for run in (baseline, hooked):
        print(_row(run))
    print(
        f"webhook overhead: p50 +{(hooked.pct(50) - baseline.pct(50)) * 1000:.2f} ms, "
        f"p99 +{(hooked.pct(99) - baseline.pct(99)) * 1000:.2f} ms"
    )
    print(f"inside the webhook: {_server_side(metrics)}")
    for run in (baseline, hooked):
        per = ", ".join(f"{n} {sec / run.sent * 1000:.2f}" for n, sec in run.cpu.items())
        total = sum(run.cpu.values()) / run.sent * 1000
        print(f"CPU ms per create, {run.name}: {per}; total {total:.2f}")
    print(f"VMQuota charged {used} VMs for {hooked.ok + warm_ok} creates admitted (with warm-up)")
    goal = "met" if hooked.pct(99) <= 0.010 and hooked.rate >= 0.95 * args.rate else "not met"
    print(f"goal p99 <= 10 ms at {args.rate:g}/s: {goal}")
    one, five, _ = os.getloadavg()
    print(f"machine: {os.cpu_count()} CPUs, load average {one:.2f} (1 min) {five:.2f} (5 min)")


if __name__ == "__main__":
    main()
