"""The layout's promise: `operator` from the repository root is still the standard library's."""

from __future__ import annotations

import subprocess
import sys
import sysconfig

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.unit


def test_import_operator_from_the_repo_root_is_the_standard_library() -> None:
    out = subprocess.run(
        [sys.executable, "-c", "import operator; print(operator.__file__)"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert out.startswith(sysconfig.get_paths()["stdlib"]), out


def test_the_operator_package_is_importable_as_kubenova_operator() -> None:
    import kubenova.operator

    assert str(ROOT / "operator" / "kubenova" / "operator") in list(kubenova.operator.__path__)
