"""The bar fill model: how an order placed during bar *t* fills on bar *t+1* and later.

The rules (also in ``docs/backtesting.md``):

* An order placed while the strategy handles bar *t* (which has closed) is
  **checked at once** against the product's rules by the same
  :func:`~cryptoj.venues.simulated.matching.check_order` the simulator uses
  (increments, min/max sizes, notional limits, status flags, stop and bracket
  prices against the last close) and **arrives at the open of bar t+1**.
* Inside a bar the price is assumed to travel **open → low → high → close when
  the bar closes at or above its open, and open → high → low → close when it
  closes below** (the extreme nearer the bar's direction comes last). Every order
  is evaluated along that path, so at most one of two conflicting prices
  (a take-profit and a stop of the same bracket) is reached first.
* **Market** orders fill completely at the arrival open, moved against the
  order by ``slippage_bps`` and rounded to the price increment against the
  order (a buy up, a sell down); taker fee. A quote-sized market order buys
  (sells) ``quote_size / price`` rounded down to the base increment; its fee is
  on top, as on the simulator.
* **Limit** orders: an order that is marketable when it arrives (a buy limit at
  or above the open) fills at the open, as a taker (a post-only one is rejected
  instead, ``INVALID_LIMIT_PRICE_POST_ONLY``). Otherwise it rests and fills at its
  limit price, as a maker, in the first bar whose path touches the limit (a buy
  when the low is at or below it) — a touch fills the whole order (no queue or
  volume model). A resting order that a later bar *opens* through fills at its
  limit price (its own price, as a resting order would). IOC/FOK limits only
  ever try the arrival open; otherwise they are cancelled (there are no partial
  fills in this model, so FOK and IOC behave the same).
* **Stop-limit** orders trigger where the path first reaches the stop
  (``STOP_UP``: price ≥ stop; ``STOP_DOWN``: price ≤ stop; at the open if the
  bar opens beyond it) and then act as a limit order arriving at that price:
  marketable → filled there as a taker; else resting on the rest of the path.
* **Brackets** (Coinbase ``trigger_bracket``, an exit): the take-profit limit
  fills as a limit order; when the path reaches the stop trigger first the
  order becomes a market order filled at the trigger price (or the open, if the
  bar opens beyond it) with slippage, as a taker.
* With a :class:`SyntheticBook` instead of ``slippage_bps``, market orders (and a bracket's
  stop leg) walk a synthetic book around that price, level by level, and may fill only in part.
* **GTD** orders expire at the first bar starting at or after ``end_time``.
* Fees are ``price · size · rate`` with the maker or taker rate of the
  :class:`FeeTier`, exact in Decimal (:func:`~cryptoj.venues.simulated.matching.fee_for`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Context, Decimal
from enum import StrEnum
from typing import Final, NamedTuple

from cryptoj.errors import InvalidValue, OrderRejected
from cryptoj.model.instruments import Product
from cryptoj.model.money import ZERO, Side, round_to_increment
from cryptoj.model.orders import Liquidity, OrderKind, OrderSpec, StopDirection, TimeInForce
from cryptoj.venues.simulated.matching import DoneReason, RejectReason, check_order, simulate_fill_against_levels

_tuple_new = tuple.__new__
_FEE_CONTEXT: Final = Context(prec=60)  # matching.fee_for's 60-digit context, without entering it per fill


def _fee(price: Decimal, size: Decimal, rate: Decimal) -> Decimal:
    """``price · size · rate`` exactly as :func:`~cryptoj.venues.simulated.matching.fee_for` computes it (same context)."""
    multiply = _FEE_CONTEXT.multiply
    return multiply(multiply(price, size), rate)


__all__ = ["BarFill", "BarFillModel", "Done", "FeeTier", "Outcome", "SyntheticBook", "WorkingOrder"]

_BPS: Final = Decimal(10_000)
_UNKNOWN: Final = object()


@dataclass(frozen=True, slots=True)
class FeeTier:
    """Maker and taker fee rates as fractions (``0.004`` = 0.4 %)."""

    maker: Decimal = Decimal("0.004")
    taker: Decimal = Decimal("0.006")

    def __post_init__(self) -> None:
        for name in ("maker", "taker"):
            rate = getattr(self, name)
            if not isinstance(rate, Decimal) or not rate.is_finite() or rate < 0 or rate >= 1:
                raise InvalidValue(f"fee_tier.{name}", rate, "a Decimal rate in [0, 1) is required")

    @classmethod
    def parse(cls, text: str) -> FeeTier:
        """``"maker,taker"`` as fractions, e.g. ``"0.004,0.006"``."""
        parts = [p.strip() for p in str(text).split(",")]
        if len(parts) != 2:
            raise InvalidValue("fee_tier", text, "expected 'maker,taker', e.g. 0.004,0.006")
        try:
            return cls(Decimal(parts[0]), Decimal(parts[1]))
        except ArithmeticError:
            raise InvalidValue("fee_tier", text, "rates must be decimal numbers") from None


class Done(StrEnum):
    """Why an order left the model without a fill."""

    CANCELLED = "CANCELLED"  # IOC/FOK not marketable at arrival, quote size too small
    EXPIRED = "EXPIRED"  # GTD end_time reached
    REJECTED = "REJECTED"  # post-only would take


class BarFill(NamedTuple):
    """One fill of the whole order."""

    price: Decimal
    size: Decimal
    fee: Decimal
    liquidity: Liquidity


class Outcome(NamedTuple):
    """What a bar did to an order: a fill (and ``more`` fills when it walked a synthetic book), or an end.

    ``done`` with a fill means the rest of the order was cancelled (a market order the
    synthetic book could not fill completely).
    """

    fill: BarFill | None
    done: Done | None = None
    reason: str | None = None
    more: tuple[BarFill, ...] = ()


@dataclass(frozen=True, slots=True)
class SyntheticBook:
    """A book market orders walk instead of filling at one price (``--synthetic-book``).

    Around the arrival price ``P`` (the open, or a bracket's stop trigger) it holds
    ``levels`` levels per side: a buy meets asks at ``P · (1 + (spread_bps/2 + i·step_bps)/10⁴)``
    (rounded up to the price increment; a sell meets bids below, rounded down), each holding
    ``depth · V / levels`` base (at least one base increment), where ``V`` is the volume of the
    last bar the strategy saw. A market order larger than the book fills what is there; the rest
    is cancelled.
    """

    levels: int = 10
    spread_bps: Decimal = Decimal(2)
    step_bps: Decimal = Decimal(1)
    depth: Decimal = Decimal("0.1")

    def __post_init__(self) -> None:
        if isinstance(self.levels, bool) or not isinstance(self.levels, int) or not 1 <= self.levels <= 1000:
            raise InvalidValue("synthetic_book.levels", self.levels, "an integer from 1 to 1000 is required")
        for name in ("spread_bps", "step_bps", "depth"):
            value = getattr(self, name)
            if not isinstance(value, Decimal) or not value.is_finite() or value < 0:
                raise InvalidValue(f"synthetic_book.{name}", value, "a Decimal >= 0 is required")
        if self.depth == 0:
            raise InvalidValue("synthetic_book.depth", self.depth, "must be positive")

    @classmethod
    def parse(cls, text: str) -> SyntheticBook:
        """``"levels=10,spread_bps=2,step_bps=1,depth=0.1"`` (any subset; the rest default)."""
        values: dict[str, object] = {}
        for part in (p.strip() for p in str(text).split(",") if p.strip()):
            key, sep, raw = part.partition("=")
            key = key.strip()
            if not sep or key not in ("levels", "spread_bps", "step_bps", "depth"):
                raise InvalidValue("synthetic_book", text, "expected levels=N,spread_bps=X,step_bps=X,depth=X")
            try:
                values[key] = int(raw) if key == "levels" else Decimal(raw.strip())
            except (ValueError, ArithmeticError):
                raise InvalidValue(f"synthetic_book.{key}", raw, "not a number") from None
        return cls(**values)  # type: ignore[arg-type]

    def side_levels(self, product: Product, side: Side, price: Decimal, volume: Decimal) -> list[tuple[Decimal, Decimal]]:
        """The opposite side a ``side`` market order meets, best first."""
        size = max(product.round_size(volume * self.depth / self.levels), product.base_increment)
        inc = product.price_increment
        buy = side is Side.BUY
        out: list[tuple[Decimal, Decimal]] = []
        previous: Decimal | None = None
        for i in range(self.levels):
            bps = (self.spread_bps / 2 + i * self.step_bps) / _BPS
            p = round_to_increment(price * (1 + bps if buy else 1 - bps), inc, up=buy)
            if previous is not None and (p <= previous if buy else p >= previous):
                p = previous + inc if buy else previous - inc
            if p <= 0:
                break
            out.append((p, size))
            previous = p
        return out


@dataclass(slots=True)
class WorkingOrder:
    """An order waiting in the model: ``arrived`` once it has seen its arrival open; ``triggered`` for stops."""

    spec: OrderSpec
    arrived: bool = False
    triggered: bool = False


def _path(o: Decimal, h: Decimal, lo: Decimal, c: Decimal) -> tuple[Decimal, Decimal, Decimal, Decimal]:
    return (o, lo, h, c) if c >= o else (o, h, lo, c)


def _reached(side_up: bool, price: Decimal, level: Decimal) -> bool:
    """Price has reached ``level`` moving up (``side_up``) or down."""
    return price >= level if side_up else price <= level


class BarFillModel:
    """Evaluates working orders of one product on bars (see the module doc for the rules)."""

    def __init__(
        self,
        product: Product,
        fees: FeeTier | None = None,
        *,
        slippage_bps: Decimal = ZERO,
        book: SyntheticBook | None = None,
    ) -> None:
        if not isinstance(slippage_bps, Decimal) or not slippage_bps.is_finite() or slippage_bps < 0 or slippage_bps >= _BPS:
            raise InvalidValue("slippage_bps", slippage_bps, "a Decimal in [0, 10000) is required")
        if book is not None and slippage_bps:
            raise InvalidValue("slippage_bps", slippage_bps, "give a slippage or a synthetic book, not both")
        self.book = book
        self._depth = ZERO
        self.product = product
        self.fees = fees or FeeTier()
        self.slippage_bps = slippage_bps
        self._up = Decimal(1) + slippage_bps / _BPS
        self._down = Decimal(1) - slippage_bps / _BPS
        self._market_checks: dict[tuple[object, ...], object] = {}

    def check(self, spec: OrderSpec, now: datetime, last_price: Decimal | None) -> None:
        """Raise :class:`~cryptoj.errors.OrderRejected` if the product rules refuse ``spec`` (same checks as the simulator).

        A plain market order's verdict depends only on its side and size, so it is
        remembered (strategies repeat the same sizes; the checks are exact Decimal
        arithmetic, not free).
        """
        if spec.kind is not OrderKind.MARKET or spec.end_time is not None:
            check_order(self.product, spec, now=now, last_trade_price=last_price)
            return
        key = (spec.side, spec.base_size, spec.quote_size, spec.time_in_force)
        verdict = self._market_checks.get(key, _UNKNOWN)
        if verdict is _UNKNOWN:
            try:
                check_order(self.product, spec, now=now, last_trade_price=last_price)
                verdict = None
            except OrderRejected as exc:
                text = str(exc).removeprefix(f"order rejected: {exc.reason}: ")
                verdict = (exc.reason, text.removesuffix(f" client_order_id={spec.client_order_id}"))
            if len(self._market_checks) < 10_000:
                self._market_checks[key] = verdict
        if verdict is not None:
            assert isinstance(verdict, tuple)
            raise OrderRejected(verdict[0], verdict[1], client_order_id=spec.client_order_id)

    # -- pricing -------------------------------------------------------------------

    def market_price(self, side: Side, price: Decimal) -> Decimal:
        """``price`` moved against a taker by the slippage and rounded to the increment against it."""
        if not self.slippage_bps:
            return price
        if side is Side.BUY:
            return round_to_increment(price * self._up, self.product.price_increment, up=True)
        return round_to_increment(price * self._down, self.product.price_increment, up=False)

    def _fill(self, spec: OrderSpec, price: Decimal, liquidity: Liquidity) -> Outcome:
        size = spec.base_size
        if size is None:
            assert spec.quote_size is not None
            size = self.product.round_size(spec.quote_size / price)
            if size <= 0 or size < self.product.base_min_size:
                return Outcome(None, Done.CANCELLED, f"quote_size {spec.quote_size} buys less than the minimum size at {price}")
        rate = self.fees.maker if liquidity is Liquidity.MAKER else self.fees.taker
        # the tuples built directly (a NamedTuple's generated __new__ is a Python call each)
        return _tuple_new(Outcome, (_tuple_new(BarFill, (price, size, _fee(price, size, rate), liquidity)), None, None, ()))

    def _market(self, spec: OrderSpec, price: Decimal) -> Outcome:
        if self.book is not None:
            return self._walk(spec, price)
        return self._fill(spec, self.market_price(spec.side, price), Liquidity.TAKER)

    def _walk(self, spec: OrderSpec, price: Decimal) -> Outcome:
        """A market order through the synthetic book around ``price``."""
        assert self.book is not None
        levels = self.book.side_levels(self.product, spec.side, price, self._depth)
        steps = simulate_fill_against_levels(
            levels, spec.side, self.product, base_size=spec.base_size, quote_size=spec.quote_size, fee_rate=self.fees.taker
        )
        if not steps:
            return Outcome(None, Done.CANCELLED, "the synthetic book could not fill any of it")
        fills = [BarFill(st.price, st.size, st.fee, Liquidity.TAKER) for st in steps]
        filled = sum((f.size for f in fills), ZERO)
        if spec.base_size is not None and filled < spec.base_size:
            return Outcome(fills[0], Done.CANCELLED, DoneReason.IMMEDIATE_OR_CANCEL, tuple(fills[1:]))
        return Outcome(fills[0], None, None, tuple(fills[1:]))

    # -- the model -------------------------------------------------------------------

    def evaluate(
        self, order: WorkingOrder, start: datetime, o: Decimal, h: Decimal, lo: Decimal, c: Decimal, depth: Decimal = ZERO
    ) -> Outcome | None:
        """Run ``order`` through one bar (start time and OHLC); None when it keeps working.

        ``depth`` is the volume the synthetic book (if any) is sized from: the last bar the strategy saw.
        """
        self._depth = depth
        spec = order.spec
        new = not order.arrived
        order.arrived = True
        if spec.end_time is not None and spec.time_in_force is TimeInForce.GTD and spec.end_time <= start:
            return Outcome(None, Done.EXPIRED, DoneReason.GTD_EXPIRED)
        kind = spec.kind
        if kind is OrderKind.MARKET:
            return self._market(spec, o)
        path = _path(o, h, lo, c)
        if kind is OrderKind.LIMIT:
            return self._limit(spec, path, 0, o, new)
        if kind is OrderKind.STOP_LIMIT:
            return self._stop_limit(order, path)
        return self._bracket(spec, path, new)

    def _limit(self, spec: OrderSpec, path: tuple[Decimal, ...], k: int, arrival: Decimal, new: bool) -> Outcome | None:
        """A limit order arriving (``new``) at ``arrival`` in segment ``k`` of ``path``, then resting."""
        limit = spec.limit_price
        assert limit is not None
        buy = spec.side is Side.BUY
        if _reached(not buy, arrival, limit):  # marketable where it is: a buy at/above the price
            if new:
                if spec.post_only:
                    return Outcome(None, Done.REJECTED, RejectReason.INVALID_LIMIT_PRICE_POST_ONLY)
                return self._fill(spec, arrival, Liquidity.TAKER)
            return self._fill(spec, limit, Liquidity.MAKER)
        if spec.time_in_force in (TimeInForce.IOC, TimeInForce.FOK):
            return Outcome(None, Done.CANCELLED, DoneReason.IMMEDIATE_OR_CANCEL)
        for p in path[k + 1 :]:
            if _reached(not buy, p, limit):
                return self._fill(spec, limit, Liquidity.MAKER)
        return None

    def _stop_limit(self, order: WorkingOrder, path: tuple[Decimal, ...]) -> Outcome | None:
        spec = order.spec
        if order.triggered:
            return self._limit(spec, path, 0, path[0], False)
        stop = spec.stop_price
        assert stop is not None
        up = spec.stop_direction is StopDirection.STOP_UP
        if _reached(up, path[0], stop):
            order.triggered = True
            return self._limit(spec, path, 0, path[0], True)
        for k in range(1, len(path)):
            if _reached(up, path[k], stop):
                order.triggered = True
                # arrives at the stop price part-way along segment k-1 -> k, then sees path[k:]
                return self._limit(spec, path, k - 1, stop, True)
        return None

    def _bracket(self, spec: OrderSpec, path: tuple[Decimal, ...], new: bool) -> Outcome | None:
        limit, trigger = spec.limit_price, spec.stop_trigger_price
        assert limit is not None and trigger is not None
        sell = spec.side is Side.SELL  # a sell bracket closes a long: take profit above, stop below
        o = path[0]
        if _reached(sell, o, limit):
            return self._fill(spec, o if new else limit, Liquidity.TAKER if new else Liquidity.MAKER)
        if _reached(not sell, o, trigger):
            return self._market(spec, o)
        for p in path[1:]:
            if _reached(sell, p, limit):
                return self._fill(spec, limit, Liquidity.MAKER)
            if _reached(not sell, p, trigger):
                return self._market(spec, trigger)
        return None
