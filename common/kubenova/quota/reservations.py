"""Quota reservations: headroom a webhook process holds in `status.reservations`, so that it
admits creates from memory and writes their charges into `used` a moment later, a batch at a
time, instead of one compare-and-swap in every create's path. Pure.

What keeps the count exact:
- **Held counts as used.** Every decision, by any process, is made against `used` plus every
  reservation (`held`), so all the reservations and `used` together never pass `spec.hard`.
- **A reservation covers what its holder admitted and has not written yet.** The holder admits
  from memory only what fits in its reservation as last written (`remaining`); each write moves
  what it consumed into `used` and takes it off its reservation, in one compare-and-swap.
- **A holder stops admitting from it `TTL_SECONDS - MARGIN_SECONDS` after the write that
  renewed it was sent** (its own monotonic clock), whether or not later writes got through.
- **A recount lowers or raises nothing while a reservation may still cover VMs that are not
  in `used`.** It drops a reservation only once it has seen it unchanged (same `seq`) for
  `SETTLE_SECONDS` by its own clock: its holder stopped admitting from it within
  `TTL_SECONDS - MARGIN_SECONDS` of the write, and the API server stored or refused each
  create it admitted within `CHARGE_SETTLE_SECONDS` (the webhook timeout) after that. No two
  machines' clocks are compared. With every reservation of the namespace dropped, the recount
  counts the stored VMs; a holder that finds its reservation dropped has had its unwritten
  charges counted by that recount, and writes them no more.
- **A lost reply is told apart by `seq`**, the holder's write counter in its reservation. A
  holder that writes a charge holding no reservation (none configured, or no room for one)
  leaves a receipt instead: an entry that covers nothing, with the write's `seq`. So a PUT
  that landed and whose retry was answered 409 is not decided and counted again. A receipt
  holds nothing back: recounts correct the count past it, and drop it once it settled.

So a process that dies keeps its unused headroom held (usage too high, never too low) until
a recount that has seen every reservation of the namespace settle.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

from kubenova.api.quantity import Quantity
from kubenova.api.quota import QuotaAmounts, QuotaReservation
from kubenova.quota import arithmetic

TTL_SECONDS = 10.0
"""How long a reservation lasts after its holder last wrote it."""
MARGIN_SECONDS = 3.0
"""Its holder stops admitting from it this long before it lapses (clock drift, slow writes)."""
COMMIT_SECONDS = 0.05
"""How late, at most, a charge admitted from memory is written into `used`."""
IDLE_SECONDS = 2.0
"""A reservation nothing was admitted from for this long is given back."""


def held(used: QuotaAmounts, reservations: Mapping[str, QuotaReservation]) -> QuotaAmounts:
    """What counts against `spec.hard`: the usage and every reservation."""
    total = used
    for r in reservations.values():
        total = arithmetic.add(total, r.amount)
    return total


SETTLE_SECONDS = TTL_SECONDS + arithmetic.CHARGE_SETTLE_SECONDS
"""How long a recount must have seen a reservation unchanged before it may drop it."""


class Observer:
    """When a recounter first saw each reservation as it is now (its own monotonic clock)."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], tuple[int, float]] = {}

    def unsettled(
        self, namespace: str, found: Mapping[str, QuotaReservation], now: float
    ) -> list[str]:
        """The holders in `found` whose reservation may still cover unwritten charges."""
        out = []
        for holder, r in found.items():
            seen = self._seen.get((namespace, holder))
            if seen is None or seen[0] != r.seq:
                self._seen[(namespace, holder)] = seen = (r.seq, now)
            if now - seen[1] < SETTLE_SECONDS:
                out.append(holder)
        for key in [k for k in self._seen if k[0] == namespace and k[1] not in found]:
            del self._seen[key]
        return out


def limited(amount: QuotaAmounts, hard: QuotaAmounts) -> QuotaAmounts:
    """`amount` in the resources `hard` limits only (the rest unset). Read as limits, which is
    how the holder checks a charge against what it holds (`arithmetic.exceeded`), an unset
    resource is one the reservation need not cover."""

    def keep(value: int | None, limit: int | None) -> int | None:
        return None if limit is None else max(0, value or 0)

    memory = None
    if hard.memory is not None:
        memory = amount.memory if amount.memory is not None else Quantity("0")
        memory = memory if memory.value > 0 else Quantity("0")
    return QuotaAmounts(
        vms=keep(amount.vms, hard.vms),
        vcpus=keep(amount.vcpus, hard.vcpus),
        memory=memory,
        gpus=keep(amount.gpus, hard.gpus),
        flavors={f: max(0, amount.flavors.get(f, 0)) for f in hard.flavors},
    )


def times(charge: QuotaAmounts, n: int) -> QuotaAmounts:
    """`n` charges."""
    return QuotaAmounts(
        vms=(charge.vms or 0) * n,
        vcpus=(charge.vcpus or 0) * n,
        memory=(charge.memory or Quantity("0")) * n,
        gpus=(charge.gpus or 0) * n,
        flavors={f: k * n for f, k in charge.flavors.items() if k * n > 0},
    )


def fits(remaining: QuotaAmounts, charge: QuotaAmounts) -> bool:
    """Whether `charge` fits in what a reservation has left (`limited` form)."""
    return not arithmetic.exceeded(remaining, arithmetic.zero(), charge)


@dataclass(frozen=True)
class Grant:
    charges: int
    """How many more of the charge the reservation now covers."""
    amount: QuotaAmounts
    """The reservation after it (`limited` form)."""


def grant(
    hard: QuotaAmounts,
    held_now: QuotaAmounts,
    remaining: QuotaAmounts,
    charge: QuotaAmounts,
    size: int,
) -> Grant:
    """Top a reservation with `remaining` left up to `size` of `charge`, as far as `spec.hard`
    allows on top of `held_now` (which includes `remaining`), and never more than half the
    room left: near the limit reservations dwindle, so that another replica, deciding on its
    own, is not refused for room that one holds unused. Never shrinks it: what is left may be
    being admitted from as this is written."""
    cap = limited(times(charge, size), hard)

    def allows(n: int) -> bool:
        more = times(charge, n)
        half = not arithmetic.exceeded(hard, held_now, times(charge, 2 * n))
        return half and not arithmetic.exceeded(cap, remaining, more)

    lo, hi = 0, size
    while lo < hi:  # the largest n that `allows`; it is monotone in n
        mid = (lo + hi + 1) // 2
        if allows(mid):
            lo = mid
        else:
            hi = mid - 1
    amount = limited(arithmetic.add(remaining, times(charge, lo)), hard)
    return Grant(lo, amount)


def covers_nothing(amount: QuotaAmounts) -> bool:
    """An entry that holds no room: a receipt, whose `seq` only tells whether its holder's
    last write landed (a reservation used up is one too, until topped up)."""
    memory = amount.memory is not None and amount.memory.value > 0
    return not (amount.vms or amount.vcpus or amount.gpus or memory or any(amount.flavors.values()))


def holding(entries: Mapping[str, QuotaReservation]) -> bool:
    """Whether any of `entries` holds room."""
    return any(not covers_nothing(r.amount) for r in entries.values())


def entry(amount: QuotaAmounts, now: float, seq: int) -> QuotaReservation:
    return QuotaReservation(
        amount=amount, renew_time=dt.datetime.fromtimestamp(now, dt.UTC), seq=seq
    )


def parse(status: Mapping[str, object]) -> dict[str, QuotaReservation]:
    raw = status.get("reservations") or {}
    assert isinstance(raw, Mapping), "status.reservations is an object (the CRD's schema)"
    return {str(k): QuotaReservation.model_validate(v) for k, v in raw.items()}


def to_status(reservations: Mapping[str, QuotaReservation]) -> dict[str, object]:
    return {k: r.to_dict() for k, r in sorted(reservations.items())}
