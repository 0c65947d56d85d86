"""``cryptoj demo``: simulator in-process, engine in sim mode, plain output when not a terminal, summary, exit 0."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cryptoj.cli import app

pytestmark = pytest.mark.integration


def test_demo_runs_trades_and_prints_the_summary() -> None:
    result = CliRunner().invoke(app, ["demo", "--duration", "8", "--no-tty", "--seed", "3"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "simulator on http://127.0.0.1:" in out
    assert "t=5s risk=ACTIVE" in out  # the plain periodic line
    for row in ("trades (fills)", "fees (USD)", "realised PnL", "max drawdown", "reconnects", "rejects", "open orders left"):
        assert row in out
    trades = next(line for line in out.splitlines() if "trades (fills)" in line)
    assert int(trades.split("│")[2].strip()) > 0  # the demo strategy really traded


def test_demo_with_a_bar_built_in_and_a_bad_strategy_name() -> None:
    ok = CliRunner().invoke(app, ["demo", "--duration", "2", "--no-tty", "--strategy", "sma_cross"])
    assert ok.exit_code == 0, ok.output
    assert "Summary — sma_cross" in ok.output
    bad = CliRunner().invoke(app, ["demo", "--duration", "2", "--no-tty", "--strategy", "no_such_strategy"])
    assert bad.exit_code == 2
    assert "strategy.name" in bad.output and "no_such_strategy" in bad.output


def test_make_demo_entry_point_as_a_subprocess(tmp_path: Path) -> None:
    """The installed ``cryptoj`` script, stdout not a terminal: plain lines, summary, exit 0."""
    exe = Path(sys.executable).with_name("cryptoj")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRYPTOJ_")}
    proc = subprocess.run([str(exe), "demo", "--duration", "3"], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env=env, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "Summary — book_reversion" in proc.stdout
    assert "Traceback" not in proc.stderr
