"""What each admission request gets: the mutating answer (defaults and quota marks for new
VMs) and the validating answer (rules, rate limits, then the quota charge). Does I/O through
the catalog, the quota ledger and the API client; the decisions are in the pure modules.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from kubernetes.client.exceptions import ApiException

from kubenova.api import constants
from kubenova.api.flavor import Flavor
from kubenova.api.meta import InvalidObjectError
from kubenova.api.migration import VMMigration
from kubenova.api.pool import ResourcePool
from kubenova.api.quota import VMQuota
from kubenova.api.vm import VirtualMachine
from kubenova.kube import aio, logs
from kubenova.quota import arithmetic
from kubenova.quota import metrics as quota_metrics
from kubenova.quota.ledger import MAX_ATTEMPTS, QuotaLedger
from kubenova.webhooks import (
    catalog,
    defaults,
    jsonpatch,
    ratelimit,
    review,
    rules,
    sizes,
)

log = logging.getLogger(__name__)

REASON_QUOTA_CONTENDED = "QuotaContended"


class Admission:
    """The webhook's decisions, with their dependencies passed in."""

    def __init__(
        self,
        session: aio.Session,
        cat: catalog.Catalog,
        ledger: QuotaLedger,
        limiter: ratelimit.RateLimiter,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.session = session
        self.catalog = cat
        self.ledger = ledger
        self.limiter = limiter
        self.clock = clock

    # -- mutating --------------------------------------------------------------------------

    async def mutate(self, req: review.Request) -> review.Verdict:
        if req.kind != "VirtualMachine" or req.operation != "CREATE" or req.object is None:
            return review.allow()
        try:
            vm = VirtualMachine.parse(req.object)
        except InvalidObjectError:
            return review.allow()  # the validating webhook explains what is wrong
        if not vm.metadata.namespace:
            vm.metadata.namespace = req.namespace
        flavor = await self.catalog.flavors.get(vm.spec.flavor)
        d = defaults.vm_defaults(vm, flavor, self.catalog.pools.all())
        # The server opened a trace for the request: a new id when the VM brought none.
        trace_id = logs.current_trace_id() or logs.new_trace_id()
        new = defaults.apply_vm_defaults(req.object, d, trace_id)
        patch = jsonpatch.diff(req.object, new)
        log.debug("defaulted %s", req.who, extra={"ops": len(patch), "pool": d.pool})
        return review.allow(patch)

    # -- validating ------------------------------------------------------------------------

    async def validate(self, req: review.Request) -> review.Verdict:
        handler = {
            "VirtualMachine": self._vm,
            "Flavor": self._flavor,
            "ResourcePool": self._pool,
            "VMQuota": self._quota,
            "VMMigration": self._migration,
        }.get(req.kind)
        if handler is None:
            return review.allow()
        try:
            return await handler(req)
        except InvalidObjectError as e:
            return review.deny(rules.REASON_INVALID, f"{req.who}: {'; '.join(e.problems)}")

    def _invalid(self, req: review.Request, problems: list[rules.Problem]) -> review.Verdict:
        return review.deny(rules.REASON_INVALID, rules.message(req.who, problems))

    def _rate(self, req: review.Request, op: ratelimit.Operation) -> review.Verdict | None:
        denial = self.limiter.admit(op, req.namespace, self.clock())
        if denial is None:
            return None
        return review.deny(
            constants.REASON_RATE_LIMITED,
            f"{constants.REASON_RATE_LIMITED}: {req.who}: {denial}",
            code=429,
        )

    async def _vm(self, req: review.Request) -> review.Verdict:
        too_big = sizes.metadata_problem(req.object)
        if too_big is not None:
            return self._invalid(req, [rules.Problem("metadata", too_big)])
        if req.operation == "CREATE" and req.object is not None:
            return await self._vm_create(req, VirtualMachine.parse(req.object))
        if req.operation == "UPDATE" and req.object is not None and req.old_object is not None:
            old, new = VirtualMachine.parse(req.old_object), VirtualMachine.parse(req.object)
            pool = await self.catalog.pools.get(new.spec.pool) if new.spec.pool else None
            problems = rules.vm_update(old, new) + rules.host_inputs(new, pool, old)
            if problems:
                return self._invalid(req, problems)
            if rules.spec_changed(old, new):
                limited = self._rate(req, ratelimit.Operation.UPDATE)
                if limited:
                    return limited
        return review.allow()

    async def _vm_create(self, req: review.Request, vm: VirtualMachine) -> review.Verdict:
        vm.metadata.namespace = vm.metadata.namespace or req.namespace
        flavor = await self.catalog.flavors.get(vm.spec.flavor)
        pool = await self.catalog.pools.get(vm.spec.pool) if vm.spec.pool else None
        problems = rules.vm_create(
            vm, flavor, pool, self.catalog.flavors.names(), self.catalog.pools.names()
        )
        if problems:
            return self._invalid(req, problems)
        assert flavor is not None, "vm_create reports a missing flavor"
        # The charge is what the flavor costs, never what the object says it costs: the marks
        # the mutating webhook wrote must agree with it (they are what the release subtracts).
        price = arithmetic.price(flavor)
        if price.error is not None:
            problem = rules.Problem("spec.flavor", f"{price.error}; ask an admin")
            return self._invalid(req, [problem])
        charge = price.charge
        problems = rules.quota_marks(vm, charge, price.resources, price.charge_text)
        if problems:
            return self._invalid(req, problems)
        limited = self._rate(req, ratelimit.Operation.CREATE)
        if limited:
            return limited
        result = await self.ledger.charge(req.namespace, charge, dry_run=req.dry_run)
        quota_metrics.QUOTA_CONFLICTS.inc(result.conflicts)
        if result.contended:
            return review.deny(
                REASON_QUOTA_CONTENDED,
                f"{req.who}: VMQuota {result.quota} changed {MAX_ATTEMPTS} times while "
                "it was being charged; retry the create",
                code=409,
            )
        if not result.admitted:
            log.info("quota exceeded for %s", req.who, extra={"quota": result.quota})
            return review.deny(
                constants.REASON_QUOTA_EXCEEDED,
                f"{constants.REASON_QUOTA_EXCEEDED}: {req.who}: exceeded VMQuota "
                f"{req.namespace}/{result.quota}: "
                + "; ".join(str(x) for x in result.exceeded)
                + (
                    " (some of it is held unused by other webhook replicas' reservations, "
                    "given back within seconds of their last create: retry)"
                    if result.reserved_elsewhere
                    else ""
                )
                + ". Delete VMs or ask an admin to raise spec.hard",
            )
        if result.quota is not None and not req.dry_run:
            quota_metrics.QUOTA_CHARGES.inc()
            log.debug("charged %s to VMQuota %s", req.who, result.quota)
        return review.allow()

    async def _flavor(self, req: review.Request) -> review.Verdict:
        if req.operation not in ("UPDATE", "DELETE") or req.old_object is None:
            return review.allow()
        old = Flavor.parse(req.old_object)
        new = Flavor.parse(req.object) if req.operation == "UPDATE" and req.object else None
        if new is not None and new.spec == old.spec:
            return review.allow()
        problems = rules.flavor_change(old, new, await self._flavor_users(old.metadata.name))
        return self._invalid(req, problems) if problems else review.allow()

    async def _flavor_users(self, flavor: str) -> list[str]:
        path = f"/apis/{constants.GROUP}/{constants.VERSION}/{VirtualMachine.crd.plural}"
        return [
            f"{vm['metadata']['namespace']}/{vm['metadata']['name']}"
            async for page in self.session.pages(path)
            for vm in page.get("items") or []
            if (vm.get("spec") or {}).get("flavor") == flavor
        ]

    async def _pool(self, req: review.Request) -> review.Verdict:
        if req.operation not in ("CREATE", "UPDATE") or req.object is None:
            return review.allow()
        pool = ResourcePool.parse(req.object)
        names = set(self.catalog.flavors.names())
        for r in pool.spec.reservations:
            if r.flavor not in names and await self.catalog.flavors.get(r.flavor) is not None:
                names.add(r.flavor)
        problems = rules.pool(pool, names)
        return self._invalid(req, problems) if problems else review.allow()

    async def _quota(self, req: review.Request) -> review.Verdict:
        if req.operation != "CREATE" or req.object is None:
            return review.allow()
        q = VMQuota.parse(req.object)
        plural = VMQuota.crd.plural
        path = f"/apis/{constants.GROUP}/{constants.VERSION}/namespaces/{req.namespace}/{plural}"
        listing = await self.session.call("GET", path)
        others = [item["metadata"]["name"] for item in listing.get("items", [])]
        problems = rules.quota_create(q.metadata.name, others)
        return self._invalid(req, problems) if problems else review.allow()

    async def _migration(self, req: review.Request) -> review.Verdict:
        if req.operation != "CREATE" or req.object is None:
            return review.allow()
        m = VMMigration.parse(req.object)
        try:
            path = aio.object_path(
                constants.GROUP,
                constants.VERSION,
                VirtualMachine.crd.plural,
                m.spec.vm_name,
                req.namespace,
            )
            vm: VirtualMachine | None = VirtualMachine.parse(await self.session.call("GET", path))
        except ApiException as e:
            if e.status != 404:
                raise
            vm = None
        problems = rules.migration_create(m, vm)
        if problems:
            return self._invalid(req, problems)
        # A migration moves a VM that is already charged: it is rate limited, never charged.
        return self._rate(req, ratelimit.Operation.CREATE) or review.allow()
