"""What the operator API needs from a running engine: the :class:`OperatorView` Protocol.

The API (:mod:`cryptoj.api.app`) never touches the engine's parts directly; it asks
an :class:`OperatorView`. :class:`EngineOperatorView` (in :mod:`cryptoj.api.engine_view`)
adapts the real :class:`~cryptoj.trading_core.Engine`; tests may build a view on
other real components.

Every response is a pydantic model defined here, so the OpenAPI schema at
``/openapi.json`` describes it exactly. Money, prices and sizes travel as
**strings** holding the exact :class:`~decimal.Decimal` (``"0.00012300"``), never
as JSON numbers. Times are ISO-8601 UTC.

Helpers shared by every view implementation live here too: the model →
response converters (:func:`order_view`, :func:`fill_view`, :func:`position_view`,
:func:`balance_view`), :class:`EquityHistory` (the ``/api/pnl`` series) and
:class:`UpdateHub` (fan-out of live updates to every SSE client).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from cryptoj.config import RiskConfig
from cryptoj.errors import InvalidValue
from cryptoj.model.orders import Fill, Order
from cryptoj.model.positions import Balance, Position
from cryptoj.risk_management import RiskEngine
from cryptoj.storage import Storage

__all__ = [
    "BalanceView",
    "EquityHistory",
    "EventView",
    "FeedHealth",
    "FillView",
    "HealthSample",
    "KillRequest",
    "KillResult",
    "LiveUpdate",
    "MetricsSnapshot",
    "OperatorView",
    "OrderFilter",
    "OrderView",
    "PnlPoint",
    "PositionView",
    "ReconciliationView",
    "RejectionTail",
    "RejectionView",
    "ResumeRequest",
    "ResumeResult",
    "RiskLimitView",
    "RiskView",
    "StatusView",
    "UpdateHub",
    "balance_view",
    "dec",
    "fill_view",
    "order_view",
    "position_view",
    "risk_view",
]


def dec(value: Decimal | None) -> str | None:
    """A Decimal as its exact string (``None`` stays ``None``); no float on the way."""
    return None if value is None else format(value, "f")


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


# --- responses ------------------------------------------------------------------------


class FeedHealth(_Out):
    """One product's market data feed."""

    product_id: str
    connected: bool
    """The market data stream is up."""
    book_valid: bool
    """An L2 book is ready (snapshot received, no pending resync)."""
    last_message_age_s: float | None
    """Seconds since the last data for this product (None: nothing yet)."""
    stale: bool
    resyncs: int
    """Book resyncs (sequence gaps, crossed books...) since start."""
    mid_price: str | None = None


class ReconciliationView(_Out):
    """The last reconciliation against the venue (None fields: not run yet)."""

    ok: bool | None
    checked_at: datetime | None
    problems: list[str] = Field(default_factory=list)


class StatusView(_Out):
    mode: str
    """``sim``, ``paper``, ``live`` or ``backtest``."""
    started_at: datetime
    uptime_s: float
    trading_state: Literal["ACTIVE", "REDUCE_ONLY", "HALTED"]
    trading_state_reason: str
    trading_state_since: datetime | None
    kill_in_progress: bool
    products: list[str]
    feeds: list[FeedHealth]
    reconciliation: ReconciliationView
    strategies: list[str] = Field(default_factory=list)


class PositionView(_Out):
    product_id: str
    base_currency: str
    quote_currency: str
    size: str
    avg_entry_price: str | None
    mark_price: str | None
    realised_pnl: str
    unrealised_pnl: str | None
    fees_paid: str


class BalanceView(_Out):
    currency: str
    available: str
    hold: str
    total: str


class OrderView(_Out):
    client_order_id: str
    venue_order_id: str | None
    product_id: str
    side: str
    kind: str
    status: str
    time_in_force: str
    base_size: str | None
    quote_size: str | None
    limit_price: str | None
    stop_price: str | None
    filled_size: str
    average_price: str | None
    fees: str
    created_at: datetime | None
    updated_at: datetime | None
    reject_reason: str | None
    external: bool


class FillView(_Out):
    trade_id: str
    client_order_id: str
    venue_order_id: str | None
    product_id: str
    side: str
    price: str
    size: str
    fee: str
    liquidity: str
    time: datetime


class PnlPoint(_Out):
    time: datetime
    equity: str
    realised_pnl: str
    unrealised_pnl: str


class RiskLimitView(_Out):
    name: str
    """The config key (``risk.<name>``)."""
    limit: str | None
    """The configured limit (None: off)."""
    usage: str | None
    """Current value measured against it, when meaningful (None: not measurable now)."""
    fraction_used: float | None
    """``usage / limit`` for display (never used for decisions)."""


class RejectionView(_Out):
    time: datetime
    client_order_id: str
    product_id: str
    side: str
    reason: str
    message: str


class RiskView(_Out):
    trading_state: Literal["ACTIVE", "REDUCE_ONLY", "HALTED"]
    reason: str
    equity: str | None
    day_start_equity: str | None
    peak_equity: str | None
    daily_pnl: str | None
    drawdown: str | None
    limits: list[RiskLimitView]
    rejections_by_reason: dict[str, int]
    recent_rejections: list[RejectionView]


class EventView(_Out):
    id: int
    time: datetime
    kind: str
    payload: Any


class KillRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="operator kill via API", min_length=1, max_length=500)
    flatten: bool | None = None
    """Also close positions (None: ``emergency.flatten_on_kill``)."""


class KillResult(_Out):
    trigger: str
    confirmed: bool
    """The venue reported no open order (and, when flattening, no holding above min size)."""
    cancelled: list[str]
    open_after: list[str]
    flatten: bool
    elapsed_s: float
    trading_state: str
    steps: list[dict[str, Any]] = Field(default_factory=list)


class ResumeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="operator resume via API", min_length=1, max_length=500)
    state: Literal["ACTIVE", "REDUCE_ONLY"] = "ACTIVE"


class ResumeResult(_Out):
    ok: bool
    problems: list[str]
    trading_state: str


class LiveUpdate(_Out):
    """One pushed update (``/api/stream``, server-sent events named by ``kind``)."""

    kind: Literal["order", "fill", "equity", "state", "event", "lagged"]
    time: datetime
    data: dict[str, Any]


OrderFilter = Literal["open", "recent", "all"]


# --- numbers for /metrics and /healthz ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HistogramData:
    """Cumulative histogram counts (Prometheus style: ``counts[i]`` = observations <= ``bounds[i]``)."""

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    total: int
    sum: float


@dataclass(frozen=True, slots=True)
class MetricsSnapshot:
    """Every number ``/metrics`` exports, read at scrape time (cumulative counters as totals)."""

    trading_state: str
    equity: Decimal | None
    realised_pnl: Decimal
    unrealised_pnl: Decimal | None
    quote_currency: str
    messages_by_channel: Mapping[str, int] = field(default_factory=dict)
    reconnects_by_stream: Mapping[str, int] = field(default_factory=dict)
    gaps_by_product: Mapping[str, int] = field(default_factory=dict)
    resyncs_by_product: Mapping[str, int] = field(default_factory=dict)
    data_age_by_product: Mapping[str, float | None] = field(default_factory=dict)
    orders_by_status: Mapping[str, int] = field(default_factory=dict)
    rejections_by_reason: Mapping[str, int] = field(default_factory=dict)
    rate_limit_headroom: Mapping[str, float] = field(default_factory=dict)
    """Requests that may go now without waiting, per limiter (``public`` / ``private``)."""
    order_roundtrip: HistogramData | None = None
    venue_requests: int = 0
    venue_errors: int = 0
    kills_by_trigger: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class HealthSample:
    """What the engine knows for ``/healthz`` (loop lag and memory are measured by the health module)."""

    feeds: Sequence[FeedHealth]
    venue_latency_s: float | None
    """Mean REST round trip over the recent window (None: no request yet)."""
    venue_error_rate: float
    """Failed / all REST requests over the recent window (0..1)."""
    venue_requests: int
    """REST requests over that window."""
    reconciliation: ReconciliationView
    streams_connected: Mapping[str, bool] = field(default_factory=dict)


# --- the Protocol ---------------------------------------------------------------------------------


@runtime_checkable
class OperatorView(Protocol):
    """Everything the operator API needs from a running engine."""

    def status(self) -> StatusView: ...

    def positions(self) -> list[PositionView]: ...

    def balances(self) -> list[BalanceView]: ...

    async def orders(
        self, which: OrderFilter = "all", *, product_id: str | None = None, side: str | None = None,
        status: str | None = None, limit: int = 100,
    ) -> list[OrderView]:
        """Open orders (``open``), finished ones (``recent``) or both, newest first."""
        ...

    async def fills(
        self, *, product_id: str | None = None, client_order_id: str | None = None, limit: int = 100
    ) -> list[FillView]:
        """Fills, newest first."""
        ...

    def pnl(self, *, limit: int = 1000) -> list[PnlPoint]:
        """The equity series, oldest first (at most ``limit`` most recent points)."""
        ...

    async def risk(self) -> RiskView: ...

    async def events(self, *, since_id: int = 0, kind: str | None = None, limit: int = 200) -> list[EventView]:
        """Journal entries with id > ``since_id``, oldest first."""
        ...

    async def kill(self, reason: str, *, flatten: bool | None = None) -> KillResult: ...

    async def resume(self, reason: str, *, state: Literal["ACTIVE", "REDUCE_ONLY"] = "ACTIVE") -> ResumeResult: ...

    async def cancel_order(self, client_order_id: str) -> OrderView:
        """Cancel one order; raises :class:`~cryptoj.errors.OrderNotFound` for an unknown id."""
        ...

    async def cancel_all(self, product_id: str | None = None) -> list[OrderView]: ...

    def updates(self) -> AsyncIterator[LiveUpdate]:
        """A new subscription to live updates (ends when the engine stops)."""
        ...

    def metrics_snapshot(self) -> MetricsSnapshot: ...

    def health_sample(self) -> HealthSample: ...


# --- converters ----------------------------------------------------------------------------------------


def order_view(order: Order) -> OrderView:
    spec = order.spec
    return OrderView(
        client_order_id=spec.client_order_id,
        venue_order_id=order.venue_order_id,
        product_id=spec.product_id,
        side=spec.side.value,
        kind=spec.kind.value,
        status=order.status.value,
        time_in_force=spec.time_in_force.value,
        base_size=dec(spec.base_size),
        quote_size=dec(spec.quote_size),
        limit_price=dec(spec.limit_price),
        stop_price=dec(spec.stop_price),
        filled_size=dec(order.filled_size) or "0",
        average_price=dec(order.average_price),
        fees=dec(order.fees) or "0",
        created_at=order.created_at,
        updated_at=order.updated_at,
        reject_reason=order.reject_reason,
        external=order.external,
    )


def fill_view(fill: Fill) -> FillView:
    return FillView(
        trade_id=fill.trade_id,
        client_order_id=fill.client_order_id,
        venue_order_id=fill.venue_order_id,
        product_id=fill.product_id,
        side=fill.side.value,
        price=dec(fill.price) or "0",
        size=dec(fill.size) or "0",
        fee=dec(fill.fee) or "0",
        liquidity=fill.liquidity.value,
        time=fill.time,
    )


def position_view(position: Position, mark: Decimal | None) -> PositionView:
    flat = position.is_flat
    return PositionView(
        product_id=position.product_id,
        base_currency=position.base_currency,
        quote_currency=position.quote_currency,
        size=dec(position.quantity) or "0",
        avg_entry_price=None if flat else dec(position.avg_entry_price),
        mark_price=dec(mark),
        realised_pnl=dec(position.realised_pnl) or "0",
        unrealised_pnl=None if mark is None else dec(position.unrealised_pnl(mark)),
        fees_paid=dec(position.fees_paid) or "0",
    )


def balance_view(balance: Balance) -> BalanceView:
    return BalanceView(
        currency=balance.currency,
        available=dec(balance.available) or "0",
        hold=dec(balance.hold) or "0",
        total=dec(balance.total) or "0",
    )


def filter_orders(
    orders: Sequence[Order], which: OrderFilter, *, product_id: str | None, side: str | None, status: str | None, limit: int
) -> list[OrderView]:
    """Apply the ``/api/orders`` filters to model orders, newest first."""
    if limit < 1:
        raise InvalidValue("limit", limit, "must be at least 1")
    picked: list[Order] = []
    for order in orders:
        if which == "open" and order.is_terminal:
            continue
        if which == "recent" and not order.is_terminal:
            continue
        if product_id is not None and order.product_id != product_id:
            continue
        if side is not None and order.side.value != side.upper():
            continue
        if status is not None and order.status.value != status.upper():
            continue
        picked.append(order)
    epoch = datetime.min.replace(tzinfo=None)

    def key(o: Order) -> datetime:
        when = o.updated_at or o.created_at
        return when.replace(tzinfo=None) if when is not None else epoch

    picked.sort(key=key, reverse=True)
    return [order_view(o) for o in picked[:limit]]


# --- helpers for view implementations ----------------------------------------------------------------


class EquityHistory:
    """A bounded series of :class:`PnlPoint` (the ``/api/pnl`` chart), appended by the engine's sampler."""

    def __init__(self, maxlen: int = 10_000) -> None:
        if maxlen < 2:
            raise InvalidValue("maxlen", maxlen, "must be at least 2")
        self._points: deque[PnlPoint] = deque(maxlen=maxlen)

    def add(self, time: datetime, equity: Decimal, realised: Decimal, unrealised: Decimal) -> PnlPoint:
        point = PnlPoint(time=time, equity=dec(equity) or "0", realised_pnl=dec(realised) or "0",
                         unrealised_pnl=dec(unrealised) or "0")
        self._points.append(point)
        return point

    def last(self, limit: int) -> list[PnlPoint]:
        if limit < 1:
            raise InvalidValue("limit", limit, "must be at least 1")
        points = list(self._points)
        return points[-limit:]

    def __len__(self) -> int:
        return len(self._points)


class _HubSubscription:
    def __init__(self, hub: UpdateHub, maxsize: int) -> None:
        self._hub = hub
        self._queue: asyncio.Queue[LiveUpdate | None] = asyncio.Queue(maxsize=maxsize)
        self.dropped = 0

    def push(self, update: LiveUpdate | None) -> None:
        if update is None:
            # closing: make room so the end marker always arrives
            while self._queue.full():
                self._queue.get_nowait()
            self._queue.put_nowait(None)
            return
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(update)

    def __aiter__(self) -> _HubSubscription:
        return self

    async def __anext__(self) -> LiveUpdate:
        if self.dropped:
            n, self.dropped = self.dropped, 0
            return LiveUpdate(kind="lagged", time=self._hub.clock(), data={"dropped": n})
        item = await self._queue.get()
        if item is None:
            self._hub.discard(self)
            raise StopAsyncIteration
        return item

    async def aclose(self) -> None:
        self._hub.discard(self)


class UpdateHub:
    """Fan-out of :class:`LiveUpdate` to every subscriber; a slow subscriber loses its oldest updates
    (and is told how many with a ``lagged`` update) instead of slowing the engine down."""

    def __init__(self, clock: Any, maxsize: int = 1000) -> None:
        if maxsize < 1:
            raise InvalidValue("maxsize", maxsize, "must be at least 1")
        self.clock = clock
        self._maxsize = maxsize
        self._subs: set[_HubSubscription] = set()
        self.closed = False

    def publish(self, kind: str, data: Mapping[str, Any], *, time: datetime | None = None) -> None:
        if self.closed:
            return
        update = LiveUpdate(kind=kind, time=time or self.clock(), data=dict(data))  # type: ignore[arg-type]
        for sub in list(self._subs):
            sub.push(update)

    def subscribe(self) -> AsyncIterator[LiveUpdate]:
        sub = _HubSubscription(self, self._maxsize)
        if self.closed:
            sub.push(None)
        else:
            self._subs.add(sub)
        return sub

    def discard(self, sub: _HubSubscription) -> None:
        self._subs.discard(sub)

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    def close(self) -> None:
        """End every subscription."""
        self.closed = True
        for sub in list(self._subs):
            sub.push(None)
        self._subs.clear()


# --- risk --------------------------------------------------------------------------------------------------

LIMIT_NAMES: tuple[str, ...] = (
    "max_order_notional", "max_position_notional", "max_total_exposure", "max_open_orders", "daily_loss_limit_quote",
    "daily_loss_limit_fraction", "max_drawdown_fraction", "price_band_fraction", "max_orders_per_minute", "stale_data_seconds",
)


def _limit_value(value: Any) -> Decimal | None:
    if value is None:
        return None
    return value if isinstance(value, Decimal) else Decimal(str(value))


def risk_view(engine: RiskEngine, config: RiskConfig, usage: Mapping[str, Decimal | None],
              recent: Sequence[RejectionView]) -> RiskView:
    """The ``/api/risk`` body: ``usage`` maps limit names (see :data:`LIMIT_NAMES`) to what is measured now."""
    limits: list[RiskLimitView] = []
    for name in LIMIT_NAMES:
        limit = _limit_value(getattr(config, name))
        used = usage.get(name)
        fraction = float(used / limit) if used is not None and limit is not None and limit > 0 else None
        limits.append(RiskLimitView(name=name, limit=dec(limit), usage=dec(used), fraction_used=fraction))
    return RiskView(
        trading_state=engine.state.value,
        reason=engine.state_reason,
        equity=dec(engine.equity),
        day_start_equity=dec(engine.day_start_equity),
        peak_equity=dec(engine.peak_equity),
        daily_pnl=dec(engine.daily_pnl),
        drawdown=dec(engine.drawdown),
        limits=limits,
        rejections_by_reason=dict(engine.rejection_counts),
        recent_rejections=list(recent),
    )


class RejectionTail:
    """The most recent ``risk.rejected`` journal entries, read incrementally (a cursor on the journal id)."""

    def __init__(self, storage: Storage, keep: int = 50) -> None:
        self.storage = storage
        self._cursor = 0
        self._recent: deque[RejectionView] = deque(maxlen=keep)

    async def recent(self) -> list[RejectionView]:
        while True:
            batch = await self.storage.journal(self._cursor, 500, kind="risk.rejected")
            for entry in batch:
                self._cursor = max(self._cursor, entry.id)
                p = entry.payload if isinstance(entry.payload, Mapping) else {}
                self._recent.append(RejectionView(
                    time=entry.time, client_order_id=str(p.get("client_order_id", "")), product_id=str(p.get("product_id", "")),
                    side=str(p.get("side", "")), reason=str(p.get("reason", "")), message=str(p.get("message", "")),
                ))
            if len(batch) < 500:
                break
        return list(reversed(self._recent))
