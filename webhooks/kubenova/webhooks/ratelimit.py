"""Token buckets per namespace and for the whole cluster, for creates and for updates. Pure:
the caller passes the time in (a monotonic clock in seconds), so tests run on virtual time.

A request is admitted only when both its namespace's bucket and the cluster's bucket hold a
token; it then takes one from each. A denied request takes nothing, so a flood from one
namespace drains only what it was admitted for.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from dataclasses import dataclass
from enum import StrEnum


class Operation(StrEnum):
    CREATE = "create"
    UPDATE = "update"


@dataclass(frozen=True)
class BucketConfig:
    """`rate` tokens a second, at most `burst` saved up."""

    rate: float
    burst: int

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst < 1:
            raise ValueError(f"a rate limit needs rate > 0 and burst >= 1, got {self}")

    @classmethod
    def parse(cls, text: str) -> BucketConfig | None:
        """`RATE/BURST` (e.g. `20/40`, `0.5/3`), or `off` for no limit."""
        if text.strip().lower() == "off":
            return None
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*/\s*([0-9]+)\s*", text)
        if m is None:
            raise ValueError(f"{text!r} is not a rate limit: write RATE/BURST, e.g. 20/40, or off")
        return cls(float(m.group(1)), int(m.group(2)))

    def __str__(self) -> str:
        return f"{self.rate:g}/s with bursts of {self.burst}"


class TokenBucket:
    """A bucket that refills smoothly at `rate` tokens a second up to `burst`; starts full."""

    __slots__ = ("_at", "_tokens", "config")

    def __init__(self, config: BucketConfig, now: float) -> None:
        self.config = config
        self._tokens = float(config.burst)
        self._at = now

    def tokens(self, now: float) -> float:
        """Tokens available at `now` (time never runs backwards for a bucket)."""
        elapsed = max(0.0, now - self._at)
        return min(float(self.config.burst), self._tokens + elapsed * self.config.rate)

    def wait(self, now: float) -> float:
        """Seconds until a token is available; 0 when one is."""
        have = self.tokens(now)
        return 0.0 if have >= 1.0 else (1.0 - have) / self.config.rate

    def take(self, now: float) -> None:
        """Take one token; the caller checked `wait(now) == 0`."""
        self._tokens = self.tokens(now) - 1.0
        self._at = max(self._at, now)


@dataclass(frozen=True)
class Limits:
    """Rate limits by scope and operation; None means unlimited."""

    namespace_creates: BucketConfig | None = BucketConfig(20, 100)
    namespace_updates: BucketConfig | None = BucketConfig(50, 200)
    cluster_creates: BucketConfig | None = BucketConfig(500, 1000)
    cluster_updates: BucketConfig | None = BucketConfig(1000, 2000)

    def for_namespace(self, op: Operation) -> BucketConfig | None:
        return self.namespace_creates if op is Operation.CREATE else self.namespace_updates

    def for_cluster(self, op: Operation) -> BucketConfig | None:
        return self.cluster_creates if op is Operation.CREATE else self.cluster_updates


@dataclass(frozen=True)
class Denial:
    """Which bucket was empty and how long until it is not."""

    operation: Operation
    scope: str
    """`namespace <name>` or `cluster`."""
    config: BucketConfig
    retry_after: float

    def __str__(self) -> str:
        return (
            f"rate limit for {self.operation}s in {self.scope} reached ({self.config}); "
            f"retry in {math.ceil(self.retry_after * 10) / 10:g}s"
        )


class RateLimiter:
    """Buckets for every namespace seen lately (at most `max_namespaces`, least recently used
    forgotten, which only ever errs towards admitting) and one for the cluster."""

    def __init__(self, limits: Limits, max_namespaces: int = 10_000) -> None:
        self.limits = limits
        self.max_namespaces = max_namespaces
        self._namespaces: OrderedDict[tuple[Operation, str], TokenBucket] = OrderedDict()
        self._cluster: dict[Operation, TokenBucket] = {}

    def _namespace_bucket(self, op: Operation, ns: str, now: float) -> TokenBucket | None:
        config = self.limits.for_namespace(op)
        if config is None:
            return None
        key = (op, ns)
        bucket = self._namespaces.get(key)
        if bucket is None:
            bucket = self._namespaces[key] = TokenBucket(config, now)
            while len(self._namespaces) > self.max_namespaces:
                self._namespaces.popitem(last=False)
        else:
            self._namespaces.move_to_end(key)
        return bucket

    def _cluster_bucket(self, op: Operation, now: float) -> TokenBucket | None:
        config = self.limits.for_cluster(op)
        if config is None:
            return None
        bucket = self._cluster.get(op)
        if bucket is None:
            bucket = self._cluster[op] = TokenBucket(config, now)
        return bucket

    def admit(self, op: Operation, namespace: str, now: float) -> Denial | None:
        """Take a token for one `op` in `namespace`, or say which limit denies it."""
        scoped = (
            (f"namespace {namespace}", self._namespace_bucket(op, namespace, now)),
            ("cluster", self._cluster_bucket(op, now)),
        )
        for scope, bucket in scoped:
            if bucket is not None:
                wait = bucket.wait(now)
                if wait > 0:
                    return Denial(op, scope, bucket.config, wait)
        for _, bucket in scoped:
            if bucket is not None:
                bucket.take(now)
        return None
