"""MarketDataService fed raw frames (bytes) through the real Coinbase parser and the real book."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from structlog.testing import capture_logs

from cryptoj.errors import ConfigError, InvalidValue
from cryptoj.market_data import (
    BookReady,
    BookResync,
    BookUpdated,
    CandleClosed,
    DataFresh,
    Lagged,
    MarketDataConfig,
    MarketDataService,
    StaleData,
)
from cryptoj.model.candles import Candle, Timeframe
from cryptoj.model.events import CandleEvent, MarketTrade, TickerEvent
from cryptoj.venues.coinbase.protocol import parse_candles, parse_envelope
from cryptoj.websocket_handler import OverflowPolicy, WsConnected, WsDisconnected, WsFrame, WsItem, WsOverflow

pytestmark = pytest.mark.unit

D = Decimal
T0 = datetime(2026, 4, 7, 14, 30, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Feed:
    """Builds Coinbase frames with a running per-connection sequence number."""

    def __init__(self) -> None:
        self.seq = 0

    def _env(self, channel: str, events: list[dict[str, Any]], seq: int | None = None) -> bytes:
        if seq is None:
            seq = self.seq
            self.seq += 1
        return orjson.dumps(
            {
                "channel": channel,
                "client_id": "",
                "timestamp": "2026-04-07T14:30:00.000000Z",
                "sequence_num": seq,
                "events": events,
            }
        )

    def l2(self, pid: str, kind: str, levels: Sequence[tuple[str, str, str]], seq: int | None = None) -> bytes:
        updates = [
            {"side": s, "event_time": "2026-04-07T14:30:00.000000Z", "price_level": p, "new_quantity": q} for s, p, q in levels
        ]
        return self._env("l2_data", [{"type": kind, "product_id": pid, "updates": updates}], seq)

    def snapshot(self, pid: str, bids: Sequence[tuple[str, str]], asks: Sequence[tuple[str, str]]) -> bytes:
        return self.l2(pid, "snapshot", [("bid", p, q) for p, q in bids] + [("offer", p, q) for p, q in asks])

    def update(self, pid: str, *levels: tuple[str, str, str], seq: int | None = None) -> bytes:
        return self.l2(pid, "update", levels, seq)

    def trade(self, pid: str, price: str, size: str, when: datetime, tid: str = "1", side: str = "BUY") -> bytes:
        t = {"trade_id": tid, "product_id": pid, "price": price, "size": size, "side": side, "time": when.isoformat()}
        return self._env("market_trades", [{"type": "update", "trades": [t]}])

    def ticker(self, pid: str, price: str) -> bytes:
        t = {"type": "ticker", "product_id": pid, "price": price, "best_bid": price, "best_ask": price}
        return self._env("ticker", [{"type": "update", "tickers": [t]}])

    def heartbeat(self, n: int) -> bytes:
        return self._env("heartbeats", [{"current_time": "2026-04-07T14:30:00Z", "heartbeat_counter": n}])


class FakeStream:
    """Stands in for the WebSocket handler's control surface (records what the service asks)."""

    def __init__(self, items: Sequence[WsItem] = ()) -> None:
        self.queue: asyncio.Queue[WsItem | None] = asyncio.Queue()
        for item in items:
            self.queue.put_nowait(item)
        self.resubscribed: list[tuple[str, list[str] | None]] = []
        self.reconnects: list[str] = []
        self.changed = asyncio.Event()

    async def resubscribe(self, channel: str, product_ids: Sequence[str] | None = None) -> None:
        self.resubscribed.append((channel, None if product_ids is None else list(product_ids)))
        self.changed.set()

    async def request_reconnect(self, reason: str = "requested") -> None:
        self.reconnects.append(reason)
        self.changed.set()

    async def __aiter__(self) -> AsyncIterator[WsItem]:
        while (item := await self.queue.get()) is not None:
            yield item


def service(products: tuple[str, ...] = ("BTC-USD", "ETH-USD"), clock: Clock | None = None, **kw: Any) -> MarketDataService:
    config = MarketDataConfig(products=products, **kw)
    return MarketDataService(config, parse=parse_envelope, clock=clock or Clock(), wall_clock=lambda: T0)


def drain(sub: Any) -> list[Any]:
    out = []
    while (e := sub.get_nowait()) is not None:
        out.append(e)
    return out


BIDS = [("100.00", "1"), ("99.50", "2"), ("99.00", "3")]
ASKS = [("100.50", "1"), ("101.00", "2")]


async def wait_until(predicate: Any) -> None:
    async with asyncio.timeout(10):
        while not predicate():
            await asyncio.sleep(0.001)


class TestMarketData:
    # -- real-time updates ------------------------------------------------------

    def test_fixture_snapshot_then_update_gives_exact_book(self, coinbase_fixtures: Path) -> None:
        svc = service(("BTC-USD",))
        sub = svc.subscribe([BookReady, BookUpdated])
        assert svc.book("BTC-USD") is None  # no snapshot yet: never readable
        svc.process_frame((coinbase_fixtures / "ws_l2_data_snapshot.json").read_bytes())
        book = svc.book("BTC-USD")
        assert book is not None
        assert book.depth(3) == (
            [(D("68900.00"), D("1.5")), (D("68899.50"), D("0.75")), (D("68899.00"), D("2.3"))],
            [(D("68901.00"), D("0.5")), (D("68901.50"), D("1.2")), (D("68902.00"), D("0.8"))],
        )
        svc.process_frame((coinbase_fixtures / "ws_l2_data_update.json").read_bytes())
        assert svc.depth("BTC-USD", 2) == (
            [(D("68900.00"), D("2")), (D("68899.50"), D("0.75"))],
            [(D("68901.50"), D("1.2")), (D("68902.00"), D("0.8"))],
        )
        events = drain(sub)
        assert events[0] == BookReady("BTC-USD", 0, 6)
        assert events[1] == BookUpdated("BTC-USD", 0, (D("68900.00"), D("1.5")), (D("68901.00"), D("0.5")))
        assert events[2] == BookUpdated("BTC-USD", 1, (D("68900.00"), D("2")), (D("68901.50"), D("1.2")))
        assert svc.best_bid_ask("BTC-USD") == ((D("68900.00"), D("2")), (D("68901.50"), D("1.2")))
        assert svc.stats.gaps == 0 and svc.stats.level_updates == 8

    def test_fixture_ticker_trades_heartbeat_subscriptions(self, coinbase_fixtures: Path) -> None:
        svc = service(("BTC-USD", "ETH-USD"))
        sub = svc.subscribe([TickerEvent, MarketTrade], products=["BTC-USD"])
        for name in ("ws_subscriptions.json", "ws_heartbeats.json", "ws_ticker.json", "ws_market_trades.json"):
            svc.process_frame((coinbase_fixtures / name).read_bytes())
        ticker = svc.ticker("BTC-USD")
        assert ticker is not None and ticker.price == D("68900.50") and ticker.best_ask == D("68901.00")
        assert [t.trade_id for t in svc.trades("BTC-USD")] == ["995098700", "995098701"]
        assert svc.last_price("BTC-USD") == D("68900.00")
        events = drain(sub)
        assert [type(e).__name__ for e in events] == ["TickerEvent", "MarketTrade", "MarketTrade"]
        assert svc.ticker("ETH-USD") is None and svc.trades("ETH-USD") == []

    def test_subscription_filters_by_kind_and_product(self) -> None:
        svc = service()
        feed = Feed()
        btc = svc.subscribe([BookReady], products=["BTC-USD"])
        every = svc.subscribe([BookReady])
        svc.process_frame(feed.snapshot("BTC-USD", BIDS, ASKS))
        svc.process_frame(feed.snapshot("ETH-USD", BIDS, ASKS))
        assert [e.product_id for e in drain(btc)] == ["BTC-USD"]
        assert [e.product_id for e in drain(every)] == ["BTC-USD", "ETH-USD"]
        with pytest.raises(InvalidValue, match="name at least one"):
            svc.subscribe([])
        with pytest.raises(InvalidValue, match="not published"):
            svc.subscribe([CandleEvent])
        with pytest.raises(InvalidValue, match="not a market-data product"):
            svc.subscribe([BookReady], products=["DOGE-USD"])

    def test_slow_subscriber_is_told_it_lagged(self) -> None:
        svc = service(("BTC-USD",))
        feed = Feed()
        sub = svc.subscribe([BookUpdated], maxsize=3)
        svc.process_frame(feed.snapshot("BTC-USD", BIDS, ASKS))
        for i in range(6):
            svc.process_frame(feed.update("BTC-USD", ("bid", "99.00", str(i + 10))))
        events = drain(sub)
        assert events[0] == Lagged(4)
        assert [e.sequence_num for e in events[1:]] == [4, 5, 6]
        assert sub.dropped == 4 and svc.stats.lagged_events == 4

    async def test_async_iteration_and_close(self) -> None:
        svc = service(("BTC-USD",))
        feed = Feed()
        got: list[object] = []

        async def reader() -> None:
            async with svc.subscribe([BookReady, BookUpdated]) as sub:
                async for event in sub:
                    got.append(event)
                    if isinstance(event, BookUpdated):
                        return

        task = asyncio.ensure_future(reader())
        await asyncio.sleep(0)
        svc.process_frame(feed.snapshot("BTC-USD", BIDS, ASKS))
        async with asyncio.timeout(10):
            await task
        assert [type(e) for e in got] == [BookReady, BookUpdated]
        sub = svc.subscribe([BookResync])
        pending = asyncio.ensure_future(sub.__anext__())
        await asyncio.sleep(0)
        await svc.close()
        with pytest.raises(StopAsyncIteration):
            await pending
        late = svc.subscribe([BookResync])
        assert late.closed

    # -- error recovery -----------------------------------------------------------------

    def test_sequence_gap_invalidates_every_book_and_snapshot_restores(self) -> None:
        svc = service()
        feed = Feed()
        sub = svc.subscribe([BookResync, BookReady])
        svc.process_frame(feed.snapshot("BTC-USD", BIDS, ASKS))
        svc.process_frame(feed.snapshot("ETH-USD", BIDS, ASKS))
        drain(sub)
        feed.seq += 3  # three messages lost
        with capture_logs() as logs:
            svc.process_frame(feed.update("BTC-USD", ("bid", "99.75", "1")))
        assert svc.book("BTC-USD") is None and svc.book("ETH-USD") is None
        assert svc.best_bid_ask("BTC-USD") is None and svc.depth("ETH-USD", 5) is None
        assert drain(sub) == [BookResync("BTC-USD", "sequence gap", 2, 5), BookResync("ETH-USD", "sequence gap", 2, 5)]
        assert any(e["event"] == "market_data_sequence_gap" for e in logs)
        # updates while invalid are ignored, not applied to a book known to be wrong
        svc.process_frame(feed.update("BTC-USD", ("bid", "99.80", "1")))
        assert svc.stats.ignored_updates == 2
        # a fresh snapshot makes it valid again, exactly as sent
        svc.process_frame(feed.snapshot("BTC-USD", [("98.00", "4")], [("102.00", "5")]))
        book = svc.book("BTC-USD")
        assert book is not None and book.depth(10) == ([(D("98.00"), D("4"))], [(D("102.00"), D("5"))])
        assert drain(sub) == [BookReady("BTC-USD", 7, 2)]
        assert svc.stats.gaps == 1 and svc.stats.resyncs == 2 and svc.stats.books_ready == 3

    def test_out_of_order_message_is_a_gap(self) -> None:
        svc = service(("BTC-USD",))
        feed = Feed()
        svc.process_frame(feed.snapshot("BTC-USD", BIDS, ASKS))
        svc.process_frame(feed.update("BTC-USD", ("bid", "99.00", "9")))
        svc.process_frame(feed.update("BTC-USD", ("bid", "99.00", "8"), seq=1))  # old message again
        assert svc.book("BTC-USD") is None
        assert svc.stats.gaps == 1
        # the next in-order message does not count as another gap
        svc.process_frame(feed.update("BTC-USD", ("bid", "99.00", "7")))
        assert svc.stats.gaps == 1

    def test_crossed_book_invalidates_only_that_product(self) -> None:
        svc = service()
        feed = Feed()
        sub = svc.subscribe([BookResync])
        svc.process_frame(feed.snapshot("BTC-USD", BIDS, ASKS))
        svc.process_frame(feed.snapshot("ETH-USD", BIDS, ASKS))
        svc.process_frame(feed.update("BTC-USD", ("bid", "100.50", "1")))  # bid at the best ask: locked/crossed
        assert svc.book("BTC-USD") is None
        assert svc.book("ETH-USD") is not None
        assert drain(sub) == [BookResync("BTC-USD", "crossed book")]
        assert svc.stats.crossed == 1
        svc.process_frame(feed.snapshot("ETH-USD", [("101", "1")], [("100", "1")]))  # a crossed snapshot
        assert svc.book("ETH-USD") is None
        assert drain(sub) == [BookResync("ETH-USD", "crossed snapshot")]

    def test_invalid_level_in_update_or_snapshot_resyncs(self) -> None:
        svc = service(("BTC-USD",))
        feed = Feed()
        svc.process_frame(feed.snapshot("BTC-USD", BIDS, ASKS))
        svc.process_frame(feed.update("BTC-USD", ("bid", "0", "1")))  # price 0 parses, the book refuses it
        assert svc.book("BTC-USD") is None
        svc.process_frame(feed.snapshot("BTC-USD", [("0", "1")], ASKS))
        assert svc.book("BTC-USD") is None
        assert "bad snapshot" in (svc._products["BTC-USD"].resync_reason or "")

    def test_malformed_frames_are_logged_counted_and_the_stream_continues(self) -> None:
        svc = service(("BTC-USD",))
        feed = Feed()
        svc.process_frame(feed.snapshot("BTC-USD", BIDS, ASKS))
        with capture_logs() as logs:
            svc.process_frame(b"{not json")
            svc.process_frame(b'{"channel":"ticker","sequence_num":1,"events":[{"tickers":[{"price":"1"}]}]}', seq_hint=1)
            feed.seq = 2
        assert svc.stats.malformed == 2
        assert [e["count"] for e in logs if e["event"] == "market_data_malformed"] == [1, 2]
        assert svc.book("BTC-USD") is not None  # not a level2 frame and no sequence lost
        svc.process_frame(feed.update("BTC-USD", ("bid", "99.00", "5")))
        depth = svc.depth("BTC-USD", 3)
        assert depth is not None and depth[0][2] == (D("99.00"), D("5"))
        # a malformed level2 frame means a book update was lost: resync
        bad_l2 = (
            b'{"channel":"l2_data","sequence_num":3,"events":[{"type":"update","product_id":"BTC-USD","updates":[{"side":"x"}]}]}'
        )
        svc.process_frame(bad_l2, seq_hint=3)
        assert svc.book("BTC-USD") is None
        assert svc.stats.gaps == 0 and svc.stats.malformed == 3

    def test_malformed_frame_with_unexpected_sequence_counts_gap(self) -> None:
        svc = service(("BTC-USD",))
        feed = Feed()
        svc.process_frame(feed.snapshot("BTC-USD", BIDS, ASKS))
        svc.process_frame(b'{"channel":"ticker","sequence_num":5,"events":7}', seq_hint=5)
        assert svc.stats.gaps == 1 and svc.book("BTC-USD") is None

    def test_venue_error_unknown_channel_and_status(self) -> None:
        svc = service(("BTC-USD",))
        with capture_logs() as logs:
            svc.process_frame(b'{"type":"error","message":"failure to subscribe"}')
            svc.process_frame(b'{"channel":"rfq_matches","sequence_num":0,"events":[]}')
            svc.process_frame(
                b'{"channel":"status","sequence_num":1,"timestamp":"2026-04-07T14:30:00Z","events":[{"type":"snapshot",'
                b'"products":[{"id":"BTC-USD","status":"online","base_increment":"0.00000001","quote_increment":"0.01"}]}]}'
            )
        assert svc.stats.venue_errors == 1 and svc.stats.unknown_channels == 1
        assert any(e["event"] == "market_data_venue_error" for e in logs)
        status = svc.status("BTC-USD")
        assert status is not None and status.status == "online"

    def test_connection_events(self) -> None:
        svc = service(("BTC-USD",))
        feed = Feed()
        sub = svc.subscribe([BookResync])
        svc.process_item(WsConnected(1, reconnect=False))
        svc.process_item(WsFrame(feed.snapshot("BTC-USD", BIDS, ASKS), 1, 1, 0))
        assert svc.book("BTC-USD") is not None
        svc.process_item(WsDisconnected(1, "stall"))
        assert svc.book("BTC-USD") is None
        assert drain(sub) == [BookResync("BTC-USD", "disconnected: stall")]
        assert svc._pending_resync == set()  # the new connection resubscribes by itself
        # a new connection starts its own sequence at 0: not a gap
        svc.process_item(WsConnected(2, reconnect=True))
        feed.seq = 0
        svc.process_item(WsFrame(feed.snapshot("BTC-USD", BIDS, ASKS), 1, 2, 0))
        assert svc.book("BTC-USD") is not None and svc.stats.gaps == 0
        svc.process_item(WsOverflow(2, 10, OverflowPolicy.RESYNC))
        assert svc.book("BTC-USD") is None
        assert svc._pending_resync == {"BTC-USD"}

    async def test_consume_loop_resubscribes_after_gap_and_reconnects_on_timeout(self) -> None:
        clock = Clock()
        svc = service(("BTC-USD", "ETH-USD"), clock=clock, resync_timeout_s=5.0, housekeeping_interval_s=3600)
        feed = Feed()
        stream = FakeStream([WsConnected(1, False)])
        svc.start(stream)
        svc.start(stream)  # idempotent
        stream.queue.put_nowait(WsFrame(feed.snapshot("BTC-USD", BIDS, ASKS), 0, 1, None))
        stream.queue.put_nowait(WsFrame(feed.snapshot("ETH-USD", BIDS, ASKS), 0, 1, None))
        feed.seq += 1
        stream.queue.put_nowait(WsFrame(feed.heartbeat(1), 0, 1, None))
        await wait_until(lambda: stream.resubscribed)
        assert stream.resubscribed == [("level2", ["BTC-USD", "ETH-USD"])]
        # snapshot for BTC arrives, ETH's does not
        stream.queue.put_nowait(WsFrame(feed.snapshot("BTC-USD", BIDS, ASKS), 0, 1, None))
        await wait_until(lambda: svc.book("BTC-USD") is not None)
        await svc.housekeeping()
        assert stream.reconnects == []
        clock.t += 5.0
        await svc.housekeeping()
        assert stream.reconnects == ["resync timeout"]
        await svc.housekeeping()  # timer restarted: not again at once
        assert stream.reconnects == ["resync timeout"]
        stream.queue.put_nowait(None)
        await svc.close()
        with pytest.raises(InvalidValue, match="closed"):
            svc.start()

    # -- staleness -----------------------------------------------------------------------

    async def test_staleness_events_and_is_stale(self) -> None:
        clock = Clock()
        svc = service(("BTC-USD", "ETH-USD"), clock=clock, stale_after_s=2.0)
        feed = Feed()
        sub = svc.subscribe([StaleData, DataFresh])
        assert svc.is_stale("BTC-USD") and svc.data_age("BTC-USD") is None
        svc.process_frame(feed.ticker("BTC-USD", "100"))
        assert not svc.is_stale("BTC-USD")
        svc.check_staleness()
        assert drain(sub) == []  # within the start-up grace period
        clock.t += 2.5
        svc.check_staleness()
        assert drain(sub) == [StaleData("BTC-USD", 2.5, 2.0), StaleData("ETH-USD", None, 2.0)]
        assert svc.is_stale("BTC-USD")
        svc.check_staleness()
        assert drain(sub) == []  # once per transition
        svc.process_frame(feed.ticker("BTC-USD", "101"))
        svc.check_staleness()
        assert drain(sub) == [DataFresh("BTC-USD")]
        assert svc.stats.stale_events == 2
        with pytest.raises(InvalidValue, match="not a market-data product"):
            svc.is_stale("XRP-USD")

    async def test_housekeeping_task_runs_and_close_cancels_it(self) -> None:
        clock = Clock()
        svc = service(("BTC-USD",), clock=clock, stale_after_s=1.0, housekeeping_interval_s=0.001)
        sub = svc.subscribe([StaleData])
        svc.start()
        clock.t += 5
        async with asyncio.timeout(10):
            event = await sub.__anext__()
        assert event == StaleData("BTC-USD", None, 1.0)
        tasks = list(svc._tasks)
        await svc.close()
        assert all(t.done() for t in tasks)

    # -- price history management ----------------------------------------------------------

    def test_trade_tape_and_price_history_are_bounded(self) -> None:
        svc = service(("BTC-USD",), trade_tape_size=5, price_history_size=3)
        feed = Feed()
        for i in range(10):
            svc.process_frame(feed.trade("BTC-USD", f"{100 + i}", "1", T0 + timedelta(seconds=i), tid=str(i)))
        assert [t.trade_id for t in svc.trades("BTC-USD")] == ["5", "6", "7", "8", "9"]
        assert svc.price_history("BTC-USD") == [(T0 + timedelta(seconds=i), D(100 + i)) for i in (7, 8, 9)]
        assert svc.last_price("BTC-USD") == D(109)

    def test_ticker_as_price_history_source(self) -> None:
        svc = service(("BTC-USD",), price_history_source="ticker")
        feed = Feed()
        svc.process_frame(feed.ticker("BTC-USD", "123.45"))
        svc.process_frame(feed.trade("BTC-USD", "99", "1", T0))
        assert [p for _, p in svc.price_history("BTC-USD")] == [D("123.45")]

    def test_candles_from_trades_every_timeframe(self) -> None:
        svc = service(("BTC-USD",), candle_timeframes=(Timeframe.ONE_MINUTE, Timeframe.FIVE_MINUTE))
        feed = Feed()
        sub = svc.subscribe([CandleClosed])
        prices = ["100", "103", "99", "101", "102", "104", "98"]
        for i, p in enumerate(prices):  # one trade every 50 s
            svc.process_frame(feed.trade("BTC-USD", p, "0.5", T0 + timedelta(seconds=50 * i), tid=str(i)))
        one_minute = svc.candles("BTC-USD", Timeframe.ONE_MINUTE)
        assert [c.start for c in one_minute] == [T0 + timedelta(minutes=m) for m in range(5)]
        assert one_minute[0] == Candle(T0, D(100), D(103), D(100), D(103), D(1), 2)
        five = svc.candles("BTC-USD", Timeframe.FIVE_MINUTE, include_current=True)
        assert five == [
            Candle(T0, D(100), D(104), D(99), D(104), D(3), 6),
            Candle(T0 + timedelta(minutes=5), D(98), D(98), D(98), D(98), D("0.5"), 1),
        ]
        closed = drain(sub)
        assert [c.timeframe for c in closed] == [Timeframe.ONE_MINUTE] * 5 + [Timeframe.FIVE_MINUTE]
        # a late trade cannot change a closed candle: counted, once per timeframe
        svc.process_frame(feed.trade("BTC-USD", "500", "1", T0, tid="late"))
        assert svc.stats.late_trades == 2
        assert svc.candles("BTC-USD", Timeframe.ONE_MINUTE)[0].high == D(103)
        with pytest.raises(InvalidValue, match="not aggregated"):
            svc.candles("BTC-USD", Timeframe.ONE_DAY)

    def test_time_closes_candles_without_trades(self) -> None:
        svc = service(("BTC-USD",), candle_timeframes=(Timeframe.ONE_MINUTE,))
        feed = Feed()
        sub = svc.subscribe([CandleClosed])
        svc.process_frame(feed.trade("BTC-USD", "100", "1", T0))
        svc.close_due_candles(T0 + timedelta(seconds=30))
        assert drain(sub) == []
        svc.close_due_candles(T0 + timedelta(minutes=1))
        assert [e.candle.close for e in drain(sub)] == [D(100)]

    def test_ws_candles_channel_merges_five_minute_bars(self, coinbase_fixtures: Path) -> None:
        svc = service(("BTC-USD",), candle_timeframes=(Timeframe.ONE_MINUTE, Timeframe.FIVE_MINUTE))
        svc.process_frame((coinbase_fixtures / "ws_candles.json").read_bytes())
        bars = svc.candles("BTC-USD", Timeframe.FIVE_MINUTE, include_current=True)
        assert bars == [
            Candle(datetime.fromtimestamp(1775521800, UTC), D("68900"), D("68950"), D("68850"), D("68920.5"), D("42.15"))
        ]
        assert svc.candles("BTC-USD", Timeframe.ONE_MINUTE, include_current=True) == []

    async def test_backfill_from_rest_candles_in_windows_of_300(self, coinbase_fixtures: Path) -> None:
        calls: list[tuple[str, Timeframe, datetime, datetime]] = []

        async def fetch(pid: str, tf: Timeframe, start: datetime, end: datetime) -> Sequence[Candle | CandleEvent]:
            calls.append((pid, tf, start, end))
            # one bar per bucket in the window, like the exchange (newest first)
            bars = []
            t = end - tf.delta
            while t >= start:
                bars.append(Candle(t, D(100), D(101), D(99), D(100), D(1)))
                t -= tf.delta
            return bars

        now = datetime(2026, 4, 7, 12, 0, tzinfo=UTC)
        svc = MarketDataService(
            MarketDataConfig(
                products=("BTC-USD",), candle_timeframes=(Timeframe.ONE_HOUR,), backfill_candles=450, candle_history=1000
            ),
            parse=parse_envelope,
            fetch_candles=fetch,
            clock=Clock(),
            wall_clock=lambda: now,
        )
        loaded = await svc.backfill()
        assert [(c[2], c[3]) for c in calls] == [
            (now - timedelta(hours=300), now),
            (now - timedelta(hours=450), now - timedelta(hours=300)),
        ]
        assert loaded == 450
        history = svc.candles("BTC-USD", Timeframe.ONE_HOUR, include_current=True)
        assert (
            len(history) == 450
            and history[0].start == now - timedelta(hours=450)
            and history[-1].start == now - timedelta(hours=1)
        )
        assert svc.last_price("BTC-USD") == D(100)

        # the fixture REST payload, parsed by the protocol, feeds the same path
        body = orjson.loads((coinbase_fixtures / "http_candles.json").read_bytes())

        async def fixture_fetch(pid: str, tf: Timeframe, start: datetime, end: datetime) -> Sequence[Candle | CandleEvent]:
            return parse_candles(body, pid)

        svc2 = MarketDataService(
            MarketDataConfig(products=("BTC-USD",), candle_timeframes=(Timeframe.ONE_HOUR,), backfill_candles=2),
            parse=parse_envelope,
            fetch_candles=fixture_fetch,
        )
        assert await svc2.backfill() == 2
        assert [c.close for c in svc2.candles("BTC-USD", Timeframe.ONE_HOUR, include_current=True)] == [
            D("66314.59"),
            D("66181.6"),
        ]

    async def test_backfill_disabled_or_empty(self) -> None:
        async def empty(pid: str, tf: Timeframe, start: datetime, end: datetime) -> Sequence[Candle | CandleEvent]:
            return []

        assert await service(("BTC-USD",)).backfill() == 0
        svc = MarketDataService(
            MarketDataConfig(products=("BTC-USD",), backfill_candles=600), parse=parse_envelope, fetch_candles=empty
        )
        assert await svc.backfill() == 0
        off = MarketDataService(
            MarketDataConfig(products=("BTC-USD",), backfill_candles=0), parse=parse_envelope, fetch_candles=empty
        )
        assert await off.backfill() == 0

    # -- configuration -------------------------------------------------------------------------

    def test_bad_configuration_lists_every_problem(self) -> None:
        with pytest.raises(ConfigError) as info:
            MarketDataConfig(
                products=("BTCUSD",),
                stale_after_s=0,
                trade_tape_size=0,
                backfill_candles=-1,
                price_history_source="mid",
                candle_timeframes=("1m",),  # type: ignore[arg-type]
            )
        keys = [k for k, _ in info.value.problems]
        assert keys == [
            "market_data.products",
            "market_data.stale_after_s",
            "market_data.trade_tape_size",
            "market_data.backfill_candles",
            "market_data.price_history_source",
            "market_data.candle_timeframes",
        ]
        with pytest.raises(ConfigError, match="at least one product"):
            MarketDataConfig(products=())

    def test_unknown_products_in_frames_are_ignored(self) -> None:
        svc = service(("BTC-USD",))
        feed = Feed()
        svc.process_frame(feed.snapshot("SOL-USD", BIDS, ASKS))
        svc.process_frame(feed.update("SOL-USD", ("bid", "1", "1")))
        svc.process_frame(feed.trade("SOL-USD", "1", "1", T0))
        svc.process_frame(feed.ticker("SOL-USD", "1"))
        assert svc.products == ["BTC-USD"]
        assert svc.stats.frames == 4 and svc.stats.gaps == 0
