"""Unit and property tests for balances, positions and portfolio valuation."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cryptoj.errors import InvalidValue
from cryptoj.model.instruments import Product
from cryptoj.model.money import Side
from cryptoj.model.orders import Fill
from cryptoj.model.positions import Balance, Portfolio, PortfolioSnapshot, Position

pytestmark = pytest.mark.unit

D = Decimal
T = datetime(2024, 4, 4, 12, 0, tzinfo=UTC)

BTC_USD = Product(
    product_id="BTC-USD",
    base_currency="BTC",
    quote_currency="USD",
    base_increment=D("0.00000001"),
    quote_increment=D("0.01"),
    price_increment=D("0.01"),
    base_min_size=D("0.00000001"),
    base_max_size=D("3400"),
    quote_min_size=D("1"),
    quote_max_size=D("150000000"),
)
ETH_BTC = Product(
    product_id="ETH-BTC",
    base_currency="ETH",
    quote_currency="BTC",
    base_increment=D("0.00000001"),
    quote_increment=D("0.00001"),
    price_increment=D("0.00001"),
    base_min_size=D("0.00000001"),
    base_max_size=D("10000"),
    quote_min_size=D("0.0001"),
    quote_max_size=D("1000"),
)


def fill(trade_id: str, side: Side, price: str, size: str, fee: str = "0", product_id: str = "BTC-USD") -> Fill:
    return Fill(trade_id, "cid-1", product_id, side, D(price), D(size), D(fee), T)


# -- balances -------------------------------------------------------------------------


def test_balance_total_and_validation() -> None:
    assert Balance("USD", D("10"), D("2.5")).total == D("12.5")
    with pytest.raises(InvalidValue, match=r"balance USD\.available"):
        Balance("USD", D("-1"))
    with pytest.raises(InvalidValue, match=r"balance USD\.hold"):
        Balance("USD", D("1"), D("NaN"))
    with pytest.raises(InvalidValue, match="finite Decimal"):
        Balance("USD", 1.0)  # type: ignore[arg-type]


def test_unknown_currency_is_zero_and_set_balance_overwrites() -> None:
    p = Portfolio()
    assert p.balance("EUR") == Balance("EUR")
    p.set_balance("EUR", D("5"), D("1"))
    assert p.balance("EUR") == Balance("EUR", D("5"), D("1"))
    p.set_balance("EUR", D("7"))
    assert p.balance("EUR").total == D("7")
    with pytest.raises(InvalidValue, match="currency"):
        p.set_balance("", D("1"))


def test_deposit_withdraw() -> None:
    p = Portfolio({"USD": D("100")})
    assert p.deposit("USD", D("50")).available == D("150")
    assert p.withdraw("USD", D("20")).available == D("130")
    with pytest.raises(InvalidValue, match="withdraw of 131 would make it negative"):
        p.withdraw("USD", D("131"))
    with pytest.raises(InvalidValue, match="must not be negative"):
        p.deposit("USD", D("-1"))
    assert p.balance("USD").available == D("130")


def test_hold_and_release_move_between_available_and_hold() -> None:
    p = Portfolio({"USD": D("100")})
    b = p.hold("USD", D("30"))
    assert (b.available, b.hold, b.total) == (D("70"), D("30"), D("100"))
    b = p.release("USD", D("10"))
    assert (b.available, b.hold) == (D("80"), D("20"))
    with pytest.raises(InvalidValue, match="hold of 81 would make it negative"):
        p.hold("USD", D("81"))
    with pytest.raises(InvalidValue, match="release of 21 is more than is held"):
        p.release("USD", D("21"))
    assert p.balance("USD") == Balance("USD", D("80"), D("20"))


# -- fills -------------------------------------------------------------------------------


def test_buy_moves_balances_and_sets_average_entry() -> None:
    p = Portfolio({"USD": D("10000")})
    assert p.apply_fill(fill("t1", Side.BUY, "100", "2", "1.2"), BTC_USD)
    assert p.balance("USD").available == D("10000") - D("200") - D("1.2")
    assert p.balance("BTC").available == D("2")
    pos = p.position(BTC_USD)
    assert pos is not None
    assert (pos.quantity, pos.avg_entry_price, pos.fees_paid, pos.realised_pnl) == (D("2"), D("100"), D("1.2"), D("-1.2"))
    p.apply_fill(fill("t2", Side.BUY, "130", "1", "0.8"), BTC_USD)
    pos = p.position("BTC-USD")
    assert pos is not None
    assert pos.quantity == D("3")
    assert pos.avg_entry_price == D("110")  # (200 + 130) / 3
    assert pos.cost_basis == D("330")
    assert pos.bought == D("3") and pos.fill_count == 2


def test_sell_realises_pnl_at_average_cost_minus_fee() -> None:
    p = Portfolio({"USD": D("1000")})
    p.apply_fill(fill("b1", Side.BUY, "100", "4", "2"), BTC_USD)
    p.apply_fill(fill("s1", Side.SELL, "120", "1", "0.5"), BTC_USD)
    pos = p.position(BTC_USD)
    assert pos is not None
    assert pos.quantity == D("3")
    assert pos.avg_entry_price == D("100")  # unchanged by a sell
    assert pos.realised_pnl == D("-2") + (D("120") - D("100")) * 1 - D("0.5")
    assert pos.fees_paid == D("2.5")
    assert p.balance("USD").available == D("1000") - D("402") + D("120") - D("0.5")
    assert p.balance("BTC").available == D("3")
    assert pos.unrealised_pnl(D("90")) == D("-30")
    # sell the rest: flat, average entry reset
    p.apply_fill(fill("s2", Side.SELL, "90", "3"), BTC_USD)
    pos = p.position(BTC_USD)
    assert pos is not None and pos.is_flat
    assert pos.avg_entry_price == 0
    assert pos.unrealised_pnl(D("500")) == 0
    assert pos.sold == D("4")
    assert p.realised_pnl == D("-2") + D("20") - D("0.5") - D("30")
    assert p.fees_paid == D("2.5")


def test_full_close_after_inexact_average_realises_exactly() -> None:
    p = Portfolio({"USD": D("1000")})
    p.apply_fill(fill("b1", Side.BUY, "1", "1"), BTC_USD)
    p.apply_fill(fill("b2", Side.BUY, "2", "2"), BTC_USD)  # avg 5/3, not a finite decimal
    pos = p.position(BTC_USD)
    assert pos is not None and pos.cost_basis == D("5")
    assert pos.avg_entry_price == D(5) / D(3)
    p.apply_fill(fill("s1", Side.SELL, "3", "1"), BTC_USD)
    p.apply_fill(fill("s2", Side.SELL, "3", "2"), BTC_USD)
    pos = p.position(BTC_USD)
    assert pos is not None and pos.is_flat and pos.cost_basis == 0
    assert pos.realised_pnl == D("4")  # 9 proceeds - 5 cost, exactly
    assert p.balance("USD").available == D("1004")


def test_fill_applied_twice_counts_once() -> None:
    p = Portfolio({"USD": D("1000")})
    f = fill("dup", Side.BUY, "100", "1", "1")
    assert p.apply_fill(f, BTC_USD) is True
    assert p.seen("dup")
    before = p.snapshot()
    assert p.apply_fill(f, BTC_USD) is False
    assert p.snapshot() == before
    assert before.trade_count == 1


def test_fill_that_would_go_negative_raises_and_changes_nothing() -> None:
    p = Portfolio({"USD": D("100")})
    before = p.snapshot()
    with pytest.raises(InvalidValue, match="spot balances cannot go negative"):
        p.apply_fill(fill("t1", Side.BUY, "100", "1", "0.01"), BTC_USD)  # needs 100.01
    with pytest.raises(InvalidValue, match="needs 1 BTC"):
        p.apply_fill(fill("t2", Side.SELL, "100", "1"), BTC_USD)
    assert p.snapshot() == before
    assert not p.seen("t1") and not p.seen("t2")
    assert p.position(BTC_USD) is None


def test_sell_fee_larger_than_proceeds_uses_available_quote_or_raises() -> None:
    p = Portfolio({"BTC": D("1"), "USD": D("5")})
    p.apply_fill(fill("s1", Side.SELL, "1", "0.5", "2"), BTC_USD)  # proceeds 0.5, fee 2
    assert p.balance("USD").available == D("3.5")
    with pytest.raises(InvalidValue, match=r"fill s2\.fee"):
        p.apply_fill(fill("s2", Side.SELL, "1", "0.5", "10"), BTC_USD)
    assert p.balance("BTC").available == D("0.5")


def test_fill_from_hold_takes_hold_first_then_available() -> None:
    p = Portfolio({"USD": D("1000")})
    p.hold("USD", D("200"))  # e.g. a limit buy of 2 @ 100, fee not held
    p.apply_fill(fill("t1", Side.BUY, "100", "1"), BTC_USD, from_hold=True)
    assert p.balance("USD") == Balance("USD", D("800"), D("100"))
    p.apply_fill(fill("t2", Side.BUY, "100", "1", "1.5"), BTC_USD, from_hold=True)
    assert p.balance("USD") == Balance("USD", D("798.5"), D("0"))
    p.hold("BTC", D("2"))
    p.apply_fill(fill("t3", Side.SELL, "110", "2"), BTC_USD, from_hold=True)
    assert p.balance("BTC") == Balance("BTC", D("0"), D("0"))
    with pytest.raises(InvalidValue, match="hold \\+ available"):
        p.apply_fill(fill("t4", Side.SELL, "110", "2"), BTC_USD, from_hold=True)


def test_fill_without_from_hold_cannot_spend_held_funds() -> None:
    p = Portfolio({"USD": D("100")})
    p.hold("USD", D("100"))
    with pytest.raises(InvalidValue, match="is available"):
        p.apply_fill(fill("t1", Side.BUY, "10", "1"), BTC_USD)


def test_fill_for_other_product_is_refused() -> None:
    p = Portfolio({"USD": D("100")})
    with pytest.raises(InvalidValue, match="applied with product BTC-USD"):
        p.apply_fill(fill("t1", Side.BUY, "10", "1", product_id="ETH-USD"), BTC_USD)


def test_selling_more_than_tracked_position_realises_only_tracked_part() -> None:
    p = Portfolio({"USD": D("1000"), "BTC": D("5")})  # 5 BTC deposited, cost unknown
    p.apply_fill(fill("b", Side.BUY, "100", "1"), BTC_USD)
    p.apply_fill(fill("s", Side.SELL, "150", "3"), BTC_USD)
    pos = p.position(BTC_USD)
    assert pos is not None
    assert pos.quantity == 0
    assert pos.realised_pnl == D("50")  # only the one tracked coin
    assert p.balance("BTC").available == D("3")
    assert p.balance("USD").available == D("1000") - D("100") + D("450")


def test_apply_fills_bulk_with_products_mapping() -> None:
    p = Portfolio({"USD": D("1000"), "BTC": D("1")})
    products = {"BTC-USD": BTC_USD, "ETH-BTC": ETH_BTC}
    fills = [
        fill("a", Side.BUY, "100", "1"),
        fill("b", Side.BUY, "0.05", "2", "0.0001", product_id="ETH-BTC"),
        fill("a", Side.BUY, "100", "1"),
    ]
    assert p.apply_fills(fills, products) == 2
    assert p.balance("ETH").available == D("2")
    assert p.balance("BTC").available == D("1") + D("1") - D("0.1") - D("0.0001")
    assert set(p.positions()) == {"BTC-USD", "ETH-BTC"}
    with pytest.raises(InvalidValue, match="no such product"):
        p.apply_fills([fill("z", Side.BUY, "1", "1", product_id="SOL-USD")], products)


# -- valuation ----------------------------------------------------------------------------


def test_unrealised_and_equity() -> None:
    p = Portfolio({"USD": D("1000")})
    p.apply_fill(fill("b", Side.BUY, "100", "2", "1"), BTC_USD)
    assert p.unrealised_pnl({"BTC-USD": D("110")}) == D("20")
    assert p.equity({"BTC-USD": D("110")}, "USD") == D("799") + D("220")
    with pytest.raises(InvalidValue, match="no price for an open position"):
        p.unrealised_pnl({})
    with pytest.raises(InvalidValue, match="need BTC-USD"):
        p.equity({}, "USD")
    # flat positions need no price
    p.apply_fill(fill("s", Side.SELL, "100", "2"), BTC_USD)
    assert p.unrealised_pnl({}) == 0
    assert p.equity({}, "USD") == D("999")


def test_equity_values_every_currency_including_holds_and_inverse_pairs() -> None:
    p = Portfolio({"USD": D("100"), "BTC": D("2"), "EUR": D("50")})
    p.hold("BTC", D("1"))
    prices = {"BTC-USD": D("30000"), "USD-EUR": D("0.5")}  # 1 USD = 0.5 EUR -> 50 EUR = 100 USD
    assert p.equity(prices, "USD") == D("100") + D("60000") + D("100")
    assert p.value_of("USD", D("7"), prices, "USD") == D("7")
    assert p.value_of("XRP", D("0"), prices, "USD") == 0
    with pytest.raises(InvalidValue, match="no price to value EUR in USD"):
        p.equity({"BTC-USD": D("1"), "USD-EUR": D("0")}, "USD")


def test_snapshot_is_a_copy() -> None:
    p = Portfolio({"USD": D("1000")})
    p.apply_fill(fill("b", Side.BUY, "100", "1"), BTC_USD)
    snap = p.snapshot()
    assert isinstance(snap, PortfolioSnapshot)
    p.apply_fill(fill("b2", Side.BUY, "100", "1"), BTC_USD)
    assert snap.total("BTC") == D("1")
    assert snap.total("DOGE") == 0
    assert snap.positions["BTC-USD"].quantity == D("1")
    assert p.balances()["BTC"].total == D("2")
    assert "BTC=2" in repr(p) and "trades=2" in repr(p)


def test_position_defaults() -> None:
    pos = Position("BTC-USD", "BTC", "USD")
    assert pos.is_flat and pos.cost_basis == 0 and pos.unrealised_pnl(D("1")) == 0


# -- properties ----------------------------------------------------------------------------

fill_st = st.tuples(
    st.sampled_from([Side.BUY, Side.SELL]),
    st.integers(min_value=1, max_value=100_000).map(lambda i: Decimal(i) / 100),  # price
    st.integers(min_value=1, max_value=500).map(lambda i: Decimal(i) / 100),  # size
    st.integers(min_value=0, max_value=60).map(lambda bps: Decimal(bps) / 10_000),  # fee rate
)


@settings(max_examples=200, deadline=None)
@given(st.lists(fill_st, max_size=60))
def test_property_value_conservation_and_pnl_identity(steps: list[tuple[Side, Decimal, Decimal, Decimal]]) -> None:
    start_usd = D("1000000")
    p = Portfolio({"USD": start_usd})
    applied = 0
    for i, (side, price, size, rate) in enumerate(steps):
        fee = (price * size * rate).quantize(D("0.01"))
        prices = {"BTC-USD": price}
        equity_before = p.equity(prices, "USD")
        fees_before = p.fees_paid
        f = Fill(f"t{i}", "c", "BTC-USD", side, price, size, fee, T)
        try:
            p.apply_fill(f, BTC_USD)
        except InvalidValue:
            # a sell of more BTC than held: refused and nothing changed
            assert side is Side.SELL and p.balance("BTC").available < size
            assert p.equity(prices, "USD") == equity_before
            continue
        applied += 1
        # value conservation at the trade price: equity + fees paid is unchanged
        assert p.equity(prices, "USD") + p.fees_paid == equity_before + fees_before
        # PnL identity: all holdings came from fills, so equity change == realised + unrealised
        # (exact up to Decimal's 28-digit rounding of the average cost removed by partial sells)
        identity_error = p.equity(prices, "USD") - start_usd - (p.realised_pnl + p.unrealised_pnl(prices))
        assert abs(identity_error) <= D("1e-15")
        # spot: nothing ever negative, position mirrors the BTC balance
        for balance in p.balances().values():
            assert balance.available >= 0 and balance.hold >= 0
        pos = p.position(BTC_USD)
        assert pos is not None and pos.quantity == p.balance("BTC").total
        # applying the same fill again changes nothing
        snap = p.snapshot()
        assert p.apply_fill(f, BTC_USD) is False
        assert p.snapshot() == snap
    assert p.snapshot().trade_count == applied


@settings(max_examples=150, deadline=None)
@given(st.lists(fill_st, max_size=40))
def test_property_fills_from_hold_conserve_value_and_never_go_negative(
    steps: list[tuple[Side, Decimal, Decimal, Decimal]],
) -> None:
    p = Portfolio({"USD": D("500000"), "BTC": D("3")})
    for i, (side, price, size, rate) in enumerate(steps):
        fee = (price * size * rate).quantize(D("0.01"))
        prices = {"BTC-USD": price}
        spend_currency, spend = ("USD", price * size + fee) if side is Side.BUY else ("BTC", size)
        # reserve what an order would hold (without the fee), as an order manager does
        p.hold(spend_currency, min(price * size if side is Side.BUY else size, p.balance(spend_currency).available))
        before = p.equity(prices, "USD") + p.fees_paid
        total_before = p.balance(spend_currency).total
        try:
            p.apply_fill(Fill(f"h{i}", "c", "BTC-USD", side, price, size, fee, T), BTC_USD, from_hold=True)
        except InvalidValue:
            assert total_before < spend
            assert p.equity(prices, "USD") + p.fees_paid == before
        else:
            assert p.equity(prices, "USD") + p.fees_paid == before
        for balance in p.balances().values():
            assert balance.available >= 0 and balance.hold >= 0
        for currency, balance in p.balances().items():
            p.release(currency, balance.hold)  # the order is done: release what is left


def _fill_for_release(trade_id: str, side: Side, price: str, size: str, fee: str = "0") -> Fill:
    return Fill(trade_id, "c1", "BTC-USD", side, D(price), D(size), D(fee), datetime(2026, 1, 1, tzinfo=UTC))


@pytest.mark.parametrize(
    ("side", "price", "size", "fee"),
    [(Side.BUY, "100", "1", "0.6"), (Side.SELL, "100", "0.5", "0.3"), (Side.BUY, "9000", "1", "0")],  # the last: unfunded
)
def test_apply_fill_with_release_equals_release_then_apply_fill(side: Side, price: str, size: str, fee: str) -> None:
    def start() -> Portfolio:
        pf = Portfolio({"USD": D("1000"), "BTC": D("2")})
        pf.hold("USD", D("200"))
        pf.hold("BTC", D("0.5"))
        return pf

    held = ("USD", D("200")) if side is Side.BUY else ("BTC", D("0.5"))
    one, two = start(), start()
    outcomes = []
    for pf, combined in ((one, False), (two, True)):
        fill = _fill_for_release("t1", side, price, size, fee)
        try:
            if combined:
                outcomes.append(pf.apply_fill(fill, BTC_USD, release=held[1]))
            else:
                pf.release(*held)
                outcomes.append(pf.apply_fill(fill, BTC_USD))
        except InvalidValue as exc:
            outcomes.append(str(exc))
    assert outcomes[0] == outcomes[1]
    assert one.balances() == two.balances() and one.positions() == two.positions()
    if price == "9000":  # the fill raised; the release stood
        assert isinstance(outcomes[1], str) and "spot balances cannot go negative" in outcomes[1]
        assert two.balance("USD") == Balance("USD", D("1000"), D("0"))


def test_apply_fill_release_more_than_held_raises_and_changes_nothing() -> None:
    pf = Portfolio({"USD": D("1000")})
    pf.hold("USD", D("10"))
    with pytest.raises(InvalidValue, match=r"balance USD\.hold"):
        pf.apply_fill(_fill_for_release("t1", Side.BUY, "1", "1"), BTC_USD, release=D("11"))
    assert pf.balance("USD") == Balance("USD", D("990"), D("10"))
    assert not pf.seen("t1")
