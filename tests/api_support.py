"""An :class:`~cryptoj.api.views.OperatorView` over real components, for the API tests.

``LocalView`` keeps its state in our real classes: a :class:`~cryptoj.storage.Storage`
(SQLite file), a :class:`~cryptoj.model.positions.Portfolio`, a
:class:`~cryptoj.risk_management.RiskEngine` (with this object as its
:class:`~cryptoj.risk_management.RiskContext`), model :class:`~cryptoj.model.orders.Order`
state machines, an :class:`~cryptoj.api.views.UpdateHub` and an
:class:`~cryptoj.api.views.EquityHistory`. Orders are "placed" by :meth:`LocalView.place`
(risk check, write-ahead to storage, OPEN) and filled by :meth:`LocalView.fill`
(portfolio + storage); kill/resume go through the risk engine's trading state and storage.
The engine-backed view is tested end to end in tests/integration/test_api_engine.py.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from cryptoj.api.app import create_app, serve_app
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
    fill_view,
    filter_orders,
    order_view,
    position_view,
    risk_view,
)
from cryptoj.config import RiskConfig
from cryptoj.errors import OrderNotFound, RiskRejected, TradingHalted
from cryptoj.health import HealthMonitor, HealthThresholds
from cryptoj.metrics import LatencyHistogram
from cryptoj.model.instruments import Product
from cryptoj.model.money import Side
from cryptoj.model.orders import Fill, Liquidity, Order, OrderKind, OrderSpec, OrderStatus, TimeInForce
from cryptoj.model.positions import Balance, Portfolio
from cryptoj.risk_management import RiskEngine, TradingState
from cryptoj.storage import Storage

START = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def product(pid: str) -> Product:
    base, quote = pid.split("-")
    return Product(pid, base, quote, Decimal("0.00000001"), Decimal("0.01"), Decimal("0.01"), Decimal("0.00001"),
                   Decimal("10000"), Decimal("1"), Decimal("10000000"))


class StepClock:
    """A settable clock (each read is the current time)."""

    def __init__(self, start: datetime = START) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


class LocalView:
    def __init__(self, storage: Storage, clock: StepClock, risk_config: RiskConfig | None = None) -> None:
        self.storage = storage
        self.clock = clock
        self.products = {pid: product(pid) for pid in ("BTC-USD", "ETH-USD")}
        self.marks: dict[str, Decimal] = {"BTC-USD": Decimal("50000.00"), "ETH-USD": Decimal("3000.00")}
        self.portfolio = Portfolio({"USD": Decimal("100000")})
        self.risk_config = risk_config or RiskConfig(max_order_notional=Decimal("60000"), max_open_orders=10,
                                                     max_drawdown_fraction=Decimal("0.2"))
        self.risk_engine = RiskEngine(self.risk_config, self, clock)
        self.hub = UpdateHub(clock)
        self.history = EquityHistory()
        self.latency = LatencyHistogram()
        self.rejections = RejectionTail(storage)
        self.orders_by_id: dict[str, Order] = {}
        self.started = clock()
        self.ids = itertools.count(1)
        self.trades = itertools.count(1)
        self.messages = {"level2": 0, "market_trades": 0, "ticker": 0}
        self.reconciled: ReconciliationView = ReconciliationView(ok=True, checked_at=clock(), problems=[])
        self.kills: dict[str, int] = {}

    # -- RiskContext -----------------------------------------------------------------------
    def product(self, product_id: str) -> Product | None:
        return self.products.get(product_id)

    def mid_price(self, product_id: str) -> Decimal | None:
        return self.marks.get(product_id)

    def data_age(self, product_id: str) -> float | None:
        return 0.5

    def position_size(self, product_id: str) -> Decimal:
        pos = self.portfolio.position(product_id)
        return pos.quantity if pos else Decimal(0)

    def balance(self, currency: str) -> Balance:
        return self.portfolio.balance(currency)

    def open_orders(self) -> Sequence[Order]:
        return [o for o in self.orders_by_id.values() if not o.is_terminal]

    def fee_rate(self, product_id: str) -> Decimal:
        return Decimal("0.006")

    def product_ids(self) -> Sequence[str]:
        return list(self.products)

    # -- driving it ------------------------------------------------------------------------------
    async def place(self, pid: str, side: Side, size: str, price: str) -> Order:
        spec = OrderSpec(f"t-{next(self.ids)}", pid, side, OrderKind.LIMIT, base_size=Decimal(size),
                         limit_price=Decimal(price), time_in_force=TimeInForce.GTC)
        try:
            self.risk_engine.check(spec)
        except (RiskRejected, TradingHalted):
            for r in self.risk_engine.drain_rejections():
                await self.storage.append_journal("risk.rejected", r.as_payload(), at=r.time)
            raise
        order = Order(spec, created_at=self.clock(), updated_at=self.clock())
        await self.storage.save_order(order)
        order.transition(OrderStatus.SUBMITTED, at=self.clock())
        order.venue_order_id = f"v-{spec.client_order_id}"
        order.transition(OrderStatus.OPEN, at=self.clock())
        self.latency.observe(0.012)
        await self.storage.save_order(order)
        self.orders_by_id[spec.client_order_id] = order
        self.hub.publish("order", order_view(order).model_dump(mode="json"))
        return order

    async def fill(self, coid: str, size: str | None = None) -> Fill:
        order = self.orders_by_id[coid]
        remaining = order.remaining_size
        assert remaining is not None and order.spec.limit_price is not None
        f = Fill(f"tr-{next(self.trades)}", coid, order.product_id, order.side, order.spec.limit_price,
                 Decimal(size) if size else remaining, Decimal("0.5"), self.clock(), Liquidity.MAKER, order.venue_order_id)
        order.apply_fill(f)
        order.updated_at = self.clock()
        self.portfolio.apply_fill(f, self.products[order.product_id])
        await self.storage.save_order(order)
        self.hub.publish("fill", fill_view(f).model_dump(mode="json"))
        self.sample_equity()
        return f

    def sample_equity(self) -> PnlPoint:
        equity = self.portfolio.equity(self.marks, "USD")
        self.risk_engine.on_equity(equity, self.clock())
        point = self.history.add(self.clock(), equity, self.portfolio.realised_pnl, self.portfolio.unrealised_pnl(self.marks))
        self.hub.publish("equity", point.model_dump(mode="json"))
        return point

    # -- OperatorView ------------------------------------------------------------------------------
    def status(self) -> StatusView:
        return StatusView(
            mode="sim", started_at=self.started, uptime_s=(self.clock() - self.started).total_seconds(),
            trading_state=self.risk_engine.state.value, trading_state_reason=self.risk_engine.state_reason,
            trading_state_since=self.risk_engine.state_since, kill_in_progress=False, products=list(self.products),
            feeds=self._feeds(), reconciliation=self.reconciled, strategies=["none"],
        )

    def _feeds(self) -> list[FeedHealth]:
        return [FeedHealth(product_id=pid, connected=True, book_valid=True, last_message_age_s=0.5, stale=False, resyncs=0,
                           mid_price=str(self.marks[pid])) for pid in self.products]

    def positions(self) -> list[PositionView]:
        return [position_view(p, self.marks.get(pid)) for pid, p in sorted(self.portfolio.positions().items())]

    def balances(self) -> list[BalanceView]:
        return [balance_view(b) for _, b in sorted(self.portfolio.balances().items())]

    async def orders(self, which: OrderFilter = "all", *, product_id: str | None = None, side: str | None = None,
                     status: str | None = None, limit: int = 100) -> list[OrderView]:
        stored = await self.storage.all_orders()
        return filter_orders(stored, which, product_id=product_id, side=side, status=status, limit=limit)

    async def fills(
        self, *, product_id: str | None = None, client_order_id: str | None = None, limit: int = 100
    ) -> list[FillView]:
        out: list[Fill] = []
        for order in await self.storage.all_orders():
            if client_order_id is not None and order.client_order_id != client_order_id:
                continue
            out.extend(f for f in order.fills.values() if product_id is None or f.product_id == product_id)
        out.sort(key=lambda f: f.time, reverse=True)
        return [fill_view(f) for f in out[:limit]]

    def pnl(self, *, limit: int = 1000) -> list[PnlPoint]:
        return self.history.last(limit)

    async def risk(self) -> RiskView:
        open_n = Decimal(len(self.open_orders()))
        return risk_view(self.risk_engine, self.risk_config, {"max_open_orders": open_n,
                                                              "max_drawdown_fraction": self.risk_engine.drawdown},
                         await self.rejections.recent())

    async def events(self, *, since_id: int = 0, kind: str | None = None, limit: int = 200) -> list[EventView]:
        entries = await self.storage.journal(since_id, limit, kind=kind)
        return [EventView(id=e.id, time=e.time, kind=e.kind, payload=e.payload) for e in entries]

    async def kill(self, reason: str, *, flatten: bool | None = None) -> KillResult:
        self.kills["MANUAL"] = self.kills.get("MANUAL", 0) + 1
        self.risk_engine.set_state(TradingState.HALTED, f"kill switch: MANUAL: {reason}")
        await self.storage.set_trading_state("HALTED", f"MANUAL: {reason}", emergency=None, at=self.clock())
        cancelled = [o.client_order_id for o in await self.cancel_all()]
        await self.storage.append_journal("emergency.trigger", {"trigger": "MANUAL", "detail": reason})
        self.hub.publish("state", {"trading_state": "HALTED", "reason": reason})
        return KillResult(trigger="MANUAL", confirmed=not self.open_orders(), cancelled=cancelled, open_after=[],
                          flatten=bool(flatten), elapsed_s=0.0, trading_state=self.risk_engine.state.value)

    async def resume(self, reason: str, *, state: Literal["ACTIVE", "REDUCE_ONLY"] = "ACTIVE") -> ResumeResult:
        if self.reconciled.ok is False:
            return ResumeResult(ok=False, problems=[f"reconciliation: {p}" for p in self.reconciled.problems],
                                trading_state=self.risk_engine.state.value)
        self.risk_engine.set_state(state, reason)
        await self.storage.set_trading_state(state, reason, emergency=None, at=self.clock())
        self.hub.publish("state", {"trading_state": state, "reason": reason})
        return ResumeResult(ok=True, problems=[], trading_state=state)

    async def cancel_order(self, client_order_id: str) -> OrderView:
        order = self.orders_by_id.get(client_order_id)
        if order is None:
            raise OrderNotFound(client_order_id)
        if not order.is_terminal:
            order.transition(OrderStatus.CANCELLED, at=self.clock())
            await self.storage.save_order(order)
            self.hub.publish("order", order_view(order).model_dump(mode="json"))
        return order_view(order)

    async def cancel_all(self, product_id: str | None = None) -> list[OrderView]:
        return [await self.cancel_order(o.client_order_id) for o in list(self.open_orders())
                if product_id is None or o.product_id == product_id]

    def updates(self) -> AsyncIterator[LiveUpdate]:
        return self.hub.subscribe()

    def metrics_snapshot(self) -> MetricsSnapshot:
        counts: dict[str, int] = {}
        for o in self.orders_by_id.values():
            counts[o.status.value] = counts.get(o.status.value, 0) + 1
        return MetricsSnapshot(
            trading_state=self.risk_engine.state.value, equity=self.portfolio.equity(self.marks, "USD"),
            realised_pnl=self.portfolio.realised_pnl, unrealised_pnl=self.portfolio.unrealised_pnl(self.marks),
            quote_currency="USD", messages_by_channel=dict(self.messages), reconnects_by_stream={"market": 1, "user": 0},
            gaps_by_product={"BTC-USD": 2}, resyncs_by_product={"BTC-USD": 2, "ETH-USD": 0},
            data_age_by_product={"BTC-USD": 0.5, "ETH-USD": None}, orders_by_status=counts,
            rejections_by_reason=dict(self.risk_engine.rejection_counts), rate_limit_headroom={"public": 9.0, "private": 29.5},
            order_roundtrip=self.latency.data(), venue_requests=10, venue_errors=1, kills_by_trigger=dict(self.kills),
        )

    def health_sample(self) -> HealthSample:
        return HealthSample(feeds=self._feeds(), venue_latency_s=0.05, venue_error_rate=0.0, venue_requests=10,
                            reconciliation=self.reconciled, streams_connected={"market": True, "user": True})


class ServerThread:
    """The API on uvicorn in its own thread and event loop (for sync clients: schemathesis, the CLI)."""

    def __init__(self, db: Path, token: str) -> None:
        self.db = db
        self.token = token
        self.url = ""
        self.spec: dict[str, Any] = {}
        self.ready = threading.Event()
        self.view: LocalView | None = None
        self.error: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.thread = threading.Thread(target=self._main, name="api-schema-server", daemon=True)

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # surfaced by the fixture
            self.error = exc
            self.ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        clock = StepClock()
        storage = await Storage.open(f"sqlite+aiosqlite:///{self.db}", clock=clock)
        try:
            view = self.view = LocalView(storage, clock)
            view.portfolio.deposit("ETH", view.portfolio.balance("USD").available / 10000)
            a = await view.place("BTC-USD", Side.BUY, "0.1", "49000")
            await view.fill(a.client_order_id, "0.05")
            await view.place("ETH-USD", Side.SELL, "1", "3100")
            view.sample_equity()
            # the real loop-lag probe, with thresholds no loaded CI box reaches: a 503 from /healthz here would be the
            # machine's load, not the API (the health rules are tested with injected lags in test_health.py)
            health = HealthMonitor(view.health_sample,
                                   thresholds=HealthThresholds(loop_lag_degraded_s=600.0, loop_lag_unhealthy_s=3600.0))
            app = create_app(view, token=self.token, sse_ping_seconds=0.5, health=health)
            self.spec = app.openapi()
            async with serve_app(app, "127.0.0.1", 0) as served:
                self.url = served.url
                self.ready.set()
                await self._stop.wait()
        finally:
            await storage.close()

    def wait_ready(self) -> None:
        assert self.ready.wait(60), "the API server did not start"
        if self.error is not None:
            raise self.error

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(30)
