"""A seeded synthetic market: price model, agents and candle history.

Everything here is deterministic in the seed. Prices are kept as whole numbers
of the product's ``price_increment`` ("ticks") and sizes as whole numbers of its
``base_increment`` ("lots"), so every price and size handed to the exchange is an
exact :class:`~decimal.Decimal` on the product's grid — the random model works
in ints and floats only for *drawing* numbers, never for money.

Three parts:

* :class:`CandleHistory` — candles for any past bucket, synthesised on demand
  from a seeded function of the bucket time (multi-scale value noise), so a
  30-day history costs no memory and the same seed (and anchor) always gives
  the same bars.
* :class:`ProductModel` — the mid price of one product: a random walk in ticks
  with two volatility regimes (calm / volatile, switching at random) and rare
  jumps.
* :class:`SyntheticMarket` — drives maker agents (a ladder of at least
  ``levels`` resting orders a side around the mid) and taker agents (market
  orders) against an :class:`AgentVenue` — in the simulator that is the
  :class:`~cryptoj.venues.simulated.exchange.SimExchange`, through a small
  adapter in ``server.py``. One :meth:`SyntheticMarket.step` is one market
  event; the server calls it ``rate × speed`` times per second.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Protocol

from cryptoj.errors import InvalidValue
from cryptoj.model.instruments import Product
from cryptoj.model.money import Side

__all__ = [
    "GRANULARITIES",
    "AgentVenue",
    "Candle",
    "CandleHistory",
    "MarketParams",
    "ProductModel",
    "SyntheticMarket",
    "default_params",
]

GRANULARITIES: dict[str, int] = {
    "ONE_MINUTE": 60,
    "FIVE_MINUTE": 300,
    "FIFTEEN_MINUTE": 900,
    "THIRTY_MINUTE": 1800,
    "ONE_HOUR": 3600,
    "TWO_HOUR": 7200,
    "SIX_HOUR": 21600,
    "ONE_DAY": 86400,
}

_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def _unit(seed: int, *keys: int) -> float:
    """A deterministic uniform number in [0, 1) for (seed, keys)."""
    h = _splitmix64(seed & _MASK64)
    for k in keys:
        h = _splitmix64(h ^ (k & _MASK64))
    return (h >> 11) / float(1 << 53)


def _signed(seed: int, *keys: int) -> float:
    """A deterministic number in [-1, 1)."""
    return 2.0 * _unit(seed, *keys) - 1.0


def _product_key(product_id: str) -> int:
    """A stable (not ``hash()``-randomised) integer for a product id."""
    value = 1469598103934665603
    for byte in product_id.encode():
        value = ((value ^ byte) * 1099511628211) & _MASK64
    return value


@dataclass(frozen=True, slots=True)
class MarketParams:
    """Knobs of one product's synthetic market.

    ``start_price`` is the price level the candle history oscillates around and
    where the live market starts. ``level_spacing_ticks`` is the distance between
    two maker levels; ``lot`` is the smallest agent order size (sizes are drawn as
    1..``max_lots`` lots). Volatilities are per step, in basis points of the mid.
    """

    start_price: Decimal
    level_spacing_ticks: int = 1
    lot: Decimal = Decimal("0.001")
    max_lots: int = 20
    levels: int = 50
    calm_vol_bps: float = 0.5
    volatile_vol_bps: float = 3.0
    regime_switch_prob: float = 0.01
    jump_prob: float = 0.002
    jump_bps: float = 40.0
    taker_prob: float = 0.3
    taker_max_lots: int = 30

    def __post_init__(self) -> None:
        if self.start_price <= 0:
            raise InvalidValue("market.start_price", self.start_price, "must be positive")
        if self.level_spacing_ticks < 1:
            raise InvalidValue("market.level_spacing_ticks", self.level_spacing_ticks, "must be at least 1")
        if self.levels < 1:
            raise InvalidValue("market.levels", self.levels, "must be at least 1")
        if self.lot <= 0 or self.max_lots < 1 or self.taker_max_lots < 1:
            raise InvalidValue("market.lot", (self.lot, self.max_lots, self.taker_max_lots), "lot sizes must be positive")
        for name in ("regime_switch_prob", "jump_prob", "taker_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise InvalidValue(f"market.{name}", value, "must be a probability in [0, 1]")


_DEFAULT_START = {"BTC": Decimal("60000"), "ETH": Decimal("3000"), "SOL": Decimal("150")}
_DEFAULT_LOT = {"BTC": Decimal("0.0005"), "ETH": Decimal("0.005"), "SOL": Decimal("0.1")}


def default_params(product: Product) -> MarketParams:
    """Sensible parameters for a product: a start price by base currency, 1 bp level spacing."""
    start = _DEFAULT_START.get(product.base_currency, Decimal("100"))
    lot = max(_DEFAULT_LOT.get(product.base_currency, Decimal("0.1")), product.base_min_size, product.base_increment)
    spacing_ticks = max(1, int(start / Decimal(10000) / product.price_increment))
    return MarketParams(start_price=start, level_spacing_ticks=spacing_ticks, lot=lot)


# --- candle history ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Candle:
    """One OHLCV bar; ``start`` is Unix seconds of the bucket's open."""

    start: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal

    def to_coinbase(self, product_id: str | None = None) -> dict[str, str]:
        out = {
            "start": str(self.start),
            "low": str(self.low),
            "high": str(self.high),
            "open": str(self.open),
            "close": str(self.close),
            "volume": str(self.volume),
        }
        if product_id is not None:
            out["product_id"] = product_id
        return out


# (period seconds, amplitude in log-price) of the value-noise octaves
_OCTAVES: tuple[tuple[int, float], ...] = (
    (60, 0.0006),
    (900, 0.002),
    (3600, 0.004),
    (21600, 0.01),
    (86400, 0.03),
    (604800, 0.06),
)


class CandleHistory:
    """Past candles of one product, computed on demand from the seed.

    The log price at time ``t`` is a sum of value-noise octaves (periods from a
    minute to a week) around ``log(start_price)``; a bar's open and close are the
    path at its two ends, its high/low add a seeded excursion that grows with the
    square root of the bar length, its volume is seeded too. Nothing is stored:
    any of the past 30+ days is one cheap function call away.

    With an ``anchor`` (Unix seconds) the path is shifted to pass through
    ``start_price`` exactly at the anchor: the simulator anchors it at its start
    time, so the history leads into the live market, which starts at the start
    price — the live stream then depends on the seed only, not on the wall clock.
    """

    def __init__(self, product: Product, params: MarketParams, seed: int, *, anchor: float | None = None) -> None:
        self.product = product
        self.params = params
        self.anchor = anchor
        self._seed = (seed * 1_000_003) ^ _product_key(product.product_id)
        self._log_p0 = math.log(float(params.start_price))
        # Pinned at ``anchor``: the path passes through ``start_price`` there, so a live market
        # starting at ``anchor`` starts at the start price whatever the wall clock said.
        self._shift = self._noise(anchor) if anchor is not None else 0.0

    def _noise(self, t: float) -> float:
        total = 0.0
        for octave, (period, amplitude) in enumerate(_OCTAVES):
            n = math.floor(t / period)
            frac = t / period - n
            a = _signed(self._seed, octave, n)
            b = _signed(self._seed, octave, n + 1)
            w = frac * frac * (3.0 - 2.0 * frac)  # smoothstep
            total += amplitude * (a + (b - a) * w)
        return total

    def log_price(self, t: float) -> float:
        return self._log_p0 + self._noise(t) - self._shift

    def _ticks(self, log_price: float) -> int:
        return max(1, round(math.exp(log_price) / float(self.product.price_increment)))

    def price_ticks(self, t: float) -> int:
        """The synthetic price at ``t`` (Unix seconds) in whole price increments."""
        return self._ticks(self.log_price(t))

    def price(self, t: float) -> Decimal:
        return self.price_ticks(t) * self.product.price_increment

    def candle(self, start: int, granularity: int) -> Candle:
        """The bar opening at ``start`` (aligned down to ``granularity`` seconds)."""
        if granularity <= 0:
            raise InvalidValue("granularity", granularity, "must be a positive number of seconds")
        start -= start % granularity
        lp_open = self.log_price(start)
        lp_close = self.log_price(start + granularity)
        excursion = 0.0004 * math.sqrt(granularity / 60.0)
        up = excursion * _unit(self._seed, 101, start, granularity)
        down = excursion * _unit(self._seed, 102, start, granularity)
        inc = self.product.price_increment
        o = self._ticks(lp_open)
        c = self._ticks(lp_close)
        h = max(o, c, self._ticks(max(lp_open, lp_close) + up))
        lo = min(o, c, self._ticks(min(lp_open, lp_close) - down))
        lots = 1 + int(200 * (granularity / 60.0) * _unit(self._seed, 103, start, granularity))
        return Candle(
            start=start,
            open=o * inc,
            high=h * inc,
            low=lo * inc,
            close=c * inc,
            volume=lots * self.params.lot,
        )

    def candles(self, start: int, end: int, granularity: int, *, limit: int = 300) -> list[Candle]:
        """Bars whose open lies in ``[start, end)``, newest first, at most ``limit``."""
        if end < start:
            raise InvalidValue("end", end, f"before start {start}")
        first = start - start % granularity
        if first < start:
            first += granularity
        out: list[Candle] = []
        t = end - end % granularity
        if t == end:
            t -= granularity
        while t >= first and len(out) < limit:
            out.append(self.candle(t, granularity))
            t -= granularity
        return out


# --- live market --------------------------------------------------------------


class AgentVenue(Protocol):
    """What the market's agents need from an exchange (the server adapts SimExchange to it)."""

    def agent_place_limit(self, product_id: str, side: Side, price: Decimal, size: Decimal) -> str | None:
        """Place a GTC limit order for the maker account; the venue order id if it rests, else None."""
        ...

    def agent_cancel(self, product_id: str, order_id: str) -> None:
        """Cancel a maker order (a no-op if it is already gone)."""
        ...

    def agent_market(self, product_id: str, side: Side, size: Decimal) -> None:
        """Send a market order of base ``size`` from the taker account."""
        ...

    def agent_is_open(self, product_id: str, order_id: str) -> bool:
        """Whether a maker order still rests on the book."""
        ...


@dataclass(slots=True)
class ProductModel:
    """The mid price of one product in ticks: random walk, two regimes, jumps."""

    product: Product
    params: MarketParams
    mid_ticks: int
    volatile: bool = False
    jumps: int = 0

    def advance(self, rng: random.Random) -> int:
        """Move the mid one step; returns the change in ticks."""
        p = self.params
        if rng.random() < p.regime_switch_prob:
            self.volatile = not self.volatile
        vol_bps = p.volatile_vol_bps if self.volatile else p.calm_vol_bps
        move = rng.gauss(0.0, vol_bps) * self.mid_ticks / 10000.0
        if rng.random() < p.jump_prob:
            self.jumps += 1
            move += (1 if rng.random() < 0.5 else -1) * p.jump_bps * (0.5 + rng.random()) * self.mid_ticks / 10000.0
        delta = round(move)
        floor_ticks = p.level_spacing_ticks * (p.levels + 2)
        self.mid_ticks = max(floor_ticks, self.mid_ticks + delta)
        return delta

    @property
    def mid(self) -> Decimal:
        return self.mid_ticks * self.product.price_increment

    def ladder(self) -> tuple[list[int], list[int]]:
        """Target maker price levels (ticks): bids best-first, asks best-first."""
        g = self.params.level_spacing_ticks
        best_bid = ((self.mid_ticks - 1) // g) * g
        best_ask = best_bid + g
        bids = [best_bid - i * g for i in range(self.params.levels) if best_bid - i * g > 0]
        asks = [best_ask + i * g for i in range(self.params.levels)]
        return bids, asks


@dataclass(slots=True)
class _MakerBook:
    """The maker agent's resting orders of one product: (side, price ticks) → order id."""

    orders: dict[tuple[Side, int], str] = field(default_factory=dict)


class SyntheticMarket:
    """Seeded market flow for several products against an :class:`AgentVenue`.

    The same seed (and the same outside orders) gives the same sequence of agent
    actions. :meth:`prime` lays out the initial ladders; :meth:`step` performs one
    market event on one product (chosen in rotation): a mid move, maybe a taker
    trade, then the makers re-quote so every side keeps ``levels`` levels.
    """

    def __init__(
        self,
        products: Sequence[Product],
        venue: AgentVenue,
        *,
        seed: int,
        params: dict[str, MarketParams] | None = None,
        start_time: float | None = None,
    ) -> None:
        if not products:
            raise InvalidValue("market.products", [], "at least one product is required")
        self.venue = venue
        self.rng = random.Random(seed)
        self.seed = seed
        self.steps = 0
        self.models: dict[str, ProductModel] = {}
        self.histories: dict[str, CandleHistory] = {}
        self._makers: dict[str, _MakerBook] = {}
        self._order: list[str] = []
        for product in products:
            p = (params or {}).get(product.product_id) or default_params(product)
            # The history is pinned to the start price at ``start_time``, so the live mid starts at
            # the same price (and the same seed gives the same stream) whenever the market starts.
            history = CandleHistory(product, p, seed, anchor=start_time)
            mid = history.price_ticks(start_time) if start_time is not None else round(p.start_price / product.price_increment)
            self.models[product.product_id] = ProductModel(product=product, params=p, mid_ticks=mid)
            self.histories[product.product_id] = history
            self._makers[product.product_id] = _MakerBook()
            self._order.append(product.product_id)

    @property
    def product_ids(self) -> list[str]:
        return list(self._order)

    def prime(self) -> None:
        """Place the initial ladders of every product."""
        for pid in self._order:
            self._requote(pid)

    def step(self) -> str:
        """One market event; returns the product id it happened on."""
        pid = self._order[self.steps % len(self._order)]
        self.steps += 1
        model = self.models[pid]
        model.advance(self.rng)
        if self.rng.random() < model.params.taker_prob:
            side = Side.BUY if self.rng.random() < 0.5 else Side.SELL
            lots = self.rng.randint(1, model.params.taker_max_lots)
            self.venue.agent_market(pid, side, lots * model.params.lot)
        self._requote(pid)
        return pid

    def run_steps(self, n: int) -> list[str]:
        return [self.step() for _ in range(n)]

    def maker_levels(self, product_id: str) -> dict[tuple[Side, int], str]:
        """The maker's resting orders (side, price ticks) → order id, after the last re-quote."""
        return dict(self._makers[product_id].orders)

    def requote(self, product_id: str) -> None:
        """Let the makers of ``product_id`` restore their ladder now (e.g. after an injected trade)."""
        self._requote(product_id)

    def _size(self, model: ProductModel) -> Decimal:
        return self.rng.randint(1, model.params.max_lots) * model.params.lot

    def _requote(self, product_id: str) -> None:
        model = self.models[product_id]
        maker = self._makers[product_id]
        bids, asks = model.ladder()
        wanted: set[tuple[Side, int]] = {(Side.BUY, t) for t in bids} | {(Side.SELL, t) for t in asks}
        # forget filled orders, cancel those no longer on the ladder (first, so nothing self-crosses)
        for key, order_id in list(maker.orders.items()):
            if key not in wanted:
                self.venue.agent_cancel(product_id, order_id)
                del maker.orders[key]
            elif not self.venue.agent_is_open(product_id, order_id):
                del maker.orders[key]
        inc = model.product.price_increment
        for side, ticks_list in ((Side.BUY, bids), (Side.SELL, asks)):
            for ticks in ticks_list:
                key = (side, ticks)
                if key in maker.orders:
                    continue
                placed = self.venue.agent_place_limit(product_id, side, ticks * inc, self._size(model))
                if placed is not None:
                    maker.orders[key] = placed

    def cancel_all(self) -> None:
        """Withdraw every maker order (used when switching to replay or shutting down)."""
        for pid, maker in self._makers.items():
            for order_id in maker.orders.values():
                self.venue.agent_cancel(pid, order_id)
            maker.orders.clear()


def parse_product_list(text: str | Iterable[str]) -> list[str]:
    """Split ``"BTC-USD,ETH-USD"`` into product ids, checking each looks like BASE-QUOTE."""
    items = text.split(",") if isinstance(text, str) else list(text)
    out: list[str] = []
    for raw in items:
        pid = raw.strip().upper()
        if not pid:
            continue
        parts = pid.split("-")
        if len(parts) != 2 or not all(parts):
            raise InvalidValue("products", raw, "expected BASE-QUOTE, e.g. BTC-USD")
        if pid not in out:
            out.append(pid)
    if not out:
        raise InvalidValue("products", text, "no product ids given")
    return out
