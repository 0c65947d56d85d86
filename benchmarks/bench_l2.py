"""L2 hot-path benchmark: orjson parse alone vs. our full path, on one seeded stream.

Stream (``cryptoj.recorder.synthetic_l2_frames``): one 1,000-level ``l2_data``
snapshot, then N update messages of 1-20 levels each, ~30% deletions,
concentrated near the top of the book.

(a) ``orjson.loads`` of every frame;
(b) the full path: ``MarketDataService.process_frame`` with the Coinbase
    parser the live engine uses (``protocol.parse_envelope``; its level-2 hot
    path decodes update frames with msgspec and applies the levels to the book
    from their text), ``sequence_num`` check, crossed-book check, then read
    best bid and best ask.

Prints messages/s and level-updates/s for both, and the ratio b/a. The runs of
(a) and (b) alternate (``--repeat`` pairs) and each figure is the best of its
runs, so a load change on a shared machine hits both alike; ``--clock cpu``
(the default) times the process's CPU time, which time spent waiting for a core
does not inflate (``--clock wall`` for elapsed time). Usage::

    python benchmarks/bench_l2.py [--updates 200000] [--seed 7] [--repeat 3] [--clock cpu|wall]
"""

from __future__ import annotations

import argparse
import gc
import time

import orjson

from cryptoj.market_data import MarketDataConfig, MarketDataService
from cryptoj.model.candles import Timeframe
from cryptoj.recorder import synthetic_l2_frames
from cryptoj.venues.coinbase.protocol import parse_envelope

PRODUCT = "BTC-USD"


def build(seed: int, updates: int) -> tuple[list[bytes], int]:
    frames = list(synthetic_l2_frames(PRODUCT, seed=seed, snapshot_levels=1000, updates=updates))
    level_updates = sum(len(orjson.loads(f)["events"][0]["updates"]) for f in frames[1:])
    return frames, level_updates


CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}
clock = time.process_time


def bench_parse(frames: list[bytes]) -> float:
    loads = orjson.loads
    start = clock()
    for frame in frames:
        loads(frame)
    return clock() - start


def bench_full(frames: list[bytes]) -> tuple[float, MarketDataService]:
    service = MarketDataService(
        MarketDataConfig(products=(PRODUCT,), candle_timeframes=(Timeframe.ONE_MINUTE,)),
        parse=parse_envelope,
    )
    process = service.process_frame
    book = service._state(PRODUCT).book
    best_bid = book.best_bid
    best_ask = book.best_ask
    start = clock()
    for frame in frames:
        process(frame)
        best_bid()
        best_ask()
    elapsed = clock() - start
    return elapsed, service


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--updates", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=3, help="best of N runs for each path (alternating)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="cpu", help="process CPU time (default) or wall time")
    args = parser.parse_args()
    global clock
    clock = CLOCKS[args.clock]

    frames, level_updates = build(args.seed, args.updates)
    messages = len(frames)
    total_levels = level_updates + 1000
    print(f"stream: 1 snapshot (1000 levels) + {args.updates} updates, {level_updates} level updates, seed {args.seed}")

    parse_runs: list[float] = []
    runs: list[tuple[float, MarketDataService]] = []
    for _ in range(args.repeat):
        gc.collect()
        parse_runs.append(bench_parse(frames))
        gc.collect()
        runs.append(bench_full(frames))
    parse_s = min(parse_runs)
    full_s, service = min(runs, key=lambda r: r[0])
    pair_ratios = sorted(p / f for p, (f, _) in zip(parse_runs, runs, strict=True))
    stats = service.stats
    assert stats.gaps == 0 and stats.resyncs == 0 and stats.malformed == 0, stats
    assert service.book(PRODUCT) is not None

    a_msgs, a_lvls = messages / parse_s, total_levels / parse_s
    b_msgs, b_lvls = messages / full_s, total_levels / full_s
    print(f"(a) orjson parse only : {a_msgs:12,.0f} msg/s  {a_lvls:14,.0f} level-updates/s  ({parse_s:.3f} s)")
    print(f"(b) full path         : {b_msgs:12,.0f} msg/s  {b_lvls:14,.0f} level-updates/s  ({full_s:.3f} s)")
    print(f"ratio b/a             : {b_msgs / a_msgs:.3f}   (goal >= 0.5; {args.clock} time)")
    print(f"ratio per (a)/(b) pair: {', '.join(f'{r:.3f}' for r in pair_ratios)}")
    book = service.book(PRODUCT)
    assert book is not None
    print(f"final book: {book.bid_count} bids, {book.ask_count} asks, best {book.best_bid()} / {book.best_ask()}")


if __name__ == "__main__":
    main()
