"""``rsi_reversion``: buy oversold, sell overbought, with a stop loss and a take-profit ladder.

Per product, on every closed bar of ``timeframe`` (Wilder's RSI over ``period`` closes):

* **entry** — flat (less than the product's minimum size held), no order of ours live, and
  ``RSI < buy_below``: a market buy of ``order_size`` base;
* **exits**, checked in this order while a position is held (entry = the position's
  average entry price):

  1. **stop loss** — ``close <= entry · (1 - stop_loss)``: sell the whole position;
  2. **overbought** — ``RSI > sell_above``: sell the whole position;
  3. **take-profit ladder** — level ``i`` is reached when ``close >= entry · (1 + take_profit_levels[i])``;
     it sells ``take_profit_fractions[i]`` of the position held when the ladder started
     (levels passed together in one bar are sold in one order). If what would remain is
     below the minimum size, the whole position is sold. A ladder whose fractions sum to
     less than 1 leaves a runner for the stop loss or the RSI exit.

* one order per product at a time: no new order while one of ours is live there;
* sizes are rounded down to the base increment; a sell below the minimum size is not sent.

Exits are decided on bar closes (the engine's risk layer adds tick-level protective exits).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from itertools import pairwise
from typing import Any

from cryptoj.indicators import RSI
from cryptoj.model.candles import Timeframe
from cryptoj.model.money import ZERO
from cryptoj.model.orders import Order
from cryptoj.strategy import BarLike, Param, Strategy

__all__ = ["RsiReversion"]

_ONE = Decimal(1)


class _ProductState:
    __slots__ = ("initial", "pending", "rsi", "steps")

    def __init__(self, period: int) -> None:
        self.rsi = RSI(period)
        self.pending: str | None = None
        self.initial: Decimal | None = None  # position size when the ladder started
        self.steps = 0  # ladder levels already taken


class RsiReversion(Strategy):
    """RSI mean reversion, long only, with stop loss and take-profit ladder."""

    name = "rsi_reversion"
    params = (
        Param("period", int, 14, min=2, max=500, doc="RSI length, in bars (Wilder)"),
        Param("buy_below", Decimal, Decimal(35), min=Decimal(0), max=Decimal(100), doc="buy when RSI is below this"),
        Param("sell_above", Decimal, Decimal(70), min=Decimal(0), max=Decimal(100), doc="sell everything when RSI is above this"),
        Param("order_size", Decimal, Decimal("0.001"), min=Decimal(0), doc="base size of an entry (> 0)"),
        Param("stop_loss", Decimal, Decimal("0.02"), min=Decimal(0), max=Decimal(1), doc="sell all this fraction below entry"),
        Param(
            "take_profit_levels", tuple, (Decimal("0.01"), Decimal("0.02"), Decimal("0.03")), min=0, max=10, item=Decimal,
            doc="ladder: gains over entry (ascending fractions)",
        ),
        Param(
            "take_profit_fractions", tuple, (Decimal("0.33"), Decimal("0.33"), Decimal("0.34")), min=0, max=10, item=Decimal,
            doc="share of the position sold at each level (sum <= 1)",
        ),
        Param("timeframe", Timeframe, "1m", doc="bar width the RSI runs on"),
    )

    @classmethod
    def check_params(cls, values: Mapping[str, Any]) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        if values["buy_below"] >= values["sell_above"]:
            problems.append(("buy_below", f"must be below sell_above ({values['sell_above']}), got {values['buy_below']}"))
        if values["order_size"] <= 0:
            problems.append(("order_size", f"must be positive, got {values['order_size']}"))
        if not 0 < values["stop_loss"] < 1:
            problems.append(("stop_loss", f"must be a fraction between 0 and 1 (exclusive), got {values['stop_loss']}"))
        levels, fractions = values["take_profit_levels"], values["take_profit_fractions"]
        if len(levels) != len(fractions):
            problems.append(
                ("take_profit_fractions", f"needs one fraction per level ({len(levels)} levels, {len(fractions)} fractions)")
            )
        if any(x <= 0 for x in levels) or any(b <= a for a, b in pairwise(levels)):
            problems.append(("take_profit_levels", f"must be positive and ascending, got {', '.join(map(str, levels))}"))
        if any(not 0 < f <= 1 for f in fractions) or sum(fractions, Decimal(0)) > 1:
            problems.append(
                ("take_profit_fractions", f"each must be in (0, 1] and their sum <= 1, got {', '.join(map(str, fractions))}")
            )
        return problems

    def on_start(self) -> None:
        self._state = {pid: _ProductState(self.p.period) for pid in self.products}
        self._levels: tuple[Decimal, ...] = tuple(_ONE + x for x in self.p.take_profit_levels)
        self._stop = _ONE - self.p.stop_loss

    def on_bar(self, product: str, bar: BarLike) -> None:
        st = self._state.get(product)
        if st is None:
            return
        rsi = st.rsi.update(bar.close)
        if rsi is None or st.pending is not None:
            return
        info = self.product(product)
        position = self.ctx.position(product)  # None when never traded (no flat Position built per bar)
        held = position.quantity if position is not None else ZERO
        if position is None or held < info.base_min_size or held == 0:
            st.initial = None
            st.steps = 0
            if rsi < self.p.buy_below:
                st.pending = self.buy(product, self.p.order_size)
                self.log.info("rsi_reversion.buy", product_id=product, rsi=str(rsi), close=str(bar.close))
            return
        if st.initial is None:
            st.initial = held
            st.steps = 0
        entry = position.avg_entry_price
        close = bar.close
        if close <= entry * self._stop:
            self._sell(product, st, held, held, "stop_loss", rsi, close)
        elif rsi > self.p.sell_above:
            self._sell(product, st, held, held, "overbought", rsi, close)
        else:
            steps = st.steps
            levels = self._levels
            share = Decimal(0)
            while steps < len(levels) and close >= entry * levels[steps]:
                share += self.p.take_profit_fractions[steps]
                steps += 1
            if steps > st.steps:
                st.steps = steps
                self._sell(product, st, held, min(held, st.initial * share), f"take_profit_{steps}", rsi, close)

    def _sell(
        self, product: str, st: _ProductState, held: Decimal, size: Decimal, why: str, rsi: Decimal, close: Decimal
    ) -> None:
        info = self.product(product)
        size = info.round_size(size)
        if held - size < info.base_min_size:
            size = info.round_size(held)  # never leave dust behind
        if size <= 0 or size < info.base_min_size:
            return
        st.pending = self.sell(product, size)
        self.log.info("rsi_reversion.sell", product_id=product, reason=why, size=str(size), rsi=str(rsi), close=str(close))

    def on_order_update(self, order: Order) -> None:
        st = self._state.get(order.product_id)
        if st is not None and st.pending == order.client_order_id and order.is_terminal:
            st.pending = None
