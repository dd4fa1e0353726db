"""Grafana dashboards as code: builds the chart's dashboards with Grafana's typed
`grafana-foundation-sdk` and writes them to `charts/kubenova/dashboards/*.json`. Pure except
`main`, which writes or checks the files.

    kubenova-dashboards            # regenerate after changing a panel
    kubenova-dashboards --check    # exit 1 when the committed files differ

Every query names only metrics the components export (tests/unit/chart checks them against
the components' registries), and the operator's gauges are read from the leader only: every
replica exports them, but only the leader's are current.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard, prometheus, stat, timeseries
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as models

ROOT = Path(__file__).resolve().parents[3]
DASHBOARD_DIR = ROOT / "charts" / "kubenova" / "dashboards"
DATASOURCE = models.DataSourceRef(type_val="prometheus", uid="${datasource}")
TAGS = ["kubenova"]


def leader(expr: str) -> str:
    """`expr` restricted to the series of the replica that currently leads."""
    return f"({expr}) and on (instance) (kubenova_operator_leader == 1)"


def quantile(q: float, histogram: str, by: str = "") -> str:
    labels = f"le, {by}" if by else "le"
    return (
        f"histogram_quantile({q}, sum by ({labels}) (rate({histogram}_bucket[$__rate_interval])))"
    )


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""


@dataclass(frozen=True)
class Panel:
    """One panel: what it shows and how; laid out left to right, `width` of 24 columns."""

    title: str
    description: str
    queries: Sequence[Query]
    unit: str = "short"
    kind: str = "timeseries"
    width: int = 12
    height: int = 8


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    description: str
    rows: Sequence[tuple[str, Sequence[Panel]]]

    @property
    def filename(self) -> str:
        return f"{self.uid}.json"

    def panels(self) -> list[Panel]:
        return [p for _, panels in self.rows for p in panels]


def _targets(panel: Panel) -> list[cogbuilder.Builder[object]]:
    targets: list[cogbuilder.Builder[object]] = []
    for i, q in enumerate(panel.queries):
        t = prometheus.Dataquery().expr(q.expr).ref_id(chr(ord("A") + i)).datasource(DATASOURCE)
        if q.legend:
            t = t.legend_format(q.legend)
        if panel.kind == "stat":
            t = t.instant()
        targets.append(t)
    return targets


def _panel(panel: Panel, panel_id: int) -> cogbuilder.Builder[models.Panel]:
    built: timeseries.Panel | stat.Panel
    if panel.kind == "stat":
        built = (
            stat.Panel()
            .graph_mode(common.BigValueGraphMode.NONE)
            .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]))
        )
    else:
        built = timeseries.Panel().fill_opacity(10).line_width(1)
    built = (
        built.id(panel_id)
        .title(panel.title)
        .description(panel.description)
        .datasource(DATASOURCE)
        .unit(panel.unit)
        .span(panel.width)
        .height(panel.height)
        .targets(_targets(panel))  # type: ignore[arg-type]
    )
    return built


def build(d: Dashboard) -> dict[str, object]:
    """The dashboard's JSON model."""
    b = (
        dashboard.Dashboard(d.title)
        .uid(d.uid)
        .description(d.description)
        .tags(TAGS)
        .editable()
        .time("now-1h", "now")
        .refresh("30s")
        .timezone("browser")
        .tooltip(models.DashboardCursorSync.CROSSHAIR)
        .with_variable(
            dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus")
        )
    )
    ids = iter(range(1, 1000))
    for row, panels in d.rows:
        b = b.with_row(dashboard.Row(row).id(next(ids)))
        for p in panels:
            b = b.with_panel(_panel(p, next(ids)))
    out: dict[str, object] = json.loads(json.dumps(b.build(), cls=JSONEncoder))
    return out


CLUSTER = Dashboard(
    uid="kubenova-cluster",
    title="kubenova / Cluster overview",
    description="Hosts by state, VMs by phase, how full each pool is and what still fits.",
    rows=[
        (
            "Inventory",
            [
                Panel(
                    "Hosts by state",
                    "Hosts as the operator sees them (Ready, NotReady, Cordoned, ...).",
                    [Query(f"sum by (state) ({leader('kubenova_hosts')})", "{{state}}")],
                    kind="stat",
                ),
                Panel(
                    "VMs by phase",
                    "VirtualMachines by status.phase.",
                    [Query(f"sum by (phase) ({leader('kubenova_vms')})", "{{phase}}")],
                    kind="stat",
                ),
                Panel(
                    "VMs by phase over time",
                    "A growing Pending line means VMs that do not fit anywhere.",
                    [Query(f"sum by (phase) ({leader('kubenova_vms')})", "{{phase}}")],
                    width=24,
                ),
            ],
        ),
        (
            "Pools",
            [
                Panel(
                    "Pool utilisation",
                    "Allocated plus reserved over the allocatable capacity of the pool's "
                    "ready hosts, per resource.",
                    [
                        Query(
                            "(sum by (pool, resource) "
                            f"({leader('kubenova_pool_allocated')})"
                            " + sum by (pool, resource) "
                            f"({leader('kubenova_pool_reserved')}))"
                            " / sum by (pool, resource) "
                            f"({leader('kubenova_pool_capacity')} > 0)",
                            "{{pool}} {{resource}}",
                        )
                    ],
                    unit="percentunit",
                ),
                Panel(
                    "How many more of each flavor fit",
                    "VMs of each flavor that would still fit in each pool, one at a time.",
                    [
                        Query(
                            f"sum by (pool, flavor) ({leader('kubenova_pool_flavor_fits')})",
                            "{{pool}} {{flavor}}",
                        )
                    ],
                ),
            ],
        ),
    ],
)

SCHEDULER = Dashboard(
    uid="kubenova-scheduler",
    title="kubenova / Scheduler",
    description="Decision and bind latency, queue depth, throughput and why VMs do not fit.",
    rows=[
        (
            "Latency",
            [
                Panel(
                    "Scheduling decision latency",
                    "Filter, score and reserve for one VM.",
                    [
                        Query(quantile(0.5, "kubenova_scheduling_decision_seconds"), "p50"),
                        Query(quantile(0.99, "kubenova_scheduling_decision_seconds"), "p99"),
                    ],
                    unit="s",
                    width=8,
                ),
                Panel(
                    "Bind latency",
                    "One binding patch to the API server.",
                    [
                        Query(quantile(0.5, "kubenova_bind_seconds"), "p50"),
                        Query(quantile(0.99, "kubenova_bind_seconds"), "p99"),
                    ],
                    unit="s",
                    width=8,
                ),
                Panel(
                    "Pending to bound",
                    "From the operator first seeing a pending VM to its binding.",
                    [
                        Query(quantile(0.5, "kubenova_pending_to_bound_seconds"), "p50"),
                        Query(quantile(0.99, "kubenova_pending_to_bound_seconds"), "p99"),
                    ],
                    unit="s",
                    width=8,
                ),
            ],
        ),
        (
            "Throughput",
            [
                Panel(
                    "Queue depth",
                    "Pending VMs by sub-queue (active, back-off, unschedulable).",
                    [
                        Query(
                            f"sum by (queue) ({leader('kubenova_scheduling_queue_depth')})",
                            "{{queue}}",
                        )
                    ],
                    width=8,
                ),
                Panel(
                    "Binds per second",
                    "Binding attempts by result; conflicts are retried.",
                    [
                        Query(
                            "sum by (result) (rate(kubenova_binds_total[$__rate_interval]))",
                            "{{result}}",
                        )
                    ],
                    unit="ops",
                    width=8,
                ),
                Panel(
                    "Failures by reason",
                    "Attempts that found no host, by the filter that removed the most hosts.",
                    [
                        Query(
                            "sum by (reason) "
                            "(rate(kubenova_scheduling_failures_total[$__rate_interval]))",
                            "{{reason}}",
                        )
                    ],
                    unit="ops",
                    width=8,
                ),
            ],
        ),
        (
            "Operator",
            [
                Panel(
                    "Leader",
                    "Which replica holds the leader Lease.",
                    [Query("kubenova_operator_leader == 1", "{{instance}}")],
                    kind="stat",
                ),
                Panel(
                    "Events dropped",
                    "Kubernetes events dropped because the operator's event queue was full.",
                    [Query("sum(kubenova_operator_events_dropped)", "dropped")],
                    kind="stat",
                ),
            ],
        ),
    ],
)

HOSTS = Dashboard(
    uid="kubenova-hosts",
    title="kubenova / Hosts and agents",
    description="Heartbeats, libvirt latency, domains and reconciles, per host.",
    rows=[
        (
            "Heartbeats",
            [
                Panel(
                    "Heartbeat age",
                    "Seconds since each agent last renewed its Lease; the operator marks the "
                    "host NotReady when the Lease expires.",
                    [Query("max by (host) (kubenova_agent_heartbeat_age_seconds)", "{{host}}")],
                    unit="s",
                ),
                Panel(
                    "Oldest heartbeat",
                    "The stalest agent.",
                    [Query("max(kubenova_agent_heartbeat_age_seconds)", "oldest")],
                    unit="s",
                    kind="stat",
                ),
            ],
        ),
        (
            "libvirt",
            [
                Panel(
                    "libvirt call latency (p99)",
                    "By call, over all hosts.",
                    [
                        Query(
                            quantile(0.99, "kubenova_agent_libvirt_call_seconds", "call"),
                            "{{call}}",
                        )
                    ],
                    unit="s",
                ),
                Panel(
                    "Domains by state",
                    "libvirt domains on each host.",
                    [
                        Query(
                            "sum by (host, state) (kubenova_agent_domains)",
                            "{{host}} {{state}}",
                        )
                    ],
                ),
                Panel(
                    "Reconciles per second",
                    "Reconcile passes by result.",
                    [
                        Query(
                            "sum by (result) (rate(kubenova_agent_reconciles_total"
                            "[$__rate_interval]))",
                            "{{result}}",
                        )
                    ],
                    unit="ops",
                ),
                Panel(
                    "Orphan domains",
                    "kubenova domains with no VM bound to their host, and those removed after "
                    "the grace period.",
                    [
                        Query("sum by (host) (kubenova_agent_orphan_domains)", "{{host}}"),
                        Query(
                            "sum(increase(kubenova_agent_orphan_domains_removed_total"
                            "[$__rate_interval]))",
                            "removed",
                        ),
                    ],
                ),
            ],
        ),
        (
            "Image cache",
            [
                Panel(
                    "Image downloads",
                    "Bytes per second the agents fetch into their image caches (VMImages).",
                    [
                        Query(
                            "sum by (host) (rate(kubenova_agent_image_bytes_downloaded_total"
                            "[$__rate_interval]))",
                            "{{host}}",
                        )
                    ],
                    unit="Bps",
                ),
                Panel(
                    "Image import time (p90)",
                    "Fetch, verify and store one VMImage, by result.",
                    [
                        Query(
                            quantile(0.9, "kubenova_agent_image_import_seconds", "result"),
                            "{{result}}",
                        )
                    ],
                    unit="s",
                ),
                Panel(
                    "Image import failures",
                    "Failed imports by reason (ChecksumMismatch, Unreachable, HTTPError, "
                    "BadFormat, ConversionFailed).",
                    [
                        Query(
                            "sum by (reason) (increase(kubenova_agent_image_import_failures_total"
                            "[$__rate_interval]))",
                            "{{reason}}",
                        )
                    ],
                ),
                Panel(
                    "Image cache size",
                    "Verified bytes each host's image cache holds.",
                    [Query("sum by (host) (kubenova_agent_image_cache_bytes)", "{{host}}")],
                    unit="bytes",
                ),
                Panel(
                    "Image cache evictions",
                    "Images evicted to keep each cache within its limit (unused ones, least "
                    "recently used first).",
                    [
                        Query(
                            "sum by (host) (increase(kubenova_agent_image_cache_evictions_total"
                            "[$__rate_interval]))",
                            "{{host}}",
                        )
                    ],
                ),
            ],
        ),
    ],
)

ADMISSION = Dashboard(
    uid="kubenova-admission",
    title="kubenova / Admission",
    description="Webhook latency, denials by reason, rate-limited requests and quota charges.",
    rows=[
        (
            "Webhooks",
            [
                Panel(
                    "Admission latency (p99)",
                    "Time to answer one AdmissionReview, by webhook and operation.",
                    [
                        Query(
                            quantile(
                                0.99, "kubenova_webhook_admission_seconds", "webhook, operation"
                            ),
                            "{{webhook}} {{operation}}",
                        )
                    ],
                    unit="s",
                ),
                Panel(
                    "Requests per second",
                    "AdmissionReviews answered, by webhook and kind.",
                    [
                        Query(
                            "sum by (webhook, kind) "
                            "(rate(kubenova_webhook_admission_seconds_count[$__rate_interval]))",
                            "{{webhook}} {{kind}}",
                        )
                    ],
                    unit="reqps",
                ),
                Panel(
                    "Denials by reason",
                    "Requests refused: Invalid, QuotaExceeded, RateLimited, ...",
                    [
                        Query(
                            "sum by (reason) "
                            "(rate(kubenova_webhook_denials_total[$__rate_interval]))",
                            "{{reason}}",
                        )
                    ],
                    unit="reqps",
                ),
                Panel(
                    "Rate-limited requests",
                    "Creates and updates refused by the token buckets, by kind.",
                    [
                        Query(
                            "sum by (kind) (rate(kubenova_webhook_denials_total"
                            '{reason="RateLimited"}[$__rate_interval]))',
                            "{{kind}}",
                        )
                    ],
                    unit="reqps",
                ),
            ],
        ),
        (
            "Quota",
            [
                Panel(
                    "Quota charges and conflicts",
                    "VM creates charged against a VMQuota, and compare-and-swap writes that "
                    "lost to another writer and were retried.",
                    [
                        Query(
                            "sum(rate(kubenova_webhook_quota_charges_total[$__rate_interval]))",
                            "charges",
                        ),
                        Query(
                            "sum(rate(kubenova_webhook_quota_conflicts_total[$__rate_interval]))",
                            "conflicts",
                        ),
                    ],
                    unit="ops",
                    width=24,
                ),
            ],
        ),
    ],
)

DASHBOARDS = (CLUSTER, SCHEDULER, HOSTS, ADMISSION)


def render(d: Dashboard) -> str:
    return json.dumps(build(d), indent=2, sort_keys=True) + "\n"


def files() -> dict[Path, str]:
    """Every generated file and its content."""
    return {DASHBOARD_DIR / d.filename: render(d) for d in DASHBOARDS}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="kubenova-dashboards", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--check", action="store_true", help="fail if the files are stale")
    args = parser.parse_args(argv)
    wanted = files()
    stale = [p for p, text in wanted.items() if not p.exists() or p.read_text() != text]
    extra = [p for p in DASHBOARD_DIR.glob("*.json") if p not in wanted]
    if args.check:
        if stale or extra:
            names = ", ".join(p.name for p in [*stale, *extra])
            print(f"stale dashboards: {names}; run kubenova-dashboards and commit", file=sys.stderr)
            return 1
        return 0
    DASHBOARD_DIR.mkdir(parents=True, exist_ok=True)
    for p in stale:
        p.write_text(wanted[p])
        print(f"wrote {p}")
    for p in extra:
        p.unlink()
        print(f"removed {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
