"""The backtest runner: sma_cross against a plain reference implementation, no lookahead, orders, funds, risk, timers."""

from __future__ import annotations

from collections import deque
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from cryptoj.backtest.data import BarSeries, synthetic_bars
from cryptoj.backtest.fills import FeeTier
from cryptoj.backtest.runner import Backtest, BacktestConfig, default_product
from cryptoj.config import RiskConfig
from cryptoj.errors import ConfigError, DataError, InvalidValue
from cryptoj.model.candles import Candle
from cryptoj.model.money import Side
from cryptoj.model.orders import Fill, Order, OrderKind, OrderSpec, OrderStatus, TimeInForce
from cryptoj.strategies.sma_cross import SmaCross
from cryptoj.strategy import Param, Strategy, StrategyError

pytestmark = pytest.mark.unit

D = Decimal
START = datetime(2025, 1, 1, tzinfo=UTC)


# --- the must-show reference test ---------------------------------------------------------


def reference_sma_cross(series: BarSeries, fast: int, slow: int, size: Decimal, taker: Decimal) -> list[tuple[Any, ...]]:
    """sma_cross written plainly, with the same fill model: a signal on bar t is a market order filled at bar t+1's open."""
    fw: deque[Decimal] = deque()
    sw: deque[Decimal] = deque()
    fsum = ssum = D(0)
    sign = 0
    held = D(0)
    pending: tuple[Side, Decimal] | None = None
    fills: list[tuple[Any, ...]] = []
    for i in range(len(series)):
        if pending is not None:
            side, qty = pending
            price = series.open[i]
            fills.append((series.times[i], side, price, qty, price * qty * taker))
            held = held + qty if side is Side.BUY else held - qty
            pending = None
        close = series.close[i]
        fw.append(close)
        fsum += close
        if len(fw) > fast:
            fsum -= fw.popleft()
        sw.append(close)
        ssum += close
        if len(sw) > slow:
            ssum -= sw.popleft()
        if len(fw) < fast or len(sw) < slow:
            continue
        f, s = fsum / fast, ssum / slow
        new = 1 if f > s else -1 if f < s else sign
        previous, sign = sign, new
        if previous == 0 or new == previous:
            continue
        if new > 0 and held == 0:
            pending = (Side.BUY, size)
        elif new < 0 and held > 0:
            pending = (Side.SELL, held)
    return fills


def test_sma_cross_matches_a_plain_reference_on_a_seeded_year_to_the_cent() -> None:
    series = synthetic_bars(seed=2026, bars=525_600, start=START)
    fees = FeeTier(maker=D("0.004"), taker=D("0.006"))
    size = D("0.01")
    strategy = SmaCross({"fast": 20, "slow": 50, "order_size": size}, products=["BTC-USD"])
    result = Backtest(strategy, series, BacktestConfig(fees=fees, balances={"USD": D(100_000)})).run()
    expected = reference_sma_cross(series, 20, 50, size, fees.taker)
    got = [(int(f.time.timestamp()), f.side, f.price, f.size, f.fee) for f in result.fills]
    assert len(got) > 1000  # a year of minute bars crosses thousands of times
    assert got == expected  # every fill: time, side, price, size and fee, exactly
    cash = D(100_000)
    for _, side, price, qty, fee in expected:
        cash += -(price * qty) - fee if side is Side.BUY else price * qty - fee
    held = sum((q if s is Side.BUY else -q for _, s, _, q, _ in expected), D(0))
    assert result.metrics.final_equity.quantize(D("0.01")) == (cash + held * series.close[-1]).quantize(D("0.01"))
    assert result.metrics.fees == sum((e[4] for e in expected), D(0))
    assert result.metrics.trades + result.metrics.open_trades == (len(expected) + 1) // 2
    assert result.bars == 525_600 and result.bars_per_second > 0


# --- no lookahead ---------------------------------------------------------------------------


class Observer(Strategy):
    """Records everything it can see at every bar, and buys once at bar 10."""

    name = "observer"

    def on_start(self) -> None:
        self.seen: list[tuple[Any, ...]] = []
        self.count = 0

    def on_bar(self, product: str, bar: Candle) -> None:
        self.count += 1
        last5 = self.candles(product, n=5)
        pos = self.position(product)
        self.seen.append(
            (
                self.now(),
                bar.start,
                bar.close,
                [c.close for c in last5],
                self.equity(),
                pos.quantity,
                self.balance("USD"),
                len(self.open_orders()),
                self.ctx.mid_price(product),  # type: ignore[attr-defined]
            )
        )
        assert self.now() == bar.start + timedelta(minutes=1)  # the bar has closed when we see it
        assert last5[-1].start == bar.start  # candles() ends at this bar, never later
        if self.count == 10:
            self.buy(product, D("0.01"))


def test_a_strategy_cannot_see_a_bar_before_it_closes() -> None:
    a = synthetic_bars(seed=7, bars=200, start=START)
    cut = 120
    # b: the same market up to bar `cut`, a different one afterwards
    other = synthetic_bars(seed=8, bars=200, start=START)
    b = BarSeries(
        a.product_id,
        a.step,
        a.times,
        a.open[:cut] + other.open[cut:],
        a.high[:cut] + other.high[cut:],
        a.low[:cut] + other.low[cut:],
        a.close[:cut] + other.close[cut:],
        a.volume[:cut] + other.volume[cut:],
    )
    runs = []
    for series in (a, b):
        strategy = Observer(products=["BTC-USD"])
        result = Backtest(strategy, series).run()
        runs.append((strategy.seen, result))
    (seen_a, res_a), (seen_b, _) = runs
    assert seen_a[:cut] == seen_b[:cut]  # nothing seen up to bar `cut` depends on later bars
    assert seen_a[cut] != seen_b[cut]
    # the order placed while handling bar 9 (the 10th) fills at bar 10's open, stamped with bar 10's start
    (fill,) = res_a.fills
    assert fill.price == a.open[10] and fill.time == a.time(10)
    assert seen_a[9][5] == 0 and seen_a[10][5] == D("0.01")


# --- orders, funds, rejections --------------------------------------------------------------


class Scripted(Strategy):
    """Runs a script: {bar number: callable(strategy, product, bar)}; records updates and fills."""

    name = "scripted"
    params = (Param("dummy", int, 0),)

    def __init__(self, script: dict[int, Any], **kw: Any) -> None:
        super().__init__(products=["BTC-USD"], **kw)
        self.script = script
        self.updates: list[tuple[str, OrderStatus]] = []
        self.fills: list[Fill] = []
        self.timers: list[tuple[str, datetime]] = []
        self.events: list[str] = []
        self.n = 0

    def on_bar(self, product: str, bar: Candle) -> None:
        action = self.script.get(self.n)
        self.n += 1
        if action is not None:
            action(self, product, bar)

    def on_order_update(self, order: Order) -> None:
        self.updates.append((order.client_order_id, order.status))
        self.events.append(f"update:{order.status.value}")

    def on_fill(self, fill: Fill) -> None:
        self.fills.append(fill)
        self.events.append("fill")

    def on_timer(self, name: str, now: datetime) -> None:
        self.timers.append((name, now))


def flat_series(prices: list[tuple[str, str, str, str]], start: datetime = START) -> BarSeries:
    t0 = int(start.timestamp())
    return BarSeries.from_columns(
        "BTC-USD",
        [t0 + 60 * i for i in range(len(prices))],
        [D(p[0]) for p in prices],
        [D(p[1]) for p in prices],
        [D(p[2]) for p in prices],
        [D(p[3]) for p in prices],
        [D(1)] * len(prices),
    )


BARS = [("100", "101", "99", "100"), ("100", "102", "95", "101"), ("101", "106", "100", "105"), ("105", "106", "104", "105")]


def test_limit_orders_rest_fill_and_report_in_order() -> None:
    st = Scripted({0: lambda s, p, b: s.buy(p, D("1"), price=D("96"))})
    result = Backtest(st, flat_series(BARS), BacktestConfig(fees=FeeTier(D("0.001"), D("0.002")))).run()
    coid = "bt-00000001"
    assert st.updates == [(coid, OrderStatus.OPEN), (coid, OrderStatus.FILLED)]
    assert st.events == ["update:OPEN", "fill", "update:FILLED"]  # on_fill before on_order_update, as the engine does
    (fill,) = st.fills
    assert fill.price == D(96) and fill.fee == D("0.096") and fill.liquidity.value == "MAKER"
    assert result.metrics.final_equity == D(10_000) - D(96) - D("0.096") + D(105)
    assert result.orders[0].status is OrderStatus.FILLED


def test_cancel_timers_and_end_of_data() -> None:
    def place(s: Scripted, p: str, b: Candle) -> None:
        s.coid = s.buy(p, D("1"), price=D("50"))
        s.other = s.sell(p, D("1"), price=D("500"))  # no BTC: rejected for funds
        s.set_timer("tick", timedelta(minutes=2))

    def cancel(s: Scripted, p: str, b: Candle) -> None:
        s.cancel(s.coid)
        s.last = s.buy(p, D("1"), price=D("50"))  # still working at the end

    st = Scripted({0: place, 1: cancel})
    result = Backtest(st, flat_series(BARS)).run()
    assert ("bt-00000002", OrderStatus.REJECTED) in st.updates
    assert ("bt-00000001", OrderStatus.CANCELLED) in st.updates
    assert st.updates[-1] == ("bt-00000003", OrderStatus.CANCELLED)
    assert result.cancelled_at_end == 1
    assert result.rejections["INSUFFICIENT_FUND"] == 1
    assert st.timers == [("tick", START + timedelta(minutes=3))]  # set at 00:01 (bar 0's close), due 00:03
    assert result.metrics.final_equity == D(10_000)
    assert st.ctx.balance("USD").hold == 0  # type: ignore[attr-defined]


def test_rejections_by_product_rules_and_post_only() -> None:
    st = Scripted(
        {
            0: lambda s, p, b: (s.buy(p, D("0.000000001")), s.buy(p, D("1"), price=D("101"), post_only=True)),
        }
    )
    result = Backtest(st, flat_series(BARS)).run()
    assert result.rejections == {"INVALID_SIZE_PRECISION": 1, "INVALID_LIMIT_PRICE_POST_ONLY": 1}
    # the post-only order is accepted, then refused when it arrives at the open it would cross: OPEN -> CANCELLED
    assert [u[1] for u in st.updates] == [OrderStatus.REJECTED, OrderStatus.OPEN, OrderStatus.CANCELLED]


def test_unfunded_market_buy_is_cancelled_at_fill_time() -> None:
    prices = [("100", "100", "100", "100"), ("200", "200", "200", "200")]  # the estimate at 100 is held; the fill needs 200
    st = Scripted({0: lambda s, p, b: s.buy(p, D("60"))})
    result = Backtest(st, flat_series(prices), BacktestConfig(fees=FeeTier(D(0), D(0)))).run()
    assert st.updates == [("bt-00000001", OrderStatus.OPEN), ("bt-00000001", OrderStatus.CANCELLED)]
    assert result.rejections["INSUFFICIENT_FUND"] == 1 and not result.fills


def test_quote_sized_stop_and_bracket_orders() -> None:
    def entry(s: Scripted, p: str, b: Candle) -> None:
        s.buy(p, quote_size=D("500"))

    def protect(s: Scripted, p: str, b: Candle) -> None:
        s.bracket(p, D("2"), stop_loss=D("90"), take_profit=D("105.50"), entry=None)

    def stop_entry(s: Scripted, p: str, b: Candle) -> None:
        s.stop_limit(p, Side.BUY, D("1"), stop_price=D("105.5"), limit_price=D("106"))

    st = Scripted({0: entry, 1: protect, 2: stop_entry})
    series = flat_series([*BARS, ("105", "107", "104", "106"), ("106", "106", "90", "91")])
    result = Backtest(st, series, BacktestConfig(fees=FeeTier(D(0), D(0)))).run()
    sides = [(f.side, f.price, f.size) for f in result.fills]
    assert sides[0] == (Side.BUY, D(100), D("5.00000000"))  # quote-sized at bar 1's open
    assert (Side.SELL, D("105.50"), D(2)) in sides  # take-profit touched on bar 2 (high 106)
    assert (Side.BUY, D("105.5"), D(1)) in sides  # stop triggered on bar 4 (path up to 107)
    assert result.metrics.trades + result.metrics.open_trades >= 1


def test_risk_engine_checks_apply_when_configured() -> None:
    st = Scripted({0: lambda s, p, b: (s.buy(p, D("1")), s.buy(p, D("50")))})
    result = Backtest(st, flat_series(BARS), BacktestConfig(risk=RiskConfig(max_order_notional=D(1000)))).run()
    assert result.rejections == {"MAX_ORDER_NOTIONAL": 1}
    assert len(result.fills) == 1


def test_candles_at_a_bigger_timeframe_and_context_errors() -> None:
    got: list[Any] = []

    def look(s: Scripted, p: str, b: Candle) -> None:
        got.append(s.candles(p, "5m", 2))
        with pytest.raises(StrategyError, match="not in this backtest"):
            s.product("ETH-USD")
        with pytest.raises(StrategyError, match="runs on 60s bars"):
            s.ctx.candles(p, _ninety(), 1)
        with pytest.raises(StrategyError, match="already used"):
            s.ctx.submit(s.ctx._orders["bt-00000001"].spec)  # type: ignore[attr-defined]
        with pytest.raises(StrategyError, match="no order"):
            s.cancel("nope")
        assert s.book(p) is None

    series = synthetic_bars(seed=1, bars=20, start=START)
    st = Scripted({0: lambda s, p, b: s.buy(p, D("0.001")), 11: look, 3: lambda s, p, b: got.append(s.candles(p, "5m", 2))})
    Backtest(st, series).run()
    early, later = got
    assert early == []  # at 00:04 no 5-minute bar has closed
    assert [c.start for c in later] == [START, START + timedelta(minutes=5)]
    assert later[1].close == series.close[9]


class _Ninety:
    seconds = 90
    value = "90s"


def _ninety() -> Any:
    return _Ninety()


def test_multi_product_runs_merge_by_time() -> None:
    btc = synthetic_bars(seed=1, bars=300, start=START)
    eth = synthetic_bars(seed=2, bars=300, start=START + timedelta(minutes=1), product_id="ETH-USD", start_price=D("3000.00"))
    seen: list[str] = []

    class Both(SmaCross):
        def on_bar(self, product: str, bar: Candle) -> None:
            seen.append(product)
            super().on_bar(product, bar)

    st = Both({"fast": 3, "slow": 8, "order_size": D("0.01")}, products=["BTC-USD", "ETH-USD"])
    progress: list[tuple[int, int]] = []
    result = Backtest(st, [btc, eth]).run(progress=lambda done, total: progress.append((done, total)))
    assert seen[:3] == ["BTC-USD", "BTC-USD", "ETH-USD"]
    assert result.bars == 600 and progress[-1] == (600, 600)
    assert {f.product_id for f in result.fills} == {"BTC-USD", "ETH-USD"}
    assert len(result.curve_equity) == 601
    assert result.curve_equity[-1] == pytest.approx(float(result.metrics.final_equity), rel=1e-9)
    js = result.to_json()
    assert js["products"] == ["BTC-USD", "ETH-USD"] and len(js["fills"]) == len(result.fills)


def test_config_and_data_errors() -> None:
    series = synthetic_bars(seed=1, bars=10, start=START)
    with pytest.raises(DataError, match="no data"):
        Backtest(SmaCross(products=["BTC-USD"]), [])
    with pytest.raises(ConfigError, match="two data sets"):
        Backtest(SmaCross(products=["BTC-USD"]), [series, series])
    with pytest.raises(ConfigError, match="no product prices EUR"):
        Backtest(SmaCross(products=["BTC-USD"]), series, BacktestConfig(balances={"EUR": D(1)}))
    with pytest.raises(ConfigError, match="quoted in USD"):
        Backtest(SmaCross(products=["BTC-USD"]), series, BacktestConfig(quote="EUR"))
    with pytest.raises(DataError, match="no bars between"):
        Backtest(SmaCross(products=["BTC-USD"]), series, BacktestConfig(start=datetime(2030, 1, 1, tzinfo=UTC)))
    five = SmaCross({"timeframe": "5m"}, products=["BTC-USD"])
    assert Backtest(five, synthetic_bars(seed=1, bars=20, start=START)).series[0].step == 300
    hourly = BarSeries.from_columns("BTC-USD", [0, 3600], *([[D(1), D(1)]] * 5))
    with pytest.raises(ConfigError, match="cannot make the strategy's 1m bars"):
        Backtest(SmaCross(products=["BTC-USD"]), hourly)
    bt = Backtest(SmaCross(products=["BTC-USD"]), series)
    bt.run()
    with pytest.raises(StrategyError, match="runs once"):
        bt.run()
    with pytest.raises(InvalidValue, match="BASE-QUOTE"):
        default_product("BTCUSD")
    product = default_product("ETH-BTC", synthetic_bars(seed=1, bars=3, price_increment=D("0.00001"), start_price=D("0.05")))
    assert product.price_increment == D("0.00001") and product.base_currency == "ETH"


def test_window_and_gtd_time_in_force() -> None:
    series = synthetic_bars(seed=3, bars=30, start=START)
    st = Scripted(
        {
            0: lambda s, p, b: s.buy(p, D("0.01"), price=D("1000"), tif=TimeInForce.GTD, end_time=START + timedelta(minutes=5)),
            20: lambda s, p, b: s.sell(p, D("0.01"), price=D("1000")),
        }
    )
    config = BacktestConfig(
        start=START + timedelta(minutes=2), end=START + timedelta(minutes=25), balances={"USD": D(1000), "BTC": D(1)}
    )
    result = Backtest(st, series, config).run()
    assert result.bars == 23
    statuses = dict(st.updates)
    assert statuses["bt-00000001"] is OrderStatus.EXPIRED
    assert statuses["bt-00000002"] is OrderStatus.FILLED  # a marketable sell limit fills at the next open
    assert result.metrics.initial_equity == D(1000) + series.open[2]


def test_context_surface_logging_halts_and_timers(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from cryptoj.risk_management import TradingState
    from cryptoj.strategy import StrategyContext

    checks: dict[str, Any] = {}

    def first(s: Scripted, p: str, b: Candle) -> None:
        ctx = s.ctx
        assert isinstance(ctx, StrategyContext)
        for level in ("debug", "info", "warning", "error"):
            getattr(s.log, level)(f"bt.{level}", n=1)
        checks["data_age"] = ctx.data_age(p)  # type: ignore[attr-defined]
        checks["unknown"] = (ctx.data_age("X-Y"), ctx.mid_price("X-Y"), ctx.position_size(p))  # type: ignore[attr-defined]
        checks["fee"] = (ctx.fee_rate(p), list(ctx.product_ids()))  # type: ignore[attr-defined]
        with pytest.raises(StrategyError, match="at least 1 second"):
            s.set_timer("t", timedelta(milliseconds=10))
        s.set_timer("a", timedelta(minutes=1))
        s.set_timer("b", timedelta(minutes=1))
        s.set_timer("b", None)
        eth = OrderSpec("eth-1", "ETH-USD", Side.BUY, OrderKind.MARKET, base_size=D("0.01"), time_in_force=TimeInForce.IOC)
        s.ctx.submit(eth)  # a product this run does not have
        bt.risk.set_state(TradingState.HALTED, "test")  # type: ignore[union-attr]
        s.buy(p, D("0.01"))
        s.buy(p, D("1"), price=D("60000"))

    def later(s: Scripted, p: str, b: Candle) -> None:
        checks["position"] = s.ctx.position_size(p)  # type: ignore[attr-defined]
        s.cancel("eth-1")  # already rejected: nothing to cancel

    series = synthetic_bars(seed=1, bars=6, start=START)
    st = Scripted({0: first, 2: later})
    config = BacktestConfig(risk=RiskConfig(), strategy_log_level=logging.DEBUG)
    bt = Backtest(st, series, config)
    with caplog.at_level(logging.DEBUG):
        result = bt.run()
    assert checks["data_age"] == 0.0
    assert checks["unknown"] == (None, None, D(0))
    assert checks["fee"] == (D("0.006"), ["BTC-USD"])
    assert result.rejections == {"INVALID_PRODUCT_ID": 1, "TRADING_HALTED": 2}
    assert [name for name, _ in st.timers] == ["a"] * 5  # every minute from 00:02 to 00:06
    assert checks["position"] == D(0)
    quiet = Backtest(
        Scripted({0: lambda s, p, b: s.log.warning("w")}), series, BacktestConfig(strategy_log_level=logging.CRITICAL)
    )
    assert quiet.run().bars == 6


def test_buy_bracket_holds_and_progress_of_a_long_single_run() -> None:
    def place(s: Scripted, p: str, b: Candle) -> None:
        spec = OrderSpec(
            s.ctx.new_client_order_id(), p, Side.BUY, OrderKind.BRACKET, base_size=D("0.01"),
            limit_price=D("1000.00"), stop_trigger_price=D("90000.00"),
        )  # fmt: skip
        s.ctx.submit(spec)

    series = synthetic_bars(seed=1, bars=70_000, start=START)
    st = Scripted({0: place})
    bt = Backtest(st, series)
    marks: list[tuple[int, int]] = []
    result = bt.run(progress=lambda done, total: marks.append((done, total)))
    assert marks == [(65_536, 70_000), (70_000, 70_000)]
    assert st.updates[0] == ("bt-00000001", OrderStatus.OPEN)
    assert result.cancelled_at_end == 1  # neither leg reached; its hold was released
    assert bt.portfolio.balance("USD").hold == 0


def test_json_carries_the_equity_curve() -> None:
    series = synthetic_bars(seed=4, bars=500, start=START)
    result = Backtest(SmaCross({"fast": 5, "slow": 20}, products=["BTC-USD"]), series).run()
    curve = result.to_json()["equity_curve"]
    assert curve["times"] == result.curve_times and curve["equity"] == result.curve_equity
    assert curve["downsampled"] is False and len(curve["times"]) == 501


def test_submits_and_cancels_are_handled_in_the_order_asked() -> None:
    def place(s: Scripted, p: str, b: Candle) -> None:
        s.first = s.buy(p, D("90"), price=D("90"))  # holds 8,148.60 of the 10,000 USD
        gone = s.buy(p, D("1"), price=D("90"))
        s.cancel(gone)  # placed and cancelled in one callback: never works

    def replace_it(s: Scripted, p: str, b: Candle) -> None:
        s.cancel(s.first)  # frees the hold first ...
        s.buy(p, D("90"), price=D("89"))  # ... so the replacement (8,058.06) fits

    st = Scripted({0: place, 1: replace_it})
    result = Backtest(st, flat_series(BARS)).run()
    assert st.updates[:3] == [
        ("bt-00000001", OrderStatus.OPEN),
        ("bt-00000002", OrderStatus.OPEN),
        ("bt-00000002", OrderStatus.CANCELLED),
    ]
    assert ("bt-00000001", OrderStatus.CANCELLED) in st.updates and ("bt-00000003", OrderStatus.OPEN) in st.updates
    assert not result.rejections


class Keeper(Strategy):
    """Keeps every other bar it is handed (as is), and notes the identity of each bar object."""

    name = "keeper"
    params = (Param("keep", bool, True),)

    def on_start(self) -> None:
        self.kept: list[Any] = []
        self.ids: list[int] = []

    def on_bar(self, product: str, bar: Any) -> None:
        self.ids.append(id(bar))
        if self.p.keep and len(self.ids) % 2 == 0:
            self.kept.append(bar)


def test_bars_a_strategy_keeps_stay_on_their_bar() -> None:
    series = synthetic_bars(seed=3, bars=50, start=START)
    strategy = Keeper(products=["BTC-USD"])
    Backtest(strategy, series).run()
    # every kept bar still reads as the bar it was when handed over, though the run went on
    assert [b.to_bar() for b in strategy.kept] == [series.bar(i) for i in range(1, 50, 2)]
    assert [b.close for b in strategy.kept] == series.close[1::2]
    # a strategy that keeps none gets one view, moved from bar to bar: no object per bar
    idle = Keeper({"keep": False}, products=["BTC-USD"])
    Backtest(idle, series).run()
    assert len(idle.ids) == 50 and len(set(idle.ids)) == 1


def test_bars_kept_in_a_multi_product_run_stay_on_their_bar() -> None:
    a = synthetic_bars(seed=3, bars=20, start=START)
    b = synthetic_bars(seed=4, bars=20, start=START, product_id="ETH-USD")
    strategy = Keeper(products=["BTC-USD", "ETH-USD"])
    Backtest(strategy, [a, b]).run()
    # bars alternate BTC, ETH at each time; every second one handed over is kept: the ETH bars
    assert [k.to_bar() for k in strategy.kept] == [b.bar(i) for i in range(20)]
    idle = Keeper({"keep": False}, products=["BTC-USD", "ETH-USD"])
    Backtest(idle, [a, b]).run()
    assert len(set(idle.ids)) == 2  # one view per product


def test_sma_cross_decisions_up_to_a_bar_do_not_depend_on_later_bars() -> None:
    """The integer column the strategy's indicator reads holds the whole series: it must only read up to the bar."""
    a = synthetic_bars(seed=21, bars=3000, start=START)
    other = synthetic_bars(seed=22, bars=3000, start=START)
    cut = 1700

    def spliced(k: int) -> BarSeries:
        return BarSeries(
            a.product_id,
            a.step,
            a.times,
            a.open[:k] + other.open[k:],
            a.high[:k] + other.high[k:],
            a.low[:k] + other.low[k:],
            a.close[:k] + other.close[k:],
            a.volume[:k] + other.volume[k:],
        )

    params = {"fast": 5, "slow": 20}
    full = Backtest(SmaCross(params, products=["BTC-USD"]), a).run()
    cut_run = Backtest(SmaCross(params, products=["BTC-USD"]), spliced(cut)).run()
    assert [o.spec for o in full.orders if o.created_at is not None and o.created_at <= a.time(cut)] == [
        o.spec for o in cut_run.orders if o.created_at is not None and o.created_at <= a.time(cut)
    ]
    assert len([o for o in full.orders if o.created_at is not None and o.created_at <= a.time(cut)]) > 50
    assert full.fills != cut_run.fills  # after the cut the markets, and so the trades, differ
