"""`coordination.k8s.io` Leases: the operator's leader election and the agents' heartbeats.

`decide()` is the pure part (may I hold this lease now?); `LeaseClient` reads and writes the
Lease with a resourceVersion precondition, so of two replicas racing for an expired lease
exactly one wins.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import kubernetes
from kubernetes.client.exceptions import ApiException

from kubenova.kube import client


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


def _record(lease: kubernetes.client.V1Lease) -> LeaseRecord:
    spec, meta = lease.spec, lease.metadata
    assert spec is not None and meta is not None, "the API server always sends both"
    return LeaseRecord(
        holder=spec.holder_identity,
        duration_seconds=spec.lease_duration_seconds or 0,
        renew_time=spec.renew_time,
        acquire_time=spec.acquire_time,
        transitions=spec.lease_transitions or 0,
        resource_version=meta.resource_version,
    )


class LeaseClient:
    """Acquire or renew one Lease."""

    def __init__(self, api: kubernetes.client.ApiClient, namespace: str, name: str) -> None:
        self.coord = kubernetes.client.CoordinationV1Api(api)
        self.namespace = namespace
        self.name = name
        self.seen: LeaseRecord | None = None
        """The Lease as the last `try_hold` read it, before writing: another's while they
        hold it, the previous holder's right after a take-over, ours while renewing."""

    async def get(self) -> LeaseRecord | None:
        try:
            lease = await client.call(self.coord.read_namespaced_lease, self.name, self.namespace)
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        return _record(lease)

    async def try_hold(
        self, me: str, duration_seconds: int, now: dt.datetime | None = None
    ) -> LeaseRecord | None:
        """Take or renew the lease for `me`; None when someone else holds it (or won a race)."""
        now = now or dt.datetime.now(dt.UTC)
        current = self.seen = await self.get()
        if not decide(current, me, now):
            return None
        mine = current is not None and current.holder == me
        spec = kubernetes.client.V1LeaseSpec(
            holder_identity=me,
            lease_duration_seconds=duration_seconds,
            renew_time=now,
            acquire_time=current.acquire_time if mine and current else now,
            lease_transitions=(current.transitions if current else 0) + (0 if mine else 1),
        )
        meta = kubernetes.client.V1ObjectMeta(name=self.name, namespace=self.namespace)
        try:
            if current is None:
                lease = await client.call(
                    self.coord.create_namespaced_lease,
                    self.namespace,
                    kubernetes.client.V1Lease(metadata=meta, spec=spec),
                )
            else:
                meta.resource_version = current.resource_version
                lease = await client.call(
                    self.coord.replace_namespaced_lease,
                    self.name,
                    self.namespace,
                    kubernetes.client.V1Lease(metadata=meta, spec=spec),
                )
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
            await client.call(self.coord.patch_namespaced_lease, self.name, self.namespace, body)
        except ApiException as e:
            if e.status not in (404, 409):
                raise
