"""`kubenova-dev`: the developer's command line.

kubenova-dev cluster up      # build (first time) and start a local control plane
kubenova-dev cluster env     # print the exports that point kubectl at it
kubenova-dev cluster down    # stop it and remove its folder
kubenova-dev console up|down  # the serial console's server beside it (docs/console.md)
kubenova-dev node up [--nodes N]   # a node-mode control plane and N real kubelets (docs/node.md)
kubenova-dev node env|status|load ARCHIVE|down
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from kubenova.dev import cluster, node
from kubenova.dev import console as console_wiring


def _plane(args: argparse.Namespace) -> cluster.ControlPlane:
    return cluster.ControlPlane(Path(args.folder), cluster.ensure_binaries())


def _print_env(plane: cluster.ControlPlane) -> None:
    for key, value in plane.env().items():
        print(f"export {key}={shlex.quote(value)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kubenova-dev", description="kubenova developer tools")
    sub = parser.add_subparsers(dest="group", required=True)
    c = sub.add_parser("cluster", help="the local control plane")
    c.add_argument("action", choices=["up", "down", "env", "build"])
    c.add_argument(
        "--folder",
        default=str(cluster.default_folder()),
        help="state folder (default: %(default)s)",
    )
    c.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for ready")
    k = sub.add_parser("console", help="the serial console's server for the control plane")
    k.add_argument("action", choices=["up", "down"])
    k.add_argument("--folder", default=str(cluster.default_folder()), help="the control plane's")
    n = sub.add_parser("node", help="real kubelets with containerd, for the chart (root)")
    n.add_argument("action", choices=["up", "down", "env", "status", "load"])
    n.add_argument("archive", nargs="?", help="load: an image archive (docker-archive or OCI)")
    n.add_argument("--nodes", type=int, default=1, help="kubelets to start (default: 1)")
    n.add_argument(
        "--folder",
        default=str(node.default_folder()),
        help="state folder (default: $KUBENOVA_NODE_FOLDER or %(default)s)",
    )
    n.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for ready")
    args = parser.parse_args(argv)

    if args.group == "node":
        return _node(args)
    if args.group == "console":
        return _console(args)
    try:
        if args.action == "build":
            print(cluster.ensure_binaries())
        elif args.action == "up":
            plane = _plane(args)
            plane.up(timeout=args.timeout, log=lambda m: print(m, file=sys.stderr))
            print("# point kubectl at it:", file=sys.stderr)
            _print_env(plane)
        elif args.action == "env":
            plane = _plane(args)
            if plane.state() is None:
                print("no control plane is up; run: kubenova-dev cluster up", file=sys.stderr)
                return 1
            _print_env(plane)
        else:
            # A console server `console up` started goes with its control plane.
            console_wiring.down(Path(args.folder), lambda *a, **k: None)
            stopped = cluster.ControlPlane(Path(args.folder), Path()).down(remove=True)
            print(f"stopped: {', '.join(stopped) or 'nothing was running'}", file=sys.stderr)
    except cluster.ControlPlaneError as e:
        print(f"kubenova-dev: {e}", file=sys.stderr)
        return 1
    return 0


def _console(args: argparse.Namespace) -> int:
    plane = _plane(args)
    if plane.state() is None:
        print("no control plane is up; run: kubenova-dev cluster up", file=sys.stderr)
        return 1
    try:
        if args.action == "down":
            ran = console_wiring.down(plane.folder, plane.kubectl)
            print("stopped the console server" if ran else "no console server ran", file=sys.stderr)
            return 0
        env = console_wiring.up(plane.folder, plane.kubectl, plane.kubeconfig)
    except cluster.ControlPlaneError as e:
        print(f"kubenova-dev: {e}", file=sys.stderr)
        return 1
    print("# an agent serves consoles with (one port per agent):", file=sys.stderr)
    for key, value in env.items():
        print(f"export {key}={shlex.quote(value)}")
    return 0


def _node(args: argparse.Namespace) -> int:
    nodes = node.Nodes(Path(args.folder))
    try:
        if args.action == "up":
            nodes.up(args.nodes, timeout=args.timeout, log=lambda m: print(m, file=sys.stderr))
            print("# point kubectl and helm at it:", file=sys.stderr)
            _print_env(nodes.plane(cluster.ensure_binaries()))
        elif args.action == "env" or args.action == "status":
            if not nodes.running():
                print(
                    f"no nodes are up in {args.folder}; run: kubenova-dev node up", file=sys.stderr
                )
                return 1
            if args.action == "env":
                _print_env(nodes.plane(cluster.ensure_binaries()))
            else:
                state = nodes.state()
                assert state is not None, "running() read it"
                print(f"{state.nodes} node(s), API server on 127.0.0.1:{state.port}")
        elif args.action == "load":
            if not args.archive:
                print("kubenova-dev node load: name the image archive", file=sys.stderr)
                return 2
            loaded = nodes.load(Path(args.archive))
            print(f"loaded {args.archive} into {', '.join(loaded)}", file=sys.stderr)
        else:
            stopped = nodes.down()
            print(f"stopped: {', '.join(stopped) or 'nothing was running'}", file=sys.stderr)
    except (node.NodeError, cluster.ControlPlaneError) as e:
        print(f"kubenova-dev node: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
