"""``dynamic_weights``: a portfolio rebalancer that weights pairs by momentum, volume, volatility and spread.

Per product, every closed bar of ``timeframe`` updates (O(1) each): the close, the
momentum (``close / close[momentum_window bars ago] - 1``), the volatility (population
standard deviation of bar-to-bar returns over ``volatility_window`` bars), the quote
volume over ``volume_window`` bars and over the last 24 h of bars. A product is
*ready* once its momentum and volatility have enough bars; products that are not
ready are left alone (neither bought nor sold). The per-bar work is a handful of Decimal
additions; the standard deviation is only computed at a rebalance.

**Rebalance** (at the first bar where every product is ready — or one
``rebalance_interval`` after the first one became ready — then every
``rebalance_interval`` seconds of engine time, or earlier when some weight has drifted
more than ``drift_threshold`` from its target; drift is checked once per bar period, at
the first bar of each new period, with the latest close of every product):

1. *Filters* — a ready pair is eligible unless its base currency is in
   ``excluded_currencies`` (stablecoins), its price is below ``min_price``, its quote
   volume over the last 24 h of bars is below ``min_volume_24h``, or its book spread
   ``(ask - bid) / mid`` is above ``max_spread`` (no book = spread 0).
2. *Scores* — for each eligible pair, components in ``[0, 1]`` across the eligible set:
   momentum min-max scaled (0.5 for all when they are equal); volume, volatility and spread
   divided by their maximum (0 when the maximum is 0). Then
   ``score = momentum_weight·momentum + volume_weight·volume + volatility_weight·(1 - volatility)
   + spread_weight·(1 - spread)`` (defaults 0.4 / 0.3 / 0.2 / 0.1).
3. *Selection* — the ``max_pairs`` best scores (ties by product id); while
   ``n · min_weight > 1`` the lowest is dropped.
4. *Weights* — scores normalised to sum to 1 and clamped to ``[min_weight, max_weight]``:
   ``w = clamp(λ·score)`` with ``λ`` chosen so the weights sum to 1 (pairs at a bound stay
   there, the others share the rest in proportion to their scores). If even every pair at
   ``max_weight`` sums below 1, the rest stays in the quote currency. All scores 0 → equal weights.
5. *Orders* — target value = ``weight · equity · (1 - cash_reserve)``. **Sells first**: every
   product held above its target (a product no longer selected — "removed" — has target 0
   and is sold out) gets a market sell of the excess, rounded down to the base increment.
   **Buys after every sell has finished**: market buys (quote-sized) of the shortfall, capped
   by the available quote balance divided by ``1 + fee_buffer``. Orders below the product's
   minimum base/quote size are not sent. No new rebalance starts while orders are live.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from cryptoj.errors import ConfigError
from cryptoj.indicators import RateOfChange, RollingStdDev, RollingSum
from cryptoj.model.candles import Timeframe
from cryptoj.model.money import ZERO
from cryptoj.model.orders import Order
from cryptoj.strategy import BarLike, Param, Strategy

__all__ = ["DynamicWeights", "PairScore", "allocate_weights"]

_ONE = Decimal(1)
_HALF = Decimal("0.5")
STABLECOINS = ("USDT", "USDC", "DAI", "BUSD", "TUSD", "USDP", "PYUSD", "GUSD", "FDUSD", "EURC", "UST")


class _ProductState:
    __slots__ = ("close", "momentum", "returns", "volume", "volume_24h")

    def __init__(self, momentum: int, volatility: int, volume: int, day_bars: int) -> None:
        self.momentum = RateOfChange(momentum)
        self.returns = RollingStdDev(volatility)
        self.volume = RollingSum(volume)
        self.volume_24h = RollingSum(day_bars)
        self.close: Decimal | None = None

    @property
    def ready(self) -> bool:
        return self.momentum.value is not None and self.returns.full


@dataclass(frozen=True, slots=True)
class PairScore:
    """One eligible pair's normalised components and score at a rebalance."""

    product_id: str
    momentum: Decimal
    volume: Decimal
    volatility: Decimal
    spread: Decimal
    score: Decimal


def allocate_weights(scores: Sequence[tuple[str, Decimal]], min_weight: Decimal, max_weight: Decimal) -> dict[str, Decimal]:
    """Weights ``w_i = clamp(λ · score_i, min_weight, max_weight)`` with ``λ`` chosen so they sum to 1.

    ``scores`` come best first; pairs are dropped from the end while ``n · min_weight > 1``.
    Without clamping this is plain normalisation (``score / sum``); with it, pairs at a bound
    stay there and the others share the rest in proportion to their scores, so a better
    score never gets a smaller weight. When even every pair at ``max_weight`` (zero scores
    at ``min_weight``) sums below 1, that is the answer and the rest stays in cash.
    All scores 0: equal weights (clamped).
    """
    items = list(scores)
    while items and len(items) * min_weight > _ONE:
        items.pop()
    if not items:
        return {}
    lo, hi = min_weight, max_weight

    def clamp(value: Decimal) -> Decimal:
        return hi if value > hi else lo if value < lo else value

    positive = [s for _, s in items if s > ZERO]
    if not positive:
        equal = clamp(_ONE / Decimal(len(items)))
        return {pid: equal for pid, _ in items}
    if len(items) * lo >= _ONE:
        return {pid: lo for pid, _ in items}

    def total(lam: Decimal) -> Decimal:
        return sum((clamp(lam * s) for _, s in items), ZERO)

    # total(λ) is continuous, piecewise linear and non-decreasing; it bends where λ·s hits a bound
    breaks = sorted({lo / s for s in positive} | {hi / s for s in positive})
    prev = ZERO
    for point in breaks:
        if total(point) >= _ONE:
            break
        prev = point
    else:
        return {pid: hi if s > ZERO else lo for pid, s in items}
    mid = (prev + point) / 2
    fixed = ZERO
    slope = ZERO
    for _, s in items:
        value = mid * s
        if value <= lo:
            fixed += lo
        elif value >= hi:
            fixed += hi
        else:
            slope += s
    lam = (_ONE - fixed) / slope if slope > ZERO else point
    return {pid: clamp(lam * s) for pid, s in items}


def _scaled(values: Mapping[str, Decimal]) -> dict[str, Decimal]:
    top = max(values.values(), default=ZERO)
    if top <= ZERO:
        return {k: ZERO for k in values}
    return {k: v / top for k, v in values.items()}


def _min_max(values: Mapping[str, Decimal]) -> dict[str, Decimal]:
    lo, hi = min(values.values()), max(values.values())
    if hi == lo:
        return {k: _HALF for k in values}
    return {k: (v - lo) / (hi - lo) for k, v in values.items()}


class DynamicWeights(Strategy):
    """Score-weighted rebalancing across the configured products (long only, spot)."""

    name = "dynamic_weights"
    params = (
        Param("timeframe", Timeframe, "1m", doc="bar width every window counts in"),
        Param("momentum_window", int, 60, min=1, max=100_000, doc="bars over which momentum is measured"),
        Param("volatility_window", int, 60, min=2, max=100_000, doc="bars of returns for the volatility"),
        Param("volume_window", int, 60, min=1, max=100_000, doc="bars of quote volume for the volume score"),
        Param("momentum_weight", Decimal, Decimal("0.4"), min=Decimal(0), max=Decimal(1), doc="score weight of momentum"),
        Param("volume_weight", Decimal, Decimal("0.3"), min=Decimal(0), max=Decimal(1), doc="score weight of volume"),
        Param("volatility_weight", Decimal, Decimal("0.2"), min=Decimal(0), max=Decimal(1), doc="score weight of 1 - volatility"),
        Param("spread_weight", Decimal, Decimal("0.1"), min=Decimal(0), max=Decimal(1), doc="score weight of (1 - spread)"),
        Param("min_weight", Decimal, Decimal("0.05"), min=Decimal(0), max=Decimal(1), doc="lowest weight of a selected pair"),
        Param("max_weight", Decimal, Decimal("0.5"), min=Decimal(0), max=Decimal(1), doc="highest weight of a pair"),
        Param("max_pairs", int, 5, min=1, max=100, doc="most pairs held at once"),
        Param("rebalance_interval", int, 3600, min=1, doc="seconds between scheduled rebalances"),
        Param("drift_threshold", Decimal, Decimal("0.05"), min=Decimal(0), max=Decimal(1), doc="rebalance early past this drift"),
        Param("min_volume_24h", Decimal, Decimal(0), min=Decimal(0), doc="filter: quote volume over the last 24 h of bars"),
        Param("min_price", Decimal, Decimal(0), min=Decimal(0), doc="filter: lowest price"),
        Param("max_spread", Decimal, Decimal("0.01"), min=Decimal(0), doc="filter: widest (ask - bid) / mid"),
        Param("excluded_currencies", tuple, STABLECOINS, doc="filter: base currencies never held (stablecoins)"),
        Param("cash_reserve", Decimal, Decimal("0.02"), min=Decimal(0), max=Decimal(1), doc="share of equity kept in quote"),
        Param("fee_buffer", Decimal, Decimal("0.01"), min=Decimal(0), max=Decimal("0.5"), doc="quote kept back for fees on buys"),
    )

    @classmethod
    def check_params(cls, values: Mapping[str, Any]) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        total = values["momentum_weight"] + values["volume_weight"] + values["volatility_weight"] + values["spread_weight"]
        if total <= 0:
            problems.append(("momentum_weight", "the four score weights must not all be 0"))
        if values["min_weight"] > values["max_weight"]:
            problems.append(("min_weight", f"must not exceed max_weight ({values['max_weight']}), got {values['min_weight']}"))
        if values["max_weight"] <= 0:
            problems.append(("max_weight", "must be positive"))
        return problems

    def on_start(self) -> None:
        if not self.products:
            raise ConfigError([("products", "dynamic_weights needs at least one product")])
        quotes = {self.product(pid).quote_currency for pid in self.products}
        if len(quotes) != 1:
            raise ConfigError([("products", f"dynamic_weights needs one quote currency, got {', '.join(sorted(quotes))}")])
        self.quote: str = quotes.pop()
        p = self.p
        day_bars = max(1, 86_400 // self.timeframe.seconds)
        self._state = {
            pid: _ProductState(p.momentum_window, p.volatility_window, p.volume_window, day_bars) for pid in self.products
        }
        self._interval = timedelta(seconds=p.rebalance_interval)
        self._excluded = frozenset(c.upper() for c in p.excluded_currencies)
        self.targets: dict[str, Decimal] = {}
        self.scores: list[PairScore] = []
        self.last_rebalance: datetime | None = None
        self.rebalances = 0
        self._first_ready: datetime | None = None
        self._drift_checked: datetime | None = None
        self._selling: set[str] = set()
        self._buying: set[str] = set()

    # -- per bar (cheap) ---------------------------------------------------------------------

    def on_bar(self, product: str, bar: BarLike) -> None:
        st = self._state.get(product)
        if st is None:
            return
        close = bar.close
        prev = st.close
        st.close = close
        st.momentum.update(close)
        if prev is not None:
            st.returns.add(close / prev - _ONE)  # the deviation is computed only at a rebalance
        quote_volume = close * bar.volume
        st.volume.update(quote_volume)
        st.volume_24h.update(quote_volume)
        if self._selling or self._buying:
            return
        now = self.now()
        last = self.last_rebalance
        if last is None:
            if not st.ready:
                return
            if self._first_ready is None:
                self._first_ready = now
            if all(s.ready for s in self._state.values()) or now - self._first_ready >= self._interval:
                self.rebalance("initial")
        elif now - last >= self._interval:
            self.rebalance("interval")
        elif self.targets and bar.start != self._drift_checked:
            self._drift_checked = bar.start  # once per bar period, not once per product
            if self.drift() > self.p.drift_threshold:
                self.rebalance("drift")

    def _holding(self, pid: str) -> tuple[Decimal, Decimal]:
        """(total, available) base balance of ``pid``'s base currency."""
        bal = self.balance(self.product(pid).base_currency)
        return bal.total, bal.available

    def drift(self) -> Decimal:
        """Largest ``|current weight - target weight|`` over the ready products (0 without equity)."""
        equity = self.equity()
        if equity <= ZERO:
            return ZERO
        worst = ZERO
        for pid, st in self._state.items():
            if st.close is None or not st.ready:
                continue
            held, _ = self._holding(pid)
            target = self.targets.get(pid, ZERO)
            if held == ZERO and target == ZERO:
                continue
            gap = abs(held * st.close / equity - target)
            if gap > worst:
                worst = gap
        return worst

    # -- rebalancing ------------------------------------------------------------------------------

    def _eligible(self) -> dict[str, tuple[Decimal, Decimal]]:
        """Ready pairs passing the filters -> (spread, volume score input)."""
        p = self.p
        out: dict[str, tuple[Decimal, Decimal]] = {}
        for pid, st in self._state.items():
            if not st.ready or st.close is None:
                continue
            info = self.product(pid)
            if info.base_currency.upper() in self._excluded or st.close < p.min_price:
                continue
            if st.volume_24h.partial_sum < p.min_volume_24h:
                continue
            spread = ZERO
            book = self.book(pid)
            if book is not None:
                mid, width = book.mid(), book.spread()
                if mid is not None and width is not None and mid > ZERO:
                    spread = max(width / mid, ZERO)
            if spread > p.max_spread:
                continue
            volume = st.volume.value if st.volume.value is not None else st.volume.partial_sum
            out[pid] = (spread, volume)
        return out

    def compute_scores(self) -> list[PairScore]:
        """Scores of the eligible pairs, best first (ties by product id)."""
        eligible = self._eligible()
        if not eligible:
            return []
        p = self.p
        momentum = _min_max({pid: self._state[pid].momentum.value or ZERO for pid in eligible})
        volume = _scaled({pid: v for pid, (_, v) in eligible.items()})
        volatility = _scaled({pid: self._state[pid].returns.compute() or ZERO for pid in eligible})
        spread = _scaled({pid: s for pid, (s, _) in eligible.items()})
        scores = [
            PairScore(
                pid,
                momentum[pid],
                volume[pid],
                volatility[pid],
                spread[pid],
                p.momentum_weight * momentum[pid]
                + p.volume_weight * volume[pid]
                + p.volatility_weight * (_ONE - volatility[pid])
                + p.spread_weight * (_ONE - spread[pid]),
            )
            for pid in eligible
        ]
        scores.sort(key=lambda s: (-s.score, s.product_id))
        return scores

    def rebalance(self, reason: str) -> None:
        """Recompute targets and send the sells (the buys follow when the sells are done)."""
        self.scores = self.compute_scores()
        chosen = self.scores[: self.p.max_pairs]
        self.targets = allocate_weights([(s.product_id, s.score) for s in chosen], self.p.min_weight, self.p.max_weight)
        self.last_rebalance = self.now()
        self.rebalances += 1
        self.log.info(
            "dynamic_weights.rebalance",
            reason=reason,
            targets={pid: str(w) for pid, w in self.targets.items()},
        )
        investable = self.equity() * (_ONE - self.p.cash_reserve)
        for pid, st in self._state.items():
            if not st.ready or st.close is None:
                continue
            held, available = self._holding(pid)
            if held <= ZERO:
                continue
            target_value = self.targets.get(pid, ZERO) * investable
            excess = held * st.close - target_value
            if excess <= ZERO:
                continue
            info = self.product(pid)
            size = available if pid not in self.targets else min(available, excess / st.close)
            size = info.round_size(size)
            if size <= ZERO or size < info.base_min_size or size * st.close < info.quote_min_size:
                continue
            self._selling.add(self.sell(pid, size))
        if not self._selling:
            self._buy()

    def _buy(self) -> None:
        investable = self.equity() * (_ONE - self.p.cash_reserve)
        cash = self.balance(self.quote).available / (_ONE + self.p.fee_buffer)
        for pid, weight in self.targets.items():
            st = self._state[pid]
            if st.close is None:  # pragma: no cover - targets only hold ready pairs, which have a close
                continue
            held, _ = self._holding(pid)
            shortfall = weight * investable - held * st.close
            if shortfall <= ZERO or cash <= ZERO:
                continue
            info = self.product(pid)
            spend = info.round_quote_size(min(shortfall, cash))
            if spend <= ZERO or spend < info.quote_min_size or spend / st.close < info.base_min_size:
                continue
            cash -= spend
            self._buying.add(self.buy(pid, quote_size=spend))

    def on_order_update(self, order: Order) -> None:
        if not order.is_terminal:
            return
        coid = order.client_order_id
        if coid in self._selling:
            self._selling.discard(coid)
            if not self._selling:
                self._buy()
        else:
            self._buying.discard(coid)

    @property
    def busy(self) -> bool:
        """True while rebalance orders are live."""
        return bool(self._selling or self._buying)
