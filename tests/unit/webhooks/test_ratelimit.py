from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubenova.webhooks.ratelimit import BucketConfig, Limits, Operation, RateLimiter, TokenBucket

pytestmark = pytest.mark.unit

CREATE, UPDATE = Operation.CREATE, Operation.UPDATE


def limiter(ns: str | None = "2/3", cluster: str | None = "off", **kw: int) -> RateLimiter:
    nsc = BucketConfig.parse(ns) if ns else None
    cc = BucketConfig.parse(cluster) if cluster else None
    return RateLimiter(
        Limits(
            namespace_creates=nsc, cluster_creates=cc, namespace_updates=nsc, cluster_updates=cc
        ),
        **kw,
    )


class TestBucket:
    def test_a_burst_then_one_token_per_interval(self) -> None:
        rl = limiter("2/3")
        assert [rl.admit(CREATE, "a", 0.0) is None for _ in range(4)] == [True, True, True, False]
        assert rl.admit(CREATE, "a", 0.4) is not None, "half a token is not a token"
        assert rl.admit(CREATE, "a", 0.5) is None
        assert rl.admit(CREATE, "a", 0.5) is not None

    def test_the_denial_says_which_limit_and_when_to_retry(self) -> None:
        rl = limiter("0.5/1")
        rl.admit(CREATE, "team-a", 10.0)
        denial = rl.admit(CREATE, "team-a", 10.5)
        assert denial is not None
        assert denial.retry_after == pytest.approx(1.5)
        assert str(denial) == (
            "rate limit for creates in namespace team-a reached (0.5/s with bursts of 1); "
            "retry in 1.5s"
        )

    @given(
        st.lists(st.floats(0, 100, allow_nan=False), min_size=1, max_size=200),
        st.floats(0.1, 50),
        st.integers(1, 20),
    )
    def test_never_admits_more_than_burst_plus_rate_times_elapsed(
        self, times: list[float], rate: float, burst: int
    ) -> None:
        times.sort()
        rl = RateLimiter(Limits(BucketConfig(rate, burst), None, None, None))
        admitted = sum(rl.admit(CREATE, "ns", t) is None for t in times)
        assert admitted <= burst + math.floor(rate * (times[-1] - times[0]) + 1e-9)

    @given(st.floats(0.1, 50), st.integers(1, 20), st.floats(0, 1000))
    def test_a_full_bucket_admits_its_whole_burst_at_once(
        self, rate: float, burst: int, at: float
    ) -> None:
        bucket = TokenBucket(BucketConfig(rate, burst), at)
        for _ in range(burst):
            assert bucket.wait(at) == 0
            bucket.take(at)
        assert bucket.wait(at) > 0


class TestScopes:
    def test_namespaces_have_their_own_buckets(self) -> None:
        rl = limiter("1/1")
        assert rl.admit(CREATE, "a", 0) is None
        assert rl.admit(CREATE, "a", 0) is not None
        assert rl.admit(CREATE, "b", 0) is None

    def test_creates_and_updates_have_their_own_buckets(self) -> None:
        rl = limiter("1/1")
        assert rl.admit(CREATE, "a", 0) is None
        assert rl.admit(UPDATE, "a", 0) is None

    def test_the_cluster_bucket_spans_namespaces_and_is_named(self) -> None:
        rl = limiter("10/10", "1/2")
        assert rl.admit(CREATE, "a", 0) is None
        assert rl.admit(CREATE, "b", 0) is None
        denial = rl.admit(CREATE, "c", 0)
        assert denial is not None and denial.scope == "cluster"

    def test_a_request_the_cluster_denies_takes_nothing_from_its_namespace(self) -> None:
        rl = limiter("0.001/2", "1/1")
        assert rl.admit(CREATE, "a", 0) is None
        assert rl.admit(CREATE, "a", 0) is not None  # cluster empty
        # A second later the cluster has a token again, and "a" (which barely refills) still
        # has its second one.
        assert rl.admit(CREATE, "a", 1.0) is None
        assert rl.admit(CREATE, "a", 1.0) is not None

    def test_off_means_unlimited(self) -> None:
        rl = limiter(None, None)
        assert all(rl.admit(CREATE, "a", 0) is None for _ in range(10_000))

    def test_forgotten_namespaces_start_full_and_memory_is_bounded(self) -> None:
        rl = limiter("1/1", max_namespaces=2)
        for ns in ("a", "b", "c"):
            assert rl.admit(CREATE, ns, 0) is None
        assert rl.admit(CREATE, "a", 0) is None, "a was forgotten: it errs towards admitting"
        assert rl.admit(CREATE, "c", 0) is not None


class TestConfig:
    @pytest.mark.parametrize(
        ("text", "want"),
        [("20/40", BucketConfig(20, 40)), ("0.5/3", BucketConfig(0.5, 3)), ("off", None)],
    )
    def test_parses_rate_slash_burst(self, text: str, want: BucketConfig | None) -> None:
        assert BucketConfig.parse(text) == want

    @pytest.mark.parametrize("text", ["20", "x/3", "0/3", "5/0", "-1/2"])
    def test_rejects_anything_else(self, text: str) -> None:
        with pytest.raises(ValueError, match="rate"):
            BucketConfig.parse(text)
