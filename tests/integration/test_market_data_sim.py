"""MarketDataService + WebSocketHandler against the simulator over loopback, with injected faults.

After every fault the top-50 levels of our books must equal the simulator's own book,
read through its admin endpoint (``GET /sim/admin/book``).
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from structlog.testing import capture_logs

from cryptoj.market_data import BookReady, BookResync, MarketDataConfig, MarketDataService, rest_candle_fetcher
from cryptoj.model.candles import Timeframe
from cryptoj.venues.coinbase.protocol import parse_envelope
from cryptoj.venues.coinbase.rest import CoinbaseRestClient
from cryptoj.venues.simulated.server import SimulatorServer
from cryptoj.websocket_handler import WebSocketHandler, WsDisconnected

pytestmark = pytest.mark.integration

PRODUCTS = ("BTC-USD", "ETH-USD")
DEADLINE = 30.0
HEARTBEAT = 0.2
TOP = 50

MakeSim = Callable[..., Awaitable[SimulatorServer]]


@dataclass
class Rig:
    sim: SimulatorServer
    handler: WebSocketHandler
    service: MarketDataService
    http: aiohttp.ClientSession

    async def admin_book(self, pid: str) -> tuple[list[tuple[Decimal, Decimal]], list[tuple[Decimal, Decimal]]]:
        async with self.http.get(f"{self.sim.base_url}/sim/admin/book", params={"product_id": pid, "limit": str(TOP)}) as resp:
            assert resp.status == 200, await resp.text()
            body = await resp.json()
        return (
            [(Decimal(p), Decimal(s)) for p, s in body["bids"]],
            [(Decimal(p), Decimal(s)) for p, s in body["asks"]],
        )

    async def set_faults(self, **faults: Any) -> None:
        async with self.http.post(f"{self.sim.base_url}/sim/admin/faults", json=faults) as resp:
            assert resp.status == 200, await resp.text()

    async def clear_faults(self) -> None:
        async with self.http.post(f"{self.sim.base_url}/sim/admin/faults/clear") as resp:
            assert resp.status == 200, await resp.text()

    async def step(self, n: int) -> None:
        async with self.http.post(f"{self.sim.base_url}/sim/admin/market/step", json={"n": n}) as resp:
            assert resp.status == 200, await resp.text()

    async def books_match(self) -> list[str]:
        """Products whose top-50 differs from the simulator's (empty when all match)."""
        wrong = []
        for pid in PRODUCTS:
            ours = self.service.depth(pid, TOP)
            if ours is None or ours != await self.admin_book(pid):
                wrong.append(pid)
        return wrong

    async def wait_books_match(self) -> None:
        """Wait (generous deadline) until every book is valid and equals the simulator's top 50."""
        wrong: list[str] = list(PRODUCTS)
        try:
            async with asyncio.timeout(DEADLINE):
                while wrong := await self.books_match():
                    await asyncio.sleep(0.02)
        except TimeoutError:
            pid = wrong[0]
            raise AssertionError(f"{pid}: ours={self.service.depth(pid, 5)} sim={await self.admin_book(pid)}") from None


async def until(predicate: Callable[[], bool]) -> None:
    async with asyncio.timeout(DEADLINE):
        while not predicate():
            await asyncio.sleep(0.01)


@pytest.fixture
async def rig(make_sim: MakeSim) -> AsyncIterator[Rig]:
    sim = await make_sim(heartbeat_interval=HEARTBEAT, products=list(PRODUCTS))
    async with await _rig(sim, sim.ws_url) as r:
        yield r


class _RigCtx:
    def __init__(self, rig: Rig) -> None:
        self.rig = rig

    async def __aenter__(self) -> Rig:
        self.rig.handler.start()
        self.rig.service.start(self.rig.handler)
        return self.rig

    async def __aexit__(self, *exc: object) -> None:
        await self.rig.service.close()
        await self.rig.handler.close()
        await self.rig.http.close()


async def _rig(sim: SimulatorServer, ws_url: str) -> _RigCtx:
    handler = WebSocketHandler(
        ws_url,
        {"level2": list(PRODUCTS), "market_trades": list(PRODUCTS)},
        heartbeat_interval=HEARTBEAT,
        backoff_base=0.02,
        backoff_cap=0.2,
        rng=random.Random(11),
    )
    service = MarketDataService(
        MarketDataConfig(products=PRODUCTS, resync_timeout_s=3.0, housekeeping_interval_s=0.05), parse=parse_envelope
    )
    return _RigCtx(Rig(sim, handler, service, aiohttp.ClientSession()))


class TestMarketDataAgainstSimulator:
    async def test_books_equal_simulator_top50_while_the_market_moves(self, rig: Rig) -> None:
        await rig.wait_books_match()
        for _ in range(5):
            await rig.step(40)
            await rig.wait_books_match()
        assert rig.service.stats.gaps == 0 and rig.service.stats.resyncs == 0
        assert rig.service.stats.level_updates > 0
        assert rig.service.trades("BTC-USD") or rig.service.trades("ETH-USD")

    async def test_dropped_connection_reconnects_resubscribes_and_book_is_exact(self, rig: Rig) -> None:
        sub = rig.service.subscribe([BookResync, BookReady])
        await rig.wait_books_match()
        sent_before = rig.handler.stats.messages
        await rig.set_faults(ws_drop_after=5)
        await rig.step(30)  # the simulator drops us after 5 more messages
        await until(lambda: rig.handler.stats.reconnects >= 1)
        await rig.clear_faults()
        await rig.step(30)
        await rig.wait_books_match()
        assert rig.handler.stats.messages > sent_before
        reasons = {e.reason for e in drain(sub) if isinstance(e, BookResync)}
        assert any(r.startswith("disconnected") for r in reasons), reasons
        # the new connection was subscribed to everything again
        assert rig.handler.subscriptions == {"heartbeats": [], "level2": list(PRODUCTS), "market_trades": list(PRODUCTS)}
        await rig.step(20)
        await rig.wait_books_match()

    async def test_skipped_sequence_numbers_resync_to_the_exact_book(self, rig: Rig) -> None:
        sub = rig.service.subscribe([BookResync, BookReady])
        await rig.wait_books_match()
        await rig.set_faults(ws_skip_seq_every=7)
        await rig.step(40)
        await until(lambda: rig.service.stats.gaps >= 1)
        await rig.clear_faults()
        await rig.step(40)
        await rig.wait_books_match()
        events = drain(sub)
        assert any(isinstance(e, BookResync) and e.reason == "sequence gap" for e in events)
        assert any(isinstance(e, BookReady) for e in events)
        assert rig.handler.stats.gaps >= 1  # the handler counts them for metrics too
        assert rig.handler.stats.reconnects == 0  # recovered by resubscribing, not reconnecting

    async def test_stalled_feed_is_detected_within_two_heartbeats_and_reconnected(self, rig: Rig) -> None:
        await rig.wait_books_match()
        disconnects = rig.service.subscribe([BookResync])
        assert rig.handler.stall_timeout == pytest.approx(2 * HEARTBEAT)
        await rig.set_faults(ws_stall_seconds=1.5)
        await until(lambda: rig.handler.stats.stalls >= 1)
        idle = rig.handler.stats.last_stall_idle_s
        assert idle is not None and idle >= rig.handler.stall_timeout
        print(f"stall detected after {idle:.3f}s of silence (limit {rig.handler.stall_timeout:.3f}s)")
        await until(lambda: rig.handler.stats.reconnects >= 1)
        await rig.step(30)
        await rig.wait_books_match()
        assert any(e.reason == "disconnected: stall" for e in drain(disconnects) if isinstance(e, BookResync))

    async def test_malformed_frames_are_logged_counted_and_the_stream_continues(self, make_sim: MakeSim) -> None:
        sim = await make_sim(heartbeat_interval=HEARTBEAT, products=list(PRODUCTS))
        proxy = GarblingProxy(sim.ws_url, every=5)
        await proxy.start()
        try:
            with capture_logs() as logs:
                async with await _rig(sim, proxy.url) as r:
                    await r.wait_books_match()
                    for _ in range(3):
                        await r.step(30)
                        await r.wait_books_match()
                    await until(lambda: r.service.stats.malformed >= 3)
                    assert r.service.stats.malformed == proxy.injected
                    assert r.service.stats.gaps == 0 and r.service.stats.resyncs == 0
        finally:
            await proxy.stop()
        counts = [e["count"] for e in logs if e["event"] == "market_data_malformed"]
        assert counts == list(range(1, len(counts) + 1)) and len(counts) >= 3

    async def test_backfill_from_simulator_rest_candles(self, make_sim: MakeSim) -> None:
        sim = await make_sim(products=list(PRODUCTS))
        async with CoinbaseRestClient(sim.base_url) as rest:
            service = MarketDataService(
                MarketDataConfig(
                    products=PRODUCTS, candle_timeframes=(Timeframe.ONE_HOUR, Timeframe.ONE_DAY), backfill_candles=48
                ),
                parse=parse_envelope,
                fetch_candles=rest_candle_fetcher(rest),
            )
            loaded = await service.backfill(datetime.fromtimestamp(sim.now(), UTC))
        hours = service.candles("BTC-USD", Timeframe.ONE_HOUR, include_current=True)
        assert loaded > 0 and 40 <= len(hours) <= 48
        assert all(b.start < a.start for b, a in itertools.pairwise(hours))
        assert service.last_price("BTC-USD") == hours[-1].close
        await service.close()


def drain(sub: Any) -> list[Any]:
    out = []
    while (e := sub.get_nowait()) is not None:
        out.append(e)
    return out


class GarblingProxy:
    """A WebSocket proxy on 127.0.0.1 that adds a malformed frame after every ``every`` real ones."""

    def __init__(self, upstream: str, every: int) -> None:
        self.upstream = upstream
        self.every = every
        self.injected = 0
        self.runner: web.AppRunner | None = None
        self.url = ""
        self.session = aiohttp.ClientSession()

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/ws", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"ws://127.0.0.1:{port}/ws"

    async def stop(self) -> None:
        assert self.runner is not None
        await self.runner.cleanup()
        await self.session.close()

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        client = web.WebSocketResponse()
        await client.prepare(request)
        async with self.session.ws_connect(self.upstream) as upstream:

            async def up() -> None:
                async for msg in client:
                    if msg.type is aiohttp.WSMsgType.TEXT:
                        await upstream.send_str(msg.data)

            task = asyncio.ensure_future(up())
            forwarded = 0
            try:
                async for msg in upstream:
                    if msg.type is not aiohttp.WSMsgType.TEXT or client.closed:
                        break
                    await client.send_str(msg.data)
                    forwarded += 1
                    if forwarded % self.every == 0:
                        self.injected += 1
                        await client.send_str('{"channel": "l2_da')  # truncated garbage, no sequence_num
            finally:
                task.cancel()
        return client


async def test_disconnect_notification_reaches_callbacks(make_sim: MakeSim) -> None:
    """The handler's disconnect notification is an in-band item the service sees before any new snapshot."""
    sim = await make_sim(heartbeat_interval=HEARTBEAT, products=["BTC-USD"])
    seen: list[str] = []

    async def on_disconnect(e: WsDisconnected) -> None:
        seen.append(e.reason)

    handler = WebSocketHandler(
        sim.ws_url,
        {"level2": ["BTC-USD"]},
        heartbeat_interval=HEARTBEAT,
        on_disconnect=on_disconnect,
        backoff_base=0.02,
        rng=random.Random(3),
    )
    async with handler:
        await asyncio.wait_for(handler.wait_connected(), DEADLINE)
        sim.admin.set_faults(ws_drop_after=1)
        sim.admin.step(5)
        await until(lambda: bool(seen))
    assert seen and "closed" in seen[0]
