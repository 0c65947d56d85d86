"""The strategy API: a :class:`Strategy` base class, its declared parameters and the context it runs in.

A strategy is a small class. It declares its parameters, reacts to market data
in plain synchronous callbacks and places orders through helpers::

    from decimal import Decimal
    from cryptoj.indicators import SMA
    from cryptoj.strategy import BarLike, Param, Strategy

    class MyCross(Strategy):
        params = (
            Param("fast", int, 20, min=2, max=500, doc="fast SMA length (bars)"),
            Param("slow", int, 50, min=3, max=2000, doc="slow SMA length (bars)"),
            Param("order_size", Decimal, Decimal("0.001"), min=Decimal(0), doc="base size per entry"),
        )

        def on_start(self) -> None:
            self.fast = {p: SMA(self.p.fast) for p in self.products}
            self.slow = {p: SMA(self.p.slow) for p in self.products}

        def on_bar(self, product: str, bar: BarLike) -> None:
            fast, slow = self.fast[product].update(bar.close), self.slow[product].update(bar.close)
            if fast is not None and slow is not None and fast > slow and self.position(product).is_flat:
                self.buy(product, self.p.order_size)

How the engine drives a strategy (every mode: sim, paper, live, backtest):

1. ``strategy = StrategyClass(params_mapping, products=[...])`` — parameters are
   validated here; every problem is reported with its key path
   (``strategy.params.fast``) and the allowed range (:class:`~cryptoj.errors.ConfigError`).
2. ``strategy.bind(ctx)`` with a :class:`StrategyContext`, then ``strategy.on_start()``.
3. Events, one at a time, in a deterministic order: ``on_bar`` (a closed candle of
   ``strategy.timeframe``), ``on_book``, ``on_trade``, ``on_order_update`` (every
   status change of an order this strategy placed), ``on_fill`` (each new fill of
   such an order), ``on_timer`` (timers set with :meth:`Strategy.set_timer`).
4. ``on_stop()`` at shutdown.

Callbacks never ``await``: :meth:`StrategyContext.submit` returns the new
``client_order_id`` at once and the engine runs the risk checks and sends the
order afterwards; the outcome arrives through ``on_order_update`` (a risk
rejection as a REJECTED order). :meth:`Strategy.handles` tells the engine which
callbacks a strategy overrides, so it can skip the others on hot paths.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar, Protocol, runtime_checkable

from cryptoj.errors import ConfigError, CryptojError
from cryptoj.model.book import OrderBook
from cryptoj.model.candles import Candle, Timeframe
from cryptoj.model.events import MarketTrade
from cryptoj.model.instruments import Product
from cryptoj.model.money import ZERO, Side
from cryptoj.model.orders import Fill, Order, OrderKind, OrderSpec, OrderStatus, StopDirection, TimeInForce
from cryptoj.model.positions import Balance, Position

__all__ = [
    "CALLBACKS",
    "BarLike",
    "Param",
    "Params",
    "Strategy",
    "StrategyContext",
    "StrategyError",
    "StrategyLog",
    "load_strategy",
    "make_strategy",
]

CALLBACKS = ("on_start", "on_bar", "on_book", "on_trade", "on_order_update", "on_fill", "on_timer", "on_stop")
"""The callbacks the engine calls (see :meth:`Strategy.handles`)."""

PARAMS_KEY = "strategy.params"


class StrategyError(CryptojError):
    """A strategy was used wrongly (e.g. a helper called before the engine bound it)."""


# --- the context the engine provides -------------------------------------------


class BarLike(Protocol):
    """What ``on_bar`` receives: a :class:`~cryptoj.model.candles.Candle` live, a lighter ``Bar`` tuple in backtests."""

    @property
    def start(self) -> datetime: ...
    @property
    def open(self) -> Decimal: ...
    @property
    def high(self) -> Decimal: ...
    @property
    def low(self) -> Decimal: ...
    @property
    def close(self) -> Decimal: ...
    @property
    def volume(self) -> Decimal: ...


class StrategyLog(Protocol):
    """The structured logger strategies get (a structlog ``BoundLogger`` fits)."""

    def debug(self, event: str, /, **kw: Any) -> Any: ...
    def info(self, event: str, /, **kw: Any) -> Any: ...
    def warning(self, event: str, /, **kw: Any) -> Any: ...
    def error(self, event: str, /, **kw: Any) -> Any: ...


@runtime_checkable
class StrategyContext(Protocol):
    """What a strategy can see and do. The engine (``trading_core.Engine``) and the backtester implement it.

    Every method is synchronous and cheap: a strategy callback must never block.
    """

    log: StrategyLog

    def now(self) -> datetime:
        """The engine clock (simulated in backtests), timezone-aware UTC."""

    def new_client_order_id(self) -> str:
        """A fresh, unique client order id."""

    def submit(self, spec: OrderSpec) -> str:
        """Queue ``spec`` for risk checks and sending; returns its ``client_order_id`` at once."""

    def cancel(self, client_order_id: str) -> None:
        """Queue a cancel for an order this strategy placed."""

    def position(self, product_id: str) -> Position | None:
        """The position in ``product_id`` (None when nothing was ever traded)."""

    def balance(self, currency: str) -> Balance:
        """Available and held amounts of ``currency`` (zero when none)."""

    def equity(self) -> Decimal:
        """Total account value in the quote currency at current prices."""

    def candles(self, product_id: str, timeframe: Timeframe, n: int) -> Sequence[Candle]:
        """The last ``n`` closed candles (oldest first; fewer when fewer exist)."""

    def product(self, product_id: str) -> Product:
        """The product's rules (increments, min/max sizes)."""

    def book(self, product_id: str) -> OrderBook | None:
        """The current L2 book, or None when there is none (e.g. a bar-only backtest)."""

    def open_orders(self, product_id: str | None = None) -> Sequence[Order]:
        """This strategy's live orders (of one product, or all)."""

    def set_timer(self, name: str, interval: timedelta | None) -> None:
        """Call ``on_timer(name, now)`` every ``interval``; ``None`` cancels the timer."""


# --- parameters --------------------------------------------------------------------

_SUPPORTED_TYPES: tuple[type, ...] = (int, Decimal, bool, str, Timeframe, tuple)


_PLURALS = {int: "integers", Decimal: "decimal numbers", str: "strings"}


def _describe_type(kind: type, item: type | None) -> str:
    if kind is tuple:
        return f"a list of {_PLURALS[item or str]}"
    if kind is Timeframe:
        return "a timeframe (" + ", ".join(m.value for m in Timeframe) + ")"
    names = {int: "an integer", Decimal: "a decimal number", bool: "true or false", str: "a string"}
    return names[kind]


@dataclass(frozen=True, slots=True)
class Param:
    """One declared strategy parameter.

    ``kind`` is ``int``, ``Decimal``, ``bool``, ``str``, ``Timeframe`` or ``tuple`` (a list;
    its elements are of type ``item``, ``str`` by default). ``min``/``max`` bound numbers
    (and the *length* of tuples); ``choices`` restricts the allowed values.
    """

    name: str
    kind: type
    default: Any
    min: Any = None
    max: Any = None
    choices: tuple[Any, ...] | None = None
    item: type | None = None
    doc: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not re.fullmatch(r"[a-z_][a-z0-9_]*", self.name):
            raise ConfigError([(f"Param({self.name!r})", "a parameter name is lower_snake_case")])
        if self.kind not in _SUPPORTED_TYPES:
            names = ", ".join(t.__name__ for t in _SUPPORTED_TYPES)
            raise ConfigError([(f"Param({self.name!r})", f"unsupported kind {self.kind!r}; use one of {names}")])
        if self.item is not None and (self.kind is not tuple or self.item not in (int, Decimal, str)):
            raise ConfigError([(f"Param({self.name!r})", "item is for tuple parameters and must be int, Decimal or str")])
        # the default must itself be valid (a declaration bug is reported at class definition)
        object.__setattr__(self, "default", self.convert(self.default, where=f"Param({self.name!r}).default"))

    @property
    def range_text(self) -> str:
        """The allowed values in words (used in error messages and docs)."""
        if self.choices is not None:
            return "one of " + ", ".join(str(c) for c in self.choices)
        what = "length" if self.kind is tuple else "value"
        if self.min is not None and self.max is not None:
            return f"{what} between {self.min} and {self.max}"
        if self.min is not None:
            return f"{what} >= {self.min}"
        if self.max is not None:
            return f"{what} <= {self.max}"
        if self.kind is Timeframe:
            return "one of " + ", ".join(m.value for m in Timeframe)
        return "any length" if self.kind is tuple else "any"

    def convert(self, value: Any, *, where: str | None = None) -> Any:
        """``value`` converted to ``kind`` and checked against the range; raises ConfigError naming ``where``."""
        where = where or f"{PARAMS_KEY}.{self.name}"
        try:
            converted = self._coerce(self.kind, value, self.item)
        except (TypeError, ValueError, InvalidOperation) as exc:
            raise ConfigError([(where, f"expected {_describe_type(self.kind, self.item)}, got {value!r}{_why(exc)}")]) from None
        problem = self._range_problem(converted)
        if problem:
            raise ConfigError([(where, f"{problem} (got {value!r}; allowed: {self.range_text})")])
        return converted

    def _range_problem(self, value: Any) -> str | None:
        if self.choices is not None and value not in self.choices:
            return "not an allowed choice"
        measured = len(value) if self.kind is tuple else value
        if self.kind in (int, Decimal, tuple):
            if self.min is not None and measured < self.min:
                return "too small" if self.kind is not tuple else "too few items"
            if self.max is not None and measured > self.max:
                return "too large" if self.kind is not tuple else "too many items"
        return None

    @staticmethod
    def _coerce(kind: type, value: Any, item: type | None) -> Any:
        if kind is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
                return value.strip().lower() in ("true", "1", "yes")
            raise ValueError
        if kind is int:
            if isinstance(value, bool | float):
                raise TypeError("not an integer")
            if isinstance(value, Decimal):
                if value != value.to_integral_value():
                    raise ValueError("not a whole number")
                return int(value)
            if isinstance(value, int):
                return value
            if isinstance(value, str):
                return int(value.strip())
            raise TypeError("not an integer")
        if kind is Decimal:
            if isinstance(value, bool):
                raise TypeError("a boolean is not a number")
            if isinstance(value, Decimal):
                result = value
            elif isinstance(value, int):
                result = Decimal(value)
            elif isinstance(value, float):
                result = Decimal(str(value))  # the config's convention: a TOML float via its shortest text
            elif isinstance(value, str):
                result = Decimal(value.strip())
            else:
                raise TypeError("not a number")
            if not result.is_finite():
                raise ValueError("not finite")
            return result
        if kind is str:
            if not isinstance(value, str):
                raise TypeError("not a string")
            return value
        if kind is Timeframe:
            if isinstance(value, Timeframe):
                return value
            if not isinstance(value, str):
                raise TypeError("not a timeframe")
            return Timeframe.parse(value)
        # tuple
        if isinstance(value, str):
            parts: Iterable[Any] = [p.strip() for p in value.split(",") if p.strip()]
        elif isinstance(value, list | tuple):
            parts = value
        else:
            raise TypeError("not a list")
        return tuple(Param._coerce(item or str, p, None) for p in parts)


def _why(exc: BaseException) -> str:
    text = str(exc)
    if not text or text.startswith("[<class"):
        return ""
    return f" ({text})"


class Params(SimpleNamespace):
    """The validated parameter values, as attributes: ``self.p.fast``."""

    def as_dict(self) -> dict[str, Any]:
        return dict(vars(self))


# --- the base class ---------------------------------------------------------------------


def _wrap_order_update(user: Callable[[Strategy, Order], None]) -> Callable[[Strategy, Order], None]:
    def on_order_update(self: Strategy, order: Order) -> None:
        if self._brackets:  # (no call per update when no bracket waits)
            self._track_brackets(order)
        user(self, order)

    on_order_update.__wrapped__ = user  # type: ignore[attr-defined]
    on_order_update.__doc__ = user.__doc__
    on_order_update.__name__ = "on_order_update"
    on_order_update.__qualname__ = getattr(user, "__qualname__", "on_order_update")
    return on_order_update


@dataclass(slots=True)
class _PendingBracket:
    product_id: str
    stop_loss: Decimal
    take_profit: Decimal


class Strategy:
    """Base class of every strategy. Override the ``on_*`` callbacks you need; use the helpers to act.

    Class attributes a strategy sets:

    * ``params`` — a tuple of :class:`Param` (validated into ``self.p``);
    * ``timeframe`` — the bar width ``on_bar`` receives (default 1 minute; a ``timeframe``
      parameter, if declared, overrides it);
    * ``name`` — the name in logs and reports (defaults to the class name; not inherited).
    """

    name: ClassVar[str] = ""
    params: ClassVar[tuple[Param, ...]] = ()
    timeframe: Timeframe = Timeframe.ONE_MINUTE

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not isinstance(cls.params, tuple) or not all(isinstance(p, Param) for p in cls.params):
            raise ConfigError([(f"{cls.__name__}.params", "must be a tuple of Param(...)")])
        names = [p.name for p in cls.params]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError([(f"{cls.__name__}.params", f"declared twice: {', '.join(dupes)}")])
        if not cls.__dict__.get("name"):
            cls.name = cls.__name__  # a subclass of a built-in gets its own name, not the parent's
        own = cls.__dict__.get("on_order_update")
        if own is not None and not hasattr(own, "__wrapped__"):
            # brackets need to see order updates whatever the subclass does with them
            cls.on_order_update = _wrap_order_update(own)  # type: ignore[method-assign,assignment]

    def __init__(self, params: Mapping[str, Any] | None = None, *, products: Sequence[str] | None = None) -> None:
        self.p = self.validate_params(params or {})
        if "timeframe" in vars(self.p):
            value = self.p.timeframe
            self.timeframe = value if isinstance(value, Timeframe) else Timeframe.parse(value)
        if products is None:
            products = ()
        if isinstance(products, str):
            raise ConfigError([("products", f"expected a list of product ids, got the string {products!r}")])
        self.products: tuple[str, ...] = tuple(products)
        self._ctx: StrategyContext | None = None
        self._brackets: dict[str, _PendingBracket] = {}

    def __repr__(self) -> str:
        values = ", ".join(f"{k}={v}" for k, v in vars(self.p).items())
        return f"{type(self).__name__}({values}; products={list(self.products)})"

    # -- parameters ---------------------------------------------------------------------

    @classmethod
    def validate_params(cls, values: Mapping[str, Any]) -> Params:
        """Check ``values`` against ``cls.params``: defaults fill gaps, unknown names and bad values are errors.

        Every problem is reported at once, each with its key path (``strategy.params.NAME``)
        and the allowed range, in one :class:`~cryptoj.errors.ConfigError`.
        """
        if not isinstance(values, Mapping):
            raise ConfigError([(PARAMS_KEY, f"expected a table of parameters, got {type(values).__name__}")])
        problems: list[tuple[str, str]] = []
        declared = {p.name: p for p in cls.params}
        for key in values:
            if key not in declared:
                known = ", ".join(sorted(declared)) or "none"
                problems.append((f"{PARAMS_KEY}.{key}", f"unknown parameter for {cls.name} (known: {known})"))
        result: dict[str, Any] = {}
        for name, param in declared.items():
            if name not in values:
                result[name] = param.default
                continue
            try:
                result[name] = param.convert(values[name])
            except ConfigError as exc:
                problems.extend(exc.problems)
        if not problems:
            problems.extend((f"{PARAMS_KEY}.{key}", msg) for key, msg in cls.check_params(result))
        if problems:
            raise ConfigError(problems)
        return Params(**result)

    @classmethod
    def check_params(cls, values: Mapping[str, Any]) -> list[tuple[str, str]]:
        """Override to check parameters against each other; return ``(name, message)`` problems."""
        return []

    @classmethod
    def describe_params(cls) -> list[dict[str, str]]:
        """One row per parameter (name, type, default, allowed, doc) — for ``--help`` output and docs."""
        return [
            {
                "name": p.name,
                "type": _describe_type(p.kind, p.item),
                "default": ", ".join(str(x) for x in p.default) if isinstance(p.default, tuple) else str(p.default),
                "allowed": p.range_text,
                "doc": p.doc,
            }
            for p in cls.params
        ]

    @classmethod
    def handles(cls, callback: str) -> bool:
        """True if this strategy overrides ``callback`` (one of :data:`CALLBACKS`).

        The engine uses it to skip work nobody reads (e.g. no ``on_book`` → no per-book dispatch).
        ``on_order_update`` is always True (bracket orders rely on it).
        """
        if callback not in CALLBACKS:
            raise StrategyError(f"unknown callback {callback!r}; expected one of {', '.join(CALLBACKS)}")
        if callback == "on_order_update":
            return True
        return getattr(cls, callback) is not getattr(Strategy, callback)

    # -- engine wiring --------------------------------------------------------------

    def bind(self, ctx: StrategyContext) -> None:
        """Attach the engine context (the engine calls this before ``on_start``; rebinding is allowed)."""
        self._ctx = ctx

    @property
    def ctx(self) -> StrategyContext:
        ctx = self._ctx
        if ctx is None:
            raise StrategyError(
                f"strategy {self.name} is not bound to an engine yet: the engine calls bind(ctx) before on_start()"
            )
        return ctx

    @property
    def is_bound(self) -> bool:
        return self._ctx is not None

    # -- callbacks (override what you need) ---------------------------------------------

    def on_start(self) -> None:
        """Called once after ``bind``, before any event."""

    def on_bar(self, product: str, bar: BarLike) -> None:
        """A bar of ``self.timeframe`` closed for ``product`` (``bar.start``, ``.open`` ... ``.volume``)."""

    def on_book(self, product: str, book: OrderBook) -> None:
        """``product``'s L2 book changed (do not keep a reference: it changes in place)."""

    def on_trade(self, product: str, trade: MarketTrade) -> None:
        """A public trade printed on ``product``."""

    def on_order_update(self, order: Order) -> None:
        """One of this strategy's orders changed status (REJECTED includes a risk refusal)."""
        self._track_brackets(order)

    def on_fill(self, fill: Fill) -> None:
        """One of this strategy's orders was (partly) filled."""

    def on_timer(self, name: str, now: datetime) -> None:
        """A timer set with :meth:`set_timer` fired."""

    def on_stop(self) -> None:
        """Called once at shutdown."""

    # -- reading state ----------------------------------------------------------------------

    @property
    def log(self) -> StrategyLog:
        return self.ctx.log

    def now(self) -> datetime:
        return self.ctx.now()

    def product(self, product: str) -> Product:
        return self.ctx.product(product)

    def position(self, product: str) -> Position:
        """The position in ``product`` (a flat one when nothing is held): ``.quantity``, ``.avg_entry_price``, ..."""
        pos = self.ctx.position(product)
        if pos is not None:
            return pos
        info = self.ctx.product(product)
        return Position(product, info.base_currency, info.quote_currency)

    def balance(self, currency: str) -> Balance:
        return self.ctx.balance(currency)

    def equity(self) -> Decimal:
        return self.ctx.equity()

    def candles(self, product: str, timeframe: Timeframe | str | None = None, n: int = 100) -> Sequence[Candle]:
        """The last ``n`` closed candles of ``product`` (``timeframe`` defaults to ``self.timeframe``)."""
        if n < 1:
            raise StrategyError(f"candles({product!r}): n must be >= 1 (got {n})")
        tf = self.timeframe if timeframe is None else Timeframe.parse(timeframe) if isinstance(timeframe, str) else timeframe
        return self.ctx.candles(product, tf, n)

    def book(self, product: str) -> OrderBook | None:
        return self.ctx.book(product)

    def mid(self, product: str) -> Decimal | None:
        """Mid price of the current book (None without a two-sided book)."""
        book = self.ctx.book(product)
        return None if book is None else book.mid()

    def open_orders(self, product: str | None = None) -> Sequence[Order]:
        return self.ctx.open_orders(product)

    # -- acting ---------------------------------------------------------------------------

    def buy(
        self,
        product: str,
        size: Decimal | None = None,
        *,
        quote_size: Decimal | None = None,
        price: Decimal | None = None,
        tif: TimeInForce | None = None,
        post_only: bool = False,
        end_time: datetime | None = None,
    ) -> str:
        """Buy ``size`` base (or spend ``quote_size`` quote, market only). With ``price`` a limit order, else market.

        Returns the ``client_order_id``. Market orders default to IOC, limit orders to GTC.
        Sizes and prices are rounded to the product's increments by the order manager.
        """
        return self._order(Side.BUY, product, size, quote_size, price, tif, post_only, end_time)

    def sell(
        self,
        product: str,
        size: Decimal | None = None,
        *,
        quote_size: Decimal | None = None,
        price: Decimal | None = None,
        tif: TimeInForce | None = None,
        post_only: bool = False,
        end_time: datetime | None = None,
    ) -> str:
        """Sell ``size`` base (or receive ``quote_size`` quote, market only); see :meth:`buy`."""
        return self._order(Side.SELL, product, size, quote_size, price, tif, post_only, end_time)

    def _order(
        self,
        side: Side,
        product: str,
        size: Decimal | None,
        quote_size: Decimal | None,
        price: Decimal | None,
        tif: TimeInForce | None,
        post_only: bool,
        end_time: datetime | None,
    ) -> str:
        ctx = self.ctx
        kind = OrderKind.MARKET if price is None else OrderKind.LIMIT
        if tif is None:
            tif = TimeInForce.IOC if price is None else TimeInForce.GTC
        # positional (once per order): client_order_id, product_id, side, kind, base_size, quote_size, limit_price,
        # stop_price, stop_direction, stop_trigger_price, time_in_force, post_only, end_time
        spec = OrderSpec(
            ctx.new_client_order_id(), product, side, kind, size, quote_size, price, None, None, None, tif, post_only, end_time
        )
        return ctx.submit(spec)

    def stop_limit(
        self,
        product: str,
        side: Side,
        size: Decimal,
        *,
        stop_price: Decimal,
        limit_price: Decimal,
        direction: StopDirection | None = None,
        end_time: datetime | None = None,
    ) -> str:
        """A stop-limit order: when the last price reaches ``stop_price``, a limit order at ``limit_price`` rests.

        ``direction`` defaults to STOP_DOWN for a sell (a stop loss) and STOP_UP for a buy (a breakout entry).
        """
        ctx = self.ctx
        if direction is None:
            direction = StopDirection.STOP_DOWN if side is Side.SELL else StopDirection.STOP_UP
        spec = OrderSpec(
            client_order_id=ctx.new_client_order_id(),
            product_id=product,
            side=side,
            kind=OrderKind.STOP_LIMIT,
            base_size=size,
            limit_price=limit_price,
            stop_price=stop_price,
            stop_direction=direction,
            time_in_force=TimeInForce.GTD if end_time is not None else TimeInForce.GTC,
            end_time=end_time,
        )
        return ctx.submit(spec)

    def bracket(
        self,
        product: str,
        size: Decimal,
        *,
        stop_loss: Decimal,
        take_profit: Decimal,
        entry: Decimal | str | None = "market",
    ) -> str:
        """Enter long and protect the position with a bracket exit (take profit + stop loss).

        * ``entry="market"`` (default): a market buy of ``size``; ``entry=<price>``: a limit buy.
          When the entry order ends with a fill, a BRACKET sell of the filled size is placed:
          a limit at ``take_profit`` with a stop-loss trigger at ``stop_loss``.
        * ``entry=None``: no entry — place the bracket exit for ``size`` already held.

        Returns the entry's client order id (or the bracket's when ``entry`` is None).
        """
        if not stop_loss < take_profit:
            raise StrategyError(f"bracket({product!r}): stop_loss {stop_loss} must be below take_profit {take_profit}")
        if entry is None:
            return self._submit_bracket(product, size, stop_loss, take_profit)
        if isinstance(entry, str):
            if entry != "market":
                raise StrategyError(f"bracket({product!r}): entry must be 'market', a price or None (got {entry!r})")
            coid = self.buy(product, size)
        else:
            if not stop_loss < entry < take_profit:
                raise StrategyError(
                    f"bracket({product!r}): entry {entry} must lie between stop_loss {stop_loss} and take_profit {take_profit}"
                )
            coid = self.buy(product, size, price=entry)
        self._brackets[coid] = _PendingBracket(product, stop_loss, take_profit)
        return coid

    def _submit_bracket(self, product: str, size: Decimal, stop_loss: Decimal, take_profit: Decimal) -> str:
        ctx = self.ctx
        spec = OrderSpec(
            client_order_id=ctx.new_client_order_id(),
            product_id=product,
            side=Side.SELL,
            kind=OrderKind.BRACKET,
            base_size=size,
            limit_price=take_profit,
            stop_trigger_price=stop_loss,
        )
        return ctx.submit(spec)

    def _track_brackets(self, order: Order) -> None:
        if not self._brackets or not order.is_terminal:
            return
        pending = self._brackets.pop(order.client_order_id, None)
        if pending is None:
            return
        filled = order.filled_size
        if filled > ZERO and order.status is not OrderStatus.REJECTED:
            self._submit_bracket(pending.product_id, filled, pending.stop_loss, pending.take_profit)

    @property
    def pending_brackets(self) -> list[str]:
        """Client order ids of entries whose bracket exit is not placed yet."""
        return list(self._brackets)

    def cancel(self, client_order_id: str) -> None:
        """Cancel one of this strategy's orders."""
        self.ctx.cancel(client_order_id)

    def cancel_all(self, product: str | None = None) -> int:
        """Cancel every live order of this strategy (of ``product`` only, if given); returns how many."""
        orders = list(self.ctx.open_orders(product))
        for order in orders:
            self.ctx.cancel(order.client_order_id)
        return len(orders)

    def set_timer(self, name: str, interval: timedelta | float | None) -> None:
        """Call ``on_timer(name, now)`` every ``interval`` (a timedelta or seconds); None cancels."""
        if interval is not None and not isinstance(interval, timedelta):
            if isinstance(interval, bool) or not isinstance(interval, int | float | Decimal):
                raise StrategyError(f"set_timer({name!r}): interval must be a timedelta or seconds, got {interval!r}")
            interval = timedelta(seconds=float(interval))
        if interval is not None and interval <= timedelta(0):
            raise StrategyError(f"set_timer({name!r}): interval must be positive, got {interval}")
        self.ctx.set_timer(name, interval)


# --- loading ------------------------------------------------------------------------------


def load_strategy(spec: str) -> type[Strategy]:
    """The strategy class named by ``spec``: a built-in name (``"sma_cross"``) or ``"path/to/file.py:ClassName"``.

    ``"path/to/file.py"`` alone works when the file defines exactly one Strategy subclass.
    Errors are :class:`~cryptoj.errors.ConfigError` at key ``strategy.name``, saying what is missing.
    """
    key = "strategy.name"
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError([(key, "empty strategy name; give a built-in name or path/to/file.py:ClassName")])
    spec = spec.strip()
    path_text, sep, class_name = spec.rpartition(":")
    if not sep:
        path_text, class_name = spec, ""
    if not path_text.endswith(".py"):
        if sep:
            raise ConfigError([(key, f"{spec!r}: expected path/to/file.py:ClassName (the path must end in .py)")])
        from cryptoj.strategies import BUILTINS, builtin

        if spec not in BUILTINS:
            names = ", ".join(sorted(BUILTINS))
            raise ConfigError([(key, f"unknown strategy {spec!r}; built-ins: {names}, or path/to/file.py:ClassName")])
        return builtin(spec)
    path = Path(path_text).expanduser()
    if not path.is_file():
        raise ConfigError([(key, f"strategy file {str(path)!r} not found")])
    module = _import_file(path, key)
    found = {
        obj.__name__: obj
        for obj in vars(module).values()
        if inspect.isclass(obj) and issubclass(obj, Strategy) and obj is not Strategy and obj.__module__ == module.__name__
    }
    if not class_name:
        if len(found) != 1:
            names = ", ".join(sorted(found)) or "none"
            raise ConfigError([(key, f"{path}: name the class as {path}:ClassName (Strategy subclasses found: {names})")])
        return next(iter(found.values()))
    obj = getattr(module, class_name, None)
    if obj is None:
        names = ", ".join(sorted(found)) or "none"
        raise ConfigError([(key, f"{path}: no class {class_name!r} (Strategy subclasses in the file: {names})")])
    if not inspect.isclass(obj) or not issubclass(obj, Strategy):
        raise ConfigError([(key, f"{path}:{class_name} is not a Strategy subclass (it is {type(obj).__name__})")])
    return obj


def _import_file(path: Path, key: str) -> Any:
    resolved = path.resolve()
    module_name = "cryptoj_user_strategy_" + re.sub(r"\W", "_", str(resolved))
    if module_name in sys.modules:
        return sys.modules[module_name]
    loader_spec = importlib.util.spec_from_file_location(module_name, resolved)
    if loader_spec is None or loader_spec.loader is None:  # pragma: no cover - only for non-.py paths, excluded above
        raise ConfigError([(key, f"{path}: cannot be imported as a Python module")])
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[module_name] = module
    try:
        loader_spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[module_name]
        raise ConfigError([(key, f"{path}: failed to import: {type(exc).__name__}: {exc}")]) from exc
    return module


def make_strategy(spec: str, params: Mapping[str, Any] | None = None, *, products: Sequence[str] | None = None) -> Strategy:
    """``load_strategy(spec)(params, products=products)`` — one call for the engine and the CLI."""
    return load_strategy(spec)(params, products=products)
