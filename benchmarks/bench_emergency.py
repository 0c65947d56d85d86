"""Kill-switch benchmark: trigger → confirmed flat, over loopback against the simulator.

Each run starts a fresh simulator (``cryptoj sim`` in-process, real sockets on
127.0.0.1, background market flow off), a real :class:`~cryptoj.order_execution.OrderManager`
over :class:`~cryptoj.venues.coinbase.venue.CoinbaseVenue` with SQLite storage,
places ``--orders`` resting limit orders (checked OPEN at the simulator), then calls
:meth:`EmergencyManager.trigger` and times it until the report comes back
**confirmed** (the venue lists no open order via REST; with ``--flatten`` also every
base balance below its minimum size). The simulator's own records are checked after
each run. Goal: ≤ 2 s with 50 open orders.

Usage::

    python benchmarks/bench_emergency.py [--orders 50] [--runs 5] [--flatten]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from cryptoj.config import EmergencyConfig, ExecutionConfig, RiskConfig
from cryptoj.emergency_manager import EmergencyManager, Trigger
from cryptoj.model.instruments import Product
from cryptoj.model.money import Side
from cryptoj.model.orders import Order, OrderKind, OrderSpec, OrderStatus
from cryptoj.model.positions import Balance as ModelBalance
from cryptoj.order_execution import OrderManager
from cryptoj.risk_management import RiskEngine
from cryptoj.storage import Storage
from cryptoj.venues.coinbase.auth import load_cdp_key
from cryptoj.venues.coinbase.rest import CoinbaseRestClient
from cryptoj.venues.coinbase.venue import CoinbaseVenue
from cryptoj.venues.simulated.server import SimConfig, SimulatorServer

PID = "BTC-USD"
OPEN = {"OPEN", "PENDING", "QUEUED", "CANCEL_QUEUED"}


class _Context:
    """The RiskContext for the benchmark: only what the order-placing path reads."""

    def __init__(self, om: OrderManager) -> None:
        self.om = om

    def product(self, product_id: str) -> Product | None:
        return self.om.product(product_id)

    def mid_price(self, product_id: str) -> Decimal | None:
        return None

    def data_age(self, product_id: str) -> float | None:
        return 0.0

    def position_size(self, product_id: str) -> Decimal:
        return Decimal(0)

    def balance(self, currency: str) -> ModelBalance:
        return ModelBalance(currency, Decimal(10**9))

    def open_orders(self) -> list[Order]:
        return self.om.open_orders()

    def fee_rate(self, product_id: str) -> Decimal:
        return Decimal("0.006")

    def product_ids(self) -> list[str]:
        return [PID, "ETH-USD"]


async def one_run(workdir: Path, n_orders: int, flatten: bool, run: int) -> tuple[float, float, int]:
    balances = {"USD": Decimal(10**7), "BTC": Decimal("0.05"), "ETH": Decimal("0.5")}
    sim = SimulatorServer(SimConfig(market_rate=0.0, create_api_key=workdir / f"key-{run}.json", balances=balances,
                                    private_rate_limit=10_000, public_rate_limit=10_000, seed=run + 1))
    await sim.start()
    storage = await Storage.open(f"sqlite+aiosqlite:///{workdir / f'bench-{run}.db'}")
    try:
        assert sim.key_file is not None
        rest = CoinbaseRestClient(sim.base_url, load_cdp_key(sim.key_file), timeout=5.0, max_retries=3, backoff_base=0.01,
                                  backoff_cap=0.05, rng=random.Random(run))
        venue = CoinbaseVenue(rest, sim.ws_user_url, heartbeat_interval=0.5, rng=random.Random(run))
        risk_holder: list[RiskEngine] = []
        om = OrderManager(venue, storage, pre_trade=lambda spec: risk_holder[0].check(spec),
                          config=ExecutionConfig(poll_interval_seconds=0.05))
        await om.start()
        risk = RiskEngine(RiskConfig(check_balance=False), _Context(om), lambda: datetime.now(UTC))
        risk_holder.append(risk)
        manager = EmergencyManager(
            orders=om, risk=risk, storage=storage, state_dir=workdir / f"state-{run}",
            config=EmergencyConfig(flatten_on_kill=flatten), clock=lambda: datetime.now(UTC),
            products=lambda: {p: om.product(p) for p in (PID, "ETH-USD")}, cancel_venue_orders=venue.cancel_orders,
        )
        bid = Decimal(sim.admin.book(PID, 1)["bids"][0][0])
        specs = [
            OrderSpec(om.new_client_order_id(), PID, Side.BUY, OrderKind.LIMIT, base_size=Decimal("0.001"),
                      limit_price=(bid * Decimal("0.9") - i).quantize(Decimal("0.01")))
            for i in range(n_orders)
        ]
        orders = await asyncio.gather(*(om.submit(s) for s in specs))
        assert all(o.status in (OrderStatus.SUBMITTED, OrderStatus.OPEN) for o in orders)
        open_before = [o for o in sim.admin.orders() if o.status in OPEN]
        assert len(open_before) == n_orders, f"{len(open_before)} open at the simulator, expected {n_orders}"

        start = time.perf_counter()
        report = await manager.trigger(Trigger.MANUAL, "benchmark")
        elapsed = time.perf_counter() - start

        assert report.confirmed, report.as_payload()
        still_open = [o for o in sim.admin.orders() if o.status in OPEN]
        assert not still_open, f"{len(still_open)} orders still open at the simulator"
        await manager.close()
        await om.close()
        return elapsed, report.elapsed_seconds, report.cancel_rounds
    finally:
        await storage.close()
        await sim.stop()


async def main_async(n_orders: int, runs: int, flatten: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-emergency-") as tmp:
        results = [await one_run(Path(tmp), n_orders, flatten, run) for run in range(runs)]
    walls = [r[0] for r in results]
    print(f"kill switch, {n_orders} open orders, flatten={flatten}, {runs} runs (loopback simulator, SQLite storage)")
    for i, (wall, inner, rounds) in enumerate(results):
        print(f"  run {i}: trigger -> confirmed {wall * 1000:8.1f} ms"
              f"   (report.elapsed {inner * 1000:7.1f} ms, cancel rounds {rounds})")
    print(f"  min {min(walls) * 1000:.1f} ms   median {statistics.median(walls) * 1000:.1f} ms   max {max(walls) * 1000:.1f} ms"
          f"   goal <= 2000 ms: {'met' if max(walls) <= 2.0 else 'NOT met'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=50)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--flatten", action="store_true", help="also market-sell the base balances and confirm flat")
    args = parser.parse_args()
    asyncio.run(main_async(args.orders, args.runs, args.flatten))


if __name__ == "__main__":
    main()
