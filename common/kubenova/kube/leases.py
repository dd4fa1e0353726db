"""`coordination.k8s.io` Leases: the operator's leader election and the agents' heartbeats.

`decide()` is the pure part (may I hold this lease now?); `LeaseClient` reads and writes the
Lease with a resourceVersion precondition, so of two replicas racing for an expired lease
exactly one wins.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException

from kubenova.kube import aio


@dataclass(frozen=True)
class LeaseRecord:
    holder: str | None
    duration_seconds: int
    renew_time: dt.datetime | None
    acquire_time: dt.datetime | None
    transitions: int
    resource_version: str | None

    def expired(self, now: dt.datetime) -> bool:
        if self.renew_time is None:
            return True
        return now >= self.renew_time + dt.timedelta(seconds=self.duration_seconds)


def decide(record: LeaseRecord | None, me: str, now: dt.datetime) -> bool:
    """May `me` write the lease now: it is free, expired, or already mine."""
    return record is None or record.holder in (None, "", me) or record.expired(now)


def _time(value: object) -> dt.datetime | None:
    """A Lease's MicroTime ("2026-12-02T00:00:00.123456Z"); None when unset or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        stamp = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.UTC)


def _micro(stamp: dt.datetime) -> str:
    return stamp.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _record(lease: dict[str, Any]) -> LeaseRecord:
    spec, meta = lease.get("spec") or {}, lease.get("metadata") or {}
    return LeaseRecord(
        holder=spec.get("holderIdentity"),
        duration_seconds=int(spec.get("leaseDurationSeconds") or 0),
        renew_time=_time(spec.get("renewTime")),
        acquire_time=_time(spec.get("acquireTime")),
        transitions=int(spec.get("leaseTransitions") or 0),
        resource_version=meta.get("resourceVersion"),
    )


class LeaseClient:
    """Acquire or renew one Lease, over the asynchronous client (no worker thread: a renewal
    never waits behind other calls for a thread)."""

    def __init__(self, api: kubernetes.client.ApiClient, namespace: str, name: str) -> None:
        self.http = aio.Session(api)
        self.namespace = namespace
        self.name = name
        self.path = aio.object_path("coordination.k8s.io", "v1", "leases", name, namespace)
        self.seen: LeaseRecord | None = None
        """The Lease as the last `try_hold` read it, before writing: another's while they
        hold it, the previous holder's right after a take-over, ours while renewing."""

    async def get(self) -> LeaseRecord | None:
        try:
            return _record(await self.http.call("GET", self.path))
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    async def try_hold(
        self, me: str, duration_seconds: int, now: dt.datetime | None = None
    ) -> LeaseRecord | None:
        """Take or renew the lease for `me`; None when someone else holds it (or won a race)."""
        now = now or dt.datetime.now(dt.UTC)
        current = self.seen = await self.get()
        if not decide(current, me, now):
            return None
        mine = current is not None and current.holder == me
        acquired = current.acquire_time if mine and current and current.acquire_time else now
        spec = {
            "holderIdentity": me,
            "leaseDurationSeconds": duration_seconds,
            "renewTime": _micro(now),
            "acquireTime": _micro(acquired),
            "leaseTransitions": (current.transitions if current else 0) + (0 if mine else 1),
        }
        meta: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta}
        try:
            if current is None:
                collection = self.path.rsplit("/", 1)[0]
                lease = await self.http.call("POST", collection, body={**body, "spec": spec})
            else:
                meta["resourceVersion"] = current.resource_version
                lease = await self.http.call("PUT", self.path, body={**body, "spec": spec})
        except ApiException as e:
            if e.status in (409, 422):
                return None  # another replica wrote first
            raise
        return _record(lease)

    async def release(self, me: str) -> None:
        """Give the lease up at shutdown so a standby takes over at once."""
        current = await self.get()
        if current is None or current.holder != me:
            return
        body = {
            "metadata": {"resourceVersion": current.resource_version},
            "spec": {"holderIdentity": None, "renewTime": None},
        }
        try:
            await self.http.call("PATCH", self.path, body=body, content_type=aio.MERGE_PATCH)
        except ApiException as e:
            if e.status not in (404, 409):
                raise

    async def close(self) -> None:
        await self.http.close()
