"""Decimal helpers: parsing exchange strings and rounding to increments.

This module is *the* one place where prices and sizes are rounded. Sizes round
down (never more than asked); prices round toward the passive side for the
order's side (a buy rounds down, a sell rounds up) so rounding can never make
an order more aggressive than the caller asked.
"""

from __future__ import annotations

from decimal import Context, Decimal, Inexact, InvalidOperation, getcontext, localcontext
from enum import StrEnum
from typing import Final

from cryptoj.errors import InvalidValue

__all__ = [
    "ZERO",
    "Side",
    "is_on_increment",
    "parse_decimal",
    "parse_optional_decimal",
    "round_price",
    "round_size",
    "round_to_increment",
]

ZERO: Final = Decimal(0)


class Side(StrEnum):
    """Order / trade side, spelled as Coinbase spells it."""

    BUY = "BUY"
    SELL = "SELL"

    @property
    def opposite(self) -> Side:
        return Side.SELL if self is Side.BUY else Side.BUY

    @property
    def sign(self) -> int:
        """+1 for a buy (base increases), -1 for a sell."""
        return 1 if self is Side.BUY else -1


def parse_decimal(value: object, field: str = "value", *, allow_negative: bool = False) -> Decimal:
    """Parse an exchange number (a decimal string, an int or a Decimal) exactly.

    Floats are refused: a float has already lost the exact value. NaN, infinities,
    empty strings and (unless ``allow_negative``) negative numbers raise
    :class:`~cryptoj.errors.InvalidValue` naming ``field``.
    """
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, bool):
        raise InvalidValue(field, value, "expected a decimal number, not a boolean")
    elif isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, str):
        text = value.strip()
        if not text:
            raise InvalidValue(field, value, "empty string is not a number")
        try:
            result = Decimal(text)
        except InvalidOperation:
            raise InvalidValue(field, value, "not a decimal number") from None
    elif isinstance(value, float):
        raise InvalidValue(field, value, "floats are not accepted for money; pass the exchange's string")
    else:
        raise InvalidValue(field, value, f"expected a decimal string, got {type(value).__name__}")
    if not result.is_finite():
        raise InvalidValue(field, value, "must be finite")
    if not allow_negative and result < 0:
        raise InvalidValue(field, value, "must not be negative")
    return result


def parse_optional_decimal(value: object, field: str = "value", *, allow_negative: bool = False) -> Decimal | None:
    """Like :func:`parse_decimal`, but ``None`` and ``""`` give ``None``."""
    if value is None or value == "":
        return None
    return parse_decimal(value, field, allow_negative=allow_negative)


def _check_increment(increment: Decimal) -> None:
    if not isinstance(increment, Decimal) or not increment.is_finite() or increment <= 0:
        raise InvalidValue("increment", increment, "must be a positive finite decimal")


def _check_value(value: Decimal) -> None:
    if not isinstance(value, Decimal) or not value.is_finite():
        raise InvalidValue("value", value, "must be a finite Decimal")


def _exact_context(value: Decimal, increment: Decimal) -> Context:
    """A context precise enough that ``value // increment`` and ``value % increment`` are exact.

    The default 28 digits are not enough for, say, a 21-digit value on a
    ``1e-8`` increment; a rounded quotient could then round a size *up*.
    """
    ctx = getcontext().copy()
    exponent = increment.as_tuple().exponent
    assert isinstance(exponent, int)  # finite, checked by the caller
    ctx.prec = max(ctx.prec, max(value.adjusted(), 0) - exponent + 4)
    ctx.traps[Inexact] = True  # any rounding here would be a bug: fail loudly
    return ctx


def round_to_increment(value: Decimal, increment: Decimal, *, up: bool) -> Decimal:
    """Round ``value`` to a whole multiple of ``increment``, up (toward +inf) or down (toward -inf).

    Exact for any finite value (the arithmetic runs in a context wide enough
    for the quotient). The result carries the increment's exponent (``0.01``
    → two places), so it prints the way the exchange expects.
    """
    _check_increment(increment)
    _check_value(value)
    with localcontext(_exact_context(value, increment)):
        steps, remainder = divmod(value, increment)  # steps truncated toward zero, remainder has value's sign
        if up and remainder > 0:
            steps += 1
        elif not up and remainder < 0:
            steps -= 1
        result = steps * increment
        exponent = increment.normalize().as_tuple().exponent
        assert isinstance(exponent, int)
        return result.quantize(Decimal(1).scaleb(min(exponent, 0)))


def round_size(size: Decimal, increment: Decimal) -> Decimal:
    """Round an order size down to ``increment`` (never more than asked)."""
    return round_to_increment(size, increment, up=False)


def round_price(price: Decimal, increment: Decimal, side: Side) -> Decimal:
    """Round a price toward the passive side: buys down, sells up."""
    return round_to_increment(price, increment, up=side is Side.SELL)


def is_on_increment(value: Decimal, increment: Decimal) -> bool:
    """True when ``value`` is a whole multiple of ``increment`` (exactly, at any size)."""
    _check_increment(increment)
    _check_value(value)
    with localcontext(_exact_context(value, increment)):
        return bool((value % increment) == 0)
