from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubenova.api import constants
from kubenova.api.flavor import Flavor
from kubenova.api.quantity import Quantity
from kubenova.api.quota import QuotaAmounts
from kubenova.quota import arithmetic
from tests.unit.webhooks.builders import amounts, make_flavor, make_vm

pytestmark = pytest.mark.unit

FLAVORS = ["small", "large", "gpu"]


@st.composite
def usages(draw: st.DrawFn) -> QuotaAmounts:
    return QuotaAmounts(
        vms=draw(st.integers(0, 500)),
        vcpus=draw(st.integers(0, 5000)),
        memory=Quantity.from_value(draw(st.integers(0, 2**20)) * 1024**2),
        gpus=draw(st.integers(0, 64)),
        flavors={f: n for f in FLAVORS if (n := draw(st.integers(0, 50)))},
    )


@st.composite
def charges(draw: st.DrawFn) -> QuotaAmounts:
    flavor = make_flavor(
        draw(st.sampled_from(FLAVORS)),
        vcpus=draw(st.integers(1, 64)),
        memory=f"{draw(st.integers(1, 256))}Gi",
        gpus={"a100": draw(st.integers(1, 4))} if draw(st.booleans()) else None,
    )
    return arithmetic.charge_for(flavor.metadata.name, arithmetic.resources_of(flavor))


class TestArithmetic:
    @given(usages(), charges())
    def test_release_undoes_charge(self, used: QuotaAmounts, charge: QuotaAmounts) -> None:
        assert arithmetic.subtract(arithmetic.add(used, charge), charge) == used

    @given(usages(), usages())
    def test_subtract_never_goes_negative(self, a: QuotaAmounts, b: QuotaAmounts) -> None:
        out = arithmetic.subtract(a, b)
        assert min(out.vms or 0, out.vcpus or 0, out.gpus or 0) >= 0
        assert out.memory is not None and out.memory.value >= 0
        assert all(n > 0 for n in out.flavors.values())

    def test_a_charge_is_one_vm_of_its_size(self) -> None:
        f = make_flavor("gpu", vcpus=16, memory="128Gi", gpus={"a100": 2})
        c = arithmetic.charge_for("gpu", arithmetic.resources_of(f))
        assert (c.vms, c.vcpus, str(c.memory), c.gpus, c.flavors) == (1, 16, "128Gi", 2, {"gpu": 1})

    @given(charges())
    def test_the_recorded_charge_reads_back(self, charge: QuotaAmounts) -> None:
        assert arithmetic.parse_charge(arithmetic.format_charge(charge)) == charge

    @pytest.mark.parametrize("text", ["", "not json", '{"vms": -1}', '{"cpus": 2}'])
    def test_a_garbled_record_is_no_charge(self, text: str) -> None:
        assert arithmetic.parse_charge(text) is None


class TestExceeded:
    @given(usages(), charges(), usages())
    def test_denied_exactly_when_a_requested_resource_would_pass_its_limit(
        self, used: QuotaAmounts, charge: QuotaAmounts, hard: QuotaAmounts
    ) -> None:
        over = {x.resource for x in arithmetic.exceeded(hard, used, charge)}
        total = arithmetic.add(used, charge)
        expected = set()
        for name in ("vms", "vcpus", "gpus"):
            if getattr(charge, name) and getattr(total, name) > getattr(hard, name):
                expected.add(name)
        assert hard.memory is not None and total.memory is not None
        if total.memory.value > hard.memory.value:
            expected.add("memory")
        for f, n in total.flavors.items():
            if f in charge.flavors and f in hard.flavors and n > hard.flavors[f]:
                expected.add(f"flavors[{f}]")
        assert over == expected

    def test_an_unset_limit_is_no_limit(self) -> None:
        charge = amounts(vms=1, vcpus=1000, memory="1Ti", gpus=8, flavors={"x": 1})
        assert arithmetic.exceeded(amounts(vms=5), arithmetic.zero(), charge) == []

    def test_a_resource_not_asked_for_never_denies(self) -> None:
        used = amounts(vms=1, gpus=9)
        charge = amounts(vms=1, vcpus=1, memory="1Gi", gpus=0)
        assert arithmetic.exceeded(amounts(vms=5, gpus=2), used, charge) == []

    def test_the_denial_names_the_limit_the_usage_and_the_request(self) -> None:
        (x,) = arithmetic.exceeded(
            amounts(memory="8Gi"), amounts(memory="6Gi"), amounts(vms=1, memory="4Gi")
        )
        assert str(x) == "memory: requested 4Gi, used 6Gi, limited to 8Gi"


class TestRecount:
    def test_counts_live_vms_and_deleting_ones_not_yet_released(self) -> None:
        flavors = {"small": make_flavor("small", vcpus=1, memory="1Gi")}
        held = [constants.QUOTA_FINALIZER]
        vms = [
            make_vm("a"),
            make_vm("b", deleting=True, finalizers=held),
            make_vm("gone", deleting=True),
        ]
        used = arithmetic.recount(vms, flavors)
        assert (used.vms, used.vcpus, str(used.memory), used.flavors) == (2, 2, "2Gi", {"small": 2})

    def test_prefers_the_recorded_charge_then_resources_then_the_flavor(self) -> None:
        flavors = {"small": make_flavor("small", vcpus=1, memory="1Gi")}
        recorded = arithmetic.format_charge(amounts(vms=1, vcpus=7, memory="7Gi", gpus=0))
        vms = [
            make_vm("a", annotations={constants.ANNOTATION_QUOTA_CHARGED: recorded}),
            make_vm("b", resources={"vcpus": 3, "memory": "3Gi", "disk": "1Gi"}),
            make_vm("c"),
            make_vm("d", flavor="deleted-flavor"),
        ]
        used = arithmetic.recount(vms, flavors)
        assert (used.vms, used.vcpus, str(used.memory)) == (4, 11, "11Gi")
        assert used.flavors == {"small": 2, "deleted-flavor": 1}

    def test_an_empty_namespace_uses_nothing(self) -> None:
        assert arithmetic.recount([], {}) == arithmetic.zero()


class TestBatch:
    @given(usages(), usages(), st.lists(st.tuples(charges(), st.booleans()), max_size=30))
    def test_a_batch_admits_in_order_and_never_passes_a_limit_it_charges(
        self, hard: QuotaAmounts, used: QuotaAmounts, asks: list[tuple[QuotaAmounts, bool]]
    ) -> None:
        requests = [arithmetic.Request(a, dry) for a, dry in asks]
        decisions, total = arithmetic.decide_batch(hard, used, requests)
        running = used
        for r, over in zip(requests, decisions, strict=True):
            assert over == arithmetic.exceeded(hard, running, r.amount)
            if not over and not r.dry_run:
                running = arithmetic.add(running, r.amount)
        assert total == running

    def test_room_for_ten_admits_the_first_ten(self) -> None:
        one = amounts(vms=1, vcpus=1, memory="1Gi", gpus=0, flavors={"small": 1})
        requests = [arithmetic.Request(one, dry_run=(i == 0)) for i in range(100)]
        decisions, total = arithmetic.decide_batch(amounts(vms=10), arithmetic.zero(), requests)
        assert [not d for d in decisions] == [True] * 11 + [False] * 89, "a dry run takes no room"
        assert total.vms == 10
        assert str(decisions[-1][0]) == "vms: requested 1, used 10, limited to 10"


class TestRecountedUsage:
    """A recount lowers no usage while a charge may still be unstored, and heals after."""

    @given(counted=usages(), used=usages(), age=st.floats(0, arithmetic.CHARGE_SETTLE_SECONDS))
    def test_within_the_settle_time_nothing_is_lowered(
        self, counted: QuotaAmounts, used: QuotaAmounts, age: float
    ) -> None:
        out = arithmetic.recounted_usage(counted, used, 1000.0, 1000.0 + age * 0.999)
        for base in (counted, used):
            assert arithmetic.subtract(base, out) == arithmetic.zero()

    @given(counted=usages(), used=usages())
    def test_after_it_or_with_no_charge_the_count_stands(
        self, counted: QuotaAmounts, used: QuotaAmounts
    ) -> None:
        late = 1000.0 + arithmetic.CHARGE_SETTLE_SECONDS
        assert arithmetic.recounted_usage(counted, used, 1000.0, late) == counted
        assert arithmetic.recounted_usage(counted, used, None, 1000.0) == counted


def _stored(name: str, uid: str, rv: str, vcpus: int, memory: str = "4Gi") -> Flavor:
    """A flavor as the API server returns it (uid and resourceVersion set)."""
    flavor = make_flavor(name, vcpus=vcpus, memory=memory)
    flavor.metadata.uid, flavor.metadata.resource_version = uid, rv
    return flavor


class TestPrice:
    @given(charges())
    def test_a_price_is_what_the_separate_functions_compute(self, charge: QuotaAmounts) -> None:
        name = next(iter(charge.flavors))
        flavor = make_flavor(name, vcpus=charge.vcpus or 1, memory=str(charge.memory))
        p = arithmetic.price(flavor)
        assert p.resources == arithmetic.resources_of(flavor)
        assert p.charge == arithmetic.charge_of(flavor)
        assert p.charge_text == arithmetic.format_charge(arithmetic.charge_of(flavor))
        assert p.error is None

    def test_a_new_version_of_a_flavor_gets_a_new_price(self) -> None:
        before = arithmetic.price(_stored("p-resized", "u-1", "10", vcpus=2))
        after = arithmetic.price(_stored("p-resized", "u-1", "11", vcpus=8))
        assert (before.charge.vcpus, after.charge.vcpus) == (2, 8)
        recreated = arithmetic.price(_stored("p-resized", "u-2", "10", vcpus=4))
        assert recreated.charge.vcpus == 4, "a flavor deleted and created again is another uid"

    def test_flavors_not_from_the_api_server_are_priced_afresh(self) -> None:
        assert arithmetic.price(make_flavor("p-unstored", vcpus=2)).charge.vcpus == 2
        assert arithmetic.price(make_flavor("p-unstored", vcpus=6)).charge.vcpus == 6

    def test_an_out_of_bounds_flavor_is_priced_with_the_reason(self) -> None:
        p = arithmetic.price(_stored("p-huge", "u-3", "1", vcpus=2, memory="65Ti"))
        assert p.error is not None and "spec.memory" in p.error
        with pytest.raises(arithmetic.ChargeError, match=r"spec\.memory"):
            arithmetic.charge_of(_stored("p-huge", "u-3", "1", vcpus=2, memory="65Ti"))
