"""sma_cross through the deterministic harness."""

from __future__ import annotations

from decimal import Decimal

import pytest

from cryptoj.errors import ConfigError
from cryptoj.model.money import Side
from cryptoj.model.orders import OrderKind
from cryptoj.strategies.sma_cross import SmaCross
from cryptoj.strategy import load_strategy
from tests.unit.strategy_harness import Harness, make_product

pytestmark = pytest.mark.unit

D = Decimal
PID = "BTC-USD"


def run(closes: list[int], *, balances: dict[str, Decimal] | None = None, **params: object) -> Harness:
    h = Harness([make_product(PID), make_product("ETH-USD")], balances or {"USD": D(100_000)})
    h.start(SmaCross({"fast": 2, "slow": 4, "order_size": "0.5", **params}, products=[PID]))
    for c in closes:
        h.bar(PID, c)
        h.advance()
    return h


def test_defaults_are_20_50() -> None:
    s = SmaCross()
    assert (s.p.fast, s.p.slow, s.p.order_size) == (20, 50, D("0.001"))
    assert load_strategy("sma_cross") is SmaCross and SmaCross.name == "sma_cross"


def test_fast_must_be_below_slow_and_size_positive() -> None:
    with pytest.raises(ConfigError) as exc:
        SmaCross({"fast": 50, "slow": 20, "order_size": 0})
    got = dict(exc.value.problems)
    assert got["strategy.params.fast"] == "must be below slow (20), got 50"
    assert got["strategy.params.order_size"] == "must be positive, got 0"


def test_no_trade_during_warmup_or_on_the_first_state_seen() -> None:
    # rising from the start: fast > slow at the first ready bar, but that is a state, not a cross
    h = run([10, 11, 12, 13, 14, 15, 16])
    assert h.specs == []


def test_cross_up_buys_and_cross_down_sells_the_position() -> None:
    closes = [20, 19, 18, 17, 16, 15, 20, 25, 30, 30, 20, 10]
    h = run(closes)
    buys = [s for s in h.specs if s.side is Side.BUY]
    sells = [s for s in h.specs if s.side is Side.SELL]
    assert len(buys) == 1 and len(sells) == 1
    assert buys[0].kind is OrderKind.MARKET and buys[0].base_size == D("0.5")
    assert sells[0].base_size == D("0.5")
    assert h.quantity(PID) == 0
    # it bought at the bar where fast went above slow: closes 16,15 | 20 -> SMA2 17.5 > SMA4 17.0
    assert h.orders[buys[0].client_order_id].fills
    first_fill = next(iter(h.orders[buys[0].client_order_id].fills.values()))
    assert first_fill.price == D(20)
    assert [e for e in h.log.events() if e.startswith("sma_cross")] == ["sma_cross.buy", "sma_cross.sell"]


def test_touching_is_not_crossing() -> None:
    # fast returns to equal slow and then goes back up: no second buy
    h = run([20, 19, 18, 17, 16, 15, 20, 25, 30, 30, 30, 30, 31, 32])
    assert [s.side for s in h.specs] == [Side.BUY]


def test_no_buy_when_already_holding_and_no_sell_when_flat() -> None:
    h = Harness([make_product(PID)], {"USD": D(100_000), "BTC": D(0)})
    s = h.start(SmaCross({"fast": 2, "slow": 4, "order_size": "0.5"}, products=[PID]))
    h.prices[PID] = D(15)
    s.buy(PID, D(1))  # already long before the cross
    h.process()
    for c in [20, 19, 18, 17, 16, 15, 20, 25]:
        h.bar(PID, c)
        h.advance()
    assert len(h.specs) == 1
    flat = run([10, 11, 12, 13, 14, 15, 10, 5])  # cross down while flat
    assert flat.specs == []


def test_one_order_at_a_time_per_product() -> None:
    h = Harness([make_product(PID)], {"USD": D(100_000)})
    s = h.start(SmaCross({"fast": 2, "slow": 4, "order_size": "0.5"}, products=[PID]))
    h.reject_next.add("coid-1")
    for c in [20, 19, 18, 17, 16, 15, 20]:
        h.bar(PID, c)
        h.advance()
    # the buy was rejected (e.g. by risk): pending cleared, no retry until the next cross
    assert len(h.specs) == 1
    # a resting order blocks the next signal: simulate by a pending id that never resolves
    s._state[PID].pending = "never"  # type: ignore[attr-defined]
    for c in [10, 5, 30, 40]:
        h.bar(PID, c)
        h.advance()
    assert len(h.specs) == 1


def test_dust_position_is_not_sold_and_counts_as_flat() -> None:
    h = Harness([make_product(PID, base_min="0.01")], {"USD": D(100_000), "BTC": D(0)})
    s = h.start(SmaCross({"fast": 2, "slow": 4, "order_size": "0.5"}, products=[PID]))
    h.prices[PID] = D(10)
    s.buy(PID, D("0.005"))  # below the minimum size: dust
    h.process()
    for c in [10, 11, 12, 13, 14, 15, 10, 5]:  # cross down: dust is not sold
        h.bar(PID, c)
        h.advance()
    assert len(h.specs) == 1
    for c in [20, 30]:  # cross up: dust counts as flat, so it buys
        h.bar(PID, c)
        h.advance()
    assert h.specs[-1].side is Side.BUY and h.specs[-1].base_size == D("0.5")


def test_bars_of_other_products_are_ignored_and_products_are_independent() -> None:
    h = Harness([make_product(PID), make_product("ETH-USD")], {"USD": D(100_000)})
    h.start(SmaCross({"fast": 2, "slow": 4, "order_size": "0.5"}, products=[PID, "ETH-USD"]))
    for c in [20, 19, 18, 17, 16, 15, 20]:
        h.bar(PID, c)
        h.bar("ETH-USD", 100 - c)
        h.bar("SOL-USD", c)  # not ours
        h.advance()
    assert [(s.product_id, s.side) for s in h.specs] == [(PID, Side.BUY)]
