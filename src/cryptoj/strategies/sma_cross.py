"""``sma_cross``: buy when the fast SMA crosses above the slow one, sell the position when it crosses below.

Per product, on every closed bar of ``timeframe``:

* both SMAs are updated with the bar's close (O(1), :class:`~cryptoj.indicators.SMACrossover`:
  exact integer running sums compared by cross-multiplying, no division; a backtest's
  bar is read from the series' integer close column, a live ``Candle``'s close is converted);
* the sign of ``fast - slow`` is tracked (a bar where they are equal keeps the
  previous sign, so touching is not crossing); the first sign seen after warm-up
  only arms the strategy — it never trades on the state it finds;
* a cross **up** with no position (less than the product's minimum size held)
  sends a market buy of ``order_size`` base;
* a cross **down** with a position sends a market sell of the whole position
  (rounded down to the base increment; nothing if that is below the minimum size);
* while one of its orders on a product is live, no new order is sent for that product.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from cryptoj.indicators import SMACrossover
from cryptoj.model.candles import Timeframe
from cryptoj.model.orders import Order
from cryptoj.strategy import BarLike, Param, Strategy

__all__ = ["SmaCross"]


class _ProductState:
    __slots__ = ("cross", "pending", "sign")

    def __init__(self, fast: int, slow: int) -> None:
        self.cross = SMACrossover(fast, slow)
        self.sign = 0
        self.pending: str | None = None


class SmaCross(Strategy):
    """Fast/slow simple-moving-average crossover, long only."""

    name = "sma_cross"
    params = (
        Param("fast", int, 20, min=2, max=500, doc="fast SMA length, in bars"),
        Param("slow", int, 50, min=3, max=5000, doc="slow SMA length, in bars (must exceed fast)"),
        Param("order_size", Decimal, Decimal("0.001"), min=Decimal(0), doc="base size bought on a cross up (> 0)"),
        Param("timeframe", Timeframe, "1m", doc="bar width the SMAs run on"),
    )

    @classmethod
    def check_params(cls, values: Mapping[str, Any]) -> list[tuple[str, str]]:
        problems = []
        if values["fast"] >= values["slow"]:
            problems.append(("fast", f"must be below slow ({values['slow']}), got {values['fast']}"))
        if values["order_size"] <= 0:
            problems.append(("order_size", f"must be positive, got {values['order_size']}"))
        return problems

    def on_start(self) -> None:
        self._state = {pid: _ProductState(self.p.fast, self.p.slow) for pid in self.products}

    def on_bar(self, product: str, bar: BarLike) -> None:
        st = self._state.get(product)
        if st is None:
            return
        sign = st.cross.update_bar(bar)  # a backtest's bar: exact integers from a column made once
        previous = st.sign
        if sign == previous:  # no cross (or still warming up: 0)
            return
        st.sign = sign
        if previous == 0 or st.pending is not None:
            return
        fast, slow = st.cross.averages_text()  # written out only if the log line is
        info = self.product(product)
        held = self.position(product).quantity
        if sign > 0:
            if held < info.base_min_size or held == 0:
                st.pending = self.buy(product, self.p.order_size)
                self.log.info("sma_cross.buy", product_id=product, fast=fast, slow=slow)
        else:
            size = info.round_size(held)
            if size > 0 and size >= info.base_min_size:
                st.pending = self.sell(product, size)
                self.log.info("sma_cross.sell", product_id=product, fast=fast, slow=slow, size=str(size))

    def on_order_update(self, order: Order) -> None:
        st = self._state.get(order.product_id)
        if st is not None and st.pending == order.client_order_id and order.is_terminal:
            st.pending = None
