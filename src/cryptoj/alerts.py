"""Webhook alerts: generic JSON POST and Telegram's bot API, retried with backoff, never blocking trading.

:class:`AlertSink` is an :data:`~cryptoj.emergency_manager.AlertHook`: calling it
with an :class:`~cryptoj.emergency_manager.Alert` only *queues* it (O(1), never
awaits the network); a background task delivers each alert to every configured
destination, retrying with exponential backoff (``alerts.backoff_seconds``
doubling, capped at 60 s, ``alerts.max_attempts`` tries). A full queue drops its
oldest alert (counted in :attr:`AlertSink.dropped`).

**One alert per kill.** The emergency manager reports a kill twice
(``kill_triggered``, then ``kill_completed`` / ``kill_unconfirmed``). The sink
holds the first and sends a single ``kill`` alert carrying the trigger *and* the
outcome when the second arrives; if no outcome comes within
``alerts.kill_outcome_wait_seconds`` it sends the trigger with
``outcome = "pending"``.

Other alerts: halts/resumes (``resumed``, ``resume_refused``, and
:meth:`AlertSink.state_changed`), reconciliation problems
(:meth:`AlertSink.reconciliation`), reconnect storms (:meth:`AlertSink.reconnected`
counts reconnects per stream and alerts once per window when
``alerts.reconnect_storm_count`` is reached) and the daily summary
(:meth:`AlertSink.daily_summary`, or :meth:`AlertSink.maybe_daily_summary` from a timer).

Generic JSON body::

    {"source": "cryptoj", "kind": "kill", "severity": "critical", "message": "...",
     "time": "2026-01-01T00:00:00+00:00", "detail": {...}}

Telegram: ``POST {telegram_api_url}/bot<token>/sendMessage`` with
``{"chat_id": ..., "text": ...}``. The bot token is part of that URL, so URLs are
never logged; destinations are named ``webhook[i]`` / ``telegram`` in logs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Final

import aiohttp
import orjson
import structlog

from cryptoj.config import AlertsConfig
from cryptoj.emergency_manager import Alert

__all__ = ["AlertSink", "AlertWatch", "Delivery", "alert_body", "telegram_text"]

log = structlog.get_logger("cryptoj.alerts")

MAX_BACKOFF: Final = 60.0
_KILL_START: Final = "kill_triggered"
_KILL_OUTCOMES: Final = {"kill_completed": "confirmed", "kill_unconfirmed": "unconfirmed"}


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


def alert_body(alert: Alert) -> dict[str, Any]:
    """The generic webhook JSON for ``alert``."""
    return {
        "source": "cryptoj",
        "kind": alert.kind,
        "severity": alert.severity,
        "message": alert.message,
        "time": alert.time.isoformat(),
        "detail": dict(alert.detail),
    }


def telegram_text(alert: Alert) -> str:
    """A short plain-text rendering for chat apps."""
    head = {"critical": "\U0001f6a8", "warning": "\u26a0\ufe0f"}.get(alert.severity, "\u2139\ufe0f")
    return f"{head} cryptoj {alert.kind} ({alert.severity})\n{alert.message}\n{alert.time.isoformat()}"


@dataclass(slots=True)
class Delivery:
    """The record of one alert's delivery to one destination."""

    destination: str
    kind: str
    ok: bool
    attempts: int
    error: str | None = None


@dataclass(slots=True)
class _Destination:
    name: str
    url: str
    telegram_chat: str | None = None

    def payload(self, alert: Alert) -> dict[str, Any]:
        if self.telegram_chat is not None:
            return {"chat_id": self.telegram_chat, "text": telegram_text(alert), "disable_web_page_preview": True}
        return alert_body(alert)


@dataclass(slots=True)
class _PendingKill:
    alert: Alert
    timer: asyncio.TimerHandle | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class AlertSink:
    """Queues alerts and delivers them in the background (see the module doc)."""

    def __init__(
        self,
        config: AlertsConfig,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        session: aiohttp.ClientSession | None = None,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        self.config = config
        self._clock = clock
        self._session = session
        self._own_session = session is None
        self._sleep = sleep
        self.destinations: list[_Destination] = [_Destination(f"webhook[{i}]", url) for i, url in enumerate(config.webhook_urls)]
        if config.telegram_bot_token is not None and config.telegram_chat_id is not None:
            url = f"{config.telegram_api_url.rstrip('/')}/bot{config.telegram_bot_token.get_secret_value()}/sendMessage"
            self.destinations.append(_Destination("telegram", url, telegram_chat=config.telegram_chat_id))
        self._queue: deque[Alert] = deque()
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._worker: asyncio.Task[None] | None = None
        self._pending_kill: _PendingKill | None = None
        self._reconnects: dict[str, deque[datetime]] = {}
        self._storm_alerted: dict[str, datetime] = {}
        self._last_summary_day: datetime | None = None
        self.deliveries: list[Delivery] = []
        self.sent: list[Alert] = []
        """Alerts handed to delivery (after kill coalescing), oldest first (last 1000)."""
        self.dropped = 0
        self.closed = False

    def __repr__(self) -> str:
        return f"AlertSink(destinations={[d.name for d in self.destinations]}, queued={len(self._queue)})"

    @property
    def enabled(self) -> bool:
        return bool(self.destinations)

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        if self._worker is None:
            if self._session is None:
                self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.config.timeout_seconds))
            self._worker = asyncio.get_running_loop().create_task(self._run(), name="alert-sink")

    async def flush(self, timeout: float = 10.0) -> bool:  # noqa: ASYNC109 - a bound, not a cancel scope
        """Wait (at most ``timeout`` s) until every queued alert was delivered or given up; True when idle."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def close(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Send a held kill alert as it is, deliver what is queued (up to ``timeout`` s), stop."""
        if self.closed:
            return
        self._release_pending_kill()
        await self.flush(timeout)
        self.closed = True
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    # -- the hook -------------------------------------------------------------------------------

    def __call__(self, alert: Alert) -> None:
        """The :data:`AlertHook`: queue (or hold, for a kill) and return at once."""
        if self.closed:
            log.warning("alert_after_close", kind=alert.kind)
            return
        if alert.kind == _KILL_START:
            self._release_pending_kill()
            pending = _PendingKill(alert)
            with contextlib.suppress(RuntimeError):  # no running loop: released by the outcome or close()
                loop = asyncio.get_running_loop()
                pending.timer = loop.call_later(self.config.kill_outcome_wait_seconds, self._release_pending_kill)
            self._pending_kill = pending
            return
        if alert.kind in _KILL_OUTCOMES:
            self._enqueue(self._kill_alert(alert))
            return
        self._enqueue(alert)

    def _kill_alert(self, outcome: Alert) -> Alert:
        pending, self._pending_kill = self._pending_kill, None
        if pending is not None and pending.timer is not None:
            pending.timer.cancel()
        report = dict(outcome.detail)
        trigger = report.get("trigger") or (pending.alert.detail.get("trigger") if pending else None)
        reason = pending.alert.detail.get("detail") if pending else report.get("detail")
        result = _KILL_OUTCOMES[outcome.kind]
        head = pending.alert.message if pending else f"kill switch: {trigger}: {reason}"
        return Alert(
            kind="kill",
            severity="critical",
            message=f"{head} — {outcome.message}",
            time=outcome.time,
            detail={"trigger": trigger, "reason": reason, "outcome": result, "triggered_at":
                    pending.alert.time.isoformat() if pending else report.get("started_at"), "report": report},
        )

    def _release_pending_kill(self) -> None:
        pending, self._pending_kill = self._pending_kill, None
        if pending is None:
            return
        if pending.timer is not None:
            pending.timer.cancel()
        a = pending.alert
        self._enqueue(Alert("kill", "critical", f"{a.message} — outcome not known yet", a.time,
                            {"trigger": a.detail.get("trigger"), "reason": a.detail.get("detail"), "outcome": "pending",
                             "triggered_at": a.time.isoformat(), "report": None}))

    def _enqueue(self, alert: Alert) -> None:
        self.sent.append(alert)
        if len(self.sent) > 1000:
            del self.sent[0]
        if not self.destinations:
            log.info("alert", kind=alert.kind, severity=alert.severity, message=alert.message)
            return
        if len(self._queue) >= self.config.queue_size:
            lost = self._queue.popleft()
            self.dropped += 1
            log.error("alert_dropped", kind=lost.kind, reason="queue full")
        self._queue.append(alert)
        self._idle.clear()
        self._wakeup.set()

    # -- helpers for the engine -----------------------------------------------------------------

    def send(self, kind: str, severity: str, message: str, detail: Mapping[str, Any] | None = None) -> None:
        """Queue an alert built from parts."""
        self(Alert(kind, severity, message, self._clock(), dict(detail or {})))

    def state_changed(self, state: str, reason: str) -> None:
        """A halt / reduce-only / resume that did not come through the kill switch."""
        severity = "critical" if state == "HALTED" else "warning" if state == "REDUCE_ONLY" else "info"
        self.send("trading_state", severity, f"trading state {state}: {reason}", {"state": state, "reason": reason})

    def reconciliation(self, problems: list[str]) -> None:
        """A reconciliation found disagreements (nothing is sent for a clean one)."""
        if problems:
            message = f"reconciliation found {len(problems)} problem(s): " + "; ".join(problems[:5])
            self.send("reconciliation", "critical", message, {"problems": problems})

    def reconnected(self, stream: str, now: datetime | None = None) -> bool:
        """Count a reconnect; alert (once per window) when a storm is reached. True when an alert went out."""
        now = now or self._clock()
        window = timedelta(seconds=self.config.reconnect_storm_window_seconds)
        times = self._reconnects.setdefault(stream, deque())
        times.append(now)
        while times and now - times[0] > window:
            times.popleft()
        last = self._storm_alerted.get(stream)
        if len(times) >= self.config.reconnect_storm_count and (last is None or now - last > window):
            self._storm_alerted[stream] = now
            self.send("reconnect_storm", "warning",
                      f"{stream}: {len(times)} reconnects within {self.config.reconnect_storm_window_seconds:g}s",
                      {"stream": stream, "reconnects": len(times), "window_s": self.config.reconnect_storm_window_seconds})
            return True
        return False

    def daily_summary(self, summary: Mapping[str, Any], now: datetime | None = None) -> None:
        now = now or self._clock()
        parts = ", ".join(f"{k}={_json_default(v) if not isinstance(v, str | int) else v}" for k, v in summary.items())
        self(Alert("daily_summary", "info", f"daily summary {now.date().isoformat()}: {parts}", now, dict(summary)))

    def maybe_daily_summary(self, summary: Callable[[], Mapping[str, Any]], now: datetime | None = None) -> bool:
        """Send the summary once per UTC day, at or after ``alerts.daily_summary_hour_utc``. True when sent.

        The first call only starts the clock: an engine started after today's hour sends
        its first summary tomorrow (a restart does not send one).
        """
        hour = self.config.daily_summary_hour_utc
        now = now or self._clock()
        if hour is None:
            return False
        day = now.replace(hour=0, minute=0, second=0, microsecond=0)
        if self._last_summary_day is None:
            self._last_summary_day = day if now.hour >= hour else day - timedelta(days=1)
            return False
        if now.hour < hour or self._last_summary_day == day:
            return False
        self._last_summary_day = day
        self.daily_summary(summary(), now)
        return True

    # -- delivery --------------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            if not self._queue:
                self._idle.set()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            alert = self._queue.popleft()
            await asyncio.gather(*(self._deliver(dest, alert) for dest in self.destinations))
            if not self._queue:
                self._idle.set()

    async def _deliver(self, dest: _Destination, alert: Alert) -> None:
        assert self._session is not None
        body = orjson.dumps(dest.payload(alert), default=_json_default)
        delay = self.config.backoff_seconds
        error: str | None = None
        for attempt in range(1, self.config.max_attempts + 1):
            try:
                async with self._session.post(dest.url, data=body, headers={"Content-Type": "application/json"},
                                              timeout=aiohttp.ClientTimeout(total=self.config.timeout_seconds)) as resp:
                    if 200 <= resp.status < 300:
                        self._record(Delivery(dest.name, alert.kind, True, attempt))
                        log.info("alert_delivered", destination=dest.name, kind=alert.kind, attempts=attempt)
                        return
                    error = f"HTTP {resp.status}"
                    if 400 <= resp.status < 500 and resp.status not in (408, 429):
                        break  # the receiver refuses this body: retrying will not help
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                error = type(exc).__name__  # no URL in the message: it may hold a token
            if attempt < self.config.max_attempts:
                log.warning("alert_retry", destination=dest.name, kind=alert.kind, attempt=attempt, error=error,
                            retry_in_s=delay)
                await self._sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF)
        self._record(Delivery(dest.name, alert.kind, False, attempt, error))
        log.error("alert_failed", destination=dest.name, kind=alert.kind, attempts=attempt, error=error)

    def _record(self, delivery: Delivery) -> None:
        self.deliveries.append(delivery)
        if len(self.deliveries) > 1000:
            del self.deliveries[0]


class AlertWatch:
    """Turns a running engine's numbers into alerts on an :class:`AlertSink`; call :meth:`tick` every few seconds.

    Sends: trading-state changes that did not come through the kill switch (a HALTED from a
    failed reconciliation, a REDUCE_ONLY from a drawdown limit — the kill switch and resume
    alert for themselves), reconciliation problems (once per report), reconnect storms of the
    market stream, and the daily summary. The runtime runs one over its own sink, so these
    alerts go out whether or not the operator API is served.
    """

    def __init__(
        self,
        sink: AlertSink,
        *,
        state: Callable[[], tuple[str, str]],
        reconciliation: Callable[[], Any],
        reconnects: Callable[[], int],
        summary: Callable[[], Mapping[str, Any]],
    ) -> None:
        """``state`` → (trading state, reason); ``reconciliation`` → the last report (with ``problems``) or None;
        ``reconnects`` → the market stream's running reconnect count; ``summary`` → the daily summary's numbers."""
        self.sink = sink
        self._state = state
        self._reconciliation = reconciliation
        self._reconnects = reconnects
        self._summary = summary
        self._last_state: str | None = None
        self._last_report: object | None = None
        self._last_reconnects = 0

    def tick(self, now: datetime | None = None) -> None:
        sink = self.sink
        now = now or sink._clock()
        state, reason = self._state()
        if state != self._last_state:
            if self._last_state is not None:
                halted_elsewhere = state == "HALTED" and not reason.startswith("kill switch")
                if halted_elsewhere or (state == "REDUCE_ONLY" and self._last_state == "ACTIVE"):
                    sink.state_changed(state, reason)
            self._last_state = state
        report = self._reconciliation()
        if report is not None and report is not self._last_report:
            self._last_report = report
            sink.reconciliation(list(report.problems))
        reconnects = self._reconnects()
        for _ in range(reconnects - self._last_reconnects):
            sink.reconnected("market", now)
        self._last_reconnects = max(reconnects, self._last_reconnects)
        sink.maybe_daily_summary(self._summary, now)
