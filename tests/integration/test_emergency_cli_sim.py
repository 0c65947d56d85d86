"""``cryptoj resume`` as a real subprocess against the simulator: refused while the venue fails
(nothing changes), then resumes after health checks + reconciliation; paper mode and a missing key."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cryptoj.cli import app
from cryptoj.emergency_cli import write_kill_file
from cryptoj.storage import Storage

pytestmark = pytest.mark.integration


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRYPTOJ_")}
    env.update({
        "CRYPTOJ_STORAGE__URL": f"sqlite+aiosqlite:///{tmp_path / 'resume.db'}",
        "CRYPTOJ_STORAGE__STATE_DIR": str(tmp_path / "state"),
        **extra,
    })
    return env


async def _halt(tmp_path: Path) -> None:
    storage = await Storage.open(f"sqlite+aiosqlite:///{tmp_path / 'resume.db'}")
    await storage.set_trading_state("HALTED", "MANUAL: test", emergency={"trigger": "MANUAL", "confirmed": True})
    await storage.close()
    write_kill_file(tmp_path / "state", "KILL", "test")


async def _state(tmp_path: Path) -> tuple[str, list[str]]:
    storage = await Storage.open(f"sqlite+aiosqlite:///{tmp_path / 'resume.db'}")
    record = await storage.get_trading_state()
    kinds = [e.kind for e in await storage.journal(limit=10000)]
    await storage.close()
    assert record is not None
    return record.state, kinds


async def _run(env: dict[str, str], *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cryptoj", "resume", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_resume_refused_while_the_venue_fails_then_resumes(make_sim: Callable[..., Any], tmp_path: Path) -> None:
    sim = await make_sim()
    await _halt(tmp_path)
    env = _env(tmp_path, CRYPTOJ_MODE="sim", CRYPTOJ_EXCHANGE__REST_BASE_URL=sim.base_url,
               CRYPTOJ_EXCHANGE__KEY_FILE=str(sim.key_file))
    sim.admin.set_faults(http_5xx_next=10_000)
    code, out = await _run(env)
    assert code == 3, out
    assert "resume refused" in out and "VenueUnavailable" in out
    assert (await _state(tmp_path))[0] == "HALTED"
    assert (tmp_path / "state" / "KILL").exists()

    sim.admin.clear_faults()
    code, out = await _run(env, "--reason", "venue is back")
    assert code == 0, out
    assert "resumed" in out and "ACTIVE" in out
    state, kinds = await _state(tmp_path)
    assert state == "ACTIVE"
    assert "reconcile.ok" in kinds and kinds[-1] == "emergency.resume"
    assert not (tmp_path / "state" / "KILL").exists()


def test_resume_in_paper_mode_and_without_a_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("CRYPTOJ_"):
            monkeypatch.delenv(name)
    for key, value in _env(tmp_path).items():
        if key.startswith("CRYPTOJ_"):
            monkeypatch.setenv(key, value)
    asyncio.run(_halt(tmp_path))
    runner = CliRunner()
    result = runner.invoke(app, ["resume"])  # mode sim, no key anywhere
    assert result.exit_code == 3
    assert "no API key" in result.output
    monkeypatch.setenv("CRYPTOJ_MODE", "paper")
    result = runner.invoke(app, ["resume", "--reduce-only"])
    assert result.exit_code == 0, result.output
    assert "REDUCE_ONLY" in result.output
    state, kinds = asyncio.run(_state(tmp_path))
    assert state == "REDUCE_ONLY" and kinds[-1] == "emergency.resume"
    assert not (tmp_path / "state" / "KILL").exists()


async def test_run_resume_in_process(make_sim: Callable[..., Any], tmp_path: Path) -> None:
    from cryptoj.config import load_config
    from cryptoj.emergency_cli import run_resume
    from cryptoj.risk_management import TradingState

    sim = await make_sim()
    await _halt(tmp_path)
    cfg = load_config(None, _env(tmp_path, CRYPTOJ_MODE="sim", CRYPTOJ_EXCHANGE__REST_BASE_URL=sim.base_url,
                                 CRYPTOJ_EXCHANGE__KEY_FILE=str(sim.key_file)))
    # an order at the venue that storage does not know: the reconciliation adopts it, resume goes on
    bid = sim.admin.book("BTC-USD", 1)["bids"][0][0]
    sim.admin.place("user", {"product_id": "BTC-USD", "side": "BUY", "client_order_id": "ext-1",
                             "order_configuration": {"limit_limit_gtc": {"base_size": "0.001", "limit_price": str(bid)}}})
    report = await run_resume(cfg, "in process", TradingState.REDUCE_ONLY)
    assert report.ok, report.problems
    assert report.state is TradingState.REDUCE_ONLY
    state, kinds = await _state(tmp_path)
    assert state == "REDUCE_ONLY" and "reconcile.ok" in kinds


def test_resume_risk_context_places_nothing() -> None:
    from decimal import Decimal

    from cryptoj.config import RiskConfig
    from cryptoj.emergency_cli import _NoTrading
    from cryptoj.errors import RiskRejected
    from cryptoj.model.money import Side
    from cryptoj.model.orders import OrderKind, OrderSpec
    from cryptoj.risk_management import RiskEngine

    ctx = _NoTrading()
    engine = RiskEngine(RiskConfig(), ctx, lambda: datetime.now(UTC))
    with pytest.raises(RiskRejected, match="UNKNOWN_PRODUCT"):
        engine.check(OrderSpec("x", "BTC-USD", Side.BUY, OrderKind.LIMIT, base_size=Decimal(1), limit_price=Decimal(1)))
    assert (ctx.mid_price("BTC-USD"), ctx.data_age("BTC-USD"), ctx.position_size("BTC-USD")) == (None, None, Decimal(0))
    assert ctx.balance("USD").total == 0 and ctx.open_orders() == [] and ctx.product_ids() == []
    assert ctx.fee_rate("BTC-USD") == 0


def test_resume_reports_storage_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("CRYPTOJ_"):
            monkeypatch.delenv(name)
    (tmp_path / "blocker").write_text("a file where a directory should be")
    monkeypatch.setenv("CRYPTOJ_STORAGE__URL", f"sqlite+aiosqlite:///{tmp_path / 'blocker' / 'x.db'}")
    result = CliRunner().invoke(app, ["resume"])
    assert result.exit_code == 3
    assert "resume failed" in result.output


async def _run_cmd(env: dict[str, str], *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cryptoj", *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_kill_now_cancels_and_flattens_without_an_engine(make_sim: Callable[..., Any], tmp_path: Path) -> None:
    from decimal import Decimal

    sim = await make_sim(balances={"USD": Decimal(100000), "BTC": Decimal("0.02"), "ETH": Decimal("0.2")})
    bid = Decimal(sim.admin.book("BTC-USD", 1)["bids"][0][0])
    for i in range(4):  # orders an engine left behind (storage has never seen them)
        price = str((bid * Decimal("0.9") - i).quantize(Decimal("0.01")))
        sim.admin.place("user", {"product_id": "BTC-USD", "side": "BUY", "client_order_id": f"left-{i}",
                                 "order_configuration": {"limit_limit_gtc": {"base_size": "0.001", "limit_price": price}}})
    env = _env(tmp_path, CRYPTOJ_MODE="sim", CRYPTOJ_EXCHANGE__REST_BASE_URL=sim.base_url,
               CRYPTOJ_EXCHANGE__KEY_FILE=str(sim.key_file))
    code, out = await _run_cmd(env, "kill", "--now", "--flatten", "--reason", "engine crashed")
    assert code == 0, out
    assert "kill confirmed" in out
    orders = (sim.admin.orders())
    assert not [o for o in orders if o.status in ("OPEN", "PENDING", "QUEUED", "CANCEL_QUEUED")]
    balances = sim.admin.balances()["user"]
    assert Decimal(balances["BTC"]["available"]) + Decimal(balances["BTC"]["hold"]) < Decimal("0.0001")
    state, kinds = await _state(tmp_path)
    assert state == "HALTED" and kinds[-1] == "emergency.report"
    assert (tmp_path / "state" / "KILL").exists()  # a starting engine stays halted


async def test_kill_now_reports_an_unreachable_venue(make_sim: Callable[..., Any], tmp_path: Path) -> None:
    sim = await make_sim()
    env = _env(tmp_path, CRYPTOJ_MODE="sim", CRYPTOJ_EXCHANGE__REST_BASE_URL=sim.base_url,
               CRYPTOJ_EXCHANGE__KEY_FILE=str(sim.key_file))
    sim.admin.set_faults(http_5xx_next=1_000_000)
    code, out = await _run_cmd(env, "kill", "--now")
    assert code == 3, out
    assert "kill failed" in out and "VenueUnavailable" in out
    assert (tmp_path / "state" / "KILL").exists()  # the file is written first, whatever happens next


def test_kill_now_needs_a_venue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("CRYPTOJ_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("CRYPTOJ_MODE", "paper")
    monkeypatch.setenv("CRYPTOJ_STORAGE__STATE_DIR", str(tmp_path / "state"))
    result = CliRunner().invoke(app, ["kill", "--now"])
    assert result.exit_code == 2
    assert "--now needs a venue" in result.output
    assert not (tmp_path / "state" / "KILL").exists()


async def test_run_kill_now_in_process(make_sim: Callable[..., Any], tmp_path: Path) -> None:
    from decimal import Decimal

    from cryptoj.config import load_config
    from cryptoj.emergency_cli import run_kill_now

    sim = await make_sim()
    bid = Decimal(sim.admin.book("BTC-USD", 1)["bids"][0][0])
    sim.admin.place("user", {"product_id": "BTC-USD", "side": "BUY", "client_order_id": "left",
                             "order_configuration": {"limit_limit_gtc": {"base_size": "0.001",
                                                                         "limit_price": str(bid - 100)}}})
    cfg = load_config(None, _env(tmp_path, CRYPTOJ_MODE="sim", CRYPTOJ_EXCHANGE__REST_BASE_URL=sim.base_url,
                                 CRYPTOJ_EXCHANGE__KEY_FILE=str(sim.key_file)))
    report = await run_kill_now(cfg, "in process")
    assert report.confirmed and report.cancelled == ["left"]
    assert not [o for o in sim.admin.orders() if o.status == "OPEN"]


def test_print_kill_report(tmp_path: Path) -> None:
    import io
    from datetime import UTC, datetime
    from decimal import Decimal

    from rich.console import Console

    from cryptoj.emergency_cli import EXIT_REFUSED, print_kill_report
    from cryptoj.emergency_manager import KillReport, KillStep, Trigger

    now = datetime.now(UTC)
    report = KillReport(Trigger.MANUAL, "x", now, flatten=True, steps=[KillStep("cancel_all", now, False, "503")],
                        open_after=["v1"], unflat={"BTC": Decimal("1")})
    out, err = io.StringIO(), io.StringIO()
    assert print_kill_report(report, Console(file=out, width=200), Console(file=err, width=200)) == EXIT_REFUSED
    assert "FAILED cancel_all: 503" in out.getvalue() and "kill NOT confirmed" in err.getvalue() and "v1" in err.getvalue()
    report.confirmed = True
    assert print_kill_report(report, Console(file=out, width=200), Console(file=err, width=200)) == 0
    assert "kill confirmed" in out.getvalue()


def test_kill_now_cli_in_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``cryptoj kill --now`` through the typer app in this process, the simulator on its own loop in a thread."""
    import threading

    from cryptoj.venues.simulated.server import SimConfig, SimulatorServer

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    sim = SimulatorServer(SimConfig(market_rate=0.0, create_api_key=tmp_path / "key.json", private_rate_limit=10_000,
                                    public_rate_limit=10_000))
    asyncio.run_coroutine_threadsafe(sim.start(), loop).result(30)
    try:
        for name in list(os.environ):
            if name.startswith("CRYPTOJ_"):
                monkeypatch.delenv(name)
        for key, value in _env(tmp_path, CRYPTOJ_MODE="sim", CRYPTOJ_EXCHANGE__REST_BASE_URL=sim.base_url,
                               CRYPTOJ_EXCHANGE__KEY_FILE=str(sim.key_file)).items():
            if key.startswith("CRYPTOJ_"):
                monkeypatch.setenv(key, value)
        result = CliRunner().invoke(app, ["kill", "--now", "--reason", "nothing open"])
        assert result.exit_code == 0, result.output
        assert "ok cancel_all" in result.output and "kill confirmed" in result.output
        state, kinds = asyncio.run(_state(tmp_path))
        assert state == "HALTED" and kinds[-1] == "emergency.report"
        monkeypatch.setenv("CRYPTOJ_STORAGE__URL", f"sqlite+aiosqlite:///{tmp_path / 'KILL-dir' / 'x.db'}")
        (tmp_path / "KILL-dir").write_text("a file where a directory should be")
        result = CliRunner().invoke(app, ["kill", "--now"])
        assert result.exit_code == 3 and "kill failed" in result.output
    finally:
        asyncio.run_coroutine_threadsafe(sim.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
