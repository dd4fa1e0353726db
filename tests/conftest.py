"""Shared test helpers: paths and example loading. Fixtures that start services live next to
the tests that need them (tests/apiserver/conftest.py)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
INVALID = ROOT / "tests" / "data" / "invalid"


# Hypothesis' timing checks (a 200 ms deadline per example, the `too_slow` health check) measure
# the machine, not the code: on a busy 2-core CI runner a correct test fails them. The profiles
# keep every correctness check and drop the timing ones; they are loaded here, before any test
# module is imported, so `@settings(...)` in a test inherits from the chosen profile.
_NOT_TIMING = [HealthCheck.too_slow]
settings.register_profile("ci", deadline=None, suppress_health_check=_NOT_TIMING, print_blob=True)
settings.register_profile(
    "thorough",
    deadline=None,
    suppress_health_check=_NOT_TIMING,
    max_examples=2000,
    print_blob=True,
)
settings.register_profile("strict")
"""Hypothesis' own defaults, timing checks included: for profiling a slow strategy locally."""
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def load_documents(path: Path) -> list[dict[str, Any]]:
    """Every YAML document in a file, skipping empty ones."""
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


# Fixtures that start services, usable from every test folder.
pytest_plugins = [
    "tests.fixtures.cluster",
    "tests.fixtures.operator",
    "tests.fixtures.faultproxy",
    "tests.fixtures.webhook",
    "tests.fixtures.libvirt",
    "tests.fixtures.libvirt_pair",
    "tests.fixtures.console",
    "tests.fixtures.imageserver",
]


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep each phase's report on the test item (`item.rep_call`), so that a fixture can tell
    at teardown whether its test failed."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
