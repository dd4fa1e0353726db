"""The Grafana dashboards in the chart: generated from code without drift, and every query
names only metrics and labels the components export."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubenova.dev import dashboards
from tests.unit.chart import promql

pytestmark = pytest.mark.unit

COMMITTED = sorted(dashboards.DASHBOARD_DIR.glob("*.json"))


def test_committed_dashboards_equal_what_the_code_generates() -> None:
    wanted = dashboards.files()
    assert sorted(wanted) == COMMITTED, "run kubenova-dashboards and commit"
    for path, text in wanted.items():
        assert path.read_text() == text, f"{path.name} is stale: run kubenova-dashboards"


def test_check_mode_passes_on_the_committed_files() -> None:
    assert dashboards.main(["--check"]) == 0


def test_the_four_dashboards_the_chart_promises() -> None:
    titles = {promql.load(p)["title"] for p in COMMITTED}
    assert titles == {
        "kubenova / Cluster overview",
        "kubenova / Scheduler",
        "kubenova / Hosts and agents",
        "kubenova / Admission",
    }


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.stem)
def test_panels_have_unique_ids_and_query_the_chosen_data_source(path: Path) -> None:
    board = promql.load(path)
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    queries = list(promql.panel_queries(board))
    assert queries
    for panel in board["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert panel["targets"], f"{panel['title']} has no query"


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.stem)
def test_every_query_names_exported_metrics_and_their_labels(path: Path) -> None:
    exported = promql.exported()
    board = promql.load(path)
    problems = []
    for title, expr in promql.panel_queries(board):
        names = promql.metric_names(expr)
        if not names:
            problems.append(f"{title}: no metric in {expr!r}")
        unknown = names - exported.keys()
        if unknown:
            problems.append(f"{title}: unknown metrics {sorted(unknown)}")
        known = set().union(*(exported[n] for n in names - unknown)) | promql.TARGET_LABELS
        missing = promql.label_names(expr) - known
        if missing:
            problems.append(f"{title}: labels {sorted(missing)} on none of {sorted(names)}")
    assert problems == []


@pytest.mark.parametrize(
    ("expr", "metrics", "labels"),
    [
        (
            'sum by (le, call) (rate(x_bucket{host="a"}[5m]))',
            {"x_bucket"},
            {"le", "call", "host"},
        ),
        (
            "(a) and on (instance) (b == 1)",
            {"a", "b"},
            {"instance"},
        ),
        (
            "histogram_quantile(0.99, sum by (le) (rate(y_bucket[$__rate_interval])))",
            {"y_bucket"},
            {"le"},
        ),
    ],
)
def test_the_query_reader(expr: str, metrics: set[str], labels: set[str]) -> None:
    assert promql.metric_names(expr) == metrics
    assert promql.label_names(expr) == labels


def test_a_misspelt_metric_is_caught() -> None:
    assert "kubenova_vm" not in promql.exported()
    assert "kubenova_vms" in promql.exported()
    assert promql.exported()["kubenova_agent_libvirt_call_seconds_bucket"] == {"host", "call", "le"}
