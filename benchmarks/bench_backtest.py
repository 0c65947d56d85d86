"""Backtest throughput: ``sma_cross`` (20/50) on a seeded synthetic year of one-minute bars (525,600).

Prints, from one run of this script:

* bars/s of the full backtest (strategy + engine + fills + portfolio; the equity
  curve and metrics are computed after the loop and reported separately);
* bars/s of the same engine with a strategy that does nothing (the engine's own cost);
* bars/s of minimal plain-Python loops computing the same signals (the same crossing
  rule, no engine, no orders): one with exact Decimal running-sum SMAs, one with the
  exact integer running sums compared by cross-multiplying that ``sma_cross`` uses;
* peak memory (max RSS of the process, and the Python heap peak of the run measured
  with tracemalloc in a separate, slower pass when ``--tracemalloc`` is given).

Every figure is the best of ``--repeat`` runs, as wall-clock bars/s and as bars per
second of this process's CPU time (``time.process_time``): on a shared, loaded machine
the CPU-time figure moves less. The load average is printed with them.

Usage: ``.venv/bin/python benchmarks/bench_backtest.py [--bars N] [--seed S] [--tracemalloc]``
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
import tracemalloc
from collections import deque
from collections.abc import Callable
from decimal import Decimal
from typing import TypeVar

from cryptoj.backtest.data import BarSeries, synthetic_bars
from cryptoj.backtest.runner import Backtest
from cryptoj.model.candles import Candle
from cryptoj.strategies.sma_cross import SmaCross
from cryptoj.strategy import Strategy

GOAL = 1_000_000
T = TypeVar("T")


class Idle(Strategy):
    """Reads nothing, does nothing: measures the engine's per-bar cost."""

    name = "idle"

    def on_bar(self, product: str, bar: Candle) -> None:
        return None


def plain_signals(closes: list[Decimal], fast: int, slow: int) -> int:
    """The same crossing signals as sma_cross, as a bare loop: exact Decimal running sums over deques."""
    fw: deque[Decimal] = deque()
    sw: deque[Decimal] = deque()
    fs = ss = Decimal(0)
    fn, sn = Decimal(fast), Decimal(slow)
    sign = 0
    signals = 0
    for c in closes:
        fw.append(c)
        fs += c
        if len(fw) > fast:
            fs -= fw.popleft()
        sw.append(c)
        ss += c
        if len(sw) > slow:
            ss -= sw.popleft()
        if len(sw) < slow:
            continue
        f, s = fs / fn, ss / sn
        new = 1 if f > s else -1 if f < s else sign
        if sign and new != sign:
            signals += 1
        sign = new
    return signals


def plain_int_signals(units: list[int], fast: int, slow: int) -> int:
    """The same signals on exact integer closes: running sums over deques, compared by cross-multiplying."""
    fw: deque[int] = deque()
    sw: deque[int] = deque()
    fs = ss = 0
    sign = 0
    signals = 0
    for c in units:
        fw.append(c)
        fs += c
        if len(fw) > fast:
            fs -= fw.popleft()
        sw.append(c)
        ss += c
        if len(sw) > slow:
            ss -= sw.popleft()
        elif len(sw) < slow:
            continue
        a, b = fs * slow, ss * fast
        new = 1 if a > b else -1 if a < b else sign
        if sign and new != sign:
            signals += 1
        sign = new
    return signals


def timed(fn: Callable[[], T]) -> tuple[float, float, T]:
    """(wall s, CPU s, result) of one call."""
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - w0, time.process_time() - c0, out


def run_backtest(series: BarSeries, strategy: Strategy) -> tuple[float, float, float, int, int]:
    """(loop wall s, loop CPU s, wall s incl. the equity curve and metrics, fills, round trips)."""
    bt = Backtest(strategy, series)
    t0 = time.perf_counter()
    result = bt.run()
    total = time.perf_counter() - t0
    return result.elapsed_s, result.cpu_s, total, len(result.fills), result.metrics.trades


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bars", type=int, default=525_600)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument(
        "--repeat", type=int, default=3, help="runs of each measurement; the best is reported (shared machines are noisy)"
    )
    ap.add_argument("--tracemalloc", action="store_true", help="also measure the Python heap peak of a run (slower)")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    series = synthetic_bars(seed=args.seed, bars=args.bars)
    print(f"data: {len(series):,} one-minute bars generated in {time.perf_counter() - t0:.2f}s (seed {args.seed})")
    t0 = time.perf_counter()
    units = series.close_units(2)
    assert units is not None
    print(f"closes as exact integers (BarSeries.close_units, once per series): {time.perf_counter() - t0:.2f}s")

    best: dict[str, tuple[float, float]] = {}

    def keep(name: str, wall: float, cpu: float) -> None:
        w, c = best.get(name, (float("inf"), float("inf")))
        best[name] = (min(w, wall), min(c, cpu))

    total = float("inf")
    fills = trades = signals = int_signals = 0
    for _ in range(max(1, args.repeat)):
        wall, cpu, signals = timed(lambda: plain_signals(series.close, 20, 50))
        keep("plain_decimal", wall, cpu)
        wall, cpu, int_signals = timed(lambda: plain_int_signals(units[1], 20, 50))
        keep("plain_int", wall, cpu)
        wall, cpu, *_ = run_backtest(series, Idle(products=[series.product_id]))
        keep("idle", wall, cpu)
        sma = SmaCross({"fast": 20, "slow": 50}, products=[series.product_id])
        wall, cpu, run_total, fills, trades = run_backtest(series, sma)
        keep("backtest", wall, cpu)
        total = min(total, run_total)
    assert signals == int_signals, (signals, int_signals)

    n = len(series)

    def rates(name: str) -> str:
        wall, cpu = best[name]
        return f"{n / wall:>12,.0f} bars/s  (CPU time: {n / cpu:>12,.0f} bars/s)"

    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"best of {max(1, args.repeat)} runs each; load average {load} on {os.cpu_count()} CPUs")
    print(f"plain-Python signal loop, Decimal SMAs:        {rates('plain_decimal')}  ({signals} crossings)")
    print(f"plain-Python signal loop, integer sums:        {rates('plain_int')}  ({int_signals} crossings)")
    print(f"engine only (idle strategy):                   {rates('idle')}")
    print(f"backtest sma_cross 20/50 (bar loop):           {rates('backtest')}  ({fills} fills, {trades} round trips)")
    print(f"  wall time incl. equity curve + metrics:      {total:.2f}s")
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"peak memory (max RSS of this process): {rss_kb / 1024:.0f} MiB")
    if args.tracemalloc:
        tracemalloc.start()
        run_backtest(series, SmaCross({"fast": 20, "slow": 50}, products=[series.product_id]))
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(f"python heap peak of one backtest run (tracemalloc, data excluded): {peak / 2**20:.1f} MiB")
    rate = n / best["backtest"][0]
    verdict = "reached" if rate >= GOAL else "NOT reached"
    ratio = best["plain_int"][0] / best["backtest"][0]
    print(f"goal {GOAL:,} bars/s (wall): {verdict} ({rate / GOAL:.0%} of it); backtest vs the plain integer loop: {ratio:.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
