"""Historical bars for backtests: CSV, Parquet, recordings and a seeded synthetic market.

A :class:`BarSeries` holds one product's bars **column-wise** (start times as
Unix seconds, then ``open``/``high``/``low``/``close``/``volume`` as
``Decimal`` lists) so a year of one-minute bars is seven lists, not half a
million objects; :meth:`BarSeries.candle` builds a :class:`~cryptoj.model.candles.Candle`
when one is wanted.

File formats: CSV with a header row (optionally gzipped), Parquet, or a JSON
array of ``[time, open, high, low, close, volume]`` rows (the layout freqtrade
stores; objects with those keys work too). Columns ``time`` (also
accepted: ``timestamp``, ``start``, ``date``), ``open``, ``high``, ``low``,
``close``, ``volume``; names are case-insensitive, other columns are ignored.

* ``time`` is ISO 8601 (``2026-01-01T00:00:00Z``; a time without an offset is
  read as UTC) or Unix seconds or Unix milliseconds. The kind is detected
  from the first row (integers below 10^11 are seconds, up to 10^14
  milliseconds) and every row must use the same kind. Times must be whole
  seconds.
* Prices and volume are decimal strings (or integers; Parquet ``decimal``
  columns are exact; Parquet ``float`` columns are read through their shortest
  ``repr``, i.e. the decimal the writer printed).
* Rows must be strictly ascending in time. A **duplicate** time, an **unsorted**
  row, a bad number, a bar whose high/low do not bound its open and close, a
  non-positive price, a negative volume or a time off the bar grid is an
  :class:`~cryptoj.errors.InvalidValue` naming the file, the row (1 = first data
  row) and the column.
* **Gaps** (missing bars, common in exchange data when nothing traded) are
  listed in :attr:`BarSeries.gaps` and logged as one warning with their count;
  with ``on_gap="error"`` they are an error instead. Missing bars are **never
  invented**: the backtest moves from the bar before a gap straight to the bar
  after it (an order placed before the gap fills on the bar after it).
"""

from __future__ import annotations

import csv
import gzip
import io
import random
import re
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation, localcontext
from itertools import repeat
from operator import mul
from pathlib import Path
from typing import Any, Final, Literal, NamedTuple

from cryptoj.errors import DataError, InvalidValue
from cryptoj.logging import get_logger
from cryptoj.model.candles import EPOCH, Candle, CandleAggregator, Timeframe
from cryptoj.model.events import MarketTrade

__all__ = [
    "Bar",
    "BarSeries",
    "BarView",
    "Gap",
    "bars_from_recording",
    "load_bars",
    "parse_time_value",
    "product_from_filename",
    "resample",
    "synthetic_bars",
    "write_bars",
]

log = get_logger(__name__)

TIME_COLUMNS: Final = ("time", "timestamp", "start", "date")
VALUE_COLUMNS: Final = ("open", "high", "low", "close", "volume")
_SECONDS_LIMIT: Final = 10**11  # below: Unix seconds (until year 5138)
_MILLIS_LIMIT: Final = 10**14  # below: Unix milliseconds

GapPolicy = Literal["warn", "error"]
TimeKind = Literal["iso", "s", "ms"]


@dataclass(frozen=True, slots=True)
class Gap:
    """``missing`` bars between the bar at ``after`` and the bar at ``before`` (Unix seconds)."""

    after: int
    before: int
    missing: int

    def describe(self) -> str:
        return f"{_iso(self.after)} -> {_iso(self.before)} ({self.missing} bar{'s' if self.missing != 1 else ''} missing)"


def _iso(ts: int) -> str:
    return (EPOCH + timedelta(seconds=ts)).isoformat().replace("+00:00", "Z")


class Bar(NamedTuple):
    """One closed bar as a backtest hands it to ``Strategy.on_bar``: reads like a :class:`Candle`.

    ``start`` (an aware datetime), ``open``, ``high``, ``low``, ``close``,
    ``volume``, ``trades`` (None) and ``end(timeframe)`` are what a ``Candle``
    offers; the backtest builds this light tuple instead (a tenth of the cost,
    the data was validated once when loaded) — :meth:`to_candle` gives the real thing.
    """

    ts: int  # Unix seconds of the bar's start
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal

    @property
    def start(self) -> datetime:
        return EPOCH + timedelta(seconds=self.ts)

    @property
    def trades(self) -> None:
        return None

    def end(self, timeframe: Timeframe) -> datetime:
        return self.start + timeframe.delta

    def to_candle(self) -> Candle:
        return Candle(self.start, self.open, self.high, self.low, self.close, self.volume)


class BarView:
    """Bar ``index`` of a :class:`BarSeries`, read from its columns: what a bar backtest hands to ``on_bar``.

    Reads like a :class:`Candle` (``start``, ``open``, ``high``, ``low``, ``close``,
    ``volume``, ``trades`` (None), ``end(timeframe)``, :meth:`to_candle`) without
    building anything per bar: each field is read from the column when asked for.
    The runner moves one view from bar to bar **only while nobody else holds it**:
    a strategy that keeps a reference (in a list, an attribute) keeps a view that
    stays on its bar — the runner notices the extra reference and continues with a
    fresh view — so a kept bar never changes under the strategy.

    ``close_units`` is the close as an exact integer number of ``10 ** units_exponent``
    (see :meth:`BarSeries.close_units`), for exact integer indicators; None when the
    series has no integer column.
    """

    __slots__ = ("_c", "_h", "_l", "_o", "_t", "_u", "_v", "index", "units_exponent")

    def __init__(self, series: BarSeries, index: int = 0, units: tuple[int, list[int]] | None = None) -> None:
        self._t = series.times
        self._o = series.open
        self._h = series.high
        self._l = series.low
        self._c = series.close
        self._v = series.volume
        self._u: list[int] | None = units[1] if units is not None else None
        self.units_exponent: int | None = units[0] if units is not None else None
        self.index = index

    def fresh(self) -> BarView:
        """A new view on the same columns (at the same bar)."""
        view = BarView.__new__(BarView)
        view._t, view._o, view._h, view._l, view._c, view._v = self._t, self._o, self._h, self._l, self._c, self._v
        view._u, view.units_exponent, view.index = self._u, self.units_exponent, self.index
        return view

    @property
    def ts(self) -> int:
        return self._t[self.index]

    @property
    def start(self) -> datetime:
        return EPOCH + timedelta(seconds=self._t[self.index])

    @property
    def open(self) -> Decimal:
        return self._o[self.index]

    @property
    def high(self) -> Decimal:
        return self._h[self.index]

    @property
    def low(self) -> Decimal:
        return self._l[self.index]

    @property
    def close(self) -> Decimal:
        return self._c[self.index]

    @property
    def volume(self) -> Decimal:
        return self._v[self.index]

    @property
    def close_units(self) -> int | None:
        units = self._u
        return units[self.index] if units is not None else None

    @property
    def trades(self) -> None:
        return None

    def end(self, timeframe: Timeframe) -> datetime:
        return self.start + timeframe.delta

    def to_bar(self) -> Bar:
        """This bar as an immutable :class:`Bar` tuple."""
        i = self.index
        return Bar(self._t[i], self._o[i], self._h[i], self._l[i], self._c[i], self._v[i])

    def to_candle(self) -> Candle:
        return self.to_bar().to_candle()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, BarView):
            other = other.to_bar()
        return self.to_bar() == other

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        b = self.to_bar()
        return f"BarView({_iso(b.ts)} o={b.open} h={b.high} l={b.low} c={b.close} v={b.volume})"


_MAX_UNIT_PLACES: Final = 18


@dataclass(slots=True)
class BarSeries:
    """One product's bars, column-wise, strictly ascending, every ``step`` seconds (gaps allowed).

    Build with :meth:`from_columns` (which validates) or the loaders below.
    """

    product_id: str
    step: int
    times: list[int]
    open: list[Decimal]
    high: list[Decimal]
    low: list[Decimal]
    close: list[Decimal]
    volume: list[Decimal]
    gaps: list[Gap] = field(default_factory=list)
    source: str = ""
    _units: dict[int, tuple[int, list[int]] | None] = field(default_factory=dict, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.times)

    def close_units(self, places: int = 2) -> tuple[int, list[int]] | None:
        """The closes as exact integers: ``(exponent, units)`` with ``close[i] == units[i] * 10 ** exponent``.

        Tries ``places`` decimal places (``exponent = -places``; pass the product's price
        increment's), then finer ones up to 18; None when some close needs more. Computed
        once per series and ``places`` (batch, in C: about a third of a microsecond per bar)
        and cached: integer indicators read it instead of converting a ``Decimal`` per bar.
        """
        if places in self._units:
            return self._units[places]
        closes = self.close
        result: tuple[int, list[int]] | None = None
        with localcontext() as ctx:
            ctx.prec = 60  # exact products and sums of scaled prices
            for p in range(max(0, places), _MAX_UNIT_PLACES + 1):
                scale = Decimal(10) ** p
                scaled = list(map(mul, closes, repeat(scale)))
                units = list(map(int, scaled))
                # prices are positive: int() truncates an inexact one down, so the sums differ iff one is inexact
                if sum(scaled, Decimal(0)) == sum(units):
                    result = (-p, units)
                    break
        self._units[places] = result
        return result

    def __repr__(self) -> str:
        span = f"{_iso(self.times[0])}..{_iso(self.times[-1])}" if self.times else "empty"
        return f"BarSeries({self.product_id}, {len(self)} bars of {self.step}s, {span}, gaps={len(self.gaps)})"

    @property
    def timeframe(self) -> Timeframe | None:
        """The :class:`Timeframe` of ``step`` when it is one (1m, 5m, 15m, 1h, 6h, 1d)."""
        for tf in Timeframe:
            if tf.seconds == self.step:
                return tf
        return None

    @property
    def missing_bars(self) -> int:
        """Bars missing in all gaps together."""
        return sum(g.missing for g in self.gaps)

    def time(self, i: int) -> datetime:
        """Start of bar ``i`` as an aware UTC datetime."""
        return EPOCH + timedelta(seconds=self.times[i])

    def candle(self, i: int) -> Candle:
        """Bar ``i`` as a :class:`Candle`."""
        return Candle(self.time(i), self.open[i], self.high[i], self.low[i], self.close[i], self.volume[i])

    def bar(self, i: int) -> Bar:
        """Bar ``i`` as the light :class:`Bar` tuple."""
        return Bar(self.times[i], self.open[i], self.high[i], self.low[i], self.close[i], self.volume[i])

    def candles(self) -> Iterator[Candle]:
        for i in range(len(self.times)):
            yield self.candle(i)

    def between(self, start: datetime | None = None, end: datetime | None = None) -> BarSeries:
        """The bars with ``start <= bar start < end`` (either bound optional; aware datetimes)."""
        lo = 0 if start is None else bisect_left(self.times, _epoch_seconds(start, "start"))
        hi = len(self.times) if end is None else bisect_left(self.times, _epoch_seconds(end, "end"))
        hi = max(lo, hi)
        first, last = (self.times[lo], self.times[hi - 1]) if hi > lo else (0, -1)
        gaps = [g for g in self.gaps if g.after >= first and g.before <= last]
        return BarSeries(
            self.product_id,
            self.step,
            self.times[lo:hi],
            self.open[lo:hi],
            self.high[lo:hi],
            self.low[lo:hi],
            self.close[lo:hi],
            self.volume[lo:hi],
            gaps,
            self.source,
        )

    @classmethod
    def from_columns(
        cls,
        product_id: str,
        times: Sequence[int],
        opens: Sequence[Decimal],
        highs: Sequence[Decimal],
        lows: Sequence[Decimal],
        closes: Sequence[Decimal],
        volumes: Sequence[Decimal],
        *,
        step: int | None = None,
        source: str = "",
        on_gap: GapPolicy = "warn",
    ) -> BarSeries:
        """Validate the columns (see the module doc) and build the series.

        ``step`` (seconds) defaults to the smallest distance between two bars.
        """
        where = source or product_id
        n = len(times)
        if not all(len(col) == n for col in (opens, highs, lows, closes, volumes)):
            lengths = [len(c) for c in (times, opens, highs, lows, closes, volumes)]
            raise InvalidValue(f"{where}", lengths, "columns differ in length")
        if n == 0:
            raise DataError(f"{where}: no bars")
        prev = times[0]
        smallest = 0
        for i in range(1, n):
            t = times[i]
            if t == prev:
                raise InvalidValue(f"{where} row {i + 1}.time", _iso(t), f"duplicate time (same as row {i})")
            if t < prev:
                raise InvalidValue(
                    f"{where} row {i + 1}.time", _iso(t), f"unsorted: before row {i} ({_iso(prev)}); rows must ascend"
                )
            d = t - prev
            if smallest == 0 or d < smallest:
                smallest = d
            prev = t
        if step is None:
            step = smallest or 60
        if step <= 0:
            raise InvalidValue(f"{where}.step", step, "must be a positive number of seconds")
        gaps: list[Gap] = []
        for i in range(1, n):
            d = times[i] - times[i - 1]
            if d != step:
                if d % step:
                    raise InvalidValue(
                        f"{where} row {i + 1}.time", _iso(times[i]), f"off the {step}s bar grid of row {i} ({_iso(times[i - 1])})"
                    )
                gaps.append(Gap(times[i - 1], times[i], d // step - 1))
        for i in range(n):
            o, h, lo, c, v = opens[i], highs[i], lows[i], closes[i], volumes[i]
            if lo <= 0 or o <= 0 or c <= 0:
                raise InvalidValue(f"{where} row {i + 1}.low", (o, h, lo, c), "prices must be positive")
            if h < o or h < c or h < lo or lo > o or lo > c:
                raise InvalidValue(f"{where} row {i + 1}.high/low", (o, h, lo, c), "high/low do not bound open and close")
            if v < 0:
                raise InvalidValue(f"{where} row {i + 1}.volume", v, "must not be negative")
        series = cls(
            product_id, step, list(times), list(opens), list(highs), list(lows), list(closes), list(volumes), gaps, source
        )
        if gaps:
            first = "; ".join(g.describe() for g in gaps[:3])
            if on_gap == "error":
                raise DataError(f"{where}: {len(gaps)} gaps, {series.missing_bars} bars missing (on_gap=error): {first}")
            log.warning("backtest_data_gaps", source=where, gaps=len(gaps), missing_bars=series.missing_bars, first=first)
        return series


def resample(series: BarSeries, step: int) -> BarSeries:
    """Aggregate ``series`` into bars of ``step`` seconds (a multiple of its own), aligned to the Unix epoch.

    A bucket is built from the bars present in it (open of the first, close of
    the last, extremes, summed volume); the last bucket is dropped unless it is
    complete, so a strategy never sees a bar that has not closed. Buckets
    without any bar are gaps, not invented bars.
    """
    if step == series.step:
        return series
    if step < series.step or step % series.step:
        raise InvalidValue("resample.step", step, f"must be a multiple of the data's {series.step}s bars")
    times: list[int] = []
    o: list[Decimal] = []
    h: list[Decimal] = []
    lo: list[Decimal] = []
    c: list[Decimal] = []
    v: list[Decimal] = []
    current = None
    for i, t in enumerate(series.times):
        bucket = t - t % step
        if bucket != current:
            current = bucket
            times.append(bucket)
            o.append(series.open[i])
            h.append(series.high[i])
            lo.append(series.low[i])
            c.append(series.close[i])
            v.append(series.volume[i])
        else:
            if series.high[i] > h[-1]:
                h[-1] = series.high[i]
            if series.low[i] < lo[-1]:
                lo[-1] = series.low[i]
            c[-1] = series.close[i]
            v[-1] += series.volume[i]
    if times and series.times[-1] + series.step < times[-1] + step:  # the last bucket has not closed
        for col in (times, o, h, lo, c, v):
            col.pop()
    if not times:
        raise DataError(f"{series.source or series.product_id}: no complete {step}s bar in the data")
    return BarSeries.from_columns(series.product_id, times, o, h, lo, c, v, step=step, source=series.source)


# --- parsing ------------------------------------------------------------------------


def _epoch_seconds(ts: datetime, field_name: str) -> int:
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise InvalidValue(field_name, ts, "must be timezone-aware (UTC)")
    delta = ts - EPOCH
    if delta.microseconds:
        raise InvalidValue(field_name, ts.isoformat(), "bar times must be whole seconds")
    return delta.days * 86400 + delta.seconds


def _detect_kind(value: object) -> TimeKind:
    if isinstance(value, datetime):
        return "iso"
    if isinstance(value, bool):
        raise ValueError("a boolean is not a time")
    if isinstance(value, int):
        n = abs(value)
    else:
        text = str(value).strip()
        body = text[1:] if text.startswith("-") else text
        if not body.isdigit():
            return "iso"
        n = int(body)
    if n < _SECONDS_LIMIT:
        return "s"
    if n < _MILLIS_LIMIT:
        return "ms"
    raise ValueError(f"integer time {n} is too large for Unix seconds or milliseconds")


def parse_time_value(value: object, kind: TimeKind) -> int:
    """Parse one time cell as ``kind`` ("iso", "s" or "ms") into Unix seconds; ValueError says why not."""
    if kind == "iso":
        if isinstance(value, datetime):
            ts = value
        else:
            text = str(value).strip()
            if text.isdigit():
                raise ValueError("a number where the file's first row had an ISO time")
            ts = datetime.fromisoformat(text)
        if ts.tzinfo is None:
            ts = ts.replace(tzinfo=UTC)
        delta = ts - EPOCH
        if delta.microseconds:
            raise ValueError("not a whole second")
        return delta.days * 86400 + delta.seconds
    if isinstance(value, bool | float | datetime):
        raise ValueError(f"expected an integer {'seconds' if kind == 's' else 'milliseconds'} time")
    n = value if isinstance(value, int) else int(str(value).strip())
    if _detect_kind(n) != kind:
        raise ValueError(f"looks like {'milliseconds' if kind == 's' else 'seconds'}, but the first row was {kind}")
    if kind == "ms":
        if n % 1000:
            raise ValueError("not a whole second")
        return n // 1000
    return n


class _Reader:
    """Turns raw rows into validated columns; interns equal Decimals (open usually equals the last close)."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.kind: TimeKind | None = None
        self.times: list[int] = []
        self.cols: list[list[Decimal]] = [[] for _ in VALUE_COLUMNS]
        self._intern: dict[str, Decimal] = {}

    def time(self, value: object, row: int) -> None:
        try:
            if self.kind is None:
                self.kind = _detect_kind(value)
            self.times.append(parse_time_value(value, self.kind))
        except (ValueError, TypeError, OverflowError) as exc:
            raise InvalidValue(f"{self.where} row {row}.time", value, str(exc) or "not a time") from None

    def number(self, col: int, value: object, row: int) -> None:
        if isinstance(value, Decimal):
            key = str(value)
        elif isinstance(value, bool) or value is None:
            raise InvalidValue(f"{self.where} row {row}.{VALUE_COLUMNS[col]}", value, "not a decimal number")
        elif isinstance(value, float):
            key = repr(value)  # the shortest decimal that round-trips: what the writer printed
        else:
            key = str(value).strip()
        dec = self._intern.get(key)
        if dec is None:
            try:
                dec = Decimal(key)
            except InvalidOperation:
                raise InvalidValue(f"{self.where} row {row}.{VALUE_COLUMNS[col]}", value, "not a decimal number") from None
            if not dec.is_finite():
                raise InvalidValue(f"{self.where} row {row}.{VALUE_COLUMNS[col]}", value, "must be finite")
            self._intern[key] = dec
        self.cols[col].append(dec)

    def series(self, product_id: str, step: int | None, on_gap: GapPolicy) -> BarSeries:
        return BarSeries.from_columns(product_id, self.times, *self.cols, step=step, source=self.where, on_gap=on_gap)


def _columns(header: Sequence[object], where: str) -> list[int]:
    names = [str(h).strip().lower() for h in header]
    out: list[int] = []
    time_col = next((names.index(c) for c in TIME_COLUMNS if c in names), None)
    if time_col is None:
        raise DataError(f"{where}: no time column (expected one of {', '.join(TIME_COLUMNS)}); header is {list(header)}")
    out.append(time_col)
    for name in VALUE_COLUMNS:
        if name not in names:
            raise DataError(f"{where}: missing column {name!r}; header is {list(header)}")
        out.append(names.index(name))
    return out


def _read_csv(path: Path, reader: _Reader) -> None:
    opener: Callable[..., Any] = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="", encoding="utf-8") as fh:
        rows = csv.reader(fh)
        header = next(rows, None)
        if header is None:
            raise DataError(f"{reader.where}: empty file (expected a header row)")
        ti, oi, hi, li, ci, vi = _columns(header, reader.where)
        width = max(ti, oi, hi, li, ci, vi) + 1
        time, number = reader.time, reader.number
        for row, rec in enumerate(rows, start=1):
            if len(rec) < width:
                if not any(cell.strip() for cell in rec):
                    continue
                raise InvalidValue(f"{reader.where} row {row}", rec, f"expected at least {width} columns")
            time(rec[ti], row)
            number(0, rec[oi], row)
            number(1, rec[hi], row)
            number(2, rec[li], row)
            number(3, rec[ci], row)
            number(4, rec[vi], row)


def _read_parquet(path: Path, reader: _Reader) -> None:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises many types for a bad file
        raise DataError(f"{reader.where}: not a readable Parquet file ({exc})") from None
    idx = _columns(table.column_names, reader.where)
    columns = []
    for i in idx:
        col = table.column(i)
        columns.append(col.to_pylist())
    times = columns[0]
    for row, value in enumerate(times, start=1):
        if isinstance(value, datetime) and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        reader.time(value, row)
    for c in range(5):
        number = reader.number
        for row, value in enumerate(columns[c + 1], start=1):
            number(c, value, row)


def _read_json(path: Path, reader: _Reader) -> None:
    """A JSON array of rows: ``[time, open, high, low, close, volume]`` arrays (freqtrade's layout) or objects."""
    import orjson

    opener: Callable[..., Any] = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        try:
            rows = orjson.loads(fh.read())
        except orjson.JSONDecodeError as exc:
            raise DataError(f"{reader.where}: invalid JSON ({exc})") from None
    if not isinstance(rows, list):
        raise DataError(f"{reader.where}: expected a JSON array of bars")
    for row, rec in enumerate(rows, start=1):
        if isinstance(rec, dict):
            lower = {str(k).lower(): v for k, v in rec.items()}
            key = next((c for c in TIME_COLUMNS if c in lower), None)
            if key is None or not all(c in lower for c in VALUE_COLUMNS):
                raise InvalidValue(f"{reader.where} row {row}", rec, "needs time, open, high, low, close and volume")
            values = [lower[key], *(lower[c] for c in VALUE_COLUMNS)]
        elif isinstance(rec, list) and len(rec) >= 6:
            values = rec[:6]
        else:
            raise InvalidValue(f"{reader.where} row {row}", rec, "expected [time, open, high, low, close, volume]")
        reader.time(values[0], row)
        for c in range(5):
            reader.number(c, values[c + 1], row)


def load_bars(
    path: Path | str,
    *,
    product_id: str | None = None,
    step: int | None = None,
    on_gap: GapPolicy = "warn",
) -> BarSeries:
    """Load bars from ``.csv`` / ``.csv.gz`` / ``.parquet`` / ``.json`` (see the module doc).

    ``product_id`` defaults to the product in the file name (:func:`product_from_filename`);
    ``step`` (seconds) to the smallest distance between bars.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    reader = _Reader(str(path))
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes[-1:] == [".parquet"]:
        _read_parquet(path, reader)
    elif suffixes[-1:] == [".csv"] or suffixes[-2:] == [".csv", ".gz"]:
        _read_csv(path, reader)
    elif suffixes[-1:] == [".json"] or suffixes[-2:] == [".json", ".gz"]:
        _read_json(path, reader)
    else:
        raise DataError(f"{path}: unknown bar file type (expected .csv, .csv.gz, .parquet or .json)")
    return reader.series(product_id or product_from_filename(path.name), step, on_gap)


_PRODUCT_IN_NAME: Final = re.compile(r"^([A-Za-z0-9]+)[-_]([A-Za-z0-9]+)")


def product_from_filename(name: str) -> str:
    """``BTC-USD-1m.csv`` → ``BTC-USD``, ``ETH_BTC-1m.json`` → ``ETH-BTC``; otherwise the name before its first dot."""
    match = _PRODUCT_IN_NAME.match(name)
    if match is None:
        return name.split(".")[0]
    return f"{match.group(1)}-{match.group(2)}".upper()


def write_bars(series: BarSeries, path: Path | str, *, append: bool = False) -> None:
    """Write ``series`` as CSV (``.csv`` / ``.csv.gz``, ISO times) or Parquet (decimal strings).

    ``append`` adds rows to an existing CSV without a second header (Parquet is rewritten whole).
    """
    path = Path(path)
    if path.suffix.lower() == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        columns: dict[str, Any] = {"time": pa.array(series.times, type=pa.int64())}
        for name, col in zip(VALUE_COLUMNS, _cols(series), strict=True):
            columns[name] = pa.array([str(v) for v in col], type=pa.string())
        table = pa.table(columns)
        pq.write_table(table, path)
        return
    exists = append and path.exists() and path.stat().st_size > 0
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    if not exists:
        out.writerow(("time", *VALUE_COLUMNS))
    for i, t in enumerate(series.times):
        out.writerow((_iso(t), series.open[i], series.high[i], series.low[i], series.close[i], series.volume[i]))
    data = buf.getvalue()
    mode = "at" if exists else "wt"
    opener: Callable[..., Any] = gzip.open if path.suffix == ".gz" else open
    with opener(path, mode, encoding="utf-8", newline="") as fh:
        fh.write(data)


def _cols(series: BarSeries) -> tuple[list[Decimal], ...]:
    return series.open, series.high, series.low, series.close, series.volume


# --- recordings ------------------------------------------------------------------------


def trades_from_recording(path: Path | str, product_id: str) -> Iterator[MarketTrade]:
    """The public trades of ``product_id`` in a ``cryptoj record`` file, each trade id once, in file order."""
    from cryptoj.recorder import iter_recording
    from cryptoj.venues.coinbase.protocol import parse_envelope

    seen: set[str] = set()
    for _ts, payload in iter_recording(Path(path)):
        if isinstance(payload, int):
            continue
        for event in parse_envelope(payload).events:
            if isinstance(event, MarketTrade) and event.product_id == product_id and event.trade_id not in seen:
                seen.add(event.trade_id)
                yield event


def bars_from_recording(
    path: Path | str,
    product_id: str,
    timeframe: Timeframe = Timeframe.ONE_MINUTE,
    *,
    include_last: bool = False,
    on_gap: GapPolicy = "warn",
) -> BarSeries:
    """Bars built from the trades in a ``cryptoj record`` file by :class:`CandleAggregator`.

    Trades are taken from the ``market_trades`` channel (snapshot and updates,
    each trade id once). The last, still open bar is dropped unless
    ``include_last``; buckets nobody traded in are gaps, as in exchange data.
    """
    agg = CandleAggregator(timeframe, max_history=10**9)
    for trade in trades_from_recording(path, product_id):
        agg.add_trade(trade.price, trade.size, trade.time)
    if include_last:
        agg.flush()
    candles = agg.history()
    if not candles:
        raise DataError(f"{path}: no complete {timeframe.value} bar of {product_id} in the recording")
    return _from_candles(product_id, candles, timeframe.seconds, str(path), on_gap)


def _from_candles(product_id: str, candles: Iterable[Candle], step: int, source: str, on_gap: GapPolicy) -> BarSeries:
    rows = list(candles)
    return BarSeries.from_columns(
        product_id,
        [_epoch_seconds(c.start, "candle.start") for c in rows],
        [c.open for c in rows],
        [c.high for c in rows],
        [c.low for c in rows],
        [c.close for c in rows],
        [c.volume for c in rows],
        step=step,
        source=source,
        on_gap=on_gap,
    )


# --- synthetic ------------------------------------------------------------------------


def synthetic_bars(
    *,
    seed: int,
    bars: int = 525_600,
    product_id: str = "BTC-USD",
    start: datetime = datetime(2025, 1, 1, tzinfo=UTC),
    step: int = 60,
    start_price: Decimal = Decimal("50000.00"),
    price_increment: Decimal = Decimal("0.01"),
    volatility_bps: float = 6.0,
) -> BarSeries:
    """A seeded random-walk market: ``bars`` bars of ``step`` seconds on a ``price_increment`` grid.

    Each bar opens at the previous close; the close moves by a Gaussian number
    of ticks (``volatility_bps`` of the price per bar); high/low add seeded
    excursions. Same seed → same bars, bit for bit.
    """
    if bars <= 0:
        raise InvalidValue("synthetic_bars.bars", bars, "must be positive")
    rng = random.Random(seed)
    gauss, expo = rng.gauss, rng.expovariate
    exponent = price_increment.as_tuple().exponent
    assert isinstance(exponent, int)
    scale = Decimal(1).scaleb(exponent)
    ticks = int(start_price / price_increment)
    first = _epoch_seconds(start, "synthetic_bars.start")
    intern: dict[int, Decimal] = {}

    def dec(k: int) -> Decimal:
        d = intern.get(k)
        if d is None:
            d = intern[k] = (k * price_increment).quantize(scale)
        return d

    times = list(range(first, first + bars * step, step))
    o: list[Decimal] = []
    h: list[Decimal] = []
    lo: list[Decimal] = []
    c: list[Decimal] = []
    v: list[Decimal] = []
    lots = [Decimal(k).scaleb(-3) for k in range(1, 5001)]
    floor = max(10, ticks // 20)
    get = intern.get
    o_add, h_add, l_add, c_add, v_add = o.append, h.append, lo.append, c.append, v.append
    vol = volatility_bps / 10_000
    lot_rate = 1 / 800
    previous = dec(ticks)
    for _ in range(bars):
        sigma = ticks * vol
        close = ticks + round(gauss(0.0, sigma))
        if close < floor:
            close = floor
        rate = 1.0 / (sigma / 2 + 1)
        hi_t = (ticks if ticks > close else close) + int(expo(rate))
        lo_t = (close if ticks > close else ticks) - int(expo(rate))
        if lo_t < 1:
            lo_t = 1
        o_add(previous)
        h_add(get(hi_t) or dec(hi_t))
        l_add(get(lo_t) or dec(lo_t))
        previous = get(close) or dec(close)
        c_add(previous)
        k = int(expo(lot_rate))
        v_add(lots[k if k < 4999 else 4999])
        ticks = close
        if len(intern) > 200_000:
            intern.clear()
    return BarSeries(product_id, step, times, o, h, lo, c, v, [], f"synthetic(seed={seed})")
