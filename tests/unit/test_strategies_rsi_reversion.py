"""rsi_reversion through the deterministic harness."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from cryptoj.errors import ConfigError
from cryptoj.indicators import RSI
from cryptoj.model.money import Side
from cryptoj.strategies import builtin
from cryptoj.strategies.rsi_reversion import RsiReversion
from cryptoj.strategy import load_strategy
from tests.unit.strategy_harness import Harness, make_product

pytestmark = pytest.mark.unit

D = Decimal
PID = "BTC-USD"
FALL = ["100", "99", "98", "97"]  # period 3: RSI 0 at the 4th close -> buy at 97


def start(**params: Any) -> Harness:
    h = Harness([make_product(PID, base_min="0.01")], {"USD": D(100_000)}, fee_rate=D(0))
    base = {"period": 3, "order_size": "1"}
    h.start(RsiReversion({**base, **params}, products=[PID]))
    return h


def bars(h: Harness, closes: list[str]) -> None:
    for c in closes:
        h.bar(PID, D(c))
        h.advance()


def sells(h: Harness) -> list[tuple[Decimal | None, str]]:
    reasons = [kw["reason"] for _, e, kw in h.log.records if e == "rsi_reversion.sell"]
    sizes = [s.base_size for s in h.specs if s.side is Side.SELL]
    return list(zip(sizes, reasons, strict=True))


def test_defaults_are_the_seed_rules() -> None:
    s = RsiReversion()
    assert (s.p.period, s.p.buy_below, s.p.sell_above, s.p.stop_loss) == (14, D(35), D(70), D("0.02"))
    assert s.p.take_profit_levels == (D("0.01"), D("0.02"), D("0.03"))
    assert sum(s.p.take_profit_fractions) == 1
    assert load_strategy("rsi_reversion") is RsiReversion is builtin("rsi_reversion")


def test_parameter_problems_are_named() -> None:
    with pytest.raises(ConfigError) as exc:
        RsiReversion({"buy_below": 80, "order_size": 0, "stop_loss": 1, "take_profit_levels": ["0.02", "0.01"],
                      "take_profit_fractions": ["0.9", "0.9"]})
    got = dict(exc.value.problems)
    assert got["strategy.params.buy_below"] == "must be below sell_above (70), got 80"
    assert "must be positive" in got["strategy.params.order_size"]
    assert "between 0 and 1 (exclusive)" in got["strategy.params.stop_loss"]
    assert "positive and ascending, got 0.02, 0.01" in got["strategy.params.take_profit_levels"]
    assert "sum <= 1" in got["strategy.params.take_profit_fractions"]
    with pytest.raises(ConfigError, match="one fraction per level"):
        RsiReversion({"take_profit_levels": ["0.01"], "take_profit_fractions": ["0.5", "0.5"]})
    with pytest.raises(ConfigError, match=r"strategy\.params\.sell_above: too large"):
        RsiReversion({"sell_above": 101})
    with pytest.raises(ConfigError, match="unknown built-in strategy 'x'"):
        builtin("x")


def test_buys_when_oversold_once() -> None:
    h = start()
    bars(h, [*FALL, "96", "95.5"])
    assert [(s.side, s.base_size) for s in h.specs] == [(Side.BUY, D(1))]
    assert h.quantity(PID) == D(1)
    assert h.orders["coid-1"].average_price == D(97)


def test_no_buy_while_rsi_is_not_low() -> None:
    h = start()
    bars(h, ["100", "101", "100", "101", "100", "101"])
    assert h.specs == []


def test_stop_loss_sells_everything() -> None:
    h = start(take_profit_levels=[], take_profit_fractions=[])
    bars(h, FALL)
    bars(h, ["95.1"])  # -1.96 %: above the stop
    assert sells(h) == []
    bars(h, ["95.06"])  # 97 * 0.98 = 95.06: at the stop
    assert sells(h) == [(D(1), "stop_loss")]
    assert h.quantity(PID) == 0


def test_overbought_exit() -> None:
    h = start(take_profit_levels=[], take_profit_fractions=[])
    bars(h, FALL)
    ref = RSI(3)
    for c in ["100", "99", "98", "97"]:
        ref.update(D(c))
    price = D(97)
    for _ in range(30):
        price += D("0.1")
        value = ref.update(price)
        assert value is not None
        h.bar(PID, price)
        h.advance()
        if value > 70:
            assert sells(h) == [(D(1), "overbought")]
            break
        assert sells(h) == []
    else:
        pytest.fail("RSI never went above 70")


def test_take_profit_ladder_steps_and_last_step_sells_the_rest() -> None:
    h = start(sell_above=100)
    bars(h, FALL)  # entry 97
    bars(h, ["97.9"])  # +0.93 %: nothing
    bars(h, ["97.98"])  # +1.01 %: level 1 -> 0.33
    assert sells(h) == [(D("0.33"), "take_profit_1")]
    bars(h, ["98.5"])  # still under level 2
    bars(h, ["98.95"])  # +2.01 %: level 2 -> 0.33
    bars(h, ["99.92"])  # +3.01 %: level 3 -> the remaining 0.34
    assert sells(h) == [(D("0.33"), "take_profit_1"), (D("0.33"), "take_profit_2"), (D("0.34"), "take_profit_3")]
    assert h.quantity(PID) == 0
    bars(h, ["100", "101"])  # flat again: ladder reset, no more sells
    assert len(sells(h)) == 3


def test_levels_passed_in_one_bar_sell_together_and_a_runner_is_kept() -> None:
    h = start(sell_above=100, take_profit_levels=["0.01", "0.02", "0.05"], take_profit_fractions=["0.25", "0.25", "0.25"])
    bars(h, FALL)
    bars(h, ["99"])  # +2.06 %: levels 1 and 2 at once
    assert sells(h) == [(D("0.50"), "take_profit_2")]
    bars(h, ["99.5"])
    assert h.quantity(PID) == D("0.5")
    bars(h, ["95"])  # below 97 * 0.98: the runner is stopped out
    assert sells(h)[-1] == (D("0.5"), "stop_loss")


def test_a_step_that_would_leave_dust_sells_everything() -> None:
    h = start(sell_above=100, order_size="0.015", take_profit_levels=["0.01"], take_profit_fractions=["0.5"])
    bars(h, FALL)
    bars(h, ["98"])  # half of 0.015 = 0.0075 would leave 0.0075 < min 0.01 -> all
    assert sells(h) == [(D("0.015"), "take_profit_1")]


def test_a_step_below_the_minimum_size_is_not_sent() -> None:
    h = start(sell_above=100, take_profit_levels=["0.01", "0.5"], take_profit_fractions=["0.005", "0.5"])
    bars(h, FALL)
    bars(h, ["98"])  # 0.005 of 1 = 0.005 < min 0.01: skipped (the level counts as taken)
    assert sells(h) == []
    assert h.quantity(PID) == D(1)


def test_dust_position_counts_as_flat_and_is_not_sold() -> None:
    h = start(sell_above=100)
    h.prices[PID] = D(100)
    h.s.buy(PID, D("0.005"))  # below min size 0.01
    h.process()
    bars(h, FALL)
    assert [s.side for s in h.specs] == [Side.BUY, Side.BUY]  # dust is flat: the oversold signal buys


def test_pending_order_blocks_and_rejection_clears() -> None:
    h = start()
    h.reject_next.add("coid-1")
    bars(h, FALL)
    assert h.orders["coid-1"].reject_reason == "RISK_TEST"
    bars(h, ["96"])  # still oversold, nothing pending: buys again
    assert len(h.specs) == 2
    h2 = start()
    bars(h2, FALL[:3])
    h2.s._state[PID].pending = "live"  # type: ignore[attr-defined]
    bars(h2, ["97", "96"])
    assert h2.specs == []
    h2.bar("ETH-USD", D(1))  # not one of ours: ignored
    assert h2.specs == []
