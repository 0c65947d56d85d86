"""The bar fill model: arrival at the next open, the intra-bar path convention, limits, stops, brackets, fees, slippage."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from cryptoj.backtest.fills import BarFill, BarFillModel, Done, FeeTier, Outcome, WorkingOrder
from cryptoj.errors import InvalidValue, OrderRejected
from cryptoj.model.instruments import Product
from cryptoj.model.money import Side
from cryptoj.model.orders import Liquidity, OrderKind, OrderSpec, StopDirection, TimeInForce

pytestmark = pytest.mark.unit

D = Decimal
T = datetime(2026, 1, 1, tzinfo=UTC)
PRODUCT = Product(
    "BTC-USD",
    "BTC",
    "USD",
    base_increment=D("0.0001"),
    quote_increment=D("0.01"),
    price_increment=D("0.01"),
    base_min_size=D("0.001"),
    base_max_size=D("100"),
    quote_min_size=D("1"),
    quote_max_size=D("1000000"),
)
FEES = FeeTier(maker=D("0.001"), taker=D("0.002"))


def model(slippage: str = "0") -> BarFillModel:
    return BarFillModel(PRODUCT, FEES, slippage_bps=D(slippage))


def spec(side: Side = Side.BUY, kind: OrderKind = OrderKind.MARKET, size: str | None = "1", **kw: object) -> OrderSpec:
    if kind is OrderKind.MARKET:
        kw.setdefault("time_in_force", TimeInForce.IOC)
    return OrderSpec("c1", "BTC-USD", side, kind, base_size=D(size) if size else None, **kw)  # type: ignore[arg-type]


def run(m: BarFillModel, wo: WorkingOrder, o: str, h: str, lo: str, c: str, start: datetime = T) -> Outcome | None:
    return m.evaluate(wo, start, D(o), D(h), D(lo), D(c))


def fill(price: str, size: str, liquidity: Liquidity, rate: Decimal) -> Outcome:
    p, s = D(price), D(size)
    return Outcome(BarFill(p, s, p * s * rate, liquidity))


def test_market_fills_at_the_open_with_taker_fee() -> None:
    out = run(model(), WorkingOrder(spec()), "100", "110", "90", "105")
    assert out == fill("100", "1", Liquidity.TAKER, FEES.taker)
    assert out is not None and out.fill is not None and out.fill.fee == D("0.200")


def test_market_slippage_rounds_against_the_order() -> None:
    m = model("10")  # 0.1 %
    buy = run(m, WorkingOrder(spec()), "100.01", "101", "99", "100")
    sell = run(m, WorkingOrder(spec(Side.SELL)), "100.01", "101", "99", "100")
    assert buy is not None and buy.fill is not None and buy.fill.price == D("100.12")  # 100.11001 -> up
    assert sell is not None and sell.fill is not None and sell.fill.price == D("99.90")  # 99.90999 -> down
    assert m.market_price(Side.BUY, D("100")) == D("100.10")


def test_quote_sized_market() -> None:
    s = OrderSpec("c1", "BTC-USD", Side.BUY, OrderKind.MARKET, quote_size=D("250"), time_in_force=TimeInForce.IOC)
    out = run(model(), WorkingOrder(s), "300", "300", "300", "300")
    assert out is not None and out.fill is not None
    assert out.fill.size == D("0.8333")  # rounded down to the base increment
    tiny = OrderSpec("c1", "BTC-USD", Side.BUY, OrderKind.MARKET, quote_size=D("1"), time_in_force=TimeInForce.IOC)
    out = run(model(), WorkingOrder(tiny), "3000", "3000", "3000", "3000")
    assert out is not None and out.done is Done.CANCELLED and "less than the minimum" in (out.reason or "")


# (side, limit, bar o/h/l/c, expected price or None, liquidity) for an order arriving at this bar's open
LIMIT_CASES = [
    (Side.BUY, "95", ("100", "101", "94", "99"), "95", Liquidity.MAKER),  # touched by the low
    (Side.BUY, "95", ("100", "101", "95", "99"), "95", Liquidity.MAKER),  # touch = fill
    (Side.BUY, "95", ("100", "101", "95.01", "99"), None, None),  # not touched
    (Side.BUY, "105", ("100", "101", "99", "100"), "100", Liquidity.TAKER),  # marketable at arrival: the open
    (Side.SELL, "105", ("100", "106", "99", "101"), "105", Liquidity.MAKER),
    (Side.SELL, "95", ("100", "101", "99", "100"), "100", Liquidity.TAKER),
    (Side.SELL, "105", ("100", "104.99", "99", "101"), None, None),
]


@pytest.mark.parametrize(("side", "limit", "bar", "price", "liquidity"), LIMIT_CASES)
def test_limit_orders(side: Side, limit: str, bar: tuple[str, str, str, str], price: str | None, liquidity: Liquidity) -> None:
    out = run(model(), WorkingOrder(spec(side, OrderKind.LIMIT, limit_price=D(limit))), *bar)
    if price is None:
        assert out is None
    else:
        rate = FEES.maker if liquidity is Liquidity.MAKER else FEES.taker
        assert out == fill(price, "1", liquidity, rate)


def test_resting_limit_gapped_through_fills_at_its_own_price() -> None:
    wo = WorkingOrder(spec(Side.BUY, OrderKind.LIMIT, limit_price=D("95")))
    assert run(model(), wo, "100", "101", "96", "99") is None  # bar t+1: not reached, rests
    out = run(model(), wo, "90", "91", "89", "90")  # bar t+2 opens below the limit
    assert out == fill("95", "1", Liquidity.MAKER, FEES.maker)


def test_post_only_and_ioc() -> None:
    po = spec(Side.BUY, OrderKind.LIMIT, limit_price=D("105"), post_only=True)
    out = run(model(), WorkingOrder(po), "100", "101", "99", "100")
    assert out is not None and out.done is Done.REJECTED and out.reason == "INVALID_LIMIT_PRICE_POST_ONLY"
    ok = run(
        model(), WorkingOrder(spec(Side.BUY, OrderKind.LIMIT, limit_price=D("99"), post_only=True)), "100", "101", "98", "100"
    )
    assert ok == fill("99", "1", Liquidity.MAKER, FEES.maker)
    for tif in (TimeInForce.IOC, TimeInForce.FOK):
        wo = WorkingOrder(spec(Side.BUY, OrderKind.LIMIT, limit_price=D("95"), time_in_force=tif))
        out = run(model(), wo, "100", "101", "90", "99")  # touched later in the bar, but IOC only tries the open
        assert out is not None and out.done is Done.CANCELLED
        hit = run(
            model(),
            WorkingOrder(spec(Side.BUY, OrderKind.LIMIT, limit_price=D("101"), time_in_force=tif)),
            "100",
            "101",
            "90",
            "99",
        )
        assert hit == fill("100", "1", Liquidity.TAKER, FEES.taker)


def test_gtd_expires_at_the_first_bar_at_or_after_end_time() -> None:
    end = T + timedelta(minutes=2)
    wo = WorkingOrder(spec(Side.BUY, OrderKind.LIMIT, limit_price=D("50"), time_in_force=TimeInForce.GTD, end_time=end))
    assert run(model(), wo, "100", "101", "99", "100", T + timedelta(minutes=1)) is None
    out = run(model(), wo, "100", "101", "99", "100", end)
    assert out is not None and out.done is Done.EXPIRED


def test_path_convention_up_bar_low_first_down_bar_high_first() -> None:
    """A bracket whose take-profit and stop are both inside the bar: the path decides which fills."""
    sell = spec(Side.SELL, OrderKind.BRACKET, limit_price=D("105"), stop_trigger_price=D("95"))
    up_bar = ("100", "106", "94", "103")  # close >= open: open -> low -> high -> close: stop first
    down_bar = ("100", "106", "94", "97")  # close < open: open -> high -> low -> close: take-profit first
    assert run(model(), WorkingOrder(sell), *up_bar) == fill("95", "1", Liquidity.TAKER, FEES.taker)
    assert run(model(), WorkingOrder(sell), *down_bar) == fill("105", "1", Liquidity.MAKER, FEES.maker)


def test_bracket_gaps_and_buy_side() -> None:
    sell = spec(Side.SELL, OrderKind.BRACKET, limit_price=D("105"), stop_trigger_price=D("95"))
    assert run(model(), WorkingOrder(sell), "110", "111", "109", "110") == fill("110", "1", Liquidity.TAKER, FEES.taker)
    resting = WorkingOrder(sell, arrived=True)
    assert run(model(), resting, "110", "111", "109", "110") == fill("105", "1", Liquidity.MAKER, FEES.maker)
    assert run(model("100"), WorkingOrder(sell), "90", "91", "89", "90") == fill("89.10", "1", Liquidity.TAKER, FEES.taker)
    assert run(model(), WorkingOrder(sell), "100", "101", "99", "100") is None
    buy = spec(Side.BUY, OrderKind.BRACKET, limit_price=D("95"), stop_trigger_price=D("105"))
    assert run(model(), WorkingOrder(buy), "100", "106", "99", "101") == fill("105", "1", Liquidity.TAKER, FEES.taker)
    assert run(model(), WorkingOrder(buy), "100", "101", "94", "96") == fill("95", "1", Liquidity.MAKER, FEES.maker)


def stop(side: Side, stop_price: str, limit: str, direction: StopDirection) -> OrderSpec:
    return spec(side, OrderKind.STOP_LIMIT, limit_price=D(limit), stop_price=D(stop_price), stop_direction=direction)


def test_stop_limit_triggers_then_acts_as_a_limit() -> None:
    # sell stop 95 / limit 94 on a falling bar: triggered at 95 (marketable vs 94) -> filled at 95 as a taker
    wo = WorkingOrder(stop(Side.SELL, "95", "94", StopDirection.STOP_DOWN))
    assert run(model(), wo, "100", "101", "93", "94") == fill("95", "1", Liquidity.TAKER, FEES.taker)
    # a gap below the limit at the open: triggered at 92, where a sell limit at 94 is not marketable;
    # it rests and fills when the high reaches 94
    wo = WorkingOrder(stop(Side.SELL, "95", "94", StopDirection.STOP_DOWN))
    assert run(model(), wo, "92", "94.5", "91", "93") == fill("94", "1", Liquidity.MAKER, FEES.maker)
    wo = WorkingOrder(stop(Side.SELL, "95", "94", StopDirection.STOP_DOWN))
    assert run(model(), wo, "92", "93", "91", "92") is None
    assert wo.triggered
    assert run(model(), wo, "93", "94", "92", "93") == fill("94", "1", Liquidity.MAKER, FEES.maker)  # later bar
    # buy stop 105 / limit 106: not reached
    wo = WorkingOrder(stop(Side.BUY, "105", "106", StopDirection.STOP_UP))
    assert run(model(), wo, "100", "104", "99", "103") is None and not wo.triggered
    assert run(model(), wo, "104", "107", "103", "106") == fill("105", "1", Liquidity.TAKER, FEES.taker)


def test_check_uses_the_simulators_product_rules_and_caches_market_verdicts() -> None:
    m = model()
    with pytest.raises(OrderRejected) as info:
        m.check(spec(size="0.00015"), T, D(100))
    assert info.value.reason == "INVALID_SIZE_PRECISION"
    with pytest.raises(OrderRejected) as info:
        m.check(
            OrderSpec("c2", "BTC-USD", Side.BUY, OrderKind.MARKET, base_size=D("0.00015"), time_in_force=TimeInForce.IOC), T, None
        )
    assert info.value.reason == "INVALID_SIZE_PRECISION" and info.value.client_order_id == "c2"  # cached, new id
    assert str(info.value).count("order rejected") == 1 and str(info.value).endswith("client_order_id=c2")
    m.check(spec(size="0.5"), T, D(100))
    m.check(spec(size="0.5"), T, D(100))
    with pytest.raises(OrderRejected) as info:
        m.check(spec(size="0.0001"), T, D(100))
    assert info.value.reason == "ORDER_SIZE_TOO_SMALL"
    with pytest.raises(OrderRejected) as info:
        m.check(stop(Side.SELL, "101", "100", StopDirection.STOP_DOWN), T, D(100))
    assert info.value.reason == "INVALID_STOP_PRICE"


def test_fee_tier_parsing_and_bad_config() -> None:
    assert FeeTier.parse("0.001, 0.002") == FEES
    for bad in ("0.1", "a,b", "0.1,1.5"):
        with pytest.raises(InvalidValue, match="fee_tier"):
            FeeTier.parse(bad)
    with pytest.raises(InvalidValue, match="slippage_bps"):
        BarFillModel(PRODUCT, FEES, slippage_bps=D("-1"))


def test_synthetic_book_levels_and_walks() -> None:
    from cryptoj.backtest.fills import SyntheticBook

    book = SyntheticBook(levels=3, spread_bps=D(20), step_bps=D(10), depth=D("0.3"))
    # a buy meets asks 10, 20, 30 bps above 100 (rounded up), each 0.3 * 10 / 3 = 1 base
    assert book.side_levels(PRODUCT, Side.BUY, D(100), D(10)) == [(D("100.10"), D(1)), (D("100.20"), D(1)), (D("100.30"), D(1))]
    assert book.side_levels(PRODUCT, Side.SELL, D(100), D(10)) == [(D("99.90"), D(1)), (D("99.80"), D(1)), (D("99.70"), D(1))]
    # levels that round onto one price are pushed one increment apart; an empty bar still leaves one increment per level
    tight = SyntheticBook(levels=3, spread_bps=D(0), step_bps=D(0), depth=D(1))
    assert tight.side_levels(PRODUCT, Side.BUY, D(100), D(0)) == [
        (D("100.00"), D("0.0001")),
        (D("100.01"), D("0.0001")),
        (D("100.02"), D("0.0001")),
    ]
    assert tight.side_levels(PRODUCT, Side.SELL, D("0.01"), D(3)) == [(D("0.01"), D(1))]  # no level at or below zero
    m = BarFillModel(PRODUCT, FEES, book=book)
    out = m.evaluate(WorkingOrder(spec(size="2.5")), T, D(100), D(101), D(99), D(100), depth=D(10))
    assert out is not None and out.done is None
    fills = [out.fill, *out.more]
    assert [(f.price, f.size) for f in fills if f] == [(D("100.10"), D(1)), (D("100.20"), D(1)), (D("100.30"), D("0.5"))]
    assert all(f is not None and f.fee == f.price * f.size * FEES.taker for f in fills)
    # bigger than the book: what is there fills, the rest is cancelled
    big = m.evaluate(WorkingOrder(spec(Side.SELL, size="5")), T, D(100), D(101), D(99), D(100), depth=D(10))
    assert big is not None and big.done is Done.CANCELLED and sum(f.size for f in (big.fill, *big.more) if f) == D(3)
    empty = BarFillModel(PRODUCT, FEES, book=SyntheticBook(levels=1, spread_bps=D(10_000)))
    none = empty.evaluate(WorkingOrder(spec(Side.SELL)), T, D("0.01"), D("0.01"), D("0.01"), D("0.01"), depth=D(1))
    assert none is not None and none.fill is None and none.done is Done.CANCELLED


def test_synthetic_book_config_errors() -> None:
    from cryptoj.backtest.fills import SyntheticBook

    assert SyntheticBook.parse("levels=5, depth=0.2") == SyntheticBook(levels=5, depth=D("0.2"))
    for bad, where in (("levels=0", "levels"), ("depth=0", "depth"), ("spread_bps=-1", "spread_bps"), ("x=1", "synthetic_book"),
                       ("levels=a", "levels")):  # fmt: skip
        with pytest.raises(InvalidValue, match=where):
            SyntheticBook.parse(bad)
    with pytest.raises(InvalidValue, match="not both"):
        BarFillModel(PRODUCT, FEES, slippage_bps=D(1), book=SyntheticBook())


def test_fees_are_the_simulators_fee_for_digit_for_digit() -> None:
    from cryptoj.backtest.fills import _fee
    from cryptoj.venues.simulated.matching import fee_for

    cases = [
        (D("50000.01"), D("0.001"), D("0.006")),
        (D("123456789012345.678901"), D("98765.43210987654321"), D("0.0035")),
        (D("0.00000001"), D("0.00000001"), D("0.004")),
        (D("1E+5"), D("3"), D("0")),
    ]
    for price, size, rate in cases:
        got, want = _fee(price, size, rate), fee_for(price, size, rate)
        assert got == want and str(got) == str(want)
