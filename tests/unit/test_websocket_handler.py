"""WebSocketHandler against a small aiohttp WebSocket peer on 127.0.0.1.

The peer is a real socket server started inside each test; it records what the
handler sent and plays a per-test script (send frames, go silent, close).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from structlog.testing import capture_logs

from cryptoj.errors import ConfigError, VenueUnavailable
from cryptoj.websocket_handler import (
    ConnectionState,
    OverflowPolicy,
    WebSocketHandler,
    WsConnected,
    WsDisconnected,
    WsFrame,
    WsItem,
    WsOverflow,
    backoff_delay,
    scan_sequence_num,
)

pytestmark = pytest.mark.unit

DEADLINE = 10.0

Script = Callable[[web.WebSocketResponse, "Conn"], Awaitable[None]]


@dataclass
class Conn:
    index: int
    received: list[dict[str, Any]] = field(default_factory=list)
    subscribed: asyncio.Event = field(default_factory=asyncio.Event)


class Peer:
    """A WebSocket server; ``script(ws, conn)`` runs once the expected subscribes arrived."""

    def __init__(self, script: Script, expect_subscribes: int) -> None:
        self.script = script
        self.expect = expect_subscribes
        self.conns: list[Conn] = []
        self.new_conn = asyncio.Condition()
        self.runner: web.AppRunner | None = None
        self.url = ""

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

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        conn = Conn(len(self.conns))
        async with self.new_conn:
            self.conns.append(conn)
            self.new_conn.notify_all()
        reader = asyncio.ensure_future(self._read(ws, conn))
        try:
            await conn.subscribed.wait()
            await self.script(ws, conn)
            if not ws.closed:
                await reader  # keep reading until the client goes away
        finally:
            reader.cancel()
        return ws

    async def _read(self, ws: web.WebSocketResponse, conn: Conn) -> None:
        async for msg in ws:
            if msg.type is aiohttp.WSMsgType.TEXT:
                conn.received.append(orjson.loads(msg.data))
                if len(conn.received) >= self.expect:
                    conn.subscribed.set()

    async def wait_conns(self, n: int) -> None:
        async with asyncio.timeout(DEADLINE):
            async with self.new_conn:
                await self.new_conn.wait_for(lambda: len(self.conns) >= n)


@pytest.fixture
async def make_peer() -> AsyncIterator[Callable[[Script, int], Awaitable[Peer]]]:
    peers: list[Peer] = []

    async def factory(script: Script, expect: int) -> Peer:
        peer = Peer(script, expect)
        await peer.start()
        peers.append(peer)
        return peer

    yield factory
    for peer in peers:
        await peer.stop()


def frame(seq: int, channel: str = "l2_data", **extra: Any) -> str:
    return orjson.dumps(
        {"channel": channel, "client_id": "", "timestamp": "t", "sequence_num": seq, "events": [], **extra}
    ).decode()


async def next_item(handler: WebSocketHandler, kind: type | tuple[type, ...] = object) -> WsItem:
    async with asyncio.timeout(DEADLINE):
        while True:
            item = await handler.get()
            assert item is not None, "handler closed while waiting"
            if isinstance(item, kind):
                return item


async def wait_until(predicate: Callable[[], bool]) -> None:
    async with asyncio.timeout(DEADLINE):
        while not predicate():
            await asyncio.sleep(0.005)


async def silent(ws: web.WebSocketResponse, conn: Conn) -> None:
    """Send nothing (the stall case)."""


def handler_for(peer: Peer, subs: dict[str, list[str]], **kw: Any) -> WebSocketHandler:
    kw.setdefault("rng", random.Random(7))
    kw.setdefault("backoff_base", 0.01)
    kw.setdefault("backoff_cap", 0.05)
    return WebSocketHandler(peer.url, subs, **kw)


class TestWebSocketHandler:
    # -- connection management ------------------------------------------------

    async def test_connects_and_subscribes_one_message_per_channel_with_fresh_jwt(self, make_peer: Any) -> None:
        async def script(ws: web.WebSocketResponse, conn: Conn) -> None:
            for seq in range(3):
                await ws.send_str(frame(seq))

        peer = await make_peer(script, 3)
        tokens = iter(f"jwt-{i}" for i in range(100))
        handler = handler_for(
            peer, {"level2": ["BTC-USD", "ETH-USD"], "market_trades": ["BTC-USD"]}, jwt_factory=lambda: next(tokens)
        )
        async with handler:
            connected = await next_item(handler, WsConnected)
            assert connected == WsConnected(1, reconnect=False)
            frames = [await next_item(handler, WsFrame) for _ in range(3)]
        assert [f.seq for f in frames] == [0, 1, 2]
        assert all(isinstance(f, WsFrame) and f.connection_id == 1 for f in frames)
        sent = peer.conns[0].received
        assert [m["channel"] for m in sent] == ["heartbeats", "level2", "market_trades"]
        assert all(m["type"] == "subscribe" for m in sent)
        assert sent[1]["product_ids"] == ["BTC-USD", "ETH-USD"]
        assert sent[0]["product_ids"] == []
        assert [m["jwt"] for m in sent] == ["jwt-0", "jwt-1", "jwt-2"]  # a fresh JWT for every message
        assert handler.stats.messages == 3
        assert handler.stats.bytes == sum(len(frame(s)) for s in range(3))
        assert handler.stats.state is ConnectionState.CLOSED

    async def test_no_jwt_field_without_factory_and_duplicates_removed(self, make_peer: Any) -> None:
        peer = await make_peer(silent, 2)
        handler = handler_for(peer, {"ticker": ["BTC-USD", "BTC-USD"]}, heartbeat_interval=30)
        async with handler:
            await next_item(handler, WsConnected)
            assert handler.connected
            assert handler.subscriptions == {"heartbeats": [], "ticker": ["BTC-USD"]}
        assert all("jwt" not in m for m in peer.conns[0].received)
        assert peer.conns[0].received[1]["product_ids"] == ["BTC-USD"]

    async def test_jwt_never_logged_or_in_repr(self, make_peer: Any) -> None:
        secret = "eyJhbGciOiJFUzI1NiJ9.secret-claims.signature"

        async def script(ws: web.WebSocketResponse, conn: Conn) -> None:
            await ws.close()

        peer = await make_peer(script, 2)
        handler = handler_for(peer, {"user": []}, jwt_factory=lambda: secret)
        with capture_logs() as logs:
            async with handler:
                await next_item(handler, WsDisconnected)
                await next_item(handler, WsConnected)
        assert peer.conns[0].received[1]["jwt"] == secret
        assert logs, "the handler logs connection events"
        assert secret not in repr(logs)
        assert secret not in repr(handler)
        assert secret not in repr(handler.stats.as_dict())

    async def test_connect_failure_backs_off_and_counts(self) -> None:
        # a port nobody listens on: bind, note the port, close
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        handler = WebSocketHandler(f"ws://127.0.0.1:{port}/ws", {}, rng=random.Random(1), backoff_base=0.001, backoff_cap=0.002)
        with capture_logs() as logs:
            async with handler:
                await wait_until(lambda: handler.stats.connect_failures >= 3)
        assert handler.stats.connects == 0
        assert handler.stats.backoff_attempt >= 3
        assert handler.stats.last_backoff_s is not None and 0 <= handler.stats.last_backoff_s <= 0.002
        assert any(e["event"] == "ws_connect_failed" for e in logs)

    async def test_connect_timeout_when_peer_never_answers_handshake(self) -> None:
        accepted = asyncio.Event()
        writers: list[asyncio.StreamWriter] = []

        async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writers.append(writer)
            accepted.set()

        server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        handler = WebSocketHandler(
            f"ws://127.0.0.1:{port}/ws", {}, connect_timeout=0.05, rng=random.Random(1), backoff_base=0.001
        )
        async with handler:
            await wait_until(lambda: handler.stats.connect_failures >= 1)
        assert "TimeoutError" in (handler.stats.last_disconnect_reason or "")
        for w in writers:
            w.close()
        server.close()
        await server.wait_closed()

    async def test_close_cancels_every_task_it_owns(self, make_peer: Any) -> None:
        peer = await make_peer(silent, 1)
        before = asyncio.all_tasks()
        handler = handler_for(peer, {}, heartbeat_interval=0.05)
        handler.start()
        handler.start()  # idempotent
        async with asyncio.timeout(DEADLINE):
            await handler.wait_connected()
        owned = asyncio.all_tasks() - before - {asyncio.current_task()}
        assert any(t.get_name().startswith("ws-") for t in owned)
        await handler.close()
        await handler.close()  # idempotent
        leftover = [t for t in asyncio.all_tasks() - before if t.get_name().startswith("ws-") and not t.done()]
        assert leftover == []
        assert handler.state is ConnectionState.CLOSED
        assert await handler.get() == WsConnected(1, reconnect=False)
        assert await handler.get() == WsDisconnected(1, "handler closed")
        assert await handler.get() is None  # closed and drained
        with pytest.raises(VenueUnavailable, match="closed"):
            handler.start()

    async def test_async_iteration_ends_on_close(self, make_peer: Any) -> None:
        async def script(ws: web.WebSocketResponse, conn: Conn) -> None:
            await ws.send_str(frame(0))

        peer = await make_peer(script, 1)
        handler = handler_for(peer, {}, heartbeat_interval=30)
        handler.start()
        seen: list[WsItem] = []

        async def consume() -> None:
            async for item in handler:
                seen.append(item)
                if isinstance(item, WsFrame):
                    await handler.close()

        async with asyncio.timeout(DEADLINE):
            await consume()
        assert [type(i) for i in seen] == [WsConnected, WsFrame, WsDisconnected]

    # -- message processing -----------------------------------------------------

    async def test_frames_in_order_with_sequence_and_gap_count(self, make_peer: Any) -> None:
        seqs = [0, 1, 2, 5, 6, 4, 7]

        async def script(ws: web.WebSocketResponse, conn: Conn) -> None:
            for s in seqs:
                await ws.send_str(frame(s))
            await ws.send_bytes(b'{"channel":"x","events":[]}')  # binary, no sequence_num

        peer = await make_peer(script, 1)
        handler = handler_for(peer, {}, heartbeat_interval=30)
        async with handler:
            frames = [await next_item(handler, WsFrame) for _ in range(len(seqs) + 1)]
        assert [f.seq for f in frames] == [*seqs, None]
        assert isinstance(frames[-1], WsFrame) and frames[-1].data == b'{"channel":"x","events":[]}'
        assert handler.stats.gaps == 3  # 2→5 gap, 6→4 backwards, 4→7 jump
        assert all(isinstance(f, WsFrame) and f.recv_ns > 0 for f in frames)
        assert handler.stats.last_message_at is not None

    async def test_runtime_subscribe_unsubscribe_resubscribe(self, make_peer: Any) -> None:
        peer = await make_peer(silent, 2)
        handler = handler_for(peer, {"level2": ["BTC-USD"]}, heartbeat_interval=30)
        async with handler:
            await next_item(handler, WsConnected)
            conn = peer.conns[0]
            await handler.subscribe("level2", ["ETH-USD", "BTC-USD"])
            await handler.subscribe("ticker", ["SOL-USD"])
            await handler.resubscribe("level2", ["ETH-USD"])
            await handler.unsubscribe("ticker")
            await handler.unsubscribe("level2", ["ETH-USD"])
            await handler.unsubscribe("nothing")
            await wait_until(lambda: len(conn.received) >= 8)
            with pytest.raises(ConfigError, match="not subscribed"):
                await handler.resubscribe("ticker")
            assert handler.subscriptions == {"heartbeats": [], "level2": ["BTC-USD"]}
        sent = [(m["type"], m["channel"], m["product_ids"]) for m in conn.received[2:]]
        assert sent == [
            ("subscribe", "level2", ["ETH-USD"]),
            ("subscribe", "ticker", ["SOL-USD"]),
            ("unsubscribe", "level2", ["ETH-USD"]),
            ("subscribe", "level2", ["ETH-USD"]),
            ("unsubscribe", "ticker", ["SOL-USD"]),
            ("unsubscribe", "level2", ["ETH-USD"]),
        ]

    async def test_subscription_changes_while_disconnected_apply_on_connect(self, make_peer: Any) -> None:
        peer = await make_peer(silent, 3)
        handler = handler_for(peer, {"level2": ["BTC-USD"]}, heartbeat_interval=30)
        await handler.subscribe("ticker", ["ETH-USD"])
        await handler.resubscribe("level2")  # not connected: nothing to send
        async with handler:
            await next_item(handler, WsConnected)
            await wait_until(lambda: len(peer.conns[0].received) >= 3)
        assert [m["channel"] for m in peer.conns[0].received] == ["heartbeats", "level2", "ticker"]

    # -- reconnection ----------------------------------------------------------

    async def test_stall_detected_then_reconnect_and_resubscribe(self, make_peer: Any) -> None:
        async def script(ws: web.WebSocketResponse, conn: Conn) -> None:
            if conn.index == 0:
                await ws.send_str(frame(0, "heartbeats"))
            # then silence: no heartbeat, nothing

        peer = await make_peer(script, 2)
        handler = handler_for(peer, {"level2": ["BTC-USD"]}, heartbeat_interval=0.05, stall_factor=2.0)
        with capture_logs() as logs:
            async with handler:
                await next_item(handler, WsFrame)
                gone = await next_item(handler, WsDisconnected)
                again = await next_item(handler, WsConnected)
        assert gone == WsDisconnected(1, "stall")
        assert again == WsConnected(2, reconnect=True)
        assert handler.stall_timeout == pytest.approx(0.1)
        assert handler.stats.stalls >= 1
        idle = handler.stats.last_stall_idle_s
        assert idle is not None and idle >= handler.stall_timeout  # never declared early
        assert handler.stats.reconnects >= 1
        assert [m["channel"] for m in peer.conns[1].received[:2]] == ["heartbeats", "level2"]
        assert any(e["event"] == "ws_stall" for e in logs)

    async def test_a_blocked_event_loop_is_not_a_stall(self, make_peer: Any) -> None:
        """Our loop blocked for 5x the stall limit (a loaded machine, a long GC) is not silence of the peer.

        The peer keeps sending; while the loop is blocked nothing can be read, so the watchdog wakes late.
        That time is excused: no stall, no reconnect. A peer that then really goes quiet is still caught.
        """
        talking = asyncio.Event()
        talking.set()

        async def script(ws: web.WebSocketResponse, conn: Conn) -> None:
            seq = 0
            while talking.is_set() and not ws.closed:
                await ws.send_str(frame(seq, "heartbeats"))
                seq += 1
                await asyncio.sleep(0.01)

        peer = await make_peer(script, 2)
        handler = handler_for(peer, {"level2": ["BTC-USD"]}, heartbeat_interval=0.05, stall_factor=2.0)
        async with handler:
            await next_item(handler, WsConnected)
            await wait_until(lambda: handler.stats.messages >= 3)
            for blocked in range(1, 4):
                time.sleep(5 * handler.stall_timeout)  # block the loop on purpose (neither side can run)
                before = handler.stats.messages
                await wait_until(lambda before=before: handler.stats.messages >= before + 3)  # the stream goes on
                assert handler.stats.late_wakeups >= blocked
            assert handler.stats.stalls == 0 and handler.stats.reconnects == 0
            assert handler.stats.connection_id == 1
            talking.clear()  # now the peer really goes quiet, on a running loop
            gone = await next_item(handler, WsDisconnected)
        assert gone == WsDisconnected(1, "stall")
        assert handler.stats.stalls == 1
        idle = handler.stats.last_stall_idle_s
        assert idle is not None and idle >= handler.stall_timeout

    async def test_peer_close_mid_stream_reconnects_and_resubscribes_everything(self, make_peer: Any) -> None:
        async def script(ws: web.WebSocketResponse, conn: Conn) -> None:
            for s in range(2):
                await ws.send_str(frame(s))
            if conn.index == 0:
                await ws.close()

        peer = await make_peer(script, 3)
        subs = {"level2": ["BTC-USD"], "market_trades": ["BTC-USD", "ETH-USD"]}
        disconnects: list[WsDisconnected] = []
        connects: list[WsConnected] = []

        async def on_connect(e: WsConnected) -> None:
            connects.append(e)

        async def on_disconnect(e: WsDisconnected) -> None:
            disconnects.append(e)

        handler = handler_for(peer, subs, heartbeat_interval=30, on_connect=on_connect, on_disconnect=on_disconnect)
        async with handler:
            items = []
            while len([i for i in items if isinstance(i, WsFrame)]) < 4:
                items.append(await next_item(handler))
        kinds = [type(i).__name__ for i in items]
        assert kinds == ["WsConnected", "WsFrame", "WsFrame", "WsDisconnected", "WsConnected", "WsFrame", "WsFrame"]
        assert isinstance(items[3], WsDisconnected) and "closed" in items[3].reason
        assert [f.connection_id for f in items if isinstance(f, WsFrame)] == [1, 1, 2, 2]
        for conn in peer.conns[:2]:
            assert sorted((m["channel"], tuple(m["product_ids"])) for m in conn.received[:3]) == [
                ("heartbeats", ()),
                ("level2", ("BTC-USD",)),
                ("market_trades", ("BTC-USD", "ETH-USD")),
            ]
        assert [c.connection_id for c in connects] == [1, 2]
        assert [d.connection_id for d in disconnects] == [1]
        assert handler.stats.reconnects == 1

    async def test_request_reconnect(self, make_peer: Any) -> None:
        peer = await make_peer(silent, 1)
        handler = handler_for(peer, {}, heartbeat_interval=30)
        async with handler:
            await next_item(handler, WsConnected)
            await handler.request_reconnect("resync")
            gone = await next_item(handler, WsDisconnected)
            await next_item(handler, WsConnected)
        assert gone.reason == "resync"  # type: ignore[union-attr]

    async def test_failing_on_connect_callback_is_logged_and_stream_recovers(self, make_peer: Any) -> None:
        calls: list[int] = []

        async def on_connect(e: WsConnected) -> None:
            calls.append(e.connection_id)
            if len(calls) == 1:
                raise RuntimeError("consumer bug")

        peer = await make_peer(silent, 1)
        handler = handler_for(peer, {}, heartbeat_interval=30, on_connect=on_connect)
        with capture_logs() as logs:
            async with handler:
                await wait_until(lambda: len(calls) >= 2)
        assert any(e["event"] == "ws_unexpected_error" and "consumer bug" in e["reason"] for e in logs)

    def test_backoff_full_jitter_exponential_and_capped(self) -> None:
        rng = random.Random(42)
        for attempt in range(12):
            ceiling = min(30.0, 0.25 * 2**attempt)
            draws = [backoff_delay(attempt, 0.25, 30.0, rng) for _ in range(200)]
            assert all(0.0 <= d <= ceiling for d in draws)
            assert max(draws) > ceiling * 0.8  # full jitter spans the whole range
            assert min(draws) < ceiling * 0.2
        assert backoff_delay(10_000, 0.25, 30.0, random.Random(1)) <= 30.0
        assert backoff_delay(3, 0.25, 30.0, random.Random(5)) == backoff_delay(3, 0.25, 30.0, random.Random(5))

    async def test_backoff_attempt_resets_after_healthy_period(self, make_peer: Any) -> None:
        async def script(ws: web.WebSocketResponse, conn: Conn) -> None:
            await ws.send_str(frame(0))
            await ws.close()

        peer = await make_peer(script, 1)
        # healthy_reset_after=0: every connection that subscribed counts as healthy
        handler = handler_for(peer, {}, heartbeat_interval=30, healthy_reset_after=0.0)
        async with handler:
            await wait_until(lambda: handler.stats.reconnects >= 3)
            assert handler.stats.backoff_attempt == 1
        peer2 = await make_peer(script, 1)
        handler2 = handler_for(peer2, {}, heartbeat_interval=30, healthy_reset_after=3600.0)
        async with handler2:
            await wait_until(lambda: handler2.stats.reconnects >= 3)
            assert handler2.stats.backoff_attempt >= 3

    # -- bounded buffer and overflow policies ---------------------------------

    async def test_overflow_resync_discards_signals_and_reconnects(self, make_peer: Any) -> None:
        async def script(ws: web.WebSocketResponse, conn: Conn) -> None:
            n = 20 if conn.index == 0 else 2
            for s in range(n):
                await ws.send_str(frame(s))

        peer = await make_peer(script, 1)
        handler = handler_for(peer, {}, heartbeat_interval=30, max_queue=5)
        async with handler:
            await peer.wait_conns(2)  # the reader overflowed and re-opened the connection, unread
            items = []
            while not any(isinstance(i, WsConnected) and i.connection_id == 2 for i in items):
                items.append(await next_item(handler))
        overflow = next(i for i in items if isinstance(i, WsOverflow))
        assert overflow.policy is OverflowPolicy.RESYNC and overflow.discarded == 5
        assert handler.stats.overflows == 1 and handler.stats.dropped == 5
        assert isinstance(items[0], WsConnected)
        disc = next(i for i in items if isinstance(i, WsDisconnected))
        assert disc.reason.startswith("overflow")
        # control items survive the discard and keep their order
        assert [type(i).__name__ for i in items if not isinstance(i, WsFrame)] == [
            "WsConnected",
            "WsOverflow",
            "WsDisconnected",
            "WsConnected",
        ]

    async def test_overflow_block_loses_nothing(self, make_peer: Any) -> None:
        async def script(ws: web.WebSocketResponse, conn: Conn) -> None:
            for s in range(50):
                await ws.send_str(frame(s))

        peer = await make_peer(script, 1)
        handler = handler_for(peer, {}, heartbeat_interval=30, max_queue=3, overflow_policy=OverflowPolicy.BLOCK)
        async with handler:
            await wait_until(lambda: handler.stats.queued >= 0 and handler.stats.messages >= 4)
            assert handler.stats.messages <= 4  # reader is blocked on the full buffer
            frames = [await next_item(handler, WsFrame) for _ in range(50)]
        assert [f.seq for f in frames] == list(range(50))  # type: ignore[union-attr]
        assert handler.stats.dropped == 0 and handler.stats.overflows == 0

    async def test_overflow_drop_oldest_keeps_newest(self, make_peer: Any) -> None:
        async def script(ws: web.WebSocketResponse, conn: Conn) -> None:
            for s in range(10):
                await ws.send_str(frame(s, "ticker"))

        peer = await make_peer(script, 1)
        handler = handler_for(peer, {}, heartbeat_interval=30, max_queue=4, overflow_policy=OverflowPolicy.DROP_OLDEST)
        async with handler:
            await wait_until(lambda: handler.stats.messages >= 10)
            items = []
            while (item := handler.get_nowait()) is not None:
                items.append(item)
        frames = [i.seq for i in items if isinstance(i, WsFrame)]
        assert frames == [6, 7, 8, 9]
        overflows = [i for i in items if isinstance(i, WsOverflow)]
        assert len(overflows) == 6 and all(o.discarded == 1 for o in overflows)
        assert handler.stats.dropped == 6

    # -- configuration and helpers --------------------------------------------

    def test_bad_configuration_is_refused_with_every_problem(self) -> None:
        with pytest.raises(ConfigError) as info:
            WebSocketHandler(
                "http//nope",
                {"": [], "level2": "BTC-USD"},  # type: ignore[dict-item]
                heartbeat_interval=0,
                backoff_cap=-1,
                healthy_reset_after=-1,
                max_queue=0,
            )
        keys = [k for k, _ in info.value.problems]
        assert keys == [
            "url",
            "heartbeat_interval",
            "backoff_cap",
            "healthy_reset_after",
            "max_queue",
            "subscriptions",
            "subscriptions.level2",
        ]

    @pytest.mark.parametrize(
        ("data", "expected"),
        [
            (b'{"channel":"l2_data","sequence_num":17,"events":[]}', 17),
            ('{"channel": "l2_data", "sequence_num" :  42 , "events": []}', 42),
            ('{"channel":"x"}', None),
            (b'{"sequence_num":"7"}', None),
            ('{"sequence_num" 7}', None),
            (b'{"sequence_num":12345678901234}', 12345678901234),
        ],
    )
    def test_scan_sequence_num(self, data: str | bytes, expected: int | None) -> None:
        assert scan_sequence_num(data) == expected
