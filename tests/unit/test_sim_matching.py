"""Unit and property tests for the pure matching engine (cryptoj.venues.simulated.matching)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import count, pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cryptoj.errors import InvalidValue, OrderNotFound, OrderRejected
from cryptoj.model.instruments import Product
from cryptoj.model.money import Side
from cryptoj.model.orders import OrderKind, OrderSpec, StopDirection, TimeInForce
from cryptoj.venues.simulated.matching import (
    DoneReason,
    Level,
    LevelChanged,
    LevelFill,
    MatchingEngine,
    OrderUpdate,
    RejectReason,
    SimOrderStatus,
    Trade,
    check_order,
    fee_for,
    simulate_fill_against_levels,
)

pytestmark = pytest.mark.unit

D = Decimal
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def product(**overrides: object) -> Product:
    fields: dict[str, object] = {
        "product_id": "BTC-USD",
        "base_currency": "BTC",
        "quote_currency": "USD",
        "base_increment": D("0.001"),
        "quote_increment": D("0.01"),
        "price_increment": D("0.01"),
        "base_min_size": D("0.001"),
        "base_max_size": D("1000"),
        "quote_min_size": D("0.01"),
        "quote_max_size": D("10000000"),
    }
    fields.update(overrides)
    return Product(**fields)  # type: ignore[arg-type]


_ids = count(1)


def limit(side: Side, price: str, size: str, **kw: object) -> OrderSpec:
    return OrderSpec(
        f"c{next(_ids)}",
        "BTC-USD",
        side,
        OrderKind.LIMIT,
        base_size=D(size),
        limit_price=D(price),
        **kw,  # type: ignore[arg-type]
    )


def market(side: Side, size: str | None = None, quote: str | None = None, tif: TimeInForce = TimeInForce.IOC) -> OrderSpec:
    return OrderSpec(
        f"c{next(_ids)}",
        "BTC-USD",
        side,
        OrderKind.MARKET,
        base_size=None if size is None else D(size),
        quote_size=None if quote is None else D(quote),
        time_in_force=tif,
    )


def stop_limit(side: Side, stop: str, price: str, size: str, direction: StopDirection, **kw: object) -> OrderSpec:
    return OrderSpec(
        f"c{next(_ids)}",
        "BTC-USD",
        side,
        OrderKind.STOP_LIMIT,
        base_size=D(size),
        limit_price=D(price),
        stop_price=D(stop),
        stop_direction=direction,
        **kw,  # type: ignore[arg-type]
    )


def bracket(side: Side, price: str, trigger: str, size: str, **kw: object) -> OrderSpec:
    return OrderSpec(
        f"c{next(_ids)}",
        "BTC-USD",
        side,
        OrderKind.BRACKET,
        base_size=D(size),
        limit_price=D(price),
        stop_trigger_price=D(trigger),
        **kw,  # type: ignore[arg-type]
    )


class Harness:
    """An engine plus an order-id counter; records every event."""

    def __init__(self, prod: Product | None = None) -> None:
        self.engine = MatchingEngine(prod or product())
        self.n = count(1)
        self.events: list[object] = []

    def submit(self, spec: OrderSpec, owner: str = "a", now: datetime = T0, **kw: object) -> tuple[str, list[object]]:
        oid = f"o{next(self.n)}"
        events = list(self.engine.submit(spec, owner=owner, order_id=oid, now=now, **kw))  # type: ignore[arg-type]
        self.events.extend(events)
        return oid, events


def trades(events: list[object]) -> list[Trade]:
    return [e for e in events if isinstance(e, Trade)]


def updates(events: list[object], order_id: str | None = None) -> list[OrderUpdate]:
    return [e for e in events if isinstance(e, OrderUpdate) and (order_id is None or e.order_id == order_id)]


def final_status(events: list[object], order_id: str) -> SimOrderStatus:
    return updates(events, order_id)[-1].status


# --- basics ------------------------------------------------------------------


def test_resting_limit_orders_build_aggregated_levels() -> None:
    h = Harness()
    h.submit(limit(Side.BUY, "100", "1"))
    h.submit(limit(Side.BUY, "100", "2"))
    h.submit(limit(Side.BUY, "99", "1"))
    h.submit(limit(Side.SELL, "101", "0.5"))
    _, events = h.submit(limit(Side.SELL, "102", "3"))
    e = h.engine
    assert e.levels(Side.BUY) == [Level(D("100"), D("3")), Level(D("99"), D("1"))]
    assert e.levels(Side.SELL, 1) == [Level(D("101"), D("0.5"))]
    assert e.best_bid() == Level(D("100"), D("3"))
    assert e.best_ask() == Level(D("101"), D("0.5"))
    assert e.last_trade_price is None
    assert len(e) == 5
    assert [ev for ev in events if isinstance(ev, LevelChanged)] == [LevelChanged("BTC-USD", Side.SELL, D("102"), D("3"), T0)]
    assert updates(events)[0].status is SimOrderStatus.OPEN


def test_empty_book_views() -> None:
    e = MatchingEngine(product())
    assert e.best_bid() is None and e.best_ask() is None
    assert e.levels(Side.BUY) == [] and e.levels(Side.SELL, 5) == []
    assert e.order("nope") is None
    assert e.product_id == "BTC-USD"


def test_trade_at_maker_price_with_price_time_priority() -> None:
    h = Harness()
    first, _ = h.submit(limit(Side.SELL, "101", "1"), owner="m1")
    second, _ = h.submit(limit(Side.SELL, "101", "1"), owner="m2")
    cheaper, _ = h.submit(limit(Side.SELL, "100.5", "0.5"), owner="m3")
    taker, events = h.submit(limit(Side.BUY, "105", "2"), owner="t")
    ts = trades(events)
    assert [(t.maker_order_id, t.price, t.size) for t in ts] == [
        (cheaper, D("100.5"), D("0.5")),
        (first, D("101"), D("1")),
        (second, D("101"), D("0.5")),
    ]
    assert all(t.taker_order_id == taker and t.taker_side is Side.BUY and t.maker_side is Side.SELL for t in ts)
    assert len({t.trade_id for t in ts}) == 3
    assert final_status(events, taker) is SimOrderStatus.FILLED
    assert final_status(events, first) is SimOrderStatus.FILLED
    assert h.engine.order(second) is not None
    assert h.engine.order(second).remaining_size == D("0.5")  # type: ignore[union-attr]
    assert h.engine.last_trade_price == D("101")
    assert h.engine.levels(Side.SELL) == [Level(D("101"), D("0.5"))]
    # Trades come before the update each fill causes, level changes last.
    kinds = [type(ev).__name__ for ev in events]
    assert kinds.index("Trade") < kinds.index("LevelChanged")
    levels = [ev for ev in events if isinstance(ev, LevelChanged)]
    assert levels == [
        LevelChanged("BTC-USD", Side.SELL, D("100.5"), D("0"), T0),
        LevelChanged("BTC-USD", Side.SELL, D("101"), D("0.5"), T0),
    ]
    assert ts[0].notional == D("50.25")


def test_limit_partially_fills_then_rests_remainder() -> None:
    h = Harness()
    h.submit(limit(Side.SELL, "100", "1"), owner="m")
    oid, events = h.submit(limit(Side.BUY, "100", "3"), owner="t")
    assert trades(events)[0].size == D("1")
    rest = h.engine.order(oid)
    assert rest is not None and rest.resting and rest.remaining_size == D("2")
    assert h.engine.best_bid() == Level(D("100"), D("2"))
    assert h.engine.best_ask() is None


def test_market_order_by_base_size_sweeps_levels_and_kills_rest() -> None:
    h = Harness()
    h.submit(limit(Side.BUY, "100", "1"), owner="m")
    h.submit(limit(Side.BUY, "99", "1"), owner="m")
    oid, events = h.submit(market(Side.SELL, size="3"), owner="t")
    assert [(t.price, t.size) for t in trades(events)] == [(D("100"), D("1")), (D("99"), D("1"))]
    last = updates(events, oid)[-1]
    assert last.status is SimOrderStatus.CANCELLED and last.reason == DoneReason.IMMEDIATE_OR_CANCEL
    assert last.filled_size == D("2") and last.filled_value == D("199")
    assert h.engine.order(oid) is None
    assert h.engine.best_bid() is None


def test_market_buy_by_quote_size_spends_at_most_the_budget() -> None:
    h = Harness()
    h.submit(limit(Side.SELL, "100", "1"), owner="m")
    h.submit(limit(Side.SELL, "300", "10"), owner="m")
    oid, events = h.submit(market(Side.BUY, quote="250"), owner="t")
    ts = trades(events)
    # 100 at 100, then 150 / 300 = 0.5 at 300
    assert [(t.price, t.size) for t in ts] == [(D("100"), D("1")), (D("300"), D("0.5"))]
    assert final_status(events, oid) is SimOrderStatus.FILLED
    assert sum(t.notional for t in ts) == D("250")


def test_market_buy_by_quote_rounds_size_down_to_increment() -> None:
    h = Harness()
    h.submit(limit(Side.SELL, "3", "100"), owner="m")
    oid, events = h.submit(market(Side.BUY, quote="10"), owner="t")
    (t,) = trades(events)
    assert t.size == D("3.333") and t.notional <= D("10")
    assert final_status(events, oid) is SimOrderStatus.FILLED


def test_market_sell_by_quote_size() -> None:
    h = Harness()
    h.submit(limit(Side.BUY, "200", "1"), owner="m")
    h.submit(limit(Side.BUY, "100", "5"), owner="m")
    oid, events = h.submit(market(Side.SELL, quote="250"), owner="t")
    assert [(t.price, t.size) for t in trades(events)] == [(D("200"), D("1")), (D("100"), D("0.5"))]
    assert final_status(events, oid) is SimOrderStatus.FILLED


def test_quote_market_that_cannot_buy_one_increment_is_cancelled() -> None:
    h = Harness()
    h.submit(limit(Side.SELL, "100", "1"), owner="m")
    oid, events = h.submit(market(Side.BUY, quote="0.05"), owner="t")
    assert trades(events) == []
    assert final_status(events, oid) is SimOrderStatus.CANCELLED


def test_market_on_empty_book_is_cancelled_unfilled() -> None:
    h = Harness()
    oid, events = h.submit(market(Side.BUY, size="1"), owner="t")
    assert [u.status for u in updates(events, oid)] == [SimOrderStatus.OPEN, SimOrderStatus.CANCELLED]


def test_quote_market_exhausting_book_exactly_is_filled() -> None:
    h = Harness()
    h.submit(limit(Side.SELL, "100", "1"), owner="m")
    oid, events = h.submit(market(Side.BUY, quote="100"), owner="t")
    assert final_status(events, oid) is SimOrderStatus.FILLED


# --- time in force ------------------------------------------------------------


def test_ioc_limit_never_rests() -> None:
    h = Harness()
    h.submit(limit(Side.SELL, "100", "1"), owner="m")
    oid, events = h.submit(limit(Side.BUY, "100", "2", time_in_force=TimeInForce.IOC), owner="t")
    assert sum(t.size for t in trades(events)) == D("1")
    assert final_status(events, oid) is SimOrderStatus.CANCELLED
    assert h.engine.best_bid() is None and h.engine.order(oid) is None


def test_fok_limit_is_all_or_nothing() -> None:
    h = Harness()
    maker, _ = h.submit(limit(Side.SELL, "100", "1"), owner="m")
    h.submit(limit(Side.SELL, "101", "1"), owner="m")
    oid, events = h.submit(limit(Side.BUY, "100", "1.5", time_in_force=TimeInForce.FOK), owner="t")
    assert trades(events) == []
    last = updates(events, oid)[-1]
    assert last.status is SimOrderStatus.CANCELLED and last.reason == DoneReason.FILL_OR_KILL
    assert h.engine.levels(Side.SELL) == [Level(D("100"), D("1")), Level(D("101"), D("1"))]
    oid2, events2 = h.submit(limit(Side.BUY, "101", "1.5", time_in_force=TimeInForce.FOK), owner="t")
    assert sum(t.size for t in trades(events2)) == D("1.5")
    assert final_status(events2, oid2) is SimOrderStatus.FILLED
    assert final_status(events2, maker) is SimOrderStatus.FILLED


def test_fok_market_by_quote() -> None:
    h = Harness()
    h.submit(limit(Side.SELL, "100", "1"), owner="m")
    oid, events = h.submit(market(Side.BUY, quote="150", tif=TimeInForce.FOK), owner="t")
    assert trades(events) == [] and final_status(events, oid) is SimOrderStatus.CANCELLED
    oid, events = h.submit(market(Side.BUY, quote="50", tif=TimeInForce.FOK), owner="t")
    assert trades(events)[0].size == D("0.5") and final_status(events, oid) is SimOrderStatus.FILLED


def test_gtd_expires_at_end_time_and_before_next_submit() -> None:
    h = Harness()
    end = T0 + timedelta(seconds=10)
    oid, _ = h.submit(limit(Side.BUY, "100", "1", time_in_force=TimeInForce.GTD, end_time=end))
    assert h.engine.expire(T0 + timedelta(seconds=9)) == []
    events = h.engine.expire(end)
    assert final_status(events, oid) is SimOrderStatus.EXPIRED
    assert updates(events, oid)[-1].reason == DoneReason.GTD_EXPIRED
    assert LevelChanged("BTC-USD", Side.BUY, D("100"), D("0"), end) in events
    assert h.engine.order(oid) is None
    # an expired order is not matched by a later taker
    oid2, _ = h.submit(limit(Side.SELL, "100", "1", time_in_force=TimeInForce.GTD, end_time=end + timedelta(seconds=5)))
    _, events = h.submit(market(Side.BUY, size="1"), owner="t", now=end + timedelta(seconds=5))
    assert final_status(events, oid2) is SimOrderStatus.EXPIRED
    assert trades(events) == []


def test_expiry_events_of_a_rejected_submit_come_with_the_next_call() -> None:
    h = Harness()
    end = T0 + timedelta(seconds=1)
    oid, _ = h.submit(limit(Side.BUY, "100", "1", time_in_force=TimeInForce.GTD, end_time=end))
    with pytest.raises(OrderRejected):
        h.submit(limit(Side.BUY, "100.001", "1"), now=end)
    assert h.engine.order(oid) is None
    events = h.engine.expire(end)
    assert final_status(events, oid) is SimOrderStatus.EXPIRED


# --- post-only, self-trade --------------------------------------------------------


def test_post_only_rejected_when_it_would_cross_and_rests_otherwise() -> None:
    h = Harness()
    h.submit(limit(Side.SELL, "101", "1"), owner="m")
    h.submit(limit(Side.BUY, "99", "1"), owner="m")
    with pytest.raises(OrderRejected) as info:
        h.submit(limit(Side.BUY, "101", "1", post_only=True), owner="t")
    assert info.value.reason == RejectReason.INVALID_LIMIT_PRICE_POST_ONLY
    with pytest.raises(OrderRejected) as info:
        h.submit(limit(Side.SELL, "98", "1", post_only=True), owner="t")
    assert info.value.reason == RejectReason.INVALID_LIMIT_PRICE_POST_ONLY
    _oid, events = h.submit(limit(Side.BUY, "100.99", "1", post_only=True), owner="t")
    assert trades(events) == [] and h.engine.best_bid() == Level(D("100.99"), D("1"))


def test_self_trade_prevention_cancels_the_resting_order() -> None:
    h = Harness()
    own, _ = h.submit(limit(Side.SELL, "100", "1"), owner="a")
    other, _ = h.submit(limit(Side.SELL, "100", "1"), owner="b")
    taker, events = h.submit(limit(Side.BUY, "100", "1"), owner="a")
    (t,) = trades(events)
    assert t.maker_order_id == other and t.maker_owner == "b" and t.taker_owner == "a"
    u = updates(events, own)[-1]
    assert u.status is SimOrderStatus.CANCELLED and u.reason == DoneReason.SELF_TRADE_PREVENTION
    assert final_status(events, taker) is SimOrderStatus.FILLED
    assert h.engine.best_ask() is None


def test_self_trade_prevention_only_for_orders_reached() -> None:
    h = Harness()
    far, _ = h.submit(limit(Side.SELL, "105", "1"), owner="a")
    h.submit(limit(Side.SELL, "100", "1"), owner="b")
    _, events = h.submit(limit(Side.BUY, "100", "1"), owner="a")
    assert h.engine.order(far) is not None
    assert updates(events, far) == []


def test_failed_fok_cancels_nothing() -> None:
    h = Harness()
    own, _ = h.submit(limit(Side.SELL, "100", "1"), owner="a")
    h.submit(limit(Side.SELL, "100", "1"), owner="b")
    _, events = h.submit(limit(Side.BUY, "100", "2", time_in_force=TimeInForce.FOK), owner="a")
    assert h.engine.order(own) is not None and trades(events) == []


# --- stops and brackets ------------------------------------------------------------


def trade_at(h: Harness, price: str, size: str = "0.001") -> None:
    h.submit(limit(Side.SELL, price, size), owner="mx")
    h.submit(limit(Side.BUY, price, size), owner="my")


def test_stop_limit_dormant_until_last_trade_reaches_stop_up() -> None:
    h = Harness()
    trade_at(h, "100")
    oid, events = h.submit(stop_limit(Side.BUY, "105", "106", "1", StopDirection.STOP_UP), owner="s")
    order = h.engine.order(oid)
    assert order is not None and order.is_dormant and not order.resting
    assert h.engine.best_bid() is None  # dormant stops are not on the book
    trade_at(h, "104.99")
    assert h.engine.order(oid).is_dormant  # type: ignore[union-attr]
    h.submit(limit(Side.SELL, "106", "5"), owner="m")
    h.submit(limit(Side.SELL, "105", "0.001"), owner="mx")
    _, events = h.submit(limit(Side.BUY, "105", "0.001"), owner="my")
    trig = [u for u in updates(events, oid) if u.triggered]
    assert trig and trig[0].status is SimOrderStatus.OPEN
    fills = [t for t in trades(events) if t.taker_order_id == oid]
    assert [(t.price, t.size) for t in fills] == [(D("106"), D("1"))]
    assert final_status(events, oid) is SimOrderStatus.FILLED


def test_stop_down_does_not_trigger_on_rise_and_rests_when_not_crossing() -> None:
    h = Harness()
    trade_at(h, "100")
    oid, _ = h.submit(stop_limit(Side.SELL, "95", "94", "1", StopDirection.STOP_DOWN), owner="s")
    trade_at(h, "120")
    assert h.engine.order(oid).is_dormant  # type: ignore[union-attr]
    trade_at(h, "95")
    order = h.engine.order(oid)
    assert order is not None and order.triggered and order.resting
    assert h.engine.best_ask() == Level(D("94"), D("1"))


def test_stop_rejected_when_already_through_last_trade() -> None:
    h = Harness()
    trade_at(h, "100")
    with pytest.raises(OrderRejected) as info:
        h.submit(stop_limit(Side.BUY, "100", "101", "1", StopDirection.STOP_UP))
    assert info.value.reason == RejectReason.INVALID_STOP_PRICE
    with pytest.raises(OrderRejected) as info:
        h.submit(stop_limit(Side.SELL, "100.01", "99", "1", StopDirection.STOP_DOWN))
    assert info.value.reason == RejectReason.INVALID_STOP_PRICE


def test_cancel_dormant_stop() -> None:
    h = Harness()
    oid, _ = h.submit(stop_limit(Side.SELL, "95", "94", "1", StopDirection.STOP_DOWN))
    events = h.engine.cancel(oid, T0)
    assert final_status(events, oid) is SimOrderStatus.CANCELLED
    trade_at(h, "90")
    assert h.engine.order(oid) is None


def test_sell_bracket_take_profit_fills_as_maker() -> None:
    h = Harness()
    trade_at(h, "100")
    oid, _ = h.submit(bracket(Side.SELL, "110", "90", "1"), owner="s")
    assert h.engine.best_ask() == Level(D("110"), D("1"))
    _, events = h.submit(market(Side.BUY, size="1"), owner="t")
    (t,) = trades(events)
    assert t.maker_order_id == oid and t.price == D("110")
    assert final_status(events, oid) is SimOrderStatus.FILLED
    trade_at(h, "80")  # the stop leg died with the order
    assert h.engine.order(oid) is None


def test_sell_bracket_stop_converts_remaining_into_market_order() -> None:
    h = Harness()
    trade_at(h, "100")
    oid, _ = h.submit(bracket(Side.SELL, "110", "90", "2"), owner="s")
    h.submit(market(Side.BUY, size="0.5"), owner="t")  # take profit fills partly
    h.submit(limit(Side.BUY, "85", "10"), owner="bid")
    h.submit(limit(Side.BUY, "89", "0.001"), owner="my")
    _, events = h.submit(limit(Side.SELL, "89", "0.001"), owner="mx")
    assert LevelChanged("BTC-USD", Side.SELL, D("110"), D("0"), T0) in events
    assert any(u.triggered for u in updates(events, oid))
    fills = [t for t in trades(events) if t.taker_order_id == oid]
    assert [(t.price, t.size) for t in fills] == [(D("85"), D("1.5"))]
    assert final_status(events, oid) is SimOrderStatus.FILLED


def test_buy_bracket_market_leg_is_capped_by_max_notional() -> None:
    h = Harness()
    trade_at(h, "100")
    oid, _ = h.submit(bracket(Side.BUY, "90", "110", "2"), owner="s", max_notional=D("220"))
    h.submit(limit(Side.SELL, "110", "0.001"), owner="mx")
    h.submit(limit(Side.SELL, "110", "1"), owner="ask")
    h.submit(limit(Side.SELL, "200", "5"), owner="ask")
    _, events = h.submit(limit(Side.BUY, "110", "0.001"), owner="my")
    fills = [t for t in trades(events) if t.taker_order_id == oid]
    spent = sum(t.notional for t in fills)
    assert spent <= D("220")
    assert [(t.price, t.size) for t in fills] == [(D("110"), D("1")), (D("200"), D("0.55"))]
    assert final_status(events, oid) is SimOrderStatus.CANCELLED


def test_bracket_with_stop_on_wrong_side_rejected() -> None:
    h = Harness()
    with pytest.raises(OrderRejected) as info:
        h.submit(bracket(Side.SELL, "100", "110", "1"))
    assert info.value.reason == RejectReason.INVALID_LIMIT_PRICE
    with pytest.raises(OrderRejected) as info:
        h.submit(bracket(Side.BUY, "100", "90", "1"))
    assert info.value.reason == RejectReason.INVALID_LIMIT_PRICE
    trade_at(h, "100")
    with pytest.raises(OrderRejected) as info:
        h.submit(bracket(Side.SELL, "110", "100", "1"))
    assert info.value.reason == RejectReason.INVALID_STOP_PRICE


def test_stop_cascade_in_one_call() -> None:
    h = Harness()
    trade_at(h, "100")
    a, _ = h.submit(stop_limit(Side.SELL, "99", "97", "1", StopDirection.STOP_DOWN), owner="s1")
    b, _ = h.submit(stop_limit(Side.SELL, "97", "96", "1", StopDirection.STOP_DOWN), owner="s2")
    h.submit(limit(Side.BUY, "97", "1"), owner="bid")
    h.submit(limit(Side.BUY, "96", "1"), owner="bid")
    h.submit(limit(Side.BUY, "99", "0.001"), owner="my")
    _, events = h.submit(limit(Side.SELL, "99", "0.001"), owner="mx")
    assert final_status(events, a) is SimOrderStatus.FILLED
    assert final_status(events, b) is SimOrderStatus.FILLED
    assert h.engine.last_trade_price == D("96")


def test_triggered_gtd_stop_limit_keeps_expiring() -> None:
    h = Harness()
    trade_at(h, "100")
    end = T0 + timedelta(minutes=1)
    oid, _ = h.submit(
        stop_limit(Side.SELL, "99", "98", "1", StopDirection.STOP_DOWN, time_in_force=TimeInForce.GTD, end_time=end)
    )
    trade_at(h, "99")
    assert h.engine.order(oid).resting  # type: ignore[union-attr]
    events = h.engine.expire(end)
    assert final_status(events, oid) is SimOrderStatus.EXPIRED
    assert h.engine.best_ask() is None


# --- cancel, errors -----------------------------------------------------------------


def test_cancel_resting_and_unknown() -> None:
    h = Harness()
    oid, _ = h.submit(limit(Side.BUY, "100", "1"))
    h.submit(limit(Side.BUY, "100", "2"))
    events = h.engine.cancel(oid, T0)
    assert updates(events, oid)[-1].reason == DoneReason.USER_CANCELLED
    assert events[-1] == LevelChanged("BTC-USD", Side.BUY, D("100"), D("2"), T0)
    with pytest.raises(OrderNotFound):
        h.engine.cancel(oid, T0)
    assert h.engine.live_orders("a")[0].base_size == D("2")
    assert h.engine.live_orders() == h.engine.live_orders("a")


def test_duplicate_live_order_id_and_bad_max_notional() -> None:
    e = MatchingEngine(product())
    e.submit(limit(Side.BUY, "100", "1"), owner="a", order_id="x", now=T0)
    with pytest.raises(InvalidValue):
        e.submit(limit(Side.BUY, "100", "1"), owner="a", order_id="x", now=T0)
    with pytest.raises(InvalidValue):
        e.submit(limit(Side.BUY, "100", "1"), owner="a", order_id="y", now=T0, max_notional=D("-1"))


def test_custom_trade_ids() -> None:
    ids = iter(["t-1", "t-2"])
    e = MatchingEngine(product(), trade_id_factory=lambda: next(ids))
    e.submit(limit(Side.SELL, "100", "1"), owner="a", order_id="1", now=T0)
    events = e.submit(market(Side.BUY, size="1"), owner="b", order_id="2", now=T0)
    assert trades(events)[0].trade_id == "t-1"


REJECTIONS = [
    ("trading disabled", {"trading_disabled": True}, lambda: limit(Side.BUY, "100", "1"), RejectReason.TRADING_DISABLED),
    ("cancel only", {"cancel_only": True}, lambda: limit(Side.BUY, "100", "1"), RejectReason.CANCEL_ONLY),
    ("limit only", {"limit_only": True}, lambda: market(Side.BUY, size="1"), RejectReason.LIMIT_ONLY),
    ("post only product", {"post_only": True}, lambda: limit(Side.BUY, "100", "1"), RejectReason.POST_ONLY),
    ("size precision", {}, lambda: limit(Side.BUY, "100", "1.0001"), RejectReason.INVALID_SIZE_PRECISION),
    ("size too small", {"base_min_size": D("0.01")}, lambda: limit(Side.BUY, "100", "0.005"), RejectReason.ORDER_SIZE_TOO_SMALL),
    ("size too large", {}, lambda: limit(Side.BUY, "1", "1001"), RejectReason.ORDER_SIZE_TOO_LARGE),
    ("quote precision", {}, lambda: market(Side.BUY, quote="10.001"), RejectReason.INVALID_SIZE_PRECISION),
    ("quote too small", {"quote_min_size": D("1")}, lambda: market(Side.BUY, quote="0.5"), RejectReason.QUOTE_SIZE_TOO_SMALL),
    ("quote too large", {"quote_max_size": D("100")}, lambda: market(Side.BUY, quote="101"), RejectReason.QUOTE_SIZE_TOO_LARGE),
    ("notional too small", {"quote_min_size": D("1")}, lambda: limit(Side.BUY, "0.5", "1"), RejectReason.QUOTE_SIZE_TOO_SMALL),
    ("notional too large", {"quote_max_size": D("100")}, lambda: limit(Side.BUY, "101", "1"), RejectReason.QUOTE_SIZE_TOO_LARGE),
    ("price precision", {}, lambda: limit(Side.BUY, "100.001", "1"), RejectReason.INVALID_PRICE_PRECISION),
    (
        "stop price precision",
        {},
        lambda: stop_limit(Side.BUY, "100.001", "101", "1", StopDirection.STOP_UP),
        RejectReason.INVALID_PRICE_PRECISION,
    ),
    ("trigger precision", {}, lambda: bracket(Side.SELL, "110", "90.001", "1"), RejectReason.INVALID_PRICE_PRECISION),
    (
        "post-only stop",
        {},
        lambda: stop_limit(Side.BUY, "100", "101", "1", StopDirection.STOP_UP, post_only=True),
        RejectReason.UNSUPPORTED_ORDER_CONFIGURATION,
    ),
    (
        "post-only bracket",
        {},
        lambda: bracket(Side.SELL, "110", "90", "1", post_only=True),
        RejectReason.UNSUPPORTED_ORDER_CONFIGURATION,
    ),
    (
        "gtd in the past",
        {},
        lambda: limit(Side.BUY, "100", "1", time_in_force=TimeInForce.GTD, end_time=T0),
        RejectReason.INVALID_END_TIME,
    ),
    (
        "wrong product",
        {},
        lambda: OrderSpec("x", "ETH-USD", Side.BUY, OrderKind.LIMIT, base_size=D("1"), limit_price=D("1")),
        RejectReason.INVALID_PRODUCT_ID,
    ),
]


@pytest.mark.parametrize(("case", "overrides", "make", "reason"), REJECTIONS, ids=[r[0] for r in REJECTIONS])
def test_rejection_codes(case: str, overrides: dict[str, object], make: object, reason: str) -> None:
    e = MatchingEngine(product(**overrides))
    spec = make()  # type: ignore[operator]
    with pytest.raises(OrderRejected) as info:
        e.submit(spec, owner="a", order_id="o", now=T0)
    assert info.value.reason == reason
    assert info.value.client_order_id == spec.client_order_id
    assert "BTC-USD" in str(info.value)
    assert len(e) == 0 and e.best_bid() is None


def test_check_order_standalone_uses_given_book() -> None:
    spec = limit(Side.BUY, "100", "1", post_only=True)
    check_order(product(), spec, now=T0, best_ask=D("100.01"))
    with pytest.raises(OrderRejected):
        check_order(product(), spec, now=T0, best_ask=D("100"))


# --- external levels ----------------------------------------------------------------


def test_simulate_fill_against_levels_base_and_quote() -> None:
    p = product()
    asks = [(D("100"), D("1")), (D("101"), D("2"))]
    fills = simulate_fill_against_levels(asks, Side.BUY, p, base_size=D("1.5"), fee_rate=D("0.01"))
    assert fills == [LevelFill(D("100"), D("1"), D("1.00")), LevelFill(D("101"), D("0.5"), D("0.505"))]
    assert simulate_fill_against_levels(asks, Side.BUY, p, base_size=D("1.5"), limit_price=D("100")) == [
        LevelFill(D("100"), D("1"), D("0"))
    ]
    assert simulate_fill_against_levels(asks, Side.BUY, p, base_size=D("5"), fill_or_kill=True) == []
    by_quote = simulate_fill_against_levels(asks, Side.BUY, p, quote_size=D("150"))
    assert [(f.price, f.size) for f in by_quote] == [(D("100"), D("1")), (D("101"), D("0.495"))]
    bids = [(D("99"), D("1")), (D("98"), D("1"))]
    sold = simulate_fill_against_levels(bids, Side.SELL, p, base_size=D("2"), limit_price=D("98.5"))
    assert sold == [LevelFill(D("99"), D("1"), D("0"))]


@pytest.mark.parametrize(
    ("levels", "kwargs", "error"),
    [
        ([(D("100"), D("1"))], {}, InvalidValue),
        ([(D("100"), D("1"))], {"base_size": D("1"), "quote_size": D("1")}, InvalidValue),
        ([(D("100"), D("1"))], {"base_size": D("1.0001")}, OrderRejected),
        ([(D("100"), D("1"))], {"quote_size": D("0.001")}, OrderRejected),
        ([(D("100"), D("1"))], {"base_size": D("1"), "limit_price": D("1.001")}, OrderRejected),
        ([(D("100"), D("1"))], {"base_size": D("1"), "fee_rate": D("1")}, InvalidValue),
        ([(D("101"), D("1")), (D("100"), D("1"))], {"base_size": D("2")}, InvalidValue),
        ([(D("100"), D("0"))], {"base_size": D("1")}, InvalidValue),
    ],
)
def test_simulate_fill_against_levels_bad_input(
    levels: list[tuple[Decimal, Decimal]], kwargs: dict[str, Decimal], error: type
) -> None:
    with pytest.raises(error):
        simulate_fill_against_levels(levels, Side.BUY, product(), **kwargs)  # type: ignore[arg-type]


def test_fee_for_is_exact() -> None:
    assert fee_for(D("50000.01"), D("0.12345678"), D("0.006")) == D("50000.01") * D("0.12345678") * D("0.006")


# --- properties -----------------------------------------------------------------------

PRICES = st.integers(min_value=90, max_value=110).map(lambda n: D(n))
SIZES = st.integers(min_value=1, max_value=3000).map(lambda n: D(n) / 1000)
OWNERS = st.sampled_from(["a", "b", "c"])

op = st.one_of(
    st.tuples(st.just("limit"), OWNERS, st.sampled_from(Side), PRICES, SIZES, st.sampled_from(TimeInForce), st.booleans()),
    st.tuples(st.just("market"), OWNERS, st.sampled_from(Side), SIZES, st.booleans()),
    st.tuples(st.just("stop"), OWNERS, st.sampled_from(Side), PRICES, PRICES, SIZES, st.sampled_from(StopDirection)),
    st.tuples(st.just("cancel"), st.integers(min_value=0, max_value=50)),
    st.tuples(st.just("tick"), st.integers(min_value=1, max_value=5)),
)


def run_ops(ops: list[tuple[object, ...]]) -> tuple[MatchingEngine, list[object], dict[str, tuple[str, OrderSpec]]]:
    """Apply random operations; check the book invariants after each."""
    e = MatchingEngine(product())
    now = T0
    placed: dict[str, tuple[str, OrderSpec]] = {}
    events: list[object] = []
    n = 0
    for o in ops:
        spec: OrderSpec | None = None
        owner = "a"
        if o[0] == "limit":
            _, owner, side, price, size, tif, post_only = o
            post = bool(post_only) and tif in (TimeInForce.GTC, TimeInForce.GTD)
            spec = OrderSpec(
                f"c{n}",
                "BTC-USD",
                side,  # type: ignore[arg-type]
                OrderKind.LIMIT,
                base_size=size,  # type: ignore[arg-type]
                limit_price=price,  # type: ignore[arg-type]
                time_in_force=tif,  # type: ignore[arg-type]
                post_only=post,
                end_time=now + timedelta(seconds=3) if tif is TimeInForce.GTD else None,
            )
        elif o[0] == "market":
            _, owner, side, size, fok = o
            spec = OrderSpec(
                f"c{n}",
                "BTC-USD",
                side,  # type: ignore[arg-type]
                OrderKind.MARKET,
                base_size=size,  # type: ignore[arg-type]
                time_in_force=TimeInForce.FOK if fok else TimeInForce.IOC,
            )
        elif o[0] == "stop":
            _, owner, side, stop, price, size, direction = o
            spec = OrderSpec(
                f"c{n}",
                "BTC-USD",
                side,  # type: ignore[arg-type]
                OrderKind.STOP_LIMIT,
                base_size=size,  # type: ignore[arg-type]
                limit_price=price,  # type: ignore[arg-type]
                stop_price=stop,  # type: ignore[arg-type]
                stop_direction=direction,  # type: ignore[arg-type]
            )
        elif o[0] == "cancel":
            live = [x.order_id for x in e.live_orders()]
            if live:
                events.extend(e.cancel(live[int(o[1]) % len(live)], now))  # type: ignore[call-overload]
        else:
            now = now + timedelta(seconds=int(o[1]))  # type: ignore[call-overload]
            events.extend(e.expire(now))
        if spec is not None:
            oid = f"o{n}"
            n += 1
            try:
                got = e.submit(spec, owner=str(owner), order_id=oid, now=now)
            except OrderRejected as exc:
                assert exc.reason in (RejectReason.INVALID_LIMIT_PRICE_POST_ONLY, RejectReason.INVALID_STOP_PRICE)
            else:
                placed[oid] = (str(owner), spec)
                events.extend(got)
        check_book(e)
    return e, events, placed


def check_book(e: MatchingEngine) -> None:
    bids, asks = e.levels(Side.BUY), e.levels(Side.SELL)
    assert all(a.price > b.price for a, b in pairwise(bids))
    assert all(a.price < b.price for a, b in pairwise(asks))
    if bids and asks:
        assert bids[0].price < asks[0].price  # never crossed
    resting = [o for o in e.live_orders() if o.resting]
    for side, levels in ((Side.BUY, bids), (Side.SELL, asks)):
        for level in levels:
            assert level.size > 0
            total = sum(o.remaining_size for o in resting if o.side is side and o.limit_price == level.price)  # type: ignore[misc]
            assert total == level.size


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.lists(op, max_size=40))
def test_property_random_sequences_keep_invariants(ops: list[tuple[object, ...]]) -> None:
    e, events, placed = run_ops(ops)
    filled: dict[str, Decimal] = {}
    for ev in events:
        if isinstance(ev, Trade):
            assert ev.maker_owner != ev.taker_owner  # self-trade prevention
            maker = placed[ev.maker_order_id][1]
            assert maker.limit_price is not None
            taker = placed[ev.taker_order_id][1]
            if taker.kind is OrderKind.LIMIT or taker.kind is OrderKind.STOP_LIMIT:
                assert taker.limit_price is not None
                if ev.taker_side is Side.BUY:
                    assert ev.price <= taker.limit_price
                else:
                    assert ev.price >= taker.limit_price
            # a post-only order never takes
            assert not taker.post_only
            for oid in (ev.maker_order_id, ev.taker_order_id):
                filled[oid] = filled.get(oid, D(0)) + ev.size
    for oid, size in filled.items():
        spec = placed[oid][1]
        assert spec.base_size is not None and size <= spec.base_size  # never overfilled
    final: dict[str, OrderUpdate] = {}
    for ev in events:
        if isinstance(ev, OrderUpdate):
            final[ev.order_id] = ev
    for oid, (_, spec) in placed.items():
        upd = final[oid]
        live = e.order(oid)
        if spec.time_in_force in (TimeInForce.IOC, TimeInForce.FOK) or spec.kind is OrderKind.MARKET:
            assert live is None  # IOC / FOK / market never rest
            assert upd.status in (SimOrderStatus.FILLED, SimOrderStatus.CANCELLED)
        if spec.time_in_force is TimeInForce.FOK:
            assert filled.get(oid, D(0)) in (D(0), spec.base_size)  # all or nothing
        if upd.status is SimOrderStatus.FILLED:
            assert filled[oid] == spec.base_size
        if live is not None:
            assert not upd.status.is_done and live.filled_size == filled.get(oid, D(0))


@settings(max_examples=100, deadline=None, derandomize=True)
@given(
    st.lists(st.tuples(PRICES, SIZES, OWNERS), min_size=1, max_size=20),
    SIZES,
)
def test_property_price_time_priority(resting: list[tuple[Decimal, Decimal, str]], size: Decimal) -> None:
    """A buy fills the cheapest asks first, and at one price the oldest first."""
    e = MatchingEngine(product())
    for i, (price, sz, owner) in enumerate(resting):
        e.submit(limit(Side.SELL, str(price), str(sz)), owner=owner, order_id=f"r{i}", now=T0)
    events = e.submit(market(Side.BUY, size=str(size)), owner="taker", order_id="t", now=T0)
    order_of = {f"r{i}": (price, i) for i, (price, _, _) in enumerate(resting)}
    keys = [order_of[t.maker_order_id] for t in trades(events)]
    assert keys == sorted(keys)
    # everything strictly better than the last fill price was taken completely
    if keys:
        worst = keys[-1]
        for oid, key in order_of.items():
            if key < worst:
                assert e.order(oid) is None
    assert sum(t.size for t in trades(events)) == min(size, sum(sz for _, sz, _ in resting))


@settings(max_examples=100, deadline=None, derandomize=True)
@given(st.lists(st.tuples(PRICES, st.sampled_from(Side)), min_size=1, max_size=15), PRICES, st.sampled_from(StopDirection))
def test_property_stop_triggers_only_in_its_direction(
    path: list[tuple[Decimal, Side]], stop: Decimal, direction: StopDirection
) -> None:
    e = MatchingEngine(product())
    n = count()

    def trade(price: Decimal, aggressor: Side) -> list[object]:
        e.submit(limit(aggressor.opposite, str(price), "0.001"), owner="mx", order_id=f"m{next(n)}", now=T0)
        return list(e.submit(limit(aggressor, str(price), "0.001"), owner="my", order_id=f"m{next(n)}", now=T0))

    trade(D(100), Side.BUY)
    if (direction is StopDirection.STOP_UP and stop <= 100) or (direction is StopDirection.STOP_DOWN and stop >= 100):
        with pytest.raises(OrderRejected):
            e.submit(stop_limit(Side.BUY, str(stop), "200", "1", direction), owner="s", order_id="s", now=T0)
        return
    e.submit(stop_limit(Side.BUY, str(stop), "200", "1", direction), owner="s", order_id="s", now=T0)
    for price, aggressor in path:
        events = trade(price, aggressor)
        fired = any(isinstance(ev, OrderUpdate) and ev.order_id == "s" and ev.triggered for ev in events)
        should = price >= stop if direction is StopDirection.STOP_UP else price <= stop
        assert fired == should
        if fired:
            return
        assert e.order("s") is not None and e.order("s").is_dormant  # type: ignore[union-attr]


def test_bracket_crossing_at_placement_fills_then_rests_with_stop_armed() -> None:
    h = Harness()
    trade_at(h, "100")
    h.submit(limit(Side.BUY, "111", "0.5"), owner="bid")
    oid, events = h.submit(bracket(Side.SELL, "110", "90", "2"), owner="s")
    (t,) = trades(events)
    assert t.taker_order_id == oid and t.price == D("111") and t.size == D("0.5")
    order = h.engine.order(oid)
    assert order is not None and order.resting and order.remaining_size == D("1.5")
    assert h.engine.best_ask() == Level(D("110"), D("1.5"))
    h.submit(limit(Side.BUY, "80", "5"), owner="bid")
    trade_at(h, "90")
    assert h.engine.order(oid) is None
    assert h.engine.best_ask() is None


def test_bracket_filled_completely_at_placement_arms_no_stop() -> None:
    h = Harness()
    trade_at(h, "100")
    h.submit(limit(Side.BUY, "111", "2"), owner="bid")
    oid, events = h.submit(bracket(Side.SELL, "110", "90", "1"), owner="s")
    assert final_status(events, oid) is SimOrderStatus.FILLED
    h.submit(limit(Side.BUY, "80", "5"), owner="bid")
    _, events = h.submit(market(Side.SELL, size="1"), owner="t")
    assert updates(events, oid) == []


def test_budget_never_overspent_when_the_quotient_rounds_up() -> None:
    """A 60-digit quotient can round up onto an increment; the walk steps back one increment."""
    from cryptoj.venues.simulated.matching import _plan, wide_context

    p = product()
    budget = D("2." + "9" * 70)  # 3 - 1e-70: affords 0.999... increments of price 3 -> 0.999
    with wide_context():
        plan = _plan([(D("3"), D("5"), "x")], Side.BUY, p, base_size=None, budget=budget, limit_price=None)
    assert plan.steps == [("x", D("3"), D("0.999"))]
    assert plan.notional <= budget and plan.complete


def test_large_values_stay_exact() -> None:
    """Notionals with more than 28 digits are not rounded by the default Decimal context."""
    from cryptoj.venues.simulated.matching import wide_context

    p = product(base_increment=D("0.00000001"), base_max_size=D("1e12"), quote_max_size=D("1e40"))
    e = MatchingEngine(p)
    e.submit(limit(Side.SELL, "987654321098.76", "1234567.12345678"), owner="a", order_id="1", now=T0)
    events = e.submit(market(Side.BUY, size="1234567.12345678"), owner="b", order_id="2", now=T0)
    (t,) = trades(events)
    with wide_context():
        exact = D("987654321098.76") * D("1234567.12345678")
    assert len(exact.as_tuple().digits) > 28
    assert D("987654321098.76") * D("1234567.12345678") != exact  # the 28-digit product is rounded
    assert t.notional == exact
    assert updates(events, "2")[-1].filled_value == exact


@settings(max_examples=100, deadline=None, derandomize=True)
@given(st.lists(st.tuples(PRICES, st.integers(min_value=1, max_value=20), st.sampled_from(Side)), min_size=1, max_size=25))
def test_property_gtd_orders_expire_exactly_at_end_time(orders: list[tuple[Decimal, int, Side]]) -> None:
    e = MatchingEngine(product())
    ends: dict[str, datetime] = {}
    for i, (price, secs, side) in enumerate(orders):
        end = T0 + timedelta(seconds=secs)
        spec = limit(side, str(price), "1", time_in_force=TimeInForce.GTD, end_time=end)
        e.submit(spec, owner=f"o{i}", order_id=f"g{i}", now=T0)
        ends[f"g{i}"] = end
    for tick in range(0, 22, 3):
        now = T0 + timedelta(seconds=tick)
        expired = {ev.order_id for ev in e.expire(now) if isinstance(ev, OrderUpdate) and ev.status is SimOrderStatus.EXPIRED}
        for oid, end in ends.items():
            if oid in expired:
                assert end <= now
            if e.order(oid) is not None:
                assert end > now  # nothing past its end time survives expire()
        check_book(e)
