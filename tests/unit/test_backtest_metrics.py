"""Metrics against hand-computed values."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from cryptoj.backtest.metrics import compute_metrics, daily_returns, max_drawdown, round_trips, utc
from cryptoj.errors import InvalidValue
from cryptoj.model.money import Side
from cryptoj.model.orders import Fill

pytestmark = pytest.mark.unit

D = Decimal
DAY = 86_400
T0 = 1_767_225_600  # 2026-01-01T00:00:00Z


def f(n: int, side: Side, price: str, size: str, fee: str, minute: int, product: str = "BTC-USD") -> Fill:
    return Fill(
        f"t{n}", f"c{n}", product, side, D(price), D(size), D(fee), datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=minute)
    )


def test_round_trips_by_hand() -> None:
    fills = [
        f(1, Side.BUY, "100", "1", "0.1", 0),
        f(2, Side.BUY, "110", "1", "0.11", 1),  # scale in: avg entry 105
        f(3, Side.SELL, "120", "2", "0.24", 2),  # close: (120-105)*2 - all fees = 30 - 0.45
        f(4, Side.BUY, "100", "1", "0", 3),
        f(5, Side.SELL, "90", "1", "0", 4),  # a loser: -10
        f(6, Side.BUY, "50", "1", "0.05", 5, "ETH-USD"),  # still open at the end
    ]
    trades = round_trips(fills)
    assert [t.pnl for t in trades] == [D("29.55"), D("-10"), D("-0.05")]
    first = trades[0]
    assert first.entry_price == D(105) and first.exit_price == D(120) and first.quantity == D(2)
    assert first.fees == D("0.45") and first.fills == 3
    assert first.entry_time == utc(T0) and first.exit_time == utc(T0 + 120)
    assert trades[2].is_open and trades[2].exit_price is None
    assert trades[2].to_json()["exit_time"] is None and trades[0].to_json()["pnl"] == "29.55"


def test_daily_returns_and_drawdown_by_hand() -> None:
    # day 0 ends at 110, day 1 at 99, day 2 at 108.9
    times = [T0 + 60, T0 + DAY - 60, T0 + DAY + 60, T0 + 2 * DAY - 60, T0 + 2 * DAY + 60]
    equity = [105.0, 110.0, 100.0, 99.0, 108.9]
    rets = daily_returns(times, equity, 100.0)
    assert rets == pytest.approx([0.10, -0.10, 0.10])
    worst, longest = max_drawdown([T0, *times], [100.0, *equity])
    assert worst == pytest.approx(0.10)  # 110 -> 99
    assert longest == times[-1] - times[1]  # underwater from the 110 peak to the end
    assert max_drawdown([], []) == (0.0, 0)
    recovered = max_drawdown([0, 10, 20, 30, 40], [1.0, 0.5, 1.2, 1.1, 1.3])
    assert recovered == (pytest.approx(0.5), 20)  # 0 -> 20 under water, then 20 -> 40 for 20 s: longest 20


def test_compute_metrics_by_hand() -> None:
    fills = [
        f(1, Side.BUY, "100", "10", "1", 0),
        f(2, Side.SELL, "110", "10", "1", 60 * 24),  # +100 - 2 = 98
        f(3, Side.BUY, "110", "10", "1", 60 * 48),
        f(4, Side.SELL, "105", "10", "1", 60 * 49),  # -50 - 2 = -52
    ]
    times = [T0, T0 + DAY, T0 + 2 * DAY, T0 + 3 * DAY, T0 + 4 * DAY]
    equity = [10_000.0, 10_100.0, 10_098.0, 10_046.0, 10_046.0]
    m = compute_metrics(
        initial_equity=D(10_000),
        final_equity=D(10_046),
        times=times,
        equity=equity,
        fills=fills,
        bars=4,
        exposed_bars=2,
    )
    assert m.total_return == D("0.0046")
    years = 4 / 365
    assert m.cagr == pytest.approx(1.0046 ** (1 / years) - 1)
    # the day points: day 1 (t=DAY) ends at 10100, day 2 at 10098, day 3 at 10046, day 4 at 10046
    rets = [0.01, 10_098 / 10_100 - 1, 10_046 / 10_098 - 1, 0.0]
    mean = sum(rets) / 4
    sd = math.sqrt(sum((r - mean) ** 2 for r in rets) / 3)
    assert m.sharpe == pytest.approx(mean / sd * math.sqrt(365))
    down = math.sqrt(sum(min(r, 0) ** 2 for r in rets) / 4)
    assert m.sortino == pytest.approx(mean / down * math.sqrt(365))
    assert m.max_drawdown == pytest.approx(1 - 10_046 / 10_100)
    assert m.max_drawdown_duration == timedelta(days=3)
    assert m.trades == 2 and m.open_trades == 0
    assert m.win_rate == 0.5
    assert m.profit_factor == pytest.approx(98 / 52)
    assert m.avg_win == D(98) and m.avg_loss == D(-52)
    assert m.exposure == 0.5
    assert m.fees == D(4)
    assert m.turnover == D(4_250) / D(10_000)  # (1000 + 1100 + 1100 + 1050) / 10000
    rows = dict(m.rows())
    assert rows["total return"] == "0.46%" and rows["trades"] == "2" and rows["fees"] == "4"
    assert rows["final equity"] == "10,046.00" and rows["average loss"] == "-52"
    js = m.to_json()
    assert js["total_return"] == "0.0046" and js["max_drawdown_duration_s"] == 3 * DAY and len(js["trade_list"]) == 2


def test_metrics_edge_cases() -> None:
    flat = compute_metrics(
        initial_equity=D(100), final_equity=D(100), times=[T0, T0 + 60], equity=[100.0, 100.0], fills=[], bars=1, exposed_bars=0
    )
    assert flat.sharpe is None and flat.sortino is None and flat.win_rate is None and flat.profit_factor is None
    assert flat.avg_win is None and flat.avg_loss is None and flat.max_drawdown == 0.0
    assert dict(flat.rows())["win rate"] == "n/a"
    only_up = compute_metrics(
        initial_equity=D(100),
        final_equity=D(103),
        times=[T0, T0 + DAY, T0 + 2 * DAY],
        equity=[100.0, 101.0, 103.0],
        fills=[f(1, Side.BUY, "1", "1", "0", 0), f(2, Side.SELL, "2", "1", "0", 1)],
        bars=2,
        exposed_bars=1,
    )
    assert only_up.sortino is None and only_up.sharpe is not None and only_up.profit_factor is None
    assert "(+" not in dict(only_up.rows())["trades"]
    same_time = compute_metrics(
        initial_equity=D(100), final_equity=D(0), times=[T0], equity=[100.0], fills=[], bars=0, exposed_bars=0
    )
    assert same_time.cagr is None and same_time.exposure == 0.0
    ruined = compute_metrics(
        initial_equity=D(100), final_equity=D(0), times=[T0, T0 + DAY], equity=[100.0, 0.0], fills=[], bars=1, exposed_bars=0
    )
    assert ruined.cagr == -1.0
    minutes = compute_metrics(
        initial_equity=D(100), final_equity=D(101), times=[T0, T0 + 240], equity=[100.0, 101.0], fills=[], bars=4, exposed_bars=0
    )
    assert minutes.cagr is None  # 1 % in four minutes does not annualise to a float
    with pytest.raises(InvalidValue, match="initial_equity"):
        compute_metrics(initial_equity=D(0), final_equity=D(0), times=[T0], equity=[0.0], fills=[], bars=0, exposed_bars=0)
    with pytest.raises(InvalidValue, match="equity curve"):
        compute_metrics(initial_equity=D(1), final_equity=D(1), times=[], equity=[], fills=[], bars=0, exposed_bars=0)
