"""The HTML report: parsed back, its charts' data checked against the run."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from cryptoj.backtest.data import synthetic_bars
from cryptoj.backtest.report import DATA_ELEMENT_ID, downsample, drawdown_curve, monthly_returns, write_report
from cryptoj.backtest.runner import Backtest, BacktestResult
from cryptoj.strategies.sma_cross import SmaCross

pytestmark = pytest.mark.unit

START = datetime(2025, 1, 1, tzinfo=UTC)


class Parsed(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.stack: list[str] = []
        self.data_json = ""
        self._in_data = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.elements.append((tag, a))
        self._in_data = tag == "script" and a.get("id") == DATA_ELEMENT_ID

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_data = False

    def handle_data(self, data: str) -> None:
        if self._in_data:
            self.data_json += data

    def find(self, tag: str, **attrs: str) -> list[dict[str, str]]:
        return [a for t, a in self.elements if t == tag and all(a.get(k) == v for k, v in attrs.items())]


@pytest.fixture(scope="module")
def result() -> BacktestResult:
    series = synthetic_bars(seed=11, bars=24 * 100, step=3600, start=START, volatility_bps=40)
    strategy = SmaCross({"fast": 5, "slow": 20, "order_size": Decimal("0.01"), "timeframe": "1h"}, products=["BTC-USD"])
    return Backtest(strategy, series).run()


def test_report_parses_and_carries_the_charts_data(result: BacktestResult, tmp_path: Path) -> None:
    path = write_report(result, tmp_path / "r.html", max_points=300)
    text = path.read_text()
    assert text.startswith("<!DOCTYPE html>")
    page = Parsed()
    page.feed(text)
    # self-contained: nothing is loaded from anywhere
    for tag, attrs in page.elements:
        for key in ("src", "href"):
            assert not attrs.get(key), (tag, attrs)
    assert not page.find("link")
    assert [a.get("type") for t, a in page.elements if t == "script"] == ["application/json"]  # data only, no code
    data = json.loads(page.data_json)
    # the equity chart draws exactly the embedded points, which come from the run's curve
    (equity_svg,) = page.find("svg", id="equity-chart")
    assert equity_svg
    polylines = [a for t, a in page.elements if t == "polyline"]
    equity_points = data["equity"]["values"]
    assert int(polylines[0]["data-points"]) == len(equity_points) == len(polylines[0]["points"].split())
    assert len(equity_points) <= 310
    assert equity_points[0] == result.curve_equity[0] and equity_points[-1] == result.curve_equity[-1]
    assert min(equity_points) == min(result.curve_equity) and max(equity_points) == max(result.curve_equity)
    assert page.find("svg", id="drawdown-chart")
    assert min(data["drawdown"]["values"]) == pytest.approx(-result.metrics.max_drawdown)
    # price chart: one marker per fill, at the fill's price
    assert page.find("svg", id="price-chart-0")
    markers = page.find("polygon")
    assert len(markers) == len(result.fills) > 10
    assert [float(m["data-price"]) for m in markers] == [float(f.price) for f in result.fills]
    assert {m["data-side"] for m in markers} == {"BUY", "SELL"}
    assert data["buys"] + data["sells"] == len(result.fills)
    # monthly returns: Jan..Apr 2025, one cell each, the same numbers as the JSON
    cells = [a for t, a in page.elements if t == "td" and "data-month" in a]
    assert [c["data-month"] for c in cells] == ["2025-01", "2025-02", "2025-03", "2025-04"]
    assert [float(c["data-return"]) for c in cells] == [m["return"] for m in data["monthly_returns"]]
    growth = 1.0
    for m in data["monthly_returns"]:
        growth *= 1 + m["return"]
    assert growth - 1 == pytest.approx(float(result.metrics.total_return), abs=1e-9)
    # metrics and parameters tables
    assert page.find("table", id="metrics") and page.find("table", id="parameters") and page.find("table", id="trades")
    assert data["params"] == {"fast": "5", "slow": "20", "order_size": "0.01", "timeframe": "1h"}
    assert data["metrics"]["fills"] == len(result.fills)
    assert "Sharpe (365d)" in text and "sma_cross" in text


def test_downsample_keeps_extremes_and_ends() -> None:
    times = list(range(10_000))
    values = [float((i * 7919) % 1000) for i in range(10_000)]
    values[5000] = -5.0
    values[7777] = 5000.0
    t, v = downsample(times, values, 600)
    assert len(t) <= 601 and t == sorted(t)
    assert min(v) == -5.0 and max(v) == 5000.0
    assert t[0] == 0 and t[-1] == 9999
    assert downsample([1, 2], [3.0, 4.0], 10) == ([1, 2], [3.0, 4.0])


def test_drawdown_and_monthly_returns_by_hand() -> None:
    assert drawdown_curve([100.0, 110.0, 99.0, 120.0]) == pytest.approx([0.0, 0.0, -0.1, 0.0])
    jan = int(datetime(2025, 1, 1, tzinfo=UTC).timestamp())
    feb = int(datetime(2025, 2, 1, tzinfo=UTC).timestamp())
    mar = int(datetime(2025, 3, 1, tzinfo=UTC).timestamp())
    # points at bar ends: the Jan 31 23:00 bar ends at Feb 1 00:00 and still belongs to January
    months: list[dict[str, Any]] = monthly_returns([jan, jan + 3600, feb, feb + 3600, mar], [100.0, 101.0, 110.0, 99.0, 121.0])
    assert [(m["year"], m["month"]) for m in months] == [(2025, 1), (2025, 2)]
    assert months[0]["return"] == pytest.approx(0.10) and months[1]["return"] == pytest.approx(0.10)
    assert monthly_returns([], []) == []
