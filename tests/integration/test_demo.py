"""``cryptoj demo``: simulator in-process, engine in sim mode, plain output when not a terminal, summary, exit 0."""

from __future__ import annotations

import asyncio
import io
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from cryptoj.cli import app
from cryptoj.config import EngineConfig
from cryptoj.demo import BookReversion, drive, plain_line, run_configured, summary_table
from cryptoj.trading_core import build_runtime
from cryptoj.venues.simulated.server import SimulatorServer
from tests.engine_fixtures import sim_config, wait_for

pytestmark = pytest.mark.integration


def test_demo_runs_trades_and_prints_the_summary() -> None:
    result = CliRunner().invoke(app, ["demo", "--duration", "8", "--no-tty", "--seed", "3", "--api-port", "0"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "simulator on http://127.0.0.1:" in out
    assert "dashboard and operator API: http://127.0.0.1:" in out  # served by the running demo (any free port here)
    assert re.search(r"^t=\d+s risk=ACTIVE ", out, re.MULTILINE)  # the plain periodic line (every 5 s)
    for row in ("trades (fills)", "fees (USD)", "realised PnL", "max drawdown", "reconnects", "rejects", "open orders left"):
        assert row in out
    trades = next(line for line in out.splitlines() if "trades (fills)" in line)
    assert int(trades.split("│")[2].strip()) > 0  # the demo strategy really traded


def test_demo_with_a_bar_built_in_and_a_bad_strategy_name() -> None:
    ok = CliRunner().invoke(app, ["demo", "--duration", "2", "--no-tty", "--strategy", "sma_cross", "--no-api"])
    assert ok.exit_code == 0, ok.output
    assert "dashboard" not in ok.output
    assert "Summary — sma_cross" in ok.output
    bad = CliRunner().invoke(app, ["demo", "--duration", "2", "--no-tty", "--strategy", "no_such_strategy"])
    assert bad.exit_code == 2
    assert "strategy.name" in bad.output and "no_such_strategy" in bad.output


def test_make_demo_entry_point_as_a_subprocess(tmp_path: Path) -> None:
    """The installed ``cryptoj`` script, stdout not a terminal: plain lines, summary, exit 0."""
    exe = Path(sys.executable).with_name("cryptoj")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRYPTOJ_")}
    proc = subprocess.run([str(exe), "demo", "--duration", "3", "--api-port", "0"], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path, env=env, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "Summary — book_reversion" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_demo_goes_on_without_the_api_when_its_port_is_taken() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(app, ["demo", "--duration", "2", "--no-tty", "--api-port", str(port)])
    assert result.exit_code == 0, result.output
    assert "operator API not started" in result.output and str(port) in result.output
    assert "Summary — book_reversion" in result.output


async def test_panel_renders_while_trading_and_the_summary_matches(sim_live: SimulatorServer, tmp_path: Path) -> None:
    """The rich panel (terminal mode) over a real runtime, then the summary the table is built from."""
    strategy = BookReversion({"order_size": "0.01", "lookback": 5, "entry_bps": "0", "max_hold_s": 1}, products=["BTC-USD"])
    runtime = await build_runtime(sim_config(sim_live, tmp_path, products=["BTC-USD"]), strategies=[strategy], simulator=sim_live)
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=100)

    async def stop_after_fills() -> None:
        await wait_for(lambda: runtime.engine.stats.fills >= 2, "fills while the panel shows")
        runtime.engine.request_stop("test done")

    stopper = asyncio.ensure_future(stop_after_fills())
    summary = await drive(runtime, strategy="book_reversion", duration=60, tty=True, console=console)
    await stopper
    text = buffer.getvalue()
    assert "cryptoj sim — book_reversion" in text and "BTC-USD" in text and "ACTIVE" in text and "market ws up" in text
    assert summary.trades == runtime.engine.stats.fills >= 2 and summary.open_orders_left == 0
    assert summary.fees == runtime.engine.stats.fees > 0 and summary.quote == "USD"
    assert "ok " in plain_line(runtime, 1.0) or "BTC-USD=" in plain_line(runtime, 1.0)
    table = Console(file=io.StringIO(), width=100)
    table.print(summary_table(summary))


def test_cli_run_in_sim_mode_with_an_in_process_simulator(tmp_path: Path) -> None:
    cfg = tmp_path / "sim.toml"
    cfg.write_text(
        'mode = "sim"\nproducts = ["BTC-USD"]\n[strategy]\nname = "book_reversion"\n[strategy.params]\nlookback = 5\n'
        '[api]\nport = 0\n'
        f'[storage]\nurl = "sqlite+aiosqlite:///{tmp_path / "db.sqlite"}"\nstate_dir = "{tmp_path / "state"}"\n'
    )
    result = CliRunner().invoke(app, ["run", "--config", str(cfg), "--duration", "2", "--no-tty"])
    assert result.exit_code == 0, result.output
    assert "Summary — book_reversion" in result.output
    assert (tmp_path / "state" / "sim-key.json").exists()
    broken = tmp_path / "broken.toml"
    broken.write_text('mode = "sim"\n[engine]\nsim_url = "ftp://nowhere"\n')
    bad = CliRunner().invoke(app, ["run", "--config", str(broken)])
    assert bad.exit_code == 2 and "engine.sim_url" in bad.output


async def test_run_against_an_external_simulator_by_url(sim: SimulatorServer, tmp_path: Path) -> None:
    config = sim_config(sim, tmp_path, products=["BTC-USD"])
    config = config.model_copy(update={"engine": EngineConfig(sim_url=sim.base_url, wait_for_books_seconds=5)})
    summary = await run_configured(config, mode="sim", confirm_live=False, duration=1, tty=False,
                                   console=Console(file=io.StringIO()), strategy_spec="sma_cross")
    assert summary.strategy == "sma_cross" and summary.rejects == 0
