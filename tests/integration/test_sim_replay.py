"""``cryptoj sim --replay``: a recording re-enacted as the simulator's market, over 127.0.0.1.

Record simulator A (its market driven while recording), replay the file on simulator B, and B's own
book (``GET /sim/admin/book``) — and our MarketDataService's book fed from B's WebSocket — equal A's.
Every wait is on a condition with a generous deadline.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path

import aiohttp
import orjson
import pytest

from cryptoj.errors import ConfigError
from cryptoj.market_data import MarketDataConfig, MarketDataService
from cryptoj.model.candles import Timeframe
from cryptoj.recorder import RecordingWriter, record
from cryptoj.venues.coinbase.protocol import parse_envelope
from cryptoj.venues.simulated.replay import ReplayFeed, ReplayStep
from cryptoj.venues.simulated.server import SimConfig, SimulatorServer
from cryptoj.websocket_handler import WebSocketHandler, WsFrame, WsItem

pytestmark = pytest.mark.integration

PRODUCTS = ("BTC-USD", "ETH-USD")
DEADLINE_S = 60.0
REPO = Path(__file__).resolve().parents[2]
MakeSim = Callable[..., Awaitable[SimulatorServer]]
Levels = list[tuple[Decimal, Decimal]]


def _book(sim: SimulatorServer, pid: str) -> tuple[Levels, Levels]:
    body = sim.admin.book(pid)
    return [(Decimal(p), Decimal(s)) for p, s in body["bids"]], [(Decimal(p), Decimal(s)) for p, s in body["asks"]]


async def _record_session(sim: SimulatorServer, out: Path) -> None:
    """Record ``sim`` while its market moves; stop once the last change is in the file (marker level)."""
    items: list[WsItem] = []
    arrived = asyncio.Event()

    def on_item(item: WsItem) -> None:
        items.append(item)
        arrived.set()

    async def wait_for(needle: str) -> None:
        async with asyncio.timeout(DEADLINE_S):
            while not any(isinstance(i, WsFrame) and needle in str(i.data) for i in items):
                arrived.clear()
                await arrived.wait()

    stop = asyncio.Event()
    task = asyncio.ensure_future(record(sim.ws_url, PRODUCTS, out, stop=stop, channels=("level2",), on_item=on_item))
    await wait_for('"type":"snapshot","product_id":"ETH-USD"')
    for _ in range(4):
        sim.admin.step(25)
    sim.admin.place("sim-admin", {"product_id": "BTC-USD", "side": "BUY",
                                  "order_configuration": {"limit_limit_gtc": {"base_size": "1", "limit_price": "2.34"}}})
    await wait_for('"price_level":"2.34"')
    stop.set()
    async with asyncio.timeout(DEADLINE_S):
        await task


async def test_replayed_books_equal_the_recorded_simulators_books(make_sim: MakeSim, tmp_path: Path) -> None:
    source = await make_sim(products=list(PRODUCTS), seed=4)
    out = tmp_path / "session.jsonl.gz"
    await _record_session(source, out)

    replayed = await make_sim(products=list(PRODUCTS), replay=out, speed=1000.0, seed=99)
    feed = replayed.replay_feed
    assert isinstance(feed, ReplayFeed)
    async with asyncio.timeout(DEADLINE_S):
        await feed.finished.wait()
    assert feed.skipped_levels == 0 and feed.applied == len(feed.steps) > 2
    for pid in PRODUCTS:
        assert _book(replayed, pid) == _book(source, pid), pid
    assert replayed.admin.status()["replay"] is True

    # a client of the replaying simulator sees the same book through the protocol
    handler = WebSocketHandler(replayed.ws_url, {"level2": list(PRODUCTS)}, heartbeat_interval=1.0)
    config = MarketDataConfig(products=PRODUCTS, candle_timeframes=(Timeframe.ONE_MINUTE,))
    service = MarketDataService(config, parse=parse_envelope)
    handler.start()
    service.start(handler)
    try:
        async with asyncio.timeout(DEADLINE_S):
            while not all(
                (b := service.book(pid)) is not None and (b.bids(), b.asks()) == _book(source, pid) for pid in PRODUCTS
            ):
                await asyncio.sleep(0.02)
    finally:
        await service.close()
        await handler.close()

    # the user's orders trade against the recorded liquidity
    best_ask = _book(replayed, "ETH-USD")[1][0]
    order = replayed.admin.place("user", {"product_id": "ETH-USD", "side": "BUY", "client_order_id": "replay-buy",
                                          "order_configuration": {"market_market_ioc": {"base_size": "0.001"}}})
    fills = [f for f in replayed.admin.fills("user") if f.order_id == order.order_id]
    assert [(f.price, f.size) for f in fills] == [(best_ask[0], Decimal("0.001"))]
    assert _book(replayed, "ETH-USD")[1][0] == (best_ask[0], best_ask[1] - Decimal("0.001"))


async def _write(path: Path, frames: list[tuple[int, str]]) -> Path:
    async with RecordingWriter(path) as writer:
        await writer.write_connected(1, frames[0][0] if frames else 0)
        for ts, frame in frames:
            await writer.write_frame(frame, ts)
    return path


def _l2(seq: int, kind: str, pid: str, *levels: tuple[str, str, str]) -> str:
    updates = [{"side": s, "event_time": "2026-04-07T14:30:01Z", "price_level": p, "new_quantity": q} for s, p, q in levels]
    return orjson.dumps({"channel": "l2_data", "client_id": "", "timestamp": "2026-04-07T14:30:01Z", "sequence_num": seq,
                         "events": [{"type": kind, "product_id": pid, "updates": updates}]}).decode()


async def test_replay_applies_updates_at_their_pace_and_skips_levels_off_the_grid(make_sim: MakeSim, tmp_path: Path) -> None:
    second = 1_000_000_000
    path = await _write(tmp_path / "small.jsonl.gz", [
        (10 * second, _l2(0, "snapshot", "BTC-USD", ("bid", "100.00", "1"), ("offer", "101.00", "2"))),
        (10 * second, '{"channel":"l2_data","sequence_num":1,"events":"broken"}'),  # refused by the parser: skipped
        (10 * second, '{"channel":"heartbeats","sequence_num":2,"events":[{"heartbeat_counter":1}]}'),
        (11 * second, _l2(3, "update", "BTC-USD", ("bid", "100.00", "0"), ("bid", "99.50", "3"), ("bid", "99.505", "1"))),
        (12 * second, _l2(4, "update", "ETH-USD", ("bid", "5.00", "1"))),  # not a product of this simulator
        (12 * second, _l2(5, "update", "BTC-USD", ("offer", "101.00", "0.5"), ("offer", "102.00", "1"),
                          ("offer", "102.00", "4"), ("offer", "103.00", "1"), ("offer", "103.00", "0"))),
        (13 * second, _l2(0, "snapshot", "BTC-USD", ("bid", "98.00", "1"), ("offer", "104.00", "2"))),  # a reconnect
    ])
    sim = await make_sim(products=["BTC-USD"], replay=path, speed=20.0)
    feed = sim.replay_feed
    assert isinstance(feed, ReplayFeed)
    assert [(s.ts_ns, s.snapshot) for s in feed.steps] == [
        (10 * second, True), (11 * second, False), (12 * second, False), (13 * second, True),
    ]
    states: list[tuple[Levels, Levels]] = []
    real_apply = feed.apply

    def apply_and_capture(step: ReplayStep) -> None:
        real_apply(step)
        states.append(_book(sim, "BTC-USD"))

    feed.apply = apply_and_capture  # type: ignore[method-assign]
    async with asyncio.timeout(DEADLINE_S):
        await feed.finished.wait()
    assert feed.skipped_levels == 1  # 99.505 is not on BTC-USD's 0.01 price grid
    assert states[2] == (
        [(Decimal("99.50"), Decimal("3"))],
        [(Decimal("101.00"), Decimal("0.5")), (Decimal("102.00"), Decimal("4"))],
    )
    # the second snapshot replaced every level
    assert states[3] == _book(sim, "BTC-USD") == ([(Decimal("98.00"), Decimal("1"))], [(Decimal("104.00"), Decimal("2"))])


@pytest.mark.parametrize(
    ("frames", "fragment"),
    [
        ([], "has no level2 data for BTC-USD"),
        ([(1, '{"channel":"heartbeats","sequence_num":0,"events":[{"heartbeat_counter":1}]}')], "has no level2 data"),
        ([(1, _l2(0, "update", "BTC-USD", ("bid", "1.00", "1")))], "the first level2 message of BTC-USD is not a snapshot"),
    ],
)
async def test_unusable_recordings_are_refused_naming_the_flag(
    tmp_path: Path, frames: list[tuple[int, str]], fragment: str
) -> None:
    path = await _write(tmp_path / "bad.jsonl.gz", frames)
    sim = SimulatorServer(SimConfig(products=["BTC-USD"], replay=path, market_rate=0.0))
    with pytest.raises(ConfigError) as info:
        ReplayFeed.load(path, sim)
    assert info.value.problems[0][0] == "--replay" and fragment in str(info.value)


async def test_missing_and_corrupt_recordings_are_refused(tmp_path: Path) -> None:
    sim = SimulatorServer(SimConfig(products=["BTC-USD"], market_rate=0.0))
    with pytest.raises(ConfigError, match="does not exist"):
        ReplayFeed.load(tmp_path / "nope.jsonl.gz", sim)
    corrupt = tmp_path / "corrupt.jsonl.gz"
    corrupt.write_bytes(b"this is not gzip")
    with pytest.raises(ConfigError, match="cannot read recording"):
        ReplayFeed.load(corrupt, sim)


async def test_cli_replays_a_recording_as_a_subprocess(make_sim: MakeSim, tmp_path: Path) -> None:
    source = await make_sim(products=list(PRODUCTS), seed=8)
    out = tmp_path / "cli.jsonl.gz"
    await _record_session(source, out)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cryptoj", "sim", "--port", "0", "--products", "BTC-USD,ETH-USD", "--replay", str(out),
        "--speed", "1000", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(DEADLINE_S):
            line = (await proc.stdout.readline()).decode().strip()
        match = re.fullmatch(r"listening on http://127\.0\.0\.1:(\d+)", line)
        assert match, line
        base = f"http://127.0.0.1:{match.group(1)}"
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base}/sim/admin/status") as resp:
                assert (await resp.json())["replay"] is True
            want = _book(source, "BTC-USD")
            async with asyncio.timeout(DEADLINE_S):
                while True:
                    async with session.get(f"{base}/sim/admin/book", params={"product_id": "BTC-USD"}) as resp:
                        body = await resp.json()
                    got = (
                        [(Decimal(p), Decimal(s)) for p, s in body["bids"]],
                        [(Decimal(p), Decimal(s)) for p, s in body["asks"]],
                    )
                    if got == want:
                        break
                    await asyncio.sleep(0.05)
    finally:
        if proc.returncode is None:
            proc.terminate()
    async with asyncio.timeout(DEADLINE_S):
        _, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()[-2000:]
