"""A running demo-style engine (real simulator, real Runtime, BookReversion) with its operator API, and a webhook receiver."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from aiohttp import web

from cryptoj.api.engine_view import ServedOperatorApi, serve_operator_api
from cryptoj.config import AlertsConfig, ApiConfig, EmergencyConfig
from cryptoj.demo import BookReversion
from cryptoj.model.money import Side
from cryptoj.model.orders import OrderKind, OrderSpec, TimeInForce
from cryptoj.trading_core import Runtime
from cryptoj.venues.simulated.server import USER_ACCOUNT, SimulatorServer
from tests.engine_fixtures import sim_config, started

MakeSim = Callable[..., Awaitable[SimulatorServer]]


@dataclass
class Receiver:
    """A local webhook receiver on 127.0.0.1 recording every JSON body it is sent."""

    url: str = ""
    bodies: list[dict[str, Any]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    fail_first: int = 0
    calls: int = 0


@asynccontextmanager
async def webhook_receiver(fail_first: int = 0) -> AsyncIterator[Receiver]:
    rec = Receiver(fail_first=fail_first)

    async def hook(request: web.Request) -> web.Response:
        rec.calls += 1
        if request.path.endswith("/refuse"):
            return web.Response(status=400, text="bad body")
        if rec.calls <= rec.fail_first:
            return web.Response(status=503, text="try later")
        rec.paths.append(request.path)
        rec.bodies.append(await request.json())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/{tail:.*}", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    rec.url = f"http://127.0.0.1:{port}/hook"
    try:
        yield rec
    finally:
        await runner.cleanup()


@dataclass
class Stack:
    sim: SimulatorServer
    runtime: Runtime
    api: ServedOperatorApi
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def sim_open_orders(self) -> list[Any]:
        return [o for o in self.sim.admin.orders(USER_ACCOUNT) if o.status.value == "OPEN"]

    def rest_far_below(self, pid: str = "BTC-USD", size: str = "0.001", fraction: str = "0.5") -> str:
        """Submit a resting limit buy far below the market through the engine (risk, order manager, REST)."""
        engine = self.runtime.engine
        mid = engine.mid_price(pid)
        assert mid is not None
        product = engine.products[pid]
        price = product.round_price(mid * Decimal(fraction), Side.BUY)
        spec = OrderSpec(engine.new_client_order_id(), pid, Side.BUY, OrderKind.LIMIT, base_size=Decimal(size), limit_price=price,
                         time_in_force=TimeInForce.GTC)
        return engine.submit(spec)


@asynccontextmanager
async def operator_stack(
    make_sim: MakeSim, tmp_path: Path, *, webhook: str | None = None, market_rate: float = 25.0,
    strategy_params: dict[str, Any] | None = None, alerts: dict[str, Any] | None = None,
    emergency: dict[str, Any] | None = None,
) -> AsyncIterator[Stack]:
    sim = await make_sim(market_rate=market_rate, seed=7, balances={"USD": Decimal(10000)})
    alert_settings: dict[str, Any] = {"backoff_seconds": 0.05, "kill_outcome_wait_seconds": 60, **(alerts or {})}
    alerts_config = AlertsConfig(webhook_urls=[webhook] if webhook else [], **alert_settings)
    emergency_config = EmergencyConfig(**{"price_move_fraction": None, "poll_interval_seconds": 0.2, **(emergency or {})})
    config = sim_config(sim, tmp_path, alerts=alerts_config, api=ApiConfig(port=0), emergency=emergency_config)
    params = {"order_size": "0.001", "lookback": 5, "entry_bps": "0.5", "take_profit_bps": "3", "stop_bps": "5", "max_hold_s": 3}
    params.update(strategy_params or {})
    strategy = BookReversion(params, products=list(config.products))
    runtime = await started(sim, config, [strategy])
    try:
        async with serve_operator_api(runtime, config, out=_Sink()) as api:
            token = (tmp_path / "api_token").read_text().strip()
            yield Stack(sim, runtime, api, token)
    finally:
        await runtime.close()


class _Sink:
    """Collects what serve_operator_api prints (the token announcement)."""

    def __init__(self) -> None:
        self.text = ""

    def write(self, s: str) -> int:
        self.text += s
        return len(s)

    def flush(self) -> None:
        return None


async def until(predicate: Callable[[], Any], what: str, timeout: float = 30.0) -> None:
    """Poll ``predicate`` (sync or async) until truthy; fail naming ``what`` after a generous deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for: {what}")
        await asyncio.sleep(0.05)
