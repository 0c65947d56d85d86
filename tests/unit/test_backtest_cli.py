"""``cryptoj backtest`` and ``cryptoj data download`` option handling (the download itself: tests/integration)."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from cryptoj.backtest.cli import parse_time_option
from cryptoj.backtest.data import synthetic_bars, write_bars
from cryptoj.cli import app
from cryptoj.errors import ConfigError
from tests.unit.test_backtest_report import Parsed

pytestmark = pytest.mark.unit


@pytest.fixture
def bars(tmp_path: Path) -> Path:
    path = tmp_path / "BTC-USD-1m.csv"
    write_bars(synthetic_bars(seed=5, bars=3000, start=datetime(2026, 1, 1, tzinfo=UTC)), path)
    return path


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def test_backtest_prints_metrics_and_writes_json_and_report(bars: Path, tmp_path: Path) -> None:
    js, html = tmp_path / "out.json", tmp_path / "out.html"
    code, out = invoke(
        "backtest", "--strategy", "sma_cross", "--data", str(bars), "--param", "fast=10", "--param", "slow=30",
        "--param", "order_size=0.01", "--fee-tier", "0.001,0.002", "--slippage-bps", "2", "--balance", "USD=5000",
        "--start", "2026-01-01T01:00:00", "--end", "2026-01-02", "--json", str(js), "--report", str(html),
    )  # fmt: skip
    assert code == 0, out
    assert "sma_cross on BTC-USD" in out and "Sharpe (365d)" in out and "bars/s" in out
    data = json.loads(js.read_text())
    assert data["params"] == {"fast": 10, "slow": 30, "order_size": "0.01", "timeframe": "1m"}
    assert data["bars"] == 23 * 60 - 0 and data["metrics"]["initial_equity"].startswith("5000")
    assert all(f["fee"] for f in data["fills"]) and html.read_text().startswith("<!DOCTYPE html>")
    # the report the command wrote carries the run's charts: one price marker per fill, the same equity end point
    page = Parsed()
    page.feed(html.read_text())
    charts = json.loads(page.data_json)
    assert len(page.find("polygon")) == len(data["fills"]) == len(charts["prices"][0]["markers"]) > 0
    assert charts["equity"]["values"][-1] == data["equity_curve"]["equity"][-1]
    assert {a["id"] for t, a in page.elements if t == "svg"} == {"equity-chart", "drawdown-chart", "price-chart-0"}


def test_backtest_on_real_exchange_json_names_the_product_and_warns_about_gaps(shared_data: Path) -> None:
    code, out = invoke(
        "backtest", "--strategy", "sma_cross", "--data", str(shared_data / "market" / "ETH_BTC-1m.json"),
        "--param", "order_size=0.1", "--balance", "BTC=1", "--no-progress",
    )  # fmt: skip
    assert code == 0, out
    assert "1 gaps, 1 bars missing (not filled)" in out and "sma_cross on ETH-BTC" in out


def test_backtest_from_a_recording(tmp_path: Path) -> None:
    lines = [{"ts_ns": 1, "connected": 1}]
    for i in range(200):
        frame = {
            "channel": "market_trades", "client_id": "", "timestamp": "2026-01-01T00:00:00Z", "sequence_num": i,
            "events": [{"type": "update", "trades": [{
                "trade_id": str(i), "product_id": "BTC-USD", "price": str(100 + (i * 37) % 11), "size": "0.1",
                "side": "BUY", "time": datetime.fromtimestamp(1_767_225_600 + 30 * i, UTC).isoformat(),
            }]}],
        }  # fmt: skip
        lines.append({"ts_ns": i + 2, "frame": orjson.dumps(frame).decode()})
    rec = tmp_path / "session.jsonl.gz"
    rec.write_bytes(gzip.compress(b"".join(orjson.dumps(x) + b"\n" for x in lines)))
    code, out = invoke(
        "backtest", "--strategy", "sma_cross", "--data", f"BTC-USD={rec}", "--param", "fast=3", "--param", "slow=8",
        "--param", "order_size=1", "--no-progress",
    )  # fmt: skip
    assert code == 0, out
    assert "99 bars" in out


def test_backtest_with_risk_limits_from_a_config_file(bars: Path, tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[risk]\nmax_order_notional = 10\n")
    code, out = invoke("backtest", "--strategy", "sma_cross", "--data", str(bars), "--config", str(config), "--no-progress")
    assert code == 0, out
    assert "MAX_ORDER_NOTIONAL=" in out  # 0.001 BTC at ~50,000 is 50 > 10: every entry refused


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--param", "fast"], "--param: expected key=value"),
        (["--param", "fast=abc"], "strategy.params.fast"),
        (["--fee-tier", "0.1"], "--fee-tier"),
        (["--slippage-bps", "x"], "--slippage-bps: not a number"),
        (["--balance", "USD"], "--balance: expected CURRENCY=AMOUNT"),
        (["--balance", "USD=-5"], "--balance"),
        (["--start", "yesterday"], "--start: expected an ISO date/time"),
    ],
)
def test_backtest_option_errors_exit_2_naming_the_option(bars: Path, extra: list[str], message: str) -> None:
    code, out = invoke("backtest", "--strategy", "sma_cross", "--data", str(bars), *extra)
    assert code == 2, out
    assert message in out


def test_backtest_data_errors(tmp_path: Path) -> None:
    code, out = invoke("backtest", "--strategy", "sma_cross", "--data", str(tmp_path / "bars.csv"))
    assert code == 2 and "cannot tell the product" in out
    bad = tmp_path / "BTC-USD.csv"
    bad.write_text("time,open,high,low,close,volume\n1767225600,1,1,1,1,1\n1767225600,1,1,1,1,1\n")
    code, out = invoke("backtest", "--strategy", "sma_cross", "--data", str(bad))
    assert code == 1 and "row 2.time" in out and "duplicate" in out
    code, out = invoke("backtest", "--strategy", "no_such_strategy", "--data", str(bad))
    assert code == 2 and "strategy.name" in out


def test_download_option_errors(tmp_path: Path) -> None:
    base = [
        "data",
        "download",
        "--product",
        "BTC-USD",
        "--start",
        "2026-01-01",
        "--end",
        "2026-01-02",
        "--out",
        str(tmp_path / "x.csv"),
    ]
    code, out = invoke(*base, "--granularity", "2m")
    assert code == 2 and "--granularity" in out
    code, out = invoke(*base, "--rate", "0")
    assert code == 2 and "--rate" in out
    code, out = invoke(*base[:4], "--start", "soon", *base[6:])
    assert code == 2 and "--start" in out


def test_parse_time_option() -> None:
    assert parse_time_option("1767225600", "--start") == datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_time_option("2026-01-01", "--start") == datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_time_option("2026-01-01T02:00:00+02:00", "--start") == datetime(2026, 1, 1, tzinfo=UTC)
    with pytest.raises(ConfigError):
        parse_time_option("99999999999999999999", "--end")


def test_backtest_book_mode_replays_a_recording(tmp_path: Path, bars: Path) -> None:
    from tests.unit.test_backtest_book import scenario

    rec = scenario(tmp_path)
    code, out = invoke(
        "backtest", "--strategy", "sma_cross", "--book", "--data", f"BTC-USD={rec}", "--json", str(tmp_path / "b.json")
    )
    assert code == 0, out
    assert "sma_cross on BTC-USD" in out and json.loads((tmp_path / "b.json").read_text())["bars"] == 3
    code, out = invoke("backtest", "--strategy", "sma_cross", "--book", "--data", str(bars))
    assert code == 2 and "--book: give exactly one recording" in out


def test_backtest_with_a_synthetic_book(bars: Path, tmp_path: Path) -> None:
    js = tmp_path / "s.json"
    args = ["backtest", "--strategy", "sma_cross", "--data", str(bars), "--param", "order_size=5", "--balance", "USD=10000000"]
    code, out = invoke(*args, "--synthetic-book", "levels=3,depth=0.5", "--json", str(js), "--no-progress")
    assert code == 0, out
    fills = json.loads(js.read_text())["fills"]
    by_order: dict[str, set[str]] = {}
    for f in fills:
        by_order.setdefault(f["client_order_id"], set()).add(f["price"])
    assert any(len(prices) > 1 for prices in by_order.values())  # orders walked several synthetic levels
    code, out = invoke(*args, "--synthetic-book", "levels=x")
    assert code == 2 and "--synthetic-book" in out
    code, out = invoke(*args, "--synthetic-book", "levels=3", "--slippage-bps", "5")
    assert code == 2 and "not both" in out


def test_a_strategy_bug_is_reported_with_its_place(bars: Path, tmp_path: Path) -> None:
    strategy = tmp_path / "buggy.py"
    strategy.write_text(
        "from cryptoj.strategy import Strategy\n\n"
        "class Buggy(Strategy):\n"
        "    def on_bar(self, product, bar):\n"
        "        raise ZeroDivisionError('boom')\n"
    )
    code, out = invoke("backtest", "--strategy", f"{strategy}:Buggy", "--data", str(bars), "--no-progress")
    assert code == 1
    assert "the strategy raised ZeroDivisionError: boom" in out and "buggy.py:5" in out.replace("\n", "")
