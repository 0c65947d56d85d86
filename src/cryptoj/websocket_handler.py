"""A resilient WebSocket connection, used for the market and user streams.

:class:`WebSocketHandler` owns one logical stream to a venue. It

- connects with a timeout and sends one subscribe message per channel, each with a
  fresh JWT from ``jwt_factory`` when one is given, all within the venue's
  5-second subscribe deadline; ``heartbeats`` is always subscribed;
- watches the stream: when no message at all arrives within
  ``stall_factor × heartbeat_interval`` the connection is declared stalled,
  closed and re-opened (time our own event loop could not run — blocked or
  starved of CPU — does not count as silence of the peer);
- reconnects with exponential backoff and *full* jitter
  (``uniform(0, min(backoff_cap, backoff_base · 2**attempt))``); the attempt
  counter resets once a connection has stayed healthy for ``healthy_reset_after``
  seconds;
- re-sends every subscription after a reconnect;
- hands frames to its consumer through a bounded buffer with an explicit
  overflow policy (:class:`OverflowPolicy`);
- shuts down cleanly: :meth:`close` cancels every task it started.

The consumer reads items in order with ``async for item in handler`` (or
``await handler.get()``). Besides :class:`WsFrame` (one raw frame, never parsed
here beyond a cheap ``sequence_num`` scan), the stream carries control items that
are never dropped: :class:`WsConnected` (a new connection is subscribed, so fresh
snapshots will follow), :class:`WsDisconnected` (the connection ended; books fed
by it can no longer be trusted) and :class:`WsOverflow` (frames were discarded
because the consumer fell behind; with ``OverflowPolicy.RESYNC`` the consumer must
rebuild whatever state it derived from the stream).

This module knows the Coinbase subscribe envelope but nothing else of the
protocol; parsing belongs to :mod:`cryptoj.venues.coinbase.protocol`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

import aiohttp
import orjson
import structlog

from cryptoj.errors import ConfigError, VenueUnavailable

__all__ = [
    "ConnectionState",
    "OverflowPolicy",
    "WebSocketHandler",
    "WsConnected",
    "WsDisconnected",
    "WsFrame",
    "WsItem",
    "WsOverflow",
    "WsStats",
    "backoff_delay",
    "scan_sequence_num",
]

log = structlog.get_logger(__name__)

HEARTBEATS: Final = "heartbeats"
SUBSCRIBE_DEADLINE_S: Final = 5.0
_SEQ_KEY: Final = b'"sequence_num"'
_STARVED_FRACTION: Final = 0.25
"""A stall check waking later than this fraction of the stall limit was starved (see ``_watchdog``)."""
_SEQ_KEY_STR: Final = '"sequence_num"'


class ConnectionState(StrEnum):
    IDLE = "idle"
    CONNECTING = "connecting"
    SUBSCRIBING = "subscribing"
    CONNECTED = "connected"
    BACKOFF = "backoff"
    CLOSED = "closed"


class OverflowPolicy(StrEnum):
    """What happens when the consumer falls ``max_queue`` frames behind.

    - ``RESYNC`` (default; the policy for L2): nothing is silently lost. The buffered
      frames are discarded, a :class:`WsOverflow` item tells the consumer how many,
      and the connection is re-opened so the venue sends fresh snapshots.
    - ``BLOCK``: the reader stops reading until the consumer catches up (TCP
      back-pressure). Nothing is discarded, but a slow consumer can stall the feed.
    - ``DROP_OLDEST``: the oldest buffered frame is discarded, counted in
      ``stats.dropped`` and reported with a :class:`WsOverflow` item. Only for
      streams where every message restates the full state (e.g. tickers).
    """

    RESYNC = "resync"
    BLOCK = "block"
    DROP_OLDEST = "drop_oldest"


@dataclass(slots=True)
class WsFrame:
    """One raw frame as received. ``seq`` is the envelope's ``sequence_num`` when found."""

    data: str | bytes
    recv_ns: int
    connection_id: int
    seq: int | None


@dataclass(frozen=True, slots=True)
class WsConnected:
    """A connection is open and every subscription has been (re)sent on it."""

    connection_id: int
    reconnect: bool


@dataclass(frozen=True, slots=True)
class WsDisconnected:
    """The connection ended; ``reason`` says why (``stall``, ``closed by peer``, ...)."""

    connection_id: int
    reason: str


@dataclass(frozen=True, slots=True)
class WsOverflow:
    """``discarded`` frames were thrown away because the consumer fell behind."""

    connection_id: int
    discarded: int
    policy: OverflowPolicy


WsItem = WsFrame | WsConnected | WsDisconnected | WsOverflow


@dataclass(slots=True)
class WsStats:
    """Counters for metrics. Times are from the handler's monotonic clock (seconds)."""

    state: ConnectionState = ConnectionState.IDLE
    connection_id: int = 0
    messages: int = 0
    bytes: int = 0
    connects: int = 0
    reconnects: int = 0
    connect_failures: int = 0
    stalls: int = 0
    gaps: int = 0
    overflows: int = 0
    dropped: int = 0
    last_message_at: float | None = None
    last_connect_at: float | None = None
    last_disconnect_reason: str | None = None
    last_stall_idle_s: float | None = None
    late_wakeups: int = 0
    """Stall checks that woke late (loop blocked or starved); that time was not counted as silence."""
    backoff_attempt: int = 0
    last_backoff_s: float | None = None
    queued: int = 0

    def as_dict(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in self.__slots__}


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Full-jitter exponential backoff: ``uniform(0, min(cap, base · 2**attempt))``."""
    ceiling = min(cap, base * (2 ** min(attempt, 62)))
    return rng.uniform(0.0, ceiling)


def scan_sequence_num(data: str | bytes) -> int | None:
    """Find the envelope's ``sequence_num`` without parsing the whole frame.

    Returns None when the key is absent or not followed by an integer. The key sits
    in the envelope before ``events`` in every Coinbase frame; a later occurrence
    would only be found if the envelope had none.
    """
    if isinstance(data, bytes):
        pos = data.find(_SEQ_KEY)
        if pos < 0:
            return None
        text = data[pos + len(_SEQ_KEY) : pos + len(_SEQ_KEY) + 32].decode("ascii", errors="replace")
    else:
        pos = data.find(_SEQ_KEY_STR)
        if pos < 0:
            return None
        text = data[pos + len(_SEQ_KEY_STR) : pos + len(_SEQ_KEY_STR) + 32]
    text = text.lstrip(" \t\r\n")
    if not text.startswith(":"):
        return None
    text = text[1:].lstrip(" \t\r\n")
    end = 0
    while end < len(text) and text[end].isdigit():
        end += 1
    if end == 0:
        return None
    return int(text[:end])


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _ItemBuffer:
    """FIFO of :data:`WsItem`; the bound counts frames only, control items always fit."""

    __slots__ = ("_closed", "_frames", "_items", "_not_empty", "_not_full", "maxsize")

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._items: deque[WsItem] = deque()
        self._frames = 0
        self._not_empty = asyncio.Event()
        self._not_full = asyncio.Event()
        self._not_full.set()
        self._closed = False

    def close(self) -> None:
        """Wake every waiter; :meth:`get` returns None once closed and empty."""
        self._closed = True
        self._not_empty.set()
        self._not_full.set()

    @property
    def frames(self) -> int:
        return self._frames

    def full(self) -> bool:
        return self._frames >= self.maxsize

    def put(self, item: WsItem) -> None:
        self._items.append(item)
        if isinstance(item, WsFrame):
            self._frames += 1
            if self._frames >= self.maxsize:
                self._not_full.clear()
        self._not_empty.set()

    def put_front(self, item: WsItem) -> None:
        self._items.appendleft(item)
        self._not_empty.set()

    async def wait_not_full(self) -> None:
        await self._not_full.wait()

    def drop_oldest_frame(self) -> bool:
        for i, item in enumerate(self._items):
            if isinstance(item, WsFrame):
                del self._items[i]
                self._after_frame_removed()
                return True
        return False  # pragma: no cover - only called when full, so a frame exists

    def clear_frames(self) -> int:
        dropped = self._frames
        if dropped:
            self._items = deque(item for item in self._items if not isinstance(item, WsFrame))
            self._frames = 0
            self._not_full.set()
            if not self._items:
                self._not_empty.clear()
        return dropped

    def _after_frame_removed(self) -> None:
        self._frames -= 1
        if self._frames < self.maxsize:
            self._not_full.set()

    def get_nowait(self) -> WsItem | None:
        if not self._items:
            return None
        item = self._items.popleft()
        if isinstance(item, WsFrame):
            self._after_frame_removed()
        if not self._items and not self._closed:
            self._not_empty.clear()
        return item

    async def get(self) -> WsItem | None:
        while True:
            item = self.get_nowait()
            if item is not None or self._closed:
                return item
            await self._not_empty.wait()


class _Reconnect(Exception):
    """Internal: leave the receive loop and reconnect (overflow, explicit request)."""


@dataclass(slots=True)
class _Subscription:
    channel: str
    product_ids: list[str] = field(default_factory=list)


class WebSocketHandler:
    """One resilient WebSocket stream (see the module docstring for the behaviour).

    ``subscriptions`` maps a channel to its product ids (empty for channels such
    as ``user`` or ``heartbeats`` that take none). ``jwt_factory`` is called once per
    subscribe message; its result is sent and never logged. ``clock`` is a
    monotonic clock in seconds, ``rng`` draws the backoff jitter (seed it in tests).
    When ``session`` is given the caller owns it; otherwise the handler creates and
    closes its own.
    """

    def __init__(
        self,
        url: str,
        subscriptions: Mapping[str, Sequence[str]],
        *,
        jwt_factory: Callable[[], str] | None = None,
        heartbeat_interval: float = 1.0,
        stall_factor: float = 2.0,
        connect_timeout: float = 10.0,
        subscribe_deadline: float = SUBSCRIBE_DEADLINE_S,
        backoff_base: float = 0.25,
        backoff_cap: float = 30.0,
        healthy_reset_after: float = 30.0,
        max_queue: int = 10_000,
        overflow_policy: OverflowPolicy = OverflowPolicy.RESYNC,
        max_message_size: int = 16 * 1024 * 1024,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        session: aiohttp.ClientSession | None = None,
        on_connect: Callable[[WsConnected], Awaitable[None]] | None = None,
        on_disconnect: Callable[[WsDisconnected], Awaitable[None]] | None = None,
        name: str = "ws",
    ) -> None:
        problems: list[tuple[str, str]] = []
        if not url.startswith(("ws://", "wss://", "http://", "https://")):
            problems.append(("url", f"expected a ws:// or wss:// URL, got {url!r}"))
        for key, value in (
            ("heartbeat_interval", heartbeat_interval),
            ("stall_factor", stall_factor),
            ("connect_timeout", connect_timeout),
            ("subscribe_deadline", subscribe_deadline),
            ("backoff_base", backoff_base),
            ("backoff_cap", backoff_cap),
        ):
            if not value > 0:
                problems.append((key, f"must be > 0, got {value!r}"))
        if healthy_reset_after < 0:
            problems.append(("healthy_reset_after", f"must be >= 0, got {healthy_reset_after!r}"))
        if max_queue < 1:
            problems.append(("max_queue", f"must be >= 1, got {max_queue!r}"))
        for channel, products in subscriptions.items():
            if not channel or not isinstance(channel, str):
                problems.append(("subscriptions", f"channel names must be non-empty strings, got {channel!r}"))
            if isinstance(products, str):
                problems.append((f"subscriptions.{channel}", "product ids must be a list, not a string"))
        if problems:
            raise ConfigError(problems)

        self.url = url
        self.name = name
        self._subs: dict[str, _Subscription] = {}
        self._subs[HEARTBEATS] = _Subscription(HEARTBEATS, [])
        for channel, products in subscriptions.items():
            self._subs[channel] = _Subscription(channel, list(dict.fromkeys(products)))
        self._jwt_factory = jwt_factory
        self.heartbeat_interval = heartbeat_interval
        self.stall_timeout = stall_factor * heartbeat_interval
        self.connect_timeout = connect_timeout
        self.subscribe_deadline = subscribe_deadline
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.healthy_reset_after = healthy_reset_after
        self.overflow_policy = overflow_policy
        self.max_message_size = max_message_size
        self._rng = rng if rng is not None else random.Random()
        self._clock = clock
        self._session = session
        self._owns_session = session is None
        self._on_connect = on_connect
        self._on_disconnect = on_disconnect

        self.stats = WsStats()
        self._buffer = _ItemBuffer(max_queue)
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._runner: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()
        self._connected = asyncio.Event()
        self._reconnect_requested: str | None = None
        self._expected_seq: int | None = None
        self._send_lock = asyncio.Lock()

    # -- public API ---------------------------------------------------------

    @property
    def state(self) -> ConnectionState:
        return self.stats.state

    @property
    def subscriptions(self) -> dict[str, list[str]]:
        """The current subscriptions (channel → product ids), heartbeats included."""
        return {s.channel: list(s.product_ids) for s in self._subs.values()}

    @property
    def connected(self) -> bool:
        return self.stats.state is ConnectionState.CONNECTED

    def start(self) -> None:
        """Start the connection task (idempotent). Must be called on the running loop."""
        if self.stats.state is ConnectionState.CLOSED:
            raise VenueUnavailable(f"{self.name}: handler for {self.url} is closed")
        if self._runner is None:
            self._runner = asyncio.get_running_loop().create_task(self._run(), name=f"{self.name}-runner")

    async def wait_connected(self) -> None:
        """Wait until a connection is open and subscribed (wrap in ``asyncio.timeout``)."""
        await self._connected.wait()

    async def get(self) -> WsItem | None:
        """The next item, waiting if none is buffered; None once closed and drained."""
        item = await self._buffer.get()
        self.stats.queued = self._buffer.frames
        return item

    def get_nowait(self) -> WsItem | None:
        """The next buffered item, or None."""
        item = self._buffer.get_nowait()
        self.stats.queued = self._buffer.frames
        return item

    async def __aiter__(self) -> AsyncIterator[WsItem]:
        """Iterate over items until the handler is closed and the buffer drained."""
        while True:
            item = await self.get()
            if item is None:
                return
            yield item

    async def subscribe(self, channel: str, product_ids: Sequence[str]) -> None:
        """Add products to a channel; sent now if connected, and on every reconnect."""
        sub = self._subs.setdefault(channel, _Subscription(channel, []))
        new = [p for p in product_ids if p not in sub.product_ids]
        sub.product_ids.extend(new)
        if self.connected and (new or not product_ids):
            await self._send_sub("subscribe", channel, new)

    async def unsubscribe(self, channel: str, product_ids: Sequence[str] | None = None) -> None:
        """Remove products from a channel (all of it when ``product_ids`` is None)."""
        sub = self._subs.get(channel)
        if sub is None:
            return
        gone = list(sub.product_ids) if product_ids is None else [p for p in product_ids if p in sub.product_ids]
        if product_ids is None or set(gone) == set(sub.product_ids):
            if channel != HEARTBEATS:
                del self._subs[channel]
        else:
            sub.product_ids = [p for p in sub.product_ids if p not in gone]
        if self.connected:
            await self._send_sub("unsubscribe", channel, gone)

    async def resubscribe(self, channel: str, product_ids: Sequence[str] | None = None) -> None:
        """Unsubscribe then subscribe again on the live connection (fresh snapshot).

        Does nothing while disconnected: the next connection subscribes anyway.
        """
        sub = self._subs.get(channel)
        if sub is None:
            raise ConfigError([(f"subscriptions.{channel}", "not subscribed; cannot resubscribe")])
        products = list(sub.product_ids) if product_ids is None else list(product_ids)
        if self.connected:
            await self._send_sub("unsubscribe", channel, products)
            await self._send_sub("subscribe", channel, products)

    async def request_reconnect(self, reason: str = "requested") -> None:
        """Drop the current connection; the runner opens a new one after the usual backoff."""
        ws = self._ws
        if ws is not None and not ws.closed:
            self._reconnect_requested = reason
            await ws.close()

    async def close(self) -> None:
        """Close the connection, cancel every task this handler owns, release the session."""
        if self.stats.state is ConnectionState.CLOSED and self._runner is None:
            return
        self._closing.set()
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
        was_connected = self._connected.is_set()
        await self._close_ws()
        if was_connected:
            self._buffer.put(WsDisconnected(self.stats.connection_id, "handler closed"))
        self._buffer.close()
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None
        self.stats.state = ConnectionState.CLOSED
        self._connected.clear()

    async def __aenter__(self) -> WebSocketHandler:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"WebSocketHandler(name={self.name!r}, url={self.url!r}, state={self.stats.state.value})"

    # -- connection loop ----------------------------------------------------

    async def _run(self) -> None:
        attempt = 0
        while not self._closing.is_set():
            reason = "closed"
            conn_before = self.stats.connection_id
            try:
                await self._connect_and_subscribe()
                reason = await self._receive_loop()
            except asyncio.CancelledError:
                raise
            except _Reconnect as exc:
                reason = str(exc)
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
                reason = _describe(exc)
                if self.stats.connection_id == conn_before:
                    self.stats.connect_failures += 1
            except Exception as exc:  # a failing on_connect callback, say: log it, keep the stream alive
                reason = _describe(exc)
                log.exception("ws_unexpected_error", stream=self.name, url=self.url, reason=reason)
            finally:
                await self._close_ws()
            self._connected.clear()
            self.stats.last_disconnect_reason = reason
            connected_at = self.stats.last_connect_at
            if self.stats.connection_id != conn_before and connected_at is not None:
                event = WsDisconnected(self.stats.connection_id, reason)
                self._buffer.put(event)
                log.info("ws_disconnected", stream=self.name, url=self.url, reason=reason, connection_id=event.connection_id)
                if self._on_disconnect is not None:
                    await self._on_disconnect(event)
                if self._clock() - connected_at >= self.healthy_reset_after:
                    attempt = 0
            else:
                log.warning("ws_connect_failed", stream=self.name, url=self.url, reason=reason, attempt=attempt)
            if self._closing.is_set():
                break
            delay = backoff_delay(attempt, self.backoff_base, self.backoff_cap, self._rng)
            attempt += 1
            self.stats.backoff_attempt = attempt
            self.stats.last_backoff_s = delay
            self.stats.state = ConnectionState.BACKOFF
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._closing.wait()

    async def _connect_and_subscribe(self) -> None:
        self.stats.state = ConnectionState.CONNECTING
        self._reconnect_requested = None
        if self._session is None:
            self._session = aiohttp.ClientSession()
        ws = await asyncio.wait_for(
            self._session.ws_connect(self.url, max_msg_size=self.max_message_size, autoping=True),
            self.connect_timeout,
        )
        self._ws = ws
        self.stats.state = ConnectionState.SUBSCRIBING
        self._expected_seq = None
        async with asyncio.timeout(self.subscribe_deadline):
            for sub in list(self._subs.values()):
                await self._send_sub("subscribe", sub.channel, sub.product_ids, force=True)
        reconnect = self.stats.connects > 0
        self.stats.connects += 1
        if reconnect:
            self.stats.reconnects += 1
        self.stats.connection_id += 1
        now = self._clock()
        self.stats.last_connect_at = now
        self.stats.last_message_at = now
        self.stats.state = ConnectionState.CONNECTED
        event = WsConnected(self.stats.connection_id, reconnect)
        self._buffer.put(event)
        self._connected.set()
        log.info("ws_connected", stream=self.name, url=self.url, connection_id=event.connection_id, reconnect=reconnect)
        if self._on_connect is not None:
            await self._on_connect(event)

    async def _receive_loop(self) -> str:
        ws = self._ws
        assert ws is not None
        watchdog = asyncio.get_running_loop().create_task(self._watchdog(ws), name=f"{self.name}-watchdog")
        stats = self.stats
        buffer = self._buffer
        clock = self._clock
        conn_id = stats.connection_id
        try:
            while True:
                msg = await ws.receive()
                kind = msg.type
                if kind is aiohttp.WSMsgType.TEXT or kind is aiohttp.WSMsgType.BINARY:
                    data: str | bytes = msg.data
                    stats.messages += 1
                    stats.bytes += len(data)
                    stats.last_message_at = clock()
                    seq = scan_sequence_num(data)
                    if seq is not None:
                        expected = self._expected_seq
                        if expected is not None and seq != expected:
                            stats.gaps += 1
                        self._expected_seq = seq + 1
                    if buffer.full():
                        await self._handle_overflow(conn_id)
                    buffer.put(WsFrame(data, time.time_ns(), conn_id, seq))
                    continue
                if kind is aiohttp.WSMsgType.ERROR:
                    return f"error: {ws.exception()!r}"
                # CLOSE / CLOSING / CLOSED (our own close included)
                if self._reconnect_requested is not None:
                    return self._reconnect_requested
                return f"closed (code={ws.close_code})"
        finally:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog

    async def _handle_overflow(self, conn_id: int) -> None:
        policy = self.overflow_policy
        if policy is OverflowPolicy.BLOCK:
            await self._buffer.wait_not_full()
            return
        self.stats.overflows += 1
        if policy is OverflowPolicy.DROP_OLDEST:
            self._buffer.drop_oldest_frame()
            self.stats.dropped += 1
            self._buffer.put(WsOverflow(conn_id, 1, policy))
            return
        discarded = self._buffer.clear_frames()
        self.stats.dropped += discarded
        self._buffer.put(WsOverflow(conn_id, discarded, policy))
        log.warning("ws_overflow_resync", stream=self.name, discarded=discarded, connection_id=conn_id)
        raise _Reconnect(f"overflow: consumer fell {discarded} frames behind")

    async def _watchdog(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Close ``ws`` when no message arrived for ``stall_timeout`` seconds of silence the loop could observe.

        A wake-up much later than asked (our event loop was blocked or starved of CPU) is not
        silence of the peer: its frames may be sitting unread in the socket. That lateness is
        excused and the stall judged again after a short grace in which the loop can read them,
        so a busy process does not tear down a healthy connection; a quiet peer on a running
        loop is still declared stalled on time.
        """
        stats = self.stats
        clock = self._clock
        limit = self.stall_timeout
        late_limit = grace = _STARVED_FRACTION * limit
        seen = stats.last_message_at
        starved = 0.0  # how late our wake-ups were since the last message
        excused = False  # the last wake-up was late: look at the socket again before judging
        while True:
            now = clock()
            last = stats.last_message_at if stats.last_message_at is not None else now
            if last != seen:
                seen, starved = last, 0.0
            idle = now - last
            quiet = idle - starved
            if quiet >= limit and not excused:
                stats.stalls += 1
                stats.last_stall_idle_s = idle
                log.warning("ws_stall", stream=self.name, url=self.url, idle_s=round(idle, 3), limit_s=limit)
                self._reconnect_requested = "stall"
                await ws.close()
                return
            wait = limit - quiet if quiet < limit else grace
            await asyncio.sleep(wait)
            late = clock() - now - wait
            excused = late > late_limit
            if excused:
                starved += late
                stats.late_wakeups += 1

    async def _send_sub(self, kind: str, channel: str, product_ids: Sequence[str], *, force: bool = False) -> None:
        ws = self._ws
        if ws is None or ws.closed:
            return
        message: dict[str, object] = {"type": kind, "product_ids": list(product_ids), "channel": channel}
        if self._jwt_factory is not None:
            message["jwt"] = self._jwt_factory()
        async with self._send_lock:
            await ws.send_str(orjson.dumps(message).decode())
        log.debug("ws_sent", stream=self.name, kind=kind, channel=channel, product_ids=list(product_ids), forced=force)

    async def _close_ws(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None and not ws.closed:
            with contextlib.suppress(Exception):
                await ws.close()
