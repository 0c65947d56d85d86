"""Paper mode against the simulator's public WebSocket, and one strategy object running unchanged in sim and paper."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cryptoj.cli import app
from cryptoj.config import EngineConfig, ExchangeConfig, PaperConfig
from cryptoj.demo import BookReversion
from cryptoj.model.money import Side
from cryptoj.model.orders import Liquidity, OrderKind, OrderSpec, OrderStatus
from cryptoj.venues.paper import PaperVenue
from cryptoj.venues.simulated.server import SimulatorServer
from tests.engine_fixtures import engine_totals, sim_config, sim_totals, started, wait_for

pytestmark = pytest.mark.integration

D = Decimal


def _paper_totals(venue: PaperVenue) -> dict[str, Decimal]:
    return {c: b.total for c, b in venue.core.balances().items()}


async def test_same_strategy_object_runs_unchanged_in_sim_then_paper(sim_live: SimulatorServer, tmp_path: Path) -> None:
    strategy = BookReversion({"order_size": "0.01", "lookback": 5, "entry_bps": "0", "max_hold_s": 1}, products=["BTC-USD"])

    # 1) sim: real orders at the simulator
    sim_cfg = sim_config(sim_live, tmp_path, products=["BTC-USD"], db_name="sim.db")
    runtime = await started(sim_live, sim_cfg, [strategy])
    try:
        await wait_for(lambda: runtime.engine.stats.fills >= 2, "fills in sim mode")
    finally:
        await runtime.close()
    assert runtime.engine.strategies == [strategy]
    sim_fill_count = len(sim_live.admin.fills())
    assert sim_fill_count >= 2
    assert engine_totals(runtime) == {c: v for c, v in sim_totals(sim_live).items() if c in engine_totals(runtime)}

    # 2) paper: the same object, public data from the simulator's /ws, fills from our matching engine; no key at all
    paper_cfg = sim_config(
        sim_live, tmp_path, mode="paper", products=["BTC-USD"], db_name="paper.db",
        paper=PaperConfig(balances={"USD": D(5000)}, maker_fee_rate=D("0.001"), taker_fee_rate=D("0.002")),
        engine=EngineConfig(wait_for_books_seconds=10, equity_interval_seconds=0.2),
    )
    paper_cfg = paper_cfg.model_copy(update={"exchange": ExchangeConfig(
        rest_base_url=sim_live.base_url, ws_market_url=sim_live.ws_url, ws_user_url=sim_live.ws_user_url, key_file=None)})
    runtime = await started(sim_live, paper_cfg, [strategy], mode="paper")
    venue = runtime.venue
    assert isinstance(venue, PaperVenue)
    try:
        await wait_for(lambda: runtime.engine.stats.fills >= 2, "fills in paper mode")
    finally:
        await runtime.close()
    fills = await venue.fills()
    assert len(fills) >= 2 and runtime.order_manager.open_orders() == []
    sim_book_low = min(D(a[0]) for a in sim_live.admin.book("BTC-USD")["asks"][:1]) * D("0.9")
    for fill in fills:
        rate = D("0.002") if fill.liquidity is Liquidity.TAKER else D("0.001")
        assert fill.fee == fill.price * fill.size * rate
        assert fill.price > sim_book_low  # priced from the simulator's live book
    assert engine_totals(runtime) == _paper_totals(venue)  # the engine's portfolio is the paper account, exactly
    assert len(sim_live.admin.fills()) == sim_fill_count  # paper never traded at the simulator
    assert runtime.engine.strategies == [strategy]


async def test_paper_refuses_a_post_only_order_crossing_the_live_book(sim: SimulatorServer, tmp_path: Path) -> None:
    """The paper venue checks orders against the live book and the real product (venue-side reject, strategy told)."""
    strategy = BookReversion({}, products=["BTC-USD"])
    cfg = sim_config(sim, tmp_path, mode="paper", products=["BTC-USD"], paper=PaperConfig(balances={"USD": D(100000)}))
    runtime = await started(sim, cfg, [strategy], mode="paper")
    try:
        venue = runtime.venue
        assert isinstance(venue, PaperVenue)
        assert venue.core.mirrored_levels("BTC-USD") > 0
        best_ask = D(sim.admin.book("BTC-USD")["asks"][0][0])
        spec = OrderSpec(client_order_id="post-only-1", product_id="BTC-USD", side=Side.BUY, kind=OrderKind.LIMIT,
                         base_size=D("0.01"), limit_price=best_ask, post_only=True)
        runtime.engine.submit(spec, owner=0)
        await wait_for(lambda: runtime.engine.stats.venue_rejects["INVALID_LIMIT_PRICE_POST_ONLY"] == 1, "post-only refused")
        order = runtime.order_manager.order("post-only-1")
        assert order is not None and order.status is OrderStatus.REJECTED
        assert await venue.open_orders() == []
    finally:
        await runtime.close()


async def test_cli_run_paper_against_the_simulators_public_endpoints(sim_live: SimulatorServer, tmp_path: Path) -> None:
    cfg = tmp_path / "paper.toml"
    cfg.write_text(
        'mode = "paper"\nproducts = ["BTC-USD"]\n'
        f'[exchange]\nrest_base_url = "{sim_live.base_url}"\nws_market_url = "{sim_live.ws_url}"\n'
        '[strategy]\nname = "book_reversion"\n[strategy.params]\nlookback = 5\nentry_bps = "0"\n'
        '[paper]\nbalances = { USD = "2000" }\n'
        '[api]\nport = 0\n'
        f'[storage]\nurl = "sqlite+aiosqlite:///{tmp_path / "db.sqlite"}"\nstate_dir = "{tmp_path}"\n'
    )
    # the command runs its own event loop: give it a thread so the simulator's loop keeps serving
    result = await asyncio.to_thread(CliRunner().invoke, app, ["run", "--config", str(cfg), "--duration", "3", "--no-tty"])
    assert result.exit_code == 0, result.output
    assert "Summary — book_reversion" in result.output
    assert sim_live.admin.fills() == []  # nothing was traded at the simulator itself
