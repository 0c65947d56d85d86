"""The recording format, its reader, the replayer and the seeded synthetic l2_data stream."""

from __future__ import annotations

import gzip
import logging
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
import structlog
from typer.testing import CliRunner

from cryptoj.cli import app
from cryptoj.errors import ConfigError, MalformedMessage, StorageError
from cryptoj.market_data import MarketDataConfig, MarketDataService
from cryptoj.model.book import BookSide
from cryptoj.model.candles import Timeframe
from cryptoj.recorder import (
    EXIT_BAD_ARGS,
    RecordingWriter,
    iter_recording,
    read_recording,
    record,
    replay,
    synthetic_l2_frames,
)
from cryptoj.venues.coinbase.protocol import parse_envelope
from cryptoj.websocket_handler import WsConnected, WsDisconnected, WsFrame, WsItem

pytestmark = pytest.mark.unit

L2_FRAME = (
    '{"channel":"l2_data","client_id":"","timestamp":"2026-04-07T14:30:01.456789123Z","sequence_num":%d,'
    '"events":[{"type":"%s","product_id":"BTC-USD","updates":[%s]}]}'
)


def _level(side: str, price: str, qty: str) -> str:
    return f'{{"side":"{side}","event_time":"2026-04-07T14:30:01Z","price_level":"{price}","new_quantity":"{qty}"}}'


def _service(*products: str) -> MarketDataService:
    return MarketDataService(
        MarketDataConfig(products=products or ("BTC-USD",), candle_timeframes=(Timeframe.ONE_MINUTE,)), parse=parse_envelope
    )


@pytest.fixture
def runner() -> Iterator[CliRunner]:
    yield CliRunner()
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_cryptoj_handler", False)]:
        root.removeHandler(handler)
    root.setLevel(logging.WARNING)
    structlog.reset_defaults()


# --- writer and reader -----------------------------------------------------------------


async def test_writer_round_trips_frames_and_connection_marks(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl.gz"
    async with RecordingWriter(path, flush_lines=2) as writer:
        await writer.write_connected(1, 100)
        await writer.write_frame('{"a": "é"}', 101)  # text
        await writer.write_frame(b'{"b": 2}', 102)  # bytes are stored as text
        await writer.write_frame(b'{"c": "\xff"}', 103)  # invalid UTF-8 is replaced, not fatal
        await writer.write_connected(2, 104)
    assert writer.frames == 3
    assert writer.bytes == len('{"a": "é"}') + len('{"b": 2}') + len('{"c": "\ufffd"}')
    assert list(iter_recording(path)) == [
        (100, 1), (101, '{"a": "é"}'), (102, '{"b": 2}'), (103, '{"c": "\ufffd"}'), (104, 2),
    ]
    # each line is one JSON object in the documented shape
    lines = gzip.decompress(path.read_bytes()).splitlines()
    assert orjson.loads(lines[0]) == {"ts_ns": 100, "connected": 1}
    assert orjson.loads(lines[1]) == {"ts_ns": 101, "frame": '{"a": "é"}'}


async def test_writer_flushes_in_batches_and_close_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "batches.jsonl.gz"
    writer = RecordingWriter(path, flush_lines=3)
    await writer.open()
    for i in range(7):
        await writer.write_frame(f'{{"i":{i}}}', i)
    assert len(writer._lines) == 1  # 6 lines went to the file in two batches of 3
    await writer.flush()
    await writer.flush()  # nothing buffered: a no-op
    await writer.close()
    await writer.close()
    assert [ts for ts, _ in iter_recording(path)] == list(range(7))


async def test_writer_refuses_a_missing_directory_and_writing_unopened(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        await RecordingWriter(tmp_path / "nope" / "rec.jsonl.gz").open()
    assert info.value.problems[0][0] == "record.out"
    assert "does not exist" in str(info.value)
    writer = RecordingWriter(tmp_path / "rec.jsonl.gz")
    await writer.write_frame("{}", 1)  # buffered; only the flush needs the file
    with pytest.raises(StorageError, match="is not open"):
        await writer.flush()


def _write_lines(path: Path, *lines: bytes) -> Path:
    path.write_bytes(gzip.compress(b"\n".join(lines) + b"\n"))
    return path


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        (b"{not json", "invalid JSON"),
        (b"[1, 2]", "integer ts_ns"),
        (b'{"frame": "x"}', "integer ts_ns"),
        (b'{"ts_ns": "5", "frame": "x"}', "integer ts_ns"),
        (b'{"ts_ns": true, "frame": "x"}', "integer ts_ns"),
        (b'{"ts_ns": 5}', "string 'frame' or an integer 'connected'"),
        (b'{"ts_ns": 5, "frame": 7}', "string 'frame' or an integer 'connected'"),
        (b'{"ts_ns": 5, "connected": true}', "string 'frame' or an integer 'connected'"),
    ],
)
def test_reader_names_file_and_line_of_a_bad_record(tmp_path: Path, line: bytes, fragment: str) -> None:
    path = _write_lines(tmp_path / "bad.jsonl.gz", b'{"ts_ns": 1, "connected": 1}', b"", line)
    reader = iter_recording(path)
    assert next(reader) == (1, 1)  # the good line before it, the blank line skipped
    with pytest.raises(MalformedMessage) as info:
        next(reader)
    assert f"{path}:3:" in str(info.value)
    assert fragment in str(info.value)
    assert info.value.raw  # the raw line travels with the error


def test_reader_reports_a_truncated_or_non_gzip_file(tmp_path: Path) -> None:
    full = gzip.compress(b"".join(b'{"ts_ns": %d, "frame": "{}"}\n' % i for i in range(2000)))
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(full[: len(full) // 2])
    got: list[tuple[int, str | int]] = []
    with pytest.raises(MalformedMessage, match="not a complete gzip recording") as info:
        got.extend(iter_recording(cut))
    assert str(cut) in str(info.value)
    assert got == [(i, "{}") for i in range(len(got))]  # what could be read came first, in order
    plain = tmp_path / "plain.jsonl.gz"
    plain.write_text('{"ts_ns": 1, "frame": "{}"}\n')
    with pytest.raises(MalformedMessage, match="not a complete gzip recording after line 0"):
        list(iter_recording(plain))


# --- replay ------------------------------------------------------------------------------


async def _write_recording(path: Path, items: list[tuple[int, str | int]]) -> None:
    async with RecordingWriter(path) as writer:
        for ts, payload in items:
            if isinstance(payload, int):
                await writer.write_connected(payload, ts)
            else:
                await writer.write_frame(payload, ts)


async def test_read_recording_and_replay_give_the_handler_items(tmp_path: Path) -> None:
    path = tmp_path / "two-connections.jsonl.gz"
    snap1 = L2_FRAME % (0, "snapshot", ",".join([_level("bid", "100.00", "1"), _level("offer", "101.00", "2")]))
    upd1 = L2_FRAME % (1, "update", _level("bid", "100.50", "3"))
    snap2 = L2_FRAME % (0, "snapshot", ",".join([_level("bid", "99.00", "4"), _level("offer", "102.00", "5")]))
    await _write_recording(path, [(10, 1), (11, snap1), (12, upd1), (20, 2), (21, snap2)])

    items = read_recording(path)
    assert items[0] == WsConnected(1, reconnect=False)
    # the end of connection 1 is reported before connection 2, as the live handler does
    assert items[3] == WsDisconnected(1, "recording: connection 1 ended")
    assert items[4] == WsConnected(2, reconnect=True)
    assert len(items) == 6
    frames = [i for i in items if isinstance(i, WsFrame)]
    assert [(f.recv_ns, f.connection_id, f.seq) for f in frames] == [(11, 1, 0), (12, 1, 1), (21, 2, 0)]
    assert frames[1].data == upd1

    seen: list[WsItem] = []
    assert replay(path, seen.append) == 3
    assert seen == items

    # through the service: sequence_num restarts at the second connection without a gap; the book is voided
    # when connection 1 ends and valid again with connection 2's snapshot
    service = _service()
    assert replay(path, service.process_item) == 3
    assert service.stats.gaps == 0 and service.stats.resyncs == 1 and service.stats.books_ready == 2
    book = service.book("BTC-USD")
    assert book is not None
    assert book.bids() == [(Decimal("99.00"), Decimal("4"))]
    assert book.asks() == [(Decimal("102.00"), Decimal("5"))]


async def test_replay_detects_a_gap_inside_one_connection(tmp_path: Path) -> None:
    path = tmp_path / "gap.jsonl.gz"
    snap = L2_FRAME % (0, "snapshot", ",".join([_level("bid", "100.00", "1"), _level("offer", "101.00", "2")]))
    await _write_recording(path, [(1, 1), (2, snap), (3, L2_FRAME % (2, "update", _level("bid", "100.00", "0")))])
    service = _service()
    replay(path, service.process_item)
    assert service.stats.gaps == 1
    assert service.book("BTC-USD") is None  # a book known to be wrong is never handed out


# --- synthetic stream --------------------------------------------------------------------


def test_synthetic_stream_is_seeded_and_well_formed() -> None:
    frames = list(synthetic_l2_frames("ETH-USD", seed=3, snapshot_levels=40, updates=300, max_levels_per_update=6))
    assert frames == list(synthetic_l2_frames("ETH-USD", seed=3, snapshot_levels=40, updates=300, max_levels_per_update=6))
    assert frames != list(synthetic_l2_frames("ETH-USD", seed=4, snapshot_levels=40, updates=300, max_levels_per_update=6))
    assert len(frames) == 301
    first = orjson.loads(frames[0])
    assert first["channel"] == "l2_data" and first["sequence_num"] == 0
    assert first["events"][0]["type"] == "snapshot" and first["events"][0]["product_id"] == "ETH-USD"
    assert len(first["events"][0]["updates"]) == 40
    deletions = changes = 0
    for seq, raw in enumerate(frames[1:], start=1):
        msg = orjson.loads(raw)
        assert msg["sequence_num"] == seq and msg["events"][0]["type"] == "update"
        updates = msg["events"][0]["updates"]
        assert 1 <= len(updates) <= 6
        changes += len(updates)
        deletions += sum(u["new_quantity"] == "0" for u in updates)
    assert 0.2 < deletions / changes < 0.4  # ~30 % deletions by default


def test_synthetic_stream_through_the_service_never_crosses_and_stays_near_the_top() -> None:
    service = _service("ETH-USD")
    frames = list(synthetic_l2_frames("ETH-USD", seed=11, snapshot_levels=200, updates=2000, mid_ticks=300_000))
    for raw in frames:
        service.process_frame(raw)
    stats = service.stats
    assert stats.frames == 2001 and stats.gaps == 0 and stats.resyncs == 0 and stats.crossed == 0 and stats.malformed == 0
    book = service.book("ETH-USD")
    assert book is not None
    best_bid, best_ask = book.best_bid(), book.best_ask()
    assert best_bid is not None and best_ask is not None
    assert best_bid[0] < Decimal("3000.00") < best_ask[0]
    # level changes cluster near the mid: every updated level is within a few hundred ticks of it
    far = [
        u for raw in frames[1:] for u in orjson.loads(raw)["events"][0]["updates"]
        if abs(Decimal(u["price_level"]) - Decimal("3000.00")) > Decimal("2.00")
    ]
    assert len(far) < 0.01 * stats.level_updates
    assert book.size_at(BookSide.BID, best_bid[0]) == best_bid[1]


# --- argument checks (no network) ----------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"products": []}, "record.products"),
        ({"channels": []}, "record.channels"),
        ({"duration": 0.0}, "record.duration"),
        ({"duration": -1.0}, "record.duration"),
        ({"max_frames": 0}, "record.max_frames"),
    ],
)
async def test_record_refuses_bad_arguments(tmp_path: Path, kwargs: dict[str, object], key: str) -> None:
    args: dict[str, object] = {"products": ["BTC-USD"], **kwargs}
    products = args.pop("products")
    with pytest.raises(ConfigError) as info:
        await record("ws://127.0.0.1:9/ws", products, tmp_path / "x.jsonl.gz", **args)  # type: ignore[arg-type]
    assert [k for k, _ in info.value.problems] == [key]
    assert not (tmp_path / "x.jsonl.gz").exists()


async def test_record_refuses_a_bad_url(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ws:// or wss://"):
        await record("ftp://example", ["BTC-USD"], tmp_path / "x.jsonl.gz", duration=1.0)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--products", " , "], "--products: name at least one product id"),
        (["--products", "BTC-USD", "--channels", ","], "--channels: name at least one channel"),
        (["--products", "BTC-USD", "--duration", "0"], "--duration: must be > 0 seconds"),
        (["--products", "BTC-USD", "--ws-url", "http//nope"], "url: expected a ws:// or wss:// URL"),
    ],
)
def test_record_command_bad_flags_exit_2(runner: CliRunner, tmp_path: Path, args: list[str], fragment: str) -> None:
    result = runner.invoke(app, ["record", *args, "--out", str(tmp_path / "r.jsonl.gz")])
    assert result.exit_code == EXIT_BAD_ARGS, result.output
    assert "cryptoj record:" in result.output and fragment in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "r.jsonl.gz").exists()


def test_record_command_missing_out_directory_exits_2(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "missing" / "r.jsonl.gz"
    result = runner.invoke(app, ["record", "-p", "BTC-USD", "-o", str(out), "--duration", "1"])
    assert result.exit_code == EXIT_BAD_ARGS
    assert f"--out: directory {out.parent} does not exist" in result.output


def test_record_command_unwritable_out_exits_2(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "a-directory.jsonl.gz"
    out.mkdir()
    result = runner.invoke(app, ["record", "-p", "BTC-USD", "-o", str(out), "--duration", "1", "--ws-url", "ws://127.0.0.1:9/ws"])
    assert result.exit_code == EXIT_BAD_ARGS
    assert f"cryptoj record: cannot write {out}" in result.output
