"""Incremental technical indicators: O(1) work per update, ``Decimal`` in and ``Decimal`` out.

Every indicator is fed one value (or one bar) at a time with ``update(...)`` and
answers ``None`` until it has seen enough data (``ready`` is then True and
``value`` holds the latest result). Nothing is recomputed from history: a
rolling window keeps a running sum (and a running sum of squares where a
variance is needed), so the cost of an update does not depend on the period.

Exactness:

* Arithmetic is ``decimal.Decimal`` in the *current* decimal context (28
  significant digits by default). Running sums of exchange prices and sizes
  (a handful of significant digits each) are exact, so :class:`SMA` and the
  mean of :class:`Bollinger` equal ``sum(window) / n`` computed from scratch
  **exactly**, however long the series; recursive indicators (EMA, RSI, ATR,
  MACD) follow their textbook recurrences step by step, so a from-scratch
  recomputation with the same recurrence gives the same digits.
* There is no float fast path: the decisions strategies take (crossings,
  thresholds) compare Decimals, so a backtest and a live run decide the same.
  An update costs a few Decimal operations (well under a microsecond each in
  CPython's C ``_decimal``).

Conventions (the usual textbook ones):

* :class:`EMA`: ``alpha = 2 / (period + 1)``; seeded with the simple average of
  the first ``period`` values, then ``ema += alpha * (x - ema)``.
* :class:`RSI` (Wilder): the first average gain/loss is the simple average of
  the first ``period`` changes, then ``avg = (avg * (period - 1) + x) / period``;
  ``RSI = 100 - 100 / (1 + avg_gain / avg_loss)``, computed as the equal
  ``100 · avg_gain / (avg_gain + avg_loss)`` (one division); 100 when there were
  no losses, 50 when the price did not move at all.
* :class:`ATR` (Wilder): true range ``max(high - low, |high - prev_close|,
  |low - prev_close|)`` (``high - low`` for the first bar), first ATR the simple
  average of ``period`` true ranges, then Wilder smoothing.
* :class:`MACD`: ``EMA(fast) - EMA(slow)`` (from the bar at which the slow EMA
  is ready), signal line ``EMA(signal)`` of the MACD line, histogram
  ``macd - signal``.
* :class:`Bollinger`: middle = SMA, bands at ``k`` **population** standard
  deviations (divide by ``n``, as Bollinger defined them).
"""

from __future__ import annotations

from collections import deque
from decimal import Decimal
from typing import Any, Final, Protocol

from cryptoj.errors import InvalidValue

__all__ = [
    "ATR",
    "EMA",
    "MACD",
    "RSI",
    "SMA",
    "AverageText",
    "Bollinger",
    "Indicator",
    "RateOfChange",
    "RollingStdDev",
    "RollingSum",
    "SMACrossover",
]

_ZERO: Final = Decimal(0)
_ONE: Final = Decimal(1)
_TWO: Final = Decimal(2)
_FIFTY: Final = Decimal(50)
_HUNDRED: Final = Decimal(100)


def _check_period(owner: str, name: str, period: object, minimum: int = 1) -> int:
    if isinstance(period, bool) or not isinstance(period, int) or period < minimum:
        raise InvalidValue(f"{owner}.{name}", period, f"must be an integer >= {minimum}")
    return period


def _bad_input(owner: str, value: object) -> InvalidValue:
    return InvalidValue(f"{owner}.update", value, "a finite Decimal is required")


class Indicator:
    """Common surface: ``value`` (latest result or None), ``ready``, ``count`` (updates seen), ``reset()``."""

    __slots__ = ("count", "value")

    def __init__(self) -> None:
        self.value: Decimal | None = None
        self.count = 0

    @property
    def ready(self) -> bool:
        return self.value is not None

    def reset(self) -> None:
        """Forget everything seen so far."""
        self.value = None
        self.count = 0

    def _label(self) -> str:
        return type(self).__name__

    def __repr__(self) -> str:
        return f"{self._label()}(value={self.value}, count={self.count})"


class RollingSum(Indicator):
    """Sum of the last ``period`` values (ready after ``period`` values)."""

    __slots__ = ("_sum", "_window", "period")

    def __init__(self, period: int) -> None:
        super().__init__()
        self.period = _check_period("RollingSum", "period", period)
        self._window: deque[Decimal] = deque()
        self._sum = _ZERO

    def _label(self) -> str:
        return f"RollingSum({self.period})"

    @property
    def partial_sum(self) -> Decimal:
        """Sum of the values in the window so far (before ``ready``: of fewer than ``period``)."""
        return self._sum

    def update(self, value: Decimal) -> Decimal | None:
        if not isinstance(value, Decimal) or not value.is_finite():
            raise _bad_input(self._label(), value)
        window = self._window
        window.append(value)
        self._sum += value
        if len(window) > self.period:
            self._sum -= window.popleft()
        self.count += 1
        if len(window) == self.period:
            self.value = self._sum
        return self.value

    def reset(self) -> None:
        super().reset()
        self._window.clear()
        self._sum = _ZERO


class SMA(Indicator):
    """Simple moving average of the last ``period`` values (exact: running sum / period)."""

    __slots__ = ("_n", "_sum", "_window", "period")

    def __init__(self, period: int) -> None:
        super().__init__()
        self.period = _check_period("SMA", "period", period)
        self._n = Decimal(self.period)
        self._window: deque[Decimal] = deque()
        self._sum = _ZERO

    def _label(self) -> str:
        return f"SMA({self.period})"

    def update(self, value: Decimal) -> Decimal | None:
        if not isinstance(value, Decimal) or not value.is_finite():
            raise _bad_input(self._label(), value)
        window = self._window
        window.append(value)
        self._sum += value
        if len(window) > self.period:
            self._sum -= window.popleft()
        elif len(window) < self.period:
            self.count += 1
            return None
        self.count += 1
        self.value = self._sum / self._n
        return self.value

    def reset(self) -> None:
        super().reset()
        self._window.clear()
        self._sum = _ZERO


class AverageText:
    """A moving average written out only when printed: ``str()``/``repr()`` give the Decimal's text (``None`` if not ready)."""

    __slots__ = ("_exp", "_period", "_total")

    def __init__(self, total: int, exponent: int | None, period: int) -> None:
        self._total = total
        self._exp = exponent
        self._period = period

    @property
    def value(self) -> Decimal | None:
        if self._exp is None:
            return None
        return Decimal(self._total).scaleb(self._exp) / Decimal(self._period)

    def __str__(self) -> str:
        return str(self.value)

    __repr__ = __str__


class SMACrossover:
    """Where a fast SMA stands against a slow one, on **exact integer** running sums (no division per update).

    Feed it closes as integers of a decimal unit — ``update_units(units, exponent)``
    with ``close == units * 10 ** exponent`` (what a backtest's bar gives as
    ``bar.close_units`` / ``bar.units_exponent``) — or as Decimals with :meth:`update`
    (converted exactly; the scale grows when a value needs more decimal places).
    Both answer the **sign**: ``1`` when the fast SMA is above the slow one, ``-1``
    below, the previous sign when they are equal (touching is not crossing), ``0``
    until ``slow`` values were seen. The comparison cross-multiplies the sums
    (``fast_sum · slow > slow_sum · fast``), so it is exact and equals comparing
    ``SMA(fast)`` with ``SMA(slow)`` computed in ``Decimal``. The averages themselves
    are made (as Decimals, exactly as :class:`SMA` computes them) only when read:
    :attr:`fast`, :attr:`slow`.

    :meth:`update_bar` takes a bar: a live ``Candle`` through :meth:`update`; a bar
    backtest's :class:`~cryptoj.backtest.data.BarView` is read from its series' integer
    close column, and once the window is full and bars come one after the other, the
    sums move by reading the column at the bar, ``fast`` and ``slow`` bars back (no
    window of its own, no Decimal) — still only values at or before the bar.
    """

    __slots__ = (
        "_col",
        "_colmode",
        "_exp",
        "_fs",
        "_fw",
        "_next",
        "_ss",
        "_start",
        "_sw",
        "fast_period",
        "sign",
        "slow_period",
    )

    def __init__(self, fast: int, slow: int) -> None:
        self.fast_period = _check_period("SMACrossover", "fast", fast)
        self.slow_period = _check_period("SMACrossover", "slow", slow)
        if self.fast_period > self.slow_period:
            raise InvalidValue("SMACrossover.fast", fast, f"must not exceed slow ({slow})")
        self._fw: deque[int] = deque()
        self._sw: deque[int] = deque()
        self._fs = 0
        self._ss = 0
        self._exp: int | None = None
        self.sign = 0
        self._col: list[int] | None = None  # the integer close column bars were last read from
        self._next = -1  # the index in it of the bar expected next
        self._start = 0  # where the bars read from it one after the other began
        self._colmode = False  # True: the window is the column's, the deques are not kept

    def __repr__(self) -> str:
        return f"SMACrossover({self.fast_period}, {self.slow_period}, sign={self.sign}, fast={self.fast}, slow={self.slow})"

    @property
    def ready(self) -> bool:
        return len(self._sw) == self.slow_period

    def update_bar(self, bar: Any) -> int:
        """Take ``bar``'s close (a Candle, a Bar, or a backtest's BarView: exact integers, O(1)); returns the sign."""
        try:
            col: list[int] | None = bar._u  # a BarView: its series' integer closes
            i: int = bar.index
        except AttributeError:
            return self.update(bar.close)
        if col is self._col and i == self._next:
            self._next = i + 1
            if self._colmode:  # the window is col[i - slow + 1 : i + 1]
                x = col[i]  # type: ignore[index]
                fs = self._fs + x - col[i - self.fast_period]  # type: ignore[index]
                ss = self._ss + x - col[i - self.slow_period]  # type: ignore[index]
                self._fs = fs
                self._ss = ss
                a = fs * self.slow_period
                b = ss * self.fast_period
                if a > b:
                    self.sign = 1
                elif a < b:
                    self.sign = -1
                return self.sign
        elif col is None:
            return self.update(bar.close)
        else:
            self._leave_column()
            self._col = col
            self._start = i
            self._next = i + 1
        exponent: int = bar.units_exponent
        sign = self._add(col[i], exponent)  # type: ignore[index]
        if i - self._start + 1 >= self.slow_period and exponent == self._exp:
            self._colmode = True  # the whole window was read from this column in order: read it from now on
        return sign

    def _leave_column(self) -> None:
        """Back to the own window: rebuild it from the column (what was read last), once."""
        col = self._col
        if col is not None and self._colmode:
            end = self._next
            self._fw = deque(col[end - self.fast_period : end])
            self._sw = deque(col[end - self.slow_period : end])
        self._col = None
        self._colmode = False

    def update_units(self, units: int, exponent: int) -> int:
        """Take the close ``units · 10**exponent`` (O(1), integers only); returns the sign."""
        if self._col is not None:
            self._leave_column()
        return self._add(units, exponent)

    def _add(self, units: int, exponent: int) -> int:
        if exponent != self._exp:
            units = self._align(units, exponent)
        fw = self._fw
        fw.append(units)
        fs = self._fs + units
        if len(fw) > self.fast_period:
            fs -= fw.popleft()
        self._fs = fs
        sw = self._sw
        sw.append(units)
        ss = self._ss + units
        n = len(sw)
        if n > self.slow_period:
            ss -= sw.popleft()
        elif n < self.slow_period:
            self._ss = ss
            return 0
        self._ss = ss
        a = fs * self.slow_period
        b = ss * self.fast_period
        if a > b:
            self.sign = 1
        elif a < b:
            self.sign = -1
        return self.sign

    def update(self, value: Decimal) -> int:
        """Take a Decimal close (converted exactly to the current unit, refined if needed); returns the sign."""
        if not isinstance(value, Decimal) or not value.is_finite():
            raise _bad_input("SMACrossover", value)
        exponent = value.as_tuple().exponent
        assert isinstance(exponent, int)
        if self._exp is not None and exponent > self._exp:
            exponent = self._exp
        return self.update_units(int(value.scaleb(-exponent)), exponent)

    def _align(self, units: int, exponent: int) -> int:
        """Bring ``units · 10**exponent`` and the state to one unit: the finer of the two (exact, rare)."""
        if self._exp is None:
            self._exp = exponent
            return units
        if exponent > self._exp:
            factor: int = 10 ** (exponent - self._exp)
            return units * factor
        k: int = 10 ** (self._exp - exponent)
        self._fw = deque(x * k for x in self._fw)
        self._sw = deque(x * k for x in self._sw)
        self._fs *= k
        self._ss *= k
        self._exp = exponent
        return units

    def _average(self, total: int, count: int, period: int) -> Decimal | None:
        if count < self.slow_period or self._exp is None:
            return None
        return Decimal(total).scaleb(self._exp) / Decimal(period)

    def averages_text(self) -> tuple[AverageText, AverageText]:
        """``(fast, slow)`` as they stand now, for a log line: they print as :attr:`fast` and :attr:`slow` do.

        The Decimals are made only if the text is asked for (a log line at a level
        that is off never divides); the sums are copied now, so later updates do not
        change what is printed.
        """
        exp = self._exp if len(self._sw) >= self.slow_period else None  # as _average decides
        return AverageText(self._fs, exp, self.fast_period), AverageText(self._ss, exp, self.slow_period)

    @property
    def fast(self) -> Decimal | None:
        """SMA(fast) of the values seen (None until ``slow`` values were seen)."""
        return self._average(self._fs, len(self._sw), self.fast_period)

    @property
    def slow(self) -> Decimal | None:
        """SMA(slow) of the values seen (None until ``slow`` values were seen)."""
        return self._average(self._ss, len(self._sw), self.slow_period)

    def reset(self) -> None:
        self._fw.clear()
        self._sw.clear()
        self._fs = self._ss = 0
        self._exp = None
        self.sign = 0
        self._col = None
        self._next = -1
        self._colmode = False


class RollingStdDev(Indicator):
    """Population standard deviation of the last ``period`` values (``ddof=1`` for the sample one).

    Keeps a running sum and sum of squares: ``var = (sum_sq - sum² / n) / (n - ddof)``
    (exact sums, one division and one square root per update). ``mean`` is the window mean.
    """

    __slots__ = ("_den", "_n", "_sum", "_sum_sq", "_window", "ddof", "mean", "period")

    def __init__(self, period: int, *, ddof: int = 0) -> None:
        super().__init__()
        if ddof not in (0, 1):
            raise InvalidValue("RollingStdDev.ddof", ddof, "must be 0 (population) or 1 (sample)")
        self.period = _check_period("RollingStdDev", "period", period, minimum=1 + ddof)
        self.ddof = ddof
        self._n = Decimal(self.period)
        self._den = Decimal(self.period - ddof)
        self._window: deque[Decimal] = deque()
        self._sum = _ZERO
        self._sum_sq = _ZERO
        self.mean: Decimal | None = None

    def _label(self) -> str:
        return f"RollingStdDev({self.period})"

    def update(self, value: Decimal) -> Decimal | None:
        self.add(value)
        return self.compute()

    def add(self, value: Decimal) -> None:
        """Take ``value`` into the window without computing the result (O(1), no division or root).

        For callers that read the deviation rarely: ``add`` on every bar, :meth:`compute` when needed.
        ``value``/``mean`` are only refreshed by ``update``/``compute``.
        """
        if not isinstance(value, Decimal) or not value.is_finite():
            raise _bad_input(self._label(), value)
        window = self._window
        window.append(value)
        self._sum += value
        self._sum_sq += value * value
        if len(window) > self.period:
            old = window.popleft()
            self._sum -= old
            self._sum_sq -= old * old
        self.count += 1

    @property
    def full(self) -> bool:
        """True once the window holds ``period`` values (``compute`` will answer)."""
        return len(self._window) == self.period

    def compute(self) -> Decimal | None:
        """The deviation (and ``mean``) of the current window, or None before it is full."""
        if len(self._window) < self.period:
            return None
        total = self._sum
        self.mean = total / self._n
        var = (self._sum_sq - total * total / self._n) / self._den
        self.value = var.sqrt() if var > _ZERO else _ZERO
        return self.value

    def reset(self) -> None:
        super().reset()
        self._window.clear()
        self._sum = _ZERO
        self._sum_sq = _ZERO
        self.mean = None


class EMA(Indicator):
    """Exponential moving average, ``alpha = 2 / (period + 1)``, seeded with the SMA of the first ``period`` values."""

    __slots__ = ("_seed", "alpha", "period")

    def __init__(self, period: int) -> None:
        super().__init__()
        self.period = _check_period("EMA", "period", period)
        self.alpha = _TWO / Decimal(self.period + 1)
        self._seed = _ZERO

    def _label(self) -> str:
        return f"EMA({self.period})"

    def update(self, value: Decimal) -> Decimal | None:
        if not isinstance(value, Decimal) or not value.is_finite():
            raise _bad_input(self._label(), value)
        self.count += 1
        current = self.value
        if current is not None:
            self.value = current + self.alpha * (value - current)
            return self.value
        self._seed += value
        if self.count == self.period:
            self.value = self._seed / Decimal(self.period)
        return self.value

    def reset(self) -> None:
        super().reset()
        self._seed = _ZERO


class RSI(Indicator):
    """Wilder's Relative Strength Index over ``period`` changes (ready after ``period + 1`` prices)."""

    __slots__ = ("_avg_gain", "_avg_loss", "_n", "_n1", "_prev", "period")

    def __init__(self, period: int = 14) -> None:
        super().__init__()
        self.period = _check_period("RSI", "period", period)
        self._n = Decimal(self.period)
        self._n1 = Decimal(self.period - 1)
        self._prev: Decimal | None = None
        self._avg_gain = _ZERO
        self._avg_loss = _ZERO

    def _label(self) -> str:
        return f"RSI({self.period})"

    def update(self, value: Decimal) -> Decimal | None:
        if not isinstance(value, Decimal) or not value.is_finite():
            raise _bad_input(self._label(), value)
        self.count += 1
        prev = self._prev
        self._prev = value
        if prev is None:
            return None
        change = value - prev
        gain = change if change > _ZERO else _ZERO
        loss = -change if change < _ZERO else _ZERO
        changes = self.count - 1
        if changes < self.period:
            self._avg_gain += gain
            self._avg_loss += loss
            return None
        if changes == self.period:
            self._avg_gain = (self._avg_gain + gain) / self._n
            self._avg_loss = (self._avg_loss + loss) / self._n
        else:
            self._avg_gain = (self._avg_gain * self._n1 + gain) / self._n
            self._avg_loss = (self._avg_loss * self._n1 + loss) / self._n
        avg_gain, avg_loss = self._avg_gain, self._avg_loss
        if avg_loss == _ZERO:
            self.value = _FIFTY if avg_gain == _ZERO else _HUNDRED
        else:
            self.value = _HUNDRED * avg_gain / (avg_gain + avg_loss)
        return self.value

    @property
    def avg_gain(self) -> Decimal | None:
        return self._avg_gain if self.ready else None

    @property
    def avg_loss(self) -> Decimal | None:
        return self._avg_loss if self.ready else None

    def reset(self) -> None:
        super().reset()
        self._prev = None
        self._avg_gain = _ZERO
        self._avg_loss = _ZERO


class ATR(Indicator):
    """Wilder's Average True Range; feed it ``update(high, low, close)`` (or ``update_candle(candle)``)."""

    __slots__ = ("_n", "_n1", "_prev_close", "_seed", "period", "true_range")

    def __init__(self, period: int = 14) -> None:
        super().__init__()
        self.period = _check_period("ATR", "period", period)
        self._n = Decimal(self.period)
        self._n1 = Decimal(self.period - 1)
        self._prev_close: Decimal | None = None
        self._seed = _ZERO
        self.true_range: Decimal | None = None

    def _label(self) -> str:
        return f"ATR({self.period})"

    def update(self, high: Decimal, low: Decimal, close: Decimal) -> Decimal | None:
        for item in (high, low, close):
            if not isinstance(item, Decimal) or not item.is_finite():
                raise _bad_input(self._label(), item)
        if high < low:
            raise InvalidValue(f"{self._label()}.update", (high, low), "high is below low")
        prev = self._prev_close
        tr = high - low
        if prev is not None:
            up = abs(high - prev)
            down = abs(low - prev)
            if up > tr:
                tr = up
            if down > tr:
                tr = down
        self._prev_close = close
        self.true_range = tr
        self.count += 1
        current = self.value
        if current is not None:
            self.value = (current * self._n1 + tr) / self._n
        else:
            self._seed += tr
            if self.count == self.period:
                self.value = self._seed / self._n
        return self.value

    def update_candle(self, candle: _HasHLC) -> Decimal | None:
        """``update(candle.high, candle.low, candle.close)``."""
        return self.update(candle.high, candle.low, candle.close)

    def reset(self) -> None:
        super().reset()
        self._prev_close = None
        self._seed = _ZERO
        self.true_range = None


class MACD(Indicator):
    """Moving Average Convergence/Divergence. ``value`` is the MACD line; see ``signal`` and ``histogram``.

    ``update`` returns the MACD line once the slow EMA is ready; ``signal`` and
    ``histogram`` follow ``signal_period`` MACD values later.
    """

    __slots__ = ("_fast", "_signal", "_slow", "histogram", "signal")

    def __init__(self, fast: int = 12, slow: int = 26, signal: int = 9) -> None:
        super().__init__()
        _check_period("MACD", "fast", fast)
        _check_period("MACD", "slow", slow)
        _check_period("MACD", "signal", signal)
        if fast >= slow:
            raise InvalidValue("MACD.fast", fast, f"must be below slow ({slow})")
        self._fast = EMA(fast)
        self._slow = EMA(slow)
        self._signal = EMA(signal)
        self.signal: Decimal | None = None
        self.histogram: Decimal | None = None

    def _label(self) -> str:
        return f"MACD({self._fast.period},{self._slow.period},{self._signal.period})"

    def update(self, value: Decimal) -> Decimal | None:
        fast = self._fast.update(value)
        slow = self._slow.update(value)
        self.count += 1
        if slow is None or fast is None:
            return None
        line = fast - slow
        self.value = line
        signal = self._signal.update(line)
        if signal is not None:
            self.signal = signal
            self.histogram = line - signal
        return line

    def reset(self) -> None:
        super().reset()
        self._fast.reset()
        self._slow.reset()
        self._signal.reset()
        self.signal = None
        self.histogram = None


class Bollinger(Indicator):
    """Bollinger Bands: ``value``/``middle`` = SMA(period), ``upper``/``lower`` = middle ± k·σ (population σ).

    ``bandwidth`` is ``(upper - lower) / middle``; ``percent_b(price)`` where a price sits between the bands.
    """

    __slots__ = ("_std", "k", "lower", "middle", "upper")

    def __init__(self, period: int = 20, k: Decimal = _TWO) -> None:
        super().__init__()
        if not isinstance(k, Decimal | int) or isinstance(k, bool) or k <= 0:
            raise InvalidValue("Bollinger.k", k, "must be a positive Decimal")
        self._std = RollingStdDev(_check_period("Bollinger", "period", period))
        self.k = Decimal(k)
        self.middle: Decimal | None = None
        self.upper: Decimal | None = None
        self.lower: Decimal | None = None

    @property
    def period(self) -> int:
        return self._std.period

    @property
    def stddev(self) -> Decimal | None:
        return self._std.value

    def _label(self) -> str:
        return f"Bollinger({self.period},{self.k})"

    def update(self, value: Decimal) -> Decimal | None:
        std = self._std.update(value)
        self.count += 1
        if std is None:
            return None
        middle = self._std.mean
        assert middle is not None
        width = self.k * std
        self.middle = middle
        self.upper = middle + width
        self.lower = middle - width
        self.value = middle
        return middle

    @property
    def bandwidth(self) -> Decimal | None:
        if self.upper is None or self.lower is None or not self.middle:
            return None
        return (self.upper - self.lower) / self.middle

    def percent_b(self, price: Decimal) -> Decimal | None:
        """``(price - lower) / (upper - lower)``: 0 at the lower band, 1 at the upper (None if bands are flat)."""
        if self.upper is None or self.lower is None or self.upper == self.lower:
            return None
        return (price - self.lower) / (self.upper - self.lower)

    def reset(self) -> None:
        super().reset()
        self._std.reset()
        self.middle = self.upper = self.lower = None


class RateOfChange(Indicator):
    """Fractional change over ``period`` updates: ``x / x[period ago] - 1`` (e.g. ``0.05`` = +5 %)."""

    __slots__ = ("_window", "period")

    def __init__(self, period: int) -> None:
        super().__init__()
        self.period = _check_period("RateOfChange", "period", period)
        self._window: deque[Decimal] = deque()

    def _label(self) -> str:
        return f"RateOfChange({self.period})"

    def update(self, value: Decimal) -> Decimal | None:
        if not isinstance(value, Decimal) or not value.is_finite() or value <= _ZERO:
            raise InvalidValue(f"{self._label()}.update", value, "a positive finite Decimal is required")
        window = self._window
        window.append(value)
        self.count += 1
        if len(window) <= self.period:
            return None
        old = window.popleft()
        self.value = value / old - _ONE
        return self.value

    def reset(self) -> None:
        super().reset()
        self._window.clear()


class _HasHLC(Protocol):
    """Anything with ``high``, ``low`` and ``close`` Decimals (a Candle, a CandleEvent)."""

    @property
    def high(self) -> Decimal: ...
    @property
    def low(self) -> Decimal: ...
    @property
    def close(self) -> Decimal: ...
