"""End to end in ``sim`` mode: each built-in strategy drives the real engine against the simulator over loopback.

The bars the bar-driven strategies see are handed to the engine directly (a
time-compressed bar feed — a real minute bar would take a real minute); everything
after the strategy decides — risk checks, the order manager, REST orders, the user
WebSocket, fills, the portfolio — is the real path against the simulator. Each test
ends by comparing the engine's positions and PnL with the simulator's own accounts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path

import pytest

from cryptoj.config import ExitsConfig, RiskConfig
from cryptoj.demo import BookReversion
from cryptoj.model.money import Side
from cryptoj.model.orders import OrderStatus
from cryptoj.risk_management import TradingState
from cryptoj.strategy import make_strategy
from cryptoj.venues.simulated.server import SimulatorServer
from tests.engine_fixtures import (
    admin_realised,
    admin_totals,
    bars,
    engine_totals,
    feed_bar,
    sim_config,
    sim_totals,
    started,
    wait_for,
)

pytestmark = pytest.mark.integration

MakeSim = Callable[..., Awaitable[SimulatorServer]]
D = Decimal


def _position(runtime: object, pid: str) -> Decimal:
    pos = runtime.engine.portfolio.position(pid)  # type: ignore[attr-defined]
    return D(0) if pos is None else pos.quantity


async def _settled(runtime: object, sim: SimulatorServer) -> None:
    """No order in flight and the engine's balances equal the simulator's (the user stream has caught up)."""
    engine = runtime.engine  # type: ignore[attr-defined]
    await wait_for(lambda: not engine.order_manager.open_orders() and not engine._sends, "no open orders / sends")
    await wait_for(lambda: all(engine_totals(runtime).get(c, D(0)) == v for c, v in sim_totals(sim).items()),  # type: ignore[arg-type]
                   "engine balances == simulator balances")


async def test_sma_cross_round_trip_matches_the_simulator(sim: SimulatorServer, tmp_path: Path) -> None:
    strategy = make_strategy("sma_cross", {"fast": 2, "slow": 3, "order_size": "0.01"}, products=["BTC-USD"])
    runtime = await started(sim, sim_config(sim, tmp_path, products=["BTC-USD"]), [strategy])
    try:
        start = sim_totals(sim)
        for bar in bars(["100", "99", "98", "97", "99", "103"]):  # falling arms it, the rise crosses up: buy
            feed_bar(runtime, "BTC-USD", bar)
        await wait_for(lambda: _position(runtime, "BTC-USD") == D("0.01"), "sma_cross bought 0.01 BTC")
        for bar in bars(["101", "96", "92"]):  # cross down: sell everything
            feed_bar(runtime, "BTC-USD", bar)
        await wait_for(lambda: _position(runtime, "BTC-USD") == 0, "sma_cross sold the position")
        await _settled(runtime, sim)
        # positions and PnL equal the simulator's accounts (its admin endpoint, over HTTP)
        end = await admin_totals(sim)
        assert end["BTC"] == start["BTC"] and end == {c: v for c, v in engine_totals(runtime).items() if c in end}
        base, quote_spent, fees, count = await admin_realised(sim, "BTC-USD")
        assert base == 0
        pos = runtime.engine.portfolio.position("BTC-USD")
        assert pos is not None and pos.realised_pnl == -quote_spent == end["USD"] - start["USD"]
        assert pos.fees_paid == fees == runtime.engine.stats.fees > 0
        assert runtime.engine.stats.fills == count >= 2
    finally:
        await runtime.close()
    assert runtime.storage is not None


async def test_rsi_reversion_enters_and_exits_against_the_simulator(sim: SimulatorServer, tmp_path: Path) -> None:
    strategy = make_strategy("rsi_reversion", {"period": 3, "order_size": "0.02"}, products=["ETH-USD"])
    runtime = await started(sim, sim_config(sim, tmp_path, products=["ETH-USD"]), [strategy])
    try:
        start = sim_totals(sim)
        for bar in bars(["3000", "2990", "2980", "2970", "2960", "2950"]):  # RSI falls below 35: buy
            feed_bar(runtime, "ETH-USD", bar)
        await wait_for(lambda: _position(runtime, "ETH-USD") > 0, "rsi_reversion bought")
        for bar in bars(["2960", "2980", "3000", "3020", "3040", "3060"]):  # RSI above 70: sell all
            feed_bar(runtime, "ETH-USD", bar)
        await wait_for(lambda: _position(runtime, "ETH-USD") == 0, "rsi_reversion sold")
        await _settled(runtime, sim)
        end = await admin_totals(sim)
        base, quote_spent, _, _ = await admin_realised(sim, "ETH-USD")
        assert base == 0 and end["ETH"] == start["ETH"]
        assert runtime.engine.portfolio.realised_pnl == end["USD"] - start["USD"] == -quote_spent
    finally:
        await runtime.close()


async def test_dynamic_weights_rebalances_into_both_pairs(make_sim: MakeSim, tmp_path: Path) -> None:
    sim = await make_sim(balances={"USD": D(20000)})
    params = {"momentum_window": 2, "volatility_window": 2, "volume_window": 2, "max_pairs": 2, "max_weight": "0.6",
              "min_weight": "0.1", "cash_reserve": "0.05", "max_spread": "0.05"}
    strategy = make_strategy("dynamic_weights", params, products=["BTC-USD", "ETH-USD"])
    runtime = await started(sim, sim_config(sim, tmp_path), [strategy])
    try:
        btc = bars(["59000", "59100", "59300", "59200"], volume="2")
        eth = bars(["3000", "3010", "3005", "3030"], volume="20")
        for b, e in zip(btc, eth, strict=True):
            feed_bar(runtime, "BTC-USD", b)
            feed_bar(runtime, "ETH-USD", e)
        await wait_for(lambda: _position(runtime, "BTC-USD") > 0 and _position(runtime, "ETH-USD") > 0, "bought both pairs")
        await _settled(runtime, sim)
        end = await admin_totals(sim)
        assert end["BTC"] == _position(runtime, "BTC-USD") and end["ETH"] == _position(runtime, "ETH-USD")
        equity = runtime.engine.equity()
        for pid in ("BTC-USD", "ETH-USD"):
            value = _position(runtime, pid) * runtime.engine.mid_price(pid)  # type: ignore[operator]
            assert D("0.1") * equity * D("0.9") <= value <= D("0.6") * equity  # within the clamped weights
        assert engine_totals(runtime)["USD"] == end["USD"]
    finally:
        await runtime.close()


async def test_book_strategy_risk_rejects_reach_the_strategy(sim_live: SimulatorServer, tmp_path: Path) -> None:
    """Book-driven trading on a live synthetic market; a risk limit refuses orders and the strategy hears REJECTED."""
    strategy = BookReversion({"order_size": "0.01", "lookback": 5, "entry_bps": "0", "max_hold_s": 1}, products=["BTC-USD"])
    seen: list[OrderStatus] = []
    original = strategy.on_order_update

    def spy(order: object) -> None:
        seen.append(order.status)  # type: ignore[attr-defined]
        original(order)  # type: ignore[arg-type]

    strategy.on_order_update = spy  # type: ignore[method-assign]
    config = sim_config(sim_live, tmp_path, products=["BTC-USD"], risk=RiskConfig(max_order_notional=D(1)))
    runtime = await started(sim_live, config, [strategy])
    try:
        await wait_for(lambda: runtime.engine.stats.risk_rejects["MAX_ORDER_NOTIONAL"] >= 1, "a risk rejection")
        await wait_for(lambda: OrderStatus.REJECTED in seen, "the strategy was told its order was REJECTED")
        assert runtime.engine.stats.fills == 0 and sim_live.admin.fills() == []
        assert runtime.risk.state is TradingState.ACTIVE
    finally:
        await runtime.close()


async def test_native_protective_stop_rests_at_the_simulator_and_fires(sim: SimulatorServer, tmp_path: Path) -> None:
    """risk.exits with native stops: after the entry fills, a stop-limit sell rests at the venue; a price drop fires it."""
    strategy = make_strategy("sma_cross", {"fast": 2, "slow": 3, "order_size": "0.01"}, products=["BTC-USD"])
    exits = ExitsConfig(stop_loss_fraction=D("0.001"), native_stops=True, stop_limit_offset_fraction=D("0.01"))
    runtime = await started(sim, sim_config(sim, tmp_path, products=["BTC-USD"], risk=RiskConfig(exits=exits)), [strategy])
    try:
        for bar in bars(["100", "99", "98", "97", "99", "103"]):
            feed_bar(runtime, "BTC-USD", bar)
        await wait_for(lambda: _position(runtime, "BTC-USD") == D("0.01"), "entry filled")
        def full_stop_resting() -> bool:
            live = [o for o in sim.admin.orders() if o.spec.kind.value == "STOP_LIMIT" and not o.status.is_done]
            return len(live) == 1 and live[0].spec.base_size == D("0.01")

        # the entry may fill in parts: each part re-places the stop (cancel, then the new size); wait for the final one
        await wait_for(full_stop_resting, "one native stop-limit sell for the whole position resting at the simulator")
        for _ in range(40):  # sellers walk the book down until the stop triggers
            if _position(runtime, "BTC-USD") == 0:
                break
            sim.admin.trade("BTC-USD", Side.SELL, D("0.5"))
            await asyncio.sleep(0.05)
        await wait_for(lambda: _position(runtime, "BTC-USD") == 0, "the stop sold the position")
        stops = [o for o in sim.admin.orders() if o.spec.kind.value == "STOP_LIMIT"]
        assert sum((o.filled_size for o in stops), D(0)) == D("0.01")  # never more than the position
        await _settled(runtime, sim)
        assert (await admin_totals(sim))["BTC"] == engine_totals(runtime)["BTC"]
    finally:
        await runtime.close()
