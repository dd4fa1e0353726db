"""What the chart's admission policies cost an agent's writes, with a baseline measured in the
same run.

    python benchmarks/policy_bench.py              # 4 rounds of 300 status writes each way
    python benchmarks/policy_bench.py --quick      # 2 rounds of 50

Starts its own local control plane, applies the chart's RBAC (rendered by helm), and has the
agent's ServiceAccount, with a token bound to a pod on a node (TokenRequest API), patch a bound
VM's status over and over: once with the agent-confinement, metadata and webhooks policies in
force, once without them, alternating rounds so that load from elsewhere on the machine falls
on both alike. Prints p50 / p99 per round and overall, and the difference of the medians.
Everything shares this machine's cores. Not a pytest test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the test fixtures are the harness

from tests.chart.helm import Helm  # noqa: E402
from tests.fixtures.cluster import LocalCluster  # noqa: E402
from tests.fixtures.identities import (  # noqa: E402
    Client,
    render_policies,
    service_account_token,
    token_client,
)

from kubenova.api import constants  # noqa: E402
from kubenova.dev import cluster  # noqa: E402

RELEASE, NAMESPACE, NODE = "bench", "kubenova-bench", "bench-node"


def _writes(agent: Client, n: int) -> list[float]:
    times = []
    for i in range(n):
        body = {"status": {"phase": "Running", "reason": f"write {i}"}}
        started = time.perf_counter()
        answer = agent.patch("virtualmachines", "vm", body, NAMESPACE, status=True)
        times.append(time.perf_counter() - started)
        if answer:
            raise SystemExit(f"the agent's write was refused: {answer}")
    return times


def _settled(agent: Client, enforced: bool, timeout: float = 30.0) -> None:
    """Wait until the API server, which loads policy changes asynchronously, has the policies
    in force (or gone): a dry-run write of another Host is refused only while they are."""
    other = {"apiVersion": constants.API_VERSION, "kind": "Host", "metadata": {"name": "other"}}
    deadline = time.monotonic() + timeout
    while ("may write only Host" in agent.create("hosts", other, dry_run=True)) != enforced:
        if time.monotonic() > deadline:
            raise SystemExit(f"the policies never {'took effect' if enforced else 'went away'}")
        time.sleep(0.2)


def _ms(times: list[float]) -> str:
    p99 = sorted(times)[max(0, int(len(times) * 0.99) - 1)]
    return f"p50 {statistics.median(times) * 1000:6.2f} ms  p99 {p99 * 1000:7.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--writes", type=int, default=300)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.writes = 2, 50
    bin_dir = cluster.ensure_binaries(stream_progress=False)
    with tempfile.TemporaryDirectory(prefix="kubenova-policy-bench-") as tmp:
        plane = cluster.ControlPlane(Path(tmp) / "cp", bin_dir, die_with_parent=True)
        plane.up(log=lambda _: None)
        try:
            tc = LocalCluster.guarded(plane)
            helm = Helm(bin_dir / "helm", Path(tmp) / "helm")
            (Path(tmp) / "helm").mkdir()
            tc.kubectl("create", "namespace", NAMESPACE)
            docs = render_policies(helm, RELEASE, NAMESPACE, {}).split("\n---\n")
            rbac = "\n---\n".join(d for d in docs if "templates/rbac.yaml" in d.splitlines()[0])
            policies = "\n---\n".join(d for d in docs if "policy.yaml" in d.splitlines()[0])
            tc.kubectl("apply", "-f", "-", input=rbac)
            vm = {
                "apiVersion": constants.API_VERSION,
                "kind": "VirtualMachine",
                "metadata": {"name": "vm", "namespace": NAMESPACE},
                "spec": {"flavor": "small", "boot": {"image": "test.qcow2"}},
            }  # fmt: skip
            tc.kubectl("create", "-f", "-", input=yaml.safe_dump(vm))
            tc.kubectl("patch", "vm", "vm", "-n", NAMESPACE, "--subresource=status",
                       "--type=merge", "-p", json.dumps({"status": {"host": NODE}}))  # fmt: skip
            account = f"{RELEASE}-kubenova-agent"
            user = f"system:serviceaccount:{NAMESPACE}:{account}"
            agent = token_client(tc, user, service_account_token(tc, NAMESPACE, account, NODE))
            _writes(agent, 30)  # warm up connections and caches
            results: dict[str, list[float]] = {"with policies": [], "without": []}
            for r in range(args.rounds):
                for label in (
                    ("with policies", "without") if r % 2 == 0 else ("without", "with policies")
                ):
                    if label == "with policies":
                        tc.kubectl("apply", "-f", "-", input=policies)
                    else:
                        tc.kubectl("delete", "--ignore-not-found", "-f", "-", input=policies)
                    _settled(agent, label == "with policies")
                    times = _writes(agent, args.writes)
                    results[label] += times
                    print(f"round {r + 1} {label:14} {_ms(times)}")
            for label, times in results.items():
                print(f"all     {label:14} {_ms(times)}  ({len(times)} writes)")
            diff = statistics.median(results["with policies"]) - statistics.median(
                results["without"]
            )
            print(f"policies add {diff * 1000:+.2f} ms to the median agent status write")
        finally:
            plane.down(remove=True)


if __name__ == "__main__":
    main()
