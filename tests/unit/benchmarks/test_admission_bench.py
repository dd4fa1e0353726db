"""The pure parts of benchmarks/admission_bench.py: percentiles, how it reads the webhook's
metrics between two scrapes, and how it sums up py-spy's stacks."""

from __future__ import annotations

import pytest

from tests.unit.benchmarks import load

pytestmark = pytest.mark.unit

bench = load("admission_bench")

MUTATE = '{kind="VirtualMachine",operation="CREATE",webhook="mutate"}'
SCRAPE = f"""# HELP kubenova_webhook_admission_seconds Time to answer one admission review.
kubenova_webhook_admission_seconds_sum{MUTATE} %s
kubenova_webhook_admission_seconds_count{MUTATE} %s
kubenova_webhook_quota_write_seconds_sum %s
kubenova_webhook_quota_write_seconds_count %s
kubenova_webhook_quota_batch_size_sum %s
kubenova_webhook_quota_batch_size_count %s
kubenova_webhook_connections_total %s
"""


def test_percentiles_are_of_the_latencies_recorded() -> None:
    run = bench.Run("r", 100, 100, 0, 1.0, [i / 1000 for i in range(1, 101)])
    assert run.pct(50) == pytest.approx(0.051)
    assert run.pct(99) == pytest.approx(0.099)
    assert run.rate == 100.0


def test_the_summary_is_of_what_happened_between_two_scrapes() -> None:
    before = bench.parse_metrics(SCRAPE % (1.0, 1000, 2.0, 500, 1000, 500, 10))
    after = bench.parse_metrics(SCRAPE % (1.5, 2000, 3.5, 1000, 2500, 1000, 12))
    text = bench.server_side(bench.metrics_delta(before, after))
    assert "mutate 0.50 ms mean over 1000 reviews" in text
    assert "3.00 ms per quota write (mean of 500)" in text
    assert "3.00 charges per batch (mean of 500)" in text
    assert "2 connections" in text


def test_nothing_recorded_says_so() -> None:
    assert bench.server_side({}) == "no reviews recorded"


def test_the_profile_summary_names_the_frames_with_the_most_own_time() -> None:
    raw = "\n".join(
        [
            "main (a.py:1);handle (b.py:2);SSLObject.do_handshake (ssl.py:979) 30",
            "main (a.py:1);handle (b.py:2);BaseModel.model_validate (pydantic/main.py:792) 10",
            "main (a.py:1);EpollSelector.select (selectors.py:468) 60",
        ]
    )
    text = bench.profile_summary(raw)
    lines = text.splitlines()
    assert lines[0] == "# profile: 100 samples; most own time:"
    assert "60.0%  EpollSelector.select" in lines[1]
    assert "within TLS handshakes: 30.0%" in text
    assert "within pydantic validation: 10.0%" in text
