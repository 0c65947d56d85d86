"""The kill switch: triggers → HALTED → cancel everything → (flatten) → confirm flat, all recorded.

:class:`EmergencyManager` depends only on :class:`OrderManagerLike` (the order
manager's methods it uses), the :class:`~cryptoj.risk_management.RiskEngine`, a
:class:`~cryptoj.storage.Storage`, the state directory, the emergency config, a
clock and an alert hook.

**Triggers** (:class:`Trigger`): manual (:meth:`EmergencyManager.trigger`,
``cryptoj kill``, the operator API), a ``KILL`` file appearing in the state
directory, the risk engine's daily loss or drawdown limit, the venue error rate
over a window, market data stale or a stream disconnected longer than a limit, a
price move beyond a fraction within a window, and a failed reconciliation. The
engine feeds them through the ``observe_*`` methods (synchronous, cheap, safe on
hot paths); :meth:`EmergencyManager.run` polls the kill file and the optional
``data_ages`` / ``disconnected_for`` sources and stores the risk engine's
rejections in the journal.

**Actions**, in order (:meth:`EmergencyManager.trigger`): set HALTED (in memory
at once, then persisted with the trigger in one transaction: trading state +
journal); cancel every open order and keep re-sending cancels until the venue
reports none open (or ``emergency.cancel_timeout_seconds`` passes); optionally
flatten (market-sell each traded base currency down to below the product's
minimum size, reporting the dust it cannot sell); confirm via REST that no order
is open (and, when flattening, that every base balance is dust); persist the
:class:`KillReport`. Every step is a journal entry (``emergency.step``).

After a restart, :meth:`EmergencyManager.restore` puts a persisted HALTED back
into the risk engine (and re-runs the kill if the last one was not confirmed);
only :meth:`EmergencyManager.resume` — health checks and reconciliation first —
returns to ACTIVE.
"""

from __future__ import annotations

import asyncio
import inspect
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, Protocol

import structlog

from cryptoj.config import EmergencyConfig
from cryptoj.errors import CryptojError, InvalidValue
from cryptoj.model.instruments import Product
from cryptoj.model.money import Side
from cryptoj.model.orders import Order, OrderKind, OrderSpec, TimeInForce
from cryptoj.risk_management import RiskEngine, TradingState
from cryptoj.storage import Storage
from cryptoj.venues.base import Balance, VenueOrder

__all__ = [
    "Alert",
    "AlertHook",
    "EmergencyManager",
    "KillReport",
    "KillStep",
    "OrderManagerLike",
    "ReconciliationLike",
    "ResumeReport",
    "Trigger",
    "VenueCounters",
    "venue_failures",
]

log = structlog.get_logger("cryptoj.emergency")

FIRST_RETRY_DELAY: Final = 0.05
MAX_RETRY_DELAY: Final = 1.0


class Trigger(StrEnum):
    """Why the kill switch tripped."""

    MANUAL = "MANUAL"
    KILL_FILE = "KILL_FILE"
    DAILY_LOSS = "DAILY_LOSS"
    DRAWDOWN = "DRAWDOWN"
    ERROR_RATE = "ERROR_RATE"
    STALE_DATA = "STALE_DATA"
    DISCONNECTED = "DISCONNECTED"
    PRICE_MOVE = "PRICE_MOVE"
    RECONCILIATION = "RECONCILIATION"
    RESTART_UNCONFIRMED = "RESTART_UNCONFIRMED"


_OPERATOR_TRIGGERS: Final = frozenset({Trigger.MANUAL, Trigger.KILL_FILE, Trigger.RESTART_UNCONFIRMED})


class ReconciliationLike(Protocol):
    """What a reconciliation report must offer (``order_execution.ReconciliationReport`` does)."""

    @property
    def ok(self) -> bool: ...

    @property
    def problems(self) -> Sequence[str]: ...


class OrderManagerLike(Protocol):
    """The order manager as the kill switch uses it (``order_execution.OrderManager`` implements it)."""

    async def submit(self, spec: OrderSpec) -> Order: ...

    async def cancel_all(self, product_id: str | None = None) -> list[Order]: ...

    async def venue_open_orders(self) -> Sequence[VenueOrder]: ...

    async def venue_balances(self) -> Mapping[str, Balance]: ...

    async def reconcile(self) -> ReconciliationLike: ...


@dataclass(frozen=True, slots=True)
class Alert:
    """What the operator should hear about (the operator interface connects this to webhooks)."""

    kind: str
    """``kill_triggered``, ``kill_completed``, ``kill_unconfirmed``, ``resumed``, ``resume_refused``."""
    severity: str
    """``critical``, ``warning`` or ``info``."""
    message: str
    time: datetime
    detail: Mapping[str, Any] = field(default_factory=dict)


AlertHook = Callable[[Alert], Awaitable[None] | None]


class VenueCounters(Protocol):
    """The running totals a REST client keeps (:class:`~cryptoj.venues.coinbase.rest.CoinbaseRestClient`)."""

    requests: int
    retries: int
    errors: int
    rate_limited: int


def venue_failures(rest: VenueCounters) -> int:
    """Failed venue requests so far: **the** venue error number.

    Every attempt that failed — a retried 5xx / timeout / connection error
    (``retries``: each retry follows a failed attempt) plus each request that
    finally failed (``errors``) — minus the 429 answers among them
    (``rate_limited``): being paced by the venue is not the venue failing; it is
    reported as rate-limit headroom instead, and a 429 storm neither trips the
    kill switch nor marks the venue unhealthy. The kill switch's error-rate
    trigger (``venue_error_count`` in :class:`EmergencyManager`) and the operator
    API's ``/healthz`` venue error rate and ``cryptoj_venue_errors`` metric all
    read this one function.
    """
    return max(rest.errors + rest.retries - rest.rate_limited, 0)


@dataclass(frozen=True, slots=True)
class KillStep:
    """One recorded step of a kill."""

    name: str
    time: datetime
    ok: bool
    detail: str

    def as_payload(self) -> dict[str, Any]:
        return {"name": self.name, "time": self.time.isoformat(), "ok": self.ok, "detail": self.detail}


@dataclass(slots=True)
class KillReport:
    """What a kill did and whether the venue confirmed it."""

    trigger: Trigger
    detail: str
    started_at: datetime
    flatten: bool
    steps: list[KillStep] = field(default_factory=list)
    finished_at: datetime | None = None
    cancel_rounds: int = 0
    cancelled: list[str] = field(default_factory=list)
    """client order ids the order manager cancelled."""
    open_after: list[str] = field(default_factory=list)
    """venue order ids still open at the end (empty when confirmed)."""
    flatten_orders: list[str] = field(default_factory=list)
    dust: dict[str, Decimal] = field(default_factory=dict)
    """Base currencies left below the product's minimum size (cannot be sold)."""
    unflat: dict[str, Decimal] = field(default_factory=dict)
    """Base balances still above the minimum size at the end of a flattening kill."""
    confirmed: bool = False
    elapsed_seconds: float = 0.0
    persisted: bool = True
    """False when the final state/report could not be written (the database failed)."""

    def as_payload(self) -> dict[str, Any]:
        return {
            "trigger": self.trigger.value,
            "detail": self.detail,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "flatten": self.flatten,
            "cancel_rounds": self.cancel_rounds,
            "cancelled": list(self.cancelled),
            "open_after": list(self.open_after),
            "flatten_orders": list(self.flatten_orders),
            "dust": {k: str(v) for k, v in self.dust.items()},
            "unflat": {k: str(v) for k, v in self.unflat.items()},
            "confirmed": self.confirmed,
            "elapsed_seconds": round(self.elapsed_seconds, 6),
            "steps": [s.as_payload() for s in self.steps],
        }


@dataclass(frozen=True, slots=True)
class ResumeReport:
    """The outcome of :meth:`EmergencyManager.resume`: ``ok`` or the ``problems`` that stopped it."""

    ok: bool
    problems: list[str]
    state: TradingState


HealthCheck = Callable[[], Awaitable[Sequence[str]] | Sequence[str]]
"""Returns the problems it found (empty when healthy); raising counts as a problem."""


class _WindowExtremes:
    """Min and max of the values seen within a time window (monotonic deques, O(1) amortised)."""

    __slots__ = ("_max", "_min", "window")

    def __init__(self, window: timedelta) -> None:
        self.window = window
        self._min: deque[tuple[datetime, Decimal]] = deque()
        self._max: deque[tuple[datetime, Decimal]] = deque()

    def add(self, now: datetime, value: Decimal) -> tuple[Decimal, Decimal]:
        cutoff = now - self.window
        for dq in (self._min, self._max):
            while dq and dq[0][0] < cutoff:
                dq.popleft()
        while self._min and self._min[-1][1] >= value:
            self._min.pop()
        self._min.append((now, value))
        while self._max and self._max[-1][1] <= value:
            self._max.pop()
        self._max.append((now, value))
        return self._min[0][1], self._max[0][1]


class EmergencyManager:
    """The kill switch (see the module doc). One per engine; owns its watcher and kill tasks."""

    def __init__(
        self,
        *,
        orders: OrderManagerLike,
        risk: RiskEngine,
        storage: Storage,
        state_dir: Path,
        config: EmergencyConfig,
        clock: Callable[[], datetime],
        products: Callable[[], Mapping[str, Product]],
        alert: AlertHook | None = None,
        health_checks: Sequence[HealthCheck] = (),
        cancel_venue_orders: Callable[[Sequence[str]], Awaitable[object]] | None = None,
        data_ages: Callable[[], Mapping[str, float | None]] | None = None,
        disconnected_for: Callable[[], Mapping[str, float]] | None = None,
        venue_error_count: Callable[[], int] | None = None,
        prices: Callable[[], Mapping[str, Decimal | None]] | None = None,
    ) -> None:
        """``products`` gives the traded products (flattening sells their base currencies).

        ``cancel_venue_orders`` (the venue's ``cancel_orders``) lets the kill cancel
        orders the venue reports open that the order manager does not know.
        ``data_ages`` (product → seconds since its last data) and ``disconnected_for``
        (stream name → seconds down) are polled by :meth:`run`, and so are
        ``venue_error_count`` (a running total of venue errors — ``build_runtime`` passes
        :func:`venue_failures` of the REST client, the number ``/healthz`` reads too: each
        increase counts toward the error-rate trigger) and ``prices`` (product → last/mid price, for the
        price-move trigger).
        """
        self.orders = orders
        self.risk = risk
        self.storage = storage
        self.state_dir = Path(state_dir)
        self.config = config
        self._clock = clock
        self._products = products
        self._alert = alert
        self.health_checks = list(health_checks)
        self._cancel_venue_orders = cancel_venue_orders
        self._data_ages = data_ages
        self._disconnected_for = disconnected_for
        self._venue_error_count = venue_error_count
        self._last_error_count: int | None = None
        self._price_source = prices
        self._kill_task: asyncio.Task[KillReport] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._errors: deque[datetime] = deque()
        self._prices: dict[str, _WindowExtremes] = {}
        self._kill_file_seen = False
        self._closed = False
        self.last_report: KillReport | None = None
        self.trigger_counts: dict[str, int] = {}

    @property
    def alert(self) -> AlertHook | None:
        """Where kill / resume alerts go (None: nowhere)."""
        return self._alert

    def attach_alert(self, hook: AlertHook | None) -> None:
        """Send kill / resume alerts to ``hook`` from now on (None stops them)."""
        self._alert = hook

    @property
    def kill_file(self) -> Path:
        return self.state_dir / self.config.kill_file

    @property
    def halted(self) -> bool:
        return self.risk.state is TradingState.HALTED

    @property
    def kill_in_progress(self) -> bool:
        return self._kill_task is not None and not self._kill_task.done()

    # -- startup ----------------------------------------------------------------------

    async def restore(self, *, rerun_unconfirmed: bool = True, watch_kill_file: bool = True) -> TradingState:
        """Load the persisted trading state into the risk engine (call at startup, before trading).

        A persisted HALTED stays HALTED. If the last kill switch run was not confirmed
        (or the process died during it), the kill runs again (``rerun_unconfirmed``).
        A HALTED persisted by someone else (the order manager's failed reconciliation)
        is restored as it is. With ``watch_kill_file``, a kill file present now trips
        the switch. Returns the state in force.
        """
        record = await self.storage.get_trading_state()
        if record is not None and record.state != TradingState.ACTIVE.value:
            self.risk.set_state(record.state, f"restored: {record.reason}")
            log.warning("trading_state_restored", state=record.state, reason=record.reason, since=record.since.isoformat())
            emergency = record.emergency or {}
            ours = "trigger" in emergency  # written by a kill switch run
            if record.state == TradingState.HALTED.value and ours and rerun_unconfirmed and not emergency.get("confirmed"):
                detail = f"last kill not confirmed before restart ({record.reason})"
                self._spawn(self.trigger(Trigger.RESTART_UNCONFIRMED, detail))
        if watch_kill_file:
            self.check_kill_file()
        return self.risk.state

    # -- triggers fed by the engine -----------------------------------------------------------

    def observe_venue_error(self, detail: str = "", now: datetime | None = None) -> None:
        """A venue request failed; trips at ``error_rate_threshold`` errors within the window."""
        threshold = self.config.error_rate_threshold
        if threshold is None:
            return
        now = now or self._clock()
        cutoff = now - timedelta(seconds=self.config.error_rate_window_seconds)
        self._errors.append(now)
        while self._errors and self._errors[0] <= cutoff:
            self._errors.popleft()
        if len(self._errors) >= threshold:
            window = self.config.error_rate_window_seconds
            self._fire(Trigger.ERROR_RATE, f"{len(self._errors)} venue errors within {window}s (last: {detail or 'n/a'})")

    def observe_data_age(self, product_id: str, age_seconds: float | None) -> None:
        """Seconds since ``product_id``'s last market data (None = none yet: not judged)."""
        limit = self.config.stale_data_seconds
        if limit is not None and age_seconds is not None and age_seconds >= limit:
            self._fire(Trigger.STALE_DATA, f"{product_id} market data {age_seconds:.1f}s old (limit {limit}s)")

    def observe_disconnected(self, stream: str, seconds: float) -> None:
        """``stream`` has been disconnected for ``seconds``."""
        limit = self.config.disconnected_seconds
        if limit is not None and seconds >= limit:
            self._fire(Trigger.DISCONNECTED, f"{stream} disconnected for {seconds:.1f}s (limit {limit}s)")

    def observe_price(self, product_id: str, price: Decimal, now: datetime | None = None) -> None:
        """A trade/mid price; trips when it moved more than ``price_move_fraction`` within the window."""
        fraction = self.config.price_move_fraction
        if fraction is None or price <= 0:
            return
        tracker = self._prices.get(product_id)
        if tracker is None:
            tracker = self._prices[product_id] = _WindowExtremes(timedelta(seconds=self.config.price_move_window_seconds))
        low, high = tracker.add(now or self._clock(), price)
        up, down = (price - low) / low, (high - price) / high
        move = max(up, down)
        if move > fraction:
            self._fire(
                Trigger.PRICE_MOVE,
                f"{product_id} moved {move:.4%} (range {low}..{high}, now {price}) within "
                f"{self.config.price_move_window_seconds}s; limit {fraction}",
            )

    def observe_equity(self, equity: Decimal, now: datetime | None = None) -> None:
        """Feed the risk engine's equity tracking; trips on a daily loss or drawdown breach."""
        self.risk.on_equity(equity, now)
        self.check_equity_limits()

    def check_equity_limits(self) -> None:
        """Trip on the risk engine's daily loss / drawdown breach (also run by :meth:`tick`,
        for engines that feed ``RiskEngine.on_equity`` directly)."""
        if self.config.halt_on_daily_loss:
            breach = self.risk.daily_loss_breach()
            if breach is not None:
                self._fire(Trigger.DAILY_LOSS, breach)
                return
        if self.config.halt_on_drawdown:
            breach = self.risk.drawdown_breach()
            if breach is not None:
                self._fire(Trigger.DRAWDOWN, breach)

    def observe_reconciliation(self, report: ReconciliationLike) -> None:
        """A reconciliation finished; a failed one trips the switch."""
        if self.config.halt_on_reconciliation_failure and not report.ok:
            self._fire(Trigger.RECONCILIATION, "; ".join(report.problems) or "reconciliation failed")

    def check_kill_file(self) -> bool:
        """Trip once when the kill file appears; True while it exists."""
        exists = self.kill_file.exists()
        if exists and not self._kill_file_seen:
            self._kill_file_seen = True
            self._fire(Trigger.KILL_FILE, f"kill file {self.kill_file} found")
        elif not exists:
            self._kill_file_seen = False
        return exists

    def _fire(self, trigger: Trigger, detail: str) -> None:
        if self._closed:
            return
        if trigger not in _OPERATOR_TRIGGERS and (self.halted or self.kill_in_progress):
            log.debug("emergency_trigger_ignored_already_halted", trigger=trigger.value, detail=detail)
            return
        self._spawn(self.trigger(trigger, detail))

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("emergency_task_failed", error=repr(task.exception()))

    # -- the watcher loop ------------------------------------------------------------------------

    async def run(self) -> None:
        """Poll the kill file, the equity limits and the data/stream sources, store risk rejections; until :meth:`close`."""
        while not self._closed:
            await self.tick()
            await asyncio.sleep(self.config.poll_interval_seconds)

    async def tick(self) -> None:
        """One watcher pass (what :meth:`run` does every ``poll_interval_seconds``)."""
        self.check_kill_file()
        self.check_equity_limits()
        if self._data_ages is not None:
            for pid, age in self._data_ages().items():
                self.observe_data_age(pid, age)
        if self._disconnected_for is not None:
            for stream, seconds in self._disconnected_for().items():
                self.observe_disconnected(stream, seconds)
        if self._venue_error_count is not None:
            count = self._venue_error_count()
            new = 0 if self._last_error_count is None else max(count - self._last_error_count, 0)
            self._last_error_count = count
            for i in range(new):
                self.observe_venue_error(f"failed venue request #{count - new + i + 1} (REST client)")
        if self._price_source is not None:
            for pid, price in self._price_source().items():
                if price is not None:
                    self.observe_price(pid, price)
        await self.flush_rejections()

    async def flush_rejections(self) -> int:
        """Append the risk engine's queued rejections to the journal (kind ``risk.rejected``)."""
        rejections = self.risk.drain_rejections()
        for rejection in rejections:
            await self.storage.append_journal("risk.rejected", rejection.as_payload(), at=rejection.time)
        return len(rejections)

    async def settle(self) -> None:
        """Wait until every kill started by a trigger so far has finished."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        """Stop watching; a kill in progress is allowed to finish."""
        self._closed = True
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # -- the kill ---------------------------------------------------------------------------------

    async def trigger(self, trigger: Trigger | str, detail: str = "", *, flatten: bool | None = None) -> KillReport:
        """Run the kill sequence (or join the one running) and return its report."""
        try:
            trigger = Trigger(trigger)
        except ValueError:
            raise InvalidValue("emergency.trigger", trigger, f"must be one of {', '.join(t.value for t in Trigger)}") from None
        self.trigger_counts[trigger.value] = self.trigger_counts.get(trigger.value, 0) + 1
        if self._kill_task is not None and not self._kill_task.done():
            log.warning("emergency_trigger_joined", trigger=trigger.value, detail=detail)
            await self.storage.append_journal("emergency.trigger_joined", {"trigger": trigger.value, "detail": detail})
            return await asyncio.shield(self._kill_task)
        # set HALTED before anything can await: no new order passes the risk engine from here on
        self.risk.set_state(TradingState.HALTED, f"kill switch: {trigger.value}: {detail}")
        do_flatten = self.config.flatten_on_kill if flatten is None else flatten
        self._kill_task = asyncio.ensure_future(self._kill(trigger, detail, do_flatten))
        return await asyncio.shield(self._kill_task)

    async def _kill(self, trigger: Trigger, detail: str, flatten: bool) -> KillReport:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        report = KillReport(trigger=trigger, detail=detail, started_at=self._clock(), flatten=flatten)
        self.last_report = report
        log.critical("kill_switch_triggered", trigger=trigger.value, detail=detail, flatten=flatten)
        try:
            await self._persist(report, "emergency.trigger", {"trigger": trigger.value, "detail": detail, "flatten": flatten})
            await self._step(report, "halted", True, "trading state HALTED persisted")
        except CryptojError as exc:  # the database failing must not stop the cancels: HALTED holds in memory
            await self._step(report, "halted", False, f"HALTED in memory, NOT persisted: {type(exc).__name__}: {exc}")
        await self._send_alert(Alert("kill_triggered", "critical", f"kill switch: {trigger.value}: {detail}", report.started_at,
                                     {"trigger": trigger.value, "detail": detail}))
        await self._cancel_everything(report, loop)
        if flatten:
            await self._flatten(report, loop)
        await self._confirm(report)
        report.finished_at = self._clock()
        report.elapsed_seconds = loop.time() - t0
        try:
            await self._persist(report, "emergency.report", report.as_payload())
        except CryptojError as exc:
            report.persisted = False
            log.critical("kill_report_not_stored", error=f"{type(exc).__name__}: {exc}", report=report.as_payload())
        if report.confirmed:
            log.critical("kill_switch_confirmed", trigger=trigger.value, elapsed_s=round(report.elapsed_seconds, 3))
            await self._send_alert(Alert("kill_completed", "critical", f"kill confirmed in {report.elapsed_seconds:.3f}s: "
                                         "no open orders" + (", flat" if flatten else ""), report.finished_at,
                                         report.as_payload()))
        else:
            log.critical("kill_switch_unconfirmed", trigger=trigger.value, open_after=report.open_after, unflat=report.unflat)
            await self._send_alert(Alert("kill_unconfirmed", "critical", "kill NOT confirmed: "
                                         f"open orders {report.open_after}, unflat {report.unflat}; act by hand",
                                         report.finished_at, report.as_payload()))
        return report

    async def _persist(self, report: KillReport, kind: str, payload: Mapping[str, Any]) -> None:
        """The trading state (HALTED + the report so far) and one journal entry, in one transaction."""
        async with self.storage.transaction():
            await self.storage.set_trading_state(
                TradingState.HALTED.value, f"{report.trigger.value}: {report.detail}", emergency=report.as_payload(),
                at=report.started_at,
            )
            await self.storage.append_journal(kind, payload, at=report.finished_at or report.started_at)

    async def _step(self, report: KillReport, name: str, ok: bool, detail: str) -> None:
        step = KillStep(name, self._clock(), ok, detail)
        report.steps.append(step)
        log.warning("kill_step", step=name, ok=ok, detail=detail)
        try:
            payload = {"trigger": report.trigger.value, **step.as_payload()}
            await self.storage.append_journal("emergency.step", payload, at=step.time)
        except CryptojError as exc:  # the kill goes on even when the database is failing
            log.error("kill_step_not_stored", step=name, error=str(exc))

    async def _cancel_everything(self, report: KillReport, loop: asyncio.AbstractEventLoop) -> None:
        deadline = loop.time() + self.config.cancel_timeout_seconds
        delay = FIRST_RETRY_DELAY
        while True:
            report.cancel_rounds += 1
            n = report.cancel_rounds
            try:
                cancelled = await self.orders.cancel_all()
                ids = [o.client_order_id for o in cancelled]
                report.cancelled.extend(i for i in ids if i not in report.cancelled)
                await self._step(report, "cancel_all", True, f"round {n}: {len(ids)} orders cancelled by the order manager")
            except CryptojError as exc:
                await self._step(report, "cancel_all", False, f"round {n}: {type(exc).__name__}: {exc}")
            try:
                still_open = list(await self.orders.venue_open_orders())
            except CryptojError as exc:
                await self._step(report, "check_open", False, f"round {n}: cannot list open orders: {type(exc).__name__}: {exc}")
                still_open = None
            if still_open is not None:
                report.open_after = [o.order_id for o in still_open]
                if not still_open:
                    await self._step(report, "check_open", True, f"round {n}: the venue reports no open order")
                    return
                await self._step(report, "check_open", False, f"round {n}: {len(still_open)} still open at the venue")
                if self._cancel_venue_orders is not None:
                    try:
                        await self._cancel_venue_orders([o.order_id for o in still_open])
                    except CryptojError as exc:
                        await self._step(report, "cancel_venue", False, f"round {n}: {type(exc).__name__}: {exc}")
            if loop.time() >= deadline:
                limit = self.config.cancel_timeout_seconds
                message = f"gave up after {n} rounds ({limit}s); still open: {report.open_after}"
                await self._step(report, "cancel_timeout", False, message)
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_RETRY_DELAY)

    def _sellable(self) -> dict[str, Product]:
        """One traded product per base currency (the first listed) to sell it through."""
        out: dict[str, Product] = {}
        for product in self._products().values():
            out.setdefault(product.base_currency, product)
        return out

    async def _flatten(self, report: KillReport, loop: asyncio.AbstractEventLoop) -> None:
        """Sell rounds until every base balance is under its minimum size, or the flatten timeout.

        A market sell may fill only part of the way (thin book, IOC), so each round sells
        whatever is still available; a balance held by a sell in flight is waited for.
        """
        products = self._sellable()
        deadline = loop.time() + self.config.flatten_timeout_seconds
        delay = FIRST_RETRY_DELAY
        rounds = 0
        while True:
            rounds += 1
            try:
                balances: Mapping[str, Balance] | None = await self.orders.venue_balances()
            except CryptojError as exc:
                balances = None
                await self._step(report, "flatten", False, f"round {rounds}: cannot read balances: {type(exc).__name__}: {exc}")
            if balances is not None:
                unflat = self._unflat(balances, products)
                if not unflat:
                    for currency, balance in sorted(balances.items()):
                        if currency in products and balance.total > 0:
                            report.dust[currency] = balance.total
                            minimum = products[currency].base_min_size
                            message = f"{balance.total} {currency} left is dust (min size {minimum})"
                            await self._step(report, "flatten", True, message)
                    return
                for currency in sorted(unflat):
                    await self._sell(report, products[currency], balances[currency], rounds)
            if loop.time() >= deadline:
                limit = self.config.flatten_timeout_seconds
                held = self._unflat(balances, products) if balances is not None else "unknown"
                await self._step(report, "flatten_timeout", False, f"still holding {held} after {limit}s ({rounds} rounds)")
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_RETRY_DELAY)

    async def _sell(self, report: KillReport, product: Product, balance: Balance, round_no: int) -> None:
        currency = product.base_currency
        size = min(product.round_size(balance.available), product.base_max_size)
        if size < product.base_min_size or size <= 0:
            return  # held by a sell still in flight: wait for it
        spec = OrderSpec(
            client_order_id=f"kill-{report.started_at.strftime('%Y%m%dT%H%M%S')}-{currency.lower()}-{len(report.steps)}",
            product_id=product.product_id,
            side=Side.SELL,
            kind=OrderKind.MARKET,
            base_size=size,
            time_in_force=TimeInForce.IOC,
        )
        try:
            with self.risk.allow_exit(spec.client_order_id):
                order = await self.orders.submit(spec)
        except CryptojError as exc:
            message = f"round {round_no}: sell {size} {currency} on {product.product_id} failed: {exc}"
            await self._step(report, "flatten", False, message)
            return
        report.flatten_orders.append(order.client_order_id)
        await self._step(report, "flatten", True, f"round {round_no}: market sell {size} {currency} on {product.product_id} "
                         f"({order.client_order_id}, {order.status.value})")

    @staticmethod
    def _unflat(balances: Mapping[str, Balance], products: Mapping[str, Product]) -> dict[str, Decimal]:
        out: dict[str, Decimal] = {}
        for currency, product in products.items():
            balance = balances.get(currency)
            if balance is not None and balance.total >= product.base_min_size and balance.total > 0:
                out[currency] = balance.total
        return out

    async def _confirm(self, report: KillReport) -> None:
        try:
            still_open = list(await self.orders.venue_open_orders())
            report.open_after = [o.order_id for o in still_open]
            ok = not still_open
            if report.flatten:
                report.unflat = self._unflat(await self.orders.venue_balances(), self._sellable())
                ok = ok and not report.unflat
        except CryptojError as exc:
            await self._step(report, "confirm", False, f"cannot confirm via REST: {type(exc).__name__}: {exc}")
            report.confirmed = False
            return
        report.confirmed = ok
        what = f"open orders: {len(report.open_after)}"
        if report.flatten:
            what += f", holdings above min size: {report.unflat or 'none'}"
        await self._step(report, "confirm", ok, ("confirmed via REST: " if ok else "NOT confirmed via REST: ") + what)

    # -- resume -------------------------------------------------------------------------------------

    async def resume(self, reason: str = "operator resume", *, state: TradingState = TradingState.ACTIVE) -> ResumeReport:
        """Leave HALTED after the health checks and a reconciliation pass; removes the kill file.

        Returns a report with ``ok=False`` and every problem found (nothing changes) when
        a check fails, a kill is still running, or the kill file cannot be removed.
        """
        if state is TradingState.HALTED:
            raise InvalidValue("resume.state", state, "resume to ACTIVE or REDUCE_ONLY")
        problems: list[str] = []
        if self.kill_in_progress:
            problems.append("a kill is still in progress")
        for check in self.health_checks:
            name = getattr(check, "__name__", repr(check))
            try:
                result = check()
                found = await result if inspect.isawaitable(result) else result
                problems.extend(f"{name}: {p}" for p in found)
            except Exception as exc:  # a failing check is a problem to report, not a crash
                problems.append(f"{name}: {type(exc).__name__}: {exc}")
        if not problems:
            try:
                reconciliation = await self.orders.reconcile()
                problems.extend(f"reconciliation: {p}" for p in reconciliation.problems)
                if not reconciliation.ok and not reconciliation.problems:
                    problems.append("reconciliation: failed")
            except CryptojError as exc:
                problems.append(f"reconciliation: {type(exc).__name__}: {exc}")
        now = self._clock()
        if not problems and self.kill_file.exists():
            try:
                self.kill_file.unlink()
            except OSError as exc:
                problems.append(f"cannot remove kill file {self.kill_file}: {exc.strerror}")
        if problems:
            log.error("resume_refused", problems=problems)
            await self.storage.append_journal("emergency.resume_refused", {"reason": reason, "problems": problems}, at=now)
            await self._send_alert(Alert("resume_refused", "warning", "resume refused: " + "; ".join(problems), now,
                                         {"problems": problems}))
            return ResumeReport(False, problems, self.risk.state)
        self._kill_file_seen = False
        async with self.storage.transaction():
            await self.storage.set_trading_state(state.value, reason, emergency=None, at=now)
            await self.storage.append_journal("emergency.resume", {"reason": reason, "state": state.value}, at=now)
        self.risk.set_state(state, reason)
        self._errors.clear()
        self._prices.clear()
        log.warning("trading_resumed", state=state.value, reason=reason)
        message = f"trading resumed ({state.value}): {reason}"
        await self._send_alert(Alert("resumed", "info", message, now, {"state": state.value}))
        return ResumeReport(True, [], state)

    # -- alerts ---------------------------------------------------------------------------------------

    async def _send_alert(self, alert: Alert) -> None:
        if self._alert is None:
            return
        try:
            result = self._alert(alert)
            if inspect.isawaitable(result):
                await result
        except Exception as exc:  # an alert channel failing must never stop the kill
            log.error("alert_hook_failed", kind=alert.kind, error=f"{type(exc).__name__}: {exc}")
