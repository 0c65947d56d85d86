"""``/healthz``: healthy / degraded / unhealthy, with the reason per component.

:class:`HealthMonitor` combines what the engine knows (a
:class:`~cryptoj.api.views.HealthSample`: feeds, venue REST latency and error
rate, reconciliation) with what it measures itself: event-loop lag
(:class:`LoopLagProbe`, a task that sleeps a fixed interval and records how late
it wakes) and resident memory (``/proc/self/statm``, or the peak RSS from
``resource`` where ``/proc`` is absent). Thresholds are in :class:`HealthThresholds`.

Component rules (the worst component decides the overall status):

* **feeds** — per product: no data yet or older than ``feed_degraded_s`` →
  degraded; older than ``feed_unhealthy_s`` or the stream down → unhealthy;
  ``resyncs`` are reported.
* **venue** — REST error rate over the recent window above
  ``error_rate_degraded`` / ``error_rate_unhealthy``; mean latency above
  ``venue_latency_degraded_s`` → degraded.
* **event_loop** — lag above ``loop_lag_degraded_s`` / ``loop_lag_unhealthy_s``.
* **memory** — RSS above ``memory_degraded_mb`` → degraded.
* **reconciliation** — last run failed → unhealthy; never run → degraded.

The report holds numbers and reasons only, never a secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from cryptoj.api.views import HealthSample
from cryptoj.errors import InvalidValue

__all__ = ["ComponentHealth", "HealthMonitor", "HealthReport", "HealthStatus", "HealthThresholds", "LoopLagProbe", "rss_bytes"]


class HealthStatus(StrEnum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"


_RANK = {HealthStatus.HEALTHY: 0, HealthStatus.DEGRADED: 1, HealthStatus.UNHEALTHY: 2}


def _worst(statuses: list[HealthStatus]) -> HealthStatus:
    return max(statuses, key=_RANK.__getitem__, default=HealthStatus.HEALTHY)


@dataclass(frozen=True, slots=True)
class ComponentHealth:
    name: str
    status: HealthStatus
    reasons: list[str]
    detail: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status.value, "reasons": list(self.reasons), **self.detail}


@dataclass(frozen=True, slots=True)
class HealthReport:
    status: HealthStatus
    components: dict[str, ComponentHealth]

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status.value, "components": {k: c.as_dict() for k, c in self.components.items()}}


@dataclass(frozen=True, slots=True)
class HealthThresholds:
    feed_degraded_s: float = 10.0
    feed_unhealthy_s: float = 60.0
    error_rate_degraded: float = 0.05
    error_rate_unhealthy: float = 0.5
    min_requests_for_rate: int = 5
    """The error rate only counts once the window holds this many requests."""
    venue_latency_degraded_s: float = 2.0
    loop_lag_degraded_s: float = 0.1
    loop_lag_unhealthy_s: float = 1.0
    memory_degraded_mb: float = 2048.0

    def __post_init__(self) -> None:
        for name in ("feed_degraded_s", "feed_unhealthy_s", "venue_latency_degraded_s", "loop_lag_degraded_s",
                     "loop_lag_unhealthy_s", "memory_degraded_mb"):
            if getattr(self, name) <= 0:
                raise InvalidValue(f"health.{name}", getattr(self, name), "must be positive")
        if self.feed_unhealthy_s < self.feed_degraded_s:
            raise InvalidValue("health.feed_unhealthy_s", self.feed_unhealthy_s, "must be >= feed_degraded_s")
        if self.loop_lag_unhealthy_s < self.loop_lag_degraded_s:
            raise InvalidValue("health.loop_lag_unhealthy_s", self.loop_lag_unhealthy_s, "must be >= loop_lag_degraded_s")
        if not 0 <= self.error_rate_degraded <= self.error_rate_unhealthy <= 1:
            raise InvalidValue("health.error_rate_*", (self.error_rate_degraded, self.error_rate_unhealthy),
                               "need 0 <= degraded <= unhealthy <= 1")


def rss_bytes() -> int:
    """Resident memory of this process (current from /proc; peak from getrusage elsewhere)."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            pages = int(fh.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):  # pragma: no cover - non-Linux
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


class LoopLagProbe:
    """Measures event-loop lag: sleeps ``interval`` s and records how much later than asked it woke."""

    def __init__(self, interval: float = 0.25, clock: Callable[[], float] = time.monotonic, window: int = 20) -> None:
        if interval <= 0:
            raise InvalidValue("interval", interval, "must be positive")
        self.interval = interval
        self._clock = clock
        self._lags: list[float] = []
        self._window = window
        self._task: asyncio.Task[None] | None = None
        self.samples = 0

    def record(self, lag: float) -> None:
        self._lags.append(max(0.0, lag))
        if len(self._lags) > self._window:
            del self._lags[0]
        self.samples += 1

    @property
    def max_lag(self) -> float | None:
        """Worst lag over the recent window (None before the first sample)."""
        return max(self._lags) if self._lags else None

    async def _run(self) -> None:
        while True:
            t0 = self._clock()
            await asyncio.sleep(self.interval)
            self.record(self._clock() - t0 - self.interval)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="loop-lag-probe")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class HealthMonitor:
    """Evaluates health from a sample source, the loop-lag probe and memory (see the module doc)."""

    def __init__(
        self,
        sample: Callable[[], HealthSample],
        *,
        thresholds: HealthThresholds | None = None,
        probe: LoopLagProbe | None = None,
        memory: Callable[[], int] = rss_bytes,
    ) -> None:
        self._sample = sample
        self.thresholds = thresholds or HealthThresholds()
        self.probe = probe or LoopLagProbe()
        self._memory = memory

    def report(self) -> HealthReport:
        sample = self._sample()
        components = [
            self._feeds(sample),
            self._venue(sample),
            self._loop(),
            self._memory_health(),
            self._reconciliation(sample),
        ]
        return HealthReport(_worst([c.status for c in components]), {c.name: c for c in components})

    def _feeds(self, sample: HealthSample) -> ComponentHealth:
        t = self.thresholds
        statuses: list[HealthStatus] = []
        reasons: list[str] = []
        per: dict[str, Any] = {}
        for stream, up in sorted(sample.streams_connected.items()):
            if not up:
                statuses.append(HealthStatus.UNHEALTHY)
                reasons.append(f"stream {stream} disconnected")
        for feed in sample.feeds:
            age = feed.last_message_age_s
            per[feed.product_id] = {"age_s": None if age is None else round(age, 3), "resyncs": feed.resyncs,
                                    "connected": feed.connected, "book_valid": feed.book_valid}
            if not feed.connected:
                statuses.append(HealthStatus.UNHEALTHY)
                reasons.append(f"{feed.product_id}: feed disconnected")
            elif age is None:
                statuses.append(HealthStatus.DEGRADED)
                reasons.append(f"{feed.product_id}: no market data yet")
            elif age > t.feed_unhealthy_s:
                statuses.append(HealthStatus.UNHEALTHY)
                reasons.append(f"{feed.product_id}: last data {age:.1f}s ago (> {t.feed_unhealthy_s:g}s)")
            elif age > t.feed_degraded_s:
                statuses.append(HealthStatus.DEGRADED)
                reasons.append(f"{feed.product_id}: last data {age:.1f}s ago (> {t.feed_degraded_s:g}s)")
            elif not feed.book_valid:
                statuses.append(HealthStatus.DEGRADED)
                reasons.append(f"{feed.product_id}: order book resyncing")
        return ComponentHealth("feeds", _worst(statuses), reasons, {"products": per})

    def _venue(self, sample: HealthSample) -> ComponentHealth:
        t = self.thresholds
        status = HealthStatus.HEALTHY
        reasons: list[str] = []
        rate = sample.venue_error_rate
        if sample.venue_requests >= t.min_requests_for_rate:
            if rate > t.error_rate_unhealthy:
                status = HealthStatus.UNHEALTHY
                reasons.append(f"REST error rate {rate:.0%} (> {t.error_rate_unhealthy:.0%})")
            elif rate > t.error_rate_degraded:
                status = HealthStatus.DEGRADED
                reasons.append(f"REST error rate {rate:.0%} (> {t.error_rate_degraded:.0%})")
        latency = sample.venue_latency_s
        if latency is not None and latency > t.venue_latency_degraded_s:
            status = _worst([status, HealthStatus.DEGRADED])
            reasons.append(f"REST latency {latency * 1000:.0f} ms (> {t.venue_latency_degraded_s * 1000:.0f} ms)")
        detail = {"latency_ms": None if latency is None else round(latency * 1000, 3), "error_rate": round(rate, 4),
                  "requests": sample.venue_requests}
        return ComponentHealth("venue", status, reasons, detail)

    def _loop(self) -> ComponentHealth:
        t = self.thresholds
        lag = self.probe.max_lag
        status = HealthStatus.HEALTHY
        reasons: list[str] = []
        if lag is not None and lag > t.loop_lag_unhealthy_s:
            status = HealthStatus.UNHEALTHY
            reasons.append(f"event loop lag {lag * 1000:.0f} ms (> {t.loop_lag_unhealthy_s * 1000:.0f} ms)")
        elif lag is not None and lag > t.loop_lag_degraded_s:
            status = HealthStatus.DEGRADED
            reasons.append(f"event loop lag {lag * 1000:.0f} ms (> {t.loop_lag_degraded_s * 1000:.0f} ms)")
        return ComponentHealth("event_loop", status, reasons, {"lag_ms": None if lag is None else round(lag * 1000, 3)})

    def _memory_health(self) -> ComponentHealth:
        mb = self._memory() / (1024 * 1024)
        if mb > self.thresholds.memory_degraded_mb:
            return ComponentHealth("memory", HealthStatus.DEGRADED,
                                   [f"RSS {mb:.0f} MB (> {self.thresholds.memory_degraded_mb:.0f} MB)"], {"rss_mb": round(mb, 1)})
        return ComponentHealth("memory", HealthStatus.HEALTHY, [], {"rss_mb": round(mb, 1)})

    @staticmethod
    def _reconciliation(sample: HealthSample) -> ComponentHealth:
        rec = sample.reconciliation
        detail = {"ok": rec.ok, "checked_at": rec.checked_at.isoformat() if rec.checked_at else None}
        if rec.ok is None:
            return ComponentHealth("reconciliation", HealthStatus.DEGRADED, ["not reconciled yet"], detail)
        if not rec.ok:
            return ComponentHealth("reconciliation", HealthStatus.UNHEALTHY,
                                   [f"reconciliation failed: {p}" for p in rec.problems] or ["reconciliation failed"], detail)
        return ComponentHealth("reconciliation", HealthStatus.HEALTHY, [], detail)
