"""Unit and property tests for the simulated exchange (cryptoj.venues.simulated.exchange)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import count

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cryptoj.errors import InvalidValue, OrderNotFound, OrderRejected
from cryptoj.model.instruments import Product
from cryptoj.model.money import Side
from cryptoj.model.orders import Liquidity, OrderKind, OrderSpec, StopDirection, TimeInForce
from cryptoj.venues.simulated.exchange import (
    FEE_ACCOUNT,
    Balance,
    CancelFailure,
    CancelOutcome,
    FeeTier,
    FillRecorded,
    OrderChanged,
    SimExchange,
    order_configuration,
)
from cryptoj.venues.simulated.matching import LevelChanged, RejectReason, SimOrderStatus, Trade, wide_context

pytestmark = pytest.mark.unit

D = Decimal
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def btc(**overrides: object) -> Product:
    fields: dict[str, object] = {
        "product_id": "BTC-USD",
        "base_currency": "BTC",
        "quote_currency": "USD",
        "base_increment": D("0.001"),
        "quote_increment": D("0.01"),
        "price_increment": D("0.01"),
        "base_min_size": D("0.001"),
        "base_max_size": D("1000"),
        "quote_min_size": D("1"),
        "quote_max_size": D("10000000"),
    }
    fields.update(overrides)
    return Product(**fields)  # type: ignore[arg-type]


def eth() -> Product:
    return btc(product_id="ETH-USD", base_currency="ETH")


_ids = count(1)


def limit(side: Side, price: str, size: str, pid: str = "BTC-USD", **kw: object) -> OrderSpec:
    return OrderSpec(f"c{next(_ids)}", pid, side, OrderKind.LIMIT, base_size=D(size), limit_price=D(price), **kw)  # type: ignore[arg-type]


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


def funded(**tier: object) -> SimExchange:
    x = SimExchange([btc(), eth()], fee_tier=FeeTier(**tier) if tier else None)  # type: ignore[arg-type]
    for owner in ("alice", "bob", "carol"):
        x.deposit(owner, "USD", "100000")
        x.deposit(owner, "BTC", "100")
        x.deposit(owner, "ETH", "100")
    return x


def assert_conserved(x: SimExchange, totals: dict[str, Decimal]) -> None:
    for currency, total in totals.items():
        assert x.total_assets(currency) == total
    for owner in x.owners():
        for bal in x.balances(owner).values():
            assert bal.available >= 0 and bal.hold >= 0


# --- accounts and holds ------------------------------------------------------------


def test_deposit_withdraw_and_balances() -> None:
    x = SimExchange([btc()])
    assert x.deposit("alice", "USD", "10.5") == Balance("USD", D("10.5"), D("0"))
    assert x.withdraw("alice", "USD", D("0.5")).available == D("10")
    assert x.balance("alice", "USD").total == D("10")
    assert x.balance("nobody", "USD") == Balance("USD", D("0"), D("0"))
    assert x.balances("alice") == {"USD": Balance("USD", D("10"), D("0"))}
    with pytest.raises(OrderRejected) as info:
        x.withdraw("alice", "USD", "11")
    assert info.value.reason == RejectReason.INSUFFICIENT_FUND
    for bad in ("0", "-1"):
        with pytest.raises(InvalidValue):
            x.deposit("alice", "USD", bad)
        with pytest.raises(InvalidValue):
            x.withdraw("alice", "USD", bad)
    with pytest.raises(InvalidValue):
        x.deposit("alice", "USD", 1.5)  # type: ignore[arg-type]
    with pytest.raises(InvalidValue):
        x.deposit("", "USD", "1")


def test_limit_buy_puts_hold_with_max_fee_and_cancel_releases_it() -> None:
    x = funded()
    result = x.place("alice", limit(Side.BUY, "100", "2"), T0)
    order = result.order
    assert order.status is SimOrderStatus.OPEN and not result.duplicate
    assert order.hold_currency == "USD" and order.outstanding_hold_amount == D("201.2")  # 200 * 1.006
    assert x.balance("alice", "USD") == Balance("USD", D("99798.8"), D("201.2"))
    cancel = x.cancel("alice", [order.order_id], T0)
    assert cancel.results == [CancelOutcome(order.order_id, True)]
    assert x.balance("alice", "USD") == Balance("USD", D("100000.0"), D("0.0"))
    changed = [e for e in cancel.events if isinstance(e, OrderChanged)]
    assert changed[-1].order.status is SimOrderStatus.CANCELLED and changed[-1].owner == "alice"
    assert any(isinstance(e, LevelChanged) and e.new_size == 0 for e in cancel.events)


def test_sell_holds_base() -> None:
    x = funded()
    x.place("alice", limit(Side.SELL, "100", "2"), T0)
    assert x.balance("alice", "BTC") == Balance("BTC", D("98"), D("2"))


def test_fill_settles_fees_in_quote_into_fee_account() -> None:
    x = funded()
    maker = x.place("alice", limit(Side.SELL, "100", "2"), T0).order
    result = x.place("bob", market(Side.BUY, size="1"), T0)
    taker = result.order
    assert taker.status is SimOrderStatus.FILLED
    assert taker.filled_size == D("1") and taker.average_filled_price == D("100")
    assert taker.total_fees == D("0.6") and taker.number_of_fills == 1 and taker.last_fill_time == T0
    # bob paid 100 + 0.6 taker fee; alice received 100 - 0.4 maker fee
    assert x.balance("bob", "USD") == Balance("USD", D("99899.4"), D("0"))
    assert x.balance("bob", "BTC").available == D("101")
    assert x.balance("alice", "USD").available == D("100099.6")
    assert x.balance("alice", "BTC") == Balance("BTC", D("98"), D("1"))
    assert x.fees_collected("USD") == D("1.0")
    kinds = [type(e) for e in result.events]
    assert kinds.count(Trade) == 1 and kinds.count(FillRecorded) == 2
    fills = {e.fill.liquidity: e.fill for e in result.events if isinstance(e, FillRecorded)}
    assert fills[Liquidity.MAKER].order_id == maker.order_id and fills[Liquidity.MAKER].commission == D("0.4")
    assert fills[Liquidity.TAKER].commission == D("0.6") and fills[Liquidity.TAKER].side is Side.BUY
    maker_now = x.get_order("alice", maker.order_id)
    assert maker_now.status is SimOrderStatus.OPEN and maker_now.leaves_quantity == D("1")
    assert maker_now.outstanding_hold_amount == D("1")


def test_fill_consumes_hold_exactly_and_leftover_is_returned() -> None:
    x = funded()
    x.place("alice", limit(Side.SELL, "90", "1"), T0)
    buy = x.place("bob", limit(Side.BUY, "100", "1"), T0).order  # fills at 90 as taker
    assert buy.status is SimOrderStatus.FILLED and buy.outstanding_hold_amount == 0
    assert x.balance("bob", "USD") == Balance("USD", D("100000") - D("90") - D("0.54"), D("0"))


def test_insufficient_funds_rejected_and_nothing_recorded() -> None:
    x = funded()
    spec = limit(Side.BUY, "1000", "100.5")
    with pytest.raises(OrderRejected) as info:
        x.place("alice", spec, T0)
    assert info.value.reason == RejectReason.INSUFFICIENT_FUND and "USD" in str(info.value)
    assert x.find_order("alice", spec.client_order_id) is None
    assert x.list_orders("alice") == []
    with pytest.raises(OrderRejected) as info:
        x.place("alice", limit(Side.SELL, "100", "100.001"), T0)
    assert info.value.reason == RejectReason.INSUFFICIENT_FUND
    with pytest.raises(OrderRejected) as info:
        x.place("dave", limit(Side.BUY, "100", "1"), T0)
    assert info.value.reason == RejectReason.INSUFFICIENT_FUND


def test_market_buy_hold_from_preview_and_quote_sized_orders() -> None:
    x = funded()
    x.place("alice", limit(Side.SELL, "100", "1"), T0)
    x.place("alice", limit(Side.SELL, "200", "1"), T0)
    x.deposit("dave", "USD", "301.80")  # exactly 300 * 1.006
    r = x.place("dave", market(Side.BUY, size="2"), T0)
    assert r.order.status is SimOrderStatus.FILLED and r.order.filled_value == D("300")
    assert x.balance("dave", "USD").total == 0 and x.balance("dave", "BTC").available == D("2")
    x.place("alice", limit(Side.SELL, "100", "5"), T0)
    r = x.place("bob", market(Side.BUY, quote="150"), T0)
    assert r.order.filled_value == D("150") and r.order.filled_size == D("1.5")
    assert x.balance("bob", "USD").hold == 0
    x.place("alice", limit(Side.BUY, "50", "10"), T0)
    r = x.place("bob", market(Side.SELL, quote="100"), T0)
    assert r.order.filled_size == D("2") and r.order.status is SimOrderStatus.FILLED
    assert x.balance("bob", "BTC").hold == 0


def test_market_buy_insufficient_funds_by_preview() -> None:
    x = funded()
    x.place("alice", limit(Side.SELL, "100", "1"), T0)
    x.deposit("dave", "USD", "100")
    with pytest.raises(OrderRejected) as info:
        x.place("dave", market(Side.BUY, size="1"), T0)  # needs 100.6
    assert info.value.reason == RejectReason.INSUFFICIENT_FUND


def test_idempotent_client_order_id_per_account() -> None:
    x = funded()
    spec = limit(Side.BUY, "100", "1")
    first = x.place("alice", spec, T0)
    again = x.place("alice", replace(spec, base_size=D("3"), limit_price=D("50")), T0)
    assert again.duplicate and again.order.order_id == first.order.order_id and again.events == []
    assert again.order.spec.base_size == D("1")
    assert x.balance("alice", "USD").hold == D("100.6")
    assert len(x.list_orders("alice")) == 1
    other = x.place("bob", spec, T0)  # another account may use the same id
    assert not other.duplicate and other.order.order_id != first.order.order_id
    assert x.find_order("alice", spec.client_order_id).order_id == first.order.order_id  # type: ignore[union-attr]


def test_cancel_results_per_id() -> None:
    x = funded()
    a = x.place("alice", limit(Side.BUY, "100", "1"), T0).order
    b = x.place("alice", limit(Side.SELL, "200", "1"), T0).order
    x.place("bob", market(Side.BUY, size="1"), T0)  # fills b
    c = x.place("bob", limit(Side.BUY, "99", "1"), T0).order
    result = x.cancel("alice", [a.order_id, a.order_id, b.order_id, c.order_id, "nope"], T0)
    assert result.results == [
        CancelOutcome(a.order_id, True),
        CancelOutcome(a.order_id, False, CancelFailure.DUPLICATE_CANCEL_REQUEST),
        CancelOutcome(b.order_id, False, CancelFailure.ORDER_IS_FULLY_FILLED),
        CancelOutcome(c.order_id, False, CancelFailure.UNKNOWN_CANCEL_ORDER),
        CancelOutcome("nope", False, CancelFailure.UNKNOWN_CANCEL_ORDER),
    ]
    assert x.get_order("bob", c.order_id).status is SimOrderStatus.OPEN


def test_cancel_all_and_cancel_only_product_still_cancels() -> None:
    x = funded()
    x.place("alice", limit(Side.BUY, "100", "1"), T0)
    x.place("alice", limit(Side.BUY, "100", "1", pid="ETH-USD"), T0)
    x.add_product(btc(cancel_only=True))
    with pytest.raises(OrderRejected) as info:
        x.place("alice", limit(Side.BUY, "100", "1"), T0)
    assert info.value.reason == RejectReason.CANCEL_ONLY
    r = x.cancel_all("alice", T0, product_id="BTC-USD")
    assert [o.success for o in r.results] == [True]
    assert [o.product_id for o in x.list_orders("alice", statuses=["OPEN"])] == ["ETH-USD"]
    r = x.cancel_all("alice", T0)
    assert len(r.results) == 1
    assert x.balance("alice", "USD") == Balance("USD", D("100000.0"), D("0.0"))


def test_gtd_expiry_releases_hold() -> None:
    x = funded()
    end = T0 + timedelta(minutes=5)
    o = x.place("alice", limit(Side.BUY, "100", "1", time_in_force=TimeInForce.GTD, end_time=end), T0).order
    assert x.expire(T0 + timedelta(minutes=4)) == []
    events = x.expire(end)
    changed = [e for e in events if isinstance(e, OrderChanged)]
    assert changed[0].order.status is SimOrderStatus.EXPIRED and changed[0].order.done_time == end
    assert x.balance("alice", "USD") == Balance("USD", D("100000.0"), D("0.0"))
    assert x.get_order("alice", o.order_id).status is SimOrderStatus.EXPIRED


def test_expiry_during_rejected_place_is_reported_next_call() -> None:
    x = funded()
    end = T0 + timedelta(minutes=5)
    o = x.place("alice", limit(Side.BUY, "100", "1", time_in_force=TimeInForce.GTD, end_time=end), T0).order
    with pytest.raises(OrderRejected):
        x.place("alice", limit(Side.BUY, "100", "100000"), end)
    r = x.place("alice", limit(Side.BUY, "100", "1"), end)
    expired = [e for e in r.events if isinstance(e, OrderChanged) and e.order.order_id == o.order_id]
    assert expired and expired[0].order.status is SimOrderStatus.EXPIRED


def test_unknown_product_and_order() -> None:
    x = funded()
    spec = OrderSpec("z", "DOGE-USD", Side.BUY, OrderKind.LIMIT, base_size=D("1"), limit_price=D("1"))
    with pytest.raises(OrderRejected) as info:
        x.place("alice", spec, T0)
    assert info.value.reason == RejectReason.INVALID_PRODUCT_ID
    with pytest.raises(InvalidValue):
        x.engine("DOGE-USD")
    with pytest.raises(OrderNotFound):
        x.get_order("alice", "nope")
    o = x.place("alice", limit(Side.BUY, "100", "1"), T0).order
    with pytest.raises(OrderNotFound):
        x.get_order("bob", o.order_id)  # not bob's


def test_products_and_fee_tiers() -> None:
    x = funded()
    assert [p.product_id for p in x.products] == ["BTC-USD", "ETH-USD"]
    assert x.product("ETH-USD").base_currency == "ETH"
    x.set_fee_tier("bob", FeeTier(D("0"), D("0.001"), "VIP"))
    assert x.fee_tier("bob").pricing_tier == "VIP" and x.fee_tier("alice") == FeeTier()
    x.place("alice", limit(Side.SELL, "100", "1"), T0)
    r = x.place("bob", market(Side.BUY, size="1"), T0)
    assert r.order.total_fees == D("0.1")
    with pytest.raises(InvalidValue):
        FeeTier(D("1"), D("0"))
    with pytest.raises(InvalidValue):
        FeeTier(D("0"), D("-0.1"))


def test_fee_rates_fixed_at_placement() -> None:
    x = funded()
    o = x.place("alice", limit(Side.BUY, "100", "1"), T0).order
    x.set_fee_tier("alice", FeeTier(D("0.5"), D("0.5")))
    x.place("bob", market(Side.SELL, size="1"), T0)
    assert x.get_order("alice", o.order_id).total_fees == D("0.4")


def test_list_orders_and_fills_with_filters() -> None:
    x = funded()
    t1 = T0 + timedelta(seconds=1)
    a = x.place("alice", limit(Side.SELL, "100", "1"), T0).order
    b = x.place("alice", limit(Side.SELL, "100", "1", pid="ETH-USD"), t1).order
    x.place("bob", market(Side.BUY, size="1"), t1)
    assert [o.order_id for o in x.list_orders("alice")] == [b.order_id, a.order_id]
    assert [o.order_id for o in x.list_orders("alice", product_ids=["ETH-USD"])] == [b.order_id]
    assert [o.order_id for o in x.list_orders("alice", statuses=[SimOrderStatus.FILLED])] == [a.order_id]
    assert [o.order_id for o in x.list_orders("alice", start=t1)] == [b.order_id]
    assert [o.order_id for o in x.list_orders("alice", end=t1)] == [a.order_id]
    assert x.list_orders("nobody") == []
    fills = x.list_fills("alice")
    assert len(fills) == 1 and fills[0].order_id == a.order_id and fills[0].liquidity is Liquidity.MAKER
    assert x.list_fills("alice", order_ids=[b.order_id]) == []
    assert x.list_fills("alice", product_ids=["BTC-USD"]) == fills
    assert x.list_fills("alice", product_ids=["ETH-USD"]) == []
    assert x.list_fills("alice", start=t1) == fills and x.list_fills("alice", end=t1) == []
    assert x.list_fills("alice", start=t1 + timedelta(seconds=1)) == []
    model_fill = fills[0].to_fill()
    assert model_fill.fee == D("0.4") and model_fill.venue_order_id == a.order_id
    assert fills[0].notional == D("100") and not fills[0].size_in_quote


def test_order_record_coinbase_fields() -> None:
    x = funded()
    end = T0 + timedelta(hours=1)
    o = x.place("alice", limit(Side.BUY, "100", "1", time_in_force=TimeInForce.GTD, end_time=end, post_only=True), T0).order
    assert o.order_type == "LIMIT" and o.time_in_force == "GOOD_UNTIL_DATE_TIME"
    assert o.trigger_status == "INVALID_ORDER_TYPE" and o.side is Side.BUY and o.product_id == "BTC-USD"
    assert o.average_filled_price == 0
    assert o.order_configuration == {
        "limit_limit_gtd": {"base_size": "1", "limit_price": "100", "post_only": True, "end_time": "2026-01-01T01:00:00Z"}
    }
    x.cancel("alice", [o.order_id], T0)
    x.place("alice", limit(Side.SELL, "101", "0.01"), T0)
    x.place("bob", market(Side.BUY, size="0.01"), T0)
    s = x.place(
        "alice",
        OrderSpec(
            "st",
            "BTC-USD",
            Side.SELL,
            OrderKind.STOP_LIMIT,
            base_size=D("1"),
            limit_price=D("90"),
            stop_price=D("95"),
            stop_direction=StopDirection.STOP_DOWN,
        ),
        T0,
    ).order
    assert s.trigger_status == "STOP_PENDING" and s.time_in_force == "GOOD_UNTIL_CANCELLED"
    x.place("alice", limit(Side.BUY, "95", "0.02"), T0)
    r = x.place("bob", market(Side.SELL, size="0.02"), T0)
    changed = {e.order.order_id: e.order for e in r.events if isinstance(e, OrderChanged)}
    assert changed[s.order_id].trigger_status == "STOP_TRIGGERED"
    assert changed[s.order_id].leaves_quantity == D("1")


@pytest.mark.parametrize(
    ("spec", "key", "extra"),
    [
        (
            OrderSpec("a", "X-Y", Side.BUY, OrderKind.MARKET, quote_size=D("10"), time_in_force=TimeInForce.IOC),
            "market_market_ioc",
            {"quote_size": "10"},
        ),
        (
            OrderSpec("a", "X-Y", Side.BUY, OrderKind.MARKET, base_size=D("1"), time_in_force=TimeInForce.FOK),
            "market_market_fok",
            {"base_size": "1"},
        ),
        (
            OrderSpec("a", "X-Y", Side.BUY, OrderKind.LIMIT, base_size=D("1"), limit_price=D("2"), time_in_force=TimeInForce.IOC),
            "sor_limit_ioc",
            {"base_size": "1", "limit_price": "2"},
        ),
        (
            OrderSpec("a", "X-Y", Side.BUY, OrderKind.LIMIT, base_size=D("1"), limit_price=D("2"), time_in_force=TimeInForce.FOK),
            "limit_limit_fok",
            {"base_size": "1", "limit_price": "2"},
        ),
        (
            OrderSpec("a", "X-Y", Side.BUY, OrderKind.LIMIT, base_size=D("1"), limit_price=D("2")),
            "limit_limit_gtc",
            {"base_size": "1", "limit_price": "2", "post_only": False},
        ),
        (
            OrderSpec(
                "a",
                "X-Y",
                Side.BUY,
                OrderKind.STOP_LIMIT,
                base_size=D("1"),
                limit_price=D("2"),
                stop_price=D("3"),
                stop_direction=StopDirection.STOP_UP,
                time_in_force=TimeInForce.GTD,
                end_time=datetime(2030, 1, 1, tzinfo=UTC),
            ),
            "stop_limit_stop_limit_gtd",
            {
                "base_size": "1",
                "limit_price": "2",
                "stop_price": "3",
                "stop_direction": "STOP_DIRECTION_STOP_UP",
                "end_time": "2030-01-01T00:00:00Z",
            },
        ),
        (
            OrderSpec("a", "X-Y", Side.SELL, OrderKind.BRACKET, base_size=D("1"), limit_price=D("5"), stop_trigger_price=D("3")),
            "trigger_bracket_gtc",
            {"base_size": "1", "limit_price": "5", "stop_trigger_price": "3"},
        ),
        (
            OrderSpec(
                "a",
                "X-Y",
                Side.SELL,
                OrderKind.BRACKET,
                base_size=D("1"),
                limit_price=D("5"),
                stop_trigger_price=D("3"),
                time_in_force=TimeInForce.GTD,
                end_time=datetime(2030, 1, 1, tzinfo=UTC),
            ),
            "trigger_bracket_gtd",
            {"base_size": "1", "limit_price": "5", "stop_trigger_price": "3", "end_time": "2030-01-01T00:00:00Z"},
        ),
    ],
)
def test_order_configuration_shapes(spec: OrderSpec, key: str, extra: dict[str, object]) -> None:
    assert order_configuration(spec) == {key: extra}


def test_buy_bracket_hold_covers_market_leg() -> None:
    x = funded()
    x.place("bob", limit(Side.SELL, "100", "0.01"), T0)
    x.place("carol", market(Side.BUY, size="0.01"), T0)  # last trade 100
    spec = OrderSpec(
        "br", "BTC-USD", Side.BUY, OrderKind.BRACKET, base_size=D("2"), limit_price=D("90"), stop_trigger_price=D("110")
    )
    o = x.place("alice", spec, T0).order
    assert o.outstanding_hold_amount == D("221.32")  # 110 * 2 * 1.006
    x.place("bob", limit(Side.SELL, "110", "1"), T0)
    x.place("bob", limit(Side.SELL, "200", "5"), T0)
    r = x.place("carol", market(Side.BUY, size="0.01"), T0)  # trades at 110: triggers the bracket
    done = x.get_order("alice", o.order_id)
    assert done.triggered and done.status is SimOrderStatus.CANCELLED
    assert done.filled_value <= D("220") and done.outstanding_hold_amount == 0
    assert x.balance("alice", "USD").hold == 0
    assert any(isinstance(e, Trade) and e.taker_order_id == o.order_id for e in r.events)


# --- table of rejection codes through the exchange -------------------------------------

REJECTIONS = [
    ("size precision", {}, lambda: limit(Side.BUY, "100", "1.0001"), RejectReason.INVALID_SIZE_PRECISION),
    ("price precision", {}, lambda: limit(Side.BUY, "100.001", "1"), RejectReason.INVALID_PRICE_PRECISION),
    ("insufficient", {}, lambda: limit(Side.BUY, "100000", "2"), RejectReason.INSUFFICIENT_FUND),
    ("post-only cross", {}, lambda: limit(Side.BUY, "101", "1", post_only=True), RejectReason.INVALID_LIMIT_PRICE_POST_ONLY),
    (
        "unsupported",
        {},
        lambda: OrderSpec(
            "u",
            "BTC-USD",
            Side.SELL,
            OrderKind.BRACKET,
            base_size=D("1"),
            limit_price=D("110"),
            stop_trigger_price=D("90"),
            post_only=True,
        ),
        RejectReason.UNSUPPORTED_ORDER_CONFIGURATION,
    ),
    ("base too small", {"base_min_size": D("0.1")}, lambda: limit(Side.BUY, "100", "0.05"), RejectReason.ORDER_SIZE_TOO_SMALL),
    ("base too large", {"base_max_size": D("10")}, lambda: limit(Side.BUY, "1", "11"), RejectReason.ORDER_SIZE_TOO_LARGE),
    ("quote too small", {}, lambda: market(Side.BUY, quote="0.5"), RejectReason.QUOTE_SIZE_TOO_SMALL),
    (
        "quote too large",
        {"quote_max_size": D("100")},
        lambda: market(Side.BUY, quote="100.01"),
        RejectReason.QUOTE_SIZE_TOO_LARGE,
    ),
    ("trading disabled", {"trading_disabled": True}, lambda: limit(Side.BUY, "100", "1"), RejectReason.TRADING_DISABLED),
    ("limit only", {"limit_only": True}, lambda: market(Side.BUY, size="1"), RejectReason.LIMIT_ONLY),
    ("post only", {"post_only": True}, lambda: limit(Side.BUY, "100", "1"), RejectReason.POST_ONLY),
]


@pytest.mark.parametrize(("case", "overrides", "make", "reason"), REJECTIONS, ids=[r[0] for r in REJECTIONS])
def test_exchange_rejection_codes(case: str, overrides: dict[str, object], make: object, reason: str) -> None:
    x = funded()
    x.place("bob", limit(Side.SELL, "101", "1"), T0)
    x.add_product(btc(**overrides))
    before = x.balances("alice")
    spec = make()  # type: ignore[operator]
    with pytest.raises(OrderRejected) as info:
        x.place("alice", spec, T0)
    assert info.value.reason == reason
    assert x.balances("alice") == before
    assert x.list_orders("alice") == []


# --- properties ---------------------------------------------------------------------------

OWNERS = st.sampled_from(["alice", "bob", "carol"])
PRICES = st.integers(min_value=95, max_value=105).map(lambda n: D(n))
SIZES = st.integers(min_value=1, max_value=5000).map(lambda n: D(n) / 1000)

OPS = st.one_of(
    st.tuples(st.just("limit"), OWNERS, st.sampled_from(Side), PRICES, SIZES, st.sampled_from(TimeInForce), st.booleans()),
    st.tuples(st.just("market"), OWNERS, st.sampled_from(Side), SIZES, st.booleans(), st.booleans()),
    st.tuples(st.just("stop"), OWNERS, st.sampled_from(Side), PRICES, PRICES, SIZES, st.sampled_from(StopDirection)),
    st.tuples(st.just("bracket"), OWNERS, st.sampled_from(Side), PRICES, st.integers(min_value=1, max_value=5), SIZES),
    st.tuples(st.just("cancel"), OWNERS, st.integers(min_value=0, max_value=30)),
    st.tuples(st.just("retry"), OWNERS, st.integers(min_value=0, max_value=30)),
    st.tuples(st.just("tick"), st.integers(min_value=1, max_value=4)),
)


def build(o: tuple[object, ...], n: int, now: datetime) -> OrderSpec:
    cid = f"p{n}"
    if o[0] == "limit":
        _, _, side, price, size, tif, post = o
        return OrderSpec(
            cid,
            "BTC-USD",
            side,  # type: ignore[arg-type]
            OrderKind.LIMIT,
            base_size=size,  # type: ignore[arg-type]
            limit_price=price,  # type: ignore[arg-type]
            time_in_force=tif,  # type: ignore[arg-type]
            post_only=bool(post) and tif in (TimeInForce.GTC, TimeInForce.GTD),
            end_time=now + timedelta(seconds=3) if tif is TimeInForce.GTD else None,
        )
    if o[0] == "market":
        _, _, side, size, by_quote, fok = o
        amount = size * 100  # type: ignore[operator]
        return OrderSpec(
            cid,
            "BTC-USD",
            side,  # type: ignore[arg-type]
            OrderKind.MARKET,
            base_size=None if by_quote else size,  # type: ignore[arg-type]
            quote_size=amount.quantize(D("0.01")) if by_quote else None,
            time_in_force=TimeInForce.FOK if fok else TimeInForce.IOC,
        )
    if o[0] == "stop":
        _, _, side, stop, price, size, direction = o
        return OrderSpec(
            cid,
            "BTC-USD",
            side,  # type: ignore[arg-type]
            OrderKind.STOP_LIMIT,
            base_size=size,  # type: ignore[arg-type]
            limit_price=price,  # type: ignore[arg-type]
            stop_price=stop,  # type: ignore[arg-type]
            stop_direction=direction,  # type: ignore[arg-type]
        )
    _, _, side, price, gap, size = o
    trigger = price - gap if side is Side.SELL else price + gap  # type: ignore[operator]
    return OrderSpec(
        cid,
        "BTC-USD",
        side,  # type: ignore[arg-type]
        OrderKind.BRACKET,
        base_size=size,  # type: ignore[arg-type]
        limit_price=price,  # type: ignore[arg-type]
        stop_trigger_price=trigger,
    )


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.lists(OPS, max_size=40))
def test_property_assets_conserved_and_orders_consistent(ops: list[tuple[object, ...]]) -> None:
    x = SimExchange([btc(quote_min_size=D("0"))])
    for owner, usd, base in (("alice", "2000", "10"), ("bob", "500", "3"), ("carol", "5000", "1")):
        x.deposit(owner, "USD", usd)
        x.deposit(owner, "BTC", base)
    totals = {"USD": x.total_assets("USD"), "BTC": x.total_assets("BTC")}
    now = T0
    cids: list[tuple[str, str]] = []
    events: list[object] = []
    for n, o in enumerate(ops):
        if o[0] == "tick":
            now += timedelta(seconds=int(o[1]))  # type: ignore[call-overload]
            events.extend(x.expire(now))
        elif o[0] == "cancel":
            orders = x.list_orders(str(o[1]))
            if orders:
                target = orders[int(o[2]) % len(orders)]  # type: ignore[call-overload]
                before = target.status
                res = x.cancel(str(o[1]), [target.order_id], now)
                events.extend(res.events)
                assert res.results[0].success == (not before.is_done)
                after = x.get_order(str(o[1]), target.order_id)
                assert after.status.is_done and after.outstanding_hold_amount == 0  # hold released
        elif o[0] == "retry":
            if cids:
                owner, cid = cids[int(o[2]) % len(cids)]  # type: ignore[call-overload]
                existing = x.find_order(owner, cid)
                assert existing is not None
                count_before = len(x.list_orders(owner))
                spec = OrderSpec(cid, "BTC-USD", Side.BUY, OrderKind.LIMIT, base_size=D("0.001"), limit_price=D("1"))
                r = x.place(owner, spec, now)
                assert r.duplicate and r.order.order_id == existing.order_id
                assert len(x.list_orders(owner)) == count_before  # never placed twice
        else:
            owner = str(o[1])
            spec = build(o, n, now)
            try:
                r = x.place(owner, spec, now)
            except OrderRejected as exc:
                assert exc.reason in (
                    RejectReason.INSUFFICIENT_FUND,
                    RejectReason.INVALID_LIMIT_PRICE_POST_ONLY,
                    RejectReason.INVALID_STOP_PRICE,
                    RejectReason.QUOTE_SIZE_TOO_SMALL,
                )
            else:
                cids.append((owner, spec.client_order_id))
                events.extend(r.events)
        assert_conserved(x, totals)
        check_holds(x)
    fees = sum((e.fill.commission for e in events if isinstance(e, FillRecorded)), D(0))
    assert x.fees_collected("USD") == fees
    for e in events:
        if isinstance(e, Trade):
            assert e.maker_owner != e.taker_owner


def check_holds(x: SimExchange) -> None:
    """Account holds equal the sum of the open orders' outstanding holds; no order overfilled."""
    for owner in ("alice", "bob", "carol"):
        orders = x.list_orders(owner)
        for currency in ("USD", "BTC"):
            open_hold = sum(
                (o.outstanding_hold_amount for o in orders if o.hold_currency == currency and not o.status.is_done), D(0)
            )
            assert x.balance(owner, currency).hold == open_hold
        for o in orders:
            if o.spec.base_size is not None:
                assert o.filled_size <= o.spec.base_size
            if o.status.is_done:
                assert o.outstanding_hold_amount == 0
            if o.spec.post_only:
                assert all(f.liquidity is Liquidity.MAKER for f in x.list_fills(owner, order_ids=[o.order_id]))
            if o.spec.time_in_force in (TimeInForce.IOC, TimeInForce.FOK):
                assert o.status.is_done
            if o.spec.time_in_force is TimeInForce.FOK:
                assert o.filled_size == 0 or o.status is SimOrderStatus.FILLED


def test_fee_account_name_is_exported() -> None:
    x = funded()
    x.place("alice", limit(Side.SELL, "100", "1"), T0)
    x.place("bob", market(Side.BUY, size="1"), T0)
    assert FEE_ACCOUNT in x.owners() and x.balance(FEE_ACCOUNT, "USD").available == D("1.0")


def test_leaves_quantity_and_zero_fee_tier() -> None:
    x = SimExchange([btc()], fee_tier=FeeTier(D("0"), D("0")))
    x.deposit("a", "BTC", "5")
    x.deposit("b", "USD", "1000")
    sell = x.place("a", limit(Side.SELL, "100", "2"), T0).order
    assert sell.leaves_quantity == D("2")
    r = x.place("b", market(Side.BUY, quote="100"), T0)
    assert r.order.leaves_quantity == 0 and r.order.total_fees == 0  # quote-sized
    assert x.fees_collected("USD") == 0 and FEE_ACCOUNT not in x.owners()
    x.place("b", market(Side.BUY, size="1"), T0)
    done = x.get_order("a", sell.order_id)
    assert done.status is SimOrderStatus.FILLED and done.leaves_quantity == 0
    assert x.balance("a", "USD").available == D("200")


def test_rejected_place_creates_no_account() -> None:
    x = SimExchange([btc()])
    with pytest.raises(OrderRejected):
        x.place("ghost", limit(Side.BUY, "100", "1"), T0)
    assert "ghost" not in x.owners()


def test_prune_history_forgets_done_orders_and_fills_only() -> None:
    x = funded()
    done = x.place("alice", limit(Side.SELL, "100", "1"), T0).order
    live = x.place("alice", limit(Side.SELL, "120", "1"), T0).order
    x.place("bob", market(Side.BUY, size="1"), T0)
    assert x.prune_history("alice") == 1
    assert x.prune_history("nobody") == 0
    assert [o.order_id for o in x.list_orders("alice")] == [live.order_id]
    assert x.list_fills("alice") == []
    with pytest.raises(OrderNotFound):
        x.get_order("alice", done.order_id)
    again = x.place("alice", replace(done.spec), T0)  # its client_order_id is free again
    assert not again.duplicate and again.order.order_id != done.order_id
    assert len(x.list_fills("bob")) == 1


def test_large_balances_conserved_exactly() -> None:
    """Balances with more than 28 significant digits stay exact (wide Decimal context)."""
    p = btc(base_increment=D("0.00000001"), base_max_size=D("1e12"), quote_max_size=D("1e30"))
    x = SimExchange([p])
    x.deposit("a", "BTC", "1000000000")
    x.deposit("b", "USD", "100000000000000000000")
    totals = {"USD": x.total_assets("USD"), "BTC": x.total_assets("BTC")}
    x.place("a", limit(Side.SELL, "98765.43", "12345.67890123"), T0)
    r = x.place("b", market(Side.BUY, size="12345.67890123"), T0)
    assert r.order.filled_size == D("12345.67890123")
    assert_conserved(x, totals)
    with wide_context():
        expected = D("100000000000000000000") - r.order.filled_value - r.order.total_fees
    assert x.balance("b", "USD").available == expected
    assert len(expected.as_tuple().digits) > 28
