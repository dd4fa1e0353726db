"""Shared test helpers: paths and example loading. Fixtures that start services live next to
the tests that need them (tests/apiserver/conftest.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
INVALID = ROOT / "tests" / "data" / "invalid"


def load_documents(path: Path) -> list[dict[str, Any]]:
    """Every YAML document in a file, skipping empty ones."""
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


# Fixtures that start services, usable from every test folder.
pytest_plugins = [
    "tests.fixtures.cluster",
    "tests.fixtures.operator",
    "tests.fixtures.webhook",
    "tests.fixtures.libvirt",
    "tests.fixtures.libvirt_pair",
]
