"""The :class:`~cryptoj.api.views.OperatorView` of a running engine, and :func:`serve_operator_api`.

:class:`EngineOperatorView` adapts a :class:`~cryptoj.trading_core.Runtime` (the
engine and every part it wires: order manager, risk engine, emergency manager,
storage, market data, the market WebSocket and the REST client). It lives in its
own module so that :mod:`cryptoj.api.views` (the Protocol and the response models)
imports nothing of the engine.

While running it owns three tasks: one follows the order manager's update stream
(live ``order`` / ``fill`` updates; the submit → acknowledgement latency histogram;
orders by status), one follows market data events (messages per channel, book
resyncs and sequence gaps per product), and a sampler (every
``engine.equity_interval_seconds``) that records the equity series, publishes
trading-state changes and new journal entries, keeps the REST error-rate and
latency window, and feeds the alert sink (reconciliation problems, reconnect
storms, the daily summary).

:func:`serve_operator_api` is what ``cryptoj run`` / ``cryptoj demo`` call::

    async with serve_operator_api(runtime, config) as served:
        print(served.url)
        await runtime.engine.wait_for_stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal, TextIO

import structlog

from cryptoj.alerts import AlertSink, AlertWatch
from cryptoj.api.app import ServedApi, announce_token, create_app, serve_app
from cryptoj.api.auth import load_or_create_token
from cryptoj.api.views import (
    BalanceView,
    EquityHistory,
    EventView,
    FeedHealth,
    FillView,
    HealthSample,
    KillResult,
    LiveUpdate,
    MetricsSnapshot,
    OrderFilter,
    OrderView,
    PnlPoint,
    PositionView,
    ReconciliationView,
    RejectionTail,
    ResumeResult,
    RiskView,
    StatusView,
    UpdateHub,
    balance_view,
    dec,
    fill_view,
    filter_orders,
    order_view,
    position_view,
    risk_view,
)
from cryptoj.config import AppConfig
from cryptoj.emergency_manager import Trigger, venue_failures
from cryptoj.health import HealthMonitor
from cryptoj.market_data import BookResync, BookUpdated, CandleClosed, Lagged
from cryptoj.metrics import LatencyHistogram, OperatorMetrics
from cryptoj.model.events import MarketTrade, TickerEvent
from cryptoj.model.orders import Fill, Order
from cryptoj.risk_management import TradingState

if TYPE_CHECKING:
    from cryptoj.trading_core import Runtime

__all__ = ["EngineOperatorView", "ServedOperatorApi", "operator_api", "serve_operator_api"]

log = structlog.get_logger("cryptoj.api.engine")

_CHANNEL_OF: dict[type, str] = {BookUpdated: "level2", MarketTrade: "market_trades", TickerEvent: "ticker",
                                CandleClosed: "candles"}
RECENT_DAYS = 7
MAX_REMEMBERED = 20_000
WINDOW_S = 60.0


class EngineOperatorView:
    """An :class:`~cryptoj.api.views.OperatorView` over a :class:`~cryptoj.trading_core.Runtime`."""

    def __init__(self, runtime: Runtime, *, alerts: AlertWatch | None = None, sample_interval: float | None = None,
                 monotonic: Any = time.monotonic) -> None:
        self.rt = runtime
        self.alerts = alerts
        self._mono = monotonic
        self._started_mono = monotonic()
        self.started_at: datetime = runtime.engine.clock.now()
        self.sample_interval = sample_interval or runtime.config.engine.equity_interval_seconds
        self.hub = UpdateHub(runtime.engine.clock.now)
        self.history = EquityHistory()
        self.latency = LatencyHistogram()
        self.rejections = RejectionTail(runtime.storage)
        self.messages: Counter[str] = Counter()
        self.resyncs: Counter[str] = Counter()
        self.gaps: Counter[str] = Counter()
        self._status: dict[str, str] = {}
        self._acked: set[str] = set()
        self._recent: dict[str, Order] = {}
        """Orders of the last ``RECENT_DAYS`` days (loaded once at start) kept current by the update stream."""
        self._tasks: list[asyncio.Task[None]] = []
        self._journal_cursor = 0
        self._last_state: str | None = None
        self._rest_window: deque[tuple[float, int, int, float]] = deque()

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        self._journal_cursor = await self._last_journal_id()  # push only what happens from now on
        since = self.rt.engine.clock.now() - timedelta(days=RECENT_DAYS)
        for order in await self.rt.storage.all_orders(since=since):
            self._remember(order)
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._follow_orders(), name="api-orders"),
            loop.create_task(self._follow_market(), name="api-market"),
            loop.create_task(self._sampler(), name="api-sampler"),
        ]

    async def _last_journal_id(self) -> int:
        cursor = 0
        while True:
            batch = await self.rt.storage.journal(cursor, 1000)
            if not batch:
                return cursor
            cursor = batch[-1].id

    async def close(self) -> None:
        self.hub.close()
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _follow_orders(self) -> None:
        async for update in self.rt.order_manager.updates():
            order: Order = update.order
            coid = order.client_order_id
            self._status[coid] = order.status.value
            self._remember(order)
            if coid not in self._acked and order.venue_order_id and order.created_at and order.updated_at:
                self._acked.add(coid)
                seconds = (order.updated_at - order.created_at).total_seconds()
                if seconds >= 0:
                    self.latency.observe(seconds)
            self.hub.publish("order", order_view(order).model_dump(mode="json"))
            fill: Fill | None = update.fill
            if fill is not None:
                self.hub.publish("fill", fill_view(fill).model_dump(mode="json"))

    def _remember(self, order: Order) -> None:
        self._recent[order.client_order_id] = order
        if len(self._recent) > MAX_REMEMBERED:  # forget the oldest finished orders (storage keeps them all)
            finished = sorted((o for o in self._recent.values() if o.is_terminal),
                              key=lambda o: o.updated_at or o.created_at or self.started_at)
            for old in finished[: len(self._recent) - MAX_REMEMBERED]:
                del self._recent[old.client_order_id]

    async def _follow_market(self) -> None:
        md = self.rt.market_data
        kinds = [BookUpdated, MarketTrade, TickerEvent, CandleClosed, BookResync]
        async with md.subscribe(kinds, maxsize=100_000) as sub:
            async for event in sub:
                kind = type(event)
                channel = _CHANNEL_OF.get(kind)
                if channel is not None:
                    self.messages[channel] += 1
                elif isinstance(event, BookResync):
                    self.resyncs[event.product_id] += 1
                    if event.expected is not None:
                        self.gaps[event.product_id] += 1
                elif isinstance(event, Lagged):
                    self.messages["lagged"] += event.dropped

    async def _sampler(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception as exc:  # the operator view must never take the engine down
                log.error("api_sampler_failed", error=f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(self.sample_interval)

    async def tick(self) -> None:
        """One sampler pass (see the module doc)."""
        rt = self.rt
        engine = rt.engine
        now = engine.clock.now()
        equity = engine.try_equity()
        if equity is not None:
            prices = engine.prices()
            portfolio = engine.portfolio
            point = self.history.add(now, equity, portfolio.realised_pnl, portfolio.unrealised_pnl(prices))
            self.hub.publish("equity", point.model_dump(mode="json"), time=now)
        state = rt.risk.state.value
        if state != self._last_state:
            reason = rt.risk.state_reason
            if self._last_state is not None:
                self.hub.publish("state", {"trading_state": state, "reason": reason}, time=now)
            self._last_state = state
        batch = await rt.storage.journal(self._journal_cursor, 200)
        for entry in batch:
            self._journal_cursor = entry.id
            self.hub.publish("event", {"id": entry.id, "kind": entry.kind, "payload": entry.payload}, time=entry.time)
        mono = self._mono()
        rest = rt.rest
        self._rest_window.append((mono, rest.requests, venue_failures(rest), rest.latency_sum))
        while len(self._rest_window) > 2 and mono - self._rest_window[1][0] >= WINDOW_S:
            self._rest_window.popleft()
        if self.alerts is not None:  # only for a sink of the API's own (the runtime watches its own sink)
            self.alerts.tick(now)

    # -- reads ------------------------------------------------------------------------------------

    def _feeds(self) -> list[FeedHealth]:
        rt = self.rt
        md = rt.market_data
        connected = rt.market_ws.connected
        out = []
        for pid in rt.engine.products:
            out.append(FeedHealth(
                product_id=pid, connected=connected, book_valid=md.is_book_valid(pid), last_message_age_s=md.data_age(pid),
                stale=md.is_stale(pid), resyncs=self.resyncs[pid], mid_price=dec(rt.engine.mid_price(pid)),
            ))
        return out

    def _reconciliation(self) -> ReconciliationView:
        report = self.rt.order_manager.last_reconciliation
        if report is None:
            return ReconciliationView(ok=None, checked_at=None, problems=[])
        return ReconciliationView(ok=report.ok, checked_at=report.started_at, problems=list(report.problems))

    def status(self) -> StatusView:
        rt = self.rt
        return StatusView(
            mode=rt.mode,
            started_at=self.started_at,
            uptime_s=round(self._mono() - self._started_mono, 3),
            trading_state=rt.risk.state.value,
            trading_state_reason=rt.risk.state_reason,
            trading_state_since=rt.risk.state_since,
            kill_in_progress=rt.emergency.kill_in_progress,
            products=list(rt.engine.products),
            feeds=self._feeds(),
            reconciliation=self._reconciliation(),
            strategies=[s.name for s in rt.engine.strategies],
        )

    def positions(self) -> list[PositionView]:
        engine = self.rt.engine
        return [position_view(p, engine.mid_price(pid)) for pid, p in sorted(engine.portfolio.positions().items())]

    def balances(self) -> list[BalanceView]:
        return [balance_view(b) for _, b in sorted(self.rt.engine.portfolio.balances().items())]

    async def _orders(self, which: OrderFilter) -> list[Order]:
        live = {o.client_order_id: o for o in self.rt.order_manager.open_orders()}
        if which == "open":
            return list(live.values())
        merged = dict(self._recent)
        merged.update(live)
        return list(merged.values())

    async def orders(self, which: OrderFilter = "all", *, product_id: str | None = None, side: str | None = None,
                     status: str | None = None, limit: int = 100) -> list[OrderView]:
        return filter_orders(await self._orders(which), which, product_id=product_id, side=side, status=status, limit=limit)

    async def fills(
        self, *, product_id: str | None = None, client_order_id: str | None = None, limit: int = 100
    ) -> list[FillView]:
        fills: list[Fill] = []
        for order in await self._orders("all"):
            if client_order_id is not None and order.client_order_id != client_order_id:
                continue
            fills.extend(f for f in order.fills.values() if product_id is None or f.product_id == product_id)
        fills.sort(key=lambda f: f.time, reverse=True)
        return [fill_view(f) for f in fills[:limit]]

    def pnl(self, *, limit: int = 1000) -> list[PnlPoint]:
        return self.history.last(limit)

    async def risk(self) -> RiskView:
        rt = self.rt
        engine = rt.engine
        risk = rt.risk
        exposures: list[Decimal] = []
        for pid, pos in engine.portfolio.positions().items():
            mid = engine.mid_price(pid)
            if mid is not None and not pos.is_flat:
                exposures.append(abs(pos.quantity) * mid)
        ages = [a for a in (rt.market_data.data_age(p) for p in engine.products) if a is not None]
        daily = risk.daily_pnl
        start = risk.day_start_equity
        usage: dict[str, Decimal | None] = {
            "max_open_orders": Decimal(len(rt.order_manager.open_orders())),
            "max_position_notional": max(exposures, default=Decimal(0)),
            "max_total_exposure": sum(exposures, Decimal(0)),
            "daily_loss_limit_quote": None if daily is None else max(Decimal(0), -daily),
            "daily_loss_limit_fraction": None if daily is None or not start else max(Decimal(0), -daily / start),
            "max_drawdown_fraction": risk.drawdown,
            "stale_data_seconds": Decimal(str(round(max(ages), 3))) if ages else None,
        }
        return risk_view(risk, rt.config.risk, usage, await self.rejections.recent())

    async def events(self, *, since_id: int = 0, kind: str | None = None, limit: int = 200) -> list[EventView]:
        entries = await self.rt.storage.journal(since_id, limit, kind=kind)
        return [EventView(id=e.id, time=e.time, kind=e.kind, payload=e.payload) for e in entries]

    # -- actions -----------------------------------------------------------------------------------------

    async def kill(self, reason: str, *, flatten: bool | None = None) -> KillResult:
        report = await self.rt.emergency.trigger(Trigger.MANUAL, reason, flatten=flatten)
        self.hub.publish("state", {"trading_state": self.rt.risk.state.value, "reason": reason})
        return KillResult(
            trigger=report.trigger.value, confirmed=report.confirmed, cancelled=list(report.cancelled),
            open_after=list(report.open_after), flatten=report.flatten, elapsed_s=round(report.elapsed_seconds, 6),
            trading_state=self.rt.risk.state.value, steps=[s.as_payload() for s in report.steps],
        )

    async def resume(self, reason: str, *, state: Literal["ACTIVE", "REDUCE_ONLY"] = "ACTIVE") -> ResumeResult:
        report = await self.rt.emergency.resume(reason, state=TradingState(state))
        if report.ok:
            self.hub.publish("state", {"trading_state": report.state.value, "reason": reason})
        return ResumeResult(ok=report.ok, problems=list(report.problems), trading_state=self.rt.risk.state.value)

    async def cancel_order(self, client_order_id: str) -> OrderView:
        return order_view(await self.rt.order_manager.cancel(client_order_id))

    async def cancel_all(self, product_id: str | None = None) -> list[OrderView]:
        return [order_view(o) for o in await self.rt.order_manager.cancel_all(product_id)]

    def updates(self) -> AsyncIterator[LiveUpdate]:
        return self.hub.subscribe()

    # -- numbers -------------------------------------------------------------------------------------------

    def _rest_recent(self) -> tuple[int, int, float | None]:
        """REST attempts, failed ones (:func:`~cryptoj.emergency_manager.venue_failures`: the number the kill
        switch's error-rate trigger counts) and mean latency over the window."""
        rest = self.rt.rest
        if not self._rest_window:
            return rest.requests, venue_failures(rest), (rest.latency_sum / rest.requests) if rest.requests else None
        _, req0, err0, lat0 = self._rest_window[0]
        requests = rest.requests - req0
        errors = venue_failures(rest) - err0
        latency = (rest.latency_sum - lat0) / requests if requests > 0 else None
        return requests, errors, latency

    def metrics_snapshot(self) -> MetricsSnapshot:
        rt = self.rt
        engine = rt.engine
        portfolio = engine.portfolio
        prices = engine.prices()
        try:
            unrealised: Decimal | None = portfolio.unrealised_pnl(prices)
        except Exception:  # a position without a price: unknown, not zero
            unrealised = None
        by_status = Counter(self._status.values())
        for order in rt.order_manager.open_orders():
            by_status.setdefault(order.status.value, 0)
        rejections: Counter[str] = Counter(rt.risk.rejection_counts)
        rejections.update(engine.stats.venue_rejects)
        rest = rt.rest
        return MetricsSnapshot(
            trading_state=rt.risk.state.value,
            equity=engine.try_equity(),
            realised_pnl=portfolio.realised_pnl,
            unrealised_pnl=unrealised,
            quote_currency=engine.options.quote_currency,
            messages_by_channel=dict(self.messages),
            reconnects_by_stream={"market": rt.market_ws.stats.reconnects, "user": rt.order_manager.stats.get("resyncs", 0)},
            gaps_by_product={pid: self.gaps[pid] for pid in engine.products},
            resyncs_by_product={pid: self.resyncs[pid] for pid in engine.products},
            data_age_by_product={pid: rt.market_data.data_age(pid) for pid in engine.products},
            orders_by_status=dict(by_status),
            rejections_by_reason=dict(rejections),
            rate_limit_headroom={"public": rest.public_bucket.available, "private": rest.private_bucket.available},
            order_roundtrip=self.latency.data(),
            venue_requests=rest.requests,
            venue_errors=venue_failures(rest),
            kills_by_trigger=dict(rt.emergency.trigger_counts),
        )

    def health_sample(self) -> HealthSample:
        requests, errors, latency = self._rest_recent()
        return HealthSample(
            feeds=self._feeds(),
            venue_latency_s=latency,
            venue_error_rate=(errors / requests) if requests > 0 else 0.0,
            venue_requests=requests,
            reconciliation=self._reconciliation(),
            streams_connected={"market": self.rt.market_ws.connected, "user": self.rt.order_manager.stream_connected},
        )


@dataclass(frozen=True, slots=True)
class ServedOperatorApi:
    """A running operator API: where it listens, the token file, the view and the alert sink."""

    served: ServedApi
    token_path: str
    view: EngineOperatorView
    alerts: AlertSink

    @property
    def url(self) -> str:
        return self.served.url


@asynccontextmanager
async def serve_operator_api(runtime: Runtime, config: AppConfig | None = None, *, out: TextIO | None = None,
                             port: int | None = None) -> AsyncIterator[ServedOperatorApi]:
    """Serve the operator API and dashboard for ``runtime`` until the block exits.

    The token comes from ``<storage.state_dir>/api_token`` (created with mode 0600
    and printed once to ``out`` / stderr on first start). Alerts (state changes,
    reconciliation problems, reconnect storms) go to the runtime's own alert sink
    (``[alerts]``); for a runtime built with its own ``alert`` hook, a sink is made
    here and connected to the kill switch when it has none. ``port`` overrides
    ``api.port`` (0 picks a free port).
    """
    config = config or runtime.config
    token = load_or_create_token(config.storage.state_dir)
    if token.created:
        announce_token(token.value, str(token.path), out)
    own_sink = runtime.alerts is None
    alerts = AlertSink(config.alerts, clock=runtime.engine.clock.now) if runtime.alerts is None else runtime.alerts
    await alerts.start()
    if runtime.emergency.alert is None:
        runtime.emergency.attach_alert(alerts)
    from cryptoj.trading_core import alert_watch  # the API is optional for the engine, not the other way round

    view = EngineOperatorView(runtime, alerts=alert_watch(runtime, alerts) if own_sink else None)
    await view.start()
    app = create_app(view, token=token.value, metrics=OperatorMetrics(view.metrics_snapshot),
                     health=HealthMonitor(view.health_sample))
    try:
        async with serve_app(app, config.api.host, config.api.port if port is None else port,
                             allow_non_loopback=config.api.allow_non_loopback) as served:
            yield ServedOperatorApi(served, str(token.path), view, alerts)
    finally:
        await view.close()
        if own_sink:
            await alerts.close()  # the runtime's own sink closes with the runtime



@asynccontextmanager
async def operator_api(runtime: Runtime, config: AppConfig | None = None, *,
                       out: TextIO | None = None) -> AsyncIterator[ServedOperatorApi | None]:
    """:func:`serve_operator_api` when ``api.enabled``, else nothing (yields None): the one line ``cryptoj run`` /
    ``cryptoj demo`` need::

        async with operator_api(runtime) as api:
            if api is not None:
                console.print(f"dashboard: {api.url}")
            ...  # run until stopped, then leave the block before runtime.close()
    """
    config = config or runtime.config
    if not config.api.enabled:
        yield None
        return
    async with serve_operator_api(runtime, config, out=out) as served:
        yield served
