"""`python -m kubenova.operator`: run one operator replica."""

from __future__ import annotations

import argparse
import asyncio
import os
import socket

import kopf
import prometheus_client

from kubenova.kube import logs
from kubenova.operator import handlers
from kubenova.operator.controller import Settings
from kubenova.operator.election import ElectionConfig
from kubenova.operator.migration_flow import Limits


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="kubenova-operator", description=__doc__)
    p.add_argument(
        "--identity",
        default=os.environ.get("POD_NAME", socket.gethostname()),
        help="this replica's name in the leader Lease",
    )
    p.add_argument(
        "--namespace",
        default=os.environ.get("KUBENOVA_NAMESPACE", "kubenova-system"),
        help="namespace of the leader and heartbeat Leases",
    )
    p.add_argument("--metrics-port", type=int, default=8080, help="0 turns metrics off")
    p.add_argument("--metrics-address", default="0.0.0.0")
    election = ElectionConfig()
    p.add_argument("--lease-duration", type=int, default=election.lease_duration)
    p.add_argument("--renew-deadline", type=float, default=election.renew_deadline)
    p.add_argument("--retry-period", type=float, default=election.retry_period)
    p.add_argument("--bind-concurrency", type=int, default=Settings.bind_concurrency)
    p.add_argument("--status-period", type=float, default=1.0)
    p.add_argument(
        "--quota-recount-period",
        type=float,
        default=60.0,
        help="seconds between recounts of every namespace's quota usage",
    )
    p.add_argument(
        "--migrations-per-host", type=int, default=2, help="in flight, as source or target"
    )
    p.add_argument("--migrations-in-cluster", type=int, default=5, help="in flight")
    p.add_argument(
        "--host-failure-grace",
        type=float,
        default=60.0,
        help="seconds after a host's heartbeat expired before its fenced VMs are recreated",
    )
    p.add_argument("--rebalance-period", type=float, default=60.0)
    p.add_argument(
        "--assumption-ttl",
        type=float,
        default=30.0,
        help="seconds a placement waits for the watch to confirm it before the API is asked",
    )
    p.add_argument(
        "--migration-retention",
        type=float,
        default=3600.0,
        help="seconds a finished VMMigration is kept before the leader deletes it",
    )
    args = p.parse_args(argv)

    logs.setup("operator")
    if args.metrics_port:
        prometheus_client.start_http_server(args.metrics_port, args.metrics_address)
    handlers.configure(
        Settings(
            identity=args.identity,
            namespace=args.namespace,
            election=ElectionConfig(args.lease_duration, args.renew_deadline, args.retry_period),
            bind_concurrency=args.bind_concurrency,
            status_period=args.status_period,
            quota_recount_period=args.quota_recount_period,
            migration_limits=Limits(args.migrations_per_host, args.migrations_in_cluster),
            host_failure_grace=args.host_failure_grace,
            rebalance_period=args.rebalance_period,
            assumption_ttl=args.assumption_ttl,
            migration_retention=args.migration_retention,
        )
    )
    asyncio.run(kopf.operator(clusterwide=True, standalone=True))


if __name__ == "__main__":
    main()
