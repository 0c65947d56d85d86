"""Unit and property tests for candles and candle aggregation."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cryptoj.errors import InvalidValue
from cryptoj.model.candles import EPOCH, Candle, CandleAggregator, Timeframe, bucket_start, bucket_start_ns

pytestmark = pytest.mark.unit

D = Decimal
T0 = datetime(2024, 4, 4, 12, 0, tzinfo=UTC)


def at(minutes: float = 0, seconds: float = 0, micros: int = 0) -> datetime:
    return T0 + timedelta(minutes=minutes, seconds=seconds, microseconds=micros)


# -- Timeframe ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tf", "seconds", "granularity"),
    [
        (Timeframe.ONE_MINUTE, 60, "ONE_MINUTE"),
        (Timeframe.FIVE_MINUTE, 300, "FIVE_MINUTE"),
        (Timeframe.FIFTEEN_MINUTE, 900, "FIFTEEN_MINUTE"),
        (Timeframe.ONE_HOUR, 3600, "ONE_HOUR"),
        (Timeframe.SIX_HOUR, 21600, "SIX_HOUR"),
        (Timeframe.ONE_DAY, 86400, "ONE_DAY"),
    ],
)
def test_timeframe_seconds_and_granularity(tf: Timeframe, seconds: int, granularity: str) -> None:
    assert tf.seconds == seconds
    assert tf.delta == timedelta(seconds=seconds)
    assert tf.granularity == granularity
    assert Timeframe.from_granularity(granularity) is tf
    assert Timeframe.parse(granularity) is tf
    assert Timeframe.parse(granularity.lower()) is tf
    assert Timeframe.parse(tf.value) is tf
    assert Timeframe.parse(f" {tf.value.upper()} ") is tf


@pytest.mark.parametrize("bad", ["2m", "", "THIRTY_MINUTE", 60, None])
def test_timeframe_parse_rejects_unknown(bad: object) -> None:
    with pytest.raises(InvalidValue, match="timeframe"):
        Timeframe.parse(bad)  # type: ignore[arg-type]


def test_from_granularity_rejects_unsupported() -> None:
    with pytest.raises(InvalidValue, match="granularity"):
        Timeframe.from_granularity("TWO_HOUR")


# -- bucket_start ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("ts", "tf", "expected"),
    [
        (datetime(2024, 4, 4, 12, 5, 0, tzinfo=UTC), Timeframe.FIVE_MINUTE, datetime(2024, 4, 4, 12, 5, tzinfo=UTC)),
        (datetime(2024, 4, 4, 12, 4, 59, 999999, tzinfo=UTC), Timeframe.FIVE_MINUTE, datetime(2024, 4, 4, 12, 0, tzinfo=UTC)),
        (datetime(2024, 4, 4, 12, 5, 0, 1, tzinfo=UTC), Timeframe.FIVE_MINUTE, datetime(2024, 4, 4, 12, 5, tzinfo=UTC)),
        (datetime(2024, 4, 4, 12, 14, 59, tzinfo=UTC), Timeframe.FIFTEEN_MINUTE, datetime(2024, 4, 4, 12, 0, tzinfo=UTC)),
        (datetime(2024, 4, 4, 12, 59, 59, tzinfo=UTC), Timeframe.ONE_HOUR, datetime(2024, 4, 4, 12, 0, tzinfo=UTC)),
        (datetime(2024, 4, 4, 17, 59, 59, tzinfo=UTC), Timeframe.SIX_HOUR, datetime(2024, 4, 4, 12, 0, tzinfo=UTC)),
        (datetime(2024, 4, 4, 18, 0, tzinfo=UTC), Timeframe.SIX_HOUR, datetime(2024, 4, 4, 18, 0, tzinfo=UTC)),
        (datetime(2024, 4, 4, 23, 59, 59, 999999, tzinfo=UTC), Timeframe.ONE_DAY, datetime(2024, 4, 4, tzinfo=UTC)),
        (datetime(2024, 4, 5, tzinfo=UTC), Timeframe.ONE_DAY, datetime(2024, 4, 5, tzinfo=UTC)),
        # another offset: 14:07 at +02:00 is 12:07 UTC
        (
            datetime(2024, 4, 4, 14, 7, tzinfo=timezone(timedelta(hours=2))),
            Timeframe.FIVE_MINUTE,
            datetime(2024, 4, 4, 12, 5, tzinfo=UTC),
        ),
        # before the epoch still floors
        (datetime(1969, 12, 31, 23, 59, 30, tzinfo=UTC), Timeframe.ONE_MINUTE, datetime(1969, 12, 31, 23, 59, tzinfo=UTC)),
    ],
)
def test_bucket_start_edges(ts: datetime, tf: Timeframe, expected: datetime) -> None:
    result = bucket_start(ts, tf)
    assert result == expected
    assert result.utcoffset() == timedelta(0)


def test_bucket_start_requires_aware_datetime() -> None:
    with pytest.raises(InvalidValue, match="timezone-aware"):
        bucket_start(datetime(2024, 1, 1, 12, 0), Timeframe.ONE_MINUTE)
    with pytest.raises(InvalidValue, match="expected a datetime"):
        bucket_start("2024-01-01", Timeframe.ONE_MINUTE)  # type: ignore[arg-type]


def test_bucket_start_ns_matches_datetime_version() -> None:
    ts = datetime(2024, 4, 4, 12, 9, 59, 123456, tzinfo=UTC)
    ns = (ts - EPOCH) // timedelta(microseconds=1) * 1000 + 789
    start_ns = bucket_start_ns(ns, Timeframe.FIVE_MINUTE)
    assert EPOCH + timedelta(microseconds=start_ns // 1000) == bucket_start(ts, Timeframe.FIVE_MINUTE)
    assert bucket_start_ns(start_ns, Timeframe.FIVE_MINUTE) == start_ns


@settings(max_examples=300, deadline=None)
@given(
    st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)),
    st.sampled_from(list(Timeframe)),
)
def test_property_bucket_contains_ts_and_is_aligned(ts: datetime, tf: Timeframe) -> None:
    start = bucket_start(ts, tf)
    assert start <= ts < start + tf.delta
    assert (start - EPOCH) % tf.delta == timedelta(0)
    assert bucket_start(start, tf) == start  # the edge belongs to its own bucket
    assert bucket_start(start - timedelta(microseconds=1), tf) == start - tf.delta


# -- Candle -----------------------------------------------------------------------


def candle(start: datetime, o: str, h: str, low: str, c: str, v: str, trades: int | None = None) -> Candle:
    return Candle(start, D(o), D(h), D(low), D(c), D(v), trades)


def test_candle_end_and_fields() -> None:
    c = candle(at(5), "10", "12", "9", "11", "3", trades=4)
    assert c.end(Timeframe.FIVE_MINUTE) == at(10)
    assert c.trades == 4


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"start": datetime(2024, 1, 1)}, "timezone-aware"),
        ({"open": 10.0}, "open"),
        ({"close": D("NaN")}, "close"),
        ({"low": D("0"), "open": D("0"), "close": D("0")}, "low"),
        ({"volume": D("-1")}, "volume"),
        ({"high": D("10.5")}, "high/low"),
        ({"low": D("10.5")}, "high/low"),
        ({"trades": -1}, "trades"),
    ],
)
def test_candle_validation(kwargs: dict, match: str) -> None:
    base = {"start": at(), "open": D("10"), "high": D("12"), "low": D("9"), "close": D("11"), "volume": D("1"), "trades": None}
    base.update(kwargs)
    with pytest.raises(InvalidValue, match=match):
        Candle(**base)


def test_candle_from_coinbase_rest_fixture(coinbase_fixtures: Path) -> None:
    data = json.loads((coinbase_fixtures / "http_candles.json").read_text())
    candles = [Candle.from_coinbase(rec) for rec in data["candles"]]
    first = data["candles"][0]
    assert candles[0].start == EPOCH + timedelta(seconds=int(first["start"]))
    assert candles[0].open == D(first["open"]) and candles[0].close == D(first["close"])
    assert candles[0].volume == D(first["volume"])
    assert candles[0].start - candles[1].start == Timeframe.ONE_HOUR.delta  # newest first, 1h apart
    for c in candles:
        assert bucket_start(c.start, Timeframe.ONE_HOUR) == c.start


def test_candle_from_coinbase_ws_fixture(coinbase_fixtures: Path) -> None:
    data = json.loads((coinbase_fixtures / "ws_candles.json").read_text())
    rec = data["events"][0]["candles"][0]
    c = Candle.from_coinbase(rec)
    assert c.high == D(rec["high"]) and c.low == D(rec["low"])
    assert bucket_start(c.start, Timeframe.FIVE_MINUTE) == c.start


@pytest.mark.parametrize(
    ("rec", "match"),
    [
        ({"start": "abc", "open": "1", "high": "1", "low": "1", "close": "1", "volume": "1"}, "start"),
        ({"open": "1", "high": "1", "low": "1", "close": "1", "volume": "1"}, "start"),
        ({"start": "60", "open": "x", "high": "1", "low": "1", "close": "1", "volume": "1"}, "open"),
        ({"start": "60", "open": "1", "high": "1", "low": "1", "close": "1"}, "volume"),
    ],
)
def test_candle_from_coinbase_rejects_bad_records(rec: dict, match: str) -> None:
    with pytest.raises(InvalidValue, match=match):
        Candle.from_coinbase(rec)


# -- aggregation ------------------------------------------------------------------


def test_aggregator_builds_ohlcv_and_closes_on_next_bucket() -> None:
    agg = CandleAggregator(Timeframe.FIVE_MINUTE)
    assert agg.current() is None
    assert agg.add_trade(D("100"), D("1"), at(0, 1)) == []
    assert agg.add_trade(D("105"), D("0.5"), at(1)) == []
    assert agg.add_trade(D("95"), D("2"), at(2)) == []
    assert agg.add_trade(D("101"), D("1"), at(4, 59, 999999)) == []
    current = agg.current()
    assert current == candle(at(0), "100", "105", "95", "101", "4.5", trades=4)
    closed = agg.add_trade(D("102"), D("1"), at(5))  # exactly at the edge: the 12:05 bucket
    assert closed == [current]
    assert agg.current() == candle(at(5), "102", "102", "102", "102", "1", trades=1)
    assert agg.history() == [current]


def test_aggregator_does_not_invent_empty_buckets() -> None:
    agg = CandleAggregator(Timeframe.ONE_MINUTE)
    agg.add_trade(D("10"), D("1"), at(0))
    closed = agg.add_trade(D("11"), D("1"), at(7, 30))
    assert [c.start for c in closed] == [at(0)]
    current = agg.current()
    assert current is not None and current.start == at(7)
    assert [c.start for c in agg.history()] == [at(0)]


def test_aggregator_merges_out_of_order_trades_within_bucket_by_time() -> None:
    agg = CandleAggregator(Timeframe.ONE_MINUTE)
    agg.add_trade(D("12"), D("1"), at(0, 30))
    agg.add_trade(D("10"), D("1"), at(0, 10))  # earlier: becomes the open, not the close
    agg.add_trade(D("13"), D("1"), at(0, 50))
    agg.add_trade(D("11"), D("1"), at(0, 40))  # earlier than the latest: not the close
    assert agg.current() == candle(at(0), "10", "13", "10", "13", "4", trades=4)


def test_aggregator_counts_late_trades_by_default() -> None:
    agg = CandleAggregator(Timeframe.ONE_MINUTE)
    agg.add_trade(D("10"), D("1"), at(1))
    before = agg.current()
    assert agg.add_trade(D("99"), D("5"), at(0, 59)) == []
    assert agg.late_trades == 1
    assert agg.current() == before


def test_aggregator_rejects_late_trades_when_asked() -> None:
    agg = CandleAggregator(Timeframe.ONE_MINUTE, reject_late=True)
    agg.add_trade(D("10"), D("1"), at(1))
    with pytest.raises(InvalidValue, match="older than the current 1m bucket"):
        agg.add_trade(D("99"), D("5"), at(0, 59))
    assert agg.late_trades == 0


def test_trades_for_a_flushed_bucket_are_late() -> None:
    agg = CandleAggregator(Timeframe.ONE_MINUTE)
    agg.add_trade(D("10"), D("1"), at(0, 10))
    flushed = agg.flush()
    assert flushed is not None and flushed.close == D("10")
    assert agg.current() is None
    assert agg.flush() is None
    assert agg.add_trade(D("11"), D("1"), at(0, 20)) == []
    assert agg.late_trades == 1
    assert agg.add_trade(D("12"), D("1"), at(1)) == []  # a new bucket starts without closing anything
    assert agg.current() is not None


def test_close_if_due_uses_the_given_clock() -> None:
    agg = CandleAggregator(Timeframe.ONE_MINUTE)
    assert agg.close_if_due(at(5)) is None  # nothing to close
    agg.add_trade(D("10"), D("1"), at(0, 10))
    assert agg.close_if_due(at(0, 59, 999999)) is None
    closed = agg.close_if_due(at(1))
    assert closed is not None and closed.start == at(0)
    assert agg.current() is None
    with pytest.raises(InvalidValue, match="timezone-aware"):
        agg.close_if_due(datetime(2024, 1, 1))


def test_zero_size_trade_is_accepted_and_counts() -> None:
    agg = CandleAggregator(Timeframe.ONE_MINUTE)
    agg.add_trade(D("10"), D("0"), at(0))
    c = agg.current()
    assert c is not None and c.volume == 0 and c.trades == 1


@pytest.mark.parametrize(
    ("price", "size", "time", "match"),
    [
        (D("0"), D("1"), T0, "trade.price"),
        (D("-1"), D("1"), T0, "trade.price"),
        (10.0, D("1"), T0, "trade.price"),
        (D("NaN"), D("1"), T0, "trade.price"),
        (D("1"), D("-1"), T0, "trade.size"),
        (D("1"), D("Infinity"), T0, "trade.size"),
        (D("1"), D("1"), datetime(2024, 1, 1), "timezone-aware"),
    ],
)
def test_add_trade_rejects_bad_input(price: Decimal, size: Decimal, time: datetime, match: str) -> None:
    agg = CandleAggregator(Timeframe.ONE_MINUTE)
    with pytest.raises(InvalidValue, match=match):
        agg.add_trade(price, size, time)
    assert agg.current() is None


def test_constructor_validation() -> None:
    with pytest.raises(InvalidValue, match="timeframe"):
        CandleAggregator("1m")  # type: ignore[arg-type]
    with pytest.raises(InvalidValue, match="max_history"):
        CandleAggregator(Timeframe.ONE_MINUTE, max_history=-1)


def test_history_is_bounded_oldest_dropped() -> None:
    agg = CandleAggregator(Timeframe.ONE_MINUTE, max_history=2)
    for i in range(5):
        agg.add_trade(D(10 + i), D("1"), at(i))
    assert [c.start for c in agg.history()] == [at(2), at(3)]
    assert "closed=2" in repr(agg) and "1m" in repr(agg)


# -- backfill ---------------------------------------------------------------------


def test_add_candle_replaces_a_closed_bucket() -> None:
    agg = CandleAggregator(Timeframe.ONE_MINUTE)
    agg.add_trade(D("10"), D("1"), at(0, 30))
    agg.add_trade(D("11"), D("1"), at(1, 30))
    rest = candle(at(0), "9", "12", "8", "10", "50")
    assert agg.add_candle(rest) == []
    assert agg.history() == [rest]
    assert agg.current() is not None and agg.current().start == at(1)  # type: ignore[union-attr]


def test_add_candle_older_than_everything_goes_to_history() -> None:
    agg = CandleAggregator(Timeframe.ONE_MINUTE)
    agg.add_trade(D("10"), D("1"), at(5))
    old = [candle(at(i), "10", "10", "10", "10", "1") for i in (3, 1, 2)]  # any order
    for c in old:
        assert agg.add_candle(c) == []
    assert [c.start for c in agg.history()] == [at(1), at(2), at(3)]


def test_add_candle_merges_into_the_current_bucket() -> None:
    agg = CandleAggregator(Timeframe.FIVE_MINUTE)
    agg.add_trade(D("100"), D("1"), at(2))
    agg.add_trade(D("104"), D("1"), at(3))
    rest = candle(at(0), "98", "103", "97", "101", "10", trades=20)
    assert agg.add_candle(rest) == []
    # open from the exchange, extremes of both, larger volume/trades, our latest trade as close
    assert agg.current() == candle(at(0), "98", "104", "97", "104", "10", trades=20)
    agg.add_trade(D("99"), D("1"), at(1))  # earlier than the exchange's open: open stays the exchange's
    assert agg.current() == candle(at(0), "98", "104", "97", "104", "11", trades=21)


def test_add_candle_merge_keeps_our_count_when_exchange_has_none() -> None:
    agg = CandleAggregator(Timeframe.ONE_MINUTE)
    agg.add_trade(D("10"), D("1"), at(0))
    agg.add_candle(candle(at(0), "10", "10", "10", "10", "0.5"))
    c = agg.current()
    assert c is not None and c.trades == 1 and c.volume == D("1")


def test_add_candle_for_a_later_bucket_closes_current_and_seeds_new_one() -> None:
    agg = CandleAggregator(Timeframe.ONE_MINUTE)
    agg.add_trade(D("10"), D("1"), at(0))
    rest = candle(at(3), "20", "22", "19", "21", "7")
    closed = agg.add_candle(rest)
    assert [c.start for c in closed] == [at(0)]
    assert agg.current() == rest
    agg.add_trade(D("23"), D("1"), at(3, 30))  # live trades continue the seeded candle
    assert agg.current() == candle(at(3), "20", "23", "19", "23", "8")


def test_backfill_into_empty_aggregator_then_live_trades() -> None:
    agg = CandleAggregator(Timeframe.ONE_MINUTE)
    assert agg.add_candle(candle(at(0), "10", "11", "9", "10", "1", trades=2)) == []
    closed = agg.add_candle(candle(at(1), "10", "12", "10", "12", "1", trades=3))
    assert [c.start for c in closed] == [at(0)]
    c = agg.current()
    assert c is not None and c.trades == 3
    agg.add_trade(D("13"), D("1"), at(1, 30))
    c = agg.current()
    assert c is not None and c.trades == 4 and c.close == D("13")


def test_add_candle_rejects_misaligned_start() -> None:
    agg = CandleAggregator(Timeframe.FIVE_MINUTE)
    with pytest.raises(InvalidValue, match="bucket boundary"):
        agg.add_candle(candle(at(1), "10", "10", "10", "10", "1"))


# -- properties -------------------------------------------------------------------

trade_st = st.tuples(
    st.integers(min_value=1, max_value=1000).map(lambda i: Decimal(i) / 10),
    st.integers(min_value=0, max_value=1000).map(lambda i: Decimal(i) / 100),
    st.integers(min_value=0, max_value=3 * 3600 * 1000).map(lambda ms: T0 + timedelta(milliseconds=ms)),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(trade_st, max_size=80), st.sampled_from([Timeframe.ONE_MINUTE, Timeframe.FIVE_MINUTE, Timeframe.ONE_HOUR]))
def test_property_time_ordered_trades_match_brute_force(trades: list[tuple[Decimal, Decimal, datetime]], tf: Timeframe) -> None:
    trades = sorted(trades, key=lambda t: t[2])
    agg = CandleAggregator(tf, max_history=10_000)
    emitted: list[Candle] = []
    for price, size, time in trades:
        emitted.extend(agg.add_trade(price, size, time))
    last = agg.flush()
    if last is not None:
        emitted.append(last)
    groups: dict[datetime, list[tuple[Decimal, Decimal, datetime]]] = {}
    for t in trades:
        groups.setdefault(bucket_start(t[2], tf), []).append(t)
    expected = [
        Candle(
            start,
            group[0][0],
            max(p for p, _, _ in group),
            min(p for p, _, _ in group),
            group[-1][0],
            sum((s for _, s, _ in group), Decimal(0)),
            len(group),
        )
        for start, group in sorted(groups.items())
    ]
    assert emitted == expected
    assert agg.history() == expected
    assert agg.late_trades == 0
    assert sum((c.volume for c in emitted), Decimal(0)) == sum((s for _, s, _ in trades), Decimal(0))


@settings(max_examples=200, deadline=None)
@given(st.lists(trade_st, max_size=80), st.randoms(use_true_random=False))
def test_property_any_arrival_order_accounts_for_every_trade(
    trades: list[tuple[Decimal, Decimal, datetime]], rnd: object
) -> None:
    rnd.shuffle(trades)  # type: ignore[attr-defined]
    agg = CandleAggregator(Timeframe.FIVE_MINUTE, max_history=10_000)
    emitted: list[Candle] = []
    for price, size, time in trades:
        emitted.extend(agg.add_trade(price, size, time))
    last = agg.flush()
    if last is not None:
        emitted.append(last)
    starts = [c.start for c in emitted]
    assert starts == sorted(set(starts))  # strictly increasing: never two candles for one bucket
    assert sum(c.trades or 0 for c in emitted) + agg.late_trades == len(trades)
    assert agg.history() == emitted
    for c in emitted:
        in_bucket = [t for t in trades if bucket_start(t[2], Timeframe.FIVE_MINUTE) == c.start]
        assert min(p for p, _, _ in in_bucket) <= c.low <= c.high <= max(p for p, _, _ in in_bucket)
