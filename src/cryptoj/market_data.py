"""The market data service: books, tickers, trades, candles, price history, staleness.

:class:`MarketDataService` turns a stream of WebSocket items
(:mod:`cryptoj.websocket_handler`) into state the engine and strategies read, and
into events they subscribe to. Parsing is done by the ``parse`` function it is
given (the venue's sans-IO protocol, e.g.
:func:`cryptoj.venues.coinbase.protocol.parse_envelope`), so live, simulated and
recorded streams go through exactly the same code.

Guarantees (see ``docs/market-data.md``):

* **A consumer never reads a book known to be wrong.** ``sequence_num`` is checked
  on every message of the connection (Coinbase numbers messages per connection,
  shared by all channels). A gap, an out-of-order message, a malformed level-2
  frame, a disconnect or a consumer overflow marks *every* book fed by that
  connection invalid; a crossed book or an invalid level marks that one book
  invalid. :meth:`MarketDataService.book` returns ``None`` for an invalid book,
  and a :class:`BookResync` event is published.
* **Recovery is by a fresh snapshot from the stream**: ``level2`` is unsubscribed
  and subscribed again on the live connection (Coinbase then sends a new
  snapshot); updates for an invalid book are ignored until it arrives. If no
  snapshot arrives within ``resync_timeout_s`` the connection is re-opened, which
  re-subscribes everything. (A REST ``product_book`` cannot be stitched to the
  stream: Coinbase gives no sequence to line it up with buffered updates.)
  :class:`BookReady` is published when the book is valid again.
* **Staleness**: a product whose last market data (book, ticker or trade) is older
  than ``stale_after_s`` is stale; :class:`StaleData` is published when it
  becomes stale and :class:`DataFresh` when data flows again.
* **Bounded memory**: trade tape, price history, candle history and every
  subscriber queue are bounded; a subscriber that falls behind loses its oldest
  events and is told so by a :class:`Lagged` event (never silently).

The one subscription API is an async iterator::

    async with service.subscribe(kinds=[MarketTrade, BookResync], products=["BTC-USD"]) as events:
        async for event in events:
            ...
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol

import structlog

from cryptoj.errors import ConfigError, InvalidValue, MalformedMessage
from cryptoj.model.book import BookSide, Level, OrderBook, TextLevel
from cryptoj.model.candles import Candle, CandleAggregator, Timeframe
from cryptoj.model.events import (
    CandleEvent,
    Envelope,
    Heartbeat,
    L2Snapshot,
    L2Update,
    MarketTrade,
    StatusEvent,
    SubscriptionAck,
    TickerEvent,
    UnknownChannel,
    VenueErrorMessage,
)
from cryptoj.websocket_handler import WsConnected, WsDisconnected, WsFrame, WsItem, WsOverflow

__all__ = [
    "BookReady",
    "BookResync",
    "BookUpdated",
    "CandleClosed",
    "CandleFetcher",
    "DataFresh",
    "Lagged",
    "MarketDataConfig",
    "MarketDataService",
    "MarketDataStats",
    "RestCandles",
    "StaleData",
    "StreamControl",
    "Subscription",
    "rest_candle_fetcher",
]

log = structlog.get_logger(__name__)

ALL_TIMEFRAMES: tuple[Timeframe, ...] = tuple(Timeframe)
REST_CANDLE_LIMIT = 300


# --- events the service publishes (besides the venue's TickerEvent / MarketTrade) ---


@dataclass(frozen=True, slots=True)
class BookUpdated:
    """A valid book changed (snapshot or update). Read the book itself for depth."""

    product_id: str
    sequence_num: int
    best_bid: Level | None
    best_ask: Level | None


@dataclass(frozen=True, slots=True)
class BookResync:
    """The book became invalid; ``reason`` says why. It is being rebuilt."""

    product_id: str
    reason: str
    expected: int | None = None
    received: int | None = None


@dataclass(frozen=True, slots=True)
class BookReady:
    """The book is valid again (a fresh snapshot was applied)."""

    product_id: str
    sequence_num: int
    levels: int


@dataclass(frozen=True, slots=True)
class StaleData:
    """No market data for ``product_id`` for ``age_s`` seconds (limit ``limit_s``).

    ``age_s`` is None when the product has had no data at all since start.
    (The exception :class:`cryptoj.errors.StaleData` is what risk raises; this is the event.)
    """

    product_id: str
    age_s: float | None
    limit_s: float


@dataclass(frozen=True, slots=True)
class DataFresh:
    """Data flows again for a product that was stale."""

    product_id: str


@dataclass(frozen=True, slots=True)
class CandleClosed:
    """A candle of ``timeframe`` closed (from trades, or replaced by the exchange's bar)."""

    product_id: str
    timeframe: Timeframe
    candle: Candle


@dataclass(frozen=True, slots=True)
class Lagged:
    """This subscriber fell behind; ``dropped`` of its oldest events were discarded."""

    dropped: int


# --- configuration and collaborators ---------------------------------------


@dataclass(frozen=True, slots=True)
class MarketDataConfig:
    """Settings of the service; invalid values raise :class:`~cryptoj.errors.ConfigError`."""

    products: tuple[str, ...]
    stale_after_s: float = 10.0
    housekeeping_interval_s: float = 0.25
    resync_timeout_s: float = 5.0
    trade_tape_size: int = 1000
    price_history_size: int = 10_000
    price_history_source: str = "trades"
    candle_timeframes: tuple[Timeframe, ...] = ALL_TIMEFRAMES
    candle_history: int = 500
    backfill_candles: int = 300
    subscriber_queue: int = 10_000

    def __post_init__(self) -> None:
        problems: list[tuple[str, str]] = []
        if not self.products:
            problems.append(("market_data.products", "at least one product is required"))
        for pid in self.products:
            if not isinstance(pid, str) or not pid or "-" not in pid:
                problems.append(("market_data.products", f"product ids look like 'BTC-USD', got {pid!r}"))
        for name in ("stale_after_s", "housekeeping_interval_s", "resync_timeout_s"):
            if not getattr(self, name) > 0:
                problems.append((f"market_data.{name}", f"must be > 0, got {getattr(self, name)!r}"))
        for name in ("trade_tape_size", "price_history_size", "candle_history", "subscriber_queue"):
            if getattr(self, name) < 1:
                problems.append((f"market_data.{name}", f"must be >= 1, got {getattr(self, name)!r}"))
        if self.backfill_candles < 0:
            problems.append(("market_data.backfill_candles", f"must be >= 0, got {self.backfill_candles!r}"))
        if self.price_history_source not in ("trades", "ticker"):
            problems.append(("market_data.price_history_source", f"'trades' or 'ticker', got {self.price_history_source!r}"))
        for tf in self.candle_timeframes:
            if not isinstance(tf, Timeframe):
                problems.append(("market_data.candle_timeframes", f"expected Timeframe values, got {tf!r}"))
        if problems:
            raise ConfigError(problems)


class StreamControl(Protocol):
    """What the service needs from the stream to recover (a WebSocketHandler fits)."""

    async def resubscribe(self, channel: str, product_ids: Sequence[str] | None = None) -> None: ...

    async def request_reconnect(self, reason: str = "requested") -> None: ...

    def __aiter__(self) -> AsyncIterator[WsItem]: ...


FastL2Decoder = Callable[[str | bytes], "tuple[int, str, Sequence[TextLevel]] | None"]
"""A parser's level-2 hot path: ``(sequence_num, product_id, text levels)`` for a plain update frame, else None.

Found as ``parse.decode_l2_update`` on the ``parse`` the service is given
(:data:`cryptoj.venues.coinbase.protocol.parse_envelope` has one).
"""

CandleFetcher = Callable[[str, Timeframe, datetime, datetime], Awaitable[Sequence[Candle | CandleEvent]]]
"""``(product_id, timeframe, start, end) -> candles`` (any order), e.g. wrapping the REST client."""


class RestCandles(Protocol):
    """The REST client's candle call (``CoinbaseRestClient.candles`` fits)."""

    async def candles(self, product_id: str, start: datetime, end: datetime, granularity: str = ...) -> Sequence[CandleEvent]: ...


def rest_candle_fetcher(client: RestCandles) -> CandleFetcher:
    """Adapt a REST client's ``candles(product_id, start, end, granularity)`` to a :data:`CandleFetcher`."""

    async def fetch(product_id: str, timeframe: Timeframe, start: datetime, end: datetime) -> Sequence[Candle | CandleEvent]:
        return await client.candles(product_id, start, end, timeframe.granularity)

    return fetch


@dataclass(slots=True)
class MarketDataStats:
    """Counters for metrics."""

    frames: int = 0
    events: int = 0
    malformed: int = 0
    gaps: int = 0
    resyncs: int = 0
    books_ready: int = 0
    crossed: int = 0
    ignored_updates: int = 0
    level_updates: int = 0
    venue_errors: int = 0
    unknown_channels: int = 0
    stale_events: int = 0
    late_trades: int = 0
    lagged_events: int = 0
    last_frame_at: float | None = None


# --- subscriptions ------------------------------------------------------------


class Subscription:
    """An async iterator over the service's events that match ``kinds`` and ``products``.

    Bounded (``maxsize``): when full the oldest event is discarded and the next
    event read is a :class:`Lagged` telling how many were lost. Iteration ends
    when the subscription or the service is closed.
    """

    def __init__(self, service: MarketDataService, kinds: frozenset[type], products: frozenset[str] | None, maxsize: int) -> None:
        self._service = service
        self.kinds = kinds
        self.products = products
        self.maxsize = maxsize
        self._items: deque[object] = deque()
        self._ready = asyncio.Event()
        self._closed = False
        self.dropped = 0
        self._pending_lag = 0

    def push(self, event: object) -> None:
        if self._closed:
            return
        if len(self._items) >= self.maxsize:
            self._items.popleft()
            self.dropped += 1
            self._pending_lag += 1
            self._service.stats.lagged_events += 1
        self._items.append(event)
        self._ready.set()

    def get_nowait(self) -> object | None:
        """The next event if one is buffered, else None."""
        if self._pending_lag:
            lag, self._pending_lag = self._pending_lag, 0
            return Lagged(lag)
        if self._items:
            return self._items.popleft()
        return None

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> object:
        while True:
            item = self.get_nowait()
            if item is not None:
                return item
            if self._closed:
                raise StopAsyncIteration
            self._ready.clear()
            await self._ready.wait()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._ready.set()
            self._service._unsubscribe(self)

    @property
    def closed(self) -> bool:
        return self._closed

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


# --- per-product state ------------------------------------------------------------


@dataclass(slots=True)
class _ProductState:
    product_id: str
    book: OrderBook
    candles: dict[Timeframe, CandleAggregator]
    trades: deque[MarketTrade]
    prices: deque[tuple[datetime, Decimal]]
    ticker: TickerEvent | None = None
    status: StatusEvent | None = None
    last_data_at: float | None = None
    stale: bool = False
    resync_since: float | None = None
    resync_reason: str | None = None
    resyncs: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class MarketDataService:
    """Books, tickers, trades, candles, price history and staleness for ``config.products``.

    ``parse`` turns one raw frame into an :class:`~cryptoj.model.events.Envelope`
    (raising :class:`~cryptoj.errors.MalformedMessage`). ``clock`` is monotonic
    seconds (staleness, resync timing); ``wall_clock`` gives aware UTC time (candle
    closing, backfill window). ``fetch_candles`` backfills history at start.
    """

    def __init__(
        self,
        config: MarketDataConfig,
        *,
        parse: Callable[[str | bytes], Envelope],
        fetch_candles: CandleFetcher | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.config = config
        self._parse = parse
        self._decode_l2: FastL2Decoder | None = getattr(parse, "decode_l2_update", None)
        self._fetch_candles = fetch_candles
        self._clock = clock
        self._wall_clock = wall_clock
        self.stats = MarketDataStats()
        self._products: dict[str, _ProductState] = {
            pid: _ProductState(
                product_id=pid,
                book=OrderBook(pid),
                candles={tf: CandleAggregator(tf, max_history=config.candle_history) for tf in config.candle_timeframes},
                trades=deque(maxlen=config.trade_tape_size),
                prices=deque(maxlen=config.price_history_size),
            )
            for pid in config.products
        }
        self._expected_seq: int | None = None
        self._subscribers: dict[type, list[Subscription]] = {}
        self._pending_resync: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._stream: StreamControl | None = None
        self._started_at = clock()
        self._closed = False

    # -- reading state -----------------------------------------------------------

    @property
    def products(self) -> list[str]:
        return list(self._products)

    def _state(self, product_id: str) -> _ProductState:
        state = self._products.get(product_id)
        if state is None:
            raise InvalidValue("product_id", product_id, f"not a market-data product (have {sorted(self._products)})")
        return state

    def book(self, product_id: str) -> OrderBook | None:
        """The live book, or **None while it is invalid** (before the first snapshot, during a resync).

        The returned object is updated in place; check ``book.valid`` again if you
        hold it across an ``await``.
        """
        book = self._state(product_id).book
        return book if book.valid else None

    def is_book_valid(self, product_id: str) -> bool:
        return self._state(product_id).book.valid

    def best_bid_ask(self, product_id: str) -> tuple[Level | None, Level | None] | None:
        """``(best bid, best ask)`` of a valid book, None while invalid."""
        book = self.book(product_id)
        return None if book is None else (book.best_bid(), book.best_ask())

    def depth(self, product_id: str, n: int) -> tuple[list[Level], list[Level]] | None:
        """A copy of the top ``n`` levels per side of a valid book, None while invalid."""
        book = self.book(product_id)
        return None if book is None else book.depth(n)

    def ticker(self, product_id: str) -> TickerEvent | None:
        return self._state(product_id).ticker

    def status(self, product_id: str) -> StatusEvent | None:
        return self._state(product_id).status

    def trades(self, product_id: str) -> list[MarketTrade]:
        """The trade tape, oldest first (at most ``trade_tape_size``)."""
        return list(self._state(product_id).trades)

    def price_history(self, product_id: str) -> list[tuple[datetime, Decimal]]:
        """``(time, price)`` points, oldest first (at most ``price_history_size``)."""
        return list(self._state(product_id).prices)

    def last_price(self, product_id: str) -> Decimal | None:
        prices = self._state(product_id).prices
        return prices[-1][1] if prices else None

    def candles(self, product_id: str, timeframe: Timeframe, *, include_current: bool = False) -> list[Candle]:
        """Closed candles oldest first (plus the one being built when asked)."""
        agg = self._state(product_id).candles.get(timeframe)
        if agg is None:
            raise InvalidValue(
                "timeframe", timeframe, f"not aggregated (configured: {[t.value for t in self.config.candle_timeframes]})"
            )
        out = agg.history()
        if include_current:
            current = agg.current()
            if current is not None:
                out.append(current)
        return out

    def data_age(self, product_id: str) -> float | None:
        """Seconds since the product's last market data, None if none yet."""
        last = self._state(product_id).last_data_at
        return None if last is None else self._clock() - last

    def is_stale(self, product_id: str) -> bool:
        """True when the product has no data, or its last data is older than ``stale_after_s``."""
        age = self.data_age(product_id)
        return age is None or age > self.config.stale_after_s

    # -- subscriptions ---------------------------------------------------------------

    def subscribe(
        self, kinds: Iterable[type], products: Iterable[str] | None = None, *, maxsize: int | None = None
    ) -> Subscription:
        """Events of the given classes (e.g. ``BookResync``, ``MarketTrade``), optionally for some products.

        :class:`Lagged` is always delivered. Events without a product (none today)
        would reach every subscriber of their kind.
        """
        kind_set = frozenset(kinds)
        if not kind_set:
            raise InvalidValue("subscribe.kinds", kinds, "name at least one event class")
        unknown = [k for k in kind_set if k not in _PUBLISHED]
        if unknown:
            raise InvalidValue(
                "subscribe.kinds", unknown, f"not published here; choose from {sorted(k.__name__ for k in _PUBLISHED)}"
            )
        product_set = None if products is None else frozenset(products)
        if product_set is not None:
            for pid in product_set:
                self._state(pid)
        sub = Subscription(self, kind_set, product_set, maxsize or self.config.subscriber_queue)
        if self._closed:
            sub.close()
            return sub
        for kind in kind_set:
            self._subscribers.setdefault(kind, []).append(sub)
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        for kind in sub.kinds:
            subs = self._subscribers.get(kind)
            if subs and sub in subs:
                subs.remove(sub)
                if not subs:
                    del self._subscribers[kind]

    def _publish(self, event: Any, product_id: str) -> None:
        subs = self._subscribers.get(type(event))
        if subs:
            for sub in subs:
                if sub.products is None or product_id in sub.products:
                    sub.push(event)

    # -- lifecycle --------------------------------------------------------------------

    def start(self, stream: StreamControl | None = None) -> None:
        """Start consuming ``stream`` (if given) and the housekeeping tick. The caller owns the stream."""
        if self._closed:
            raise InvalidValue("market_data", "closed", "service is closed; create a new one")
        if self._tasks:
            return
        loop = asyncio.get_running_loop()
        self._stream = stream
        self._started_at = self._clock()
        if stream is not None:
            self._tasks.append(loop.create_task(self._consume(stream), name="market-data-consume"))
        self._tasks.append(loop.create_task(self._housekeeping(), name="market-data-housekeeping"))

    async def close(self) -> None:
        """Cancel every task the service owns and end every subscription."""
        self._closed = True
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for subs in list(self._subscribers.values()):
            for sub in list(subs):
                sub.close()
        self._subscribers.clear()

    async def __aenter__(self) -> MarketDataService:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _consume(self, stream: StreamControl) -> None:
        async for item in stream:
            self.process_item(item)
            if self._pending_resync:
                await self._request_resync(stream)

    async def _request_resync(self, stream: StreamControl) -> None:
        products = sorted(self._pending_resync)
        self._pending_resync.clear()
        log.info("market_data_resubscribe", channel="level2", products=products)
        await stream.resubscribe("level2", products)

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(self.config.housekeeping_interval_s)
            await self.housekeeping()

    async def housekeeping(self) -> None:
        """One tick: staleness events, time-based candle closing, resync timeouts."""
        self.check_staleness()
        self.close_due_candles(self._wall_clock())
        stream = self._stream
        if stream is None:
            return
        now = self._clock()
        overdue = [
            s.product_id
            for s in self._products.values()
            if s.resync_since is not None and now - s.resync_since >= self.config.resync_timeout_s
        ]
        if overdue:
            log.warning("market_data_resync_timeout", products=overdue, timeout_s=self.config.resync_timeout_s)
            for pid in overdue:
                self._products[pid].resync_since = now
            await stream.request_reconnect("resync timeout")

    def check_staleness(self) -> None:
        """Publish :class:`StaleData` / :class:`DataFresh` on transitions."""
        now = self._clock()
        limit = self.config.stale_after_s
        for state in self._products.values():
            last = state.last_data_at
            if last is None:
                stale = now - self._started_at > limit
                age = None
            else:
                age = now - last
                stale = age > limit
            if stale and not state.stale:
                state.stale = True
                self.stats.stale_events += 1
                log.warning("market_data_stale", product_id=state.product_id, age_s=age, limit_s=limit)
                self._publish(StaleData(state.product_id, age, limit), state.product_id)
            elif not stale and state.stale:
                state.stale = False
                log.info("market_data_fresh", product_id=state.product_id)
                self._publish(DataFresh(state.product_id), state.product_id)

    def close_due_candles(self, now: datetime) -> None:
        for state in self._products.values():
            for tf, agg in state.candles.items():
                candle = agg.close_if_due(now)
                if candle is not None:
                    self._publish(CandleClosed(state.product_id, tf, candle), state.product_id)

    # -- backfill ----------------------------------------------------------------------

    async def backfill(self, now: datetime | None = None) -> int:
        """Load ``backfill_candles`` bars per product and timeframe from the exchange.

        Requests are split into windows of at most 300 bars (Coinbase's limit).
        Returns the number of candles loaded. No fetcher or 0 bars: nothing to do.
        """
        if self._fetch_candles is None or self.config.backfill_candles == 0:
            return 0
        end = now or self._wall_clock()
        loaded = 0
        for pid, state in self._products.items():
            for tf, agg in state.candles.items():
                remaining = self.config.backfill_candles
                window_end = end
                bars: list[Candle] = []
                while remaining > 0:
                    count = min(remaining, REST_CANDLE_LIMIT)
                    window_start = window_end - tf.delta * count
                    got = await self._fetch_candles(pid, tf, window_start, window_end)
                    bars.extend(_as_candle(c) for c in got)
                    remaining -= count
                    window_end = window_start
                    if not got:
                        break
                for candle in sorted({c.start: c for c in bars}.values(), key=lambda c: c.start):
                    agg.add_candle(candle)
                    loaded += 1
                if bars:
                    last = max(bars, key=lambda c: c.start)
                    if self.config.price_history_source and not state.prices:
                        state.prices.append((last.start, last.close))
        log.info("market_data_backfilled", candles=loaded, products=list(self._products))
        return loaded

    # -- the stream --------------------------------------------------------------------

    def process_item(self, item: WsItem) -> None:
        """Handle one item from the WebSocket handler (frame or connection event)."""
        if type(item) is WsFrame:
            self.process_frame(item.data, item.seq)
        elif isinstance(item, WsConnected):
            self._expected_seq = None
            log.info("market_data_connected", connection_id=item.connection_id, reconnect=item.reconnect)
        elif isinstance(item, WsDisconnected):
            self._expected_seq = None
            self._invalidate_all(f"disconnected: {item.reason}", resubscribe=False)
        elif isinstance(item, WsOverflow):
            self._invalidate_all(f"consumer overflow ({item.discarded} frames discarded)", resubscribe=True)

    def process_frame(self, data: str | bytes, seq_hint: int | None = None) -> None:
        """Parse one raw frame and apply it (the path the live stream and the replayer share).

        A level-2 update frame goes through the parser's ``decode_l2_update`` hot
        path when it has one (numbers stay text until the book reads them, see
        ``docs/market-data.md``); everything else, and any frame that path does
        not take, through ``parse``.
        """
        decode_l2 = self._decode_l2
        if decode_l2 is not None:
            decoded = decode_l2(data)
            if decoded is not None and self._apply_l2_text(*decoded):
                return
        stats = self.stats
        stats.frames += 1
        try:
            env = self._parse(data)
        except MalformedMessage as exc:
            self._malformed(exc, data, seq_hint)
            return
        now = self._clock()
        stats.last_frame_at = now
        seq = env.sequence_num
        if seq is not None:
            expected = self._expected_seq
            if expected is not None and seq != expected:
                self._on_gap(expected, seq)
                self._expected_seq = max(expected, seq + 1)
            else:
                self._expected_seq = seq + 1
        for ev in env.events:
            stats.events += 1
            kind = type(ev)
            if kind is L2Update:
                self._on_l2_update(ev, now)  # type: ignore[arg-type]
            elif kind is L2Snapshot:
                self._on_l2_snapshot(ev, now)  # type: ignore[arg-type]
            elif kind is MarketTrade:
                self._on_trade(ev, now)  # type: ignore[arg-type]
            elif kind is TickerEvent:
                self._on_ticker(ev, now)  # type: ignore[arg-type]
            elif kind is CandleEvent:
                self._on_candle(ev)  # type: ignore[arg-type]
            elif kind is StatusEvent:
                state = self._products.get(ev.product_id)  # type: ignore[union-attr]
                if state is not None:
                    state.status = ev  # type: ignore[assignment]
            elif kind is VenueErrorMessage:
                stats.venue_errors += 1
                log.error("market_data_venue_error", message=ev.message, reason=ev.reason)  # type: ignore[union-attr]
            elif kind is UnknownChannel:
                stats.unknown_channels += 1
                log.debug("market_data_unknown_channel", channel=ev.channel)  # type: ignore[union-attr]
            elif kind is Heartbeat or kind is SubscriptionAck:
                continue

    def _malformed(self, exc: MalformedMessage, data: str | bytes, seq_hint: int | None) -> None:
        self.stats.malformed += 1
        log.warning("market_data_malformed", count=self.stats.malformed, reason=exc.reason, raw=exc.raw[:200])
        if seq_hint is not None:
            expected = self._expected_seq
            if expected is not None and seq_hint != expected:
                self._on_gap(expected, seq_hint)
            self._expected_seq = seq_hint + 1 if expected is None else max(expected, seq_hint + 1)
        raw = data if isinstance(data, bytes) else data.encode("utf-8", errors="replace")
        if b"l2_data" in raw or b"level2" in raw:
            # a book update we could not read: the books it touched are wrong now
            self._invalidate_all("malformed level2 frame", resubscribe=True)

    def _on_gap(self, expected: int, received: int) -> None:
        self.stats.gaps += 1
        kind = "gap" if received > expected else "out of order"
        log.warning("market_data_sequence_gap", kind=kind, expected=expected, received=received)
        self._invalidate_all(f"sequence {kind}", resubscribe=True, expected=expected, received=received)

    def _invalidate_all(
        self, reason: str, *, resubscribe: bool, expected: int | None = None, received: int | None = None
    ) -> None:
        for pid in self._products:
            self._invalidate(pid, reason, resubscribe=resubscribe, expected=expected, received=received)

    def _invalidate(
        self, product_id: str, reason: str, *, resubscribe: bool, expected: int | None = None, received: int | None = None
    ) -> None:
        state = self._products[product_id]
        if resubscribe:
            self._pending_resync.add(product_id)
        if state.resync_since is None:
            state.resync_since = self._clock()
        if not state.book.valid:
            return
        state.book.clear()
        state.resyncs += 1
        state.resync_reason = reason
        self.stats.resyncs += 1
        log.warning("market_data_book_resync", product_id=product_id, reason=reason)
        self._publish(BookResync(product_id, reason, expected, received), product_id)

    def _on_l2_snapshot(self, ev: L2Snapshot, now: float) -> None:
        state = self._products.get(ev.product_id)
        if state is None:
            return
        state.last_data_at = now
        bids = [(p, q) for s, p, q in ev.changes if s is BookSide.BID]
        asks = [(p, q) for s, p, q in ev.changes if s is not BookSide.BID]
        book = state.book
        was_valid = book.valid
        try:
            book.apply_snapshot(bids, asks, sequence=ev.sequence_num)
        except InvalidValue as exc:
            book.valid = True  # so _invalidate reports it
            self._invalidate(ev.product_id, f"bad snapshot: {exc}", resubscribe=True)
            return
        self.stats.level_updates += len(ev.changes)
        if book.is_crossed():
            self.stats.crossed += 1
            self._invalidate(ev.product_id, "crossed snapshot", resubscribe=True)
            return
        state.resync_since = None
        self._pending_resync.discard(ev.product_id)
        if not was_valid:
            self.stats.books_ready += 1
            log.info("market_data_book_ready", product_id=ev.product_id, levels=len(book), sequence_num=ev.sequence_num)
            self._publish(BookReady(ev.product_id, ev.sequence_num, len(book)), ev.product_id)
        if BookUpdated in self._subscribers:
            self._publish(BookUpdated(ev.product_id, ev.sequence_num, book.best_bid(), book.best_ask()), ev.product_id)

    def _on_l2_update(self, ev: L2Update, now: float) -> None:
        state = self._products.get(ev.product_id)
        if state is None:
            return
        state.last_data_at = now
        book = state.book
        if not book.valid:
            self.stats.ignored_updates += 1
            return
        try:
            self.stats.level_updates += book.apply_updates(ev.changes, sequence=ev.sequence_num)
        except InvalidValue as exc:
            self._invalidate(ev.product_id, f"bad update: {exc}", resubscribe=True)
            return
        if book.is_crossed():
            self.stats.crossed += 1
            self._invalidate(ev.product_id, "crossed book", resubscribe=True)
            return
        if BookUpdated in self._subscribers:
            self._publish(BookUpdated(ev.product_id, ev.sequence_num, book.best_bid(), book.best_ask()), ev.product_id)

    def _apply_l2_text(self, seq: int, product_id: str, levels: Sequence[TextLevel]) -> bool:
        """The hot path: one update event of a valid book, in sequence, applied from text levels.

        Returns False, having changed nothing that the full path would not also
        change, when the frame is for the full path instead: an unknown product,
        a book being rebuilt, a sequence gap, or a number the book refuses (the
        full path then parses the frame: a malformed frame is counted and every
        book resyncs, a well-formed but impossible level resyncs this book; the
        levels before the refused one were applied here, and the full path
        applies the same absolute sizes again before it fails on the same one).
        """
        state = self._products.get(product_id)
        if state is None:
            return False
        book = state.book
        expected = self._expected_seq
        if not book.valid or (expected is not None and seq != expected):
            return False
        try:
            count = book.apply_text_updates(levels, sequence=seq)
        except InvalidValue:
            return False
        stats = self.stats
        stats.frames += 1
        stats.events += 1
        stats.level_updates += count
        now = self._clock()
        stats.last_frame_at = now
        state.last_data_at = now
        self._expected_seq = seq + 1
        if book.is_crossed():
            stats.crossed += 1
            self._invalidate(product_id, "crossed book", resubscribe=True)
        elif BookUpdated in self._subscribers:
            self._publish(BookUpdated(product_id, seq, book.best_bid(), book.best_ask()), product_id)
        return True

    def _on_trade(self, ev: MarketTrade, now: float) -> None:
        state = self._products.get(ev.product_id)
        if state is None:
            return
        state.last_data_at = now
        state.trades.append(ev)
        if self.config.price_history_source == "trades":
            state.prices.append((ev.time, ev.price))
        for tf, agg in state.candles.items():
            late_before = agg.late_trades
            for candle in agg.add_trade(ev.price, ev.size, ev.time):
                self._publish(CandleClosed(ev.product_id, tf, candle), ev.product_id)
            self.stats.late_trades += agg.late_trades - late_before
        self._publish(ev, ev.product_id)

    def _on_ticker(self, ev: TickerEvent, now: float) -> None:
        state = self._products.get(ev.product_id)
        if state is None:
            return
        state.last_data_at = now
        state.ticker = ev
        if self.config.price_history_source == "ticker":
            state.prices.append((ev.time, ev.price))
        self._publish(ev, ev.product_id)

    def _on_candle(self, ev: CandleEvent) -> None:
        state = self._products.get(ev.product_id)
        if state is None:
            return
        for tf, agg in state.candles.items():
            if tf is Timeframe.FIVE_MINUTE:  # Coinbase's candles channel sends 5-minute bars
                try:
                    closed = agg.add_candle(_as_candle(ev))
                except InvalidValue as exc:
                    log.warning("market_data_bad_candle", product_id=ev.product_id, error=str(exc))
                    return
                for candle in closed:
                    self._publish(CandleClosed(ev.product_id, tf, candle), ev.product_id)


def _as_candle(c: Candle | CandleEvent) -> Candle:
    if isinstance(c, Candle):
        return c
    return Candle(c.start, c.open, c.high, c.low, c.close, c.volume)


_PUBLISHED: frozenset[type] = frozenset(
    {BookUpdated, BookResync, BookReady, StaleData, DataFresh, CandleClosed, Lagged, TickerEvent, MarketTrade}
)
