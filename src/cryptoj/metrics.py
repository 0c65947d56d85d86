"""Prometheus metrics: the series ``/metrics`` exports, read from the engine at scrape time.

:class:`OperatorMetrics` owns a private :class:`prometheus_client.CollectorRegistry`
(never the global one, so several engines or tests never collide) with one custom
collector that asks a ``snapshot`` callable (the operator view's
``metrics_snapshot``) for a :class:`~cryptoj.api.views.MetricsSnapshot` on every
scrape. Nothing in the engine pays for metrics between scrapes, except
:class:`LatencyHistogram` observations (a bisect and two additions).

Series (all prefixed ``cryptoj_``):

==========================================  =========  ====================================================
``ws_messages_total{channel}``              counter    market data messages per channel
``ws_messages_per_second{channel}``         gauge      rate over the last ``rate_window_s`` (from scrapes and
                                                       the 1 s sampler)
``ws_reconnects_total{stream}``             counter    WebSocket reconnects per stream
``book_gaps_total{product}``                counter    sequence gaps
``book_resyncs_total{product}``             counter    book resyncs (gap, crossed book, ...)
``book_staleness_seconds{product}``         gauge      age of the product's last data (NaN: none yet)
``order_roundtrip_seconds``                 histogram  submit → venue acknowledgement
``orders{status}``                          gauge      tracked orders by status
``risk_rejections_total{reason}``           counter    pre-trade rejections by reason code
``rate_limit_headroom{limiter}``            gauge      requests that may go now without waiting
``venue_requests_total`` / ``venue_errors_total``  counter  REST attempts / failed ones
``equity{currency}``                        gauge      marked-to-market equity
``pnl_realised{currency}`` / ``pnl_unrealised{currency}``  gauge
``trading_state{state}``                    gauge      1 for the state in force, 0 for the others
``kills_total{trigger}``                    counter    kill switch trips by trigger
``uptime_seconds``                          gauge
==========================================  =========  ====================================================
"""

from __future__ import annotations

import bisect
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import Final

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from cryptoj.api.views import HistogramData, MetricsSnapshot
from cryptoj.errors import InvalidValue

__all__ = ["CONTENT_TYPE", "DEFAULT_LATENCY_BOUNDS", "LatencyHistogram", "MessageRate", "OperatorMetrics"]

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
DEFAULT_LATENCY_BOUNDS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
TRADING_STATES: Final = ("ACTIVE", "REDUCE_ONLY", "HALTED")


class LatencyHistogram:
    """A fixed-bucket histogram of seconds (cumulative export, Prometheus semantics)."""

    __slots__ = ("_bounds", "_counts", "_sum", "_total")

    def __init__(self, bounds: Iterable[float] = DEFAULT_LATENCY_BOUNDS) -> None:
        self._bounds = tuple(float(b) for b in bounds)
        if not self._bounds or list(self._bounds) != sorted(set(self._bounds)) or self._bounds[0] <= 0:
            raise InvalidValue("bounds", bounds, "must be positive and strictly increasing")
        self._counts = [0] * len(self._bounds)
        self._sum = 0.0
        self._total = 0

    def observe(self, seconds: float) -> None:
        if not math.isfinite(seconds) or seconds < 0:
            raise InvalidValue("seconds", seconds, "a latency must be a finite number >= 0")
        i = bisect.bisect_left(self._bounds, seconds)
        if i < len(self._counts):
            self._counts[i] += 1
        self._sum += seconds
        self._total += 1

    def data(self) -> HistogramData:
        cumulative: list[int] = []
        running = 0
        for c in self._counts:
            running += c
            cumulative.append(running)
        return HistogramData(bounds=self._bounds, counts=tuple(cumulative), total=self._total, sum=self._sum)


class MessageRate:
    """Messages per second per channel from cumulative counts sampled over time (a sliding window)."""

    def __init__(self, window_s: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        if window_s <= 0:
            raise InvalidValue("window_s", window_s, "must be positive")
        self.window_s = window_s
        self._clock = clock
        self._samples: deque[tuple[float, dict[str, int]]] = deque()

    def sample(self, counts: Mapping[str, int]) -> dict[str, float]:
        """Record the counts now and return the rates over the window (0 until two samples exist)."""
        now = self._clock()
        self._samples.append((now, dict(counts)))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.window_s:
            self._samples.popleft()
        first_t, first = self._samples[0]
        span = now - first_t
        rates: dict[str, float] = {}
        for channel, count in counts.items():
            rates[channel] = (count - first.get(channel, 0)) / span if span > 0 else 0.0
        return rates


def _num(value: Decimal | None) -> float:
    """Decimal → float for export only (Prometheus values are doubles); None → NaN."""
    return math.nan if value is None else float(value)


class _SnapshotCollector(Collector):
    def __init__(self, metrics: OperatorMetrics) -> None:
        self._m = metrics

    def collect(self) -> Iterable[Metric]:
        snap = self._m.snapshot()
        return self._m.families(snap)


class OperatorMetrics:
    """The ``/metrics`` registry for one engine (see the module doc for the series)."""

    def __init__(
        self,
        snapshot: Callable[[], MetricsSnapshot],
        *,
        started: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        rate_window_s: float = 10.0,
    ) -> None:
        self.snapshot = snapshot
        self._clock = clock
        self._started = clock() if started is None else started
        self.rates = MessageRate(rate_window_s, clock)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_SnapshotCollector(self))

    def sample_rates(self) -> dict[str, float]:
        """Feed the message-rate window (the app calls this every second)."""
        return self.rates.sample(self.snapshot().messages_by_channel)

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)

    def families(self, snap: MetricsSnapshot) -> list[Metric]:
        out: list[Metric] = []
        msgs = CounterMetricFamily("cryptoj_ws_messages", "Market data messages received, per channel", labels=["channel"])
        for channel, n in sorted(snap.messages_by_channel.items()):
            msgs.add_metric([channel], n)
        out.append(msgs)
        rate = GaugeMetricFamily("cryptoj_ws_messages_per_second", "Market data messages per second, per channel",
                                 labels=["channel"])
        for channel, r in sorted(self.rates.sample(snap.messages_by_channel).items()):
            rate.add_metric([channel], r)
        out.append(rate)
        rec = CounterMetricFamily("cryptoj_ws_reconnects", "WebSocket reconnects, per stream", labels=["stream"])
        for stream, n in sorted(snap.reconnects_by_stream.items()):
            rec.add_metric([stream], n)
        out.append(rec)
        gaps = CounterMetricFamily("cryptoj_book_gaps", "Sequence gaps, per product", labels=["product"])
        for pid, n in sorted(snap.gaps_by_product.items()):
            gaps.add_metric([pid], n)
        out.append(gaps)
        resyncs = CounterMetricFamily("cryptoj_book_resyncs", "Order book resyncs, per product", labels=["product"])
        for pid, n in sorted(snap.resyncs_by_product.items()):
            resyncs.add_metric([pid], n)
        out.append(resyncs)
        stale = GaugeMetricFamily("cryptoj_book_staleness_seconds",
                                  "Seconds since the product's last market data (NaN: none yet)", labels=["product"])
        for pid, age in sorted(snap.data_age_by_product.items()):
            stale.add_metric([pid], math.nan if age is None else age)
        out.append(stale)
        hist = HistogramMetricFamily("cryptoj_order_roundtrip_seconds", "Order submit to venue acknowledgement, seconds")
        data = snap.order_roundtrip or HistogramData(DEFAULT_LATENCY_BOUNDS, (0,) * len(DEFAULT_LATENCY_BOUNDS), 0, 0.0)
        buckets = [(repr(b), c) for b, c in zip(data.bounds, data.counts, strict=True)] + [("+Inf", data.total)]
        hist.add_metric([], buckets, data.sum)
        out.append(hist)
        orders = GaugeMetricFamily("cryptoj_orders", "Tracked orders by status", labels=["status"])
        for status, n in sorted(snap.orders_by_status.items()):
            orders.add_metric([status], n)
        out.append(orders)
        rej = CounterMetricFamily("cryptoj_risk_rejections", "Pre-trade risk rejections, by reason", labels=["reason"])
        for reason, n in sorted(snap.rejections_by_reason.items()):
            rej.add_metric([reason], n)
        out.append(rej)
        head = GaugeMetricFamily("cryptoj_rate_limit_headroom", "Requests that may be sent now without waiting, per limiter",
                                 labels=["limiter"])
        for name, v in sorted(snap.rate_limit_headroom.items()):
            head.add_metric([name], v)
        out.append(head)
        out.append(CounterMetricFamily("cryptoj_venue_requests", "REST attempts sent to the venue", value=snap.venue_requests))
        out.append(CounterMetricFamily("cryptoj_venue_errors", "REST attempts that failed (retried or not)",
                                       value=snap.venue_errors))
        ccy = snap.quote_currency
        equity = GaugeMetricFamily("cryptoj_equity", "Marked-to-market equity", labels=["currency"])
        equity.add_metric([ccy], _num(snap.equity))
        out.append(equity)
        realised = GaugeMetricFamily("cryptoj_pnl_realised", "Realised PnL (net of fees)", labels=["currency"])
        realised.add_metric([ccy], _num(snap.realised_pnl))
        out.append(realised)
        unrealised = GaugeMetricFamily("cryptoj_pnl_unrealised", "Unrealised PnL at the current marks", labels=["currency"])
        unrealised.add_metric([ccy], _num(snap.unrealised_pnl))
        out.append(unrealised)
        state = GaugeMetricFamily("cryptoj_trading_state", "1 for the trading state in force", labels=["state"])
        for name in TRADING_STATES:
            state.add_metric([name], 1.0 if snap.trading_state == name else 0.0)
        out.append(state)
        kills = CounterMetricFamily("cryptoj_kills", "Kill switch trips, by trigger", labels=["trigger"])
        for trig, n in sorted(snap.kills_by_trigger.items()):
            kills.add_metric([trig], n)
        out.append(kills)
        out.append(GaugeMetricFamily("cryptoj_uptime_seconds", "Seconds since the engine started",
                                     value=max(0.0, self._clock() - self._started)))
        return out
