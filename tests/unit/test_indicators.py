"""Incremental indicators against straightforward from-scratch reference computations."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cryptoj.errors import InvalidValue
from cryptoj.indicators import ATR, EMA, MACD, RSI, SMA, Bollinger, RateOfChange, RollingStdDev, RollingSum, SMACrossover
from cryptoj.model.candles import Candle

pytestmark = pytest.mark.unit

D = Decimal

prices = st.lists(
    st.decimals(min_value=D("0.01"), max_value=D("100000"), places=2, allow_nan=False, allow_infinity=False),
    min_size=1,
    max_size=120,
)
periods = st.integers(min_value=1, max_value=30)


# -- references: recompute from the whole history at every step ----------------------------


def ref_sma(xs: list[Decimal], n: int) -> list[Decimal | None]:
    return [sum(xs[i + 1 - n : i + 1], D(0)) / D(n) if i + 1 >= n else None for i in range(len(xs))]


def ref_ema(xs: list[Decimal], n: int) -> list[Decimal | None]:
    out: list[Decimal | None] = []
    alpha = D(2) / D(n + 1)
    ema: Decimal | None = None
    for i in range(len(xs)):
        if i + 1 < n:
            out.append(None)
            continue
        if i + 1 == n:
            ema = sum(xs[:n], D(0)) / D(n)
        else:
            assert ema is not None
            ema = ema + alpha * (xs[i] - ema)
        out.append(ema)
    return out


def ref_rsi(xs: list[Decimal], n: int) -> list[Decimal | None]:
    out: list[Decimal | None] = [None]
    for i in range(1, len(xs)):
        changes = [xs[j] - xs[j - 1] for j in range(1, i + 1)]
        if len(changes) < n:
            out.append(None)
            continue
        gains = [max(c, D(0)) for c in changes]
        losses = [max(-c, D(0)) for c in changes]
        ag = sum(gains[:n], D(0)) / D(n)
        al = sum(losses[:n], D(0)) / D(n)
        for g, lo in zip(gains[n:], losses[n:], strict=True):
            ag = (ag * D(n - 1) + g) / D(n)
            al = (al * D(n - 1) + lo) / D(n)
        if al == 0:
            out.append(D(50) if ag == 0 else D(100))
        else:
            out.append(D(100) * ag / (ag + al))  # == 100 - 100 / (1 + ag / al), one rounding
    return out


def ref_std(xs: list[Decimal], n: int, ddof: int = 0) -> list[Decimal | None]:
    out: list[Decimal | None] = []
    for i in range(len(xs)):
        if i + 1 < n:
            out.append(None)
            continue
        w = xs[i + 1 - n : i + 1]
        mean = sum(w, D(0)) / D(n)
        var = sum(((x - mean) ** 2 for x in w), D(0)) / D(n - ddof)
        out.append(var.sqrt())
    return out


def close_enough(a: Decimal | None, b: Decimal | None, tol: Decimal = D("1e-18")) -> bool:
    if a is None or b is None:
        return a is None and b is None
    scale = max(abs(a), abs(b), D(1))
    return abs(a - b) <= tol * scale


# -- SMA / RollingSum ------------------------------------------------------------------------------


@given(prices, periods)
@settings(max_examples=150, deadline=None)
def test_sma_equals_window_mean_exactly(xs: list[Decimal], n: int) -> None:
    sma = SMA(n)
    got = [sma.update(x) for x in xs]
    assert got == ref_sma(xs, n)  # exact: the running sum of 2-dp prices never rounds
    assert sma.ready == (len(xs) >= n)
    assert sma.count == len(xs)


@given(prices, periods)
@settings(max_examples=100, deadline=None)
def test_rolling_sum(xs: list[Decimal], n: int) -> None:
    rs = RollingSum(n)
    for i, x in enumerate(xs):
        got = rs.update(x)
        window = xs[max(0, i + 1 - n) : i + 1]
        assert rs.partial_sum == sum(window, D(0))
        assert got == (sum(window, D(0)) if i + 1 >= n else None)


def test_sma_long_series_does_not_drift() -> None:
    sma = SMA(50)
    xs = [D(10_000) + D(i % 97) / D(100) for i in range(20_000)]
    for x in xs:
        sma.update(x)
    assert sma.value == sum(xs[-50:], D(0)) / D(50)


def test_reset_forgets_everything() -> None:
    for ind in (SMA(3), EMA(3), RSI(3), RollingStdDev(3), RollingSum(3), MACD(2, 3, 2), Bollinger(3), RateOfChange(2)):
        for x in (D(1), D(2), D(3), D(5), D(4), D(6)):
            ind.update(x)
        assert ind.ready
        ind.reset()
        assert not ind.ready and ind.value is None and ind.count == 0
        assert ind.update(D(7)) is None
    atr = ATR(2)
    atr.update(D(2), D(1), D(1))
    atr.update(D(3), D(1), D(2))
    assert atr.ready
    atr.reset()
    assert atr.value is None and atr.true_range is None and atr.count == 0


# -- EMA / MACD ---------------------------------------------------------------------------------


@given(prices, periods)
@settings(max_examples=150, deadline=None)
def test_ema_follows_the_recurrence(xs: list[Decimal], n: int) -> None:
    ema = EMA(n)
    assert [ema.update(x) for x in xs] == ref_ema(xs, n)


def test_ema_known_values() -> None:
    ema = EMA(3)  # alpha = 0.5
    assert [ema.update(D(x)) for x in (1, 2, 3, 4, 8)] == [None, None, D(2), D(3), D("5.5")]


@given(st.lists(st.decimals(min_value=D("1"), max_value=D("1000"), places=2), min_size=30, max_size=80))
@settings(max_examples=60, deadline=None)
def test_macd_matches_ema_difference_and_signal(xs: list[Decimal]) -> None:
    macd = MACD(5, 12, 4)
    fast, slow = ref_ema(xs, 5), ref_ema(xs, 12)
    lines = [f - s if f is not None and s is not None else None for f, s in zip(fast, slow, strict=True)]
    ready_lines = [x for x in lines if x is not None]
    signals = ref_ema(ready_lines, 4)
    got_lines, got_signals, got_hist = [], [], []
    for x in xs:
        got_lines.append(macd.update(x))
        if macd.value is not None:
            got_signals.append(macd.signal)
            got_hist.append(macd.histogram)
    assert got_lines == lines
    assert got_signals == signals
    assert got_hist == [None if s is None else m - s for m, s in zip(ready_lines, signals, strict=True)]


def test_macd_rejects_fast_not_below_slow() -> None:
    with pytest.raises(InvalidValue, match=r"MACD\.fast.*below slow"):
        MACD(26, 12)


# -- RSI ------------------------------------------------------------------------------------------


@given(prices, st.integers(min_value=2, max_value=20))
@settings(max_examples=120, deadline=None)
def test_rsi_matches_wilder_reference(xs: list[Decimal], n: int) -> None:
    rsi = RSI(n)
    got = [rsi.update(x) for x in xs]
    assert got == ref_rsi(xs, n)
    for v in got:
        assert v is None or D(0) <= v <= D(100)


def test_rsi_edge_cases_and_known_value() -> None:
    flat = RSI(3)
    assert [flat.update(D(5)) for _ in range(4)][-1] == D(50)
    up = RSI(3)
    assert [up.update(D(x)) for x in (1, 2, 3, 4)][-1] == D(100)
    down = RSI(3)
    assert [down.update(D(x)) for x in (4, 3, 2, 1)][-1] == D(0)
    mixed = RSI(2)
    mixed.update(D(10))
    mixed.update(D(12))  # +2
    got = mixed.update(D(11))  # avg gain 1, avg loss 0.5: RS 2
    assert got is not None and abs(got - (D(100) - D(100) / (D(1) + D(1) / D("0.5")))) < D("1e-25")
    assert mixed.avg_gain == D(1) and mixed.avg_loss == D("0.5")
    assert RSI(3).avg_gain is None and RSI(3).avg_loss is None


# -- standard deviation / Bollinger -------------------------------------------------------


@given(prices, periods)
@settings(max_examples=120, deadline=None)
def test_rolling_std_matches_two_pass_reference(xs: list[Decimal], n: int) -> None:
    std = RollingStdDev(n)
    for got, want in zip((std.update(x) for x in xs), ref_std(xs, n), strict=True):
        assert close_enough(got, want, D("1e-12")), (got, want)


def test_rolling_std_add_then_compute() -> None:
    lazy, eager = RollingStdDev(3), RollingStdDev(3)
    for x in (D(1), D(2)):
        lazy.add(x)
        eager.update(x)
    assert not lazy.full and lazy.compute() is None
    for x in (D(4), D(8), D(5)):
        lazy.add(x)
        eager.update(x)
    assert lazy.value is None  # add() does not compute
    assert lazy.full and lazy.compute() == eager.value and lazy.mean == eager.mean == D(17) / D(3)


def test_rolling_sample_std() -> None:
    std = RollingStdDev(2, ddof=1)
    assert std.update(D(1)) is None
    assert std.update(D(3)) == D(2).sqrt()
    with pytest.raises(InvalidValue, match="ddof"):
        RollingStdDev(3, ddof=2)
    with pytest.raises(InvalidValue, match="period"):
        RollingStdDev(1, ddof=1)


@given(prices, st.integers(min_value=2, max_value=25))
@settings(max_examples=100, deadline=None)
def test_bollinger_bands(xs: list[Decimal], n: int) -> None:
    bb = Bollinger(n, D(2))
    means, stds = ref_sma(xs, n), ref_std(xs, n)
    for x, mean, sd in zip(xs, means, stds, strict=True):
        got = bb.update(x)
        assert got == mean  # the middle band is the exact window mean
        if mean is None:
            assert bb.upper is None and bb.lower is None
            continue
        assert sd is not None and bb.upper is not None and bb.lower is not None and bb.stddev is not None
        assert close_enough(bb.upper, mean + 2 * sd, D("1e-12"))
        assert close_enough(bb.lower, mean - 2 * sd, D("1e-12"))
        assert bb.lower <= mean <= bb.upper


def test_bollinger_bandwidth_and_percent_b() -> None:
    bb = Bollinger(2, D(1))
    assert bb.bandwidth is None and bb.percent_b(D(1)) is None
    bb.update(D(9))
    bb.update(D(11))  # mean 10, sigma 1
    assert (bb.lower, bb.middle, bb.upper) == (D(9), D(10), D(11))
    assert bb.bandwidth == D("0.2")
    assert bb.percent_b(D(10)) == D("0.5")
    assert bb.percent_b(D(11)) == D(1)
    flat = Bollinger(2)
    flat.update(D(5))
    flat.update(D(5))
    assert flat.percent_b(D(5)) is None
    assert flat.period == 2
    with pytest.raises(InvalidValue, match=r"Bollinger\.k"):
        Bollinger(20, D(0))


# -- ATR --------------------------------------------------------------------------------------------


def ref_atr(bars: list[tuple[Decimal, Decimal, Decimal]], n: int) -> list[Decimal | None]:
    trs = []
    for i, (h, lo, _c) in enumerate(bars):
        if i == 0:
            trs.append(h - lo)
        else:
            pc = bars[i - 1][2]
            trs.append(max(h - lo, abs(h - pc), abs(lo - pc)))
    out: list[Decimal | None] = []
    atr: Decimal | None = None
    for i in range(len(trs)):
        if i + 1 < n:
            out.append(None)
            continue
        atr = sum(trs[:n], D(0)) / D(n) if i + 1 == n else (atr * D(n - 1) + trs[i]) / D(n)  # type: ignore[operator]
        out.append(atr)
    return out


@st.composite
def bars(draw: st.DrawFn) -> list[tuple[Decimal, Decimal, Decimal]]:
    out = []
    for _ in range(draw(st.integers(min_value=1, max_value=60))):
        lo = draw(st.decimals(min_value=D("1"), max_value=D("500"), places=2))
        h = lo + draw(st.decimals(min_value=D("0"), max_value=D("50"), places=2))
        c = draw(st.decimals(min_value=lo, max_value=h, places=2))
        out.append((h, lo, c))
    return out


@given(bars(), periods)
@settings(max_examples=120, deadline=None)
def test_atr_matches_wilder_reference(bs: list[tuple[Decimal, Decimal, Decimal]], n: int) -> None:
    atr = ATR(n)
    assert [atr.update(h, lo, c) for h, lo, c in bs] == ref_atr(bs, n)


def test_atr_from_candles_and_gaps() -> None:
    atr = ATR(2)
    t = datetime(2024, 1, 1, tzinfo=UTC)
    assert atr.update_candle(Candle(t, D(10), D(11), D(9), D(10), D(1))) is None
    assert atr.true_range == D(2)
    # a gap up: true range reaches back to the previous close
    assert atr.update_candle(Candle(t, D(15), D(16), D(15), D(16), D(1))) == (D(2) + D(6)) / D(2)
    assert atr.true_range == D(6)
    atr.update(D(16), D(12), D(13))  # gap down below previous close: |low - prev_close| = 4 = high - low
    assert atr.true_range == D(4)
    with pytest.raises(InvalidValue, match="high is below low"):
        atr.update(D(1), D(2), D(1))


# -- rate of change -------------------------------------------------------------------------------


def test_rate_of_change() -> None:
    roc = RateOfChange(2)
    assert roc.update(D(100)) is None
    assert roc.update(D(105)) is None
    assert roc.update(D(110)) == D("0.1")
    assert roc.update(D(84)) == D("-0.2")
    with pytest.raises(InvalidValue, match="positive"):
        roc.update(D(0))


# -- input checking --------------------------------------------------------------------------------


@pytest.mark.parametrize("factory", [SMA, EMA, RSI, RollingSum, RollingStdDev, Bollinger, RateOfChange, ATR])
def test_bad_periods_are_named(factory: type) -> None:
    for bad in (0, -3, True, 2.5, "5"):
        with pytest.raises(InvalidValue, match="period"):
            factory(bad)


@pytest.mark.parametrize("ind", [SMA(2), EMA(2), RSI(2), RollingSum(2), RollingStdDev(2), Bollinger(2), MACD(2, 3, 2)])
def test_floats_and_nan_are_refused(ind: object) -> None:
    for bad in (1.5, D("NaN"), D("Infinity"), "1"):
        with pytest.raises(InvalidValue, match="finite Decimal"):
            ind.update(bad)  # type: ignore[attr-defined]
    with pytest.raises(InvalidValue, match="finite Decimal"):
        ATR(2).update(D(1), 1.0, D(1))  # type: ignore[arg-type]


def test_repr_names_the_indicator() -> None:
    sma = SMA(3)
    sma.update(D(1))
    assert repr(sma) == "SMA(3)(value=None, count=1)"
    assert "MACD(12,26,9)" in repr(MACD())
    assert "Bollinger(20,2)" in repr(Bollinger())
    for ind in (EMA(2), RSI(), ATR(), RollingSum(2), RollingStdDev(2), RateOfChange(3)):
        assert type(ind).__name__ in repr(ind)


# -- SMACrossover (exact integer sums) ----------------------------------------------------------------


def ref_signs(xs: list[Decimal], fast: int, slow: int) -> list[int]:
    """The sign a Decimal SMA(fast) vs SMA(slow) comparison gives (equal keeps the previous; 0 while warming)."""
    f, s = SMA(fast), SMA(slow)
    sign = 0
    out = []
    for x in xs:
        a, b = f.update(x), s.update(x)
        if a is not None and b is not None:
            sign = 1 if a > b else -1 if a < b else sign
        out.append(sign)
    return out


@given(prices, st.integers(min_value=1, max_value=6), st.integers(min_value=0, max_value=8))
@settings(max_examples=150, deadline=None)
def test_sma_crossover_equals_decimal_sma_comparison(xs: list[Decimal], fast: int, extra: int) -> None:
    slow = fast + extra
    by_decimal = SMACrossover(fast, slow)
    by_units = SMACrossover(fast, slow)
    got = [by_decimal.update(x) for x in xs]
    got_units = [by_units.update_units(int(x.scaleb(2)), -2) for x in xs]
    expected = ref_signs(xs, fast, slow)
    assert got == expected
    assert got_units == expected
    if len(xs) >= slow:
        assert by_decimal.fast == sum(xs[-fast:], D(0)) / fast
        assert by_units.slow == sum(xs[-slow:], D(0)) / slow
    else:
        assert by_decimal.fast is None and by_decimal.slow is None and not by_decimal.ready


def test_sma_crossover_refines_its_unit_when_a_value_needs_more_places() -> None:
    cross = SMACrossover(2, 3)
    assert [cross.update(D(x)) for x in ("10", "11", "12")] == [0, 0, 1]
    assert cross.update(D("9.995")) == -1  # more decimals: the sums are rescaled, nothing is rounded
    assert cross.fast == (D("12") + D("9.995")) / 2
    assert cross.slow == (D("11") + D("12") + D("9.995")) / 3
    assert cross.update_units(1_000_000, -5) == -1  # 10.00000 in a coarser unit than the state's: converted up
    assert cross.fast == (D("9.995") + D(10)) / 2
    # equal averages keep the previous sign: touching is not crossing
    flat = SMACrossover(1, 2)
    assert [flat.update(D(x)) for x in ("5", "6", "6", "5", "5")] == [0, 1, 1, -1, -1]
    flat.reset()
    assert flat.sign == 0 and flat.fast is None
    with pytest.raises(InvalidValue):
        SMACrossover(5, 3)
    with pytest.raises(InvalidValue):
        flat.update(D("NaN"))


@given(
    prices,
    st.integers(min_value=1, max_value=5),
    st.integers(min_value=0, max_value=6),
    st.lists(st.sampled_from(["bar", "bar", "bar", "decimal", "skip", "other"]), min_size=1, max_size=200),
)
@settings(max_examples=200, deadline=None)
def test_sma_crossover_update_bar_reads_the_column_and_matches_any_feed(
    xs: list[Decimal], fast: int, extra: int, plan: list[str]
) -> None:
    from cryptoj.backtest.data import BarSeries, BarView

    slow = fast + extra
    n = len(xs)
    series = BarSeries("X-USD", 60, [60 * i for i in range(n)], xs, xs, xs, xs, [D(1)] * n)
    other = BarSeries("Y-USD", 60, [60 * i for i in range(n)], xs[::-1], xs[::-1], xs[::-1], xs[::-1], [D(1)] * n)
    units, other_units = series.close_units(2), other.close_units(2)
    view, other_view = BarView(series, 0, units), BarView(other, 0, other_units)
    cross = SMACrossover(fast, slow)
    fed: list[Decimal] = []
    got = []
    i = 0
    for step in plan:
        if i >= n:
            break
        if step == "skip":  # a bar not fed: the next one is not the one expected
            i += 1
            continue
        if step == "decimal":
            value = xs[i]
            got.append(cross.update(value))
        elif step == "other":
            other_view.index = i
            value = other.close[i]
            got.append(cross.update_bar(other_view))
        else:
            view.index = i
            value = xs[i]
            got.append(cross.update_bar(view))
        fed.append(value)
        i += 1
        if len(fed) >= slow:
            assert cross.fast == sum(fed[-fast:], D(0)) / fast
            assert cross.slow == sum(fed[-slow:], D(0)) / slow
    assert got == ref_signs(fed, fast, slow)


def test_sma_crossover_update_bar_takes_candles_and_long_runs_use_the_column() -> None:
    from cryptoj.backtest.data import BarView, synthetic_bars

    series = synthetic_bars(seed=11, bars=400)
    view = BarView(series, 0, series.close_units(2))
    by_bar, by_candle = SMACrossover(5, 12), SMACrossover(5, 12)
    for i in range(len(series)):
        view.index = i
        assert by_bar.update_bar(view) == by_candle.update_bar(series.candle(i))
    assert by_bar._colmode and not by_candle._colmode  # the backtest path reads the column, no window of its own
    assert by_bar.fast == by_candle.fast and by_bar.slow == by_candle.slow
    assert by_bar.update(D("1.005")) == by_candle.update(D("1.005"))  # leaving the column: the window is rebuilt
    assert by_bar.fast == by_candle.fast and by_bar.slow == by_candle.slow
    by_bar.reset()
    assert by_bar._col is None and by_bar.sign == 0 and not by_bar.ready


def test_sma_crossover_averages_text_prints_as_fast_and_slow_at_the_time_asked() -> None:

    cross = SMACrossover(2, 3)
    cross.update(Decimal("1.01"))
    fast, slow = cross.averages_text()
    assert (str(fast), repr(slow)) == ("None", "None")  # not ready, as cross.fast / cross.slow
    for value in ("2.02", "3.04"):
        cross.update(Decimal(value))
    fast, slow = cross.averages_text()
    assert (str(fast), str(slow)) == (str(cross.fast), str(cross.slow))
    assert repr(fast) == str(cross.fast) and fast.value == cross.fast
    cross.update(Decimal("9.99"))  # later updates do not change the text already taken
    assert str(fast) != str(cross.fast) and str(slow) == "2.023333333333333333333333333"
