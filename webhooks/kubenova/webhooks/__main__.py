"""`python -m kubenova.webhooks`: serve the admission webhooks over HTTPS."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from pathlib import Path

from aiohttp import web

from kubenova.kube import aio, client, logs
from kubenova.quota import ledger, store
from kubenova.webhooks import admission, catalog, ratelimit, server


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m kubenova.webhooks", description=__doc__)
    p.add_argument("--host", default="0.0.0.0", help="address to listen on")
    p.add_argument("--port", type=int, default=8443)
    p.add_argument("--cert", type=Path, required=True, help="serving certificate (PEM)")
    p.add_argument("--key", type=Path, required=True, help="its private key (PEM)")
    p.add_argument("--kubeconfig", default=None, help="default: in-cluster, then $KUBECONFIG")
    p.add_argument(
        "--client-ca",
        type=Path,
        default=os.environ.get("KUBENOVA_WEBHOOK_CLIENT_CA") or None,
        help="CA (PEM) of the API server's webhook client certificate: reviews from any "
        "caller without one it signed are refused (default: $KUBENOVA_WEBHOOK_CLIENT_CA; "
        "unset: callers are not authenticated, and a warning says so)",
    )
    p.add_argument(
        "--client-name",
        action="append",
        default=[n for n in os.environ.get("KUBENOVA_WEBHOOK_CLIENT_NAMES", "").split(",") if n],
        help="common name the client certificate must have (repeat for several; default: "
        "$KUBENOVA_WEBHOOK_CLIENT_NAMES, comma-separated; none: any the CA signed)",
    )
    defaults = ratelimit.Limits()
    for flag, value in (
        ("--namespace-creates", defaults.namespace_creates),
        ("--namespace-updates", defaults.namespace_updates),
        ("--cluster-creates", defaults.cluster_creates),
        ("--cluster-updates", defaults.cluster_updates),
    ):
        p.add_argument(
            flag,
            type=ratelimit.BucketConfig.parse,
            default=value,
            metavar="RATE/BURST",
            help=f"token bucket, or 'off' (default {value.rate:g}/{value.burst})"
            if value
            else "token bucket, or 'off'",
        )
    p.add_argument(
        "--quota-reservation",
        type=int,
        default=0,
        metavar="N",
        help="hold headroom for N creates of the last size per namespace in the VMQuota's "
        "status.reservations and admit from it without a write each; what was admitted is "
        "written into status.used within 50 ms (default 0: every create waits for its own "
        "write, and status.used is exact the moment it is admitted)",
    )
    p.add_argument("--shutdown-timeout", type=float, default=20.0, help="seconds to drain")
    p.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning"],
        help="debug also logs every defaulted and charged VM (info: denials and errors)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logs.setup("webhook", getattr(logging, args.log_level.upper()))
    limits = ratelimit.Limits(
        namespace_creates=args.namespace_creates,
        namespace_updates=args.namespace_updates,
        cluster_creates=args.cluster_creates,
        cluster_updates=args.cluster_updates,
    )
    api = client.api_client(args.kubeconfig)
    session = aio.Session(api)
    cat = catalog.Catalog(session)
    quotas = store.ApiStore(session)
    if args.quota_reservation < 0:
        raise SystemExit("--quota-reservation must be 0 (off) or more")
    charges = ledger.QuotaLedger(quotas, reservation=args.quota_reservation)
    adm = admission.Admission(session, cat, charges, ratelimit.RateLimiter(limits))
    auth = (
        server.ClientAuth(args.client_ca, frozenset(args.client_name)) if args.client_ca else None
    )
    if auth is None:
        logging.getLogger(__name__).warning(
            "no --client-ca: reviews are not authenticated, so anything that reaches this port "
            "can ask for them; give the CA of the API server's webhook client certificate"
        )
    application = server.app(adm, auth)

    async def start_catalog(_: web.Application) -> None:
        await cat.start()

    async def stop_catalog(_: web.Application) -> None:
        await charges.give_back()
        cat.stop()
        await quotas.session.close()

    application.on_startup.append(start_catalog)
    application.on_cleanup.append(stop_catalog)
    logging.getLogger(__name__).info(
        "serving admission webhooks on https://%s:%d",
        args.host,
        args.port,
        extra={"limits": str(limits)},
    )
    web.run_app(
        application,
        host=args.host,
        port=args.port,
        ssl_context=server.tls(args.cert, args.key, args.client_ca),
        shutdown_timeout=args.shutdown_timeout,
        keepalive_timeout=server.KEEPALIVE_SECONDS,
        print=None,
        access_log=None,
        loop=asyncio.new_event_loop(),
    )


if __name__ == "__main__":
    main()
