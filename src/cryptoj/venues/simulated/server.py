"""The simulator server: one aiohttp app speaking the Coinbase Advanced Trade protocol.

* REST at ``/api/v3/brokerage/...`` (private, JWT required) and
  ``/api/v3/brokerage/market/...`` + ``/api/v3/brokerage/time`` (public).
* Market WebSocket at ``/ws``, user WebSocket at ``/ws/user`` (``user`` also works on ``/ws``).
* Admin API at ``/sim/admin/...`` (loopback peers only): the exchange's own truth and fault switches.

The exchange state lives in :class:`~cryptoj.venues.simulated.exchange.SimExchange`;
the synthetic market (:mod:`.market`) and replay (:mod:`.replay`) act on it through
agent accounts; after every change the server diffs the books, trades and user
orders against what it last published and sends the difference to subscribers.
Use :class:`SimulatorServer` (``async with SimulatorServer(SimConfig(...)) as sim``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import ssl
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import orjson
from aiohttp import WSMsgType, web

from cryptoj.errors import (
    AuthenticationFailed,
    ConfigError,
    DataError,
    InvalidValue,
    OrderNotFound,
    OrderRejected,
)
from cryptoj.model.instruments import Product
from cryptoj.model.money import Side, parse_decimal
from cryptoj.model.orders import OrderKind, OrderSpec, TimeInForce
from cryptoj.venues.coinbase.protocol import body_to_order_spec, format_decimal, format_time, parse_time
from cryptoj.venues.simulated.exchange import (
    FeeTier,
    FillRecorded,
    OrderChanged,
    SimExchange,
    SimFill,
    SimOrder,
)
from cryptoj.venues.simulated.faults import Faults
from cryptoj.venues.simulated.keys import ApiKey, KeyStore, create_key_file, load_key_file
from cryptoj.venues.simulated.market import GRANULARITIES, Candle, CandleHistory, SyntheticMarket
from cryptoj.venues.simulated.matching import LevelChanged, SimOrderStatus, Trade

__all__ = ["DEFAULT_PRODUCTS", "SimConfig", "SimulatorServer", "parse_balances"]

log = logging.getLogger("cryptoj.sim")

API: Final = "/api/v3/brokerage"
_KEY_NAME: Final = web.RequestKey("key_name", str)
USER_ACCOUNT: Final = "user"


def _product(pid: str, base_inc: str, price_inc: str, min_size: str, max_size: str, quote_min: str = "1") -> Product:
    base, quote = pid.split("-")
    return Product(
        product_id=pid,
        base_currency=base,
        quote_currency=quote,
        base_increment=Decimal(base_inc),
        quote_increment=Decimal(price_inc),
        price_increment=Decimal(price_inc),
        base_min_size=Decimal(min_size),
        base_max_size=Decimal(max_size),
        quote_min_size=Decimal(quote_min),
        quote_max_size=Decimal("150000000"),
    )


DEFAULT_PRODUCTS: Final[dict[str, Product]] = {
    p.product_id: p
    for p in (
        _product("BTC-USD", "0.00000001", "0.01", "0.00000001", "3400"),
        _product("ETH-USD", "0.00000001", "0.01", "0.00000001", "40000"),
        _product("SOL-USD", "0.001", "0.01", "0.001", "50000"),
        _product("BTC-USDC", "0.00000001", "0.01", "0.00000001", "3400"),
        _product("ETH-USDC", "0.00000001", "0.01", "0.00000001", "40000"),
        _product("ETH-BTC", "0.00000001", "0.00001", "0.00000001", "40000", "0.00001"),
    )
}


def parse_balances(text: str | Mapping[str, Decimal | str]) -> dict[str, Decimal]:
    """``"USD=100000,BTC=1"`` → ``{"USD": Decimal("100000"), "BTC": Decimal("1")}``."""
    if isinstance(text, Mapping):
        return {str(k).upper(): parse_decimal(v, f"balances.{k}") for k, v in text.items()}
    out: dict[str, Decimal] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        currency, sep, amount = item.partition("=")
        if not sep or not currency.strip():
            raise InvalidValue("balances", item, "expected CURRENCY=AMOUNT, e.g. USD=100000")
        out[currency.strip().upper()] = parse_decimal(amount.strip(), f"balances.{currency.strip().upper()}")
    return out


@dataclass(slots=True)
class SimConfig:
    """Everything that shapes one simulator run (CLI flags map 1:1 onto these)."""

    host: str = "127.0.0.1"
    port: int = 0
    products: list[str] = field(default_factory=lambda: ["BTC-USD", "ETH-USD"])
    seed: int = 1
    speed: float = 1.0
    market_rate: float = 10.0
    balances: dict[str, Decimal] = field(
        default_factory=lambda: {"USD": Decimal(100000), "BTC": Decimal(1), "ETH": Decimal(10)}
    )
    api_key_files: list[Path] = field(default_factory=list)
    create_api_key: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    replay: Path | None = None
    faults: dict[str, Any] = field(default_factory=dict)
    private_rate_limit: int = 30
    public_rate_limit: int = 10
    subscribe_deadline: float = 5.0
    heartbeat_interval: float = 1.0
    maker_fee_rate: Decimal = Decimal("0.004")
    taker_fee_rate: Decimal = Decimal("0.006")
    max_ws_queue: int = 20000
    require_loopback_admin: bool = True
    clock: Callable[[], float] = field(default=time.time, repr=False)
    product_catalogue: dict[str, Product] = field(default_factory=lambda: dict(DEFAULT_PRODUCTS))

    def validate(self) -> None:
        problems: list[tuple[str, str]] = []
        for pid in self.products:
            if pid not in self.product_catalogue:
                problems.append(("products", f"{pid} is not a known product ({', '.join(sorted(self.product_catalogue))})"))
        if not self.products:
            problems.append(("products", "at least one product is required"))
        if self.speed <= 0:
            problems.append(("speed", f"must be > 0, got {self.speed}"))
        if self.market_rate < 0:
            problems.append(("market_rate", f"must be >= 0, got {self.market_rate}"))
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            problems.append(("ssl", "give both --ssl-certfile and --ssl-keyfile, or neither"))
        if self.private_rate_limit < 1 or self.public_rate_limit < 1:
            problems.append(("rate_limit", "rate limits must be at least 1 request/second"))
        if not 0 <= self.port <= 65535:
            problems.append(("port", f"must be 0..65535, got {self.port}"))
        if problems:
            raise ConfigError(problems)


# --- small helpers ------------------------------------------------------------


def _iso(ts: float) -> str:
    return format_time(datetime.fromtimestamp(ts, UTC))


def _iso_nanos(ts: float) -> str:
    """Coinbase WS timestamps carry nanoseconds: ``2023-02-09T20:32:50.714964855Z``."""
    dt = datetime.fromtimestamp(ts, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond:06d}000Z"


def _dec(value: Decimal) -> str:
    return format_decimal(value)


def _json(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json", headers=headers)


_GRPC_CODES = {400: ("INVALID_ARGUMENT", 3), 401: ("UNAUTHENTICATED", 16), 403: ("PERMISSION_DENIED", 7),
               404: ("NOT_FOUND", 5), 429: ("RESOURCE_EXHAUSTED", 8), 500: ("INTERNAL", 13), 503: ("UNAVAILABLE", 14)}


def _error(status: int, message: str, *, error: str | None = None, headers: Mapping[str, str] | None = None) -> web.Response:
    """A Coinbase-style error body: ``{"error", "code", "message", "error_details", "details"}``."""
    name, code = _GRPC_CODES.get(status, ("UNKNOWN", 2))
    body = {"error": error or name, "code": code, "message": message, "error_details": message, "details": []}
    return _json(body, status=status, headers=headers)


def _is_loopback(peer: str | None) -> bool:
    if not peer:
        return False
    try:
        return ipaddress.ip_address(peer.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


class _RateLimiter:
    """Fixed one-second windows per key; answers (allowed, limit, remaining, reset_epoch)."""

    def __init__(self, budget: int, clock: Callable[[], float]) -> None:
        self.budget = budget
        self._clock = clock
        self._windows: dict[str, tuple[int, int]] = {}

    def hit(self, key: str) -> tuple[bool, int, int, int]:
        now = self._clock()
        window = int(now)
        start, count = self._windows.get(key, (window, 0))
        if start != window:
            start, count = window, 0
        if len(self._windows) > 10000:
            self._windows = {k: v for k, v in self._windows.items() if v[0] == window}
        allowed = count < self.budget
        if allowed:
            count += 1
        self._windows[key] = (start, count)
        return allowed, self.budget, max(0, self.budget - count), window + 1


# --- the exchange as the server sees it -----------------------------------------


_Levels = list[tuple[Decimal, Decimal]]


@dataclass(frozen=True, slots=True)
class TradeRec:
    """One public trade (taker ``side``), as the feed and ``/ticker`` show it."""

    trade_id: str
    product_id: str
    price: Decimal
    size: Decimal
    side: Side
    time: float


# --- WebSocket ------------------------------------------------------------------

MARKET_CHANNELS: Final = frozenset({"heartbeats", "status", "ticker", "ticker_batch", "level2", "market_trades", "candles"})
USER_CHANNELS: Final = frozenset({"heartbeats", "user", "futures_balance_summary"})
_CHANNEL_OUT: Final = {"level2": "l2_data"}
_CHANNEL_IN: Final = {"l2_data": "level2"}
_STALL_RECHECK_S: Final = 0.05


class _WsConn:
    """One WebSocket client: its subscriptions, its outgoing queue and its ``sequence_num``."""

    def __init__(self, server: SimulatorServer, ws: web.WebSocketResponse, request: web.Request, *, user_only: bool) -> None:
        self.server = server
        self.ws = ws
        self.request = request
        self.user_only = user_only
        self.subs: dict[str, set[str]] = {}
        self.user_key: str | None = None
        self.seq = 0
        self.sent = 0
        self.heartbeat_counter = 0
        self.queue: deque[tuple[str, list[dict[str, Any]]]] = deque()
        self.wakeup = asyncio.Event()
        self.closed = False
        self.writer: asyncio.Task[None] | None = None

    def subscribed(self, channel: str, product_id: str | None = None) -> bool:
        products = self.subs.get(channel)
        if products is None:
            return False
        return product_id is None or not products or product_id in products

    def enqueue(self, channel: str, events: list[dict[str, Any]]) -> None:
        if self.closed:
            return
        if len(self.queue) >= self.server.config.max_ws_queue:
            log.warning("sim ws: closing slow consumer (queue %d)", len(self.queue))
            self.abort()
            return
        self.queue.append((channel, events))
        self.wakeup.set()

    def send_raw_error(self, message: str) -> None:
        """A Coinbase-style error frame (no envelope)."""
        if self.closed:
            return
        self.queue.append(("__error__", [{"type": "error", "message": message}]))
        self.wakeup.set()

    def abort(self) -> None:
        """Drop the connection abruptly (no close frame), like a network failure."""
        if self.closed:
            return
        self.closed = True
        transport = self.request.transport
        if transport is not None:
            transport.abort()
        self.wakeup.set()

    async def write_loop(self) -> None:
        faults = self.server.faults
        try:
            while not self.closed:
                if not self.queue:
                    self.wakeup.clear()
                    await self.wakeup.wait()
                    continue
                stall = faults.stall_remaining()
                if stall > 0:
                    # re-check often: ws_stall_seconds=0 or clearing the faults ends a stall now
                    await asyncio.sleep(min(stall, _STALL_RECHECK_S))
                    continue
                channel, events = self.queue.popleft()
                if channel == "__error__":
                    await self.ws.send_str(orjson.dumps(events[0]).decode())
                    continue
                self.sent += 1
                self.seq += faults.seq_skip(self.sent)
                frame = {
                    "channel": channel,
                    "client_id": "",
                    "timestamp": _iso_nanos(self.server.now()),
                    "sequence_num": self.seq,
                    "events": events,
                }
                self.seq += 1
                await self.ws.send_str(orjson.dumps(frame).decode())
                if faults.should_drop_ws(self.sent):
                    self.abort()
        except (ConnectionError, RuntimeError):
            self.closed = True


def _go_time(ts: float) -> str:
    """Heartbeat ``current_time`` as the live feed sends it (Go's time.String())."""
    dt = datetime.fromtimestamp(ts, UTC)
    return dt.strftime("%Y-%m-%d %H:%M:%S.") + f"{dt.microsecond:06d}000 +0000 UTC"


# --- live candles -----------------------------------------------------------------


@dataclass(slots=True)
class _Bar:
    start: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal

    def add(self, price: Decimal, size: Decimal) -> None:
        self.high = max(self.high, price)
        self.low = min(self.low, price)
        self.close = price
        self.volume += size

    def candle(self) -> Candle:
        return Candle(self.start, self.open, self.high, self.low, self.close, self.volume)


class _LiveCandles:
    """One-minute bars built from live trades (bounded), merged with the synthetic history before start."""

    MAX_MINUTES: Final = 7 * 24 * 60

    def __init__(self, history: CandleHistory, started: float) -> None:
        self.history = history
        self.first_live = int(started) - int(started) % 60  # minutes from here on are live
        self.bars: dict[int, _Bar] = {}
        self.order: deque[int] = deque()

    def add_trade(self, ts: float, price: Decimal, size: Decimal) -> None:
        minute = int(ts) - int(ts) % 60
        bar = self.bars.get(minute)
        if bar is None:
            bar = _Bar(minute, price, price, price, price, Decimal(0))
            self.bars[minute] = bar
            self.order.append(minute)
            while len(self.order) > self.MAX_MINUTES:
                self.bars.pop(self.order.popleft(), None)
        bar.add(price, size)

    def bar(self, start: int, granularity: int) -> Candle | None:
        """The bar at ``start``: synthetic before the simulator started, else aggregated live minutes (None if no trades)."""
        start -= start % granularity
        if start + granularity <= self.first_live:
            return self.history.candle(start, granularity)
        agg: _Bar | None = None
        for minute in range(max(start, self.first_live), start + granularity, 60):
            b = self.bars.get(minute)
            if b is None:
                continue
            if agg is None:
                agg = _Bar(start, b.open, b.high, b.low, b.close, b.volume)
            else:
                agg.high = max(agg.high, b.high)
                agg.low = min(agg.low, b.low)
                agg.close = b.close
                agg.volume += b.volume
        return agg.candle() if agg is not None else None

    def candles(self, start: int, end: int, granularity: int, limit: int = 350) -> list[Candle]:
        first = start - start % granularity
        if first < start:
            first += granularity
        t = end - end % granularity
        if t == end:
            t -= granularity
        out: list[Candle] = []
        while t >= first and len(out) < limit:
            c = self.bar(t, granularity)
            if c is not None:
                out.append(c)
            t -= granularity
        return out


# --- the server -------------------------------------------------------------------

_USER_ORDER_TYPES: Final = {"MARKET": "Market", "LIMIT": "Limit", "STOP_LIMIT": "StopLimit", "BRACKET": "Bracket"}
_AGENT_FUNDS: Final = Decimal("1000000000000")
_PAGE_DEFAULT: Final = 100
_PAGE_MAX: Final = 1000


def _ts(when: datetime | None) -> str | None:
    return format_time(when) if when is not None else None


def _after_fees(o: SimOrder) -> Decimal:
    return o.filled_value + o.total_fees if o.side is Side.BUY else o.filled_value - o.total_fees


def _order_json(o: SimOrder) -> dict[str, Any]:
    """An order as ``GET /orders/historical/{id}`` returns it."""
    spec = o.spec
    if spec.base_size is not None and spec.base_size > 0:
        completion = o.filled_size / spec.base_size * 100
    elif spec.quote_size is not None and spec.quote_size > 0:
        completion = o.filled_value / spec.quote_size * 100
    else:  # pragma: no cover - OrderSpec guarantees a positive size
        completion = Decimal(0)
    return {
        "order_id": o.order_id,
        "product_id": o.product_id,
        "user_id": o.owner,
        "order_configuration": o.order_configuration,
        "side": o.side.value,
        "client_order_id": o.client_order_id,
        "status": o.status.value,
        "time_in_force": o.time_in_force,
        "created_time": format_time(o.created_time),
        "completion_percentage": _dec(min(completion, Decimal(100)).quantize(Decimal("0.01"))),
        "filled_size": _dec(o.filled_size),
        "average_filled_price": _dec(o.average_filled_price),
        "fee": "",
        "number_of_fills": str(o.number_of_fills),
        "filled_value": _dec(o.filled_value),
        "pending_cancel": False,
        "size_in_quote": spec.quote_size is not None,
        "total_fees": _dec(o.total_fees),
        "size_inclusive_of_fees": False,
        "total_value_after_fees": _dec(_after_fees(o)),
        "trigger_status": o.trigger_status,
        "order_type": o.order_type,
        "reject_reason": "REJECT_REASON_UNSPECIFIED",
        "settled": o.status.is_done,
        "product_type": "SPOT",
        "reject_message": "",
        "cancel_message": o.done_reason or "",
        "order_placement_source": "RETAIL_ADVANCED",
        "outstanding_hold_amount": _dec(o.outstanding_hold_amount),
        "is_liquidation": False,
        "last_fill_time": _ts(o.last_fill_time),
        "edit_history": [],
        "leverage": "",
        "margin_type": "UNKNOWN_MARGIN_TYPE",
        "retail_portfolio_id": "",
        "originating_order_id": "",
        "attached_order_id": "",
    }


def _user_order_json(o: SimOrder) -> dict[str, Any]:
    """An order as the ``user`` channel reports it (cumulative state)."""
    spec = o.spec
    return {
        "order_id": o.order_id,
        "client_order_id": o.client_order_id,
        "cumulative_quantity": _dec(o.filled_size),
        "leaves_quantity": _dec(o.leaves_quantity),
        "avg_price": _dec(o.average_filled_price),
        "total_fees": _dec(o.total_fees),
        "status": o.status.value,
        "product_id": o.product_id,
        "creation_time": format_time(o.created_time),
        "order_side": o.side.value,
        "order_type": _USER_ORDER_TYPES.get(o.order_type, o.order_type),
        "cancel_reason": o.done_reason or "" if o.status is SimOrderStatus.CANCELLED else "",
        "reject_reason": "",
        "total_value_after_fees": _dec(_after_fees(o)),
        "contract_expiry_type": "UNKNOWN_CONTRACT_EXPIRY_TYPE",
        "product_type": "SPOT",
        "risk_managed_by": "UNKNOWN_RISK_MANAGEMENT_TYPE",
        "time_in_force": o.time_in_force,
        "trigger_status": o.trigger_status,
        "limit_price": _dec(spec.limit_price) if spec.limit_price is not None else "",
        "stop_price": _dec(spec.stop_price) if spec.stop_price is not None else "",
        "number_of_fills": str(o.number_of_fills),
        "filled_value": _dec(o.filled_value),
        "outstanding_hold_amount": _dec(o.outstanding_hold_amount),
        "post_only": spec.post_only,
    }


def _fill_json(f: SimFill) -> dict[str, Any]:
    return {
        "entry_id": f.entry_id,
        "trade_id": f.trade_id,
        "order_id": f.order_id,
        "trade_time": format_time(f.time),
        "trade_type": "FILL",
        "price": _dec(f.price),
        "size": _dec(f.size),
        "commission": _dec(f.commission),
        "product_id": f.product_id,
        "sequence_timestamp": format_time(f.time),
        "liquidity_indicator": f.liquidity.value,
        "size_in_quote": False,
        "user_id": f.owner,
        "side": f.side.value,
        "retail_portfolio_id": "",
    }


def _query_list(request: web.Request, *names: str) -> list[str]:
    """Repeated query parameters (``?product_ids=A&product_ids=B``), also comma-separated."""
    out: list[str] = []
    for name in names:
        for raw in request.query.getall(name, []):
            out.extend(part.strip() for part in raw.split(",") if part.strip())
    return out


def _query_int(request: web.Request, name: str, default: int, *, low: int = 0, high: int | None = None) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidValue(name, raw, "expected an integer") from None
    if value < low or (high is not None and value > high):
        raise InvalidValue(name, raw, f"must be between {low} and {high if high is not None else 'any'}")
    return value


def _page(items: list[Any], request: web.Request) -> tuple[list[Any], bool, str]:
    limit = _query_int(request, "limit", _PAGE_DEFAULT, low=0, high=_PAGE_MAX) or _PAGE_DEFAULT
    cursor = request.query.get("cursor") or "0"
    try:
        offset = int(cursor)
    except ValueError:
        raise InvalidValue("cursor", cursor, "not a cursor this simulator issued") from None
    chunk = items[offset : offset + limit]
    has_next = offset + limit < len(items)
    return chunk, has_next, str(offset + limit) if has_next else ""


class SimulatorServer:
    """A running simulator. ``async with SimulatorServer(SimConfig(port=0)) as sim: sim.base_url``.

    Attributes once started: ``base_url`` (``http://127.0.0.1:PORT``), ``ws_url``,
    ``ws_user_url``, ``port``, ``exchange`` (the SimExchange), ``market`` (the
    :class:`SyntheticMarket`), ``faults``, ``keys`` (accepted public keys),
    ``key_file`` (path of an accepted key file, when one was created or given)
    and ``admin`` (in-process admin helpers, the same operations as ``/sim/admin``).
    """

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config or SimConfig()
        self.config.validate()
        self.products: dict[str, Product] = {pid: self.config.product_catalogue[pid] for pid in self.config.products}
        self.keys = KeyStore()
        self.api_keys: list[ApiKey] = []
        self.key_file: Path | None = None
        self.faults = Faults(seed=self.config.seed, clock=time.monotonic)
        if self.config.faults:
            self.faults.update(self.config.faults)
        self.bridge = _Bridge(self, self.products)
        self.exchange = self.bridge.exchange
        self.started_at = self.config.clock()
        self.market = SyntheticMarket(list(self.products.values()), self.bridge, seed=self.config.seed,
                                      start_time=self.started_at)
        self.candles = {pid: _LiveCandles(self.market.histories[pid], self.started_at) for pid in self.products}
        self.recent_trades: dict[str, deque[TradeRec]] = {pid: deque(maxlen=100) for pid in self.products}
        self.market_rate = self.config.market_rate
        self.admin = SimAdmin(self)
        self.replay_feed: Any = None
        self._conns: set[_WsConn] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._private_limiter = _RateLimiter(self.config.private_rate_limit, self.config.clock)
        self._public_limiter = _RateLimiter(self.config.public_rate_limit, self.config.clock)
        self._candle_dirty: dict[str, set[int]] = {}  # product → 5-minute bars that trades changed since the last update
        self._ticker_cache: dict[str, tuple[float, dict[str, str]]] = {}
        self.port = 0
        self.host = self.config.host
        self.scheme = "https" if self.config.ssl_certfile else "http"
        self.stopped = asyncio.Event()

    # -- time -----------------------------------------------------------------

    def now(self) -> float:
        return self.config.clock()

    def now_dt(self) -> datetime:
        return datetime.fromtimestamp(self.now(), UTC)

    # -- urls -----------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self._url_host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"{'wss' if self.scheme == 'https' else 'ws'}://{self._url_host}:{self.port}/ws"

    @property
    def ws_user_url(self) -> str:
        return self.ws_url + "/user"

    @property
    def _url_host(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host

    # -- lifecycle ------------------------------------------------------------

    def _load_keys(self) -> None:
        for path in self.config.api_key_files:
            key = load_key_file(path)
            self.api_keys.append(key)
            self.keys.add(key)
            self.key_file = self.key_file or path
        if self.config.create_api_key is not None:
            key = create_key_file(self.config.create_api_key)
            self.api_keys.append(key)
            self.keys.add(key)
            self.key_file = self.config.create_api_key

    def _ssl_context(self) -> ssl.SSLContext | None:
        if self.config.ssl_certfile is None or self.config.ssl_keyfile is None:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            ctx.load_cert_chain(str(self.config.ssl_certfile), str(self.config.ssl_keyfile))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError([("ssl", f"cannot load certificate/key: {exc}")]) from None
        return ctx

    def build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=1 << 20)
        r = app.router
        r.add_get("/ws", self._ws_market)
        r.add_get("/ws/user", self._ws_user)
        r.add_get(f"{API}/time", self._time)
        for prefix in (API, f"{API}/market"):
            r.add_get(f"{prefix}/products", self._products)
            r.add_get(f"{prefix}/products/{{product_id}}", self._product)
            r.add_get(f"{prefix}/products/{{product_id}}/candles", self._candles)
            r.add_get(f"{prefix}/products/{{product_id}}/ticker", self._ticker)
            r.add_get(f"{prefix}/product_book", self._product_book)
        r.add_get(f"{API}/best_bid_ask", self._best_bid_ask)
        r.add_get(f"{API}/accounts", self._accounts)
        r.add_get(f"{API}/accounts/{{uuid}}", self._account)
        r.add_post(f"{API}/orders", self._create_order)
        r.add_post(f"{API}/orders/preview", self._preview_order)
        r.add_post(f"{API}/orders/batch_cancel", self._batch_cancel)
        r.add_get(f"{API}/orders/historical/batch", self._list_orders)
        r.add_get(f"{API}/orders/historical/fills", self._list_fills)
        r.add_get(f"{API}/orders/historical/{{order_id}}", self._get_order)
        r.add_get(f"{API}/transaction_summary", self._transaction_summary)
        r.add_get("/sim/admin/book", self._admin_book)
        r.add_get("/sim/admin/orders", self._admin_orders)
        r.add_get("/sim/admin/fills", self._admin_fills)
        r.add_get("/sim/admin/balances", self._admin_balances)
        r.add_get("/sim/admin/status", self._admin_status)
        r.add_get("/sim/admin/faults", self._admin_faults_get)
        r.add_post("/sim/admin/faults", self._admin_faults_set)
        r.add_post("/sim/admin/faults/clear", self._admin_faults_clear)
        r.add_post("/sim/admin/orders", self._admin_place)
        r.add_post("/sim/admin/cancel", self._admin_cancel)
        r.add_post("/sim/admin/trade", self._admin_trade)
        r.add_post("/sim/admin/market", self._admin_market)
        r.add_post("/sim/admin/market/step", self._admin_step)
        return app

    async def start(self) -> SimulatorServer:
        self._load_keys()
        ssl_ctx = self._ssl_context()
        if self.config.replay is not None:
            from cryptoj.venues.simulated.replay import ReplayFeed

            self.replay_feed = ReplayFeed.load(self.config.replay, self)
        else:
            self.market.prime()
        self.sync()
        self._runner = web.AppRunner(self.build_app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, self.config.host, self.config.port, ssl_context=ssl_ctx)
        await self._site.start()
        server = self._site._server
        sockets = getattr(server, "sockets", None) or []
        if not sockets:
            raise ConfigError([("port", "server did not bind a socket")])
        self.port = int(sockets[0].getsockname()[1])
        self._spawn(self._market_loop(), "market")
        self._spawn(self._heartbeat_loop(), "heartbeats")
        self._spawn(self._periodic_loop(), "periodic")
        if self.replay_feed is not None:
            self._spawn(self.replay_feed.run(), "replay")
        log.info("simulator listening on %s", self.base_url)
        return self

    def _spawn(self, coro: Awaitable[None], name: str) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        task.set_name(f"sim-{name}")
        self._tasks.append(task)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        for conn in list(self._conns):
            conn.closed = True
            conn.wakeup.set()
            with contextlib.suppress(Exception):
                await conn.ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self.stopped.set()

    async def __aenter__(self) -> SimulatorServer:
        try:
            return await self.start()
        except BaseException:
            await self.stop()
            raise

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- background loops -----------------------------------------------------

    async def _market_loop(self) -> None:
        loop = asyncio.get_running_loop()
        done = 0.0
        last = loop.time()
        while True:
            rate = self.market_rate * self.config.speed
            if rate <= 0 or self.replay_feed is not None:
                await asyncio.sleep(0.05)
                last = loop.time()
                continue
            await asyncio.sleep(max(0.005, 1.0 / rate))
            now = loop.time()
            done += (now - last) * rate
            last = now
            steps = min(int(done), 500)
            done -= int(done)
            if steps:
                for _ in range(steps):
                    self.market.step()
                self.sync()

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.heartbeat_interval)
            if self.faults.stall_remaining() > 0:
                continue
            now = self.now()
            for conn in list(self._conns):
                if conn.subscribed("heartbeats"):
                    conn.heartbeat_counter += 1
                    conn.enqueue("heartbeats", [{"current_time": _go_time(now), "heartbeat_counter": conn.heartbeat_counter}])

    async def _periodic_loop(self) -> None:
        """Once a second: GTD expiry, candle updates; every 5 s: ticker_batch."""
        tick = 0
        while True:
            await asyncio.sleep(1.0)
            tick += 1
            self.bridge.expire(self.now_dt())
            self.sync()
            # the bars the trades fell in (not the bar of "now": a trade just before a 5-minute boundary updates its own bar)
            for pid in sorted(self._candle_dirty):
                for start in sorted(self._candle_dirty[pid]):
                    self._publish("candles", pid, [{"type": "update", "candles": self._current_candles(pid, start)}])
            self._candle_dirty.clear()
            if tick % 5 == 0:
                for pid in self.products:
                    if self._has_subscriber("ticker_batch", pid):
                        self._publish("ticker_batch", pid, [{"type": "update", "tickers": [self._ticker_json(pid)]}])

    # -- publishing -------------------------------------------------------------

    def _has_subscriber(self, channel: str, product_id: str | None = None) -> bool:
        return any(c.subscribed(channel, product_id) for c in self._conns)

    def _publish(self, channel: str, product_id: str, events: list[dict[str, Any]]) -> None:
        out = _CHANNEL_OUT.get(channel, channel)
        for conn in list(self._conns):
            if conn.subscribed(channel, product_id):
                conn.enqueue(out, events)

    def sync(self) -> None:
        """Publish everything that changed in the exchange since the last call."""
        level_changes, trades, changed_orders = self.bridge.drain()
        now = self.now()
        event_time = _iso_nanos(now)
        by_product: dict[str, list[dict[str, str]]] = {}
        for pid, side, price, size in level_changes:
            by_product.setdefault(pid, []).append(
                {"side": "bid" if side is Side.BUY else "offer", "event_time": event_time,
                 "price_level": _dec(price), "new_quantity": _dec(size)}
            )
        for pid, updates in by_product.items():
            self._publish("level2", pid, [{"type": "update", "product_id": pid, "updates": updates}])
        trades_by_product: dict[str, list[TradeRec]] = {}
        for trade in trades:
            trades_by_product.setdefault(trade.product_id, []).append(trade)
            self.recent_trades[trade.product_id].append(trade)
            self.candles[trade.product_id].add_trade(trade.time, trade.price, trade.size)
            bucket = int(trade.time) - int(trade.time) % 300
            self._candle_dirty.setdefault(trade.product_id, set()).add(bucket)
        for pid, product_trades in trades_by_product.items():
            self._ticker_cache.pop(pid, None)
            self._publish("market_trades", pid, [{"type": "update", "trades": [self._trade_json(t) for t in product_trades]}])
            self._publish("ticker", pid, [{"type": "update", "tickers": [self._ticker_json(pid)]}])
        if changed_orders:
            self._publish_user_orders(changed_orders)

    def _publish_user_orders(self, changed: Iterable[SimOrder]) -> None:
        by_account: dict[str, list[SimOrder]] = {}
        for rec in changed:
            by_account.setdefault(rec.owner, []).append(rec)
        for account, recs in by_account.items():
            for conn in list(self._conns):
                if conn.user_key is None or "user" not in conn.subs or self._account_for_key(conn.user_key) != account:
                    continue
                wanted = conn.subs["user"]
                orders = [_user_order_json(r) for r in recs if not wanted or r.product_id in wanted]
                if orders:
                    conn.enqueue("user", [{"type": "update", "orders": orders}])

    def _account_for_key(self, key_name: str) -> str:
        return USER_ACCOUNT

    @staticmethod
    def _trade_json(t: TradeRec) -> dict[str, str]:
        return {"trade_id": t.trade_id, "product_id": t.product_id, "price": _dec(t.price), "size": _dec(t.size),
                "side": t.side.value, "time": _iso_nanos(t.time)}

    def _stats_24h(self, pid: str) -> tuple[Decimal, Decimal, Decimal, Decimal]:
        """(volume, low, high, open) over the last 24 hours."""
        now = int(self.now())
        bars = self.candles[pid].candles(now - 86400, now + 3600, 3600, limit=26)
        if not bars:
            last = self.bridge.last_price(pid) or self.market.models[pid].mid
            return Decimal(0), last, last, last
        return (sum((b.volume for b in bars), Decimal(0)), min(b.low for b in bars), max(b.high for b in bars), bars[-1].open)

    def _ticker_json(self, pid: str) -> dict[str, str]:
        cached = self._ticker_cache.get(pid)
        now = self.now()
        if cached is not None and now - cached[0] < 1.0:
            return cached[1]
        bids, asks = self.bridge.levels(pid, 1)
        last = self.bridge.last_price(pid) or self.market.models[pid].mid
        volume, low, high, open_ = self._stats_24h(pid)
        low, high = min(low, last), max(high, last)
        change = (last - open_) / open_ * 100 if open_ > 0 else Decimal(0)
        ticker = {
            "type": "ticker",
            "product_id": pid,
            "price": _dec(last),
            "volume_24_h": _dec(volume),
            "low_24_h": _dec(low),
            "high_24_h": _dec(high),
            "low_52_w": _dec(low),
            "high_52_w": _dec(high),
            "price_percent_chg_24_h": _dec(change.quantize(Decimal("0.00000001"))),
            "best_bid": _dec(bids[0][0]) if bids else "",
            "best_bid_quantity": _dec(bids[0][1]) if bids else "",
            "best_ask": _dec(asks[0][0]) if asks else "",
            "best_ask_quantity": _dec(asks[0][1]) if asks else "",
        }
        self._ticker_cache[pid] = (now, ticker)
        return ticker

    def _current_candles(self, pid: str, start: int | None = None) -> list[dict[str, str]]:
        """The 5-minute bar opening at ``start`` (default: the current one) as the candles channel sends it."""
        if start is None:
            now = int(self.now())
            start = now - now % 300
        bar = self.candles[pid].bar(start, 300)
        if bar is None:
            last = self.bridge.last_price(pid) or self.market.models[pid].mid
            bar = Candle(start, last, last, last, last, Decimal(0))
        return [bar.to_coinbase(pid)]

    # -- WebSocket --------------------------------------------------------------

    async def _ws_market(self, request: web.Request) -> web.StreamResponse:
        return await self._ws_serve(request, user_only=False)

    async def _ws_user(self, request: web.Request) -> web.StreamResponse:
        return await self._ws_serve(request, user_only=True)

    async def _ws_serve(self, request: web.Request, *, user_only: bool) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=1 << 20)
        await ws.prepare(request)
        conn = _WsConn(self, ws, request, user_only=user_only)
        self._conns.add(conn)
        conn.writer = asyncio.ensure_future(conn.write_loop())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.subscribe_deadline
        ever_subscribed = False
        try:
            while not conn.closed:
                timeout = None if ever_subscribed else max(0.0, deadline - loop.time())
                try:
                    msg = await ws.receive(timeout=timeout)
                except TimeoutError:
                    log.info("sim ws: closing a connection that sent no subscribe within %.1fs", self.config.subscribe_deadline)
                    break
                if msg.type == WSMsgType.TEXT:
                    ever_subscribed = self._on_ws_text(conn, msg.data) or ever_subscribed
                elif msg.type == WSMsgType.BINARY:
                    conn.send_raw_error("binary frames are not supported; send JSON text")
                else:
                    break
        finally:
            self._conns.discard(conn)
            if not conn.closed:
                # let queued frames (e.g. an error) go out before closing
                for _ in range(50):
                    if not conn.queue:
                        break
                    await asyncio.sleep(0.01)
            conn.closed = True
            conn.wakeup.set()
            if conn.writer is not None:
                conn.writer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await conn.writer
            with contextlib.suppress(Exception):
                await ws.close()
        return ws

    def _on_ws_text(self, conn: _WsConn, text: str) -> bool:
        """Handle one client message; True when it was a successful subscribe."""
        try:
            msg = orjson.loads(text)
        except orjson.JSONDecodeError:
            conn.send_raw_error("malformed JSON message")
            return False
        if not isinstance(msg, dict):
            conn.send_raw_error("message must be a JSON object")
            return False
        kind = msg.get("type")
        channel_raw = msg.get("channel")
        if kind not in ("subscribe", "unsubscribe"):
            conn.send_raw_error(f"unknown message type {kind!r}; expected subscribe or unsubscribe")
            return False
        if not isinstance(channel_raw, str) or not channel_raw:
            conn.send_raw_error("channel is required (one channel per message)")
            return False
        channel = _CHANNEL_IN.get(channel_raw, channel_raw)
        allowed = USER_CHANNELS if conn.user_only else MARKET_CHANNELS | USER_CHANNELS
        if channel not in allowed:
            conn.send_raw_error(f"Failure to subscribe: unknown channel {channel_raw!r} on this endpoint")
            return False
        raw_products = msg.get("product_ids", [])
        if raw_products is None:
            raw_products = []
        if not isinstance(raw_products, list) or not all(isinstance(p, str) for p in raw_products):
            conn.send_raw_error("product_ids must be a list of strings")
            return False
        products: list[str] = []
        for pid in raw_products:
            mapped = self._map_product(pid)
            if mapped is None:
                conn.send_raw_error(f"Failure to subscribe: unknown product {pid!r}")
                return False
            if mapped not in products:
                products.append(mapped)
        token = msg.get("jwt")
        if channel in ("user", "futures_balance_summary") or token:
            try:
                key = self.keys.verify(token if isinstance(token, str) else None, now=self.now())
            except AuthenticationFailed as exc:
                conn.send_raw_error(f"authentication failure: {exc}")
                return False
            conn.user_key = key
        if kind == "unsubscribe":
            current = conn.subs.get(channel)
            if current is not None:
                if products:
                    current.difference_update(products)
                if not products or not current:
                    del conn.subs[channel]
            self._send_ack(conn)
            return False
        if channel in ("level2", "ticker", "ticker_batch", "market_trades", "candles") and not products:
            conn.send_raw_error(f"Failure to subscribe: {channel} needs product_ids")
            return False
        existing = conn.subs.get(channel)
        new_products = [p for p in products if existing is None or p not in existing]
        first_time = existing is None
        conn.subs.setdefault(channel, set()).update(products)
        self._send_snapshots(conn, channel, new_products, first_time=first_time)
        self._send_ack(conn)
        return True

    def _map_product(self, pid: str) -> str | None:
        pid = pid.upper()
        if pid in self.products:
            return pid
        if pid.endswith("-USDC"):
            twin = pid[: -len("-USDC")] + "-USD"
            if twin in self.products:
                return twin
        return None

    def _send_ack(self, conn: _WsConn) -> None:
        subs = {ch: sorted(products) for ch, products in sorted(conn.subs.items())}
        conn.enqueue("subscriptions", [{"subscriptions": subs}])

    def _send_snapshots(self, conn: _WsConn, channel: str, products: list[str], *, first_time: bool) -> None:
        now = self.now()
        if channel == "level2":
            for pid in products:
                bids, asks = self.bridge.levels(pid)
                t = _iso_nanos(now)
                updates = [{"side": "bid", "event_time": t, "price_level": _dec(p), "new_quantity": _dec(s)} for p, s in bids]
                updates += [{"side": "offer", "event_time": t, "price_level": _dec(p), "new_quantity": _dec(s)} for p, s in asks]
                conn.enqueue("l2_data", [{"type": "snapshot", "product_id": pid, "updates": updates}])
        elif channel in ("ticker", "ticker_batch"):
            for pid in products:
                conn.enqueue(channel, [{"type": "snapshot", "tickers": [self._ticker_json(pid)]}])
        elif channel == "market_trades":
            for pid in products:
                trades = [self._trade_json(t) for t in reversed(self.recent_trades[pid])][:50]
                conn.enqueue("market_trades", [{"type": "snapshot", "trades": trades}])
        elif channel == "candles":
            for pid in products:
                conn.enqueue("candles", [{"type": "snapshot", "candles": self._current_candles(pid)}])
        elif channel == "status":
            targets = products or list(self.products)
            conn.enqueue("status", [{"type": "snapshot", "products": [self._status_json(pid) for pid in targets]}])
        elif channel == "user" and first_time:
            account = self._account_for_key(conn.user_key or "")
            wanted = set(products)
            open_orders = [
                o for o in self.exchange.list_orders(account, statuses=[SimOrderStatus.OPEN, SimOrderStatus.PENDING])
                if not wanted or o.product_id in wanted
            ]
            batches = [open_orders[i : i + 50] for i in range(0, len(open_orders), 50)] or [[]]
            for batch in batches:
                conn.enqueue("user", [{"type": "snapshot", "orders": [_user_order_json(o) for o in batch],
                                       "positions": {"perpetual_futures_positions": [], "expiring_futures_positions": []}}])
        elif channel == "futures_balance_summary" and first_time:
            conn.enqueue("futures_balance_summary", [{"type": "snapshot", "fcm_balance_summary": {}}])

    def _status_json(self, pid: str) -> dict[str, Any]:
        p = self.products[pid]
        return {
            "product_type": "SPOT",
            "id": pid,
            "base_currency": p.base_currency,
            "quote_currency": p.quote_currency,
            "base_increment": _dec(p.base_increment),
            "quote_increment": _dec(p.quote_increment),
            "display_name": pid,
            "status": p.status,
            "status_message": "",
            "min_market_funds": _dec(p.quote_min_size),
        }

    # -- HTTP middleware --------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                          ) -> web.StreamResponse:
        path = request.path
        if path.startswith("/sim/admin"):
            if self.config.require_loopback_admin and not _is_loopback(request.remote):
                return _error(403, "the admin API only answers loopback peers")
            return await self._guard(request, handler)
        if not path.startswith(API):
            if path.startswith("/ws"):
                return await handler(request)
            return _error(404, f"no route for {request.method} {path}")
        faults = self.faults
        if faults.http_delay_seconds > 0:
            await asyncio.sleep(faults.http_delay_seconds)
        public = path.startswith(f"{API}/market/") or path == f"{API}/time"
        limiter = self._public_limiter if public else self._private_limiter
        rl_key = request.remote or "?"
        if not public:
            token = None
            auth = request.headers.get("Authorization", "")
            if auth.lower().startswith("bearer "):
                token = auth[7:].strip()
            try:
                rl_key = self.keys.verify(token, now=self.now(), method=request.method, path=path)
            except AuthenticationFailed as exc:
                return _error(401, f"Unauthorized: {exc}", error="UNAUTHENTICATED")
            request[_KEY_NAME] = rl_key
        allowed, limit, remaining, reset = limiter.hit(rl_key)
        headers = {"x-ratelimit-limit": str(limit), "x-ratelimit-remaining": str(remaining), "x-ratelimit-reset": str(reset)}
        if faults.take_http_429():
            headers["x-ratelimit-remaining"] = "0"
            return _error(429, "Too many requests", error="RATE_LIMIT_EXCEEDED", headers=headers)
        if not allowed:
            return _error(429, "Too many requests", error="RATE_LIMIT_EXCEEDED", headers=headers)
        status = faults.take_http_5xx()
        if status is not None:
            return _error(status, "simulated upstream failure", headers=headers)
        response = await self._guard(request, handler)
        response.headers.update(headers)
        return response

    async def _guard(self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                     ) -> web.StreamResponse:
        """Turn our errors into Coinbase-style error bodies (400/404), never a stack trace."""
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status == 404:
                return _error(404, f"no route for {request.method} {request.path}")
            if exc.status == 405:
                return _error(405, f"method {request.method} not allowed on {request.path}")
            raise
        except OrderNotFound as exc:
            return _error(404, str(exc))
        except (DataError, ValueError) as exc:
            return _error(400, str(exc))

    @staticmethod
    async def _json_body(request: web.Request) -> Any:
        raw = await request.read()
        if not raw.strip():
            return {}
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise InvalidValue("body", raw[:80].decode("utf-8", "replace"), "request body is not valid JSON") from None

    def _product_id(self, raw: str | None, field_name: str = "product_id") -> str:
        if not raw:
            raise InvalidValue(field_name, raw, "required")
        pid = self._map_product(raw)
        if pid is None or pid != raw.upper():
            if raw.upper() in self.products:  # pragma: no cover - _map_product returns it
                return raw.upper()
            raise OrderNotFound(f"product {raw!r} not found")
        return pid

    # -- public REST ------------------------------------------------------------

    async def _time(self, request: web.Request) -> web.StreamResponse:
        now = self.now()
        return _json({"iso": _iso(now), "epochSeconds": str(int(now)), "epochMillis": str(int(now * 1000))})

    def _product_json(self, pid: str) -> dict[str, Any]:
        p = self.products[pid]
        last = self.bridge.last_price(pid) or self.market.models[pid].mid
        volume, _low, _high, open_ = self._stats_24h(pid)
        change = (last - open_) / open_ * 100 if open_ > 0 else Decimal(0)
        bids, asks = self.bridge.levels(pid, 1)
        return {
            "product_id": pid,
            "price": _dec(last),
            "price_percentage_change_24h": _dec(change.quantize(Decimal("0.00000001"))),
            "volume_24h": _dec(volume),
            "volume_percentage_change_24h": "0",
            "base_increment": _dec(p.base_increment),
            "quote_increment": _dec(p.quote_increment),
            "quote_min_size": _dec(p.quote_min_size),
            "quote_max_size": _dec(p.quote_max_size),
            "base_min_size": _dec(p.base_min_size),
            "base_max_size": _dec(p.base_max_size),
            "base_name": p.base_currency,
            "quote_name": p.quote_currency,
            "watched": False,
            "is_disabled": False,
            "new": False,
            "status": p.status,
            "cancel_only": p.cancel_only,
            "limit_only": p.limit_only,
            "post_only": p.post_only,
            "trading_disabled": p.trading_disabled,
            "auction_mode": False,
            "product_type": "SPOT",
            "quote_currency_id": p.quote_currency,
            "base_currency_id": p.base_currency,
            "fcm_trading_session_details": None,
            "mid_market_price": "",
            "alias": "",
            "alias_to": [],
            "base_display_symbol": p.base_currency,
            "quote_display_symbol": p.quote_currency,
            "view_only": False,
            "price_increment": _dec(p.price_increment),
            "display_name": pid,
            "product_venue": "CBE",
            "approximate_quote_24h_volume": _dec((volume * last).quantize(Decimal("0.01"))),
            "best_bid_price": _dec(bids[0][0]) if bids else "",
            "best_ask_price": _dec(asks[0][0]) if asks else "",
        }

    async def _products(self, request: web.Request) -> web.StreamResponse:
        wanted = _query_list(request, "product_ids")
        product_type = request.query.get("product_type")
        pids = list(self.products)
        if wanted:
            pids = [p for p in pids if p in {w.upper() for w in wanted}]
        if product_type and product_type.upper() not in ("SPOT", "UNKNOWN_PRODUCT_TYPE"):
            pids = []
        offset = _query_int(request, "offset", 0)
        limit = _query_int(request, "limit", 0)
        pids = pids[offset:]
        if limit:
            pids = pids[:limit]
        return _json({"products": [self._product_json(p) for p in pids], "num_products": len(pids), "pagination": None})

    async def _product(self, request: web.Request) -> web.StreamResponse:
        pid = self._product_id(request.match_info["product_id"])
        return _json(self._product_json(pid))

    async def _candles(self, request: web.Request) -> web.StreamResponse:
        pid = self._product_id(request.match_info["product_id"])
        gran_name = request.query.get("granularity", "")
        granularity = GRANULARITIES.get(gran_name)
        if granularity is None:
            raise InvalidValue("granularity", gran_name, f"expected one of {', '.join(GRANULARITIES)}")
        now = int(self.now())
        start = _query_int(request, "start", now - 300 * granularity)
        end = _query_int(request, "end", now)
        if end < start:
            raise InvalidValue("end", end, f"must not be before start {start}")
        limit = _query_int(request, "limit", 350, low=1, high=350)
        if (end - start) // granularity > 350:
            raise InvalidValue("start", start, "number of candles requested should be less than 350")
        bars = self.candles[pid].candles(start, min(end, now + granularity), granularity, limit=limit)
        return _json({"candles": [b.to_coinbase() for b in bars]})

    async def _ticker(self, request: web.Request) -> web.StreamResponse:
        pid = self._product_id(request.match_info["product_id"])
        limit = _query_int(request, "limit", 100, low=0, high=1000) or 100
        start = request.query.get("start")
        end = request.query.get("end")
        trades = list(reversed(self.recent_trades[pid]))
        if start:
            trades = [t for t in trades if t.time >= _query_int(request, "start", 0)]
        if end:
            trades = [t for t in trades if t.time < _query_int(request, "end", 0)]
        bids, asks = self.bridge.levels(pid, 1)
        body = {
            "trades": [{**self._trade_json(t), "time": _iso(t.time), "bid": "", "ask": "", "exchange": "coinbase"}
                       for t in trades[:limit]],
            "best_bid": _dec(bids[0][0]) if bids else "",
            "best_ask": _dec(asks[0][0]) if asks else "",
        }
        return _json(body)

    def _book_json(self, pid: str, limit: int | None) -> dict[str, Any]:
        bids, asks = self.bridge.levels(pid, limit)
        return {
            "product_id": pid,
            "bids": [{"price": _dec(p), "size": _dec(s)} for p, s in bids],
            "asks": [{"price": _dec(p), "size": _dec(s)} for p, s in asks],
            "time": _iso_nanos(self.now()),
        }

    async def _product_book(self, request: web.Request) -> web.StreamResponse:
        pid = self._product_id(request.query.get("product_id"))
        limit = _query_int(request, "limit", 0, low=0, high=10000) or None
        book = self._book_json(pid, limit)
        body: dict[str, Any] = {"pricebook": book}
        bids, asks = self.bridge.levels(pid, 1)
        last = self.bridge.last_price(pid)
        if bids and asks:
            mid = (bids[0][0] + asks[0][0]) / 2
            spread = asks[0][0] - bids[0][0]
            body.update(
                last=_dec(last if last is not None else mid),
                mid_market=_dec(mid),
                spread_bps=_dec((spread / mid * 10000).quantize(Decimal("0.000000000001"))),
                spread_absolute=_dec(spread),
            )
        return _json(body)

    async def _best_bid_ask(self, request: web.Request) -> web.StreamResponse:
        wanted = _query_list(request, "product_ids") or list(self.products)
        books = [self._book_json(self._product_id(pid, "product_ids"), 1) for pid in wanted]
        return _json({"pricebooks": books})

    # -- private REST --------------------------------------------------------------

    def _account_uuid(self, account: str, currency: str) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"cryptoj-sim:{self.config.seed}:{account}:{currency}"))

    def _accounts_json(self, account: str) -> list[dict[str, Any]]:
        balances = self.exchange.balances(account)
        currencies = list(balances)
        for p in self.products.values():
            for cur in (p.base_currency, p.quote_currency):
                if cur not in currencies:
                    currencies.append(cur)
        out = []
        created = _iso(self.started_at)
        for cur in currencies:
            bal = self.exchange.balance(account, cur)
            out.append({
                "uuid": self._account_uuid(account, cur),
                "name": f"{cur} Wallet",
                "currency": cur,
                "available_balance": {"value": _dec(bal.available), "currency": cur},
                "default": True,
                "active": True,
                "created_at": created,
                "updated_at": created,
                "deleted_at": None,
                "type": "ACCOUNT_TYPE_FIAT" if cur in ("USD", "EUR", "GBP") else "ACCOUNT_TYPE_CRYPTO",
                "ready": True,
                "hold": {"value": _dec(bal.hold), "currency": cur},
                "retail_portfolio_id": "sim-portfolio",
            })
        return out

    def _account_of(self, request: web.Request) -> str:
        return self._account_for_key(request.get(_KEY_NAME, ""))

    async def _accounts(self, request: web.Request) -> web.StreamResponse:
        accounts = self._accounts_json(self._account_of(request))
        limit = _query_int(request, "limit", 49, low=1, high=250)
        cursor = request.query.get("cursor") or "0"
        try:
            offset = int(cursor)
        except ValueError:
            raise InvalidValue("cursor", cursor, "not a cursor this simulator issued") from None
        chunk = accounts[offset : offset + limit]
        has_next = offset + limit < len(accounts)
        return _json({"accounts": chunk, "has_next": has_next, "cursor": str(offset + limit) if has_next else "",
                      "size": len(chunk)})

    async def _account(self, request: web.Request) -> web.StreamResponse:
        wanted = request.match_info["uuid"]
        for acct in self._accounts_json(self._account_of(request)):
            if acct["uuid"] == wanted:
                return _json({"account": acct})
        raise OrderNotFound(f"account {wanted!r} not found")

    async def _create_order(self, request: web.Request) -> web.StreamResponse:
        body = await self._json_body(request)
        account = self._account_of(request)
        config = body.get("order_configuration") if isinstance(body, dict) else None
        try:
            spec = body_to_order_spec(body)
        except DataError as exc:
            reason = str(exc)
            code = "UNSUPPORTED_ORDER_CONFIGURATION" if "UNSUPPORTED_ORDER_CONFIGURATION" in reason else "INVALID_ARGUMENT"
            if code == "INVALID_ARGUMENT" and (not isinstance(body, dict) or not body.get("client_order_id")):
                return _error(400, reason)
            return _json(_order_failure(code, reason, config))
        try:
            result = self.exchange.place(account, spec, self.now_dt())
        except OrderRejected as exc:
            self.sync()
            return _json(_order_failure(exc.reason, str(exc), config))
        self.bridge.collect(result.events)
        self.sync()
        order = result.order
        response = {
            "success": True,
            "failure_reason": "UNKNOWN_FAILURE_REASON",
            "order_id": order.order_id,
            "success_response": {"order_id": order.order_id, "product_id": order.product_id, "side": order.side.value,
                                 "client_order_id": order.client_order_id},
            "order_configuration": order.order_configuration,
        }
        if self.faults.take_drop_order_create():
            log.info("sim fault: dropping the response to order %s", order.order_id)
            transport = request.transport
            if transport is not None:
                transport.abort()
            return web.Response(status=200)  # never reaches the client: the transport is gone
        return _json(response)

    async def _preview_order(self, request: web.Request) -> web.StreamResponse:
        body = await self._json_body(request)
        if isinstance(body, dict) and not body.get("client_order_id"):
            body = {**body, "client_order_id": "preview"}
        spec = body_to_order_spec(body)
        errs: list[str] = []
        try:
            self.exchange.engine(spec.product_id).check(spec, self.now_dt())
        except OrderRejected as exc:
            errs.append(exc.reason)
        bids, asks = self.bridge.levels(spec.product_id, 1)
        return _json({
            "order_total": "", "commission_total": "", "errs": errs, "warning": [],
            "quote_size": _dec(spec.quote_size) if spec.quote_size is not None else "",
            "base_size": _dec(spec.base_size) if spec.base_size is not None else "",
            "best_bid": _dec(bids[0][0]) if bids else "", "best_ask": _dec(asks[0][0]) if asks else "",
            "is_max": False, "preview_id": str(uuid.uuid4()),
        })

    async def _batch_cancel(self, request: web.Request) -> web.StreamResponse:
        body = await self._json_body(request)
        ids = body.get("order_ids") if isinstance(body, dict) else None
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise InvalidValue("order_ids", ids, "expected a list of order id strings")
        result = self.exchange.cancel(self._account_of(request), ids, self.now_dt())
        self.bridge.collect(result.events)
        self.sync()
        return _json({"results": [
            {"success": r.success, "failure_reason": r.failure_reason or "UNKNOWN_CANCEL_FAILURE_REASON", "order_id": r.order_id}
            for r in result.results
        ]})

    @staticmethod
    def _query_time(request: web.Request, name: str) -> datetime | None:
        raw = request.query.get(name)
        if not raw:
            return None
        return parse_time(raw, name)

    async def _list_orders(self, request: web.Request) -> web.StreamResponse:
        statuses = {s.upper() for s in _query_list(request, "order_status")}
        pids = _query_list(request, "product_ids", "product_id")
        side = request.query.get("order_side")
        orders = self.exchange.list_orders(
            self._account_of(request),
            product_ids=pids or None,
            start=self._query_time(request, "start_date"),
            end=self._query_time(request, "end_date"),
        )
        if statuses:
            orders = [o for o in orders if o.status.value in statuses]
        if side:
            orders = [o for o in orders if o.side.value == side.upper()]
        chunk, has_next, cursor = _page(orders, request)
        return _json({"orders": [_order_json(o) for o in chunk], "sequence": "0", "has_next": has_next, "cursor": cursor})

    async def _get_order(self, request: web.Request) -> web.StreamResponse:
        order = self.exchange.get_order(self._account_of(request), request.match_info["order_id"])
        return _json({"order": _order_json(order)})

    async def _list_fills(self, request: web.Request) -> web.StreamResponse:
        oids = _query_list(request, "order_ids", "order_id")
        pids = _query_list(request, "product_ids", "product_id")
        fills = self.exchange.list_fills(
            self._account_of(request),
            order_ids=oids or None,
            product_ids=pids or None,
            start=self._query_time(request, "start_sequence_timestamp"),
            end=self._query_time(request, "end_sequence_timestamp"),
        )
        chunk, _has_next, cursor = _page(fills, request)
        return _json({"fills": [_fill_json(f) for f in chunk], "cursor": cursor})

    async def _transaction_summary(self, request: web.Request) -> web.StreamResponse:
        tier = self.exchange.fee_tier(self._account_of(request))
        fills = self.exchange.list_fills(self._account_of(request))
        volume = sum((f.notional for f in fills), Decimal(0))
        fees = sum((f.commission for f in fills), Decimal(0))
        return _json({
            "total_volume": _dec(volume),
            "total_fees": _dec(fees),
            "fee_tier": {"pricing_tier": tier.pricing_tier, "usd_from": "0", "usd_to": "10000",
                         "taker_fee_rate": _dec(tier.taker_rate), "maker_fee_rate": _dec(tier.maker_rate),
                         "aop_from": "", "aop_to": ""},
            "margin_rate": None,
            "goods_and_services_tax": None,
            "advanced_trade_only_volume": _dec(volume),
            "advanced_trade_only_fees": _dec(fees),
            "coinbase_pro_volume": "0",
            "coinbase_pro_fees": "0",
        })

    # -- admin ------------------------------------------------------------------------

    async def _admin_book(self, request: web.Request) -> web.StreamResponse:
        pid = self._product_id(request.query.get("product_id"))
        limit = _query_int(request, "limit", 0, low=0, high=100000) or None
        return _json(self.admin.book(pid, limit))

    async def _admin_orders(self, request: web.Request) -> web.StreamResponse:
        account = request.query.get("account", USER_ACCOUNT)
        return _json({"account": account, "orders": [_order_json(o) for o in self.exchange.list_orders(account)]})

    async def _admin_fills(self, request: web.Request) -> web.StreamResponse:
        account = request.query.get("account", USER_ACCOUNT)
        return _json({"account": account, "fills": [_fill_json(f) for f in self.exchange.list_fills(account)]})

    async def _admin_balances(self, request: web.Request) -> web.StreamResponse:
        return _json(self.admin.balances())

    async def _admin_status(self, request: web.Request) -> web.StreamResponse:
        return _json(self.admin.status())

    async def _admin_faults_get(self, request: web.Request) -> web.StreamResponse:
        return _json(self.faults.snapshot())

    async def _admin_faults_set(self, request: web.Request) -> web.StreamResponse:
        body = await self._json_body(request)
        if not isinstance(body, dict):
            raise InvalidValue("faults", body, "expected a JSON object of fault switches")
        self.faults.update(body)
        return _json(self.faults.snapshot())

    async def _admin_faults_clear(self, request: web.Request) -> web.StreamResponse:
        self.faults.clear()
        return _json(self.faults.snapshot())

    async def _admin_place(self, request: web.Request) -> web.StreamResponse:
        body = await self._json_body(request)
        if not isinstance(body, dict):
            raise InvalidValue("body", body, "expected a JSON object")
        account = str(body.pop("account", self.bridge.ADMIN))
        try:
            order = self.admin.place(account, body)
        except OrderRejected as exc:
            return _json({"success": False, "reason": exc.reason, "message": str(exc)})
        return _json({"success": True, "order": _order_json(order)})

    async def _admin_cancel(self, request: web.Request) -> web.StreamResponse:
        body = await self._json_body(request)
        if not isinstance(body, dict) or not isinstance(body.get("order_ids"), list):
            raise InvalidValue("order_ids", body, "expected {\"account\": ..., \"order_ids\": [...]}")
        results = self.admin.cancel(str(body.get("account", self.bridge.ADMIN)), [str(i) for i in body["order_ids"]])
        return _json({"results": results})

    async def _admin_trade(self, request: web.Request) -> web.StreamResponse:
        body = await self._json_body(request)
        if not isinstance(body, dict):
            raise InvalidValue("body", body, "expected {\"product_id\", \"side\", \"size\"}")
        pid = self._product_id(body.get("product_id"))
        side_raw = str(body.get("side", "")).upper()
        if side_raw not in ("BUY", "SELL"):
            raise InvalidValue("side", body.get("side"), "expected BUY or SELL")
        size = parse_decimal(body.get("size"), "size")
        self.admin.trade(pid, Side(side_raw), size)
        return _json({"success": True, "last": _dec(self.bridge.last_price(pid) or Decimal(0))})

    async def _admin_market(self, request: web.Request) -> web.StreamResponse:
        body = await self._json_body(request)
        if not isinstance(body, dict):
            raise InvalidValue("body", body, "expected {\"rate\": steps_per_second}")
        if "rate" in body:
            rate = body["rate"]
            if not isinstance(rate, int | float) or isinstance(rate, bool) or rate < 0:
                raise InvalidValue("rate", rate, "must be a number >= 0")
            self.market_rate = float(rate)
        return _json(self.admin.status())

    async def _admin_step(self, request: web.Request) -> web.StreamResponse:
        body = await self._json_body(request)
        n = body.get("n", 1) if isinstance(body, dict) else None
        if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= 100000:
            raise InvalidValue("n", n, "must be an integer 0..100000")
        self.admin.step(n)
        return _json(self.admin.status())


class _Bridge:
    """SimExchange seen by the server and the market: agent accounts and event collection."""

    MAKER: Final = "sim-maker"
    TAKER: Final = "sim-taker"
    ADMIN: Final = "sim-admin"
    AGENTS: Final = frozenset({MAKER, TAKER, ADMIN})

    def __init__(self, server: SimulatorServer, products: Mapping[str, Product]) -> None:
        cfg = server.config
        self.server = server
        self.exchange = SimExchange(products.values(), fee_tier=FeeTier(cfg.maker_fee_rate, cfg.taker_fee_rate),
                                    seed=cfg.seed)
        currencies = sorted({c for p in products.values() for c in (p.base_currency, p.quote_currency)})
        for agent in sorted(self.AGENTS):
            self.exchange.set_fee_tier(agent, FeeTier(Decimal(0), Decimal(0), "Simulator agent"))
            for cur in currencies:
                self.exchange.deposit(agent, cur, _AGENT_FUNDS)
        for cur, amount in cfg.balances.items():
            if amount > 0:
                self.exchange.deposit(USER_ACCOUNT, cur, amount)
        self._levels: list[tuple[str, Side, Decimal, Decimal]] = []
        self._trades: list[TradeRec] = []
        self._changed: dict[str, SimOrder] = {}
        self._cid = 0
        self._done_agent_orders = 0

    def now_dt(self) -> datetime:
        return self.server.now_dt()

    # -- events --------------------------------------------------------------------

    def collect(self, events: Iterable[object]) -> None:
        for event in events:
            if isinstance(event, LevelChanged):
                self._levels.append((event.product_id, event.side, event.price, event.new_size))
            elif isinstance(event, Trade):
                self._trades.append(TradeRec(event.trade_id, event.product_id, event.price, event.size, event.taker_side,
                                             event.time.timestamp()))
            elif isinstance(event, OrderChanged):
                if event.owner in self.AGENTS:
                    if event.order.status.is_done:
                        self._done_agent_orders += 1
                else:
                    self._changed[event.order.order_id] = event.order
            elif isinstance(event, FillRecorded):
                continue

    def drain(self) -> tuple[list[tuple[str, Side, Decimal, Decimal]], list[TradeRec], list[SimOrder]]:
        levels, trades, changed = self._levels, self._trades, list(self._changed.values())
        self._levels, self._trades, self._changed = [], [], {}
        if self._done_agent_orders >= 2000:
            self.prune_agent_history()
        return levels, trades, changed

    def prune_agent_history(self) -> None:
        """Forget finished agent orders and fills so a long run does not grow without bound.

        SimExchange keeps every order and fill forever (right for the user's account,
        whose history the REST API serves); for the agents that history is never read.
        This reaches into SimExchange's private indexes — see docs/simulator.md.
        """
        ex = self.exchange
        orders: dict[str, SimOrder] = ex._orders
        for owner in self.AGENTS:
            ids: list[str] = ex._owner_orders.get(owner, [])
            keep: list[str] = []
            for oid in ids:
                rec = orders.get(oid)
                if rec is not None and rec.status.is_done:
                    del orders[oid]
                    ex._by_client_id.pop((owner, rec.client_order_id), None)
                else:
                    keep.append(oid)
            ids[:] = keep
            fills: list[SimFill] | None = ex._fills.get(owner)
            if fills is not None:
                fills.clear()
        self._done_agent_orders = 0

    def expire(self, now: datetime) -> None:
        self.collect(self.exchange.expire(now))

    # -- reads -----------------------------------------------------------------------

    def levels(self, product_id: str, n: int | None = None) -> tuple[_Levels, _Levels]:
        engine = self.exchange.engine(product_id)
        bids = [(lv.price, lv.size) for lv in engine.levels(Side.BUY, n)]
        asks = [(lv.price, lv.size) for lv in engine.levels(Side.SELL, n)]
        return bids, asks

    def last_price(self, product_id: str) -> Decimal | None:
        return self.exchange.engine(product_id).last_trade_price

    # -- agents (AgentVenue) -------------------------------------------------------------

    def _next_cid(self, prefix: str) -> str:
        self._cid += 1
        return f"{prefix}-{self._cid}"

    def place_for(self, owner: str, spec: OrderSpec) -> SimOrder:
        result = self.exchange.place(owner, spec, self.now_dt())
        self.collect(result.events)
        return result.order

    def agent_place_limit(self, product_id: str, side: Side, price: Decimal, size: Decimal) -> str | None:
        spec = OrderSpec(client_order_id=self._next_cid("mk"), product_id=product_id, side=side, kind=OrderKind.LIMIT,
                         base_size=size, limit_price=price)
        try:
            order = self.place_for(self.MAKER, spec)
        except OrderRejected as exc:
            log.debug("sim maker order refused: %s", exc.reason)
            return None
        live = self.exchange.engine(product_id).order(order.order_id)
        return order.order_id if live is not None else None

    def agent_cancel(self, product_id: str, order_id: str) -> None:
        self.collect(self.exchange.cancel(self.MAKER, [order_id], self.now_dt()).events)

    def agent_market(self, product_id: str, side: Side, size: Decimal) -> None:
        self.market_order(self.TAKER, product_id, side, size)

    def market_order(self, owner: str, product_id: str, side: Side, size: Decimal) -> None:
        spec = OrderSpec(client_order_id=self._next_cid("tk"), product_id=product_id, side=side, kind=OrderKind.MARKET,
                         base_size=size, time_in_force=TimeInForce.IOC)
        try:
            self.place_for(owner, spec)
        except OrderRejected as exc:
            log.debug("sim taker order refused: %s", exc.reason)

    def agent_is_open(self, product_id: str, order_id: str) -> bool:
        return self.exchange.engine(product_id).order(order_id) is not None


def _order_failure(code: str, message: str, configuration: object) -> dict[str, Any]:
    """``POST /orders`` answer for a rejected order (HTTP 200, ``success: false``), as Coinbase sends it."""
    return {
        "success": False,
        "failure_reason": "UNKNOWN_FAILURE_REASON",
        "order_id": "",
        "error_response": {
            "error": code,
            "message": message,
            "error_details": message,
            "preview_failure_reason": f"PREVIEW_{code}" if not code.startswith("PREVIEW_") else code,
            "new_order_failure_reason": code,
        },
        "order_configuration": configuration if isinstance(configuration, dict) else {},
    }


class SimAdmin:
    """In-process admin helpers: the same operations as ``/sim/admin/...``, for tests and the engine."""

    def __init__(self, server: SimulatorServer) -> None:
        self.server = server

    def book(self, product_id: str, limit: int | None = None) -> dict[str, Any]:
        """The exchange's own aggregated book: ``{"product_id", "bids": [[price, size]...], "asks": [...]}`` as strings."""
        bids, asks = self.server.bridge.levels(product_id, limit)
        return {"product_id": product_id, "bids": [[_dec(p), _dec(s)] for p, s in bids],
                "asks": [[_dec(p), _dec(s)] for p, s in asks],
                "last": _dec(self.server.bridge.last_price(product_id) or Decimal(0))}

    def balances(self) -> dict[str, dict[str, dict[str, str]]]:
        ex = self.server.exchange
        return {owner: {cur: {"available": _dec(b.available), "hold": _dec(b.hold)} for cur, b in ex.balances(owner).items()}
                for owner in ex.owners()}

    def orders(self, account: str = USER_ACCOUNT) -> list[SimOrder]:
        return self.server.exchange.list_orders(account)

    def fills(self, account: str = USER_ACCOUNT) -> list[SimFill]:
        return self.server.exchange.list_fills(account)

    def status(self) -> dict[str, Any]:
        s = self.server
        return {"products": list(s.products), "seed": s.config.seed, "speed": s.config.speed, "market_rate": s.market_rate,
                "steps": s.market.steps, "connections": len(s._conns), "replay": s.replay_feed is not None,
                "started_at": _iso(s.started_at)}

    def place(self, account: str, body: Mapping[str, Any]) -> SimOrder:
        """Place a ``POST /orders``-shaped order for ``account`` (an agent or the user); raises OrderRejected."""
        data = dict(body)
        data.setdefault("client_order_id", self.server.bridge._next_cid("admin"))
        spec = body_to_order_spec(data)
        if account not in self.server.exchange.owners():
            raise InvalidValue("account", account, f"unknown account (known: {', '.join(self.server.exchange.owners())})")
        try:
            order = self.server.bridge.place_for(account, spec)
        finally:
            self.server.sync()
        return order

    def cancel(self, account: str, order_ids: list[str]) -> list[dict[str, Any]]:
        result = self.server.exchange.cancel(account, order_ids, self.server.now_dt())
        self.server.bridge.collect(result.events)
        self.server.sync()
        return [{"order_id": r.order_id, "success": r.success, "failure_reason": r.failure_reason} for r in result.results]

    def trade(self, product_id: str, side: Side, size: Decimal) -> None:
        """A market order from the taker agent (trades print at the current book), then the makers re-quote."""
        self.server.bridge.market_order(_Bridge.TAKER, product_id, side, size)
        self.server.sync()
        if self.server.replay_feed is None:
            self.server.market.requote(product_id)
            self.server.sync()

    def step(self, n: int = 1) -> None:
        """Advance the synthetic market ``n`` events (use with ``market_rate=0`` for determinism)."""
        for _ in range(n):
            self.server.market.step()
        self.server.sync()

    def set_faults(self, **changes: Any) -> dict[str, Any]:
        self.server.faults.update(changes)
        return self.server.faults.snapshot()

    def clear_faults(self) -> None:
        self.server.faults.clear()

    def pause(self) -> None:
        self.server.market_rate = 0.0

    def resume(self, rate: float | None = None) -> None:
        self.server.market_rate = self.server.config.market_rate if rate is None else rate
