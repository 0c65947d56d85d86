"""``live`` mode: refuses without confirmation or a valid key file; with the simulator's key it reconciles and trades."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cryptoj.cli import app
from cryptoj.config import ExchangeConfig
from cryptoj.risk_management import TradingState
from cryptoj.storage import Storage
from cryptoj.strategy import make_strategy
from cryptoj.trading_core import StartupRefused, build_runtime
from cryptoj.venues.simulated.server import SimulatorServer
from tests.engine_fixtures import bars, feed_bar, sim_config, started, wait_for

pytestmark = pytest.mark.integration

D = Decimal


def _live(sim: SimulatorServer, tmp_path: Path, **kw: object) -> object:
    return sim_config(sim, tmp_path, mode="live", products=["BTC-USD"], **kw)  # type: ignore[arg-type]


async def test_live_refuses_without_confirmation(sim: SimulatorServer, tmp_path: Path) -> None:
    config = _live(sim, tmp_path)
    with pytest.raises(StartupRefused, match="--confirm-live or set live_confirmed = true"):
        await build_runtime(config, strategies=[])  # type: ignore[arg-type]


async def test_live_refuses_without_a_valid_key_file(sim: SimulatorServer, tmp_path: Path) -> None:
    base = _live(sim, tmp_path)
    no_key = base.model_copy(update={"exchange": ExchangeConfig(rest_base_url=sim.base_url, key_file=None)})  # type: ignore[attr-defined]
    with pytest.raises(StartupRefused, match=r"exchange\.key_file"):
        await build_runtime(no_key, strategies=[], confirm_live=True)
    bad = tmp_path / "bad-key.json"
    bad.write_text("{not json")
    bad.chmod(0o600)
    broken = base.model_copy(update={"exchange": ExchangeConfig(rest_base_url=sim.base_url, key_file=bad)})  # type: ignore[attr-defined]
    with pytest.raises(StartupRefused) as err:
        await build_runtime(broken, strategies=[], confirm_live=True)
    assert str(bad) in str(err.value) or "JSON" in str(err.value)
    assert "PRIVATE KEY" not in str(err.value)


def test_cli_run_live_without_confirmation_exits_3_with_a_clear_message(sim: SimulatorServer, tmp_path: Path) -> None:
    cfg = tmp_path / "live.toml"
    cfg.write_text(
        f'mode = "live"\nproducts = ["BTC-USD"]\n[exchange]\nrest_base_url = "{sim.base_url}"\nkey_file = "{sim.key_file}"\n'
        '[api]\nport = 0\n'
        f'[storage]\nurl = "sqlite+aiosqlite:///{tmp_path / "db.sqlite"}"\nstate_dir = "{tmp_path}"\n'
    )
    result = CliRunner().invoke(app, ["run", "--config", str(cfg), "--no-tty"])
    assert result.exit_code == 3
    assert "refusing to start live trading" in result.output and "--confirm-live" in result.output
    bad_mode = CliRunner().invoke(app, ["run", "--config", str(cfg), "--mode", "yolo"])
    assert bad_mode.exit_code == 2 and "--mode" in bad_mode.output


async def test_live_against_the_simulator_reconciles_and_trades(sim: SimulatorServer, tmp_path: Path) -> None:
    strategy = make_strategy("sma_cross", {"fast": 2, "slow": 3, "order_size": "0.01"}, products=["BTC-USD"])
    runtime = await started(sim, _live(sim, tmp_path), [strategy], mode="live", confirm_live=True)  # type: ignore[arg-type]
    try:
        assert runtime.mode == "live"
        assert runtime.startup_report is not None and runtime.startup_report.ok
        for bar in bars(["100", "99", "98", "97", "99", "103"]):
            feed_bar(runtime, "BTC-USD", bar)
        await wait_for(lambda: (p := runtime.engine.portfolio.position("BTC-USD")) is not None and p.quantity == D("0.01"),
                       "a live-mode buy filled at the simulator")
    finally:
        await runtime.close()
    assert len(sim.admin.fills()) >= 1
    storage = await Storage.open(f"sqlite+aiosqlite:///{tmp_path / 'engine.db'}")
    try:
        kinds = [e.kind for e in await storage.journal(limit=10_000)]
        assert "engine.reconciliation" in kinds and "engine.started" in kinds and "engine.stopped" in kinds
    finally:
        await storage.close()


async def test_live_refuses_to_trade_when_reconciliation_fails(sim: SimulatorServer, tmp_path: Path) -> None:
    runtime = await build_runtime(_live(sim, tmp_path), strategies=[], confirm_live=True)  # type: ignore[arg-type]
    sim.admin.set_faults(http_5xx_next=1000)  # every REST call from here on fails: orders cannot be reconciled
    with pytest.raises(StartupRefused, match="startup reconciliation failed"):
        await runtime.start()
    sim.admin.clear_faults()
    assert runtime.risk.state is TradingState.HALTED  # fail closed
    assert runtime.engine.stats.orders_sent == 0
