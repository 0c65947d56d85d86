"""Operator API latency: uvicorn on 127.0.0.1 with a view over real components (SQLite Storage, Portfolio, RiskEngine).

Prints p50/p99/max per endpoint for sequential requests over one keep-alive
connection, and the delay from an order change in the view to its server-sent
event reaching a client. Run: ``.venv/bin/python benchmarks/bench_api.py``.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.api_support import LocalView, StepClock

from cryptoj.api.app import create_app, serve_app
from cryptoj.model.money import Side
from cryptoj.storage import Storage

TOKEN = "b" * 40
N = 300
ORDERS = 200


def _pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(q * len(s)))]


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        clock = StepClock()
        storage = await Storage.open(f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}", clock=clock)
        view = LocalView(storage, clock)
        view.risk_config = view.risk_config.model_copy(update={"max_open_orders": None})
        view.risk_engine.config = view.risk_config
        for i in range(ORDERS):
            o = await view.place("BTC-USD", Side.BUY, "0.001", str(40000 + i))
            if i % 2:
                await view.fill(o.client_order_id)
            clock.advance(1)
        app = create_app(view, token=TOKEN, sse_ping_seconds=5)
        async with serve_app(app, "127.0.0.1", 0) as served, httpx.AsyncClient(base_url=served.url, timeout=30) as c:
            auth = {"Authorization": f"Bearer {TOKEN}"}
            print(f"operator API over loopback, {ORDERS} orders ({ORDERS // 2} filled) in SQLite, {N} sequential requests each")
            print(f"{'endpoint':<28}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}")
            for path, headers in (("/healthz", {}), ("/metrics", {}), ("/api/status", auth), ("/api/positions", auth),
                                  ("/api/orders?state=open", auth), ("/api/orders?limit=100", auth), ("/api/fills", auth),
                                  ("/api/risk", auth)):
                samples = []
                for _ in range(N):
                    t0 = time.perf_counter()
                    r = await c.get(path, headers=headers)
                    samples.append((time.perf_counter() - t0) * 1000)
                    assert r.status_code == 200, (path, r.status_code)
                print(f"{path:<28}{statistics.median(samples):>10.2f}{_pct(samples, 0.99):>10.2f}{max(samples):>10.2f}")

            delays: list[float] = []
            async with c.stream("GET", "/api/stream", headers=auth) as resp:
                lines = resp.aiter_lines()
                for _ in range(100):
                    o = await view.place("ETH-USD", Side.BUY, "0.01", "2000")
                    t0 = time.perf_counter()
                    while True:
                        line = await lines.__anext__()
                        if line.startswith("data: ") and o.client_order_id in line:
                            break
                    delays.append((time.perf_counter() - t0) * 1000)
                    await view.cancel_order(o.client_order_id)
            label = "order change -> SSE client"
            print(f"{label:<28}{statistics.median(delays):>10.2f}{_pct(delays, 0.99):>10.2f}{max(delays):>10.2f}")
        await storage.close()


if __name__ == "__main__":
    asyncio.run(main())
