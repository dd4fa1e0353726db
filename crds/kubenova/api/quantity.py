"""Kubernetes resource quantities (`4Gi`, `500m`, `1.5`, `2e3`), exact. Pure.

A `Quantity` keeps the text the user wrote (so `str(q)` prints it back unchanged, as the API
server stores a CRD's strings) and its exact value as a `Decimal`. Arithmetic results are
printed in the shortest exact form Kubernetes would use: binary suffixes when the value is a
multiple of 1024, decimal ones otherwise, milli-units for fractions.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}

# The grammar of k8s.io/apimachinery/pkg/api/resource: sign, digits with an optional fraction,
# then a binary suffix, a decimal suffix, or a decimal exponent -- here of at most two digits,
# because a long exponent is where parsing and printing cost time (`1e999999` took ~30 s of
# CPU to print as an integer) and `1e9999999999` overflows the decimal context.
_PATTERN = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)(([KMGTPE]i)|[numkMGTPE]|[eE][+-]?[0-9]{1,2})?$"
_RE = re.compile(_PATTERN)

MAX_LENGTH = 64
"""Longest quantity text accepted (Kubernetes' own quantities are far shorter)."""
MAX_MAGNITUDE = Decimal(2**63 - 1)
"""Largest absolute value: Kubernetes' `Value()` is an int64, so nothing real is larger."""


class QuantityError(ValueError):
    """A string that is not a Kubernetes quantity."""


class Quantity:
    """An exact Kubernetes quantity. Immutable; compares and hashes by value."""

    __slots__ = ("_text", "_value")
    PATTERN: ClassVar[str] = _PATTERN

    def __init__(self, text: str | int) -> None:
        if isinstance(text, bool):
            raise QuantityError(f"{text!r} is not a quantity")
        if isinstance(text, int):
            if abs(text) > MAX_MAGNITUDE:
                raise QuantityError(f"{text} is too large a quantity: at most {MAX_MAGNITUDE}")
            self._text = str(text)
            self._value = Decimal(text)
            return
        s = text.strip()
        if len(s) > MAX_LENGTH:
            raise QuantityError(
                f"{s[:16]!r}... ({len(s)} characters) is not a quantity: at most {MAX_LENGTH} "
                "characters, such as 512Mi, 4Gi, 500m or 2"
            )
        if not _RE.match(s):
            raise QuantityError(
                f"{text!r} is not a quantity: write a number with an optional suffix "
                "such as 512Mi, 4Gi, 500m or 2 (an exponent, as in 2e9, has at most two digits)"
            )
        value = _parse(s)
        if abs(value) > MAX_MAGNITUDE:
            raise QuantityError(
                f"{text!r} is too large a quantity: at most {MAX_MAGNITUDE} (about 8Ei)"
            )
        self._text = s
        self._value = value

    @classmethod
    def from_value(cls, value: Decimal | int, binary: bool = True) -> Quantity:
        """The shortest exact text for `value` (binary suffixes first when `binary`)."""
        return cls(_format(Decimal(value), binary))

    @property
    def value(self) -> Decimal:
        return self._value

    def to_int(self) -> int:
        """The value rounded up to a whole unit, as Kubernetes' `Value()` does."""
        integral = self._value.to_integral_value(rounding="ROUND_CEILING")
        return int(integral)

    def to_milli(self) -> int:
        """The value in thousandths, rounded up (`MilliValue()`)."""
        return int((self._value * 1000).to_integral_value(rounding="ROUND_CEILING"))

    def __str__(self) -> str:
        return self._text

    def __repr__(self) -> str:
        return f"Quantity({self._text!r})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Quantity):
            return self._value == other._value
        return NotImplemented

    def __lt__(self, other: Quantity) -> bool:
        return self._value < other._value

    def __le__(self, other: Quantity) -> bool:
        return self._value <= other._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __add__(self, other: Quantity) -> Quantity:
        return Quantity.from_value(self._value + other._value, _is_binary(self))

    def __sub__(self, other: Quantity) -> Quantity:
        return Quantity.from_value(self._value - other._value, _is_binary(self))

    def __mul__(self, factor: int) -> Quantity:
        return Quantity.from_value(self._value * factor, _is_binary(self))

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: type[Any], handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        def validate(v: Any) -> Quantity:
            if isinstance(v, Quantity):
                return v
            if isinstance(v, str | int) and not isinstance(v, bool):
                return Quantity(v)
            raise QuantityError(f"{v!r} is not a quantity: give a string such as 4Gi or 500m")

        return core_schema.no_info_plain_validator_function(
            validate,
            serialization=core_schema.plain_serializer_function_ser_schema(str),
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        # The form Kubernetes uses for quantities in its own OpenAPI.
        return {
            "anyOf": [
                {"type": "integer"},
                {"type": "string", "pattern": _PATTERN, "maxLength": MAX_LENGTH},
            ],
            "x-kubernetes-int-or-string": True,
        }


def _is_binary(q: Quantity) -> bool:
    # Sums of byte sizes print in binary units; sums of CPUs or milli-units in decimal ones.
    text = str(q)
    return text.endswith("i") or text.isdigit()


def _parse(s: str) -> Decimal:
    m = re.match(r"^([+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+))(.*)$", s)
    if m is None:  # pragma: no cover - _RE matched already
        raise QuantityError(s)
    number, suffix = m.group(1), m.group(2)
    try:
        base = Decimal(number)
    except InvalidOperation as e:  # pragma: no cover - the pattern rules this out
        raise QuantityError(s) from e
    if suffix in _BINARY:
        return base * (Decimal(1024) ** _BINARY[suffix])
    if suffix in _DECIMAL:
        return base.scaleb(_DECIMAL[suffix])
    return base.scaleb(int(suffix[1:]))


def _format(value: Decimal, binary: bool) -> str:
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    v = abs(value)
    if v == v.to_integral_value():
        n = int(v)
        if binary:
            for suffix, power in sorted(_BINARY.items(), key=lambda kv: -kv[1]):
                unit = 1024**power
                if n % unit == 0:
                    return f"{sign}{n // unit}{suffix}"
        for suffix, power in sorted(_DECIMAL.items(), key=lambda kv: -kv[1]):
            if power <= 0:
                break
            unit = 10**power
            if n % unit == 0:
                return f"{sign}{n // unit}{suffix}"
        return f"{sign}{n}"
    for suffix in ("m", "u", "n"):
        scaled = v.scaleb(-_DECIMAL[suffix])
        if scaled == scaled.to_integral_value():
            return f"{sign}{int(scaled)}{suffix}"
    # Below a nano-unit Kubernetes rounds up; so do we.
    return f"{sign}{int(v.scaleb(9).to_integral_value(rounding='ROUND_CEILING'))}n"
