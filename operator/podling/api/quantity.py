"""Kubernetes resource quantities (``500m``, ``1.5``, ``128Mi``, ``1e3``) as exact numbers.

Invariant: a :class:`Quantity` is an exact rational value (never a float) at most nanounit
precise, plus the notation it was written in; ``str`` gives Kubernetes' canonical form, so
``parse_quantity(str(q)) == q`` and the same value always prints the same way.

The grammar and canonical form are those of k8s.io/apimachinery/pkg/api/resource:

* a signed decimal number, then a binary suffix (``Ki Mi Gi Ti Pi Ei``), a decimal one
  (``n u m k M G T P E``) or a decimal exponent (``e3``, ``E-2``); ``1E`` is an exa, ``1E3`` is
  a thousand. Finer than ``1n`` is rounded up (away from zero).
* canonical text keeps the notation family: binary values print with the largest binary
  suffix that keeps an integer (``1.5Gi`` is ``1536Mi``), but a binary value that is not an
  integer, or is under 1024, prints in decimal (``0.5Ki`` is ``512``); decimal values print an
  integer with an exponent that is a multiple of three (``0.1`` is ``100m``, ``1000`` is ``1k``).
* ``cpu_millis`` and ``bytes_`` round up, as Kubernetes' ``MilliValue`` and ``Value`` do.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from decimal import Decimal
from fractions import Fraction
from typing import Literal

Notation = Literal["DecimalSI", "BinarySI", "DecimalExponent"]

_BINARY = ("", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei")
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_DECIMAL_SUFFIX = {exponent: suffix for suffix, exponent in _DECIMAL.items()}
_PATTERN = re.compile(
    r"(?P<number>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
    r"(?:[eE](?P<exponent>[+-]?[0-9]+)|(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])?)"
)
_MAX_EXPONENT = 1000  # far past any real quantity; keeps "1e999999999" from eating the server
_NANO = 10**9


@functools.total_ordering
@dataclasses.dataclass(frozen=True, eq=False, slots=True)
class Quantity:
    """An exact amount; equality and order compare the value only (``1Ki == 1024``)."""

    value: Fraction
    notation: Notation = "DecimalSI"

    def __eq__(self, other: object) -> bool:
        return self.value == other.value if isinstance(other, Quantity) else NotImplemented

    def __lt__(self, other: Quantity) -> bool:
        return self.value < other.value if isinstance(other, Quantity) else NotImplemented

    def __hash__(self) -> int:
        return hash(self.value)

    def __add__(self, other: Quantity) -> Quantity:
        """The sum, in this quantity's notation (or the other's, if this one is zero, as Kubernetes)."""
        if not isinstance(other, Quantity):
            return NotImplemented
        return Quantity(self.value + other.value, self.notation if self.value else other.notation)

    def __sub__(self, other: Quantity) -> Quantity:
        if not isinstance(other, Quantity):
            return NotImplemented
        return self + Quantity(-other.value, other.notation)

    def __str__(self) -> str:
        if not self.value:
            return "0"
        sign, amount = ("-" if self.value < 0 else ""), abs(self.value)
        if self.notation == "BinarySI" and amount >= 1024 and amount.denominator == 1:
            mantissa, power = int(amount), 0
            while mantissa % 1024 == 0 and power < len(_BINARY) - 1:
                mantissa, power = mantissa // 1024, power + 1
            return f"{sign}{mantissa}{_BINARY[power]}"
        mantissa, exponent = int(amount * _NANO), -9  # exact: values are whole nanounits
        while mantissa % 10 == 0:
            mantissa, exponent = mantissa // 10, exponent + 1
        mantissa, exponent = mantissa * 10 ** (exponent % 3), exponent - exponent % 3
        if self.notation == "DecimalExponent":
            suffix = f"e{exponent}" if exponent else ""
        else:
            suffix = _DECIMAL_SUFFIX.get(exponent, f"e{exponent}")
        return f"{sign}{mantissa}{suffix}"


ZERO = Quantity(Fraction(0))
QuantityLike = Quantity | str | int | float


def parse_quantity(text: QuantityLike) -> Quantity:
    """The quantity ``text`` spells; JSON numbers are accepted as Kubernetes accepts them."""
    if isinstance(text, Quantity):
        return text
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise ValueError(f"invalid quantity {text!r}: not a string or a number")
    match = _PATTERN.fullmatch(str(text))
    if match is None:
        raise ValueError(
            f"invalid quantity {text!r}: want a number with an optional suffix (n u m k M G T P E, "
            "Ki Mi Gi Ti Pi Ei) or exponent (e3), such as 500m, 1.5, 128Mi or 1e3"
        )
    number, exponent, suffix = match["number"], match["exponent"], match["suffix"] or ""
    value = Fraction(Decimal(number))
    if exponent is not None:
        if abs(int(exponent)) > _MAX_EXPONENT:
            raise ValueError(f"invalid quantity {text!r}: exponent out of range")
        value *= Fraction(10) ** int(exponent)
        notation: Notation = "DecimalExponent"
    elif suffix in _DECIMAL:
        value *= Fraction(10) ** _DECIMAL[suffix]
        notation = "DecimalSI"
    else:
        value *= 1024 ** _BINARY.index(suffix)
        notation = "BinarySI"
    nanos = math.ceil(abs(value) * _NANO)
    return Quantity(Fraction(nanos if value >= 0 else -nanos, _NANO), notation)


def cpu_millis(quantity: QuantityLike) -> int:
    """The quantity in thousandths, rounded up: ``cpu_millis("0.1") == 100``."""
    return math.ceil(parse_quantity(quantity).value * 1000)


def bytes_(quantity: QuantityLike) -> int:
    """The quantity as a whole number, rounded up: ``bytes_("1Ki") == 1024``."""
    return math.ceil(parse_quantity(quantity).value)
