"""Backtest throughput: ``sma_cross`` (20/50) on a seeded synthetic year of one-minute bars (525,600).

Prints, from one run of this script:

* bars/s of the full backtest (strategy + engine + fills + portfolio; the equity
  curve and metrics are computed after the loop and reported separately);
* bars/s of the same engine with a strategy that does nothing (the engine's own cost);
* bars/s of a minimal plain-Python loop computing the same signals (the same exact
  Decimal running-sum SMAs and the same crossing rule, no engine, no orders);
* peak memory (max RSS of the process, and the Python heap peak of the run measured
  with tracemalloc in a separate, slower pass when ``--tracemalloc`` is given).

Usage: ``.venv/bin/python benchmarks/bench_backtest.py [--bars N] [--seed S] [--tracemalloc]``
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
import tracemalloc
from collections import deque
from decimal import Decimal

from cryptoj.backtest.data import BarSeries, synthetic_bars
from cryptoj.backtest.runner import Backtest
from cryptoj.model.candles import Candle
from cryptoj.strategies.sma_cross import SmaCross
from cryptoj.strategy import Strategy

GOAL = 1_000_000


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


def run_backtest(series: BarSeries, strategy: Strategy) -> tuple[float, float, int, int]:
    bt = Backtest(strategy, series)
    t0 = time.perf_counter()
    result = bt.run()
    total = time.perf_counter() - t0
    return result.elapsed_s, total, len(result.fills), result.metrics.trades


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

    plain = float("inf")
    idle_loop = loop = total = float("inf")
    fills = trades = signals = 0
    for _ in range(max(1, args.repeat)):
        t0 = time.perf_counter()
        signals = plain_signals(series.close, 20, 50)
        plain = min(plain, time.perf_counter() - t0)
        idle_loop = min(idle_loop, run_backtest(series, Idle(products=[series.product_id]))[0])
        run = run_backtest(series, SmaCross({"fast": 20, "slow": 50}, products=[series.product_id]))
        if run[0] < loop:
            loop, total, fills, trades = run

    n = len(series)
    print(f"best of {max(1, args.repeat)} runs each")
    print(f"plain-Python signal loop (sma 20/50, Decimal): {n / plain:>12,.0f} bars/s  ({signals} crossings)")
    print(f"engine only (idle strategy):                   {n / idle_loop:>12,.0f} bars/s")
    print(f"backtest sma_cross 20/50 (bar loop):          {n / loop:>12,.0f} bars/s  ({fills} fills, {trades} round trips)")
    print(f"  wall time incl. equity curve + metrics:      {total:.2f}s")
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"peak memory (max RSS of this process): {rss_kb / 1024:.0f} MiB")
    if args.tracemalloc:
        tracemalloc.start()
        run_backtest(series, SmaCross({"fast": 20, "slow": 50}, products=[series.product_id]))
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(f"python heap peak of one backtest run (tracemalloc, data excluded): {peak / 2**20:.1f} MiB")
    rate = n / loop
    verdict = "reached" if rate >= GOAL else "NOT reached"
    print(f"goal {GOAL:,} bars/s: {verdict} ({rate / GOAL:.0%} of it); strategy+engine vs plain loop: {plain / loop:.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
