"""The machine speed probe's pure parts: /proc/stat arithmetic, the samples of a window, the
reference work itself."""

from __future__ import annotations

import math
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kubenova.dev import machine

pytestmark = pytest.mark.unit

STAT = "cpu  100 5 50 800 20 3 2 30 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n"


def test_busy_counts_neither_idle_nor_iowait_nor_what_the_host_stole() -> None:
    ticks = machine.CpuTicks.parse(STAT)
    assert ticks == machine.CpuTicks(busy=160, steal=30, total=1010)


def test_an_old_kernels_shorter_line_has_no_steal() -> None:
    assert machine.CpuTicks.parse("cpu  10 0 5 80 5\n") == machine.CpuTicks(15, 0, 100)


def test_busy_and_stolen_between_two_readings_are_in_cores() -> None:
    before = machine.CpuTicks(busy=100, steal=10, total=1000)
    after = machine.CpuTicks(busy=300, steal=60, total=1400)
    busy, stolen = after.cores_since(before, cores=2)
    assert (busy, stolen) == (1.0, 0.25)


def test_a_window_keeps_its_own_samples_and_drops_a_torn_line() -> None:
    lines = ["10.0 30.5", "13.0 31.0", "16.0 55.0", "19.0 29.0", "22.0", "2x.0 1", "22.5 4"]
    assert machine.samples_between(lines, 12.0, 20.0) == [31.0, 55.0, 29.0]
    assert machine.median_ms(machine.samples_between(lines, 12.0, 20.0)) == 31.0
    assert math.isnan(machine.median_ms(machine.samples_between(lines, 100.0, 200.0)))


def test_the_reference_work_is_the_same_work_every_time_and_all_of_it_counts() -> None:
    assert machine.reference_work(3) == machine.reference_work(3)
    assert machine.reference_work(4) > machine.reference_work(3)
    assert machine.time_reference_work() > 0


def test_the_probe_appends_a_timed_sample_until_killed(tmp_path: Path) -> None:
    out = tmp_path / "speed.txt"
    probe = subprocess.Popen([sys.executable, "-m", "kubenova.dev.machine", "--probe", str(out)])
    try:
        deadline = time.monotonic() + 60
        while not (out.exists() and out.read_text().endswith("\n")):
            assert probe.poll() is None, "the probe exited"
            assert time.monotonic() < deadline, "no sample in 60 s"
            time.sleep(0.1)
        assert probe.poll() is None
    finally:
        probe.kill()
        probe.wait()
    (sample,) = machine.samples_between(out.read_text().splitlines(), 0, time.monotonic())
    assert sample > 0
