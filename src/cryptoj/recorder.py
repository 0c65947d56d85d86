"""Record raw WebSocket frames to a file, and replay a recording through the service.

Format: gzip-compressed JSON lines. Each frame is one line::

    {"ts_ns": 1775572201456789000, "frame": "<the raw frame text, exactly as received>"}

``ts_ns`` is the receive time (Unix nanoseconds). A new connection is marked
by a line ``{"ts_ns": ..., "connected": <connection id>}`` so a replay knows the
venue's ``sequence_num`` restarts there (frames of a new connection begin with
fresh snapshots).

:func:`replay` feeds a recording through :meth:`MarketDataService.process_item`:
the same parser and book code as the live stream. :func:`synthetic_l2_frames`
builds a seeded ``l2_data`` stream (one snapshot, then updates) in the same
frame format, for benchmarks and soak tests.

The ``cryptoj record`` command is :func:`record_command` (registered in ``cli.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import random
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Annotated

import orjson
import structlog
import typer

from cryptoj.errors import ConfigError, MalformedMessage
from cryptoj.websocket_handler import WebSocketHandler, WsConnected, WsDisconnected, WsFrame, WsItem, scan_sequence_num

__all__ = [
    "DEFAULT_WS_URL",
    "RecordingWriter",
    "iter_recording",
    "read_recording",
    "record",
    "record_command",
    "replay",
    "synthetic_l2_frames",
]

log = structlog.get_logger(__name__)

DEFAULT_WS_URL = "wss://advanced-trade-ws.coinbase.com"
DEFAULT_CHANNELS: tuple[str, ...] = ("level2", "market_trades", "ticker")
_FLUSH_LINES = 512


class RecordingWriter:
    """Appends frames to a ``.jsonl.gz`` file; the gzip writes run in a worker thread.

    Lines are buffered and handed to the thread in batches of ``flush_lines`` so
    the event loop never blocks on the disk. Use as ``async with``.
    """

    def __init__(self, path: Path, *, flush_lines: int = _FLUSH_LINES) -> None:
        self.path = Path(path)
        self.flush_lines = flush_lines
        self._lines: list[bytes] = []
        self._fh: gzip.GzipFile | None = None
        self.frames = 0
        self.bytes = 0

    async def open(self) -> None:
        if not self.path.parent.is_dir():
            raise ConfigError([("record.out", f"directory {self.path.parent} does not exist")])
        self._fh = await asyncio.to_thread(_open_gzip_for_write, self.path)

    async def write_frame(self, data: str | bytes, ts_ns: int) -> None:
        text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data
        self._lines.append(orjson.dumps({"ts_ns": ts_ns, "frame": text}) + b"\n")
        self.frames += 1
        self.bytes += len(text)
        if len(self._lines) >= self.flush_lines:
            await self.flush()

    async def write_connected(self, connection_id: int, ts_ns: int) -> None:
        self._lines.append(orjson.dumps({"ts_ns": ts_ns, "connected": connection_id}) + b"\n")

    async def flush(self) -> None:
        if self._fh is None:
            raise MalformedMessage("recording is not open", str(self.path))
        blob, self._lines = b"".join(self._lines), []
        if blob:
            await asyncio.to_thread(self._fh.write, blob)

    async def close(self) -> None:
        if self._fh is not None:
            await self.flush()
            fh, self._fh = self._fh, None
            await asyncio.to_thread(fh.close)

    async def __aenter__(self) -> RecordingWriter:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _open_gzip_for_write(path: Path) -> gzip.GzipFile:
    return gzip.GzipFile(path, "wb")


def iter_recording(path: Path) -> Iterator[tuple[int, str | int]]:
    """Yield ``(ts_ns, frame_text)`` per frame and ``(ts_ns, connection_id)`` per connection mark.

    A line that is not a valid record raises :class:`MalformedMessage` naming the
    file and line number. (Synchronous: use it from a thread or offline tools.)
    """
    with gzip.open(path, "rb") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                rec = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise MalformedMessage(f"{path}:{lineno}: invalid JSON ({exc})", line) from None
            if not isinstance(rec, dict) or not isinstance(rec.get("ts_ns"), int):
                raise MalformedMessage(f"{path}:{lineno}: expected an object with an integer ts_ns", line)
            frame = rec.get("frame")
            if isinstance(frame, str):
                yield rec["ts_ns"], frame
            elif isinstance(rec.get("connected"), int) and not isinstance(rec.get("connected"), bool):
                yield rec["ts_ns"], rec["connected"]
            else:
                raise MalformedMessage(f"{path}:{lineno}: needs a string 'frame' or an integer 'connected'", line)


def read_recording(path: Path) -> list[WsItem]:
    """The whole recording as handler items (:class:`WsConnected` / :class:`WsFrame`)."""
    items: list[WsItem] = []
    connection = 0
    for ts_ns, payload in iter_recording(path):
        if isinstance(payload, int):
            connection = payload
            items.append(WsConnected(connection, reconnect=connection > 1))
        else:
            items.append(WsFrame(payload, ts_ns, connection, scan_sequence_num(payload)))
    return items


def replay(path: Path, process_item: Callable[[WsItem], None]) -> int:
    """Feed every item of a recording to ``process_item`` (e.g. ``service.process_item``); returns frames fed."""
    frames = 0
    connection = 0
    for ts_ns, payload in iter_recording(path):
        if isinstance(payload, int):
            connection = payload
            process_item(WsConnected(connection, reconnect=connection > 1))
        else:
            process_item(WsFrame(payload, ts_ns, connection, scan_sequence_num(payload)))
            frames += 1
    return frames


async def record(
    url: str,
    products: Sequence[str],
    out: Path,
    *,
    duration: float | None = None,
    channels: Sequence[str] = DEFAULT_CHANNELS,
    jwt_factory: Callable[[], str] | None = None,
    max_frames: int | None = None,
    stop: asyncio.Event | None = None,
    heartbeat_interval: float = 1.0,
) -> int:
    """Record frames from ``url`` into ``out`` until ``duration`` s, ``max_frames`` or ``stop``; returns frames written."""
    if not products:
        raise ConfigError([("record.products", "name at least one product")])
    if duration is not None and duration <= 0:
        raise ConfigError([("record.duration", f"must be > 0 seconds, got {duration!r}")])
    handler = WebSocketHandler(
        url,
        {ch: list(products) for ch in channels},
        jwt_factory=jwt_factory,
        heartbeat_interval=heartbeat_interval,
        name="recorder",
    )
    stop_event = stop or asyncio.Event()
    async with RecordingWriter(out) as writer, handler:

        async def pump() -> None:
            async for item in handler:
                if isinstance(item, WsFrame):
                    await writer.write_frame(item.data, item.recv_ns)
                    if max_frames is not None and writer.frames >= max_frames:
                        return
                elif isinstance(item, WsConnected):
                    await writer.write_connected(item.connection_id, time.time_ns())
                elif isinstance(item, WsDisconnected):
                    log.warning("recorder_disconnected", reason=item.reason)

        pump_task = asyncio.ensure_future(pump())
        stop_task = asyncio.ensure_future(stop_event.wait())
        try:
            await asyncio.wait({pump_task, stop_task}, timeout=duration, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (pump_task, stop_task):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if pump_task.done() and not pump_task.cancelled() and pump_task.exception() is not None:
                raise pump_task.exception()  # type: ignore[misc]
    log.info("recorder_done", frames=writer.frames, bytes=writer.bytes, out=str(out))
    return writer.frames


def record_command(
    products: Annotated[list[str], typer.Option("--products", "-p", help="Product ids, e.g. BTC-USD (repeat or comma-separate)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output file (.jsonl.gz)")],
    duration: Annotated[float | None, typer.Option("--duration", help="Stop after this many seconds")] = None,
    ws_url: Annotated[str, typer.Option("--ws-url", help="Market-data WebSocket URL")] = DEFAULT_WS_URL,
    channels: Annotated[str, typer.Option("--channels", help="Comma-separated channels")] = ",".join(DEFAULT_CHANNELS),
) -> None:
    """Record raw market-data frames with receive timestamps to a gzip JSON-lines file."""
    product_ids = [p.strip() for chunk in products for p in chunk.split(",") if p.strip()]
    chans = [c.strip() for c in channels.split(",") if c.strip()]
    frames = asyncio.run(record(ws_url, product_ids, out, duration=duration, channels=chans))
    typer.echo(f"recorded {frames} frames to {out}")


# --- synthetic l2_data stream --------------------------------------------------------


def _fmt(value: int, places: int) -> str:
    scale = 10**places
    return f"{value // scale}.{value % scale:0{places}d}"


def synthetic_l2_frames(
    product_id: str = "BTC-USD",
    *,
    seed: int,
    snapshot_levels: int = 1000,
    updates: int = 200_000,
    max_levels_per_update: int = 20,
    delete_ratio: float = 0.3,
    top_concentration: float = 8.0,
    mid_ticks: int = 5_000_000,
) -> Iterator[bytes]:
    """A seeded ``l2_data`` stream: one snapshot of ``snapshot_levels`` levels, then ``updates`` update messages.

    Each update changes 1..``max_levels_per_update`` levels; a level's distance from
    the mid (in 0.01 ticks) is ``1 + Exponential(mean=top_concentration)`` so changes
    cluster near the top; ``delete_ratio`` of the changes remove a level
    (``new_quantity`` "0"). Bids stay below the mid and asks above, so the book never
    crosses. Frames are bytes, exactly as orjson would send them.
    """
    rng = random.Random(seed)
    event_time = "2026-04-07T14:30:01.456789123Z"
    bids: set[int] = set()
    asks: set[int] = set()
    half = snapshot_levels // 2
    snapshot = []
    for k in range(1, half + 1):
        bids.add(k)
        snapshot.append(
            {
                "side": "bid",
                "event_time": event_time,
                "price_level": _fmt(mid_ticks - k, 2),
                "new_quantity": _fmt(rng.randint(1, 10**9), 8),
            }
        )
    for k in range(1, snapshot_levels - half + 1):
        asks.add(k)
        snapshot.append(
            {
                "side": "offer",
                "event_time": event_time,
                "price_level": _fmt(mid_ticks + k, 2),
                "new_quantity": _fmt(rng.randint(1, 10**9), 8),
            }
        )
    envelope = {"channel": "l2_data", "client_id": "", "timestamp": "2026-04-07T14:30:01.456789123Z", "sequence_num": 0}
    yield orjson.dumps({**envelope, "events": [{"type": "snapshot", "product_id": product_id, "updates": snapshot}]})
    lam = 1.0 / top_concentration
    for seq in range(1, updates + 1):
        changes = []
        for _ in range(rng.randint(1, max_levels_per_update)):
            is_bid = rng.random() < 0.5
            levels = bids if is_bid else asks
            k = 1 + int(rng.expovariate(lam))
            if rng.random() < delete_ratio:
                levels.discard(k)
                qty = "0"
            else:
                levels.add(k)
                qty = _fmt(rng.randint(1, 10**9), 8)
            price = mid_ticks - k if is_bid else mid_ticks + k
            changes.append(
                {
                    "side": "bid" if is_bid else "offer",
                    "event_time": event_time,
                    "price_level": _fmt(price, 2),
                    "new_quantity": qty,
                }
            )
        envelope["sequence_num"] = seq
        yield orjson.dumps({**envelope, "events": [{"type": "update", "product_id": product_id, "updates": changes}]})
