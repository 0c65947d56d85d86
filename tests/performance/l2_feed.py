"""A loopback ``l2_data`` feed at full speed, in its own process, for the market data soak test.

``python -m tests.performance.l2_feed --updates N --seed S [--product BTC-USD]`` prints one line,
``listening on ws://127.0.0.1:PORT/ws``, and serves until SIGTERM/SIGINT (exit 0).

It speaks the Coinbase market WebSocket as far as the soak needs: a client subscribes
(``heartbeats`` and ``level2`` for the product, within 5 s); the feed acknowledges with a
``subscriptions`` frame, then sends the seeded stream of
:func:`cryptoj.recorder.synthetic_l2_frames` (one 1,000-level snapshot, then ``N`` updates of
1-20 levels, ~30% deletions, concentrated near the top) as fast as the socket takes it, with one
``sequence_num`` sequence per connection, then a heartbeat every 0.25 s so the client stays healthy.

Why not the simulator: its synthetic market is a real matching engine with agents (~0.7 ms of
CPU per market event), so over loopback it produces a few hundred messages per second; 200,000
messages would take well over ten minutes. This feed replays the benchmark stream instead.

``GET /book?limit=50`` answers the feed's own truth for the last stream it sent: the top levels
after applying every update (``{"bids": [[price, size]...], "asks": [...], "frames": F,
"level_updates": U (snapshot levels included), "done": bool}``), so the test compares its book with it, as the simulator's
admin book is used elsewhere.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from cryptoj.recorder import synthetic_l2_frames

HEARTBEAT_S = 0.25


class Feed:
    def __init__(self, product_id: str, seed: int, updates: int) -> None:
        self.product_id = product_id
        self.seed = seed
        self.updates = updates
        self.bids: dict[str, str] = {}  # price string -> size string, as sent
        self.asks: dict[str, str] = {}
        self.frames = 0
        self.level_updates = 0
        self.done = False

    def _apply(self, frame: bytes) -> None:
        event = orjson.loads(frame)["events"][0]
        if event["type"] == "snapshot":
            self.bids.clear()
            self.asks.clear()
        self.level_updates += len(event["updates"])
        for u in event["updates"]:
            side = self.bids if u["side"] == "bid" else self.asks
            price, qty = u["price_level"], u["new_quantity"]
            if Decimal(qty) == 0:
                side.pop(price, None)
            else:
                side[price] = qty

    async def serve_ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=1 << 20)
        await ws.prepare(request)
        channels: set[str] = set()
        try:
            async with asyncio.timeout(5.0):
                while "level2" not in channels:
                    msg = await ws.receive()
                    if msg.type != WSMsgType.TEXT:
                        return ws
                    sub = orjson.loads(msg.data)
                    if sub.get("type") == "subscribe":
                        channels.add(sub.get("channel", ""))
        except TimeoutError:
            await ws.close()
            return ws
        seq = 0
        ack = {"channel": "subscriptions", "client_id": "", "timestamp": _now(), "sequence_num": seq,
               "events": [{"subscriptions": {c: [self.product_id] if c == "level2" else [] for c in sorted(channels)}}]}
        await ws.send_str(orjson.dumps(ack).decode())
        self.frames, self.level_updates, self.done = 0, 0, False
        for frame in synthetic_l2_frames(self.product_id, seed=self.seed, snapshot_levels=1000, updates=self.updates):
            seq += 1
            # renumber onto this connection's sequence (the generator starts at 0 for the snapshot)
            text = frame.decode().replace(f'"sequence_num":{seq - 1},', f'"sequence_num":{seq},', 1)
            await ws.send_str(text)
            self._apply(frame)
            self.frames += 1
        self.done = True
        counter = 0
        while not ws.closed:
            seq += 1
            counter += 1
            beat = {"channel": "heartbeats", "client_id": "", "timestamp": _now(), "sequence_num": seq,
                    "events": [{"current_time": _now(), "heartbeat_counter": counter}]}
            await ws.send_str(orjson.dumps(beat).decode())
            with contextlib.suppress(TimeoutError):
                msg = await ws.receive(timeout=HEARTBEAT_S)
                if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                    break
        return ws

    async def serve_book(self, request: web.Request) -> web.Response:
        limit = int(request.query.get("limit", "50"))
        bids = sorted(self.bids.items(), key=lambda kv: Decimal(kv[0]), reverse=True)[:limit]
        asks = sorted(self.asks.items(), key=lambda kv: Decimal(kv[0]))[:limit]
        body: dict[str, Any] = {
            "bids": bids,
            "asks": asks,
            "frames": self.frames,
            "level_updates": self.level_updates,
            "done": self.done,
        }
        return web.Response(body=orjson.dumps(body), content_type="application/json")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.performance.l2_feed")
    parser.add_argument("--updates", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--product", default="BTC-USD")
    args = parser.parse_args(argv)
    feed = Feed(args.product, args.seed, args.updates)
    app = web.Application()
    app.router.add_get("/ws", feed.serve_ws)
    app.router.add_get("/book", feed.serve_book)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server: Any = site._server
    port = server.sockets[0].getsockname()[1]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    sys.stdout.write(f"listening on ws://127.0.0.1:{port}/ws\n")
    sys.stdout.flush()
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main(sys.argv[1:])))
