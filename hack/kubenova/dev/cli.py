"""`kubenova-dev`: the developer's command line.

kubenova-dev cluster up      # build (first time) and start a local control plane
kubenova-dev cluster env     # print the exports that point kubectl at it
kubenova-dev cluster down    # stop it and remove its folder
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from kubenova.dev import cluster


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
    args = parser.parse_args(argv)

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
            stopped = cluster.ControlPlane(Path(args.folder), Path()).down(remove=True)
            print(f"stopped: {', '.join(stopped) or 'nothing was running'}", file=sys.stderr)
    except cluster.ControlPlaneError as e:
        print(f"kubenova-dev: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
