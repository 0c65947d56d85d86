"""Unit and property tests for Decimal parsing and rounding (the one place that rounds)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cryptoj.errors import InvalidValue
from cryptoj.model.money import (
    ZERO,
    Side,
    is_on_increment,
    parse_decimal,
    parse_optional_decimal,
    round_price,
    round_size,
    round_to_increment,
)

pytestmark = pytest.mark.unit

D = Decimal


def test_side_opposite_and_sign() -> None:
    assert Side.BUY.opposite is Side.SELL and Side.SELL.opposite is Side.BUY
    assert Side.BUY.sign == 1 and Side.SELL.sign == -1
    assert Side("BUY") is Side.BUY


# -- parsing ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("21921.74", D("21921.74")),
        (" 0.00000001 ", D("0.00000001")),
        ("1e-8", D("1e-8")),
        ("0", ZERO),
        (7, D(7)),
        (D("1.50"), D("1.50")),
    ],
)
def test_parse_decimal_accepts_exchange_numbers(raw: object, expected: Decimal) -> None:
    result = parse_decimal(raw)
    assert result == expected
    assert isinstance(result, Decimal)


def test_parse_decimal_keeps_every_digit() -> None:
    text = "123456789.123456789012345678"
    assert str(parse_decimal(text)) == text


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (1.5, "floats are not accepted"),
        (True, "not a boolean"),
        ("", "empty string"),
        ("   ", "empty string"),
        ("abc", "not a decimal number"),
        ("1,5", "not a decimal number"),
        ("NaN", "must be finite"),
        ("-Infinity", "must be finite"),
        (D("sNaN"), "must be finite"),
        ("-1", "must not be negative"),
        (None, "got NoneType"),
        ([1], "got list"),
    ],
)
def test_parse_decimal_rejects_bad_input_naming_the_field(raw: object, reason: str) -> None:
    with pytest.raises(InvalidValue, match=reason) as info:
        parse_decimal(raw, "order.limit_price")
    assert info.value.field == "order.limit_price"
    assert str(info.value).startswith("order.limit_price: ")


def test_parse_decimal_allow_negative() -> None:
    assert parse_decimal("-2.5", "pnl", allow_negative=True) == D("-2.5")


def test_parse_optional_decimal() -> None:
    assert parse_optional_decimal(None) is None
    assert parse_optional_decimal("") is None
    assert parse_optional_decimal("3.25") == D("3.25")
    assert parse_optional_decimal("-1", allow_negative=True) == D("-1")
    with pytest.raises(InvalidValue, match="x: not a decimal number"):
        parse_optional_decimal("zz", "x")


# -- rounding ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "increment", "up", "expected"),
    [
        (D("1.234"), D("0.01"), False, "1.23"),
        (D("1.234"), D("0.01"), True, "1.24"),
        (D("1.23"), D("0.01"), True, "1.23"),
        (D("1.2"), D("0.01"), False, "1.20"),  # carries the increment's exponent
        (D("7"), D("0.00000001"), False, "7.00000000"),
        (D("123"), D("10"), False, "120"),
        (D("123"), D("10"), True, "130"),
        (D("1.3"), D("0.5"), False, "1.0"),
        (D("1.3"), D("0.5"), True, "1.5"),
        (D("2.9"), D("1"), False, "2"),
        (D("0.004"), D("0.01"), False, "0.00"),
        (D("-1.234"), D("0.01"), False, "-1.24"),
        (D("-1.234"), D("0.01"), True, "-1.23"),
        (D("1E+3"), D("0.01"), False, "1000.00"),
    ],
)
def test_round_to_increment(value: Decimal, increment: Decimal, up: bool, expected: str) -> None:
    assert str(round_to_increment(value, increment, up=up)) == expected


@pytest.mark.parametrize("increment", [D("0"), D("-0.01"), D("NaN"), D("Infinity")])
def test_bad_increment_raises(increment: Decimal) -> None:
    with pytest.raises(InvalidValue, match="increment"):
        round_to_increment(D("1"), increment, up=False)
    with pytest.raises(InvalidValue, match="increment"):
        is_on_increment(D("1"), increment)


@pytest.mark.parametrize("value", [D("NaN"), D("Infinity"), D("-Infinity"), 1.5])
def test_non_finite_or_float_value_raises(value: Decimal) -> None:
    with pytest.raises(InvalidValue, match="value: must be a finite Decimal"):
        round_size(value, D("0.01"))
    with pytest.raises(InvalidValue, match="value: must be a finite Decimal"):
        is_on_increment(value, D("0.01"))


def test_float_increment_raises() -> None:
    with pytest.raises(InvalidValue, match="increment"):
        round_size(D("1"), 0.01)  # type: ignore[arg-type]


def test_round_size_is_down_and_round_price_is_passive() -> None:
    assert round_size(D("0.123456789"), D("0.00000001")) == D("0.12345678")
    assert round_price(D("100.129"), D("0.01"), Side.BUY) == D("100.12")  # a buy never pays more
    assert round_price(D("100.121"), D("0.01"), Side.SELL) == D("100.13")  # a sell never asks less
    assert round_price(D("100.12"), D("0.01"), Side.SELL) == D("100.12")


def test_is_on_increment() -> None:
    assert is_on_increment(D("1.25"), D("0.05"))
    assert not is_on_increment(D("1.26"), D("0.05"))
    assert is_on_increment(D("0"), D("0.01"))
    assert is_on_increment(D("120"), D("10"))


def test_rounding_large_values_with_tiny_increments_is_exact() -> None:
    # 30 significant digits: more than the default 28-digit Decimal context holds
    value = D("12345678901234567890.1234567891")
    assert round_size(value, D("0.00000001")) == D("12345678901234567890.12345678")
    assert round_price(value, D("0.00000001"), Side.SELL) == D("12345678901234567890.12345679")
    assert is_on_increment(D("12345678901234567890.12345678"), D("0.00000001"))
    assert not is_on_increment(value, D("0.00000001"))


# -- properties -------------------------------------------------------------------

increments = st.sampled_from([D("1"), D("10"), D("0.5"), D("0.25"), D("0.01"), D("0.00001"), D("0.00000001"), D("1E-12")])
values = st.decimals(min_value=D("0"), max_value=D("1e9"), allow_nan=False, allow_infinity=False, places=12)


@settings(max_examples=400, deadline=None)
@given(values, increments)
def test_property_round_size_never_above_input_and_on_increment(value: Decimal, increment: Decimal) -> None:
    result = round_size(value, increment)
    assert result <= value
    assert value - result < increment
    assert is_on_increment(result, increment)
    assert round_size(result, increment) == result  # idempotent


@settings(max_examples=400, deadline=None)
@given(values, increments, st.sampled_from([Side.BUY, Side.SELL]))
def test_property_round_price_toward_passive_side(value: Decimal, increment: Decimal, side: Side) -> None:
    result = round_price(value, increment, side)
    assert is_on_increment(result, increment)
    assert abs(result - value) < increment
    if side is Side.BUY:
        assert result <= value
    else:
        assert result >= value
    assert round_price(result, increment, side) == result


@settings(max_examples=200, deadline=None)
@given(st.decimals(allow_nan=False, allow_infinity=False, places=8, min_value=D("-1e12"), max_value=D("1e12")))
def test_property_parse_round_trips_its_own_string(value: Decimal) -> None:
    assert parse_decimal(str(value), allow_negative=True) == value


def _reference_round(value: Decimal, increment: Decimal, up: bool) -> Decimal:
    """The rounding rule written plainly (a context copied per call, wide enough): what the fast paths must equal."""
    from decimal import Inexact, getcontext, localcontext

    ctx = getcontext().copy()
    ctx.prec = 200  # plenty for every value the test draws
    ctx.traps[Inexact] = True
    with localcontext(ctx):
        steps, remainder = divmod(value, increment)
        if up and remainder > 0:
            steps += 1
        elif not up and remainder < 0:
            steps -= 1
        normal = increment.normalize().as_tuple().exponent
        assert isinstance(normal, int)
        return (steps * increment).quantize(D(1).scaleb(min(normal, 0)))


@settings(max_examples=600, deadline=None)
@given(
    st.decimals(allow_nan=False, allow_infinity=False, min_value=D("-1e30"), max_value=D("1e30"), places=20),
    st.sampled_from(
        [D("0.01"), D("0.010"), D("1"), D("10"), D("1E+1"), D("0.5"), D("0.25"), D("0.0005"), D("0.01000000000"), D("1E-20")]
    ),
    st.booleans(),
)
def test_property_rounding_fast_paths_equal_the_plain_rule(value: Decimal, increment: Decimal, up: bool) -> None:
    # held contexts and a cached increment (quantize for 1, 0.1, 0.01, ...): same value, same exponent, same sign of zero
    expected = _reference_round(value, increment, up)
    result = round_to_increment(value, increment, up=up)
    assert str(result) == str(expected)
    assert is_on_increment(value, increment) == (result == value)  # on the increment: rounding leaves it alone


def test_signalling_nan_increment_raises_invalid_value() -> None:
    with pytest.raises(InvalidValue, match="increment"):
        round_size(D("1"), D("sNaN"))
    with pytest.raises(InvalidValue, match="increment"):
        is_on_increment(D("1"), D("sNaN"))


def test_int_increment_still_refused_after_an_equal_decimal_was_cached() -> None:
    assert round_size(D("1.5"), D("1")) == D("1")
    with pytest.raises(InvalidValue, match="increment"):
        round_size(D("1.5"), 1)  # type: ignore[arg-type]
