"""Lease records as the API server sends them, and who may write a Lease."""

from __future__ import annotations

import datetime as dt

import pytest

from kubenova.kube import leases

pytestmark = pytest.mark.unit
T0 = dt.datetime(2026, 12, 2, 0, 53, 10, 123456, tzinfo=dt.UTC)


def test_a_lease_reads_back_as_written() -> None:
    raw = {
        "metadata": {"name": "kubenova-operator", "resourceVersion": "42"},
        "spec": {
            "holderIdentity": "op-a",
            "leaseDurationSeconds": 15,
            "renewTime": "2026-12-02T00:53:10.123456Z",
            "acquireTime": "2026-12-02T00:50:00.000000Z",
            "leaseTransitions": 3,
        },
    }
    r = leases._record(raw)
    assert r == leases.LeaseRecord(
        "op-a", 15, T0, dt.datetime(2026, 12, 2, 0, 50, tzinfo=dt.UTC), 3, "42"
    )
    assert leases._time(leases._micro(T0)) == T0


@pytest.mark.parametrize("value", [None, "", "yesterday", 12])
def test_an_unset_or_unreadable_time_is_none_and_the_lease_free(value: object) -> None:
    r = leases._record({"metadata": {}, "spec": {"holderIdentity": "op-a", "renewTime": value}})
    assert r.renew_time is None
    assert leases.decide(r, "op-b", T0), "a lease never renewed may be taken"


def test_only_a_free_expired_or_own_lease_may_be_written() -> None:
    held = leases.LeaseRecord("op-a", 15, T0, T0, 1, "7")
    assert not leases.decide(held, "op-b", T0 + dt.timedelta(seconds=14.9))
    assert leases.decide(held, "op-b", T0 + dt.timedelta(seconds=15))
    assert leases.decide(held, "op-a", T0 + dt.timedelta(seconds=1))
    assert leases.decide(None, "op-b", T0)
    released = leases.LeaseRecord(None, 15, None, T0, 1, "8")
    assert leases.decide(released, "op-b", T0)
