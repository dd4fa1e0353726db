"""How fast the shared machine is while a benchmark runs.

The 2 cores of this machine are a virtual machine's, on a host shared with others: on one
afternoon the same work cost 1.7x the CPU it cost that morning, with nothing else running in
the guest. A benchmark that compares two runs minutes apart needs to know whether the machine
changed in between. Two measures, both read while the benchmark runs:

- **stolen time**: /proc/stat's `steal` column, the time the host ran something else while a
  vCPU of ours wanted to run;
- **the reference work**: a fixed piece of CPU work (JSON encoding and decoding, dict and
  string handling, the kind of work an API server and its clients do), run every few seconds
  in a process of its own and timed in that process's own CPU time. Stolen time does not
  count in it, so it shows what steal cannot: a vCPU that runs but runs slower (a busy SMT
  sibling on the host, memory bandwidth, clock).

    python -m kubenova.dev.machine                  # the reference work's CPU, 5 samples
    python -m kubenova.dev.machine --probe FILE     # every 3 s until killed, a line each
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

PROBE_PERIOD_S = 3.0


@dataclass(frozen=True)
class CpuTicks:
    """All CPUs' jiffies from /proc/stat's first line: busy (everything but idle, iowait and
    steal), stolen by the host, and the total of all eight."""

    busy: int
    steal: int
    total: int

    @classmethod
    def parse(cls, proc_stat_text: str) -> CpuTicks:
        parts = [int(x) for x in proc_stat_text.splitlines()[0].split()[1:9]]
        parts += [0] * (8 - len(parts))
        idle, steal = parts[3] + parts[4], parts[7]
        total = sum(parts)
        return cls(total - idle - steal, steal, total)

    @classmethod
    def now(cls) -> CpuTicks:
        return cls.parse(Path("/proc/stat").read_text())

    def cores_since(self, before: CpuTicks, cores: int) -> tuple[float, float]:
        """(busy, stolen) between `before` and this, in cores of `cores`."""
        elapsed = max(self.total - before.total, 1)
        return (
            cores * (self.busy - before.busy) / elapsed,
            cores * (self.steal - before.steal) / elapsed,
        )


_DOC = {
    "apiVersion": "kubenova.io/v1alpha1",
    "kind": "VirtualMachine",
    "metadata": {"name": "reference", "namespace": "default", "labels": {"a": "b"}},
    "spec": {"flavor": "m1.small", "pool": "general", "disks": [{"size": "10Gi"}] * 4},
    "status": {"history": [{"event": "Bound", "message": "x" * 64, "at": "now"}] * 20},
}


def reference_work(rounds: int = 400) -> int:
    """A fixed amount of CPU work (about 25 ms on this machine on a fast morning); returns
    something that depends on all of it, so none of it can be skipped."""
    acc = 0
    for i in range(rounds):
        text = json.dumps(_DOC, sort_keys=True)
        back = json.loads(text)
        back["metadata"]["name"] = f"r{i}"
        acc += len(text) + sum(len(k) for k in back["spec"]) + len(str(back["status"]))
    return acc


def time_reference_work() -> float:
    """The reference work's CPU time in this process, in ms."""
    start = time.process_time()
    reference_work()
    return 1000 * (time.process_time() - start)


def probe(path: Path, period: float = PROBE_PERIOD_S) -> None:
    """Every `period` seconds until killed: one line `<monotonic> <reference work CPU ms>`
    appended to `path`."""
    with path.open("a", buffering=1) as out:
        while True:
            started = time.monotonic()
            ms = time_reference_work()
            out.write(f"{started:.3f} {ms:.3f}\n")
            time.sleep(max(0.0, started + period - time.monotonic()))


def samples_between(lines: Iterable[str], start: float, end: float) -> list[float]:
    """The probe's CPU ms taken from `start` to `end` (monotonic seconds); a torn last line
    (the probe killed while writing) is left out."""
    got = []
    for line in lines:
        parts = line.split()
        if len(parts) != 2:
            continue
        try:
            t, ms = float(parts[0]), float(parts[1])
        except ValueError:
            continue
        if start <= t <= end:
            got.append(ms)
    return got


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) if samples else float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--probe", type=Path, help="append a sample every 3 s to this file until killed")
    a = p.parse_args()
    if a.probe:
        probe(a.probe)
        return
    got = [time_reference_work() for _ in range(5)]
    print(f"reference work: {median_ms(got):.1f} ms CPU (median of 5: "
          + ", ".join(f"{ms:.1f}" for ms in got) + ")")  # fmt: skip


if __name__ == "__main__":
    main()
