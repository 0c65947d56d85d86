"""/metrics: the series, their values and the exposition format."""

from __future__ import annotations

import math
from decimal import Decimal

import pytest
from prometheus_client.parser import text_string_to_metric_families

from cryptoj.api.views import MetricsSnapshot
from cryptoj.errors import InvalidValue
from cryptoj.metrics import LatencyHistogram, MessageRate, OperatorMetrics


class FakeMono:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def snapshot(msgs: int = 0, equity: Decimal | None = Decimal("10000.5"), hist: LatencyHistogram | None = None) -> MetricsSnapshot:
    return MetricsSnapshot(
        trading_state="REDUCE_ONLY", equity=equity, realised_pnl=Decimal("-1.25"), unrealised_pnl=None, quote_currency="USD",
        messages_by_channel={"level2": msgs, "ticker": msgs // 2}, reconnects_by_stream={"market": 2},
        gaps_by_product={"BTC-USD": 1}, resyncs_by_product={"BTC-USD": 3}, data_age_by_product={"BTC-USD": 0.25, "ETH-USD": None},
        orders_by_status={"OPEN": 2, "FILLED": 5}, rejections_by_reason={"MAX_ORDER_NOTIONAL": 4},
        rate_limit_headroom={"private": 29.5}, order_roundtrip=hist.data() if hist else None, venue_requests=40, venue_errors=3,
        kills_by_trigger={"MANUAL": 1},
    )


def parse(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text.decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_every_series_with_its_value() -> None:
    clock = FakeMono()
    hist = LatencyHistogram()
    for v in (0.004, 0.02, 0.3, 20.0):
        hist.observe(v)
    state = {"msgs": 100}
    m = OperatorMetrics(lambda: snapshot(state["msgs"], hist=hist), clock=clock, rate_window_s=10)
    m.sample_rates()
    clock.t += 2
    state["msgs"] = 300
    v = parse(m.render())
    assert v[("cryptoj_ws_messages_total", (("channel", "level2"),))] == 300
    assert v[("cryptoj_ws_messages_per_second", (("channel", "level2"),))] == 100.0  # 200 messages in 2 s
    assert v[("cryptoj_ws_reconnects_total", (("stream", "market"),))] == 2
    assert v[("cryptoj_book_gaps_total", (("product", "BTC-USD"),))] == 1
    assert v[("cryptoj_book_resyncs_total", (("product", "BTC-USD"),))] == 3
    assert v[("cryptoj_book_staleness_seconds", (("product", "BTC-USD"),))] == 0.25
    assert math.isnan(v[("cryptoj_book_staleness_seconds", (("product", "ETH-USD"),))])
    assert v[("cryptoj_order_roundtrip_seconds_count", ())] == 4
    assert v[("cryptoj_order_roundtrip_seconds_bucket", (("le", "0.005"),))] == 1
    assert v[("cryptoj_order_roundtrip_seconds_bucket", (("le", "0.5"),))] == 3
    assert v[("cryptoj_order_roundtrip_seconds_bucket", (("le", "+Inf"),))] == 4
    assert v[("cryptoj_order_roundtrip_seconds_sum", ())] == pytest.approx(20.324)
    assert v[("cryptoj_orders", (("status", "OPEN"),))] == 2
    assert v[("cryptoj_risk_rejections_total", (("reason", "MAX_ORDER_NOTIONAL"),))] == 4
    assert v[("cryptoj_rate_limit_headroom", (("limiter", "private"),))] == 29.5
    assert v[("cryptoj_venue_requests_total", ())] == 40 and v[("cryptoj_venue_errors_total", ())] == 3
    assert v[("cryptoj_equity", (("currency", "USD"),))] == 10000.5
    assert v[("cryptoj_pnl_realised", (("currency", "USD"),))] == -1.25
    assert math.isnan(v[("cryptoj_pnl_unrealised", (("currency", "USD"),))])
    assert v[("cryptoj_trading_state", (("state", "REDUCE_ONLY"),))] == 1
    assert v[("cryptoj_trading_state", (("state", "HALTED"),))] == 0
    assert v[("cryptoj_kills_total", (("trigger", "MANUAL"),))] == 1
    assert v[("cryptoj_uptime_seconds", ())] == 2.0


def test_empty_histogram_and_unknown_equity() -> None:
    v = parse(OperatorMetrics(lambda: snapshot(equity=None), clock=FakeMono()).render())
    assert v[("cryptoj_order_roundtrip_seconds_count", ())] == 0
    assert math.isnan(v[("cryptoj_equity", (("currency", "USD"),))])


def test_histogram_validation() -> None:
    for bad in ((), (0.1, 0.1), (0.2, 0.1), (0, 1)):
        with pytest.raises(InvalidValue, match="bounds"):
            LatencyHistogram(bad)
    h = LatencyHistogram((0.1, 1.0))
    for bad_v in (-1.0, math.inf, math.nan):
        with pytest.raises(InvalidValue, match="latency"):
            h.observe(bad_v)
    h.observe(0.1)  # a bound is inclusive (Prometheus "le")
    h.observe(5.0)  # above the last bound: only +Inf
    d = h.data()
    assert d.counts == (1, 1) and d.total == 2 and d.sum == 5.1


def test_message_rate_window() -> None:
    clock = FakeMono()
    with pytest.raises(InvalidValue):
        MessageRate(0)
    rate = MessageRate(window_s=10, clock=clock)
    assert rate.sample({"a": 5}) == {"a": 0.0}
    for i in range(1, 30):
        clock.t += 1
        r = rate.sample({"a": 5 + 10 * i, "b": i})
    assert r["a"] == pytest.approx(10.0) and r["b"] == pytest.approx(1.0)
    assert len(rate._samples) <= 12
