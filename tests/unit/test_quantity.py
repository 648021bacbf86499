"""Resource quantities: exact parsing, Kubernetes' canonical text, rounding and arithmetic.

The canonical forms were checked against ``kubectl set resources --local`` (the Go code).
"""

from __future__ import annotations

from fractions import Fraction

import pytest

from podling.api.quantity import ZERO, Quantity, bytes_, cpu_millis, parse_quantity


@pytest.mark.parametrize(
    ("text", "value", "canonical"),
    [
        ("500m", Fraction(1, 2), "500m"),
        ("1", 1, "1"),
        ("1.5", Fraction(3, 2), "1500m"),
        ("0.1", Fraction(1, 10), "100m"),
        (".5", Fraction(1, 2), "500m"),
        ("5.", 5, "5"),
        ("+1", 1, "1"),
        ("-1.5", Fraction(-3, 2), "-1500m"),
        ("1000", 1000, "1k"),
        ("2k", 2000, "2k"),
        ("1M", 10**6, "1M"),
        ("1E", 10**18, "1E"),
        ("1n", Fraction(1, 10**9), "1n"),
        ("1u", Fraction(1, 10**6), "1u"),
        ("0.0000000001", Fraction(1, 10**9), "1n"),  # finer than nano rounds up
        ("128Mi", 128 * 2**20, "128Mi"),
        ("1Gi", 2**30, "1Gi"),
        ("1024Ki", 2**20, "1Mi"),
        ("1.5Gi", 3 * 2**29, "1536Mi"),
        ("0.5Ki", 512, "512"),  # binary under 1024 prints in decimal
        ("1e3", 1000, "1e3"),
        ("1E3", 1000, "1e3"),
        ("12e6", 12 * 10**6, "12e6"),
        ("100e-3", Fraction(1, 10), "100e-3"),
        ("1e21", 10**21, "1e21"),
        ("0", 0, "0"),
        ("0Mi", 0, "0"),
        (100, 100, "100"),
        (0.25, Fraction(1, 4), "250m"),
    ],
)
def test_parse_and_canonical_form(text: str | int | float, value: Fraction | int, canonical: str) -> None:
    quantity = parse_quantity(text)
    assert quantity.value == value
    assert str(quantity) == canonical
    assert parse_quantity(str(quantity)) == quantity
    assert str(parse_quantity(str(quantity))) == canonical


@pytest.mark.parametrize(
    "text", ["", "m", "1.2.3", "1e", "1K", " 1", "1 ", "abc", "1Kib", "--1", "1e99999", True, None]
)
def test_invalid_quantities_name_the_text(text: object) -> None:
    with pytest.raises(ValueError) as caught:
        parse_quantity(text)  # type: ignore[arg-type]
    assert repr(text) in str(caught.value)


@pytest.mark.parametrize(
    ("text", "millis", "whole"),
    [("500m", 500, 1), ("1", 1000, 1), ("0.1", 100, 1), ("1n", 1, 1), ("1Ki", 1024000, 1024),
     ("128Mi", 128 * 2**20 * 1000, 128 * 2**20), ("2.5", 2500, 3), ("1500u", 2, 1)],
)
def test_rounding_up(text: str, millis: int, whole: int) -> None:
    assert cpu_millis(text) == millis
    assert bytes_(text) == whole


def test_compare_and_add() -> None:
    one_gi, half_gi = parse_quantity("1Gi"), parse_quantity("512Mi")
    assert parse_quantity("1Ki") == parse_quantity("1024")
    assert hash(parse_quantity("1Ki")) == hash(parse_quantity("1024"))
    assert parse_quantity("999m") < parse_quantity("1") <= parse_quantity("1000m") < parse_quantity("1001m")
    assert max(parse_quantity(q) for q in ("1", "1500m", "2k")) == parse_quantity("2000")
    assert str(one_gi + half_gi) == "1536Mi"
    assert str(one_gi - half_gi) == "512Mi"
    assert str(parse_quantity("1") - parse_quantity("250m")) == "750m"
    assert str(ZERO + one_gi) == "1Gi"  # a zero takes the other's notation, as in Kubernetes
    assert str(sum((parse_quantity(q) for q in ("100m", "200m", "0.7")), ZERO)) == "1"
    assert parse_quantity(one_gi) is one_gi
    assert Quantity(Fraction(3, 2)) == parse_quantity("1.5")
