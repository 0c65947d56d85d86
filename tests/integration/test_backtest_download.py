"""``cryptoj data download`` against the simulator over loopback: pages of 300, resumable, CSV and Parquet."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cryptoj.backtest.data import load_bars
from cryptoj.backtest.download import download_candles, partial_path
from cryptoj.cli import app
from cryptoj.errors import DataError, InvalidValue
from cryptoj.model.candles import Timeframe
from cryptoj.venues.coinbase.rest import CoinbaseRestClient
from cryptoj.venues.simulated.server import SimulatorServer

pytestmark = pytest.mark.integration


def _range(sim: SimulatorServer, minutes: int) -> tuple[datetime, datetime]:
    now = sim.now_dt().replace(minute=0, second=0, microsecond=0)
    end = now - timedelta(hours=1)
    return end - timedelta(minutes=minutes), end


class Interrupt(Exception):
    pass


async def test_download_pages_resumes_and_matches_the_venue(sim: SimulatorServer, tmp_path: Path) -> None:
    start, end = _range(sim, 1000)  # 1000 one-minute bars: 4 pages of at most 300
    out = tmp_path / "BTC-USD-1m.csv"
    seen: list[tuple[int, int]] = []

    def stop_after_two_pages(done: int, total: int) -> None:
        seen.append((done, total))
        if done >= 600:
            raise Interrupt  # the process dies after the second page was written

    async with CoinbaseRestClient(sim.base_url) as client:
        with pytest.raises(Interrupt):
            await download_candles(client, "BTC-USD", Timeframe.ONE_MINUTE, start, end, out, progress=stop_after_two_pages)
        assert seen == [(0, 1000), (300, 1000), (600, 1000)]
        assert len(load_bars(out)) == 600  # what was fetched is on disk
        report = await download_candles(client, "BTC-USD", Timeframe.ONE_MINUTE, start, end, out)
        assert report.resumed_from == start + timedelta(minutes=600)
        assert (report.requests, report.new_bars, report.total_bars, report.gaps) == (2, 400, 1000, 0)
        # the same bars as one uninterrupted fetch from the venue
        direct = await client.candles("BTC-USD", start, end, "ONE_MINUTE")
        series = load_bars(out)
        assert series.times[0] == int(start.timestamp()) and len(series) == 1000
        assert [c.close for c in direct] == series.close and [c.high for c in direct] == series.high
        # nothing left to do: a rerun fetches nothing and keeps the file
        again = await download_candles(client, "BTC-USD", Timeframe.ONE_MINUTE, start, end, out)
        assert again.requests == 0 and again.total_bars == 1000


async def test_download_parquet_through_a_partial_file(sim: SimulatorServer, tmp_path: Path) -> None:
    start, end = _range(sim, 24 * 60)
    out = tmp_path / "ETH-USD-5m.parquet"
    async with CoinbaseRestClient(sim.base_url) as client:
        first = await download_candles(client, "ETH-USD", Timeframe.FIVE_MINUTE, start, start + timedelta(hours=12), out)
        assert first.total_bars == 144 and out.exists() and not partial_path(out).exists()
        with pytest.raises(DataError, match="outside the requested range"):
            await download_candles(client, "ETH-USD", Timeframe.FIVE_MINUTE, start + timedelta(hours=1), end, out)
        more = await download_candles(client, "ETH-USD", Timeframe.FIVE_MINUTE, start, end, out)
        assert more.resumed_from == start + timedelta(hours=12) and more.total_bars == 288
        assert load_bars(out).step == 300 and not partial_path(out).exists()
        with pytest.raises(InvalidValue, match="must be after start"):
            await download_candles(client, "ETH-USD", Timeframe.FIVE_MINUTE, end, start, tmp_path / "x.csv")
        with pytest.raises(DataError, match="does not exist"):
            await download_candles(client, "ETH-USD", Timeframe.FIVE_MINUTE, start, end, tmp_path / "no" / "x.csv")
        future = sim.now_dt() + timedelta(days=2)
        with pytest.raises(DataError, match="returned no 5m candles"):
            await download_candles(
                client, "ETH-USD", Timeframe.FIVE_MINUTE, future, future + timedelta(hours=1), tmp_path / "f.csv"
            )


async def test_cli_download_then_backtest(sim: SimulatorServer, tmp_path: Path) -> None:
    start, end = _range(sim, 600)
    out = tmp_path / "BTC-USD-1m.csv"
    runner = CliRunner()
    args = ["data", "download", "--product", "BTC-USD", "--granularity", "ONE_MINUTE", "--start", start.isoformat()]
    args += ["--end", end.isoformat(), "--out", str(out), "--base-url", sim.base_url, "--rate", "50"]
    result = await asyncio.to_thread(runner.invoke, app, args)
    assert result.exit_code == 0, result.output
    assert "600 bars (600 new in 2 requests); 0 gaps" in result.output
    report, js = tmp_path / "r.html", tmp_path / "r.json"
    bt_args = ["backtest", "--strategy", "sma_cross", "--data", str(out), "--param", "fast=5", "--param", "slow=20"]
    bt_args += ["--report", str(report), "--json", str(js), "--no-progress"]
    result = await asyncio.to_thread(runner.invoke, app, bt_args)
    assert result.exit_code == 0, result.output
    assert "total return" in result.output and report.exists() and js.exists()
    bad = await asyncio.to_thread(runner.invoke, app, [*args[:-4], "--base-url", "ftp://x", "--rate", "1"])
    assert bad.exit_code == 1 and "base_url" in bad.output
