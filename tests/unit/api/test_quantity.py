from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubenova.api.quantity import Quantity, QuantityError

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("4Gi", 4 * 1024**3),
        ("512Mi", 512 * 1024**2),
        ("1Ki", 1024),
        ("500m", Decimal("0.5")),
        ("1.5", Decimal("1.5")),
        ("2k", 2000),
        ("2e3", 2000),
        ("1E-3", Decimal("0.001")),
        ("0.5Gi", 512 * 1024**2),
        ("100n", Decimal("0.0000001")),
        ("+3", 3),
        ("-2M", -2_000_000),
        (".5", Decimal("0.5")),
    ],
)
def test_parses_exactly_and_prints_back(text: str, value: Decimal | int) -> None:
    q = Quantity(text)
    assert q.value == Decimal(value)
    assert str(q) == text


@pytest.mark.parametrize("text", ["", "4 gigs", "4GB", "Gi", "1.2.3", "4gi", "1e", "--1"])
def test_rejects_non_quantities_with_a_hint(text: str) -> None:
    with pytest.raises(QuantityError, match="not a quantity"):
        Quantity(text)


def test_rejects_bool_even_though_it_is_an_int() -> None:
    with pytest.raises(QuantityError):
        Quantity(True)


def test_to_int_and_milli_round_up_like_kubernetes() -> None:
    assert Quantity("1500m").to_int() == 2
    assert Quantity("1.0001").to_milli() == 1001
    assert Quantity("4Gi").to_int() == 4 * 1024**3


@pytest.mark.parametrize(
    ("a", "b", "total"),
    [
        ("1Gi", "1Gi", "2Gi"),
        ("512Mi", "512Mi", "1Gi"),
        ("1", "500m", "1500m"),
        ("1k", "24", "1024"),
    ],
)
def test_sums_print_in_the_shortest_exact_form(a: str, b: str, total: str) -> None:
    assert str(Quantity(a) + Quantity(b)) == total


def test_compares_by_value_not_text() -> None:
    assert Quantity("1Gi") == Quantity("1024Mi")
    assert Quantity("1") == Quantity("1000m")
    assert hash(Quantity("1Gi")) == hash(Quantity("1024Mi"))
    assert Quantity("1Mi") < Quantity("1Gi")


@given(st.integers(min_value=-(2**62), max_value=2**62), st.booleans())
def test_from_value_round_trips_any_integer(n: int, binary: bool) -> None:
    q = Quantity.from_value(n, binary)
    assert Quantity(str(q)).value == n


@given(st.decimals(min_value=-(10**9), max_value=10**9, places=3, allow_nan=False))
def test_from_value_round_trips_milli_values(d: Decimal) -> None:
    assert Quantity(str(Quantity.from_value(d))).value == d
