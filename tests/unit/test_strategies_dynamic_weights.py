"""dynamic_weights through the deterministic harness, plus the weight allocation on its own."""

from __future__ import annotations

from decimal import Decimal
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cryptoj.errors import ConfigError
from cryptoj.model.money import Side
from cryptoj.model.orders import OrderStatus
from cryptoj.strategies.dynamic_weights import STABLECOINS, DynamicWeights, allocate_weights
from cryptoj.strategy import load_strategy
from tests.unit.strategy_harness import Harness, make_product

pytestmark = pytest.mark.unit

D = Decimal
BTC, ETH, SOL, USDT = "BTC-USD", "ETH-USD", "SOL-USD", "USDT-USD"
SMALL = {"momentum_window": 2, "volatility_window": 2, "volume_window": 2, "rebalance_interval": 300}


def harness(products: list[str], balances: dict[str, Decimal] | None = None, **params: Any) -> Harness:
    h = Harness([make_product(p, base_min="0.001") for p in products], balances or {"USD": D(10_000)}, fee_rate=D(0))
    h.start(DynamicWeights({**SMALL, **params}, products=products))
    return h


def step(
    h: Harness, closes: dict[str, Any], volumes: dict[str, Any] | None = None, spreads: dict[str, Any] | None = None
) -> None:
    """One bar for each product (in the given order), then the clock moves one bar."""
    for pid, close in closes.items():
        h.bar(pid, D(close), volume=(volumes or {}).get(pid, 1), spread=(spreads or {}).get(pid))
    h.advance()


def strat(h: Harness) -> DynamicWeights:
    assert isinstance(h.strategy, DynamicWeights)
    return h.strategy


def near(got: dict[str, Decimal], want: dict[str, Decimal]) -> bool:
    """Equal keys (in order) and values within 1e-25 (the last of 28 digits may round either way)."""
    return list(got) == list(want) and all(abs(got[k] - want[k]) < D("1e-25") for k in want)


def value(h: Harness, pid: str) -> Decimal:
    return h.portfolio.balance(pid.split("-")[0]).total * h.prices[pid]


# -- parameters and setup ---------------------------------------------------------------------------


def test_defaults_are_the_seed_weights() -> None:
    s = DynamicWeights()
    assert (s.p.momentum_weight, s.p.volume_weight, s.p.volatility_weight, s.p.spread_weight) == (
        D("0.4"), D("0.3"), D("0.2"), D("0.1")
    )
    assert s.p.excluded_currencies == STABLECOINS and "USDT" in STABLECOINS
    assert load_strategy("dynamic_weights") is DynamicWeights


def test_parameter_problems() -> None:
    with pytest.raises(ConfigError) as exc:
        DynamicWeights({"momentum_weight": 0, "volume_weight": 0, "volatility_weight": 0, "spread_weight": 0})
    assert "must not all be 0" in dict(exc.value.problems)["strategy.params.momentum_weight"]
    with pytest.raises(ConfigError) as exc:
        DynamicWeights({"min_weight": "0.6", "max_weight": "0.5"})
    assert "must not exceed max_weight (0.5), got 0.6" in dict(exc.value.problems)["strategy.params.min_weight"]
    with pytest.raises(ConfigError, match="max_weight: must be positive"):
        DynamicWeights({"min_weight": 0, "max_weight": 0})
    with pytest.raises(ConfigError, match=r"strategy\.params\.volatility_window: too small"):
        DynamicWeights({"volatility_window": 1})


def test_products_must_exist_and_share_a_quote() -> None:
    with pytest.raises(ConfigError, match="needs at least one product"):
        harness([])
    with pytest.raises(ConfigError, match="needs one quote currency, got EUR, USD"):
        harness([BTC, "ETH-EUR"])


# -- weights -----------------------------------------------------------------------------------------


def test_allocate_weights_examples() -> None:
    assert allocate_weights([("a", D(3)), ("b", D(1))], D(0), D(1)) == {"a": D("0.75"), "b": D("0.25")}
    # a is capped at 0.5; b and c share the rest 2:1
    got = allocate_weights([("a", D(9)), ("b", D(2)), ("c", D(1))], D("0.1"), D("0.5"))
    assert near(got, {"a": D("0.5"), "b": D(1) / D(3), "c": D("0.5") / D(3)})
    # c is raised to the floor, the others share what is left proportionally
    got = allocate_weights([("a", D(10)), ("b", D(10)), ("c", D(0))], D("0.2"), D(1))
    assert got == {"a": D("0.4"), "b": D("0.4"), "c": D("0.2")}
    # n * min_weight > 1: the worst pairs are dropped
    assert list(allocate_weights([("a", D(3)), ("b", D(2)), ("c", D(1))], D("0.4"), D(1))) == ["a", "b"]
    # n * max_weight < 1: every pair at the cap, the rest stays in cash
    assert allocate_weights([("a", D(1)), ("b", D(5))], D(0), D("0.3")) == {"a": D("0.3"), "b": D("0.3")}
    # all scores zero: equal weights
    assert allocate_weights([("a", D(0)), ("b", D(0))], D(0), D(1)) == {"a": D("0.5"), "b": D("0.5")}
    assert allocate_weights([], D("0.1"), D(1)) == {}
    # zero scores sit at the floor; exactly n * min_weight == 1 puts everyone on the floor
    assert allocate_weights([("a", D(1)), ("b", D(0))], D("0.1"), D("0.8")) == {"a": D("0.8"), "b": D("0.1")}
    assert allocate_weights([("a", D(1)), ("b", D(0))], D("0.5"), D(1)) == {"a": D("0.5"), "b": D("0.5")}


@given(
    st.lists(st.decimals(min_value=D(0), max_value=D(100), places=3), min_size=1, max_size=12),
    st.decimals(min_value=D(0), max_value=D("0.3"), places=2),
    st.decimals(min_value=D("0.05"), max_value=D(1), places=2),
)
@settings(max_examples=200, deadline=None)
def test_allocate_weights_properties(raw: list[Decimal], lo: Decimal, hi: Decimal) -> None:
    if lo > hi:
        lo, hi = hi, lo
    scores = sorted(((f"p{i}", s) for i, s in enumerate(raw)), key=lambda x: -x[1])
    got = allocate_weights(scores, lo, hi)
    assert len(got) * lo <= 1
    assert all(lo <= w <= hi for w in got.values())
    total = sum(got.values(), D(0))
    assert total <= 1 + D("1e-20")
    kept = [sc for pid, sc in scores if pid in got]
    reachable = sum((hi if sc > 0 else lo for sc in kept), D(0))  # zero scores stay on the floor
    if reachable >= 1 or all(sc == 0 for sc in kept):
        assert abs(total - 1) <= D("1e-20") or (all(sc == 0 for sc in kept) and len(kept) * hi < 1)
    else:
        assert total == reachable
    # a better score never gets a smaller weight
    ws = [got[pid] for pid, _ in scores if pid in got]
    assert all(a >= b - D("1e-20") for a, b in pairwise(ws))


# -- scores --------------------------------------------------------------------------------------------


def test_scores_by_hand() -> None:
    h = harness([BTC, ETH], max_weight=1)
    step(h, {BTC: 100, ETH: 100}, {ETH: 2})
    step(h, {BTC: 110, ETH: 100}, {ETH: 2})
    assert strat(h).rebalances == 0  # not ready yet: momentum needs 3 closes
    step(h, {BTC: 121, ETH: 100}, {ETH: 2})
    s = strat(h)
    a, b = s.scores
    # BTC: momentum 0.21 (max -> 1), quote volume 110 + 121 = 231 of ETH's 400, volatility 0 (returns 0.1, 0.1)
    assert (a.product_id, a.momentum, a.volume, a.volatility, a.spread) == (BTC, D(1), D(231) / D(400), D(0), D(0))
    assert a.score == D("0.4") + D("0.3") * D(231) / D(400) + D("0.2") + D("0.1")
    assert (b.product_id, b.momentum, b.volume, b.score) == (ETH, D(0), D(1), D("0.6"))
    assert near(s.targets, {BTC: a.score / (a.score + b.score), ETH: D("0.6") / (a.score + b.score)})
    assert s.rebalances == 1 and h.log.events().count("dynamic_weights.rebalance") == 1


def test_equal_momentum_is_neutral_and_spread_comes_from_the_book() -> None:
    h = harness([BTC, ETH], max_weight=1, max_spread="0.05")
    for _ in range(3):
        step(h, {BTC: 100, ETH: 100}, spreads={BTC: "0.02", ETH: "0.01"})
    a, b = strat(h).scores
    assert a.momentum == b.momentum == D("0.5")
    assert (a.product_id, a.spread, b.spread) == (ETH, D("0.5"), D(1))  # spreads 1% and 2%, scaled by the widest


# -- orders --------------------------------------------------------------------------------------------


def test_initial_rebalance_buys_the_targets_with_quote_sized_orders() -> None:
    h = harness([BTC, ETH], cash_reserve="0.1", fee_buffer=0)
    for _ in range(3):
        step(h, {BTC: 100, ETH: 50})
    s = strat(h)
    assert s.targets == {BTC: D("0.5"), ETH: D("0.5")}  # identical stats: equal weights
    buys = [(x.product_id, x.side, x.quote_size) for x in h.specs]
    assert buys == [(BTC, Side.BUY, D(4500)), (ETH, Side.BUY, D(4500))]  # 0.5 * 10000 * 0.9 each
    assert value(h, BTC) == D(4500) and value(h, ETH) == D(4500)
    assert not s.busy


def test_sells_go_out_first_and_buys_wait_for_them() -> None:
    h = harness([BTC, ETH], {"USD": D(0), "ETH": D(100)}, cash_reserve=0, fee_buffer=0)
    h.auto_fill = False
    for _ in range(3):
        step(h, {BTC: 100, ETH: 100})
    s = strat(h)
    assert s.targets == {BTC: D("0.5"), ETH: D("0.5")}
    (sell,) = h.specs
    assert (sell.product_id, sell.side, sell.base_size) == (ETH, Side.SELL, D(50))
    assert s.busy
    step(h, {BTC: 100, ETH: 100})  # nothing new while the sell is live
    assert len(h.specs) == 1
    h.fill(sell.client_order_id)
    (buy,) = h.specs[1:]
    assert (buy.product_id, buy.side, buy.quote_size) == (BTC, Side.BUY, D(5000))
    h.fill(buy.client_order_id)
    assert not s.busy and value(h, BTC) == value(h, ETH) == D(5000)


def test_a_removed_pair_is_sold_out() -> None:
    h = harness([BTC, ETH], cash_reserve=0, fee_buffer=0, max_spread="0.05")
    for _ in range(3):
        step(h, {BTC: 100, ETH: 100})
    assert h.quantity(ETH) == D(50)
    # ETH's spread widens past max_spread: at the next scheduled rebalance it is removed
    for _ in range(5):
        step(h, {BTC: 100, ETH: 100}, spreads={ETH: "0.1"})
    s = strat(h)
    assert s.targets == {BTC: D("0.5")}  # one pair, capped at max_weight 0.5
    sells = [x for x in h.specs if x.side is Side.SELL]
    assert [(x.product_id, x.base_size) for x in sells] == [(ETH, D(50))]
    assert h.portfolio.balance("ETH").total == 0


def test_filters() -> None:
    pids = [BTC, ETH, SOL, USDT]
    h = harness(pids, max_weight=1, min_price=10, min_volume_24h=500, max_spread="0.01")
    for _ in range(3):
        step(
            h,
            {BTC: 100, ETH: 5, SOL: 100, USDT: 1},
            volumes={BTC: 10, ETH: 1000, SOL: 1, USDT: 100_000},
        )
    # ETH price below min_price, SOL volume 300 < 500, USDT a stablecoin: only BTC is left
    assert strat(h).targets == {BTC: D(1)}
    h2 = harness([BTC, SOL], max_weight=1, max_spread="0.01")
    for _ in range(3):
        step(h2, {BTC: 100, SOL: 100}, spreads={SOL: "0.02"})
    assert strat(h2).targets == {BTC: D(1)}


def test_max_pairs_and_min_sizes() -> None:
    h = harness([BTC, ETH, SOL], {"USD": D(5)}, max_pairs=2, max_weight=1, fee_buffer=0, cash_reserve=0)
    step(h, {BTC: 100, ETH: 100, SOL: 100})
    step(h, {BTC: 101, ETH: 102, SOL: 100})
    step(h, {BTC: 102, ETH: 104, SOL: 100})
    s = strat(h)
    assert list(s.targets) == [ETH, BTC]  # best momentum first; SOL is not selected
    # 5 USD split two ways is 2.5 each: above quote_min 1 but 2.5/104 < base_min 0.001? no: 0.024 >= 0.001 -> sent
    assert [x.product_id for x in h.specs] == [ETH, BTC]
    tiny = harness([BTC, ETH], {"USD": D("1.5")}, max_weight=1, fee_buffer=0, cash_reserve=0)
    for _ in range(3):
        step(tiny, {BTC: 100, ETH: 100})
    assert strat(tiny).targets and tiny.specs == []  # 0.75 USD each is below quote_min_size 1


def test_interval_and_drift_rebalances() -> None:
    h = harness([BTC, ETH], cash_reserve=0, fee_buffer=0, drift_threshold="0.1", rebalance_interval=600)
    for _ in range(3):
        step(h, {BTC: 100, ETH: 100})
    s = strat(h)
    assert s.rebalances == 1
    step(h, {BTC: 100, ETH: 100})
    assert s.rebalances == 1 and s.drift() == 0
    step(h, {BTC: 200, ETH: 100})  # BTC doubles: its weight goes 0.5 -> 0.667
    assert s.rebalances == 2
    assert [kw["reason"] for _, e, kw in h.log.records if e == "dynamic_weights.rebalance"] == ["initial", "drift"]
    assert any(x.side is Side.SELL and x.product_id == BTC for x in h.specs)
    n = s.rebalances
    for _ in range(10):
        step(h, {BTC: 200, ETH: 100})
    reasons = [kw["reason"] for _, e, kw in h.log.records if e == "dynamic_weights.rebalance"]
    assert s.rebalances > n and reasons[-1] == "interval"


def test_first_rebalance_waits_for_every_product_or_one_interval() -> None:
    h = harness([BTC, ETH], max_weight=1)
    for _ in range(3):
        step(h, {BTC: 100})
    assert strat(h).rebalances == 0  # ETH has no data yet
    for _ in range(5):
        step(h, {BTC: 100})
    s = strat(h)
    assert s.rebalances == 1 and s.targets == {BTC: D(1)}  # one interval after BTC was ready
    assert h.quantity(ETH) == 0


def test_not_ready_holdings_are_left_alone_and_rejections_release() -> None:
    h = harness([BTC, ETH], {"USD": D(1000), "ETH": D(1)}, max_weight=1)
    h.prices[ETH] = D(100)
    h.reject_next.update({"coid-1"})
    for _ in range(8):
        step(h, {BTC: 100})
    s = strat(h)
    assert s.targets == {BTC: D(1)}
    assert h.orders["coid-1"].status is OrderStatus.REJECTED and not s.busy
    assert all(x.product_id == BTC for x in h.specs)  # ETH is held but never ready: untouched
    assert h.portfolio.balance("ETH").total == D(1)
    h.bar("DOGE-USD", D(1))  # not one of ours
    assert s.drift() >= 0


def test_zero_equity_means_no_drift() -> None:
    h = harness([BTC], {"USD": D(0)})
    for _ in range(3):
        step(h, {BTC: 100})
    s = strat(h)
    assert s.rebalances == 1 and h.specs == [] and s.drift() == 0


def test_nothing_eligible_sells_out_but_never_below_the_minimum_size() -> None:
    h = harness([BTC, ETH], {"USD": D(100), "BTC": D(2), "ETH": D("0.0005")}, min_price=1000)
    for _ in range(3):
        step(h, {BTC: 100, ETH: 100})
    s = strat(h)
    assert s.scores == [] and s.targets == {}
    # BTC is sold out; 0.0005 ETH is below the 0.001 minimum: left as dust
    assert [(x.product_id, x.side, x.base_size) for x in h.specs] == [(BTC, Side.SELL, D(2))]
    assert h.portfolio.balance("ETH").total == D("0.0005")
