"""SIGTERM during trading (``cryptoj run`` as a subprocess against a simulator on loopback).

Open orders are cancelled or left as configured, state is persisted, the process
exits 0, and the next start reconciles cleanly against what was left.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from cryptoj.storage import Storage
from cryptoj.venues.simulated.server import SimulatorServer
from tests.engine_fixtures import wait_for

pytestmark = pytest.mark.integration

STRATEGY = '''
from decimal import Decimal
from cryptoj.model.money import Side
from cryptoj.strategy import Param, Strategy


class Resting(Strategy):
    """Places one buy limit 10% under the best bid at the first book, then waits."""

    params = (Param("place", bool, True),)

    def on_start(self) -> None:
        self.placed = False

    def on_book(self, product, book) -> None:
        best = book.best_bid()
        if self.p.place and not self.placed and best is not None:
            self.placed = True
            price = self.product(product).round_price(best[0] * Decimal("0.9"), Side.BUY)
            self.buy(product, Decimal("0.01"), price=price)
'''


def _config(tmp_path: Path, sim: SimulatorServer, *, cancel: bool, place: bool) -> Path:
    (tmp_path / "resting.py").write_text(STRATEGY)
    cfg = tmp_path / f"run-{cancel}-{place}.toml"
    cfg.write_text(
        'mode = "sim"\nproducts = ["BTC-USD"]\n'
        f'[exchange]\nkey_file = "{sim.key_file}"\n'
        f'[strategy]\nname = "{tmp_path / "resting.py"}:Resting"\n[strategy.params]\nplace = {str(place).lower()}\n'
        f'[engine]\nsim_url = "{sim.base_url}"\ncancel_on_shutdown = {str(cancel).lower()}\nwait_for_books_seconds = 10\n'
        '[api]\nport = 0\n'
        f'[storage]\nurl = "sqlite+aiosqlite:///{tmp_path / "state.db"}"\nstate_dir = "{tmp_path}"\n'
    )
    return cfg


def _spawn(cfg: Path, *extra: str) -> subprocess.Popen[str]:
    exe = Path(sys.executable).with_name("cryptoj")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRYPTOJ_")}
    return subprocess.Popen([str(exe), "--log-level", "WARNING", "run", "--config", str(cfg), "--no-tty", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cfg.parent)


def _open_user_orders(sim: SimulatorServer) -> list[object]:
    return [o for o in sim.admin.orders() if not o.status.is_done]


async def _finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = await asyncio.to_thread(proc.communicate, timeout=90)
    return proc.returncode, out, err


async def _journal(tmp_path: Path) -> list[tuple[str, dict[str, object]]]:
    storage = await Storage.open(f"sqlite+aiosqlite:///{tmp_path / 'state.db'}")
    try:
        return [(e.kind, e.payload) for e in await storage.journal(limit=100_000)]
    finally:
        await storage.close()


async def test_sigterm_cancels_open_orders_persists_and_exits_0(sim_live: SimulatorServer, tmp_path: Path) -> None:
    proc = _spawn(_config(tmp_path, sim_live, cancel=True, place=True))
    try:
        placed = lambda: _open_user_orders(sim_live) or proc.poll() is not None  # noqa: E731
        await wait_for(placed, "the resting order at the simulator", timeout=60)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGTERM)
        code, out, err = await _finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0, err
    assert "Summary" in out and "Traceback" not in err
    assert _open_user_orders(sim_live) == []  # cancelled as configured
    journal = await _journal(tmp_path)
    stopped = [p for k, p in journal if k == "engine.stopped"]
    assert stopped and stopped[-1]["reason"] == "SIGTERM" and stopped[-1]["open_orders_left"] == 0
    storage = await Storage.open(f"sqlite+aiosqlite:///{tmp_path / 'state.db'}")
    try:
        state = await storage.get_trading_state()
        assert state is not None and state.state == "ACTIVE"
        assert await storage.open_orders() == []
        assert await storage.latest_balances()
    finally:
        await storage.close()


async def test_sigterm_leaving_orders_then_the_next_start_reconciles_cleanly(sim_live: SimulatorServer, tmp_path: Path) -> None:
    proc = _spawn(_config(tmp_path, sim_live, cancel=False, place=True))
    try:
        await wait_for(lambda: _open_user_orders(sim_live) or proc.poll() is not None, "a resting order", timeout=60)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGTERM)
        code, _, err = await _finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0, err
    left = _open_user_orders(sim_live)
    assert len(left) == 1  # left resting, as configured
    journal = await _journal(tmp_path)
    assert [p for k, p in journal if k == "engine.stopped"][-1]["open_orders_left"] == 1

    # the next start finds the order it left (storage and venue agree) and stops again on its own
    again = _spawn(_config(tmp_path, sim_live, cancel=False, place=False), "--duration", "2")
    code, _, err = await _finish(again)
    assert code == 0, err
    reconciliations = [p for k, p in await _journal(tmp_path) if k == "engine.reconciliation"]
    assert len(reconciliations) == 2
    last = reconciliations[-1]
    assert last["ok"] is True and last["problems"] == [] and last["adopted"] == []
    assert len(_open_user_orders(sim_live)) == 1
