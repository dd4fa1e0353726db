"""What a dashboard query refers to (metric and label names), and what the components
export. Enough PromQL to check dashboards, not a parser."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import prometheus_client
from prometheus_client.metrics import MetricWrapperBase

import kubenova.node_agent.metrics
import kubenova.operator.metrics
import kubenova.webhooks.metrics

COMPONENT_METRICS = (
    kubenova.operator.metrics,
    kubenova.node_agent.metrics,
    kubenova.webhooks.metrics,
)
# Labels Prometheus adds to every scraped series.
TARGET_LABELS = {"instance", "job"}
KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right",
    "and", "or", "unless", "bool", "offset",
    # aggregations, which may take `by (...)` before their parenthesis
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
    "bottomk", "topk", "quantile", "limitk", "limit_ratio",
}  # fmt: skip
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_MATCHERS = re.compile(r"\{([^}]*)\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_WORD = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    """The series names an expression selects."""
    text = _RANGE.sub("", _MATCHERS.sub("", _STRING.sub('""', expr)))
    text = _GROUPING.sub(r"\1", text)
    names = set()
    for m in _WORD.finditer(text):
        if text[m.end() :].lstrip().startswith("(") or m.group() in KEYWORDS:
            continue  # a function or an aggregation, or an operator
        names.add(m.group())
    return names


def label_names(expr: str) -> set[str]:
    """The labels an expression groups, joins or matches by."""
    text = _STRING.sub('""', expr)
    labels = set()
    for m in _GROUPING.finditer(text):
        labels |= {w.strip() for w in m.group(2).split(",") if w.strip()}
    for m in _MATCHERS.finditer(text):
        labels |= {w.split("=")[0].strip(" !~") for w in m.group(1).split(",") if "=" in w}
    return labels


def exported() -> dict[str, set[str]]:
    """Every series name the components' registries export, with its label names (and `le`
    for histogram buckets)."""
    labels: dict[str, set[str]] = {}
    for module in COMPONENT_METRICS:
        for value in vars(module).values():
            if isinstance(value, MetricWrapperBase):
                (family,) = value.describe()
                labels[family.name] = set(value._labelnames)  # no public accessor
    registries = [prometheus_client.REGISTRY, kubenova.webhooks.metrics.REGISTRY]
    series: dict[str, set[str]] = {}
    for registry in registries:
        for family in registry.collect():
            names = labels.get(family.name, set())
            suffixes = {
                "counter": ["_total", "_created"],
                "histogram": ["_bucket", "_count", "_sum", "_created"],
                "gauge": [""],
            }.get(family.type, ["", "_total", "_count", "_sum", "_bucket"])
            for suffix in suffixes:
                series[family.name + suffix] = names | ({"le"} if suffix == "_bucket" else set())
    return series


def panel_queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(panel title, PromQL) of every query of every panel, rows included."""
    for panel in dashboard["panels"]:
        for inner in [panel, *panel.get("panels", [])]:
            for target in inner.get("targets", []):
                yield inner["title"], target["expr"]


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data
