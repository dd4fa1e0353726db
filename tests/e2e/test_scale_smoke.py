"""The scale benchmark as a smoke test: a small cluster under the same faults as the
published chaos run (leader killed, agents killed, API server and etcd restarted), and the
benchmark's own invariant checks must all hold. Figures are printed, never asserted."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_a_small_chaos_run_keeps_every_invariant() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "scale_bench.py"),
         "--hosts", "20", "--vms", "200", "--chaos", "--timeout", "600"],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    print(proc.stdout[-6000:])
    checks = [
        line.strip() for line in proc.stdout.splitlines() if line.strip()[:4] in ("PASS", "FAIL")
    ]
    assert len(checks) == 6, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert all(c.startswith("PASS") for c in checks), "\n".join(checks)
    assert proc.returncode == 0, proc.stderr[-3000:]
