"""Benchmark of admission through the real API server, with a baseline measured in the same run.

    python benchmarks/admission_bench.py                      # 200 creates/s for 10 s
    python benchmarks/admission_bench.py --rate 400 --duration 5
    python benchmarks/admission_bench.py --quick              # smoke size, a few seconds
    python benchmarks/admission_bench.py --rounds 3           # both phases three times, alternating
    python benchmarks/admission_bench.py --profile /tmp/prof  # py-spy on the webhook meanwhile
    python benchmarks/admission_bench.py --quota-reservation 0  # the webhook as shipped only

Starts its own local control plane, then sends VirtualMachine creates at a fixed rate (open
loop: each request is due at start + i/rate, whether or not earlier ones have answered) and
times each from when it was due until the API server answers:

  1. baseline: no webhook registered (schema validation, CEL, etcd write only);
  2. webhook, once per `--quota-reservation` value: the mutating and validating webhooks
     registered by URL with failurePolicy Fail, a VMQuota in the namespace, rate limits on but
     far above the load; `exact` (0, as shipped) charges each create with a compare-and-swap
     of the VMQuota before it answers, `reserveN` admits from a reservation of N creates.

With `--rounds N` the two phases alternate N times on the same control plane and webhook
process (the webhooks are registered only for the webhook phase, and each phase waits until a
dry-run create shows the registration in effect or gone), so a burst of load from elsewhere on
a shared machine shows up as one odd round rather than as a difference between the phases.

Prints admissions per second, p50 / p90 / p99 / max latency and failures for each, the
difference, the webhook's own time per review from its Prometheus histogram, and how many
connections the API server opened to it. Everything (client, API server, etcd, webhook) shares
this machine's cores. Not a pytest test.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the webhook test fixtures are the harness

from tests.fixtures.cluster import LocalCluster, wait_for  # noqa: E402
from tests.fixtures.webhook import TEST_LABEL, KubeHTTP, start_webhook, vm_manifest  # noqa: E402

from kubenova.dev import cluster, machine  # noqa: E402


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
    api: dict[str, float] = field(default_factory=dict)
    """What kube-apiserver's metrics grew by during the measured run."""
    stolen_cores: float = float("nan")
    """CPU the host gave to others meanwhile (`kubenova.dev.machine`)."""
    reference_ms: float = float("nan")
    """The machine's speed meanwhile: the reference work's median CPU ms (lower is faster)."""

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
    # The generator's own garbage collections (100 ms and more, over this process's heap of
    # the test harness and the official client) would be timed as the API server's latency.
    gc.collect()
    gc.disable()
    try:
        return await _drive_open_loop(http, namespace, prefix, flavor, rate, count)
    finally:
        gc.enable()


async def _drive_open_loop(
    http: KubeHTTP, namespace: str, prefix: str, flavor: str, rate: float, count: int
) -> Run:
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
    speed_file: Path,
) -> tuple[Run, int]:
    """The measured run with the CPU each process in `pids` used during it and the machine's
    speed meanwhile (the probe's samples in `speed_file`), and how many warm-up creates were
    admitted before it."""
    http = KubeHTTP(tc.kubeconfig)
    warm = None
    if args.warmup:
        warm = asyncio.run(_drive(http, ns, f"{name}-warm", flavor, args.rate, args.warmup))
    api_before = parse_metrics(_api_metrics(tc))
    before = {n: cpu_seconds(pid) for n, pid in pids.items()}
    client_before = sum(os.times()[:2])
    ticks0, t0 = machine.CpuTicks.now(), time.monotonic()
    run = asyncio.run(_drive(http, ns, name, flavor, args.rate, args.duration))
    ticks1, t1 = machine.CpuTicks.now(), time.monotonic()
    cpu = {n: cpu_seconds(pid) - before[n] for n, pid in pids.items()}
    cpu["load generator"] = sum(os.times()[:2]) - client_before
    api = metrics_delta(api_before, parse_metrics(_api_metrics(tc)))
    _, stolen = ticks1.cores_since(ticks0, os.cpu_count() or 1)
    samples = machine.samples_between(speed_file.read_text().splitlines(), t0, t1)
    run = replace(run, cpu=cpu, api=api, stolen_cores=stolen)
    return replace(run, reference_ms=machine.median_ms(samples)), warm.ok if warm else 0


def _api_metrics(tc: LocalCluster) -> str:
    return tc.kubectl("get", "--raw", "/metrics").stdout


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text exposition as {sample with labels: value}."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            try:
                out[name] = float(value)
            except ValueError:
                continue
    return out


def metrics_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """What each counter and histogram sample grew by between two scrapes."""
    return {k: v - before.get(k, 0.0) for k, v in after.items()}


def _mean(
    m: dict[str, float], metric: str, labels: dict[str, str], scale: float = 1000.0
) -> tuple[float, int] | None:
    """Mean (times `scale`: seconds to ms by default) and count of a histogram's samples whose
    labels include `labels`, summed over the rest."""
    total = count = 0.0
    for key, value in m.items():
        name, _, rest = key.partition("{")
        if name not in (f"{metric}_sum", f"{metric}_count"):
            continue
        if all(f'{k}="{v}"' in rest for k, v in labels.items()):
            if name.endswith("_sum"):
                total += value
            else:
                count += value
    return (total / count * scale, int(count)) if count else None


API_STEPS = (
    (
        "VM create",
        "apiserver_request_duration_seconds",
        {"verb": "POST", "resource": "virtualmachines"},
    ),
    (
        "mutating webhook call",
        "apiserver_admission_webhook_admission_duration_seconds",
        {"type": "admit", "operation": "CREATE"},
    ),
    (
        "validating webhook call",
        "apiserver_admission_webhook_admission_duration_seconds",
        {"type": "validating", "operation": "CREATE"},
    ),
    (
        "quota status PUT",
        "apiserver_request_duration_seconds",
        {"verb": "PUT", "resource": "vmquotas", "subresource": "status"},
    ),
)
"""What the API server timed, per request (its own histograms): the create as a whole, each
webhook call from its side (the round trip, the webhook's work inside), and the webhook's
quota write as the API server served it."""


def api_side(m: dict[str, float]) -> str:
    """Mean time of each of `API_STEPS`, from (a delta of) kube-apiserver's metrics."""
    out = []
    for label, metric, labels in API_STEPS:
        mean = _mean(m, metric, labels)
        if mean is not None:
            out.append(f"{label} {mean[0]:.2f} ms mean over {mean[1]}")
    return "; ".join(out) or "no requests recorded"


def server_side(m: dict[str, float]) -> str:
    """Mean time per review inside the webhook, by webhook, quota writes and batches, and the
    connections the reviews came on, from (a delta of) the webhook's metrics."""
    out = []
    for hook in ("mutate", "validate"):
        labels = {"kind": "VirtualMachine", "operation": "CREATE", "webhook": hook}
        mean = _mean(m, "kubenova_webhook_admission_seconds", labels)
        if mean is not None:
            out.append(f"{hook} {mean[0]:.2f} ms mean over {mean[1]} reviews")
    for metric, unit, scale in (
        ("kubenova_webhook_quota_write_seconds", "ms per quota write", 1000.0),
        ("kubenova_webhook_quota_batch_size", "charges per batch", 1.0),
    ):
        mean = _mean(m, metric, {}, scale)
        if mean is not None:
            out.append(f"{mean[0]:.2f} {unit} (mean of {mean[1]})")
    if "kubenova_webhook_connections_total" in m:
        out.append(f"{int(m['kubenova_webhook_connections_total'])} connections")
    return "; ".join(out) or "no reviews recorded"


class Profiler:
    """py-spy recording the webhook during a phase (raw collapsed stacks), when asked for."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self.proc: subprocess.Popen[bytes] | None = None
        self.out: Path | None = None

    def start(self, pid: int, name: str) -> None:
        if self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        self.out = self.folder / f"{name}.txt"
        self.proc = subprocess.Popen(
            [
                *("py-spy", "record", "--pid", str(pid), "--rate", "200", "--format", "raw"),
                *("--nonblocking", "--output", str(self.out)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> str | None:
        """Stop recording; a summary of where the webhook's time went."""
        if self.proc is None or self.out is None:
            return None
        self.proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        self.proc.wait(30)
        self.proc = None
        return profile_summary(self.out.read_text()) + f"\n# stacks: {self.out}"


def profile_summary(raw: str, top: int = 12) -> str:
    """The frames with the most samples of their own, and the share of a few known costs."""
    own: dict[str, int] = {}
    within: dict[str, int] = {}
    total = 0
    for line in raw.splitlines():
        stack, _, n_text = line.rpartition(" ")
        if not stack or not n_text.isdigit():
            continue
        n = int(n_text)
        total += n
        frames = stack.split(";")
        own[frames[-1]] = own.get(frames[-1], 0) + n
        for f in {f.split(" (")[0] for f in frames}:
            within[f] = within.get(f, 0) + n
    if not total:
        return "# profile: no samples"
    lines = [f"# profile: {total} samples; most own time:"]
    for frame, n in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"#   {n / total:6.1%}  {frame}")
    for label, frame in (
        ("TLS handshakes", "SSLObject.do_handshake"),
        ("pydantic validation", "BaseModel.model_validate"),
        ("idle (waiting in select)", "EpollSelector.select"),
    ):
        lines.append(f"#   within {label}: {within.get(frame, 0) / total:.1%}")
    return "\n".join(lines)


def _mode(reservation: int) -> str:
    """A webhook phase's name: charges written one CAS each, or from a reservation."""
    return f"reserve{reservation}" if reservation else "exact"


def _row(run: Run) -> str:
    ms = 1000.0
    return (
        f"{run.name:<12} {run.rate:>8.1f} {run.pct(50) * ms:>8.2f} {run.pct(90) * ms:>8.2f} "
        f"{run.pct(99) * ms:>8.2f} {max(run.latencies, default=float('nan')) * ms:>8.2f} "
        f"{run.failed:>7d}"
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rate", type=float, default=200.0, help="creates per second (default 200)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per phase (default 10)")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per phase")
    p.add_argument("--rounds", type=int, default=1, help="baseline + webhook phases, alternating")
    p.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="DIR",
        help="record the webhook with py-spy during each webhook phase (raw stacks in DIR)",
    )
    p.add_argument(
        "--quota-reservation",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[0, 32],
        metavar="N[,N...]",
        help="a webhook phase per value of the webhook's --quota-reservation, each round "
        "(default 0,32: a write per create, as shipped, then a reservation of 32)",
    )
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


def _hooked(http: KubeHTTP, ns: str, flavor: str) -> bool:
    """Whether a create in `ns` passes through the mutating webhook now (a dry run: checked,
    never stored or charged)."""

    async def probe() -> bool:
        async with http.session(connections=1) as s:
            body = vm_manifest("probe", ns, flavor)
            path = f"/apis/kubenova.io/v1alpha1/namespaces/{ns}/virtualmachines?dryRun=All"
            reply = await http.request(s, "POST", path, body)
            annotations = reply.body.get("metadata", {}).get("annotations") or {}
            return "kubenova.io/quota-charged" in annotations

    return asyncio.run(probe())


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

    modes = args.quota_reservation
    print(
        f"# {args.rate:g} creates/s for {args.duration:g} s per phase "
        f"(+{args.warmup:g} s warm-up), open loop, one namespace, {args.rounds} round(s), "
        f"webhook phases: {', '.join(_mode(m) for m in modes)}",
        file=sys.stderr,
    )
    state = tc.plane.state()
    assert state is not None, "the control plane is up"
    plane_pids = {n: state.pids[n] for n in ("kube-apiserver", "etcd")}
    http = KubeHTTP(tc.kubeconfig)
    limits = ["--namespace-creates=100000/100000", "--cluster-creates=100000/100000"]
    flags = {m: [*limits, f"--quota-reservation={m}"] for m in modes}
    wh = start_webhook(tc, folder / "webhook", flags[modes[0]], release_loop=False)
    profiler = Profiler(args.profile)
    speed_file = folder / "speed.txt"
    speed_file.write_text("")
    speed = subprocess.Popen(
        [sys.executable, "-m", "kubenova.dev.machine", "--probe", str(speed_file)],
        stdin=subprocess.DEVNULL,
    )
    runs: list[tuple[Run, Run, str, str | None]] = []
    admitted = 0
    try:
        for r in range(1, args.rounds + 1):
            wh.unregister()
            wait_for("the webhooks to be unregistered", lambda: not _hooked(http, ns, "bench"))
            baseline, _ = _measure(tc, base_ns, f"base-{r}", "bench", args, plane_pids, speed_file)
            wh.register()
            for m in modes:
                if wh.limits != flags[m]:
                    wh.stop()  # gives its reservations back
                    wh.start(flags[m])
                wait_for("the webhooks to be registered", lambda: _hooked(http, ns, "bench"))
                assert wh.server.proc is not None, "the webhook is running"
                pids = {**plane_pids, "webhook": wh.server.proc.pid}
                before = parse_metrics(wh.metrics())
                profiler.start(pids["webhook"], f"webhook-{_mode(m)}-{r}")
                hooked, warm_ok = _measure(
                    tc, ns, f"{_mode(m)}-{r}", "bench", args, pids, speed_file
                )
                profile = profiler.stop()
                inside = server_side(metrics_delta(before, parse_metrics(wh.metrics())))
                runs.append((baseline, hooked, inside, profile))
                admitted += hooked.ok + warm_ok
    finally:
        speed.kill()
        speed.wait()
        profiler.stop()
        wh.unregister()
        wh.stop()
    used = tc.get("vmquota", "limits", "-n", ns)["status"]["used"]["vms"]

    print(
        f"{'phase':<12} {'adm/s':>8} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8} "
        f"{'failed':>7}"
    )
    shown: set[str] = set()
    for baseline, hooked, _, _ in runs:
        for run in (baseline, hooked):
            if run.name not in shown:
                shown.add(run.name)
                print(_row(run))
    for baseline, hooked, inside, profile in runs:
        print(
            f"{hooked.name}: webhook overhead p50 "
            f"+{(hooked.pct(50) - baseline.pct(50)) * 1000:.2f} ms, "
            f"p99 +{(hooked.pct(99) - baseline.pct(99)) * 1000:.2f} ms; inside the webhook: "
            f"{inside}"
        )
        for run in (baseline, hooked):
            print(f"  as kube-apiserver timed it, {run.name}: {api_side(run.api)}")
        for run in (baseline, hooked):
            per = ", ".join(f"{n} {sec / run.sent * 1000:.2f}" for n, sec in run.cpu.items())
            total = sum(run.cpu.values()) / run.sent * 1000
            print(
                f"  CPU ms per create, {run.name}: {per}; total {total:.2f} (machine: reference "
                f"work {run.reference_ms:.1f} ms, {run.stolen_cores:.2f} cores stolen)"
            )
        if profile:
            print(profile)
    print(f"VMQuota charged {used} VMs for {admitted} creates admitted (with warm-up)")
    for m in modes:
        mine = [h for _, h, _, _ in runs if h.name.startswith(f"{_mode(m)}-")]
        met = sum(1 for h in mine if h.pct(99) <= 0.010 and h.rate >= 0.95 * args.rate)
        print(f"goal p99 <= 10 ms at {args.rate:g}/s, {_mode(m)}: met in {met} of {len(mine)}")
    one, five, _ = os.getloadavg()
    print(f"machine: {os.cpu_count()} CPUs, load average {one:.2f} (1 min) {five:.2f} (5 min)")


if __name__ == "__main__":
    main()
