"""Helpers for the engine's integration tests: configs pointed at a simulator, bar feeds, waiting on conditions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp

from cryptoj.config import ApiConfig, AppConfig, EmergencyConfig, EngineConfig, ExchangeConfig, PaperConfig, StorageConfig
from cryptoj.market_data import CandleClosed
from cryptoj.model.candles import Candle, Timeframe
from cryptoj.strategy import Strategy
from cryptoj.trading_core import Runtime, build_runtime
from cryptoj.venues.simulated.server import USER_ACCOUNT, SimulatorServer

DEADLINE = 20.0
PRODUCTS = ("BTC-USD", "ETH-USD")


async def wait_for(predicate: Callable[[], Any], what: str, timeout: float = DEADLINE) -> None:
    """Poll ``predicate`` until it is truthy; fail naming ``what`` after a generous deadline."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for: {what}")
        await asyncio.sleep(0.02)


def sim_config(
    sim: SimulatorServer,
    tmp_path: Path,
    *,
    mode: str = "sim",
    products: Sequence[str] = PRODUCTS,
    db_name: str = "engine.db",
    **sections: Any,
) -> AppConfig:
    """An AppConfig whose exchange is ``sim`` (REST, market WS, user WS, key file), storage in ``tmp_path``."""
    engine = sections.pop("engine", None) or EngineConfig(wait_for_books_seconds=10, equity_interval_seconds=0.2)
    emergency = sections.pop("emergency", None) or EmergencyConfig(price_move_fraction=None, poll_interval_seconds=0.2)
    return AppConfig(
        mode=mode,  # type: ignore[arg-type]
        products=list(products),
        exchange=ExchangeConfig(
            rest_base_url=sim.base_url, ws_market_url=sim.ws_url, ws_user_url=sim.ws_user_url, key_file=sim.key_file,
            public_rate_limit=1000, private_rate_limit=1000,
        ),
        storage=StorageConfig(url=f"sqlite+aiosqlite:///{tmp_path / db_name}", state_dir=tmp_path),
        engine=engine,
        emergency=emergency,
        paper=sections.pop("paper", None) or PaperConfig(),
        api=sections.pop("api", None) or ApiConfig(port=0),
        **sections,
    )


async def started(sim: SimulatorServer, config: AppConfig, strategies: Sequence[Strategy], *, mode: str | None = None,
                  confirm_live: bool = False) -> Runtime:
    in_process = sim if (mode or config.mode) == "sim" else None
    runtime = await build_runtime(config, mode=mode, strategies=strategies, simulator=in_process, confirm_live=confirm_live)
    await runtime.start()
    return runtime


def bars(closes: Iterable[str | Decimal], *, start: datetime | None = None, volume: str = "5") -> list[Candle]:
    """One-minute bars with the given closes (open = previous close), consecutive minutes."""
    t = start or datetime(2026, 1, 1, tzinfo=UTC)
    out: list[Candle] = []
    prev: Decimal | None = None
    for i, c in enumerate(closes):
        close = Decimal(c)
        open_ = prev if prev is not None else close
        out.append(Candle(t + timedelta(minutes=i), open_, max(open_, close), min(open_, close), close, Decimal(volume)))
        prev = close
    return out


def feed_bar(runtime: Runtime, product_id: str, candle: Candle, timeframe: Timeframe = Timeframe.ONE_MINUTE) -> None:
    """Hand one closed bar to the engine (time-compressed bar feed; orders still go to the venue for real)."""
    runtime.engine.dispatch(CandleClosed(product_id, timeframe, candle))


def sim_totals(sim: SimulatorServer, account: str = USER_ACCOUNT) -> dict[str, Decimal]:
    """available + hold per currency of ``account``, as the simulator's exchange holds it."""
    out = {}
    for currency, bal in sim.admin.balances().get(account, {}).items():
        out[currency] = Decimal(bal["available"]) + Decimal(bal["hold"])
    return out


def engine_totals(runtime: Runtime) -> dict[str, Decimal]:
    return {c: b.total for c, b in runtime.engine.portfolio.balances().items()}


async def admin_get(sim: SimulatorServer, path: str) -> Any:
    """GET the simulator's admin endpoint ``/sim/admin/<path>`` over loopback HTTP."""
    async with aiohttp.ClientSession() as session, session.get(f"{sim.base_url}/sim/admin/{path}") as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def admin_totals(sim: SimulatorServer, account: str = USER_ACCOUNT) -> dict[str, Decimal]:
    """available + hold per currency of ``account``, from ``GET /sim/admin/balances``."""
    balances = (await admin_get(sim, "balances")).get(account, {})
    return {c: Decimal(b["available"]) + Decimal(b["hold"]) for c, b in balances.items()}


async def admin_realised(sim: SimulatorServer, product_id: str) -> tuple[Decimal, Decimal, Decimal, int]:
    """``(net base bought, quote spent incl. fees, fees, fill count)`` from ``GET /sim/admin/fills``."""
    base = quote = fees = Decimal(0)
    count = 0
    for f in (await admin_get(sim, "fills"))["fills"]:
        if f["product_id"] != product_id:
            continue
        count += 1
        size, price, fee = Decimal(f["size"]), Decimal(f["price"]), Decimal(f["commission"])
        sign = 1 if f["side"] == "BUY" else -1
        base += sign * size
        quote += sign * price * size + fee
        fees += fee
    return base, quote, fees, count
