"""Paper trading core: live-book mirroring, our orders, fees, product rules (no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from cryptoj.errors import InvalidValue, OrderRejected
from cryptoj.model.book import OrderBook
from cryptoj.model.money import Side
from cryptoj.model.orders import OrderKind, OrderSpec, OrderStatus, StopDirection, TimeInForce
from cryptoj.venues.paper import BOOK_ACCOUNT, PAPER_ACCOUNT, PaperExchange, relaxed_product, venue_order
from cryptoj.venues.simulated.exchange import FeeTier
from cryptoj.venues.simulated.server import DEFAULT_PRODUCTS

pytestmark = pytest.mark.unit

D = Decimal
T0 = datetime(2026, 1, 1, tzinfo=UTC)
BTC = DEFAULT_PRODUCTS["BTC-USD"]


def book(bids: list[tuple[str, str]], asks: list[tuple[str, str]]) -> OrderBook:
    b = OrderBook("BTC-USD")
    b.apply_snapshot([(D(p), D(s)) for p, s in bids], [(D(p), D(s)) for p, s in asks])
    return b


def paper(**kw: object) -> PaperExchange:
    ex = PaperExchange({"BTC-USD": BTC}, {"USD": D(10000), "BTC": D(1)}, fee_tier=FeeTier(D("0.004"), D("0.006")), **kw)  # type: ignore[arg-type]
    ex.sync_book("BTC-USD", book([("100.00", "1"), ("99.00", "2")], [("101.00", "1"), ("102.00", "3")]), T0)
    return ex


def spec(cid: str, side: Side, kind: OrderKind = OrderKind.MARKET, **kw: object) -> OrderSpec:
    tif = kw.pop("time_in_force", TimeInForce.IOC if kind is OrderKind.MARKET else TimeInForce.GTC)
    return OrderSpec(client_order_id=cid, product_id="BTC-USD", side=side, kind=kind, time_in_force=tif, **kw)  # type: ignore[arg-type]


def test_relaxed_product_drops_minimums_and_flags() -> None:
    p = relaxed_product(BTC)
    assert p.base_min_size == 0 and p.quote_min_size == 0 and not p.trading_disabled
    assert p.base_increment == BTC.base_increment and p.price_increment == BTC.price_increment


def test_market_buy_walks_the_mirrored_book_with_taker_fee() -> None:
    ex = paper()
    assert ex.mirrored_levels("BTC-USD") == 4
    order, events = ex.place(spec("a", Side.BUY, base_size=D("1.5")), T0)
    assert order.status.value == "FILLED"
    fills = ex.fills
    assert [(f.price, f.size) for f in fills] == [(D(101), D(1)), (D(102), D("0.5"))]
    assert sum((f.fee for f in fills), D(0)) == (D(101) + D(51)) * D("0.006")
    bal = ex.balances()
    assert bal["BTC"].available == D("2.5")
    assert bal["USD"].available == D(10000) - D(152) - D(152) * D("0.006")
    updates = ex.record(events)
    assert updates and all(u.client_order_id == "a" for u in updates)
    assert updates[-1].status is OrderStatus.FILLED and updates[-1].cumulative_quantity == D("1.5")


def test_taken_liquidity_stays_taken_until_the_level_changes() -> None:
    ex = paper()
    ex.place(spec("a", Side.BUY, base_size=D(1)), T0)  # takes the whole 101 level
    # an update elsewhere in the book does not regrow the level we took
    ex.sync_book("BTC-USD", book([("100.00", "1"), ("99.00", "5")], [("101.00", "1"), ("102.00", "3")]), T0)
    order, _ = ex.place(spec("b", Side.BUY, base_size=D("0.5")), T0)
    assert ex.fills[-1].price == D(102)
    # the live size of 101 changes: the level is back with its new size
    ex.sync_book("BTC-USD", book([("100.00", "1")], [("101.00", "2"), ("102.00", "3")]), T0)
    ex.place(spec("c", Side.BUY, base_size=D("0.5")), T0)
    assert ex.fills[-1].price == D(101)
    assert order.status.value == "FILLED"


def test_resting_limit_fills_as_maker_when_the_live_book_crosses_it() -> None:
    ex = paper()
    order, events = ex.place(spec("bid", Side.BUY, OrderKind.LIMIT, base_size=D("0.5"), limit_price=D("100.50")), T0)
    assert order.status.value == "OPEN"
    assert ex.balances()["USD"].hold == D("100.50") * D("0.5") * D("1.006")
    # the live ask comes down to 100.20: it trades with our bid at OUR price, maker fee
    events = ex.sync_book("BTC-USD", book([("100.00", "1")], [("100.20", "2"), ("101.00", "1")]), T0 + timedelta(seconds=1))
    updates = ex.record(events)
    assert updates[-1].status is OrderStatus.FILLED and updates[-1].client_order_id == "bid"
    fill = ex.fills[-1]
    assert (fill.price, fill.size, fill.fee) == (D("100.50"), D("0.5"), D("100.50") * D("0.5") * D("0.004"))
    assert ex.balances()["USD"].hold == 0


def test_real_product_rules_apply_to_our_orders() -> None:
    sol = DEFAULT_PRODUCTS["SOL-USD"]
    ex = PaperExchange({"SOL-USD": sol}, {"USD": D(1000)})
    with pytest.raises(OrderRejected) as err:
        ex.place(OrderSpec("x", "SOL-USD", Side.BUY, OrderKind.MARKET, base_size=D("0.0001"), time_in_force=TimeInForce.IOC), T0)
    assert err.value.reason in ("INVALID_SIZE_PRECISION", "ORDER_SIZE_TOO_SMALL")
    with pytest.raises(OrderRejected, match="NO_LIQUIDITY"):
        ex.place(OrderSpec("y", "SOL-USD", Side.BUY, OrderKind.MARKET, base_size=D(1), time_in_force=TimeInForce.IOC), T0)
    with pytest.raises(OrderRejected, match="INVALID_PRODUCT_ID"):
        ex.place(OrderSpec("z", "DOGE-USD", Side.BUY, OrderKind.MARKET, base_size=D(1), time_in_force=TimeInForce.IOC), T0)


def test_post_only_crossing_the_live_ask_is_rejected_and_duplicates_are_idempotent() -> None:
    ex = paper()
    with pytest.raises(OrderRejected, match="POST_ONLY"):
        ex.place(spec("p", Side.BUY, OrderKind.LIMIT, base_size=D("0.1"), limit_price=D("101.00"), post_only=True), T0)
    first, _ = ex.place(spec("q", Side.SELL, OrderKind.LIMIT, base_size=D("0.1"), limit_price=D("105.00")), T0)
    again, events = ex.place(spec("q", Side.SELL, OrderKind.LIMIT, base_size=D("0.2"), limit_price=D("106.00")), T0)
    assert again.order_id == first.order_id and events == []
    results, events = ex.cancel([first.order_id, "nope"], T0)
    assert [r.success for r in results] == [True, False]
    assert ex.record(events)[-1].status is OrderStatus.CANCELLED
    assert ex.balances()["BTC"].hold == 0


def test_insufficient_funds_and_stop_orders() -> None:
    ex = paper()
    with pytest.raises(OrderRejected, match="INSUFFICIENT_FUND"):
        ex.place(spec("big", Side.SELL, base_size=D(5)), T0)
    ex.on_trade("BTC-USD", D("100.50"))
    stop = spec("s", Side.SELL, OrderKind.STOP_LIMIT, base_size=D("0.5"), limit_price=D("98.00"), stop_price=D("99.00"),
                stop_direction=StopDirection.STOP_DOWN)
    order, _ = ex.place(stop, T0)
    assert order.status.value == "OPEN"
    with pytest.raises(OrderRejected, match="INVALID_STOP_PRICE"):
        ex.place(spec("s2", Side.SELL, OrderKind.STOP_LIMIT, base_size=D("0.1"), limit_price=D("98.00"), stop_price=D("101.00"),
                      stop_direction=StopDirection.STOP_DOWN), T0)
    view = venue_order(order)
    assert view.client_order_id == "s" and view.configuration is not None and view.configuration.stop_price == D("99.00")


def test_invalid_book_empties_the_mirror_and_bad_input_is_named() -> None:
    ex = paper()
    ex.sync_book("BTC-USD", None, T0)
    assert ex.mirrored_levels("BTC-USD") == 0
    assert ex.exchange.list_orders(BOOK_ACCOUNT, statuses=["OPEN"]) == []
    with pytest.raises(OrderRejected, match="NO_LIQUIDITY"):
        ex.place(spec("m", Side.BUY, base_size=D("0.1")), T0)
    with pytest.raises(InvalidValue, match="not a paper product"):
        ex.sync_book("ETH-USD", None, T0)
    with pytest.raises(InvalidValue, match=r"paper\.depth"):
        PaperExchange({"BTC-USD": BTC}, {}, depth=0)
    with pytest.raises(InvalidValue, match=r"paper\.products"):
        PaperExchange({}, {})
    with pytest.raises(InvalidValue, match=r"paper\.balances\.USD"):
        PaperExchange({"BTC-USD": BTC}, {"USD": D(-1)})
    assert PAPER_ACCOUNT in ex.exchange.owners()


def test_depth_limits_the_mirror() -> None:
    ex = PaperExchange({"BTC-USD": BTC}, {"USD": D(100)}, depth=1)
    ex.sync_book("BTC-USD", book([("100.00", "1"), ("99.00", "2")], [("101.00", "1"), ("102.00", "3")]), T0)
    assert ex.mirrored_levels("BTC-USD") == 2


def test_public_trades_trigger_stops_inside_the_paper_engine() -> None:
    ex = paper()
    ex.on_trade("BTC-USD", D("100.50"))  # no side/time: only remembered
    stop = spec("stop", Side.SELL, OrderKind.STOP_LIMIT, base_size=D("0.5"), limit_price=D("95.00"), stop_price=D("100.00"),
                stop_direction=StopDirection.STOP_DOWN)
    order, _ = ex.place(stop, T0)
    assert order.status.value == "OPEN" and not order.triggered
    # the market prints at the best bid (a seller took it): the stop triggers and sells into the mirrored bids
    events = ex.on_trade("BTC-USD", D("100.00"), Side.SELL, T0 + timedelta(seconds=1))
    updates = [u for u in ex.record(events) if u.client_order_id == "stop"]
    assert updates and updates[-1].status is OrderStatus.FILLED
    assert next((f.price, f.size) for f in ex.fills if f.client_order_id == "stop")[0] in (D("100.00"), D("99.00"))
    assert ex.on_trade("BTC-USD", D("100.005"), Side.SELL, T0) == []  # off the price increment: nothing replayed
    assert ex.balances()["BTC"].total == D("0.5")
