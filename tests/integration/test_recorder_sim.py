"""Recording the simulator's real frames, then replaying them through the service.

* ``record()`` in-process with market events driven while it records: the replayed books equal
  the simulator's own books, read through ``GET /sim/admin/book``, level for level.
* ``cryptoj record`` through typer's CliRunner (the simulator runs on its own loop in a thread).
* ``cryptoj record`` as a subprocess against a simulator with background flow: real frames with
  receive timestamps, and the replayed books equal the last snapshot plus the updates after it.

Every wait is on a condition with a generous deadline; nothing sleeps for a fixed time.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import os
import sys
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from decimal import Decimal
from pathlib import Path

import aiohttp
import orjson
import pytest
import structlog
from typer.testing import CliRunner

from cryptoj.cli import app
from cryptoj.market_data import BookResync, MarketDataConfig, MarketDataService
from cryptoj.model.candles import Timeframe
from cryptoj.recorder import iter_recording, read_recording, record, replay
from cryptoj.venues.coinbase.protocol import parse_envelope
from cryptoj.venues.simulated.server import SimConfig, SimulatorServer
from cryptoj.websocket_handler import WsConnected, WsDisconnected, WsFrame, WsItem

pytestmark = pytest.mark.integration

PRODUCTS = ("BTC-USD", "ETH-USD")
DEADLINE_S = 60.0
REPO = Path(__file__).resolve().parents[2]
MakeSim = Callable[..., Awaitable[SimulatorServer]]
Levels = list[tuple[Decimal, Decimal]]


@pytest.fixture
def runner() -> Iterator[CliRunner]:
    yield CliRunner()
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_cryptoj_handler", False)]:
        root.removeHandler(handler)
    root.setLevel(logging.WARNING)
    structlog.reset_defaults()


def _service() -> MarketDataService:
    return MarketDataService(
        MarketDataConfig(products=PRODUCTS, candle_timeframes=(Timeframe.ONE_MINUTE,)), parse=parse_envelope
    )


def _admin_book_sync(base_url: str, pid: str) -> tuple[Levels, Levels]:
    with urllib.request.urlopen(f"{base_url}/sim/admin/book?product_id={pid}", timeout=30) as resp:
        body = orjson.loads(resp.read())
    return [(Decimal(p), Decimal(s)) for p, s in body["bids"]], [(Decimal(p), Decimal(s)) for p, s in body["asks"]]


async def _admin_book(session: aiohttp.ClientSession, base_url: str, pid: str) -> tuple[Levels, Levels]:
    async with session.get(f"{base_url}/sim/admin/book", params={"product_id": pid}) as resp:
        assert resp.status == 200, await resp.text()
        body = await resp.json()
    return [(Decimal(p), Decimal(s)) for p, s in body["bids"]], [(Decimal(p), Decimal(s)) for p, s in body["asks"]]


def _replayed_books(path: Path) -> tuple[MarketDataService, dict[str, tuple[Levels, Levels]]]:
    service = _service()
    frames = replay(path, service.process_item)
    assert frames > 0
    books: dict[str, tuple[Levels, Levels]] = {}
    for pid in PRODUCTS:
        book = service.book(pid)
        assert book is not None, f"{pid}: replayed book is not valid ({service.stats})"
        books[pid] = (book.bids(), book.asks())
    return service, books


def _rebuild_from_last_snapshot(path: Path) -> dict[str, tuple[Levels, Levels]]:
    """An independent reading of the recording: the last l2 snapshot per product plus every update after it."""
    sides: dict[str, dict[str, dict[Decimal, Decimal]]] = {}
    for _, payload in iter_recording(path):
        if isinstance(payload, int):
            continue
        msg = orjson.loads(payload)
        if msg.get("channel") != "l2_data":
            continue
        for event in msg["events"]:
            if event["type"] == "snapshot":
                sides[event["product_id"]] = {"bid": {}, "offer": {}}
            levels = sides[event["product_id"]]
            for u in event["updates"]:
                price, qty = Decimal(u["price_level"]), Decimal(u["new_quantity"])
                if qty == 0:
                    levels[u["side"]].pop(price, None)
                else:
                    levels[u["side"]][price] = qty
    return {
        pid: (sorted(s["bid"].items(), reverse=True), sorted(s["offer"].items()))
        for pid, s in sides.items()
    }


def _check_timestamps(path: Path, started_ns: int, ended_ns: int) -> list[dict[str, object]]:
    """Every line carries a receive time inside the run, in file order; returns the parsed frames."""
    last = 0
    messages: list[dict[str, object]] = []
    for ts_ns, payload in iter_recording(path):
        assert started_ns <= ts_ns <= ended_ns
        assert ts_ns >= last
        last = ts_ns
        if isinstance(payload, str):
            messages.append(orjson.loads(payload))
    return messages


async def test_record_then_replay_equals_the_simulators_books(make_sim: MakeSim, tmp_path: Path) -> None:
    sim = await make_sim(products=list(PRODUCTS), heartbeat_interval=0.2)
    out = tmp_path / "session.jsonl.gz"
    items: list[WsItem] = []
    arrived = asyncio.Event()

    def on_item(item: WsItem) -> None:
        items.append(item)
        arrived.set()

    async def wait_for(predicate: Callable[[], bool]) -> None:
        async with asyncio.timeout(DEADLINE_S):
            while not predicate():
                arrived.clear()
                await arrived.wait()

    def frames_with(*needles: str) -> list[WsFrame]:
        return [i for i in items if isinstance(i, WsFrame) and all(n in str(i.data) for n in needles)]

    started = time.time_ns()
    stop = asyncio.Event()
    # a generous stall limit (2 x 5 s): on a loaded machine a 0.4 s pause must not turn into a reconnect here
    task = asyncio.ensure_future(record(sim.ws_url, PRODUCTS, out, stop=stop, heartbeat_interval=5.0, on_item=on_item))
    await wait_for(
        lambda: all(frames_with('"l2_data"', '"snapshot"', f'"{pid}"') for pid in PRODUCTS)
        and bool(frames_with('"channel":"heartbeats"'))
    )
    # market events while recording: maker re-quotes and taker trades change both books
    for _ in range(5):
        sim.admin.step(40)
    marker_price = "1.23"
    order = sim.admin.place(
        "sim-admin",
        {"product_id": "BTC-USD", "side": "BUY",
         "order_configuration": {"limit_limit_gtc": {"base_size": "1", "limit_price": marker_price}}},
    )
    assert order.order_id
    # the marker level is the last thing the simulator published, so once it is recorded everything before it is too
    await wait_for(lambda: bool(frames_with('"l2_data"', '"update"', f'"price_level":"{marker_price}"')))
    stop.set()
    async with asyncio.timeout(DEADLINE_S):
        written = await task
    ended = time.time_ns()

    assert written == len([i for i in items if isinstance(i, WsFrame)])
    assert isinstance(items[0], WsConnected) and items[0].connection_id == 1
    messages = _check_timestamps(out, started, ended)
    channels = {m["channel"] for m in messages}
    assert {"l2_data", "heartbeats", "market_trades", "ticker", "subscriptions"} <= channels
    l2_updates = [m for m in messages if m["channel"] == "l2_data" and m["events"][0]["type"] == "update"]  # type: ignore[index]
    assert len(l2_updates) >= 5  # the steps really produced book updates

    # the file holds what the handler delivered, frame for frame
    assert [i for i in read_recording(out) if isinstance(i, WsFrame)] == [
        WsFrame(i.data, i.recv_ns, i.connection_id, i.seq) for i in items if isinstance(i, WsFrame)
    ]

    service, books = _replayed_books(out)
    assert service.stats.gaps == 0 and service.stats.malformed == 0 and service.stats.resyncs == 0
    async with aiohttp.ClientSession() as session:
        for pid in PRODUCTS:
            truth = await _admin_book(session, sim.base_url, pid)
            assert books[pid] == truth, pid
            assert len(truth[0]) >= 50 and len(truth[1]) >= 50
    assert (Decimal(marker_price), Decimal(1)) in books["BTC-USD"][0]
    assert books == _rebuild_from_last_snapshot(out)


async def test_recording_across_dropped_connections_replays_to_valid_books(make_sim: MakeSim, tmp_path: Path) -> None:
    """The simulator drops every connection after 25 messages; the recorder reconnects and keeps recording."""
    sim = await make_sim(products=list(PRODUCTS), market_rate=40.0, heartbeat_interval=0.2, faults={"ws_drop_after": 25})
    out = tmp_path / "drops.jsonl.gz"
    items: list[WsItem] = []
    async with asyncio.timeout(DEADLINE_S):
        written = await record(sim.ws_url, PRODUCTS, out, max_frames=70, heartbeat_interval=5.0, on_item=items.append)
    assert written == 70
    connects = [i for i in items if isinstance(i, WsConnected)]
    assert [c.connection_id for c in connects] == [1, 2, 3]
    assert [c.reconnect for c in connects] == [False, True, True]
    assert sum(isinstance(i, WsDisconnected) for i in items) == 2
    replayed = read_recording(out)
    assert [i for i in replayed if isinstance(i, WsConnected)] == connects
    assert [i.connection_id for i in replayed if isinstance(i, WsDisconnected)] == [1, 2]
    # per connection the frames are numbered without a hole; each connection starts with fresh snapshots
    frames_by_conn: dict[int, list[WsFrame]] = {}
    for i in replayed:
        if isinstance(i, WsFrame):
            frames_by_conn.setdefault(i.connection_id, []).append(i)
    assert [len(f) for f in frames_by_conn.values()] == [25, 25, 20]
    for frames in frames_by_conn.values():
        seqs = [f.seq for f in frames]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    service = _service()
    resyncs: list[object] = []
    sub = service.subscribe([BookResync])
    replay(out, service.process_item)
    while (event := sub.get_nowait()) is not None:
        resyncs.append(event)
    assert service.stats.gaps == 0
    # both books were voided at each of the two drops and rebuilt from the new connection's snapshots
    assert sorted((e.product_id, e.reason) for e in resyncs) == sorted(  # type: ignore[attr-defined]
        (pid, f"disconnected: recording: connection {n} ended") for pid in PRODUCTS for n in (1, 2)
    )
    for pid in PRODUCTS:
        assert service.book(pid) is not None
    assert {pid: (b.bids(), b.asks()) for pid in PRODUCTS if (b := service.book(pid)) is not None} == (
        _rebuild_from_last_snapshot(out)
    )


class _ThreadedSim:
    """A simulator on its own event loop in a thread, for driving the CLI (which runs its own loop) in this process."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.server: SimulatorServer | None = None
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._stop: asyncio.Event | None = None
        self.error: BaseException | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main())
        self._loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        try:
            async with SimulatorServer(self.config) as server:
                self.server = server
                self._ready.set()
                await self._stop.wait()
        except BaseException as exc:  # surfaced by start()
            self.error = exc
            self._ready.set()

    def start(self) -> SimulatorServer:
        self._thread.start()
        assert self._ready.wait(DEADLINE_S)
        if self.error is not None:
            raise self.error
        assert self.server is not None
        return self.server

    def stop(self) -> None:
        if self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(DEADLINE_S)


@pytest.fixture
def threaded_sim(tmp_path: Path) -> Iterator[SimulatorServer]:
    sim = _ThreadedSim(SimConfig(products=list(PRODUCTS), market_rate=0.0, seed=21, create_api_key=tmp_path / "k.json"))
    server = sim.start()
    # some market events before recording (through the admin API); the book then stays still (no background flow)
    request = urllib.request.Request(f"{server.base_url}/sim/admin/market/step", data=b'{"n": 60}', method="POST")
    with urllib.request.urlopen(request, timeout=30) as resp:
        assert orjson.loads(resp.read())["steps"] >= 60
    try:
        yield server
    finally:
        sim.stop()


def test_record_command_in_process_records_the_simulators_books(
    runner: CliRunner, threaded_sim: SimulatorServer, tmp_path: Path
) -> None:
    out = tmp_path / "cli.jsonl.gz"
    started = time.time_ns()
    result = runner.invoke(
        app,
        ["record", "--products", "BTC-USD", "-p", "ETH-USD,BTC-USD", "--out", str(out), "--duration", "3",
         "--ws-url", threaded_sim.ws_url, "--channels", "level2,ticker"],
    )
    ended = time.time_ns()
    assert result.exit_code == 0, result.output
    frames = sum(1 for _, payload in iter_recording(out) if isinstance(payload, str))
    assert f"recorded {frames} frames to {out}" in result.stdout
    messages = _check_timestamps(out, started, ended)
    assert {m["channel"] for m in messages} >= {"l2_data", "ticker", "subscriptions"}
    assert "market_trades" not in {m["channel"] for m in messages}  # --channels was honoured
    _, books = _replayed_books(out)
    for pid in PRODUCTS:
        assert books[pid] == _admin_book_sync(threaded_sim.base_url, pid), pid


async def _run_record_process(*args: str) -> tuple[asyncio.subprocess.Process, bytes, bytes]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cryptoj", "record", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    async with asyncio.timeout(DEADLINE_S):
        out, err = await proc.communicate()
    return proc, out, err


@pytest.fixture
async def flowing_sim(make_sim: MakeSim) -> AsyncIterator[SimulatorServer]:
    yield await make_sim(products=list(PRODUCTS), market_rate=40.0, heartbeat_interval=0.2)


async def test_record_subprocess_records_real_frames_with_receive_timestamps(
    flowing_sim: SimulatorServer, tmp_path: Path
) -> None:
    out = tmp_path / "sub.jsonl.gz"
    started = time.time_ns()
    proc, stdout, stderr = await _run_record_process(
        "--products", "BTC-USD,ETH-USD", "--out", str(out), "--duration", "3", "--ws-url", flowing_sim.ws_url,
    )
    ended = time.time_ns()
    assert proc.returncode == 0, stderr.decode()[-2000:]
    frames = sum(1 for _, payload in iter_recording(out) if isinstance(payload, str))
    assert stdout.decode().strip() == f"recorded {frames} frames to {out}"
    with gzip.open(out, "rb") as fh:
        first = orjson.loads(fh.readline())
    assert first["connected"] == 1
    messages = _check_timestamps(out, started, ended)
    by_channel: dict[object, int] = {}
    for m in messages:
        by_channel[m["channel"]] = by_channel.get(m["channel"], 0) + 1
    assert by_channel.get("l2_data", 0) > len(PRODUCTS)  # snapshots and then updates from the flowing market
    assert by_channel.get("heartbeats", 0) >= 1
    assert by_channel.get("market_trades", 0) >= 1 and by_channel.get("ticker", 0) >= 1
    # no frame lost between socket and file: per connection the sequence numbers have no hole
    by_connection: dict[int, list[int]] = {}
    for item in read_recording(out):
        if isinstance(item, WsFrame) and item.seq is not None:
            by_connection.setdefault(item.connection_id, []).append(item.seq)
    assert by_connection
    for seqs in by_connection.values():
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    service, books = _replayed_books(out)
    assert service.stats.gaps == 0 and service.stats.malformed == 0
    assert service.stats.level_updates > 0
    assert books == _rebuild_from_last_snapshot(out)


async def test_record_subprocess_stops_cleanly_on_sigterm(flowing_sim: SimulatorServer, tmp_path: Path) -> None:
    out = tmp_path / "term.jsonl.gz"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cryptoj", "record", "-p", "BTC-USD", "-o", str(out), "--ws-url", flowing_sim.ws_url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPO,
    )
    # wait until the recorder's connection is there, then ask it to stop
    async with asyncio.timeout(DEADLINE_S):
        while flowing_sim.admin.status()["connections"] < 1:
            await asyncio.sleep(0.02)
    proc.terminate()
    async with asyncio.timeout(DEADLINE_S):
        stdout, stderr = await proc.communicate()
    assert proc.returncode == 0, stderr.decode()[-2000:]
    frames = sum(1 for _, payload in iter_recording(out) if isinstance(payload, str))  # a complete gzip stream
    assert stdout.decode().strip() == f"recorded {frames} frames to {out}"
