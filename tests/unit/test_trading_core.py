"""The engine's pure parts and its dispatch, with market data fed as frames and a recording order manager.

The order manager here is a small fake of :class:`cryptoj.trading_core.OrderManagerLike`
(the engine's seam); the real one is exercised end to end in ``tests/integration``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from cryptoj.config import AppConfig, EngineConfig, ExchangeConfig, ExitsConfig, RiskConfig
from cryptoj.errors import ConfigError, InvalidValue, OrderRejected, RiskRejected, TradingHalted, VenueUnavailable
from cryptoj.market_data import BookResync, CandleClosed, Lagged, MarketDataConfig, MarketDataService, StaleData
from cryptoj.model.book import OrderBook
from cryptoj.model.candles import Candle, Timeframe
from cryptoj.model.events import MarketTrade
from cryptoj.model.money import Side
from cryptoj.model.orders import Fill, Liquidity, Order, OrderKind, OrderSpec, OrderStatus, TimeInForce
from cryptoj.risk_management import ProtectiveExits, RiskEngine
from cryptoj.strategy import Param, Strategy
from cryptoj.trading_core import (
    Engine,
    EngineOptions,
    EngineStats,
    RealClock,
    SimulatedClock,
    StartupRefused,
    Timers,
    build_runtime,
    check_live_allowed,
    endpoints_for,
)
from cryptoj.venues.coinbase.protocol import parse_envelope
from cryptoj.venues.simulated.server import DEFAULT_PRODUCTS
from tests.unit.test_market_data import Feed

pytestmark = pytest.mark.unit

D = Decimal
T0 = datetime(2026, 1, 1, tzinfo=UTC)
PRODUCTS = {"BTC-USD": DEFAULT_PRODUCTS["BTC-USD"], "ETH-USD": DEFAULT_PRODUCTS["ETH-USD"]}


# --- clocks and timers ---------------------------------------------------------------------


async def test_simulated_clock_moves_only_when_told() -> None:
    clock = SimulatedClock(T0)
    assert clock.now() == T0 and clock.monotonic() == 0
    sleeper = asyncio.ensure_future(clock.sleep(5))
    await asyncio.sleep(0)
    clock.advance(3)
    await asyncio.sleep(0)
    assert not sleeper.done()
    clock.set(T0 + timedelta(seconds=5))
    await asyncio.wait_for(sleeper, 5)
    assert clock.monotonic() == 5
    with pytest.raises(InvalidValue, match="backwards"):
        clock.set(T0)
    with pytest.raises(InvalidValue, match="timezone-aware"):
        clock.set(datetime(2026, 1, 2))
    with pytest.raises(InvalidValue, match=">= 0"):
        clock.advance(-1)
    with pytest.raises(InvalidValue, match="timezone-aware"):
        SimulatedClock(datetime(2026, 1, 1))


def test_simulated_clock_without_a_loop_and_the_real_clock() -> None:
    clock = SimulatedClock(T0)
    clock.advance(1)  # no running loop: nobody to wake
    assert clock.now() == T0 + timedelta(seconds=1)
    real = RealClock()
    assert real.now().tzinfo is not None and real.monotonic() > 0
    asyncio.run(real.sleep(-1))


def test_timers_fire_in_due_then_insertion_order_without_drift() -> None:
    timers = Timers()
    timers.set("b", timedelta(seconds=2), T0)
    timers.set("a", timedelta(seconds=1), T0)
    timers.set("c", timedelta(seconds=2), T0)
    assert len(timers) == 3 and timers.next_due() == T0 + timedelta(seconds=1)
    assert timers.due(T0) == []
    fired = timers.due(T0 + timedelta(seconds=2))
    assert [k for k, _ in fired] == ["a", "b", "c"]
    # 'a' missed nothing beyond its slot: next due 3s, not 4s
    assert timers.due(T0 + timedelta(seconds=3)) == [("a", T0 + timedelta(seconds=3))]
    # a long gap skips whole missed intervals
    fired = timers.due(T0 + timedelta(seconds=10, milliseconds=500))
    assert sorted(k for k, _ in fired) == ["a", "b", "c"]
    assert timers.next_due() == T0 + timedelta(seconds=11)
    timers.set("a", None, T0)
    assert len(timers) == 2
    with pytest.raises(InvalidValue, match="must be positive"):
        timers.set("x", timedelta(0), T0)


def test_engine_options_and_stats() -> None:
    with pytest.raises(ConfigError) as err:
        EngineOptions(equity_interval_s=0, shutdown_timeout_s=-1, quote_currency="")
    keys = {p for p, _ in err.value.problems}
    assert keys == {"engine.equity_interval_s", "engine.shutdown_timeout_s", "engine.quote_currency"}
    stats = EngineStats()
    for equity in ("100", "110", "99", "105"):
        stats.observe_equity(D(equity))
    assert stats.start_equity == 100 and stats.peak_equity == 110 and stats.equity == 105
    assert stats.max_drawdown_quote == 11 and stats.max_drawdown == D(11) / D(110)
    stats.risk_rejects["X"] += 2
    stats.venue_rejects["Y"] += 1
    assert stats.rejects == 3


# --- the engine with a recording order manager ------------------------------------------------


@dataclass(frozen=True, slots=True)
class Update:
    order: Order
    fill: Fill | None = None


class FakeOrders:
    """Records what the engine asks; ``raise_next`` makes the next submit raise; updates are pushed by the test."""

    def __init__(self) -> None:
        self.submitted: list[OrderSpec] = []
        self.cancelled: list[str] = []
        self.cancel_all_calls = 0
        self.orders: dict[str, Order] = {}
        self.raise_next: BaseException | None = None
        self.queue: asyncio.Queue[Update | None] = asyncio.Queue()
        self.synced = 0

    async def submit(self, spec: OrderSpec) -> Order:
        exc, self.raise_next = self.raise_next, None
        if exc is not None:
            if isinstance(exc, OrderRejected):
                order = Order(spec=spec)
                order.transition(OrderStatus.REJECTED, reason=exc.reason)
                self.orders[spec.client_order_id] = order
            raise exc
        self.submitted.append(spec)
        order = Order(spec=spec)
        order.transition(OrderStatus.SUBMITTED)
        order.transition(OrderStatus.OPEN)
        self.orders[spec.client_order_id] = order
        return order

    async def cancel(self, client_order_id: str) -> Order:
        self.cancelled.append(client_order_id)
        if client_order_id == "boom":
            raise VenueUnavailable("down")
        return self.orders[client_order_id]

    async def cancel_all(self, product_id: str | None = None) -> list[Order]:
        self.cancel_all_calls += 1
        out = [o for o in self.orders.values() if o.is_active]
        for o in out:
            o.transition(OrderStatus.CANCELLED)
        return out

    def order(self, client_order_id: str) -> Order | None:
        return self.orders.get(client_order_id)

    def open_orders(self, product_id: str | None = None) -> list[Order]:
        return [o for o in self.orders.values() if o.is_active and (product_id is None or o.product_id == product_id)]

    async def sync_fills(self) -> int:
        self.synced += 1
        return 0

    async def _iter(self) -> AsyncIterator[Update]:
        while (item := await self.queue.get()) is not None:
            yield item

    def updates(self) -> AsyncIterator[Update]:
        return self._iter()


class Recorder(Strategy):
    name = "recorder"
    params = (Param("tag", str, "r"),)

    def on_start(self) -> None:
        self.seen: list[tuple[str, Any]] = []

    def on_book(self, product: str, book: OrderBook) -> None:
        self.seen.append((f"{self.p.tag}:book", (product, book.mid())))

    def on_trade(self, product: str, trade: MarketTrade) -> None:
        self.seen.append((f"{self.p.tag}:trade", trade.price))

    def on_bar(self, product: str, bar: Candle) -> None:
        self.seen.append((f"{self.p.tag}:bar", bar.close))
        if bar.close == 13:
            raise RuntimeError("strategy bug")

    def on_fill(self, fill: Fill) -> None:
        self.seen.append((f"{self.p.tag}:fill", fill.trade_id))

    def on_order_update(self, order: Order) -> None:
        self.seen.append((f"{self.p.tag}:order", (order.client_order_id, order.status, order.reject_reason)))

    def on_timer(self, name: str, now: datetime) -> None:
        self.seen.append((f"{self.p.tag}:timer", (name, now)))

    def on_stop(self) -> None:
        self.seen.append((f"{self.p.tag}:stop", None))
        self.buy("BTC-USD", D("0.01"))  # refused: the engine is stopping


def make_engine(*strategies: Strategy, clock: Any = None, **opts: Any) -> tuple[Engine, FakeOrders, MarketDataService]:
    md = MarketDataService(MarketDataConfig(products=tuple(PRODUCTS)), parse=parse_envelope)
    engine = Engine(mode="sim", clock=clock or SimulatedClock(T0), market_data=md, products=PRODUCTS, strategies=strategies,
                    options=EngineOptions(**opts))
    orders = FakeOrders()
    engine.attach(order_manager=orders)
    return engine, orders, md


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def spec(cid: str, side: Side = Side.BUY, kind: OrderKind = OrderKind.LIMIT, **kw: Any) -> OrderSpec:
    if kind is OrderKind.MARKET:
        kw.setdefault("time_in_force", TimeInForce.IOC)
    else:
        kw.setdefault("limit_price", D("100"))
    kw.setdefault("base_size", D("1") if "quote_size" not in kw else None)
    return OrderSpec(client_order_id=cid, product_id="BTC-USD", side=side, kind=kind, **kw)


def fill(
    cid: str, tid: str, side: Side = Side.BUY, price: str = "100", size: str = "1", fee: str = "0.6", pid: str = "BTC-USD"
) -> Fill:
    return Fill(trade_id=tid, client_order_id=cid, product_id=pid, side=side, price=D(price), size=D(size), fee=D(fee), time=T0,
                liquidity=Liquidity.TAKER)


async def test_dispatch_order_is_deterministic_and_filtered() -> None:
    a = Recorder({"tag": "a"}, products=["BTC-USD"])
    b = Recorder({"tag": "b"}, products=["BTC-USD", "ETH-USD"])
    engine, _, md = make_engine(a, b)
    engine.seed_portfolio({"USD": type("B", (), {"available": D(1000), "hold": D(0)})()})
    await engine.start()
    feed = Feed()
    md.process_frame(feed.snapshot("BTC-USD", [("99", "1")], [("101", "1")]))
    md.process_frame(feed.snapshot("ETH-USD", [("9", "1")], [("11", "1")]))
    md.process_frame(feed.trade("ETH-USD", "10", "1", T0))
    await settle()
    assert [k for k, _ in a.seen] == ["a:book"]
    assert [k for k, _ in b.seen] == ["b:book", "b:book", "b:trade"]
    assert b.seen[1][1] == ("ETH-USD", D(10))
    bar = Candle(T0, D(12), D(12), D(12), D(12), D(1))
    engine.dispatch(CandleClosed("BTC-USD", Timeframe.ONE_MINUTE, bar))
    engine.dispatch(CandleClosed("BTC-USD", Timeframe.FIVE_MINUTE, bar))  # not their timeframe
    engine.dispatch(CandleClosed("BTC-USD", Timeframe.ONE_MINUTE, Candle(T0, D(13), D(13), D(13), D(13), D(1))))
    assert [v for k, v in a.seen if k == "a:bar"] == [D(12), D(13)]
    assert engine.stats.strategy_errors == 2 and engine.stats.bars == 4
    engine.dispatch(Lagged(7))
    engine.dispatch(BookResync("BTC-USD", "gap"))
    engine.dispatch(StaleData("BTC-USD", 12.0, 10.0))
    assert (engine.stats.lagged_events, engine.stats.book_resyncs, engine.stats.stale_events) == (7, 1, 1)
    assert engine.equity() == D(1000) and engine.strategies == [a, b]
    await engine.stop("test")
    assert ("a:stop", None) in a.seen and ("b:stop", None) in b.seen
    assert engine.stats.orders_sent == 2  # on_stop may still send (then in-flight sends are drained)
    engine.submit(spec("late"))
    engine.dispatch(CandleClosed("BTC-USD", Timeframe.ONE_MINUTE, bar))
    assert engine.stats.risk_rejects["ENGINE_STOPPING"] == 1 and [v for k, v in a.seen if k == "a:bar"] == [D(12), D(13)]


async def test_submit_outcomes_reach_the_owning_strategy() -> None:
    a = Recorder({"tag": "a"}, products=["BTC-USD"])
    engine, orders, _ = make_engine(a)
    await engine.start()
    ctx = a.ctx
    first = a.buy("BTC-USD", D("0.5"), price=D("100"))
    await settle()
    assert [s.client_order_id for s in orders.submitted] == [first] and engine.stats.orders_sent == 1
    assert ctx.open_orders("BTC-USD")[0].client_order_id == first and ctx.open_orders("ETH-USD") == []
    orders.raise_next = RiskRejected("MAX_ORDER_NOTIONAL", "too big")
    refused = a.buy("BTC-USD", D(9), price=D("100"))
    await settle()
    assert ("a:order", (refused, OrderStatus.REJECTED, "MAX_ORDER_NOTIONAL")) in a.seen
    orders.raise_next = TradingHalted("halted")
    a.sell("BTC-USD", D(1))
    await settle()
    orders.raise_next = OrderRejected("INSUFFICIENT_FUND", "no money")
    venue_refused = a.sell("BTC-USD", D(1))
    await settle()
    orders.raise_next = VenueUnavailable("503")
    a.sell("BTC-USD", D(1))
    await settle()
    assert engine.stats.risk_rejects == {"MAX_ORDER_NOTIONAL": 1, "TRADING_HALTED": 1}
    assert engine.stats.venue_rejects == {"INSUFFICIENT_FUND": 1} and engine.stats.send_errors == 1
    assert ("a:order", (venue_refused, OrderStatus.REJECTED, "INSUFFICIENT_FUND")) in a.seen
    assert sum(1 for k, v in a.seen if k == "a:order" and v[1] is OrderStatus.REJECTED) == 4
    # an order the order manager still tracks (not rejected) is not reported as rejected by the engine
    orders.orders["tracked"] = Order(spec=spec("tracked"))
    orders.orders["tracked"].transition(OrderStatus.IN_FLIGHT_UNKNOWN)
    engine._rejected(spec("tracked"), "VenueUnavailable")
    a.cancel(first)
    engine.cancel("boom")  # a failing cancel is logged, not raised
    await settle()
    assert orders.cancelled == [first, "boom"] and engine.stats.cancels == 2
    assert engine.owner_of(first) == 0 and engine.owner_of("nobody") is None
    await engine.stop()
    assert orders.cancel_all_calls == 1


async def test_fills_update_the_portfolio_once_and_reach_the_strategy() -> None:
    a = Recorder({}, products=["BTC-USD"])
    engine, orders, md = make_engine(a)
    engine.portfolio.set_balance("USD", D(1000))
    await engine.start()
    cid = a.buy("BTC-USD", D(1), price=D(100))
    await settle()
    order = orders.orders[cid]
    f = fill(cid, "t1")
    order.apply_fill(f)
    await orders.queue.put(Update(order, f))
    await orders.queue.put(Update(order, f))  # the same trade twice counts once
    await orders.queue.put(Update(order, fill(cid, "t9", pid="SOL-USD")))  # not ours: ignored
    await orders.queue.put(Update(order, fill(cid, "t2", price="1000000")))  # more than the balance: logged, not applied
    await settle()
    assert engine.stats.fills == 1 and engine.stats.fees == D("0.6") and engine.stats.traded_notional == 100
    assert engine.portfolio.balance("BTC").total == 1 and engine.portfolio.balance("USD").total == D("899.4")
    assert [v for k, v in a.seen if k == "r:fill"] == ["t1", "t1", "t9", "t2"]
    assert a.position("BTC-USD").quantity == 1 and a.balance("BTC").total == 1
    assert engine.position_size("BTC-USD") == 1 and engine.position_size("ETH-USD") == 0
    # an update for an order of nobody's: only the portfolio hears about it
    stranger = Order(spec=spec("ext"))
    stranger.transition(OrderStatus.SUBMITTED)
    await orders.queue.put(Update(stranger, fill("ext", "t3", side=Side.SELL, size="0.5")))
    await settle()
    assert engine.portfolio.balance("BTC").total == D("0.5")
    # prices come from the book when there is one, else the last trade
    feed = Feed()
    assert engine.mid_price("BTC-USD") is None and engine.try_equity() is None
    md.process_frame(feed.trade("BTC-USD", "120", "1", T0))
    assert engine.mid_price("BTC-USD") == 120
    md.process_frame(feed.snapshot("BTC-USD", [("99", "1")], [("101", "1")]))
    assert engine.mid_price("BTC-USD") == 100 and engine.mid_price("DOGE-USD") is None
    assert engine.data_age("BTC-USD") is not None and engine.data_age("DOGE-USD") is None
    assert engine.fee_rate("BTC-USD") == D("0.006") and list(engine.product_ids()) == list(PRODUCTS)
    assert engine.product("BTC-USD") is PRODUCTS["BTC-USD"] and engine.product("X-Y") is None
    assert a.ctx.book("BTC-USD") is not None and a.ctx.candles("BTC-USD", Timeframe.ONE_MINUTE, 5) == []
    assert a.ctx.equity() == engine.equity() and a.ctx.now() == T0
    with pytest.raises(InvalidValue, match="not traded by this engine"):
        a.ctx.product("SOL-USD")
    # catch-up: a fill the order manager holds but the portfolio never saw
    second = a.buy("BTC-USD", D(1), price=D(100))
    await settle()
    orders.orders[second].apply_fill(fill(second, "t4", size="0.25", fee="0"))
    assert engine.catch_up_fills() == 1 and engine.catch_up_fills() == 0
    await engine.stop()


async def test_balance_splits_what_open_orders_reserve() -> None:
    engine, _orders, md = make_engine()
    engine.portfolio.set_balance("USD", D(10000))
    engine.portfolio.set_balance("BTC", D(2))
    await engine.start()
    md.process_frame(Feed().snapshot("BTC-USD", [("99", "1")], [("101", "1")]))
    engine.submit(spec("buy", limit_price=D(100), base_size=D(2)))
    engine.submit(spec("sell", side=Side.SELL, base_size=D("0.5")))
    engine.submit(spec("qbuy", kind=OrderKind.MARKET, quote_size=D(50)))
    engine.submit(spec("mbuy", kind=OrderKind.MARKET, base_size=D(1)))
    await settle()
    usd = engine.balance("USD")
    assert usd.hold == D(200) * D("1.006") + D(50) + D(100) * D("1.006")
    assert usd.total == D(10000)
    btc = engine.balance("BTC")
    assert (btc.available, btc.hold) == (D("1.5"), D("0.5"))
    assert engine.balance("ETH").total == 0
    assert len(engine.open_orders()) == 4
    await engine.stop()


async def test_timers_fire_through_the_loop_with_a_simulated_clock() -> None:
    a = Recorder({}, products=["BTC-USD"])
    clock = SimulatedClock(T0)
    engine, _, _ = make_engine(a, clock=clock, equity_interval_s=60)
    await engine.start()
    a.set_timer("tick", 2)
    await settle()
    clock.advance(1)
    await settle()
    assert not [v for k, v in a.seen if k == "r:timer"]
    clock.advance(1)
    await settle()
    clock.advance(2)
    await settle()
    assert [v for k, v in a.seen if k == "r:timer"] == [("tick", T0 + timedelta(seconds=2)), ("tick", T0 + timedelta(seconds=4))]
    a.set_timer("tick", None)
    assert engine.fire_timers(T0 + timedelta(hours=1)) == 1  # only the engine's own equity timer remains
    assert engine.stats.timers == 2
    await engine.stop()


async def test_run_until_duration_and_stop_requests() -> None:
    engine, orders, _ = make_engine(clock=RealClock(), cancel_on_shutdown=False)
    hook_calls: list[str] = []

    async def good() -> None:
        hook_calls.append("good")

    async def bad() -> None:
        raise RuntimeError("hook failed")

    engine.on_shutdown.extend([bad, good])
    assert await engine.run(duration=0.05, install_signal_handlers=False) == "duration elapsed"
    assert orders.cancel_all_calls == 0 and hook_calls == ["good"]
    engine2, _, _ = make_engine(clock=RealClock())
    engine2.request_stop("operator")
    assert await engine2.run() == "operator"
    await engine2.wait_stopped()
    await engine2.stop()  # idempotent


async def test_stop_syncs_fills_and_survives_errors() -> None:
    engine, _orders, _ = make_engine()
    await engine.start()

    async def failing() -> int:
        raise VenueUnavailable("503")

    await engine.stop(sync_fills=failing)
    engine2, orders2, _ = make_engine()
    await engine2.start()
    await engine2.stop(sync_fills=orders2.sync_fills)
    assert orders2.synced == 1


async def test_wiring_errors_are_named() -> None:
    md = MarketDataService(MarketDataConfig(products=("BTC-USD",)), parse=parse_envelope)
    engine = Engine(mode="sim", clock=SimulatedClock(T0), market_data=md, products={"BTC-USD": PRODUCTS["BTC-USD"]})
    with pytest.raises(InvalidValue, match="not attached"):
        engine.order_manager  # noqa: B018
    with pytest.raises(InvalidValue, match="not traded by this engine"):
        engine.add_strategy(Recorder({}, products=["ETH-USD"]))
    engine.attach(order_manager=FakeOrders())
    await engine.start()
    await engine.start()  # idempotent
    with pytest.raises(InvalidValue, match="before start"):
        engine.add_strategy(Recorder({}, products=["BTC-USD"]))
    await engine.stop()


async def test_protective_exits_go_through_the_risk_engine() -> None:
    engine, orders, md = make_engine()
    risk = RiskEngine(RiskConfig(), engine, engine.clock.now)
    exits = ProtectiveExits(ExitsConfig(stop_loss_fraction=D("0.02"), take_profit=[(D("0.05"), D(1))], native_stops=False),
                            engine.product, new_client_order_id=engine.new_client_order_id)
    engine.attach(order_manager=orders, risk=risk, exits=exits)
    engine.portfolio.set_balance("USD", D(10000))
    await engine.start()
    md.process_frame(Feed().snapshot("BTC-USD", [("100", "5")], [("101", "5")]))
    entry = engine.submit(spec("entry", limit_price=D(100), base_size=D(1)))
    await settle()
    order = orders.orders[entry]
    f = fill(entry, "e1", price="100", fee="0")
    order.apply_fill(f)
    await orders.queue.put(Update(order, f))
    await settle()
    assert exits.tracked("BTC-USD") is not None
    md.process_frame(Feed().update("BTC-USD", ("bid", "100", "0"), ("bid", "97", "5"), seq=1))  # bid falls under the 2% stop
    await settle()
    sells = [s for s in orders.submitted if s.side is Side.SELL]
    assert len(sells) == 1 and sells[0].kind is OrderKind.MARKET and sells[0].base_size == 1
    await engine.stop()


def test_endpoints_and_live_checks(tmp_path: Path) -> None:
    config = AppConfig(engine=EngineConfig(sim_url="http://127.0.0.1:9999"))
    ep = endpoints_for(config, "sim")
    assert (ep.rest_base_url, ep.ws_market_url, ep.ws_user_url) == (
        "http://127.0.0.1:9999", "ws://127.0.0.1:9999/ws", "ws://127.0.0.1:9999/ws/user")
    live = endpoints_for(AppConfig(), "live")
    assert live.rest_base_url == "https://api.coinbase.com" and live.ws_user_url.startswith("wss://")
    with pytest.raises(StartupRefused, match="needs a simulator"):
        endpoints_for(AppConfig(), "sim")
    with pytest.raises(StartupRefused) as err:
        check_live_allowed(AppConfig(), confirm_live=False)
    assert "--confirm-live" in str(err.value) and "exchange.key_file" in str(err.value)
    missing = AppConfig(live_confirmed=True, exchange=ExchangeConfig(key_file=tmp_path / "nope.json"))
    with pytest.raises((StartupRefused, ConfigError)):
        check_live_allowed(missing, confirm_live=False)


async def test_build_runtime_refuses_bad_modes_and_missing_keys() -> None:
    with pytest.raises(ConfigError, match="mode"):
        await build_runtime(AppConfig(), mode="yolo")
    with pytest.raises(StartupRefused, match="API key file"):
        await build_runtime(AppConfig(engine=EngineConfig(sim_url="http://127.0.0.1:9")), mode="sim")


async def test_a_cancel_waits_for_its_orders_send() -> None:
    """Cancelling an order whose send is still in flight cancels it after the send, never before (no lost cancel)."""
    a = Recorder({}, products=["BTC-USD"])
    engine, orders, _ = make_engine(a)
    slow_submit = orders.submit

    async def slow(spec: OrderSpec) -> Order:
        await asyncio.sleep(0.01)
        return await slow_submit(spec)

    known_at_cancel: list[bool] = []
    plain_cancel = orders.cancel

    async def watching(client_order_id: str) -> Order:
        known_at_cancel.append(client_order_id in orders.orders)
        return await plain_cancel(client_order_id)

    orders.submit = slow  # type: ignore[method-assign]
    orders.cancel = watching  # type: ignore[method-assign]
    await engine.start()
    cid = a.buy("BTC-USD", D(1), price=D(100))
    a.cancel(cid)
    await engine._drain_sends()
    assert [s.client_order_id for s in orders.submitted] == [cid] and orders.cancelled == [cid]
    assert known_at_cancel == [True]
    assert engine._inflight == {}
    await engine.stop()
