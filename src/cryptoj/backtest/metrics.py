"""Backtest metrics: returns, risk, trades. Definitions (also in ``docs/backtesting.md``):

* **equity curve** — portfolio value in the quote currency after each bar's
  close, plus the starting value at the first bar's open.
* **total return** — ``final / initial - 1`` (exact, Decimal).
* **CAGR** — ``(final / initial) ** (1 / years) - 1`` with ``years`` the time
  from the first bar's open to the last bar's close over 365 days (None when a
  short run's return annualises beyond the float range).
* **Sharpe** (annualised, 365-day year, risk-free rate 0) — daily returns from
  the equity at the end of each UTC day (the first day against the initial
  equity): ``mean / sample stdev * sqrt(365)``; None with fewer than two days
  or zero variance.
* **Sortino** — ``mean / downside deviation * sqrt(365)`` where the downside
  deviation is ``sqrt(mean(min(r, 0)^2))`` over all days; None without a losing day.
* **max drawdown** — the largest ``1 - equity / running peak`` over the curve;
  its **duration** — the longest time spent below a previous peak (from the
  peak until equity is back at or above it, or the end of the data).
* **trades** — round trips of one product: a trade opens when the position
  leaves flat and closes when it is flat again; its PnL is the realised PnL
  of its fills, net of every fee (the portfolio's average-cost convention).
  A position still open at the end is an **open trade**, listed but not counted
  in win rate, profit factor and averages.
* **win rate** — winning closed trades / closed trades (PnL > 0 wins).
* **profit factor** — gross PnL of winners / |gross PnL of losers| (None when
  there is no loser).
* **average win / average loss** — mean PnL of winners / of losers.
* **exposure** — the fraction of bars that end with a non-flat position.
* **fees** — every fee paid; **turnover** — traded notional / initial equity.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from cryptoj.errors import InvalidValue
from cryptoj.model.candles import EPOCH
from cryptoj.model.money import ZERO, Side
from cryptoj.model.orders import Fill
from cryptoj.model.positions import Position

__all__ = ["DAYS_PER_YEAR", "Metrics", "TradeRecord", "compute_metrics", "daily_returns", "max_drawdown", "round_trips"]

DAYS_PER_YEAR = 365
_YEAR_SECONDS = DAYS_PER_YEAR * 86400


@dataclass(frozen=True, slots=True)
class TradeRecord:
    """One round trip (or the still open position at the end, ``exit_time`` None)."""

    product_id: str
    entry_time: datetime
    exit_time: datetime | None
    quantity: Decimal  # largest position size during the trade
    entry_price: Decimal  # average buy price (fees excluded)
    exit_price: Decimal | None  # average sell price
    pnl: Decimal  # realised, net of fees (closed trades); realised so far for an open one
    fees: Decimal
    fills: int

    @property
    def is_open(self) -> bool:
        return self.exit_time is None

    def to_json(self) -> dict[str, Any]:
        return {
            "product_id": self.product_id,
            "entry_time": self.entry_time.isoformat(),
            "exit_time": self.exit_time.isoformat() if self.exit_time else None,
            "quantity": str(self.quantity),
            "entry_price": str(self.entry_price),
            "exit_price": str(self.exit_price) if self.exit_price is not None else None,
            "pnl": str(self.pnl),
            "fees": str(self.fees),
            "fills": self.fills,
        }


@dataclass(frozen=True, slots=True)
class Metrics:
    initial_equity: Decimal
    final_equity: Decimal
    total_return: Decimal
    cagr: float | None
    sharpe: float | None
    sortino: float | None
    max_drawdown: float
    max_drawdown_duration: timedelta
    trades: int
    open_trades: int
    win_rate: float | None
    profit_factor: float | None
    avg_win: Decimal | None
    avg_loss: Decimal | None
    exposure: float
    fees: Decimal
    turnover: Decimal
    bars: int
    fills: int
    trade_list: list[TradeRecord] = field(default_factory=list)

    def rows(self) -> list[tuple[str, str]]:
        """(name, formatted value) for tables."""

        def pct(x: float | Decimal | None) -> str:
            return "n/a" if x is None else f"{float(x) * 100:.2f}%"

        def num(x: float | None) -> str:
            return "n/a" if x is None else f"{x:.3f}"

        def money(x: Decimal | None) -> str:
            if x is None:
                return "n/a"
            return f"{x:,.2f}" if abs(x) >= 100 else f"{x:.6g}"  # BTC-quoted values need more than cents

        return [
            ("initial equity", money(self.initial_equity)),
            ("final equity", money(self.final_equity)),
            ("total return", pct(self.total_return)),
            ("CAGR", pct(self.cagr)),
            ("Sharpe (365d)", num(self.sharpe)),
            ("Sortino (365d)", num(self.sortino)),
            ("max drawdown", pct(self.max_drawdown)),
            ("max drawdown duration", str(self.max_drawdown_duration)),
            ("trades", str(self.trades) + (f" (+{self.open_trades} open)" if self.open_trades else "")),
            ("win rate", pct(self.win_rate)),
            ("profit factor", num(self.profit_factor)),
            ("average win", money(self.avg_win)),
            ("average loss", money(self.avg_loss)),
            ("exposure", pct(self.exposure)),
            ("fees", money(self.fees)),
            ("turnover", f"{float(self.turnover):.2f}x"),
            ("bars", str(self.bars)),
            ("fills", str(self.fills)),
        ]

    def to_json(self) -> dict[str, Any]:
        return {
            "initial_equity": str(self.initial_equity),
            "final_equity": str(self.final_equity),
            "total_return": str(self.total_return),
            "cagr": self.cagr,
            "sharpe": self.sharpe,
            "sortino": self.sortino,
            "max_drawdown": self.max_drawdown,
            "max_drawdown_duration_s": self.max_drawdown_duration.total_seconds(),
            "trades": self.trades,
            "open_trades": self.open_trades,
            "win_rate": self.win_rate,
            "profit_factor": self.profit_factor,
            "avg_win": str(self.avg_win) if self.avg_win is not None else None,
            "avg_loss": str(self.avg_loss) if self.avg_loss is not None else None,
            "exposure": self.exposure,
            "fees": str(self.fees),
            "turnover": str(self.turnover),
            "bars": self.bars,
            "fills": self.fills,
            "trade_list": [t.to_json() for t in self.trade_list],
        }


def round_trips(fills: Sequence[Fill]) -> list[TradeRecord]:
    """Group fills (time order) into round trips per product (see the module doc)."""
    open_: dict[str, tuple[Position, datetime, Decimal, Decimal, Decimal, Decimal, int]] = {}
    out: list[TradeRecord] = []
    for f in fills:
        state = open_.get(f.product_id)
        if state is None:
            base, _, quote = f.product_id.partition("-")
            state = (Position(f.product_id, base, quote), f.time, ZERO, ZERO, ZERO, ZERO, 0)
        pos, entry_time, peak, bought_value, sold_size, sold_value, n = state
        pos = pos.with_fill(f.side, f.price, f.size, f.fee)
        if f.side is Side.BUY:
            bought_value += f.price * f.size
        else:
            sold_size += f.size
            sold_value += f.price * f.size
        peak = max(peak, pos.quantity)
        n += 1
        if pos.quantity == ZERO:
            out.append(_record(pos, entry_time, f.time, peak, bought_value, sold_size, sold_value, n))
            open_.pop(f.product_id, None)
        else:
            open_[f.product_id] = (pos, entry_time, peak, bought_value, sold_size, sold_value, n)
    for pos, entry_time, peak, bought_value, sold_size, sold_value, n in open_.values():
        out.append(_record(pos, entry_time, None, peak, bought_value, sold_size, sold_value, n))
    return out


def _record(
    pos: Position,
    entry: datetime,
    exit_: datetime | None,
    peak: Decimal,
    bought_value: Decimal,
    sold_size: Decimal,
    sold_value: Decimal,
    n: int,
) -> TradeRecord:
    entry_price = bought_value / pos.bought if pos.bought else ZERO
    exit_price = sold_value / sold_size if sold_size else None
    return TradeRecord(pos.product_id, entry, exit_, peak, entry_price, exit_price, pos.realised_pnl, pos.fees_paid, n)


def daily_returns(times: Sequence[int], equity: Sequence[float], initial: float) -> list[float]:
    """Returns of the equity at each UTC day's last point (Unix-second ``times``), the first against ``initial``."""
    closes: list[float] = []
    day = None
    for t, e in zip(times, equity, strict=True):
        d = t // 86400
        if d != day:
            closes.append(e)
            day = d
        else:
            closes[-1] = e
    out: list[float] = []
    prev = initial
    for e in closes:
        out.append(e / prev - 1.0 if prev else 0.0)
        prev = e
    return out


def max_drawdown(times: Sequence[int], equity: Sequence[float]) -> tuple[float, int]:
    """(largest fractional drawdown, longest underwater time in seconds) of a curve."""
    if not equity:
        return 0.0, 0
    peak = equity[0]
    peak_t = times[0]
    worst = 0.0
    longest = 0
    under = False
    for t, e in zip(times, equity, strict=True):
        if e >= peak:
            if under:
                longest = max(longest, t - peak_t)
                under = False
            peak, peak_t = e, t
        else:
            under = True
            dd = 1.0 - e / peak if peak > 0 else 0.0
            if dd > worst:
                worst = dd
    if under:
        longest = max(longest, times[-1] - peak_t)
    return worst, longest


def compute_metrics(
    *,
    initial_equity: Decimal,
    final_equity: Decimal,
    times: Sequence[int],
    equity: Sequence[float],
    fills: Sequence[Fill],
    bars: int,
    exposed_bars: int,
) -> Metrics:
    """All metrics of a run. ``times``/``equity``: the curve (Unix seconds, first point = the start)."""
    if initial_equity <= 0:
        raise InvalidValue("initial_equity", initial_equity, "must be positive")
    if len(times) != len(equity) or not times:
        raise InvalidValue("equity curve", (len(times), len(equity)), "needs matching, non-empty times and values")
    total_return = final_equity / initial_equity - 1
    years = (times[-1] - times[0]) / _YEAR_SECONDS
    ratio = float(final_equity / initial_equity)
    cagr: float | None = None
    if years > 0:
        try:
            cagr = math.exp(math.log(ratio) / years) - 1.0 if ratio > 0 else -1.0
        except OverflowError:  # a short run's return annualised past float range: not a meaningful number
            cagr = None
    rets = daily_returns(times[1:], equity[1:], float(initial_equity))
    sharpe = sortino = None
    if len(rets) >= 2:
        mean = sum(rets) / len(rets)
        var = sum((r - mean) ** 2 for r in rets) / (len(rets) - 1)
        if var > 0:
            sharpe = mean / math.sqrt(var) * math.sqrt(DAYS_PER_YEAR)
        down = math.sqrt(sum(min(r, 0.0) ** 2 for r in rets) / len(rets))
        if down > 0:
            sortino = mean / down * math.sqrt(DAYS_PER_YEAR)
    mdd, mdd_seconds = max_drawdown(times, equity)
    trade_list = round_trips(fills)
    closed = [t for t in trade_list if not t.is_open]
    wins = [t.pnl for t in closed if t.pnl > 0]
    losses = [t.pnl for t in closed if t.pnl <= 0]
    gross_loss = -sum(losses, ZERO)
    return Metrics(
        initial_equity=initial_equity,
        final_equity=final_equity,
        total_return=total_return,
        cagr=cagr,
        sharpe=sharpe,
        sortino=sortino,
        max_drawdown=mdd,
        max_drawdown_duration=timedelta(seconds=mdd_seconds),
        trades=len(closed),
        open_trades=len(trade_list) - len(closed),
        win_rate=len(wins) / len(closed) if closed else None,
        profit_factor=float(sum(wins, ZERO) / gross_loss) if gross_loss > 0 else None,
        avg_win=sum(wins, ZERO) / len(wins) if wins else None,
        avg_loss=sum(losses, ZERO) / len(losses) if losses else None,
        exposure=exposed_bars / bars if bars else 0.0,
        fees=sum((f.fee for f in fills), ZERO),
        turnover=sum((f.price * f.size for f in fills), ZERO) / initial_equity,
        bars=bars,
        fills=len(fills),
        trade_list=trade_list,
    )


def utc(ts: int) -> datetime:
    """Unix seconds → aware UTC datetime."""
    return EPOCH + timedelta(seconds=ts)
