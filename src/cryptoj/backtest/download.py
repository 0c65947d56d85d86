"""Download candle history from the public candles endpoint into a bar file (``cryptoj data download``).

* Pages of at most 300 candles (Coinbase's limit per request), oldest first,
  through :meth:`CoinbaseRestClient.candles` — the client's public token bucket
  paces the requests (``rate`` per second) and retries 429/5xx with backoff.
* **Resumable**: each page is appended to the output as soon as it arrives; a
  rerun with the same ``--out`` reads what is there and continues after its last
  bar (a Parquet output is built in ``<out>.partial.csv`` and converted when
  the range is complete).
* Gaps (minutes nobody traded: the exchange returns no candle) are reported
  with their count, never filled.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptoj.backtest.data import BarSeries, load_bars, write_bars
from cryptoj.errors import DataError, InvalidValue
from cryptoj.logging import get_logger
from cryptoj.model.candles import EPOCH, Timeframe
from cryptoj.venues.coinbase.rest import CANDLES_PER_REQUEST, CoinbaseRestClient

__all__ = ["DownloadReport", "download_candles", "partial_path"]

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class DownloadReport:
    out: Path
    product_id: str
    timeframe: Timeframe
    requests: int
    new_bars: int
    total_bars: int
    resumed_from: datetime | None
    gaps: int
    missing_bars: int


def partial_path(out: Path) -> Path:
    """Where a Parquet download collects its pages until it is complete."""
    return out.with_name(out.name + ".partial.csv")


def _seconds(ts: datetime, name: str) -> int:
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise InvalidValue(name, ts, "must be timezone-aware (UTC)")
    return int((ts - EPOCH).total_seconds())


async def download_candles(
    client: CoinbaseRestClient,
    product_id: str,
    timeframe: Timeframe,
    start: datetime,
    end: datetime,
    out: Path | str,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> DownloadReport:
    """Fetch candles with ``start <= bar start < end`` into ``out`` (CSV, CSV.gz or Parquet), resuming a partial file.

    ``progress(done_bars_of_range, total_bars_of_range)`` is called after each page.
    """
    out = Path(out)
    step = timeframe.seconds
    first, last = _seconds(start, "download.start"), _seconds(end, "download.end")
    first -= first % step
    if last <= first:
        raise InvalidValue("download.end", end, f"must be after start {start.isoformat()}")
    if not out.parent.is_dir():
        raise DataError(f"{out.parent}: directory does not exist")
    parquet = out.suffix.lower() == ".parquet"
    sink = partial_path(out) if parquet else out
    resume_at = first
    resumed: datetime | None = None
    existing = sink if sink.exists() and sink.stat().st_size > 0 else out if (parquet and out.exists()) else None
    if existing is not None:
        have = load_bars(existing, product_id=product_id, step=step)
        if have.times[0] < first or have.times[-1] >= last:
            raise DataError(
                f"{existing}: holds {have.times[0]}..{have.times[-1]}, outside the requested range; use another --out"
            )
        resume_at = have.times[-1] + step
        resumed = EPOCH + timedelta(seconds=resume_at)
        if existing is out and parquet:  # a finished Parquet file being extended: continue in the partial CSV
            write_bars(have, sink)
        log.info("download_resume", out=str(out), bars=len(have), resume_at=resumed.isoformat())
    total = (last - first) // step
    window = CANDLES_PER_REQUEST * step
    requests = new = 0
    lo = resume_at
    if progress is not None:
        progress((lo - first) // step, total)
    while lo < last:
        hi = min(lo + window, last)
        candles = await client.candles(
            product_id, EPOCH + timedelta(seconds=lo), EPOCH + timedelta(seconds=hi), timeframe.granularity
        )
        requests += 1
        if candles:
            page = BarSeries.from_columns(
                product_id,
                [_seconds(c.start, "candle.start") for c in candles],
                [c.open for c in candles],
                [c.high for c in candles],
                [c.low for c in candles],
                [c.close for c in candles],
                [c.volume for c in candles],
                step=step,
                source=f"{product_id} candles {lo}..{hi}",
            )
            write_bars(page, sink, append=True)
            new += len(candles)
        lo = hi
        if progress is not None:
            progress((lo - first) // step, total)
    if not sink.exists():
        raise DataError(f"{product_id}: the venue returned no {timeframe.value} candles between {start} and {end}")
    series = load_bars(sink, product_id=product_id, step=step)
    if parquet:
        write_bars(series, out)
        sink.unlink()
    report = DownloadReport(
        out, product_id, timeframe, requests, new, len(series), resumed, len(series.gaps), series.missing_bars
    )
    log.info(
        "download_done",
        out=str(out),
        product_id=product_id,
        requests=requests,
        new_bars=new,
        total_bars=len(series),
        gaps=report.gaps,
        missing_bars=report.missing_bars,
    )
    return report
