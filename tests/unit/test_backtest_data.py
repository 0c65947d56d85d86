"""Bar data: CSV / Parquet / JSON loading, time detection, validation errors naming the row, gaps, resampling, recordings."""

from __future__ import annotations

import gzip
import logging
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cryptoj.backtest.data import (
    Bar,
    BarSeries,
    BarView,
    Gap,
    bars_from_recording,
    load_bars,
    parse_time_value,
    resample,
    synthetic_bars,
    trades_from_recording,
    write_bars,
)
from cryptoj.errors import DataError, InvalidValue
from cryptoj.model.candles import Candle, Timeframe

pytestmark = pytest.mark.unit

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z
HEADER = "time,open,high,low,close,volume\n"


def write(tmp_path: Path, text: str, name: str = "BTC-USD.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def rows(times: list[object]) -> str:
    return "".join(f"{t},100.5,101,99.25,100.75,3.5\n" for t in times)


@pytest.mark.parametrize(
    ("times", "kind"),
    [
        ([T0, T0 + 60, T0 + 120], "seconds"),
        ([T0 * 1000, (T0 + 60) * 1000, (T0 + 120) * 1000], "milliseconds"),
        (["2026-01-01T00:00:00Z", "2026-01-01T00:01:00Z", "2026-01-01T00:02:00+00:00"], "iso"),
        (["2026-01-01 00:00:00", "2026-01-01 00:01:00", "2026-01-01 00:02:00"], "naive iso = UTC"),
    ],
)
def test_csv_time_kinds_are_detected(tmp_path: Path, times: list[object], kind: str) -> None:
    series = load_bars(write(tmp_path, HEADER + rows(times)))
    assert series.times == [T0, T0 + 60, T0 + 120], kind
    assert series.step == 60
    assert series.timeframe is Timeframe.ONE_MINUTE
    assert series.product_id == "BTC-USD"
    assert series.close == [Decimal("100.75")] * 3
    assert series.gaps == []
    c = series.candle(1)
    assert isinstance(c, Candle)
    assert c.start == datetime(2026, 1, 1, 0, 1, tzinfo=UTC)
    assert (c.open, c.high, c.low, c.close, c.volume) == (
        Decimal("100.5"),
        Decimal("101"),
        Decimal("99.25"),
        Decimal("100.75"),
        Decimal("3.5"),
    )


def test_header_aliases_extra_columns_and_blank_lines(tmp_path: Path) -> None:
    text = f"Timestamp,Open,High,Low,Close,Volume,Trades\n{T0},1,2,1,2,5,7\n\n{T0 + 60},2,3,2,3,6,8\n"
    series = load_bars(write(tmp_path, text, "x.csv"), product_id="ETH-USD")
    assert series.product_id == "ETH-USD"
    assert series.close == [Decimal(2), Decimal(3)]


@pytest.mark.parametrize(
    ("body", "where", "why"),
    [
        (rows([T0, T0 + 60, T0 + 60]), "row 3.time", "duplicate time (same as row 2)"),
        (rows([T0, T0 + 120, T0 + 60]), "row 3.time", "unsorted"),
        (f"{T0},100,101,99,abc,1\n", "row 1.close", "not a decimal number"),
        (f"{T0},100,101,99,NaN,1\n", "row 1.close", "must be finite"),
        (f"{T0},100,99,98,100,1\n", "row 1.high/low", "do not bound"),
        (f"{T0},100,101,0,100,1\n", "row 1.low", "positive"),
        (f"{T0},100,101,99,100,-1\n", "row 1.volume", "must not be negative"),
        (f"{T0},100,101\n", "row 1", "expected at least 6 columns"),
        (f"{T0}\n{T0 + 60},1,1,1,1,1\n", "row 1", "expected at least 6 columns"),
        (f"{T0},1,1,1,1,1\n{(T0 + 60) * 1000},1,1,1,1,1\n", "row 2.time", "looks like milliseconds"),
        (f"2026-01-01T00:00:00Z,1,1,1,1,1\n{T0 + 60},1,1,1,1,1\n", "row 2.time", "ISO"),
        (f"{T0 * 1000 + 5},1,1,1,1,1\n", "row 1.time", "whole second"),
        ("2026-01-01T00:00:00.5Z,1,1,1,1,1\n", "row 1.time", "whole second"),
        ("not-a-time,1,1,1,1,1\n", "row 1.time", "Invalid isoformat"),
        (f"{10**15},1,1,1,1,1\n", "row 1.time", "too large"),
        (rows([T0, T0 + 60, T0 + 150]), "row 3.time", "off the 60s bar grid"),
    ],
)
def test_bad_rows_name_the_row(tmp_path: Path, body: str, where: str, why: str) -> None:
    path = write(tmp_path, HEADER + body)
    with pytest.raises(InvalidValue) as info:
        load_bars(path)
    assert f"{path} {where}" in str(info.value)
    assert why in str(info.value)


def test_missing_columns_and_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no time column"):
        load_bars(write(tmp_path, "when,open,high,low,close,volume\n"))
    with pytest.raises(DataError, match="missing column 'volume'"):
        load_bars(write(tmp_path, "time,open,high,low,close\n"))
    with pytest.raises(DataError, match="empty file"):
        load_bars(write(tmp_path, ""))
    with pytest.raises(DataError, match="no bars"):
        load_bars(write(tmp_path, HEADER))
    with pytest.raises(DataError, match="no such file"):
        load_bars(tmp_path / "absent.csv")
    with pytest.raises(DataError, match="unknown bar file type"):
        load_bars(write(tmp_path, "x", "bars.txt"))


def test_gaps_are_reported_not_filled(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path, HEADER + rows([T0, T0 + 60, T0 + 240, T0 + 300, T0 + 600]))
    with caplog.at_level(logging.WARNING):
        series = load_bars(path)
    assert len(series) == 5  # nothing invented
    assert series.gaps == [Gap(T0 + 60, T0 + 240, 2), Gap(T0 + 300, T0 + 600, 4)]
    assert series.missing_bars == 6
    assert "2026-01-01T00:01:00Z -> 2026-01-01T00:04:00Z (2 bars missing)" in series.gaps[0].describe()
    with pytest.raises(DataError, match="2 gaps, 6 bars missing"):
        load_bars(path, on_gap="error")
    assert "BarSeries(BTC-USD, 5 bars of 60s" in repr(series)


def test_explicit_step_and_real_exchange_json_with_a_gap(shared_data: Path) -> None:
    series = load_bars(shared_data / "market" / "ETH_BTC-1m.json", product_id="ETH-BTC")
    assert series.step == 60
    assert len(series) == 14397
    assert series.missing_bars == 1
    assert series.gaps[0].describe().startswith("2018-01-24T05:17:00Z -> 2018-01-24T05:19:00Z")
    assert series.open[0] == Decimal("0.08939998")  # a float in the file, read through its repr
    five = load_bars(shared_data / "market" / "ETH_BTC-5m.json", product_id="ETH-BTC", step=300)
    assert five.step == 300


def test_json_objects_gz_and_errors(tmp_path: Path) -> None:
    recs = [{"Time": T0, "open": "1", "high": "2", "low": "1", "close": "2", "volume": "1"}]
    path = tmp_path / "a.json.gz"
    path.write_bytes(gzip.compress(orjson.dumps(recs)))
    assert load_bars(path, product_id="A-B").close == [Decimal(2)]
    bad = tmp_path / "b.json"
    for payload, match in (
        (b"{", "invalid JSON"),
        (b"{}", "expected a JSON array"),
        (b"[[1, 2]]", "row 1"),
        (b'[{"time": 1}]', "needs time, open"),
        (b"[[1700000000, true, 1, 1, 1, 1]]", "row 1.open"),
    ):
        bad.write_bytes(payload)
        with pytest.raises(DataError, match=match):
            load_bars(bad, product_id="A-B")


def test_parquet_round_trip_and_typed_columns(tmp_path: Path) -> None:
    series = synthetic_bars(seed=3, bars=50)
    path = tmp_path / "BTC-USD.parquet"
    write_bars(series, path)
    back = load_bars(path)
    assert back.times == series.times
    assert back.close == series.close and back.volume == series.volume
    # typed columns: timestamps, exact decimals, floats through their repr
    table = pa.table(
        {
            "date": pa.array([datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, 0, 1, tzinfo=UTC)]),
            "open": pa.array([Decimal("1.10"), Decimal("1.20")], type=pa.decimal128(10, 2)),
            "high": pa.array([1.3, 1.4]),
            "low": pa.array([1, 1], type=pa.int64()),
            "close": pa.array(["1.2", "1.3"]),
            "volume": pa.array([0.1, 0.2]),
        }
    )
    typed = tmp_path / "typed.parquet"
    pq.write_table(table, typed)
    got = load_bars(typed, product_id="X-USD")
    assert got.times == [T0, T0 + 60]
    assert got.open == [Decimal("1.10"), Decimal("1.20")]
    assert got.high == [Decimal("1.3"), Decimal("1.4")]
    naive = tmp_path / "naive.parquet"
    pq.write_table(table.set_column(0, "date", pa.array([datetime(2026, 1, 1), datetime(2026, 1, 1, 0, 1)])), naive)
    assert load_bars(naive, product_id="X-USD").times == [T0, T0 + 60]
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet")
    with pytest.raises(DataError, match="not a readable Parquet file"):
        load_bars(broken)


def test_csv_write_append_and_gzip(tmp_path: Path) -> None:
    series = synthetic_bars(seed=4, bars=20)
    path = tmp_path / "BTC-USD.csv"
    write_bars(series.between(None, series.time(10)), path)
    write_bars(series.between(series.time(10), None), path, append=True)
    assert path.read_text().count("time,open") == 1
    back = load_bars(path)
    assert back.times == series.times and back.high == series.high
    gz = tmp_path / "BTC-USD.csv.gz"
    write_bars(series, gz)
    assert load_bars(gz).low == series.low


def test_between_bar_and_resample() -> None:
    series = synthetic_bars(seed=5, bars=30, start=datetime(2026, 1, 1, tzinfo=UTC))
    part = series.between(datetime(2026, 1, 1, 0, 5, tzinfo=UTC), datetime(2026, 1, 1, 0, 10, tzinfo=UTC))
    assert [t - T0 for t in part.times] == [300, 360, 420, 480, 540]
    assert len(series.between(datetime(2027, 1, 1, tzinfo=UTC))) == 0
    with pytest.raises(InvalidValue, match="timezone-aware"):
        series.between(datetime(2026, 1, 1))
    bar = series.bar(3)
    assert isinstance(bar, Bar)
    assert bar.start == series.time(3) and bar.close == series.close[3] and bar.trades is None
    assert bar.end(Timeframe.ONE_MINUTE) == series.time(4)
    assert bar.to_candle() == series.candle(3)
    five = resample(series, 300)
    assert len(five) == 6 and five.step == 300
    assert five.open[1] == series.open[5] and five.close[1] == series.close[9]
    assert five.high[1] == max(series.high[5:10]) and five.low[1] == min(series.low[5:10])
    assert five.volume[1] == sum(series.volume[5:10])
    assert resample(series, 60) is series
    with pytest.raises(InvalidValue, match="multiple"):
        resample(series, 90)
    # an unfinished last bucket is dropped: 32 minutes make six complete 5-minute bars
    longer = synthetic_bars(seed=5, bars=32, start=datetime(2026, 1, 1, tzinfo=UTC))
    assert len(resample(longer, 300)) == 6
    with pytest.raises(DataError, match="no complete"):
        resample(series.between(None, series.time(3)), 300)


def test_bar_view_reads_the_columns_and_close_units_are_exact() -> None:
    series = synthetic_bars(seed=5, bars=30, start=datetime(2026, 1, 1, tzinfo=UTC))
    units = series.close_units(2)
    assert units is not None
    exponent, ints = units
    assert exponent == -2 and all(Decimal(u).scaleb(exponent) == c for u, c in zip(ints, series.close, strict=True))
    assert series.close_units(2) is units  # made once, cached
    view = BarView(series, 3, units)
    assert view.to_bar() == series.bar(3) and view == series.bar(3) and view.to_candle() == series.candle(3)
    assert (view.ts, view.start, view.open, view.high, view.low, view.volume, view.trades) == (
        series.times[3],
        series.time(3),
        series.open[3],
        series.high[3],
        series.low[3],
        series.volume[3],
        None,
    )
    assert view.close_units == ints[3] and view.units_exponent == -2 and view.end(Timeframe.ONE_MINUTE) == series.time(4)
    kept = view.fresh()
    view.index = 4
    assert kept.close == series.close[3] and view.close == series.close[4] and "BarView(" in repr(view)
    assert BarView(series, 0).close_units is None
    # a close with more decimals than asked: the unit gets finer, still exact; beyond 18 places: none
    fine = BarSeries.from_columns(
        "X-USD",
        [0, 60],
        [Decimal(1)] * 2,
        [Decimal(2)] * 2,
        [Decimal("0.5")] * 2,
        [Decimal("1.25"), Decimal("1.125")],
        [Decimal(1)] * 2,
    )
    assert fine.close_units(2) == (-3, [1250, 1125])
    tiny = BarSeries.from_columns("X-USD", [0], [Decimal(1)], [Decimal(2)], [Decimal("1E-20")], [Decimal("1E-20")], [Decimal(1)])
    assert tiny.close_units(2) is None


def test_from_columns_checks_lengths_and_step() -> None:
    one = [Decimal(1)]
    with pytest.raises(InvalidValue, match="columns differ"):
        BarSeries.from_columns("A-B", [T0, T0 + 60], one, one, one, one, one)
    with pytest.raises(InvalidValue, match="positive number of seconds"):
        BarSeries.from_columns("A-B", [T0], one, one, one, one, one, step=0)
    single = BarSeries.from_columns("A-B", [T0], one, one, one, one, one)
    assert single.step == 60 and single.timeframe is Timeframe.ONE_MINUTE
    odd = BarSeries.from_columns("A-B", [T0, T0 + 90], one * 2, one * 2, one * 2, one * 2, one * 2)
    assert odd.timeframe is None


def test_parse_time_value_directly() -> None:
    assert parse_time_value(datetime(2026, 1, 1, tzinfo=UTC), "iso") == T0
    assert parse_time_value(T0, "s") == T0
    with pytest.raises(ValueError, match="integer"):
        parse_time_value(1.5, "s")
    with pytest.raises(ValueError, match="first row had an ISO time"):
        parse_time_value(str(T0), "iso")


def test_synthetic_bars_are_seeded_and_valid() -> None:
    a = synthetic_bars(seed=9, bars=500)
    b = synthetic_bars(seed=9, bars=500)
    c = synthetic_bars(seed=10, bars=500)
    assert a.close == b.close and a.high == b.high
    assert a.close != c.close
    BarSeries.from_columns(a.product_id, a.times, a.open, a.high, a.low, a.close, a.volume)  # validates every bar
    assert all(a.open[i + 1] == a.close[i] for i in range(499))
    with pytest.raises(InvalidValue):
        synthetic_bars(seed=1, bars=0)


def _trade_frame(seq: int, trades: list[tuple[str, str, str, str]], kind: str = "update") -> str:
    return orjson.dumps(
        {
            "channel": "market_trades",
            "client_id": "",
            "timestamp": "2026-01-01T00:00:00Z",
            "sequence_num": seq,
            "events": [
                {
                    "type": kind,
                    "trades": [
                        {"trade_id": tid, "product_id": "BTC-USD", "price": px, "size": "0.5", "side": "BUY", "time": ts}
                        for tid, px, _size, ts in trades
                    ],
                }
            ],
        }
    ).decode()


def test_bars_from_a_recording(tmp_path: Path) -> None:
    base = datetime(2026, 1, 1, tzinfo=UTC)

    def ts(seconds: int) -> str:
        return (base + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")

    lines = [
        {"ts_ns": 1, "connected": 1},
        {"ts_ns": 2, "frame": _trade_frame(0, [("1", "100", "", ts(5)), ("2", "102", "", ts(20))], "snapshot")},
        {"ts_ns": 3, "frame": _trade_frame(1, [("2", "102", "", ts(20)), ("3", "99", "", ts(50))])},  # trade 2 repeated
        {"ts_ns": 4, "frame": _trade_frame(2, [("4", "101", "", ts(70))])},
        {"ts_ns": 5, "frame": _trade_frame(3, [("5", "103", "", ts(200))])},  # a gap minute
        {"ts_ns": 6, "frame": _trade_frame(4, [("6", "104", "", ts(250))])},
    ]
    path = tmp_path / "rec.jsonl.gz"
    path.write_bytes(gzip.compress(b"".join(orjson.dumps(x) + b"\n" for x in lines)))
    assert [t.trade_id for t in trades_from_recording(path, "BTC-USD")] == ["1", "2", "3", "4", "5", "6"]
    series = bars_from_recording(path, "BTC-USD")
    assert series.times == [T0, T0 + 60, T0 + 180]  # minute 2 had no trade (a gap); the open minute 4 is dropped
    assert series.missing_bars == 1
    assert (series.open[0], series.high[0], series.low[0], series.close[0]) == (
        Decimal(100),
        Decimal(102),
        Decimal(99),
        Decimal(99),
    )
    assert series.volume[0] == Decimal("1.5")  # the repeated trade counted once
    full = bars_from_recording(path, "BTC-USD", include_last=True)
    assert full.times == [T0, T0 + 60, T0 + 180, T0 + 240]
    with pytest.raises(DataError, match="no complete 1m bar of ETH-USD"):
        bars_from_recording(path, "ETH-USD")


def test_product_from_filename() -> None:
    from cryptoj.backtest.data import product_from_filename

    assert product_from_filename("BTC-USD-1m.csv") == "BTC-USD"
    assert product_from_filename("eth_btc-5m.json") == "ETH-BTC"
    assert product_from_filename("bars.csv") == "bars"
