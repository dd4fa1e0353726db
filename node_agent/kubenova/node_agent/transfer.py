"""The source agent's side of a live migration: what to do for a VM the operator marked
Migrating, from the domain this host still has and the job libvirt runs. Pure.

Idempotent, so an agent restarted mid-transfer picks up where libvirt is: a job still under
way is watched; a domain that is gone left by migration (libvirt undefines the source's
persistent domain only once the target runs it, UNDEFINE_SOURCE); a domain that is here with
no job is migrated (again)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from kubenova.node_agent.hypervisor import Domain, JobProgress


class Next(StrEnum):
    MIGRATE = "migrate"
    WATCH = "watch"
    """A job from before (an agent restart) is under way: report its progress."""
    ABORT = "abort"
    COMPLETED = "completed"
    FAILED = "failed"


@dataclass(frozen=True)
class Step:
    next: Next
    message: str = ""


def next_step(domain: Domain | None, job: JobProgress | None, abort: str | None) -> Step:
    """`abort`: why the operator wants the transfer stopped (None: it does not)."""
    if domain is None:
        return Step(Next.COMPLETED, "the domain left this host: it runs on the target")
    if not domain.active:
        return Step(
            Next.FAILED, f"the domain is {domain.state.value}, not running; nothing to move"
        )
    if job is not None:
        return Step(Next.ABORT, abort) if abort else Step(Next.WATCH)
    if abort:
        return Step(Next.FAILED, f"{abort}; stopped before the transfer began")
    return Step(Next.MIGRATE)


def percent(job: JobProgress) -> int:
    """Memory copied, 0..99 while the job runs (100 is for a finished transfer). Pages the
    guest dirtied are sent again, so the processed bytes can pass the total."""
    if not job.data_total or job.data_processed is None:
        return 0
    if job.data_remaining is not None:
        done = 1.0 - job.data_remaining / job.data_total
    else:
        done = job.data_processed / job.data_total
    return max(0, min(99, int(done * 100)))


# The only migration URIs a source host's libvirtd is sent to: peer-to-peer over TCP, TLS or
# SSH to a named host, with no query (libvirt's ?command=, ?socket=, ?keyfile= would make the
# source's libvirtd, as root, run a command or open a file). The chart's agent policy admits
# the same form in Host status.
_MIGRATION_URI = re.compile(
    r"qemu\+(?:tcp|tls|ssh)://([0-9A-Za-z.-]{1,253})(?::[0-9]{1,5})?/system"
)


@dataclass(frozen=True)
class Offer:
    """What a target Host offers in its own status (`status.migration`), written by its agent."""

    uri: str
    address: str


def target_problem(target: str, uri: str, address: str, offer: Offer | None) -> str | None:
    """Why the source must not send a VM to `uri` / `address` (the VM's migration annotations),
    or None. They must be exactly what Host `target` offers itself (its agent may write only
    its own Host), and the URI must name the target or its migration address."""
    if offer is None:
        return f"host {target} does not exist; not migrating to {uri}"
    if (uri, address) != (offer.uri, offer.address):
        return (
            f"the VM's migration annotations (uri {uri!r}, address {address!r}) are not what host "
            f"{target} offers in its status.migration (uri {offer.uri!r}, address "
            f"{offer.address!r}); not migrating"
        )
    match = _MIGRATION_URI.fullmatch(uri)
    if match is None or match.group(1) not in {target, *([address] if address else [])}:
        return (
            f"host {target} offers migration URI {uri!r}, which is not "
            f"qemu+tcp|tls|ssh://<{target} or its migration address>[:port]/system; not migrating"
        )
    return None
