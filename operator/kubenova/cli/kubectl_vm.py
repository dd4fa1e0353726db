"""`kubectl vm`: a kubectl plugin (an executable named `kubectl-vm` on PATH) for kubenova's
VMs and Hosts.

    kubectl vm start|stop|restart NAME [-n NS]
    kubectl vm migrate NAME [--to HOST] [--timeout SECONDS] [--wait]
    kubectl vm console NAME                     attach to the serial console (Ctrl-] detaches)
    kubectl vm console NAME --log [--tail N]    print its log (also after the VM stopped)
    kubectl vm cordon|uncordon HOST
    kubectl vm drain HOST [--wait]               cordon, then move every VM off by its
                                                  eviction strategy (LiveMigrate, Shutdown)
    kubectl vm fence HOST                         confirm a lost host is off: its VMs may start
                                                  elsewhere

The `build_*` functions make the objects and patches (pure, tested); `main` runs kubectl.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from kubenova.api import constants

VM = "virtualmachines.kubenova.io"
HOST = "hosts.kubenova.io"
MIGRATION = "vmmigrations.kubenova.io"


class PluginError(RuntimeError):
    """Shown to the user as is; the message says what to do."""


# -- pure builders --------------------------------------------------------------------------


def build_run_strategy(strategy: str) -> dict[str, Any]:
    return {"spec": {"runStrategy": strategy}}


def build_restart(now: dt.datetime) -> dict[str, Any]:
    stamp = now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"metadata": {"annotations": {constants.ANNOTATION_RESTART_REQUESTED: stamp}}}


def build_migration(
    vm: str, namespace: str, target: str | None, timeout: int | None
) -> dict[str, Any]:
    spec: dict[str, Any] = {"vmName": vm}
    if target:
        spec["targetHost"] = target
    if timeout:
        spec["timeoutSeconds"] = timeout
    return {
        "apiVersion": constants.API_VERSION,
        "kind": "VMMigration",
        "metadata": {"generateName": f"{vm}-", "namespace": namespace},
        "spec": spec,
    }


def build_cordon(on: bool) -> dict[str, Any]:
    patch: dict[str, Any] = {"spec": {"unschedulable": on}}
    if not on:  # uncordon ends a drain too
        patch["metadata"] = {"annotations": {constants.ANNOTATION_DRAIN: None}}
    return patch


def build_drain(now: dt.datetime) -> dict[str, Any]:
    stamp = now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "spec": {"unschedulable": True},
        "metadata": {"annotations": {constants.ANNOTATION_DRAIN: stamp}},
    }


def build_fence() -> dict[str, Any]:
    return {"metadata": {"annotations": {constants.ANNOTATION_FENCED: "true"}}}


def drained(host: dict[str, Any]) -> tuple[bool, str]:
    """Whether the operator reports the host empty, and its message."""
    for c in host.get("status", {}).get("conditions", []):
        if c.get("type") == constants.COND_DRAINED:
            return c.get("status") == "True", str(c.get("message", ""))
    return False, "waiting for the operator"


# -- kubectl --------------------------------------------------------------------------------


class Kubectl:
    def __init__(self, globals_: Sequence[str]) -> None:
        self.cmd = [os.environ.get("KUBECTL", "kubectl"), *globals_]

    def run(self, *args: str, input: str | None = None) -> str:
        proc = subprocess.run(
            [*self.cmd, *args], capture_output=True, text=True, input=input, check=False
        )
        if proc.returncode != 0:
            raise PluginError(proc.stderr.strip() or f"kubectl {' '.join(args)} failed")
        return proc.stdout

    def get(self, *args: str) -> dict[str, Any]:
        obj: dict[str, Any] = json.loads(self.run("get", *args, "-o", "json"))
        return obj

    def patch(self, kind: str, name: str, patch: dict[str, Any], *ns: str) -> None:
        self.run("patch", kind, name, *ns, "--type=merge", "-p", json.dumps(patch))


def _wait(what: str, timeout: float, check: Any) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        done, result = check()
        if done:
            return result
        if time.monotonic() > deadline:
            raise PluginError(f"gave up waiting for {what} after {timeout:.0f} s: {result}")
        time.sleep(1.0)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="kubectl vm", description=__doc__.split("\n\n")[0])
    p.add_argument("-n", "--namespace", help="the VM's namespace (default: kubectl's)")
    p.add_argument("--kubeconfig")
    p.add_argument("--context")
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("start", "stop", "restart"):
        sub.add_parser(name, help=f"{name} a VM").add_argument("name")
    mig = sub.add_parser("migrate", help="move a running VM live to another host")
    mig.add_argument("name")
    mig.add_argument("--to", dest="target", help="the target host (default: the scheduler's)")
    mig.add_argument("--timeout", type=int, help="seconds before it is rolled back")
    mig.add_argument("--wait", action="store_true", help="wait for the outcome")
    con = sub.add_parser(
        "console", help="attach to the serial console through the API server (RBAC: "
        "virtualmachines/console in subresources.kubenova.io)",
    )  # fmt: skip
    con.add_argument("name")
    con.add_argument("--log", action="store_true", help="print the stored log instead")
    con.add_argument("--tail", type=int, help="with --log: the last N lines (default all)")
    con.add_argument("--detach-key", default="^]", help="the key that detaches (default ^])")
    con.add_argument(
        "--linger", type=float, default=2.0,
        help="when stdin is no terminal: seconds to wait for output after it ends",
    )  # fmt: skip
    for name, text in (
        ("cordon", "no new VMs on the host"),
        ("uncordon", "take VMs again (and end a drain)"),
        ("fence", "confirm a lost host is off so its VMs may start elsewhere"),
    ):
        sub.add_parser(name, help=text).add_argument("host")
    dr = sub.add_parser("drain", help="cordon the host and move every VM off it")
    dr.add_argument("host")
    dr.add_argument("--wait", action="store_true", help="until no VM is bound to it")
    dr.add_argument("--timeout", type=float, default=600.0)
    args = p.parse_args(argv)

    globals_ = [f"--kubeconfig={args.kubeconfig}"] if args.kubeconfig else []
    globals_ += [f"--context={args.context}"] if args.context else []
    kubectl = Kubectl(globals_)
    ns = ["-n", args.namespace] if args.namespace else []
    now = dt.datetime.now(dt.UTC)
    try:
        match args.command:
            case "start" | "stop":
                strategy = "Always" if args.command == "start" else "Halted"
                kubectl.patch(VM, args.name, build_run_strategy(strategy), *ns)
                print(f"virtualmachine/{args.name}: runStrategy {strategy}")
            case "restart":
                kubectl.patch(VM, args.name, build_restart(now), *ns)
                print(f"virtualmachine/{args.name}: restart requested")
            case "migrate":
                return _migrate(kubectl, args, ns)
            case "console":
                return _console(args)
            case "cordon" | "uncordon":
                kubectl.patch(HOST, args.host, build_cordon(args.command == "cordon"))
                print(f"host/{args.host} {args.command}ed")
            case "fence":
                kubectl.patch(HOST, args.host, build_fence())
                print(f"host/{args.host}: fencing confirmed; its VMs may start elsewhere")
            case "drain":
                kubectl.patch(HOST, args.host, build_drain(now))
                print(f"host/{args.host} cordoned and draining")
                if args.wait:
                    message = _wait(
                        f"host {args.host} to drain",
                        args.timeout,
                        lambda: drained(kubectl.get(HOST, args.host)),
                    )
                    print(f"host/{args.host} drained: {message}")
    except PluginError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def _migrate(kubectl: Kubectl, args: argparse.Namespace, ns: list[str]) -> int:
    namespace = (
        args.namespace
        or kubectl.run("config", "view", "--minify", "-o", "jsonpath={..namespace}").strip()
        or "default"
    )
    body = build_migration(args.name, namespace, args.target, args.timeout)
    created = json.loads(kubectl.run("create", "-f", "-", "-o", "json", input=json.dumps(body)))
    name = created["metadata"]["name"]
    print(f"vmmigration/{name} created")
    if not args.wait:
        return 0

    def outcome() -> tuple[bool, str]:
        st = kubectl.get(MIGRATION, name, *ns).get("status", {})
        phase = st.get("phase", "Pending")
        return phase in ("Succeeded", "Failed", "Cancelled"), f"{phase}: {st.get('message', '')}"

    result = _wait(f"vmmigration/{name}", float(args.timeout or 600) + 60, outcome)
    print(f"vmmigration/{name} {result}")
    return 0 if str(result).startswith("Succeeded") else 1


def _console(args: argparse.Namespace) -> int:
    import asyncio

    from kubenova.cli import console
    from kubenova.console import protocol

    try:
        detach_key = protocol.parse_detach_key(args.detach_key)
        if args.tail is not None and not 0 <= args.tail <= protocol.MAX_TAIL_LINES:
            raise ValueError(f"--tail: {args.tail} is not 0-{protocol.MAX_TAIL_LINES}")
    except ValueError as e:
        raise PluginError(str(e)) from None
    try:
        ep = console.endpoint(args.kubeconfig, args.context, args.namespace)
        if args.log:
            sys.stdout.buffer.write(asyncio.run(console.read_log(ep, args.name, args.tail or 0)))
            sys.stdout.flush()
            return 0
        reason = console.run_console(ep, args.name, detach_key, args.linger)
    except console.ConsoleError as e:
        raise PluginError(f"console of virtualmachine {args.name}: {e}") from None
    print(f"\r\n[{reason}]", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
