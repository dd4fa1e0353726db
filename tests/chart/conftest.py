"""Fixtures of the chart tests: the control plane's helm with a private home."""

from __future__ import annotations

import pytest

from kubenova.dev import cluster
from tests.chart.helm import Helm


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm(cluster.ensure_binaries() / "helm", tmp_path_factory.mktemp("helm"))
