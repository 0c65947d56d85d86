"""Pre-trade risk checks (table-driven: each rejects what it should and passes what it should),
trading states, equity tracking, and the protective exit rules."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from cryptoj.config import ExitsConfig, RiskConfig
from cryptoj.errors import InvalidValue, RiskRejected, TradingHalted
from cryptoj.model.instruments import Product
from cryptoj.model.money import Side
from cryptoj.model.orders import Order, OrderKind, OrderSpec, OrderStatus, StopDirection, TimeInForce
from cryptoj.model.positions import Balance
from cryptoj.risk_management import ExitAction, ProtectiveExits, Reason, RiskEngine, TradingState

pytestmark = pytest.mark.unit

D = Decimal
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

BTC = Product(
    product_id="BTC-USD",
    base_currency="BTC",
    quote_currency="USD",
    base_increment=D("0.00000001"),
    quote_increment=D("0.01"),
    price_increment=D("0.01"),
    base_min_size=D("0.0001"),
    base_max_size=D("100"),
    quote_min_size=D("1"),
    quote_max_size=D("1000000"),
)
ETH = replace(BTC, product_id="ETH-USD", base_currency="ETH")


@dataclass
class Ctx:
    """A small in-memory RiskContext."""

    products: dict[str, Product] = field(default_factory=lambda: {"BTC-USD": BTC, "ETH-USD": ETH})
    mids: dict[str, Decimal | None] = field(default_factory=lambda: {"BTC-USD": D("50000"), "ETH-USD": D("2000")})
    ages: dict[str, float | None] = field(default_factory=lambda: {"BTC-USD": 0.5, "ETH-USD": 0.5})
    positions: dict[str, Decimal] = field(default_factory=lambda: {"BTC-USD": D("1"), "ETH-USD": D("0")})
    balances: dict[str, Balance] = field(
        default_factory=lambda: {
            "USD": Balance("USD", D("100000"), D("0")),
            "BTC": Balance("BTC", D("1"), D("0")),
            "ETH": Balance("ETH", D("0"), D("0")),
        }
    )
    orders: list[Order] = field(default_factory=list)
    fee: Decimal = Decimal("0.006")

    def product(self, product_id: str) -> Product | None:
        return self.products.get(product_id)

    def mid_price(self, product_id: str) -> Decimal | None:
        return self.mids.get(product_id)

    def data_age(self, product_id: str) -> float | None:
        return self.ages.get(product_id)

    def position_size(self, product_id: str) -> Decimal:
        return self.positions.get(product_id, D(0))

    def balance(self, currency: str) -> Balance:
        return self.balances.get(currency) or Balance(currency)

    def open_orders(self) -> Sequence[Order]:
        return self.orders

    def fee_rate(self, product_id: str) -> Decimal:
        return self.fee

    def product_ids(self) -> Sequence[str]:
        return list(self.products)


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


_counter = 0


def spec(
    side: Side = Side.BUY,
    kind: OrderKind = OrderKind.LIMIT,
    size: str | None = "0.01",
    price: str | None = "50000",
    *,
    quote: str | None = None,
    pid: str = "BTC-USD",
    **extra: Any,
) -> OrderSpec:
    global _counter
    _counter += 1
    if kind is OrderKind.MARKET:
        price = None
        extra.setdefault("time_in_force", TimeInForce.IOC)
    return OrderSpec(
        client_order_id=f"c{_counter}",
        product_id=pid,
        side=side,
        kind=kind,
        base_size=D(size) if size is not None and quote is None else None,
        quote_size=D(quote) if quote is not None else None,
        limit_price=D(price) if price is not None else None,
        **extra,
    )


def open_order(
    side: Side, size: str, price: str = "50000", pid: str = "BTC-USD", status: OrderStatus = OrderStatus.OPEN
) -> Order:
    return Order(spec=spec(side, size=size, price=price, pid=pid), status=status)


# name, risk config, context changes, order, expected reason (None = passes)
CASES: list[tuple[str, dict[str, Any], dict[str, Any], OrderSpec, str | None]] = [
    ("plain limit buy passes", {}, {}, spec(), None),
    ("unknown product", {}, {}, spec(pid="DOGE-USD"), Reason.UNKNOWN_PRODUCT),
    # product status
    ("trading disabled", {}, {"products": {"BTC-USD": replace(BTC, trading_disabled=True)}}, spec(), Reason.TRADING_DISABLED),
    ("cancel only", {}, {"products": {"BTC-USD": replace(BTC, cancel_only=True)}}, spec(), Reason.CANCEL_ONLY),
    ("limit only refuses market", {}, {"products": {"BTC-USD": replace(BTC, limit_only=True)}},
     spec(kind=OrderKind.MARKET), Reason.LIMIT_ONLY),
    ("limit only passes limit", {}, {"products": {"BTC-USD": replace(BTC, limit_only=True)}}, spec(), None),
    ("post only refuses taker", {}, {"products": {"BTC-USD": replace(BTC, post_only=True)}}, spec(), Reason.POST_ONLY),
    ("post only passes post-only", {}, {"products": {"BTC-USD": replace(BTC, post_only=True)}}, spec(post_only=True), None),
    ("product rules can be switched off", {"check_product_rules": False},
     {"products": {"BTC-USD": replace(BTC, cancel_only=True)}}, spec(), None),
    # increments and sizes
    ("size off increment", {}, {}, spec(size="0.000000001"), Reason.INVALID_SIZE_PRECISION),
    ("size below min", {}, {}, spec(size="0.00005"), Reason.ORDER_SIZE_TOO_SMALL),
    ("size at min passes", {}, {}, spec(size="0.0001"), None),
    ("size above max", {"check_balance": False}, {}, spec(size="101"), Reason.ORDER_SIZE_TOO_LARGE),
    ("price off increment", {}, {}, spec(price="50000.001"), Reason.INVALID_PRICE_PRECISION),
    ("stop price off increment", {}, {},
     spec(kind=OrderKind.STOP_LIMIT, stop_price=D("49000.005"), stop_direction=StopDirection.STOP_DOWN, side=Side.SELL,
          price="48900"), Reason.INVALID_PRICE_PRECISION),
    ("quote size below min", {}, {}, spec(kind=OrderKind.MARKET, quote="0.5"), Reason.QUOTE_SIZE_TOO_SMALL),
    ("quote size off increment", {}, {}, spec(kind=OrderKind.MARKET, quote="10.001"), Reason.INVALID_SIZE_PRECISION),
    ("quote size above max", {"check_balance": False}, {}, spec(kind=OrderKind.MARKET, quote="2000000"),
     Reason.QUOTE_SIZE_TOO_LARGE),
    ("quote-sized market buy passes", {}, {}, spec(kind=OrderKind.MARKET, quote="100"), None),
    # max order notional
    ("order notional above limit", {"max_order_notional": "499.99"}, {}, spec(size="0.01"), Reason.MAX_ORDER_NOTIONAL),
    ("order notional at limit passes", {"max_order_notional": "500"}, {}, spec(size="0.01"), None),
    ("market order valued at mid", {"max_order_notional": "400"}, {}, spec(kind=OrderKind.MARKET, size="0.01"),
     Reason.MAX_ORDER_NOTIONAL),
    ("quote-sized order is its own notional", {"max_order_notional": "99"}, {}, spec(kind=OrderKind.MARKET, quote="100"),
     Reason.MAX_ORDER_NOTIONAL),
    ("market order without a price", {"max_order_notional": "400"}, {"mids": {"BTC-USD": None}},
     spec(kind=OrderKind.MARKET, size="0.01"), Reason.NO_MARKET_PRICE),
    # position notional (held 1 BTC = 50000)
    ("position notional above limit", {"max_position_notional": "50400"}, {}, spec(size="0.01"), Reason.MAX_POSITION_NOTIONAL),
    ("position notional within limit", {"max_position_notional": "50500"}, {}, spec(size="0.01"), None),
    ("open buys count toward the position", {"max_position_notional": "50500"}, {"orders": [open_order(Side.BUY, "0.01")]},
     spec(size="0.01"), Reason.MAX_POSITION_NOTIONAL),
    ("reducing sell passes position limit", {"max_position_notional": "1"}, {}, spec(Side.SELL, size="0.5"), None),
    ("quote-sized buy without price counts its quote", {"max_position_notional": "99"},
     {"mids": {"BTC-USD": None}, "positions": {"BTC-USD": D("0")}}, spec(kind=OrderKind.MARKET, quote="100"),
     Reason.MAX_POSITION_NOTIONAL),
    ("no price to value a held position", {"max_position_notional": "100000"}, {"mids": {"BTC-USD": None}},
     spec(kind=OrderKind.MARKET, quote="100"), Reason.NO_MARKET_PRICE),
    # total exposure: BTC 50000 + ETH 3 * 2000
    ("total exposure above limit", {"max_total_exposure": "56000"}, {"positions": {"BTC-USD": D("1"), "ETH-USD": D("3")}},
     spec(size="0.01"), Reason.MAX_TOTAL_EXPOSURE),
    ("total exposure within limit", {"max_total_exposure": "56600"}, {"positions": {"BTC-USD": D("1"), "ETH-USD": D("3")}},
     spec(size="0.01"), None),
    ("total exposure needs every price", {"max_total_exposure": "1000000"},
     {"positions": {"BTC-USD": D("1"), "ETH-USD": D("3")}, "mids": {"BTC-USD": D("50000"), "ETH-USD": None}},
     spec(size="0.01"), Reason.NO_MARKET_PRICE),
    # open orders
    ("max open orders reached", {"max_open_orders": 2}, {"orders": [open_order(Side.BUY, "0.01"), open_order(Side.BUY, "0.01")]},
     spec(), Reason.MAX_OPEN_ORDERS),
    ("terminal orders do not count", {"max_open_orders": 2},
     {"orders": [open_order(Side.BUY, "0.01"), Order(spec=spec(), status=OrderStatus.FILLED)]}, spec(), None),
    # price band (mid 50000, 5 %)
    ("limit price above band", {"price_band_fraction": "0.05"}, {}, spec(price="52500.01"), Reason.PRICE_BAND),
    ("limit price below band", {"price_band_fraction": "0.05"}, {}, spec(price="47499.99"), Reason.PRICE_BAND),
    ("limit price on band edge passes", {"price_band_fraction": "0.05"}, {}, spec(price="52500"), None),
    ("stop price outside band", {"price_band_fraction": "0.05"}, {},
     spec(Side.SELL, kind=OrderKind.STOP_LIMIT, size="0.1", price="48000", stop_price=D("40000"),
          stop_direction=StopDirection.STOP_DOWN), Reason.PRICE_BAND),
    ("band without a mid", {"price_band_fraction": "0.05"}, {"mids": {"BTC-USD": None}}, spec(), Reason.NO_MARKET_PRICE),
    ("market order has no band", {"price_band_fraction": "0.05"}, {}, spec(kind=OrderKind.MARKET, quote="100"), None),
    # stale data
    ("stale data blocks buys", {"stale_data_seconds": 5.0}, {"ages": {"BTC-USD": 6.0}}, spec(), Reason.STALE_DATA),
    ("no data at all blocks buys", {"stale_data_seconds": 5.0}, {"ages": {}}, spec(), Reason.STALE_DATA),
    ("fresh data passes", {"stale_data_seconds": 5.0}, {"ages": {"BTC-USD": 4.0}}, spec(), None),
    ("stale data lets reducing sells out", {"stale_data_seconds": 5.0}, {"ages": {"BTC-USD": 60.0}},
     spec(Side.SELL, size="0.5"), None),
    # balance sufficiency (fees and holds)
    ("buy needs quote plus fee", {}, {"balances": {"USD": Balance("USD", D("502.99"), D("0"))}}, spec(size="0.01"),
     Reason.INSUFFICIENT_BALANCE),
    ("buy with exactly quote plus fee passes", {}, {"balances": {"USD": Balance("USD", D("503"), D("0"))}}, spec(size="0.01"),
     None),
    ("held funds are not available", {}, {"balances": {"USD": Balance("USD", D("100"), D("10000"))}}, spec(size="0.01"),
     Reason.INSUFFICIENT_BALANCE),
    ("configured fee rate overrides the venue's", {"fee_rate": "0"}, {"balances": {"USD": Balance("USD", D("500"), D("0"))}},
     spec(size="0.01"), None),
    ("sell needs base", {}, {"balances": {"BTC": Balance("BTC", D("0.001"), D("0.999"))}, "positions": {"BTC-USD": D("0")}},
     spec(Side.SELL, size="0.01"), Reason.INSUFFICIENT_BALANCE),
    ("quote-sized market sell converted at mid", {}, {"balances": {"BTC": Balance("BTC", D("0.001"), D("0"))}},
     spec(Side.SELL, kind=OrderKind.MARKET, quote="100"), Reason.INSUFFICIENT_BALANCE),
    ("quote-sized market sell without price", {}, {"mids": {"BTC-USD": None}},
     spec(Side.SELL, kind=OrderKind.MARKET, quote="100"), Reason.NO_MARKET_PRICE),
    ("balance check can be switched off", {"check_balance": False}, {"balances": {}}, spec(size="0.01"), None),
]


@pytest.mark.parametrize(("name", "config", "changes", "order", "expected"), CASES, ids=[c[0] for c in CASES])
def test_check_table(name: str, config: dict[str, Any], changes: dict[str, Any], order: OrderSpec, expected: str | None) -> None:
    ctx = Ctx()
    for key, value in changes.items():
        setattr(ctx, key, value)
    engine = RiskEngine(RiskConfig(**config), ctx, Clock())
    if expected is None:
        engine.check(order)
        assert engine.accepted_count == 1
        assert not engine.rejection_counts
    else:
        with pytest.raises(RiskRejected) as info:
            engine.check(order)
        assert info.value.reason == expected
        assert order.client_order_id in str(info.value)
        assert engine.rejection_counts == {expected: 1}
        [record] = engine.drain_rejections()
        assert (record.reason, record.client_order_id, record.product_id) == (expected, order.client_order_id, order.product_id)
        assert record.as_payload()["reason"] == expected
        assert engine.drain_rejections() == []


def test_order_rate_sliding_window() -> None:
    clock = Clock()
    engine = RiskEngine(RiskConfig(max_orders_per_minute=3), Ctx(), clock)
    for _ in range(3):
        engine.check(spec())
        clock.now += timedelta(seconds=10)
    with pytest.raises(RiskRejected) as info:
        engine.check(spec())
    assert info.value.reason == Reason.ORDER_RATE
    clock.now = T0 + timedelta(seconds=60)  # the first order leaves the window
    engine.check(spec())
    assert engine.accepted_count == 4
    assert engine.rejection_counts[Reason.ORDER_RATE] == 1


def test_reduce_only_state() -> None:
    ctx = Ctx(orders=[open_order(Side.SELL, "0.6")])
    engine = RiskEngine(RiskConfig(), ctx, Clock())
    assert engine.set_state(TradingState.REDUCE_ONLY, "operator") is True
    assert engine.set_state("REDUCE_ONLY", "again") is False
    with pytest.raises(RiskRejected) as info:
        engine.check(spec(Side.BUY))
    assert info.value.reason == Reason.REDUCE_ONLY
    engine.check(spec(Side.SELL, size="0.4"))  # 1 held, 0.6 already offered
    with pytest.raises(RiskRejected) as info:
        engine.check(spec(Side.SELL, size="0.41"))  # would offer more than is held
    assert info.value.reason == Reason.REDUCE_ONLY
    with pytest.raises(RiskRejected):
        engine.check(spec(Side.SELL, kind=OrderKind.MARKET, quote="10", pid="ETH-USD"))  # nothing held


def test_halted_refuses_everything_but_allowed_exits() -> None:
    engine = RiskEngine(RiskConfig(), Ctx(), Clock())
    engine.set_state(TradingState.HALTED, "kill switch")
    assert (engine.state, engine.state_reason, engine.state_since) == (TradingState.HALTED, "kill switch", T0)
    for order in (spec(Side.BUY), spec(Side.SELL, size="0.1")):
        with pytest.raises(TradingHalted, match="HALTED"):
            engine.check(order)
    assert engine.rejection_counts["TRADING_HALTED"] == 2
    exit_order = spec(Side.SELL, kind=OrderKind.MARKET, size="1")
    with engine.allow_exit(exit_order.client_order_id):
        engine.check(exit_order)
    with pytest.raises(TradingHalted):
        engine.check(exit_order)  # the permission ends with the block


def test_set_state_validates() -> None:
    engine = RiskEngine(RiskConfig(), Ctx(), Clock())
    with pytest.raises(InvalidValue, match="trading_state"):
        engine.set_state("PAUSED", "x")
    with pytest.raises(InvalidValue, match="reason"):
        engine.set_state(TradingState.HALTED, "")


def test_daily_loss_limit_quote_and_fraction() -> None:
    clock = Clock()
    engine = RiskEngine(RiskConfig(daily_loss_limit_quote=D("500")), Ctx(), clock)
    engine.on_equity(D("10000"))
    assert engine.daily_loss_breach() is None
    engine.on_equity(D("9600"))
    assert engine.daily_pnl == D("-400")
    engine.check(spec())
    engine.on_equity(D("9500"))
    assert "daily_loss_limit_quote" in (engine.daily_loss_breach() or "")
    with pytest.raises(RiskRejected) as info:
        engine.check(spec())
    assert info.value.reason == Reason.DAILY_LOSS_LIMIT
    engine.check(spec(Side.SELL, size="0.5"))  # reducing orders still pass
    # a new UTC day starts from the current equity
    clock.now = T0 + timedelta(days=1)
    engine.on_equity(D("9500"))
    assert engine.day_start_equity == D("9500")
    assert engine.daily_loss_breach() is None

    frac = RiskEngine(RiskConfig(daily_loss_limit_fraction=D("0.05")), Ctx(), Clock())
    frac.on_equity(D("10000"))
    frac.on_equity(D("9501"))
    assert frac.daily_loss_breach() is None
    frac.on_equity(D("9500"))
    assert "daily_loss_limit_fraction" in (frac.daily_loss_breach() or "")
    frac.on_equity(D("10100"))
    assert frac.daily_loss_breach() is None  # a gain is no loss


def test_drawdown_from_peak() -> None:
    engine = RiskEngine(RiskConfig(max_drawdown_fraction=D("0.1")), Ctx(), Clock())
    assert engine.drawdown is None and engine.daily_pnl is None
    engine.on_equity(D("10000"))
    engine.on_equity(D("12000"))
    assert engine.peak_equity == D("12000")
    engine.on_equity(D("10801"))
    assert engine.drawdown_breach() is None
    engine.check(spec())
    engine.on_equity(D("10800"))
    assert engine.equity == D("10800")
    assert engine.drawdown == D("0.1")
    with pytest.raises(RiskRejected) as info:
        engine.check(spec())
    assert info.value.reason == Reason.MAX_DRAWDOWN


def test_equity_validation_and_restore() -> None:
    engine = RiskEngine(RiskConfig(), Ctx(), Clock())
    with pytest.raises(InvalidValue, match="equity"):
        engine.on_equity(1.5)  # type: ignore[arg-type]
    with pytest.raises(InvalidValue, match="timezone"):
        engine.on_equity(D("1"), datetime(2026, 1, 1))
    engine.restore_equity(day_start=D("1000"), peak=D("1200"), day=T0)
    engine.on_equity(D("900"), T0 + timedelta(hours=1))
    assert (engine.day_start_equity, engine.peak_equity, engine.daily_pnl) == (D("1000"), D("1200"), D("-100"))
    assert engine.drawdown == D("0.25")


# --- protective exits ---------------------------------------------------------------


def ids() -> Any:
    counter = iter(range(1, 1000))
    return lambda: f"x{next(counter)}"


def exits(**config: Any) -> ProtectiveExits:
    return ProtectiveExits(ExitsConfig(**config), {"BTC-USD": BTC}.get, new_client_order_id=ids())


def submitted(actions: list[ExitAction]) -> list[OrderSpec]:
    return [a.spec for a in actions if a.spec is not None]


def test_exits_disabled_does_nothing() -> None:
    rules = exits()
    assert not rules.enabled
    assert rules.on_position("BTC-USD", D("1"), D("100")) == []
    assert rules.on_price("BTC-USD", D("1")) == []


def test_engine_side_stop_loss_sells_everything_once() -> None:
    rules = exits(stop_loss_fraction=D("0.03"), native_stops=False)
    assert rules.on_position("BTC-USD", D("0.5"), D("100")) == []
    assert rules.stop_price("BTC-USD") == D("97.00")
    assert rules.on_price("BTC-USD", D("97.01")) == []
    [sell] = submitted(rules.on_price("BTC-USD", D("97")))
    assert (sell.side, sell.kind, sell.base_size, sell.time_in_force) == (Side.SELL, OrderKind.MARKET, D("0.5"), TimeInForce.IOC)
    assert rules.on_price("BTC-USD", D("90")) == []  # already exiting
    assert rules.on_position("BTC-USD", D("0"), D("0")) == []
    assert rules.tracked("BTC-USD") is None
    assert rules.stop_price("BTC-USD") is None


def test_engine_side_trailing_stop_follows_the_high() -> None:
    rules = exits(trailing_stop_fraction=D("0.05"), native_stops=False)
    rules.on_position("BTC-USD", D("1"), D("100"))
    assert rules.on_price("BTC-USD", D("120")) == []
    assert rules.stop_price("BTC-USD") == D("114.00")
    assert rules.on_price("BTC-USD", D("114.01")) == []
    [sell] = submitted(rules.on_price("BTC-USD", D("114")))
    assert sell.base_size == D("1")


def test_native_stop_is_placed_and_trailed() -> None:
    rules = exits(stop_loss_fraction=D("0.10"), trailing_stop_fraction=D("0.05"), stop_limit_offset_fraction=D("0.01"))
    [place] = rules.on_position("BTC-USD", D("1"), D("100"), last_price=D("100"))
    assert place.spec is not None
    stop = place.spec
    assert (stop.kind, stop.stop_price, stop.limit_price, stop.stop_direction) == (
        OrderKind.STOP_LIMIT, D("95.00"), D("94.05"), StopDirection.STOP_DOWN,
    )
    assert rules.on_price("BTC-USD", D("100.01")) == []  # trail moves less than one increment
    cancel, new = rules.on_price("BTC-USD", D("110"))
    assert cancel.cancel_client_order_id == stop.client_order_id
    assert new.spec is not None and new.spec.stop_price == D("104.50")
    assert rules.on_price("BTC-USD", D("90")) == []  # the venue's stop does the selling
    # the position closes (the stop filled): the resting stop is cancelled if still there
    [close] = rules.on_position("BTC-USD", D("0"), D("0"))
    assert close.cancel_client_order_id == new.spec.client_order_id


def test_refused_native_stop_falls_back_to_a_market_sell() -> None:
    rules = exits(stop_loss_fraction=D("0.10"))
    [place] = rules.on_position("BTC-USD", D("1"), D("100"), last_price=D("100"))
    assert place.spec is not None
    rules.on_order_rejected("someone-elses-order")  # not ours: the stop still guards
    assert rules.on_price("BTC-USD", D("89")) == []
    # The venue refused the stop (e.g. INVALID_STOP_PRICE: the price was already through it).
    fresh = exits(stop_loss_fraction=D("0.10"))
    [stop] = fresh.on_position("BTC-USD", D("1"), D("100"), last_price=D("100"))
    assert stop.spec is not None
    fresh.on_order_rejected(stop.spec.client_order_id)
    [sell] = submitted(fresh.on_price("BTC-USD", D("89.99")))
    assert (sell.side, sell.kind, sell.base_size) == (Side.SELL, OrderKind.MARKET, D("1"))
    assert fresh.on_price("BTC-USD", D("80")) == []  # exiting once


def test_refused_native_stop_is_placed_again_while_the_price_is_above_it() -> None:
    rules = exits(stop_loss_fraction=D("0.10"))
    [stop] = rules.on_position("BTC-USD", D("1"), D("100"), last_price=D("100"))
    assert stop.spec is not None
    rules.on_order_rejected(stop.spec.client_order_id)
    [again] = submitted(rules.on_price("BTC-USD", D("100")))
    assert (again.kind, again.stop_price) == (OrderKind.STOP_LIMIT, D("90.00"))


def test_native_stop_resized_when_position_grows() -> None:
    rules = exits(stop_loss_fraction=D("0.10"))
    [first] = rules.on_position("BTC-USD", D("1"), D("100"))
    cancel, second = rules.on_position("BTC-USD", D("2"), D("100"))
    assert first.spec is not None and second.spec is not None
    assert cancel.cancel_client_order_id == first.spec.client_order_id
    assert second.spec.base_size == D("2")


def test_take_profit_ladder() -> None:
    rules = exits(take_profit=[(D("0.02"), D("0.3")), (D("0.05"), D("0.5")), (D("0.10"), D("1"))], native_stops=False)
    rules.on_position("BTC-USD", D("1"), D("100"))
    assert rules.on_price("BTC-USD", D("101.99")) == []
    [first] = submitted(rules.on_price("BTC-USD", D("102")))
    assert first.base_size == D("0.3")
    assert rules.on_price("BTC-USD", D("103")) == []  # each level fires once
    [second] = submitted(rules.on_price("BTC-USD", D("105")))
    assert second.base_size == D("0.5")
    [last] = submitted(rules.on_price("BTC-USD", D("111")))
    assert last.base_size == D("0.2")
    assert rules.on_price("BTC-USD", D("120")) == []


def test_take_profit_gap_fires_several_levels_and_resizes_native_stop() -> None:
    rules = exits(stop_loss_fraction=D("0.05"), take_profit=[(D("0.02"), D("0.3")), (D("0.05"), D("0.5"))])
    [stop] = rules.on_position("BTC-USD", D("1"), D("100"))
    assert stop.spec is not None
    actions = rules.on_price("BTC-USD", D("106"))
    assert actions[0].cancel_client_order_id == stop.spec.client_order_id
    sizes = [s.base_size for s in submitted(actions)]
    assert sizes == [D("0.3"), D("0.7")]  # the last level sells what is left
    tracked = rules.tracked("BTC-USD")
    assert tracked is not None and tracked.exiting


def test_take_profit_dust_and_unknown_product() -> None:
    rules = exits(take_profit=[(D("0.02"), D("0.0001")), (D("0.5"), D("1"))], native_stops=False)
    rules.on_position("BTC-USD", D("0.5"), D("100"))
    assert rules.on_price("BTC-USD", D("102")) == []  # 0.00005 is under the min size: nothing to send
    with pytest.raises(InvalidValue, match="unknown product"):
        rules.on_position("XRP-USD", D("1"), D("1"))
    assert rules.on_position("BTC-USD", D("0.00001"), D("100")) == []  # below min size: not tracked
    assert rules.tracked("BTC-USD") is None


def test_native_stops_need_a_venue_that_has_them() -> None:
    config = ExitsConfig(stop_loss_fraction=D("0.05"))
    venue_without = ProtectiveExits(config, {"BTC-USD": BTC}.get, native_kinds=frozenset({OrderKind.MARKET, OrderKind.LIMIT}))
    assert not venue_without.native
    assert venue_without.on_position("BTC-USD", D("1"), D("100")) == []  # no resting stop
    [sell] = submitted(venue_without.on_price("BTC-USD", D("95")))  # the engine sells at market instead
    assert sell.kind is OrderKind.MARKET
    venue_with = ProtectiveExits(config, {"BTC-USD": BTC}.get, native_kinds=frozenset(OrderKind))
    assert venue_with.native
    [stop] = venue_with.on_position("BTC-USD", D("1"), D("100"))
    assert stop.spec is not None and stop.spec.kind is OrderKind.STOP_LIMIT
