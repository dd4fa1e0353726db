"""The suite's hypothesis profile: no timing checks, whatever test sets its own settings."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.webhooks import test_defaults

pytestmark = pytest.mark.unit


@pytest.mark.skipif(
    os.environ.get("HYPOTHESIS_PROFILE", "ci") == "strict", reason="timing checks on by choice"
)
class TestTheLoadedProfile:
    def test_has_no_deadline_and_no_too_slow_check(self) -> None:
        loaded = settings.default
        assert loaded is not None
        assert loaded.deadline is None
        assert HealthCheck.too_slow in loaded.suppress_health_check

    def test_a_test_with_its_own_settings_inherits_it(self) -> None:
        @settings(max_examples=3)
        @given(st.integers())
        def probe(n: int) -> None:
            pass

        chosen = probe._hypothesis_internal_use_settings  # type: ignore[attr-defined]
        assert chosen.deadline is None
        assert HealthCheck.too_slow in chosen.suppress_health_check

    def test_the_json_patch_tests_run_under_it(self) -> None:
        test = test_defaults.TestJSONPatch.test_applying_the_diff_gives_the_new_document
        chosen = test._hypothesis_internal_use_settings  # type: ignore[attr-defined]
        assert chosen.deadline is None
        assert HealthCheck.too_slow in chosen.suppress_health_check
