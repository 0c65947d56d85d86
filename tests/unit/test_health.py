"""/healthz rules per component."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from cryptoj.api.views import FeedHealth, HealthSample, ReconciliationView
from cryptoj.errors import InvalidValue
from cryptoj.health import HealthMonitor, HealthStatus, HealthThresholds, LoopLagProbe, rss_bytes

T0 = datetime(2026, 3, 1, tzinfo=UTC)
OK_REC = ReconciliationView(ok=True, checked_at=T0, problems=[])


def feed(pid: str = "BTC-USD", age: float | None = 0.2, connected: bool = True, book_valid: bool = True) -> FeedHealth:
    return FeedHealth(product_id=pid, connected=connected, book_valid=book_valid, last_message_age_s=age, stale=False, resyncs=2)


def sample(**kw: object) -> HealthSample:
    base: dict[str, object] = {"feeds": [feed()], "venue_latency_s": 0.05, "venue_error_rate": 0.0, "venue_requests": 20,
                               "reconciliation": OK_REC, "streams_connected": {"market": True, "user": True}}
    base.update(kw)
    return HealthSample(**base)  # type: ignore[arg-type]


def monitor(s: HealthSample, *, lag: float | None = None, rss_mb: float = 100, **thresholds: float) -> HealthMonitor:
    probe = LoopLagProbe()
    if lag is not None:
        probe.record(lag)
    return HealthMonitor(lambda: s, thresholds=HealthThresholds(**thresholds), probe=probe,  # type: ignore[arg-type]
                         memory=lambda: int(rss_mb * 1024 * 1024))


def test_all_good_is_healthy_with_numbers() -> None:
    report = monitor(sample(), lag=0.001).report()
    assert report.status is HealthStatus.HEALTHY
    d = report.as_dict()
    assert d["status"] == "healthy"
    assert set(d["components"]) == {"feeds", "venue", "event_loop", "memory", "reconciliation"}
    assert d["components"]["feeds"]["products"]["BTC-USD"] == {"age_s": 0.2, "resyncs": 2, "connected": True, "book_valid": True}
    assert d["components"]["venue"]["latency_ms"] == 50.0
    assert d["components"]["event_loop"]["lag_ms"] == 1.0
    assert d["components"]["memory"]["rss_mb"] == 100.0


@pytest.mark.parametrize(("f", "status", "reason"), [
    (feed(age=None), "degraded", "BTC-USD: no market data yet"),
    (feed(age=15.0), "degraded", "BTC-USD: last data 15.0s ago (> 10s)"),
    (feed(age=90.0), "unhealthy", "BTC-USD: last data 90.0s ago (> 60s)"),
    (feed(connected=False), "unhealthy", "BTC-USD: feed disconnected"),
    (feed(book_valid=False), "degraded", "BTC-USD: order book resyncing"),
])
def test_feed_rules(f: FeedHealth, status: str, reason: str) -> None:
    report = monitor(sample(feeds=[f, feed("ETH-USD")])).report()
    comp = report.components["feeds"]
    assert comp.status.value == status and comp.reasons == [reason]
    assert report.status.value == status


def test_a_down_stream_is_unhealthy() -> None:
    comp = monitor(sample(streams_connected={"market": True, "user": False})).report().components["feeds"]
    assert comp.status is HealthStatus.UNHEALTHY and comp.reasons == ["stream user disconnected"]


@pytest.mark.parametrize(("rate", "requests", "latency", "status"), [
    (0.10, 20, 0.05, "degraded"), (0.6, 20, 0.05, "unhealthy"), (0.9, 2, 0.05, "healthy"), (0.0, 20, 3.0, "degraded"),
    (0.0, 0, None, "healthy"),
])
def test_venue_rules(rate: float, requests: int, latency: float | None, status: str) -> None:
    comp = monitor(sample(venue_error_rate=rate, venue_requests=requests, venue_latency_s=latency)).report().components["venue"]
    assert comp.status.value == status
    if status != "healthy":
        assert comp.reasons and ("error rate" in comp.reasons[0] or "latency" in comp.reasons[0])


@pytest.mark.parametrize(("lag", "status"), [(None, "healthy"), (0.05, "healthy"), (0.2, "degraded"), (1.5, "unhealthy")])
def test_event_loop_rules(lag: float | None, status: str) -> None:
    assert monitor(sample(), lag=lag).report().components["event_loop"].status.value == status


def test_memory_and_reconciliation_rules() -> None:
    r = monitor(sample(), rss_mb=4096).report()
    assert r.components["memory"].status is HealthStatus.DEGRADED and "RSS 4096 MB" in r.components["memory"].reasons[0]
    never = monitor(sample(reconciliation=ReconciliationView(ok=None, checked_at=None))).report().components["reconciliation"]
    assert never.status is HealthStatus.DEGRADED and never.reasons == ["not reconciled yet"]
    bad = ReconciliationView(ok=False, checked_at=T0, problems=["BTC balance 1 here, 0 at venue"])
    failed = monitor(sample(reconciliation=bad)).report()
    assert failed.status is HealthStatus.UNHEALTHY
    assert failed.components["reconciliation"].reasons == ["reconciliation failed: BTC balance 1 here, 0 at venue"]
    silent = monitor(sample(reconciliation=ReconciliationView(ok=False, checked_at=T0))).report().components["reconciliation"]
    assert silent.reasons == ["reconciliation failed"]


@pytest.mark.parametrize("kw", [{"feed_degraded_s": 0}, {"feed_degraded_s": 30, "feed_unhealthy_s": 10},
                                {"loop_lag_degraded_s": 2, "loop_lag_unhealthy_s": 1}, {"error_rate_degraded": 0.6},
                                {"error_rate_unhealthy": 1.5}])
def test_bad_thresholds_name_the_setting(kw: dict[str, float]) -> None:
    with pytest.raises(InvalidValue, match="health"):
        HealthThresholds(**kw)


async def test_loop_lag_probe_measures_a_blocked_loop() -> None:
    probe = LoopLagProbe(interval=0.01)
    with pytest.raises(InvalidValue):
        LoopLagProbe(interval=0)
    probe.start()
    probe.start()  # idempotent
    while probe.samples < 2:
        await asyncio.sleep(0.005)
    import time

    before = probe.samples
    time.sleep(0.15)  # block the loop on purpose: the probe must see it
    while probe.samples <= before:
        await asyncio.sleep(0.005)
    await probe.stop()
    await probe.stop()
    assert probe.max_lag is not None and probe.max_lag >= 0.1


def test_rss_is_measured() -> None:
    assert rss_bytes() > 1024 * 1024
