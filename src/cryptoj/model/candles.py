"""Candles (OHLCV bars) and their aggregation from trades.

Buckets are aligned to the Unix epoch in UTC: a 5-minute bucket starts at
12:00, 12:05, ...; a 6-hour bucket at 00:00, 06:00, 12:00 and 18:00 UTC; a
day at 00:00 UTC (the way Coinbase aligns its candles). A bucket is half-open,
``[start, start + timeframe)``: a trade at exactly 12:05:00.000 belongs to the
12:05 bucket, a trade at 12:04:59.999999 to the 12:00 one.

:class:`CandleAggregator` rules (the choices the docs promise):

* A trade in a later bucket closes the current candle and starts a new one.
  **Empty buckets in between are not invented**: a quiet market yields no
  candle for the buckets nobody traded in.
* A trade inside the current bucket but earlier than the trades seen so far
  (feeds may deliver a batch newest-first) is merged in time order: it can
  change open, high, low and volume, and it only becomes the close if it is
  the latest trade of the bucket.
* A trade **older than the current bucket** (a "late" trade) cannot change a
  closed candle. By default it is **counted** in ``late_trades`` and ignored;
  with ``reject_late=True`` it raises :class:`~cryptoj.errors.InvalidValue`.
* :meth:`CandleAggregator.add_candle` merges a candle from the REST API or
  the candles channel (backfill): for a bucket already closed it **replaces**
  the stored candle (the exchange's bar is authoritative); for the current
  bucket it **merges** (open from the exchange, high/low the extremes of both,
  volume and trade count the larger of both, close from our latest trade if we
  have one); for a later bucket it closes the current candle and becomes the
  current one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Final

from sortedcontainers import SortedDict

from cryptoj.errors import InvalidValue
from cryptoj.model.money import ZERO, parse_decimal

__all__ = ["EPOCH", "Candle", "CandleAggregator", "Timeframe", "bucket_start", "bucket_start_ns"]

EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MICROSECOND: Final = timedelta(microseconds=1)


class Timeframe(StrEnum):
    """Candle widths. Member *names* are Coinbase's granularity names; values the short form."""

    ONE_MINUTE = "1m"
    FIVE_MINUTE = "5m"
    FIFTEEN_MINUTE = "15m"
    ONE_HOUR = "1h"
    SIX_HOUR = "6h"
    ONE_DAY = "1d"

    @property
    def seconds(self) -> int:
        """Width of the bucket in seconds."""
        return _SECONDS[self]

    @property
    def delta(self) -> timedelta:
        """Width of the bucket as a ``timedelta``."""
        return timedelta(seconds=_SECONDS[self])

    @property
    def granularity(self) -> str:
        """Coinbase's name, e.g. ``"FIVE_MINUTE"`` (for ``GET .../candles?granularity=``)."""
        return self.name

    @classmethod
    def parse(cls, value: str) -> Timeframe:
        """Accept ``"5m"`` or Coinbase's ``"FIVE_MINUTE"`` (case-insensitive)."""
        if isinstance(value, str):
            text = value.strip()
            for member in cls:
                if text.lower() == member.value or text.upper() == member.name:
                    return member
        raise InvalidValue("timeframe", value, f"expected one of {', '.join(m.value for m in cls)} or a Coinbase granularity")

    @classmethod
    def from_granularity(cls, name: str) -> Timeframe:
        """Map a Coinbase granularity name (``"ONE_HOUR"``) to a timeframe."""
        try:
            return cls[name]
        except KeyError:
            raise InvalidValue("granularity", name, f"unsupported; expected one of {', '.join(m.name for m in cls)}") from None


_SECONDS: Final[dict[Timeframe, int]] = {
    Timeframe.ONE_MINUTE: 60,
    Timeframe.FIVE_MINUTE: 300,
    Timeframe.FIFTEEN_MINUTE: 900,
    Timeframe.ONE_HOUR: 3600,
    Timeframe.SIX_HOUR: 21600,
    Timeframe.ONE_DAY: 86400,
}


def _require_aware(ts: datetime, field: str) -> datetime:
    if not isinstance(ts, datetime):
        raise InvalidValue(field, ts, "expected a datetime")
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise InvalidValue(field, ts, "must be timezone-aware (UTC)")
    return ts


def bucket_start(ts: datetime, timeframe: Timeframe) -> datetime:
    """Start (UTC) of the ``timeframe`` bucket containing ``ts``.

    Exact integer arithmetic on microseconds, so edges are exact: 12:05:00
    maps to 12:05:00, 12:04:59.999999 to 12:00:00 (5m). ``ts`` must be aware.
    """
    _require_aware(ts, "bucket_start.ts")
    micros = (ts - EPOCH) // _ONE_MICROSECOND
    width = _SECONDS[timeframe] * 1_000_000
    return EPOCH + timedelta(microseconds=micros - micros % width)


def bucket_start_ns(ts_ns: int, timeframe: Timeframe) -> int:
    """Like :func:`bucket_start` for integer nanoseconds since the epoch."""
    width = _SECONDS[timeframe] * 1_000_000_000
    return ts_ns - ts_ns % width


@dataclass(frozen=True, slots=True)
class Candle:
    """One OHLCV bar. ``start`` is the aware UTC start of its bucket."""

    start: datetime
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    trades: int | None = None

    def __post_init__(self) -> None:
        where = f"candle@{self.start}"
        _require_aware(self.start, f"{where}.start")
        for name in ("open", "high", "low", "close", "volume"):
            value = getattr(self, name)
            if not isinstance(value, Decimal) or not value.is_finite():
                raise InvalidValue(f"{where}.{name}", value, "a finite Decimal is required")
        if self.low <= 0:
            raise InvalidValue(f"{where}.low", self.low, "prices must be positive")
        if self.volume < 0:
            raise InvalidValue(f"{where}.volume", self.volume, "must not be negative")
        if self.high < max(self.open, self.close, self.low) or self.low > min(self.open, self.close):
            raise InvalidValue(
                f"{where}.high/low", (self.open, self.high, self.low, self.close), "high/low do not bound open and close"
            )
        if self.trades is not None and self.trades < 0:
            raise InvalidValue(f"{where}.trades", self.trades, "must not be negative")

    def end(self, timeframe: Timeframe) -> datetime:
        """Exclusive end of this candle's bucket."""
        return self.start + timeframe.delta

    @classmethod
    def from_coinbase(cls, data: Mapping[str, object]) -> Candle:
        """Build from a Coinbase candle record (``start`` in Unix seconds as a string, numbers as strings)."""
        raw_start = data.get("start")
        try:
            seconds = int(str(raw_start))
        except ValueError:
            raise InvalidValue("candle.start", raw_start, "expected Unix seconds") from None
        start = EPOCH + timedelta(seconds=seconds)
        where = f"candle@{raw_start}"
        return cls(
            start=start,
            open=parse_decimal(data.get("open"), f"{where}.open"),
            high=parse_decimal(data.get("high"), f"{where}.high"),
            low=parse_decimal(data.get("low"), f"{where}.low"),
            close=parse_decimal(data.get("close"), f"{where}.close"),
            volume=parse_decimal(data.get("volume"), f"{where}.volume"),
        )


class _Building:
    """The candle under construction, with the times needed for order-independent open/close."""

    __slots__ = ("close", "close_time", "high", "low", "open", "open_time", "start", "trades", "volume")

    def __init__(self, start: datetime, price: Decimal, size: Decimal, time: datetime, trades: int | None) -> None:
        self.start = start
        self.open = price
        self.high = price
        self.low = price
        self.close = price
        self.volume = size
        self.trades = trades
        self.open_time = time
        self.close_time = time

    def freeze(self) -> Candle:
        return Candle(self.start, self.open, self.high, self.low, self.close, self.volume, self.trades)


class CandleAggregator:
    """Builds candles of one ``timeframe`` from trades (see the module doc for the rules).

    Closed candles are kept in ``history()`` (oldest first, at most
    ``max_history`` of them, the oldest dropped first).
    """

    def __init__(self, timeframe: Timeframe, *, max_history: int = 1000, reject_late: bool = False) -> None:
        if not isinstance(timeframe, Timeframe):
            raise InvalidValue("CandleAggregator.timeframe", timeframe, "expected a Timeframe")
        if max_history < 0:
            raise InvalidValue("CandleAggregator.max_history", max_history, "must be >= 0")
        self.timeframe = timeframe
        self.max_history = max_history
        self.reject_late = reject_late
        self.late_trades = 0
        self._current: _Building | None = None
        self._history: SortedDict = SortedDict()
        self._closed_through: datetime | None = None  # start of the newest closed bucket

    def __repr__(self) -> str:
        current = self._current.start if self._current else None
        closed = len(self._history)
        return f"CandleAggregator({self.timeframe.value}, current={current}, closed={closed}, late={self.late_trades})"

    # -- trades ------------------------------------------------------------

    def add_trade(self, price: Decimal, size: Decimal, time: datetime) -> list[Candle]:
        """Add one trade; returns the candles this trade closed (empty or one candle).

        ``price`` must be positive, ``size`` not negative, ``time`` aware.
        """
        if not isinstance(price, Decimal) or not price.is_finite() or price <= ZERO:
            raise InvalidValue("trade.price", price, "a positive finite Decimal is required")
        if not isinstance(size, Decimal) or not size.is_finite() or size < ZERO:
            raise InvalidValue("trade.size", size, "a finite Decimal >= 0 is required")
        start = bucket_start(time, self.timeframe)
        current = self._current
        if current is not None and start == current.start:
            if price > current.high:
                current.high = price
            if price < current.low:
                current.low = price
            current.volume += size
            if current.trades is not None:
                current.trades += 1
            if time >= current.close_time:
                current.close = price
                current.close_time = time
            if time < current.open_time:
                current.open = price
                current.open_time = time
            return []
        if (current is not None and start < current.start) or (
            self._closed_through is not None and start <= self._closed_through
        ):
            return self._late(time)
        closed = self._close_current()
        self._current = _Building(start, price, size, time, 1)
        return closed

    def _late(self, time: datetime) -> list[Candle]:
        if self.reject_late:
            raise InvalidValue(
                "trade.time", time, f"older than the current {self.timeframe.value} bucket; a closed candle cannot change"
            )
        self.late_trades += 1
        return []

    def _close_current(self) -> list[Candle]:
        current = self._current
        if current is None:
            return []
        candle = current.freeze()
        self._current = None
        self._store(candle)
        return [candle]

    def _store(self, candle: Candle) -> None:
        self._history[candle.start] = candle
        if self._closed_through is None or candle.start > self._closed_through:
            self._closed_through = candle.start
        while len(self._history) > self.max_history:
            self._history.popitem(0)

    def current(self) -> Candle | None:
        """The candle being built (not closed yet), or None."""
        return self._current.freeze() if self._current is not None else None

    def flush(self) -> Candle | None:
        """Close and return the current candle (None if there is none).

        Trades for the flushed bucket that arrive afterwards are late.
        """
        closed = self._close_current()
        return closed[0] if closed else None

    def close_if_due(self, now: datetime) -> Candle | None:
        """Close the current candle when ``now`` has reached its bucket's end (a clock tick, no trade needed)."""
        _require_aware(now, "close_if_due.now")
        if self._current is not None and now >= self._current.start + self.timeframe.delta:
            return self.flush()
        return None

    def history(self) -> list[Candle]:
        """Closed candles, oldest first."""
        return list(self._history.values())

    # -- backfill ----------------------------------------------------------

    def add_candle(self, candle: Candle) -> list[Candle]:
        """Merge a candle from the exchange (backfill); returns candles this closed.

        See the module doc: replace a closed bucket, merge into the current
        one, or (for a later bucket) close the current and start from it.
        The candle's ``start`` must be on a bucket boundary of this timeframe.
        """
        if bucket_start(candle.start, self.timeframe) != candle.start:
            raise InvalidValue("candle.start", candle.start, f"not on a {self.timeframe.value} bucket boundary")
        current = self._current
        if current is not None and candle.start == current.start:
            current.open = candle.open
            current.open_time = candle.start
            current.high = max(current.high, candle.high)
            current.low = min(current.low, candle.low)
            current.volume = max(current.volume, candle.volume)
            if candle.trades is not None:
                current.trades = candle.trades if current.trades is None else max(current.trades, candle.trades)
            return []
        if (current is not None and candle.start < current.start) or (
            self._closed_through is not None and candle.start <= self._closed_through
        ):
            self._store(candle)
            return []
        closed = self._close_current()
        self._current = _Building(candle.start, candle.open, candle.volume, candle.start, candle.trades)
        self._current.high = candle.high
        self._current.low = candle.low
        self._current.close = candle.close
        return closed
