"""Tick-to-order latency in ``sim`` mode over loopback, with a bare aiohttp WebSocket echo as the floor.

The simulator runs as its own process (``cryptoj sim`` on a free loopback port), the
engine in this one. What is measured (same run):

* **tick → order written**: from the moment our ``WebSocketHandler`` read the market
  data frame (``WsFrame.recv_ns``) that last changed the book a strategy decided on,
  to the moment the ``POST /orders`` request for that decision was written to the socket
  (an aiohttp ``TraceConfig`` ``on_request_chunk_sent`` hook on the REST client's
  session; with ``--order-lane``, the REST client's own HTTP/1.1 lane calls
  ``on_order_written`` right after its one ``transport.write``). In between: market data parsing and the book update, the
  engine's dispatch to the strategy (``on_book`` on **every** book update), the
  strategy's decision, the order manager (rounding, the risk engine's pre-trade
  checks, the write-ahead to the order-intent journal), taking a pre-signed JWT and the
  HTTP write.
* **tick → decision**: the same start, to the strategy's ``on_book`` call that
  submits (the engine's share, without the order manager and the HTTP client).
* **floor**: the round trip of a bare aiohttp WebSocket echo over 127.0.0.1
  (client send → server echo → client receive), measured in the same run.

The probe strategy places a post-only buy far below the market (it never fills) on
every ``--every``-th book update, so the simulator is not flooded, and cancels its oldest
order beyond ``--max-open`` (like a quoting strategy replacing its quotes; 0 = never
cancel: the open orders then pile up and the risk engine's per-order checks, which walk
every open order, grow with them). Usage::

    python benchmarks/bench_latency.py [--seconds 10] [--rate 200] [--every 5] [--max-open 10] [--echo 5000]
        [--db-dirs disk,/dev/shm] [--order-lane]

Each run also prints a breakdown of ``decision -> order written``: the engine's hand-off
to the order manager, the order manager (rounding, risk checks, the intent write-ahead)
up to the venue call, and the venue/REST client (JWT, body, aiohttp write).
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import sys
import tempfile
import time
from collections import deque
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from cryptoj.config import AppConfig, EmergencyConfig, EngineConfig, ExchangeConfig, StorageConfig
from cryptoj.logging import configure_logging
from cryptoj.model.book import OrderBook
from cryptoj.model.money import Side
from cryptoj.strategy import Param, Strategy
from cryptoj.trading_core import build_runtime
from cryptoj.websocket_handler import WsFrame

PRODUCT = "BTC-USD"


class Probe(Strategy):
    """Reacts to every book update; every ``every``-th one sends a far-away post-only buy."""

    name = "latency_probe"
    params = (
        Param("every", int, 5, min=1),
        Param("max_open", int, 10, min=0),
        Param("size", Decimal, Decimal("0.0001"), min=Decimal(0)),
    )

    recv_by_seq: dict[int, int]
    decisions: dict[str, tuple[int, int]]

    def on_start(self) -> None:
        self.updates = 0
        self.live: deque[str] = deque()

    def on_book(self, product: str, book: OrderBook) -> None:
        self.updates += 1
        if self.updates % self.p.every:
            return
        best = book.best_bid()
        recv = self.recv_by_seq.get(book.sequence or -1)
        if best is None or recv is None:
            return
        decided = time.time_ns()
        price = self.product(product).round_price(best[0] * Decimal("0.5"), Side.BUY)
        coid = self.buy(product, self.p.size, price=price, post_only=True)
        self.decisions[coid] = (recv, decided)
        if self.p.max_open:
            self.live.append(coid)
            if len(self.live) > self.p.max_open:
                self.cancel(self.live.popleft())


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def line(name: str, values_us: list[float]) -> str:
    if not values_us:
        return f"{name:<28} no samples"
    return (f"{name:<28} n={len(values_us):>6}  p50={pct(values_us, 50):9.1f} µs  p99={pct(values_us, 99):9.1f} µs  "
            f"p99.9={pct(values_us, 99.9):9.1f} µs  mean={statistics.fmean(values_us):9.1f} µs")


async def echo_floor(n: int) -> list[float]:
    """Round trips of a bare aiohttp WebSocket echo on 127.0.0.1, in µs."""

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            await ws.send_str(msg.data)
        return ws

    app = web.Application()
    app.router.add_get("/echo", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    out: list[float] = []
    payload = orjson.dumps({"channel": "l2_data", "sequence_num": 1, "events": [{"type": "update", "updates": []}]}).decode()
    try:
        async with aiohttp.ClientSession() as session, session.ws_connect(f"http://127.0.0.1:{port}/echo") as ws:
            for i in range(n + 100):
                start = time.perf_counter_ns()
                await ws.send_str(payload)
                await ws.receive()
                if i >= 100:  # warm-up
                    out.append((time.perf_counter_ns() - start) / 1000)
    finally:
        await runner.cleanup()
    return out


async def start_simulator(state: Path, rate: float) -> tuple[asyncio.subprocess.Process, str]:
    """``cryptoj sim`` in its own process (its own event loop and CPU time) on a free loopback port."""
    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        port = probe_socket.getsockname()[1]
    exe = Path(sys.executable).with_name("cryptoj")
    proc = await asyncio.create_subprocess_exec(
        str(exe), "--log-level", "ERROR", "sim", "--port", str(port), "--products", PRODUCT, "--market-rate", str(rate),
        "--create-api-key", str(state / "key.json"), "--private-rate-limit", "100000", "--public-rate-limit", "100000",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(f"{base_url}/api/v3/brokerage/time") as resp:
                    if resp.status == 200:
                        return proc, base_url
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline or proc.returncode is not None:
                proc.kill()
                raise RuntimeError("the simulator did not start")
            await asyncio.sleep(0.05)


async def tick_to_order(
    seconds: float, rate: float, every: int, db_dir: str | None, max_open: int = 10, order_lane: bool = False
) -> tuple[list[float], list[float], list[float], dict[str, list[float]], dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="cryptoj-bench-", dir=db_dir) as tmp:
        state = Path(tmp)
        sim, base_url = await start_simulator(state, rate)
        probe = Probe({"every": every, "max_open": max_open}, products=[PRODUCT])
        probe.recv_by_seq = {}
        probe.decisions = {}
        written: dict[str, int] = {}
        config = AppConfig(
            mode="sim", products=[PRODUCT],
            exchange=ExchangeConfig(public_rate_limit=100_000, private_rate_limit=100_000, key_file=state / "key.json",
                                    order_lane=order_lane),
            storage=StorageConfig(url=f"sqlite+aiosqlite:///{state / 'bench.db'}", state_dir=state),
            engine=EngineConfig(wait_for_books_seconds=10, sim_url=base_url),
            emergency=EmergencyConfig(price_move_fraction=None),
        )
        runtime = await build_runtime(config, strategies=[probe])

        # start: remember when each frame was read, by its sequence number
        md = runtime.market_data
        process_item = md.process_item
        recv = probe.recv_by_seq

        def recording(item: Any) -> None:
            if type(item) is WsFrame and item.seq is not None:
                recv[item.seq] = item.recv_ns
                if len(recv) > 100_000:
                    recv.clear()
            process_item(item)

        md.process_item = recording  # type: ignore[method-assign]

        # end: when the POST /orders request has been written — by the REST client's order lane (its
        # on_order_written hook, right after the transport write), or by aiohttp (a trace hook)
        def on_written(body: bytes) -> None:
            coid = orjson.loads(body).get("client_order_id")
            if coid:
                written.setdefault(coid, time.time_ns())

        runtime.rest.on_order_written = on_written

        async def on_chunk(session: aiohttp.ClientSession, ctx: SimpleNamespace, params: aiohttp.TraceRequestChunkSentParams
                           ) -> None:
            if params.method == "POST" and params.url.path.endswith("/orders") and params.chunk:
                try:
                    coid = orjson.loads(params.chunk).get("client_order_id")
                except orjson.JSONDecodeError:
                    return
                if coid:
                    written.setdefault(coid, time.time_ns())

        # breakdown: when the order manager's submit starts, and when it hands the order to the venue
        om = runtime.order_manager
        venue = om.venue
        om_entered: dict[str, int] = {}
        venue_called: dict[str, int] = {}
        om_submit = om.submit
        venue_create = venue.create_order

        async def timed_submit(spec: Any) -> Any:
            om_entered[spec.client_order_id] = time.time_ns()
            return await om_submit(spec)

        async def timed_create(spec: Any) -> Any:
            venue_called.setdefault(spec.client_order_id, time.time_ns())
            return await venue_create(spec)

        om.submit = timed_submit  # type: ignore[method-assign]
        venue.create_order = timed_create  # type: ignore[method-assign]

        trace = aiohttp.TraceConfig()
        trace.on_request_chunk_sent.append(on_chunk)
        rest = runtime.rest
        await rest.open()
        old = rest._session
        rest._session = aiohttp.ClientSession(trace_configs=[trace])
        if old is not None:
            await old.close()
        try:
            await runtime.run(duration=seconds, install_signal_handlers=False)
        finally:
            sim.terminate()
            await asyncio.wait_for(sim.wait(), 30)
        to_order = [(written[c] - r) / 1000 for c, (r, _) in probe.decisions.items() if c in written]
        to_decision = [(d - r) / 1000 for r, d in probe.decisions.values()]
        decision_to_order = [(written[c] - d) / 1000 for c, (_, d) in probe.decisions.items() if c in written]
        sent = [c for c in probe.decisions if c in written and c in om_entered and c in venue_called]
        breakdown = {
            "decision -> order manager": [(om_entered[c] - probe.decisions[c][1]) / 1000 for c in sent],
            "order manager -> venue": [(venue_called[c] - om_entered[c]) / 1000 for c in sent],
            "venue -> request written": [(written[c] - venue_called[c]) / 1000 for c in sent],
        }
        pool = rest.jwt_pool
        info = {"jwt_pool_hits": pool.hits if pool else 0, "jwt_pool_misses": pool.misses if pool else 0,
                "book_updates": probe.updates, "decisions": len(probe.decisions), "orders_written": len(written),
                "orders_sent": runtime.engine.stats.orders_sent, "rejects": runtime.engine.stats.rejects}
        return to_order, to_decision, decision_to_order, breakdown, info


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="how long the engine trades, per storage location")
    parser.add_argument("--rate", type=float, default=200.0, help="simulator market events per second")
    parser.add_argument("--every", type=int, default=5, help="an order every N-th book update")
    parser.add_argument("--max-open", type=int, default=10, help="the probe cancels its oldest order beyond this (0: never)")
    parser.add_argument("--order-lane", action="store_true",
                        help="orders over the REST client's own HTTP/1.1 lane (exchange.order_lane) instead of aiohttp")
    parser.add_argument("--echo", type=int, default=5000, help="echo round trips for the floor")
    parser.add_argument("--db-dirs", default="disk,/dev/shm",
                        help="where the SQLite write-ahead lives, comma-separated ('disk' = the system temp dir)")
    args = parser.parse_args()
    configure_logging("ERROR")
    floor = await echo_floor(args.echo)
    print(f"sim mode over loopback, {args.seconds:.0f}s per run at {args.rate:.0f} market events/s, "
          f"an order every {args.every} book updates, at most {args.max_open or 'unlimited'} open, "
          f"orders via {'the order lane' if args.order_lane else 'aiohttp'}")
    print(line("floor: aiohttp WS echo RTT", floor))
    for where in args.db_dirs.split(","):
        db_dir = None if where == "disk" else where
        if db_dir is not None and not await asyncio.to_thread(Path(db_dir).is_dir):
            print(f"-- storage in {where}: not available, skipped")
            continue
        to_order, to_decision, decision_to_order, breakdown, info = await tick_to_order(
            args.seconds, args.rate, args.every, db_dir, args.max_open, args.order_lane
        )
        print(f"-- SQLite database and intent journal in {where}: {info}")
        print(line("tick -> strategy decision", to_decision))
        print(line("decision -> order written", decision_to_order))
        for name, values in breakdown.items():
            print(line("  " + name, values))
        print(line("tick -> order written", to_order))
        if floor and to_order:
            f50, f99 = pct(floor, 50), pct(floor, 99)
            print(f"   above the floor: p50 +{pct(to_order, 50) - f50:.1f} µs (goal <= 100), "
                  f"p99 +{pct(to_order, 99) - f99:.1f} µs (goal <= 1000)")


if __name__ == "__main__":
    asyncio.run(main())
