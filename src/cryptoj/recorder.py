"""Record raw WebSocket frames to a file, and replay a recording through the service.

Format: gzip-compressed JSON lines. Each frame is one line::

    {"ts_ns": 1775572201456789000, "frame": "<the raw frame text, exactly as received>"}

``ts_ns`` is the receive time (Unix nanoseconds). A new connection is marked
by a line ``{"ts_ns": ..., "connected": <connection id>}`` so a replay knows the
venue's ``sequence_num`` restarts there (frames of a new connection begin with
fresh snapshots).

:func:`replay` feeds a recording through :meth:`MarketDataService.process_item`:
the same parser and book code as the live stream (each connection mark after the
first is preceded by a ``WsDisconnected`` for the previous connection, as live).
``cryptoj sim --replay FILE`` serves a recording as the simulator's market instead
(:mod:`cryptoj.venues.simulated.replay`). :func:`synthetic_l2_frames`
builds a seeded ``l2_data`` stream (one snapshot, then updates) in the same
frame format, for benchmarks and soak tests.

The ``cryptoj record`` command is :func:`record_command` (registered in ``cli.py``):
it records until ``--duration`` seconds have passed or SIGINT/SIGTERM arrives, closes the
file properly (a complete gzip stream) and exits 0; bad flags exit 2 naming the flag.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import random
import signal
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Annotated

import orjson
import structlog
import typer

from cryptoj.errors import ConfigError, CryptojError, MalformedMessage, StorageError
from cryptoj.websocket_handler import (
    WebSocketHandler,
    WsConnected,
    WsDisconnected,
    WsFrame,
    WsItem,
    WsOverflow,
    scan_sequence_num,
)

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
EXIT_BAD_ARGS = 2


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
            raise StorageError(f"recording {self.path} is not open (use 'async with RecordingWriter(path)')")
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
    file and line number; so does a file that is not gzip or whose gzip stream is
    cut short (a recorder killed without a chance to close it) — after the lines
    that could be read were yielded. (Synchronous: use it from a thread or offline tools.)
    """
    lineno = 0
    try:
        with gzip.open(path, "rb") as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                yield _parse_record(path, lineno, line)
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise MalformedMessage(f"{path}: not a complete gzip recording after line {lineno} ({exc})") from None


def _parse_record(path: Path, lineno: int, line: bytes) -> tuple[int, str | int]:
    try:
        rec = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise MalformedMessage(f"{path}:{lineno}: invalid JSON ({exc})", line) from None
    if not isinstance(rec, dict) or not isinstance(rec.get("ts_ns"), int) or isinstance(rec.get("ts_ns"), bool):
        raise MalformedMessage(f"{path}:{lineno}: expected an object with an integer ts_ns", line)
    frame = rec.get("frame")
    connected = rec.get("connected")
    if isinstance(frame, str):
        return rec["ts_ns"], frame
    if isinstance(connected, int) and not isinstance(connected, bool):
        return rec["ts_ns"], connected
    raise MalformedMessage(f"{path}:{lineno}: needs a string 'frame' or an integer 'connected'", line)


def _items(path: Path) -> Iterator[WsItem]:
    connection = 0
    for ts_ns, payload in iter_recording(path):
        if isinstance(payload, int):
            if connection:
                # the live stream said so before the new connection: books fed by the old one are void
                yield WsDisconnected(connection, f"recording: connection {connection} ended")
            connection = payload
            yield WsConnected(connection, reconnect=connection > 1)
        else:
            yield WsFrame(payload, ts_ns, connection, scan_sequence_num(payload))


def read_recording(path: Path) -> list[WsItem]:
    """The whole recording as handler items, in order.

    A connection mark becomes :class:`WsConnected`; every mark after the first is
    preceded by a :class:`WsDisconnected` for the previous connection, as the live
    handler reports it. Frames become :class:`WsFrame` with their receive time.
    """
    return list(_items(path))


def replay(path: Path, process_item: Callable[[WsItem], None]) -> int:
    """Feed every item of a recording (see :func:`read_recording`) to ``process_item``, e.g.
    ``service.process_item``; returns the number of frames fed."""
    frames = 0
    for item in _items(path):
        process_item(item)
        if type(item) is WsFrame:
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
    on_item: Callable[[WsItem], None] | None = None,
) -> int:
    """Record frames from ``url`` into ``out`` until ``duration`` s, ``max_frames`` or ``stop``; returns frames written.

    ``heartbeats`` is always subscribed (the handler adds it), so the recording also
    shows the stream was alive. ``on_item`` is called with every item after it has
    been handed to the writer (progress reporting). The file is closed properly on
    every exit path, cancellation included.
    """
    problems: list[tuple[str, str]] = []
    if not products:
        problems.append(("record.products", "name at least one product"))
    if not channels:
        problems.append(("record.channels", "name at least one channel"))
    if duration is not None and not duration > 0:
        problems.append(("record.duration", f"must be > 0 seconds, got {duration!r}"))
    if max_frames is not None and max_frames < 1:
        problems.append(("record.max_frames", f"must be >= 1, got {max_frames!r}"))
    if problems:
        raise ConfigError(problems)
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
                elif isinstance(item, WsConnected):
                    await writer.write_connected(item.connection_id, time.time_ns())
                elif isinstance(item, WsDisconnected):
                    log.warning("recorder_disconnected", reason=item.reason)
                elif isinstance(item, WsOverflow):
                    log.warning("recorder_overflow", discarded=item.discarded)
                if on_item is not None:
                    on_item(item)
                if max_frames is not None and writer.frames >= max_frames:
                    return

        pump_task = asyncio.ensure_future(pump())
        stop_task = asyncio.ensure_future(stop_event.wait())
        try:
            await asyncio.wait({pump_task, stop_task}, timeout=duration, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (pump_task, stop_task):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        error = pump_task.exception() if pump_task.done() and not pump_task.cancelled() else None
        if error is not None:
            raise error
    log.info("recorder_done", frames=writer.frames, bytes=writer.bytes, out=str(out))
    return writer.frames


async def _record_until_signal(
    url: str, products: Sequence[str], out: Path, *, duration: float | None, channels: Sequence[str]
) -> int:
    """:func:`record`, stopped cleanly by SIGINT/SIGTERM as well as by ``duration``."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    try:
        return await record(url, products, out, duration=duration, channels=channels, stop=stop)
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def record_command(
    products: Annotated[list[str], typer.Option("--products", "-p", help="Product ids, e.g. BTC-USD (repeat or comma-separate)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output file (.jsonl.gz)")],
    duration: Annotated[
        float | None, typer.Option("--duration", help="Stop after this many seconds (default: until Ctrl-C / SIGTERM)")
    ] = None,
    ws_url: Annotated[str, typer.Option("--ws-url", help="Market-data WebSocket URL")] = DEFAULT_WS_URL,
    channels: Annotated[str, typer.Option("--channels", help="Comma-separated channels")] = ",".join(DEFAULT_CHANNELS),
) -> None:
    """Record raw market-data frames with receive timestamps to a gzip JSON-lines file."""
    product_ids = list(dict.fromkeys(p.strip() for chunk in products for p in chunk.split(",") if p.strip()))
    chans = list(dict.fromkeys(c.strip() for c in channels.split(",") if c.strip()))
    problems: list[tuple[str, str]] = []
    if not product_ids:
        problems.append(("--products", "name at least one product id, e.g. --products BTC-USD,ETH-USD"))
    if not chans:
        problems.append(("--channels", "name at least one channel, e.g. --channels level2"))
    if duration is not None and not duration > 0:
        problems.append(("--duration", f"must be > 0 seconds, got {duration!r}"))
    if not out.parent.is_dir():
        problems.append(("--out", f"directory {out.parent} does not exist"))
    try:
        if problems:
            raise ConfigError(problems)
        frames = asyncio.run(_record_until_signal(ws_url, product_ids, out, duration=duration, channels=chans))
    except CryptojError as exc:
        typer.echo(f"cryptoj record: {exc}", err=True)
        raise typer.Exit(EXIT_BAD_ARGS) from None
    except OSError as exc:
        typer.echo(f"cryptoj record: cannot write {out}: {exc.strerror or exc}", err=True)
        raise typer.Exit(EXIT_BAD_ARGS) from None
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
