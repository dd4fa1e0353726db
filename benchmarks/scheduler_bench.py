"""Benchmark of the scheduler core against a Nova-style baseline, measured in the same run.

    python benchmarks/scheduler_bench.py                 # 1,000 / 10,000 / 50,000 hosts
    python benchmarks/scheduler_bench.py --hosts 10000   # one size
    python benchmarks/scheduler_bench.py --quick         # smoke size, a few seconds

For each size: build the cache (time and traced memory), then place `vms-per-host` × hosts VMs
of a realistic mix over three pools (decisions per second, p50 / p99 / max latency), then, on
the filled cluster, time the same sample of decisions twice: with the indexed search and with a
baseline that checks every host with the same filters and weighs every survivor, as Nova's
filter scheduler does. Each sample decision is forgotten after it is timed, so both see the same
state. Not a pytest test: it prints figures, it asserts nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import os
import random
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from kubenova.scheduler import cache as cache_mod
from kubenova.scheduler import framework, model, status
from kubenova.scheduler.plugins import base, pool

GIB = 1024
RACK_SIZE = 40


@dataclass(frozen=True)
class Shape:
    pool: str
    share: float
    cpus: int
    mem_gib: int
    gpus: tuple[str, int] | None = None


SHAPES = [
    Shape("general", 0.70, 64, 512),
    Shape("highmem", 0.20, 64, 1536),
    Shape("gpu", 0.10, 96, 768, ("a100", 8)),
]

FLAVORS = {
    "small": model.Size(2, 4 * GIB, 20 * GIB),
    "medium": model.Size(4, 16 * GIB, 40 * GIB),
    "large": model.Size(8, 32 * GIB, 80 * GIB),
    "xlarge": model.Size(16, 64 * GIB, 160 * GIB),
    "mem-large": model.Size(8, 128 * GIB, 80 * GIB),
    "gpu-a100": model.Size(16, 96 * GIB, 200 * GIB, (("a100", 1),)),
}
MIX = [  # (pool, flavor, weight)
    ("general", "small", 34),
    ("general", "medium", 26),
    ("general", "large", 17),
    ("general", "xlarge", 8),
    ("highmem", "mem-large", 10),
    ("gpu", "gpu-a100", 5),
]

POOLS = [
    model.PoolInfo(
        "general",
        model.Selector((("pool", "general"),)),
        cpu_ratio=4.0,
        weights=model.Weights(pack=1),
        reservations=(("medium", 100),),
    ),
    model.PoolInfo(
        "highmem",
        model.Selector((("pool", "highmem"),)),
        cpu_ratio=2.0,
        weights=model.Weights(pack=0, spread=1),
    ),
    model.PoolInfo(
        "gpu",
        model.Selector((("pool", "gpu"),)),
        weights=model.Weights(pack=0, spread=1, load=2),
        namespaces=frozenset({"ml"}),
    ),
]


IMAGE_SIZES = [200 + 400 * k for k in range(20)]
"""MiB of the catalog's images for --images (200 MiB to 7.8 GiB); image k is 1/(k+1) as
popular as image 0, on hosts and in VMs alike."""


def _images(count: int) -> tuple[list[str], list[float]]:
    return [f"image-{k:02d}" for k in range(count)], [1 / (k + 1) for k in range(count)]


def make_hosts(n: int, rng: random.Random, now: float, images: int = 0) -> list[model.HostInfo]:
    hosts = []
    # A stream of its own, so the cluster's shape does not depend on --images.
    irng = random.Random(rng.random()) if images else None
    names, popularity = _images(images)
    for i in range(n):
        r = rng.random()
        shape = SHAPES[0] if r < 0.70 else SHAPES[1] if r < 0.90 else SHAPES[2]
        name = f"host-{i:05d}"
        gpus: tuple[model.GPU, ...] = ()
        if shape.gpus:
            gpu_model, count = shape.gpus
            gpus = tuple(model.GPU(gpu_model, f"0000:{k + 1:02x}:00.0") for k in range(count))
        taints = (model.Taint("maintenance", "true"),) if rng.random() < 0.01 else ()
        hosts.append(
            model.HostInfo(
                name=name,
                cpus=shape.cpus,
                memory_mib=shape.mem_gib * GIB,
                disk_mib=8 * 1024 * GIB,
                labels={
                    "pool": shape.pool,
                    "kubenova.io/hostname": name,
                    "kubenova.io/rack": f"rack-{i // RACK_SIZE:04d}",
                    "topology.kubernetes.io/zone": f"zone-{i % 3}",
                },
                gpus=gpus,
                unschedulable=rng.random() < 0.01,
                taints=taints,
                heartbeat_at=now,
                images={
                    name: IMAGE_SIZES[int(name[-2:])]
                    for name in irng.choices(names, popularity, k=irng.randrange(0, 5))
                }
                if irng is not None
                else model.NO_IMAGES,
            )
        )
    return hosts


def make_vms(n: int, rng: random.Random, prefix: str, images: int = 0) -> list[model.VMRequest]:
    pools, flavors, weights = zip(*MIX, strict=True)
    irng = random.Random(rng.random()) if images else None
    names, popularity = _images(images)
    vms = []
    for i in range(n):
        k = rng.choices(range(len(MIX)), weights=weights)[0]
        ns = "ml" if pools[k] == "gpu" else f"team-{i % 50}"
        groups: tuple[str, ...] = ()
        anti: tuple[model.GroupRule, ...] = ()
        selector: tuple[tuple[str, str], ...] = ()
        r = rng.random()
        if r < 0.10:  # replicas of a service: one per host
            groups = (f"svc-{i // 3}",)
            anti = (model.GroupRule(groups[0], "kubenova.io/hostname", 1),)
        elif r < 0.15:  # a spread set: at most 2 per rack
            groups = (f"set-{i // 5}",)
            anti = (model.GroupRule(groups[0], "kubenova.io/rack", 2),)
        elif r < 0.20:
            selector = (("topology.kubernetes.io/zone", f"zone-{i % 3}"),)
        vms.append(
            model.VMRequest(
                key=f"{ns}/{prefix}{i}",
                namespace=ns,
                flavor=flavors[k],
                size=FLAVORS[flavors[k]],
                pool=pools[k],
                priority=rng.randrange(0, 1000),
                node_selector=selector,
                groups=groups,
                anti_affinity=anti,
                image=irng.choices(names, popularity)[0] if irng is not None else None,
            )
        )
    return vms


def build(hosts: Sequence[model.HostInfo], locality: bool = True) -> cache_mod.CapacityCache:
    c = cache_mod.CapacityCache()
    for p in POOLS:
        if not locality:
            p = dataclasses.replace(p, weights=dataclasses.replace(p.weights, image=0))
        c.upsert_pool(p)
    for h in hosts:
        c.upsert_host(h)
    for name, size in FLAVORS.items():
        c.upsert_flavor(model.FlavorInfo(name, size))
    return c


def baseline_decide(s: framework.Scheduler, vm: model.VMRequest) -> str | None:
    """Nova's FilterScheduler: every host through every filter, every survivor weighed."""
    state = s.prepare(vm)
    if isinstance(state, framework.Unschedulable):
        return None
    filters: list[base.Filter] = [pool.PoolMember(), *s.plugins.filters]
    found = []
    for e in s.cache.hosts.values():
        for f in filters:
            if f.filter(state, e) is not None:
                break
        else:
            found.append(e)
    if not found:
        return None
    totals = s.score(state, found)
    best = max(range(len(found)), key=totals.__getitem__)
    s.cache.assume(vm, found[best].name, state.now)
    return found[best].name


def indexed_decide(s: framework.Scheduler, vm: model.VMRequest) -> str | None:
    r = s.schedule(vm)
    return r.host if isinstance(r, framework.Decision) else None


def time_sample(
    s: framework.Scheduler,
    vms: Sequence[model.VMRequest],
    decide: Callable[[framework.Scheduler, model.VMRequest], str | None],
) -> tuple[list[float], int]:
    lat = []
    placed = 0
    for vm in vms:
        t0 = time.perf_counter()
        host = decide(s, vm)
        lat.append(time.perf_counter() - t0)
        if host is not None:
            placed += 1
            s.cache.forget(vm.key)
    return lat, placed


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ms(x: float) -> str:
    return f"{x * 1000:.3f} ms"


def run(
    n_hosts: int, vms_per_host: int, samples: int, seed: int, images: int = 0, locality: bool = True
) -> dict[str, float]:
    rng = random.Random(seed)
    now = 1_000_000.0
    hosts = make_hosts(n_hosts, rng, now, images)
    print(f"\n== {n_hosts:,} hosts, {n_hosts * vms_per_host:,} VMs ==")

    t0 = time.perf_counter()
    c = build(hosts, locality)
    build_s = time.perf_counter() - t0
    gc.collect()
    tracemalloc.start()
    traced_hosts = make_hosts(n_hosts, random.Random(seed), now, images)
    records = tracemalloc.get_traced_memory()[0]
    traced_cache = build(traced_hosts, locality)
    structures = tracemalloc.get_traced_memory()[0] - records
    tracemalloc.stop()
    del traced_cache, traced_hosts
    cache_mem = records + structures
    print(
        f"cache build: {build_s:.3f} s ({build_s / n_hosts * 1e6:.1f} µs/host); memory "
        f"{cache_mem / 2**20:.1f} MiB traced = {records / 2**20:.1f} host records + "
        f"{structures / 2**20:.1f} entries and indexes"
    )
    for i, e in enumerate(c.hosts.values()):
        c.report_load(e.name, 20 + 60 * ((i * 7919) % 100) / 100, 40.0, at=now)

    s = framework.Scheduler(c, lambda: now, random.Random(seed))
    t0 = time.perf_counter()
    short = s.refill_reservations("general")
    print(
        f"reservations: 100 × medium in pool general in {ms(time.perf_counter() - t0)}, "
        f"{short} short"
    )

    vms = make_vms(n_hosts * vms_per_host, rng, "vm-", images)
    lat: list[float] = []
    refused = 0
    claimed = 0
    examined = 0
    on_holder = 0
    t_all = time.perf_counter()
    for vm in vms:
        t0 = time.perf_counter()
        r = s.schedule(vm)
        lat.append(time.perf_counter() - t0)
        if isinstance(r, framework.Decision):
            c.confirm(vm.key)  # the informer sees the bind
            claimed += r.reservation is not None
            examined += r.examined
            on_holder += vm.image is not None and vm.image in c.hosts[r.host].info.images
        else:
            refused += 1
    fill_s = time.perf_counter() - t_all
    n = len(vms)
    print(
        f"fill: {n:,} decisions in {fill_s:.2f} s = {n / fill_s:,.0f}/s; "
        f"p50 {ms(pct(lat, 0.50))}, p99 {ms(pct(lat, 0.99))}, max {ms(max(lat))}; "
        f"{refused:,} unschedulable, {claimed} reservation claims, "
        f"{examined / max(n - refused, 1):.1f} hosts examined per decision"
    )
    if images:
        print(
            f"image locality: {100 * on_holder / max(n - refused, 1):.1f}% of VMs placed on a "
            "host already holding their image"
        )
    probe = make_vms(2000, random.Random(seed + 2), "probe-", images)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    probed = [vm.key for vm in probe if isinstance(s.schedule(vm), framework.Decision)]
    per_vm = (tracemalloc.get_traced_memory()[0] - before) / max(len(probed), 1)
    tracemalloc.stop()
    for key in probed:
        c.forget(key)
    print(
        f"allocations: ~{per_vm:.0f} B each (traced sample of {len(probed)}), "
        f"~{per_vm * (n - refused) / 2**20:.0f} MiB for the {n - refused:,} placed"
    )
    used = sum(e.used_mem for e in c.hosts.values())
    total = sum(e.alloc_mem for e in c.hosts.values())
    print(f"filled to {100 * used / total:.0f}% of memory")

    t0 = time.perf_counter()
    st = status.pool_status(c, "general", now)
    assert st is not None
    print(
        f"pool status (general, {len(FLAVORS)} flavors): {ms(time.perf_counter() - t0)}; "
        f"medium still fits {st.available['medium']:,} times"
    )

    sample = make_vms(samples, random.Random(seed + 1), "sample-", images)
    ilat, iplaced = time_sample(s, sample, indexed_decide)
    blat, bplaced = time_sample(s, sample, baseline_decide)
    ithr = len(ilat) / sum(ilat)
    bthr = len(blat) / sum(blat)
    print(f"same {samples} decisions on the filled cluster (each forgotten after timing):")
    print(
        f"  indexed : {ithr:10,.0f}/s  p50 {ms(statistics.median(ilat))}  "
        f"p99 {ms(pct(ilat, 0.99))}  placed {iplaced}"
    )
    print(
        f"  baseline: {bthr:10,.0f}/s  p50 {ms(statistics.median(blat))}  "
        f"p99 {ms(pct(blat, 0.99))}  placed {bplaced}   (every host, same filters)"
    )
    print(f"  speed-up: {ithr / bthr:.0f}×")
    return {
        "hosts": n_hosts,
        "build_s": build_s,
        "mem_mib": cache_mem / 2**20,
        "fill_rate": n / fill_s,
        "p50": pct(lat, 0.5),
        "p99": pct(lat, 0.99),
        "base_rate": bthr,
        "speedup": ithr / bthr,
    }


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--hosts", default="1000,10000,50000", help="comma-separated host counts")
    ap.add_argument("--vms-per-host", type=int, default=10)
    ap.add_argument("--baseline-samples", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="500 hosts, 5 VMs each, 50 samples")
    ap.add_argument(
        "--gc-off",
        action="store_true",
        help="disable the cyclic garbage collector while timing, to see its share of the tail",
    )
    ap.add_argument(
        "--images",
        type=int,
        default=0,
        help="hosts hold 0-4 of this many images (at most 20) and every VM boots one",
    )
    ap.add_argument(
        "--no-image-locality",
        action="store_true",
        help="image-locality weight 0 in every pool (the score is then never computed)",
    )
    args = ap.parse_args(argv)
    if not 0 <= args.images <= len(IMAGE_SIZES):
        ap.error(f"--images must be 0 to {len(IMAGE_SIZES)}")
    sizes = [int(x) for x in args.hosts.split(",")]
    if args.quick:
        sizes, args.vms_per_host, args.baseline_samples = [500], 5, 50
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.2f} at start"
    )
    if args.gc_off:
        gc.disable()
        print("cyclic garbage collector disabled while timing (--gc-off)")
    locality = not args.no_image_locality
    print(f"images: {args.images or 'none'}; image locality {'on' if locality else 'off'}")
    rows = [
        run(n, args.vms_per_host, args.baseline_samples, args.seed, args.images, locality)
        for n in sizes
    ]
    print("\nhow the cost grows")
    print(
        f"{'hosts':>8} {'build s':>8} {'MiB':>7} {'fill/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'base/s':>8} {'speed-up':>9}"
    )
    for r in rows:
        print(
            f"{r['hosts']:>8,.0f} {r['build_s']:>8.2f} {r['mem_mib']:>7.1f} "
            f"{r['fill_rate']:>9,.0f} "
            f"{r['p50'] * 1000:>8.3f} {r['p99'] * 1000:>8.3f} {r['base_rate']:>8,.0f} "
            f"{r['speedup']:>8.0f}×"
        )
    print(f"load average at end {os.getloadavg()[0]:.2f} (2 cores shared with other work)")


if __name__ == "__main__":
    main()
