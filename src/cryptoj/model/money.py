"""Decimal helpers: parsing exchange strings and rounding to increments.

This module is *the* one place where prices and sizes are rounded. Sizes round
down (never more than asked); prices round toward the passive side for the
order's side (a buy rounds down, a sell rounds up) so rounding can never make
an order more aggressive than the caller asked.
"""

from __future__ import annotations

import dataclasses
import inspect
from decimal import ROUND_CEILING, ROUND_FLOOR, Context, Decimal, Inexact, InvalidOperation, getcontext, localcontext
from enum import StrEnum
from typing import Any, Final, TypeVar

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
_T = TypeVar("_T")


def fast_frozen_init(cls: type[_T]) -> type[_T]:
    """Give a ``@dataclass(frozen=True, slots=True)`` class a faster ``__init__``, same signature and checks.

    The ``__init__`` a frozen dataclass generates sets each field through
    ``object.__setattr__`` looked up per field (about 0.25 µs a field); this one
    stores each field with its slot descriptor and then calls ``__post_init__``
    (if any), exactly as the generated one does. The class stays a frozen
    dataclass (``fields``, ``replace``, equality, hashing, assignment raising
    ``FrozenInstanceError`` are unchanged). Model objects built once per order or
    fill (``OrderSpec``, ``Fill``, ``Position``, ``Balance``) use it.
    """
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or "__slots__" not in cls.__dict__:
        raise TypeError(f"{cls.__name__}: fast_frozen_init needs a @dataclass(frozen=True, slots=True) class")
    signature = inspect.signature(cls.__init__)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    namespace: dict[str, Any] = {}
    args: list[str] = []
    for name in names:
        parameter = signature.parameters[name]
        if parameter.kind is not inspect.Parameter.POSITIONAL_OR_KEYWORD:
            raise TypeError(f"{cls.__name__}.{name}: fast_frozen_init supports plain fields only")
        if parameter.default is inspect.Parameter.empty:
            args.append(name)
        elif type(parameter.default).__name__ == "_HAS_DEFAULT_FACTORY_CLASS":
            raise TypeError(f"{cls.__name__}.{name}: fast_frozen_init does not support default factories")
        else:
            namespace[f"_default_{name}"] = parameter.default
            args.append(f"{name}=_default_{name}")
        namespace[f"_set_{name}"] = getattr(cls, name).__set__
    body = [f"    _set_{name}(self, {name})" for name in names]
    if hasattr(cls, "__post_init__"):
        body.append("    self.__post_init__()")
    source = f"def __init__(self, {', '.join(args)}) -> None:\n" + "\n".join(body or ["    pass"]) + "\n"
    exec(source, namespace)  # noqa: S102 - fixed code built from the class's own field names; the same technique dataclasses uses to generate __init__
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    init.__doc__ = cls.__init__.__doc__
    init.__annotations__ = dict(cls.__init__.__annotations__)
    cls.__init__ = init  # type: ignore[method-assign]
    return cls


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


# A held context for the common case (the quotient needs at most _WIDE_PREC digits): the same
# exact arithmetic without copying the thread's context per call. Inexact traps as above.
_WIDE_PREC: Final = 60
_WIDE: Final = Context(prec=_WIDE_PREC, traps=[Inexact, InvalidOperation])
_ROUNDING: Final = Context(prec=_WIDE_PREC, traps=[InvalidOperation])  # quantize: rounding is what it is asked to do


class _Increment:
    """What rounding needs to know about one increment, worked out once (from its value: 0.01 and 0.010 agree).

    ``normal`` is the increment without trailing zeros, ``exponent`` its exponent,
    ``quantum`` the exponent results carry (``10 ** min(exponent, 0)``).
    """

    __slots__ = ("exponent", "normal", "power_of_ten", "quantum")

    def __init__(self, increment: Decimal) -> None:
        _check_increment(increment)
        normal = increment.normalize(Context(prec=max(28, len(increment.as_tuple().digits))))
        parts = normal.as_tuple()
        assert isinstance(parts.exponent, int)
        self.normal = normal
        self.exponent = parts.exponent
        self.quantum = Decimal(1).scaleb(min(parts.exponent, 0))
        # 1, 0.1, 0.01, ... (not 10, 100: their results keep exponent 0, below the increment's)
        self.power_of_ten = parts.digits == (1,) and parts.exponent <= 0


_INCREMENTS: dict[Decimal, _Increment] = {}


def _increment(increment: Decimal) -> _Increment:
    """The increment's facts, checked (a bad increment raises InvalidValue) and cached."""
    # a signalling NaN cannot be hashed: it goes straight to the check, which refuses it
    info = _INCREMENTS.get(increment) if isinstance(increment, Decimal) and not increment.is_snan() else None
    if info is None:
        info = _Increment(increment)
        if len(_INCREMENTS) < 4096:
            _INCREMENTS[increment] = info
    return info


def round_to_increment(value: Decimal, increment: Decimal, *, up: bool) -> Decimal:
    """Round ``value`` to a whole multiple of ``increment``, up (toward +inf) or down (toward -inf).

    Exact for any finite value (the arithmetic runs in a context wide enough
    for the quotient). The result carries the increment's exponent (``0.01``
    → two places), so it prints the way the exchange expects.
    """
    info = _increment(increment)
    _check_value(value)
    if max(value.adjusted(), 0) - info.exponent + 4 <= _WIDE_PREC:
        if info.power_of_ten:  # a multiple of 10**e: quantize to e, rounding toward the side asked
            return value.quantize(info.quantum, ROUND_CEILING if up else ROUND_FLOOR, _ROUNDING)
        ctx = _WIDE
    else:
        ctx = _exact_context(value, increment)
    normal = info.normal
    steps, remainder = ctx.divmod(value, normal)  # steps truncated toward zero, remainder has value's sign
    if up and remainder > 0:
        steps = ctx.add(steps, 1)
    elif not up and remainder < 0:
        steps = ctx.subtract(steps, 1)
    return ctx.multiply(steps, normal).quantize(info.quantum, context=ctx)


def round_size(size: Decimal, increment: Decimal) -> Decimal:
    """Round an order size down to ``increment`` (never more than asked)."""
    return round_to_increment(size, increment, up=False)


def round_price(price: Decimal, increment: Decimal, side: Side) -> Decimal:
    """Round a price toward the passive side: buys down, sells up."""
    return round_to_increment(price, increment, up=side is Side.SELL)


def is_on_increment(value: Decimal, increment: Decimal) -> bool:
    """True when ``value`` is a whole multiple of ``increment`` (exactly, at any size)."""
    info = _increment(increment)
    _check_value(value)
    if max(value.adjusted(), 0) - info.exponent + 4 <= _WIDE_PREC:
        return bool(_WIDE.remainder(value, info.normal) == 0)
    with localcontext(_exact_context(value, increment)):
        return bool((value % increment) == 0)
