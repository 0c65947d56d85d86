"""The order manager against the simulator over loopback: real CoinbaseVenue, real storage, real sockets.

Every test checks the final state against the simulator's own records (its admin
endpoint ``/sim/admin/orders`` and ``/sim/admin/fills``), not only our view. Each runs against a
SQLite file (order-intent journal) and, when ``CRYPTOJ_TEST_POSTGRES_URL`` is set, PostgreSQL.
"""

from __future__ import annotations

import asyncio
import os
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from cryptoj.config import ExecutionConfig
from cryptoj.errors import OrderRejected, RiskRejected
from cryptoj.model.money import Side
from cryptoj.model.orders import OrderKind, OrderSpec, OrderStatus, StopDirection, TimeInForce
from cryptoj.order_execution import OrderManager, OrderUpdate
from cryptoj.storage import Storage
from cryptoj.venues.coinbase.auth import load_cdp_key
from cryptoj.venues.coinbase.rest import CoinbaseRestClient
from cryptoj.venues.coinbase.venue import CoinbaseVenue
from cryptoj.venues.simulated.server import SimulatorServer

pytestmark = pytest.mark.integration

PID = "BTC-USD"
DEADLINE = 15.0


async def wait_for(predicate: Callable[[], Any], what: str, timeout: float = DEADLINE) -> None:
    """Poll ``predicate`` until true (generous deadline; never a fixed sleep)."""
    async with asyncio.timeout(timeout):
        while True:
            result = predicate()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return
            await asyncio.sleep(0.01)
    raise AssertionError(what)  # pragma: no cover - timeout raises first


async def wait_stored(storage: Storage, coid: str, status: OrderStatus, filled: Decimal | None = None) -> None:
    """Wait until storage holds ``coid`` in ``status`` (and ``filled``): memory changes first, storage right after."""

    async def check() -> bool:
        order = await storage.load_order(coid)
        return order is not None and order.status is status and (filled is None or order.filled_size == filled)

    await wait_for(check, f"{coid} stored as {status.value}")


async def admin_get(sim: SimulatorServer, path: str) -> Any:
    async with aiohttp.ClientSession() as session, session.get(f"{sim.base_url}/sim/admin/{path}") as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def admin_post(sim: SimulatorServer, path: str, body: Any) -> Any:
    async with aiohttp.ClientSession() as session, session.post(f"{sim.base_url}/sim/admin/{path}", json=body) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def venue_orders(sim: SimulatorServer) -> dict[str, dict[str, Any]]:
    """The simulator's records of the user account's orders, by client_order_id."""
    data = await admin_get(sim, "orders")
    return {o["client_order_id"]: o for o in data["orders"]}


async def venue_fills(sim: SimulatorServer) -> list[dict[str, Any]]:
    return list((await admin_get(sim, "fills"))["fills"])


def make_venue(sim: SimulatorServer, *, max_retries: int = 3) -> CoinbaseVenue:
    assert sim.key_file is not None
    rest = CoinbaseRestClient(
        sim.base_url, load_cdp_key(sim.key_file), timeout=5.0, max_retries=max_retries, backoff_base=0.01, backoff_cap=0.05,
        rng=random.Random(3),
    )
    return CoinbaseVenue(
        rest, sim.ws_user_url, heartbeat_interval=sim.config.heartbeat_interval, backoff_base=0.02, backoff_cap=0.1,
        rng=random.Random(5),
    )


FAST = ExecutionConfig(
    resolve_backoff_seconds=0.01, poll_interval_seconds=0.05, fill_check_interval_seconds=0.2, fill_lookback_seconds=60
)


PG_URL = os.environ.get("CRYPTOJ_TEST_POSTGRES_URL")


@pytest.fixture(params=["sqlite", "postgresql"])
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    """A SQLite file (with its order-intent journal), or PostgreSQL in a fresh schema (the database write-ahead)."""
    if request.param == "sqlite":
        store = await Storage.open(f"sqlite+aiosqlite:///{tmp_path / 'om.db'}")
        yield store
        await store.close()
        return
    if not PG_URL:
        pytest.skip("PostgreSQL order-manager tests need CRYPTOJ_TEST_POSTGRES_URL (source scripts/start_postgres.sh)")
    schema = f"om_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(PG_URL)
    try:
        async with admin.begin() as conn:
            await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        store = await Storage.open(PG_URL, schema=schema)
        try:
            yield store
        finally:
            await store.close()
    finally:
        async with admin.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        await admin.dispose()


@pytest.fixture
async def make_om(storage: Storage) -> AsyncIterator[Callable[..., Awaitable[OrderManager]]]:
    made: list[OrderManager] = []

    async def factory(sim: SimulatorServer, **kwargs: Any) -> OrderManager:
        max_retries = kwargs.pop("max_retries", 3)
        kwargs.setdefault("config", FAST)
        om = OrderManager(make_venue(sim, max_retries=max_retries), kwargs.pop("storage", storage), **kwargs)
        made.append(om)
        await om.start()
        await wait_for(lambda: om.stream_connected, "user stream connected")
        return om

    yield factory
    for om in made:
        await om.close()


def best(sim: SimulatorServer, pid: str = PID) -> tuple[Decimal, Decimal]:
    book = sim.admin.book(pid, 1)
    return Decimal(book["bids"][0][0]), Decimal(book["asks"][0][0])


def limit(coid: str, side: Side, size: str, price: Decimal, **kw: Any) -> OrderSpec:
    return OrderSpec(coid, PID, side, OrderKind.LIMIT, base_size=Decimal(size), limit_price=price, **kw)


def market(coid: str, side: Side, size: str) -> OrderSpec:
    return OrderSpec(coid, PID, side, OrderKind.MARKET, base_size=Decimal(size), time_in_force=TimeInForce.IOC)


async def assert_storage_equals_venue(sim: SimulatorServer, storage: Storage) -> None:
    """Every venue order of the user account is stored with the same status, filled size and fees; fills match by trade id."""
    records = await venue_orders(sim)
    stored = {o.client_order_id: o for o in await storage.all_orders()}
    for coid, rec in records.items():
        assert coid in stored, f"venue order {coid} ({rec['status']}) missing from storage"
        order = stored[coid]
        assert order.venue_order_id == rec["order_id"]
        assert order.filled_size == Decimal(rec["filled_size"]), coid
        assert order.fees == Decimal(rec["total_fees"]), coid
        venue_status = rec["status"]
        expected = {"OPEN": {OrderStatus.OPEN, OrderStatus.PARTIALLY_FILLED}, "FILLED": {OrderStatus.FILLED},
                    "CANCELLED": {OrderStatus.CANCELLED}, "EXPIRED": {OrderStatus.EXPIRED}}[venue_status]
        assert order.status in expected, (coid, order.status, venue_status)
    for coid, order in stored.items():
        if order.venue_order_id is not None:
            assert coid in records, f"stored order {coid} has venue id {order.venue_order_id} the venue does not know"
    trade_ids = sorted(f["trade_id"] for f in await venue_fills(sim))
    stored_trades = sorted(f.trade_id for o in stored.values() for f in o.fills.values())
    assert stored_trades == trade_ids


# --- the happy paths ----------------------------------------------------------------------------------


async def test_limit_order_write_ahead_open_then_cancel(sim: SimulatorServer, storage: Storage, make_om: Any) -> None:
    om: OrderManager = await make_om(sim)
    updates = om.updates()
    bid, _ask = best(sim)
    price = bid - Decimal("100.005")  # off the price increment: rounded down for a buy
    order = await om.submit(limit("lim-1", Side.BUY, "0.0100000049", price))
    assert order.spec.limit_price == (bid - Decimal("100.01"))
    assert order.spec.base_size == Decimal("0.01000000")
    assert order.status in (OrderStatus.SUBMITTED, OrderStatus.OPEN)
    journal = [e.kind for e in await storage.journal()]
    assert journal[:2] == ["reconcile.ok", "order.new"]
    assert "order.ack" in journal
    await wait_stored(storage, "lim-1", OrderStatus.OPEN)
    records = await venue_orders(sim)
    assert records["lim-1"]["status"] == "OPEN"
    cancelled = await om.cancel("lim-1")
    assert cancelled.status is OrderStatus.CANCELLED
    assert (await venue_orders(sim))["lim-1"]["status"] == "CANCELLED"
    seen: list[OrderStatus] = []
    async with asyncio.timeout(DEADLINE):
        async for update in updates:
            seen.append(update.order.status)
            if update.order.status is OrderStatus.CANCELLED:
                break
    assert seen[0] is OrderStatus.SUBMITTED and seen[-1] is OrderStatus.CANCELLED
    assert await om.cancel("lim-1") == om.order("lim-1")  # cancelling a finished order is a no-op
    await assert_storage_equals_venue(sim, storage)


async def test_partial_fills_across_several_updates_are_exact(sim: SimulatorServer, storage: Storage, make_om: Any) -> None:
    om: OrderManager = await make_om(sim)
    bid, ask = best(sim)
    assert ask - bid > Decimal("0.02")
    price = ask - Decimal("0.01")  # the new best ask: the taker hits us first
    await om.submit(limit("part-1", Side.SELL, "0.5", price))
    await wait_stored(storage, "part-1", OrderStatus.OPEN)
    fills_seen: list[OrderUpdate] = []
    updates = om.updates()
    for size, expected in (("0.1", "0.1"), ("0.15", "0.25"), ("0.05", "0.3")):
        sim.admin.trade(PID, Side.BUY, Decimal(size))
        await wait_stored(storage, "part-1", OrderStatus.PARTIALLY_FILLED, Decimal(expected))
    order = om.order("part-1")
    assert order is not None
    assert order.status is OrderStatus.PARTIALLY_FILLED
    rec = (await venue_orders(sim))["part-1"]
    assert order.filled_size == Decimal(rec["filled_size"]) == Decimal("0.3")
    assert order.average_price == Decimal(rec["average_filled_price"]) == price
    assert order.fees == Decimal(rec["total_fees"]) == price * Decimal("0.3") * Decimal("0.004")  # maker fee
    assert len(order.fills) == 3
    async with asyncio.timeout(DEADLINE):
        async for update in updates:
            if update.fill is not None:
                fills_seen.append(update)
            if len(fills_seen) == 3:
                break
    assert [u.fill.size for u in fills_seen if u.fill] == [Decimal("0.1"), Decimal("0.15"), Decimal("0.05")]
    # the rest fills: status FILLED from the fills themselves
    sim.admin.trade(PID, Side.BUY, Decimal("0.2"))
    await wait_stored(storage, "part-1", OrderStatus.FILLED)
    assert om.stats["duplicate_fills"] >= 0
    await assert_storage_equals_venue(sim, storage)


async def test_market_order_fills_and_daily_stats(sim: SimulatorServer, storage: Storage, make_om: Any) -> None:
    om: OrderManager = await make_om(sim)
    await om.submit(market("mkt-buy", Side.BUY, "0.2"))
    await wait_stored(storage, "mkt-buy", OrderStatus.FILLED)
    await om.submit(market("mkt-sell", Side.SELL, "0.2"))
    await wait_stored(storage, "mkt-sell", OrderStatus.FILLED)
    buy, sell = om.order("mkt-buy"), om.order("mkt-sell")
    assert buy is not None and sell is not None
    stats = await om.daily_stats()
    ps = stats.products[PID]
    fills = await venue_fills(sim)
    assert ps.trades == len(fills) == len(buy.fills) + len(sell.fills)
    assert ps.volume == sum(Decimal(f["price"]) * Decimal(f["size"]) for f in fills)
    assert ps.fees == sum(Decimal(f["commission"]) for f in fills)
    expected_pnl = sell.filled_value - buy.filled_value - buy.fees - sell.fees
    assert ps.realised_pnl == expected_pnl
    assert ps.wins + ps.losses == len(sell.fills)
    assert stats.total.trades == ps.trades and stats.total.realised_pnl == ps.realised_pnl
    await assert_storage_equals_venue(sim, storage)


async def test_product_rules_and_venue_rejection(sim: SimulatorServer, storage: Storage, make_om: Any) -> None:
    om: OrderManager = await make_om(sim)
    with pytest.raises(RiskRejected) as too_small:
        await om.submit(limit("tiny", Side.BUY, "0.000000001", Decimal(1000)))
    assert too_small.value.reason == "ORDER_SIZE_TOO_SMALL"
    stored = await storage.load_order("tiny")
    assert stored is not None and stored.status is OrderStatus.REJECTED and stored.reject_reason == "ORDER_SIZE_TOO_SMALL"
    with pytest.raises(OrderRejected) as refused:  # far more BTC than the account holds
        await om.submit(market("broke", Side.SELL, "50"))
    assert refused.value.reason == "INSUFFICIENT_FUND"
    stored = await storage.load_order("broke")
    assert stored is not None and stored.status is OrderStatus.REJECTED and stored.reject_reason == "INSUFFICIENT_FUND"
    assert "tiny" not in await venue_orders(sim)
    await assert_storage_equals_venue(sim, storage)


# --- faults -----------------------------------------------------------------------------------------------


async def test_accept_then_drop_gives_exactly_one_order(sim: SimulatorServer, storage: Storage, make_om: Any) -> None:
    om: OrderManager = await make_om(sim, max_retries=0)
    await admin_post(sim, "faults", {"drop_order_create_next": 1})
    bid, _ = best(sim)
    order = await om.submit(limit("drop-1", Side.BUY, "0.01", bid - Decimal(50)))
    assert order.status in (OrderStatus.OPEN, OrderStatus.SUBMITTED)
    assert om.stats["ambiguous"] == 1 and om.stats["resolved"] == 1
    records = await venue_orders(sim)
    assert list(records) == ["drop-1"]
    assert order.venue_order_id == records["drop-1"]["order_id"]
    faults = await admin_get(sim, "faults")
    assert faults["fired"]["drop_order_create"] == 1
    kinds = [e.kind for e in await storage.journal()]
    assert kinds.index("order.new") < kinds.index("order.unknown")
    # a market order dropped too: found FILLED, not sent twice
    await admin_post(sim, "faults", {"drop_order_create_next": 1})
    filled = await om.submit(market("drop-2", Side.BUY, "0.01"))
    await wait_stored(storage, "drop-2", OrderStatus.FILLED)
    assert filled.client_order_id == "drop-2"
    assert sorted(await venue_orders(sim)) == ["drop-1", "drop-2"]
    await assert_storage_equals_venue(sim, storage)


async def test_429_storm_and_5xx_back_off_without_duplicates(sim: SimulatorServer, storage: Storage, make_om: Any) -> None:
    om: OrderManager = await make_om(sim, max_retries=4)
    bid, _ = best(sim)
    await admin_post(sim, "faults", {"http_429_next": 3})
    first = await om.submit(limit("rl-1", Side.BUY, "0.01", bid - Decimal(40)))
    assert first.status in (OrderStatus.SUBMITTED, OrderStatus.OPEN)
    await admin_post(sim, "faults", {"http_5xx_next": 3})
    second = await om.submit(limit("5xx-1", Side.BUY, "0.01", bid - Decimal(41)))
    assert second.venue_order_id is not None
    # a storm longer than the client's retries: refused as RATE_LIMITED, nothing placed
    await admin_post(sim, "faults", {"http_429_next": 50})
    with pytest.raises(Exception) as storm:
        await om.submit(limit("rl-2", Side.BUY, "0.01", bid - Decimal(42)))
    assert type(storm.value).__name__ == "RateLimited"
    await admin_post(sim, "faults/clear", {})
    stored = await storage.load_order("rl-2")
    assert stored is not None and stored.status is OrderStatus.REJECTED and stored.reject_reason == "RATE_LIMITED"
    # 5xx on every attempt: ambiguous, resolved by client_order_id once the venue answers again
    await admin_post(sim, "faults", {"http_5xx_next": 5})
    third = await om.submit(limit("5xx-2", Side.BUY, "0.01", bid - Decimal(43)))
    assert third.status in (OrderStatus.SUBMITTED, OrderStatus.OPEN)
    records = await venue_orders(sim)
    assert sorted(records) == ["5xx-1", "5xx-2", "rl-1"]
    fired = (await admin_get(sim, "faults"))["fired"]
    assert fired["http_429"] >= 3 + 5 and fired["http_5xx"] >= 3 + 5
    rest = om.venue.rest  # type: ignore[attr-defined]
    assert rest.rate_limited >= 3 + 5 and rest.retries >= fired["http_429"] + fired["http_5xx"] - 2  # it backed off and retried
    for coid in ("rl-1", "5xx-1", "5xx-2"):
        await wait_stored(storage, coid, OrderStatus.OPEN)
    await assert_storage_equals_venue(sim, storage)


async def test_stream_drop_snapshot_replay_counts_no_fill_twice(sim: SimulatorServer, storage: Storage, make_om: Any) -> None:
    om: OrderManager = await make_om(sim)
    _bid, ask = best(sim)
    await om.submit(limit("snap-1", Side.SELL, "0.4", ask - Decimal("0.01")))
    await wait_stored(storage, "snap-1", OrderStatus.OPEN)
    sim.admin.trade(PID, Side.BUY, Decimal("0.1"))
    await wait_stored(storage, "snap-1", OrderStatus.PARTIALLY_FILLED, Decimal("0.1"))
    snapshots_before = om.stats["stream_snapshots"]
    # drop every user connection: the reconnect replays a snapshot of the order (cumulative 0.1)
    await admin_post(sim, "faults", {"ws_drop_after": 1})
    await wait_for(lambda: om.stats["stream_downs"] >= 1, "stream dropped")
    await admin_post(sim, "faults/clear", {})
    await wait_for(lambda: om.stats["stream_snapshots"] > snapshots_before and om.stream_connected, "snapshot replayed")
    order = om.order("snap-1")
    assert order is not None and order.filled_size == Decimal("0.1") and len(order.fills) == 1
    assert om.stats["resyncs"] >= 1
    await assert_storage_equals_venue(sim, storage)


async def test_fills_missed_while_disconnected_are_recovered_from_rest(
    sim: SimulatorServer, storage: Storage, make_om: Any
) -> None:
    om: OrderManager = await make_om(sim)
    _, ask = best(sim)
    await om.submit(limit("miss-1", Side.SELL, "0.4", ask - Decimal("0.01")))
    await wait_stored(storage, "miss-1", OrderStatus.OPEN)
    # stall the feeds so the client declares the stream dead, and trade while it is gone
    await admin_post(sim, "faults", {"ws_stall_seconds": 3.0})
    await wait_for(lambda: not om.stream_connected, "stream declared down")
    sim.admin.trade(PID, Side.BUY, Decimal("0.15"))
    sim.admin.trade(PID, Side.BUY, Decimal("0.25"))
    await wait_stored(storage, "miss-1", OrderStatus.FILLED)
    order = om.order("miss-1")
    assert order is not None and order.filled_size == Decimal("0.4") and len(order.fills) == 2
    await wait_for(lambda: om.stream_connected, "stream back")
    await assert_storage_equals_venue(sim, storage)


# --- reconciliation ----------------------------------------------------------------------------------------


async def test_startup_reconciliation_adopts_external_orders(sim: SimulatorServer, storage: Storage, make_om: Any) -> None:
    bid, _ = best(sim)
    placed = await admin_post(sim, "orders", {
        "account": "user", "client_order_id": "manual-1", "product_id": PID, "side": "BUY",
        "order_configuration": {"limit_limit_gtc": {"base_size": "0.02", "limit_price": str(bid - Decimal(30))}},
    })
    assert placed["success"], placed
    om: OrderManager = await make_om(sim)
    report = om.last_reconciliation
    assert report is not None and report.ok, report and report.summary()
    assert report.adopted == ["manual-1"] and report.venue_open_orders == 1
    adopted = om.order("manual-1")
    assert adopted is not None and adopted.external and adopted.status is OrderStatus.OPEN
    assert "USD" in report.balances
    assert (await storage.latest_balances())["USD"].hold == report.balances["USD"].hold
    cancelled = await om.cancel_all()
    assert [o.status for o in cancelled] == [OrderStatus.CANCELLED]
    assert (await venue_orders(sim))["manual-1"]["status"] == "CANCELLED"
    await assert_storage_equals_venue(sim, storage)


async def test_startup_reconciliation_cancels_external_by_config(sim: SimulatorServer, storage: Storage, make_om: Any) -> None:
    bid, _ = best(sim)
    await admin_post(sim, "orders", {
        "account": "user", "client_order_id": "manual-2", "product_id": PID, "side": "BUY",
        "order_configuration": {"limit_limit_gtc": {"base_size": "0.02", "limit_price": str(bid - Decimal(30))}},
    })
    config = ExecutionConfig(external_orders="cancel", resolve_backoff_seconds=0.01, poll_interval_seconds=0.05)
    om: OrderManager = await make_om(sim, config=config)
    report = om.last_reconciliation
    assert report is not None and report.ok
    assert report.adopted == [] and len(report.cancelled_external) == 1
    assert (await venue_orders(sim))["manual-2"]["status"] == "CANCELLED"
    # the cancel's own user-channel update makes it known: it is kept for the record, EXTERNAL and CANCELLED
    await wait_stored(storage, "manual-2", OrderStatus.CANCELLED)
    stored = await storage.load_order("manual-2")
    assert stored is not None and stored.external
    await assert_storage_equals_venue(sim, storage)


async def test_replace_and_cancel_all(sim: SimulatorServer, storage: Storage, make_om: Any) -> None:
    om: OrderManager = await make_om(sim)
    bid, _ = best(sim)
    await om.submit(limit("rep-1", Side.BUY, "0.03", bid - Decimal(20)))
    new = await om.replace("rep-1", price=bid - Decimal(21))
    assert new.client_order_id != "rep-1" and new.spec.limit_price == bid - Decimal(21) and new.spec.base_size == Decimal("0.03")
    assert om.order("rep-1").status is OrderStatus.CANCELLED  # type: ignore[union-attr]
    for i in range(5):
        await om.submit(limit(f"many-{i}", Side.BUY, "0.01", bid - Decimal(60 + i)))
    done = await om.cancel_all(PID)
    assert len(done) == 6 and all(o.status is OrderStatus.CANCELLED for o in done)
    assert await om.venue_open_orders() == []
    assert om.open_orders() == []
    await assert_storage_equals_venue(sim, storage)


async def test_coinbase_venue_rest_side(sim: SimulatorServer) -> None:
    """The adapter's own REST work: products, fee tier, balances, find_order, fills mapped to client ids."""
    venue = make_venue(sim)
    await venue.start()
    try:
        products = {p.product_id: p for p in await venue.products()}
        assert PID in products and products[PID].base_increment == Decimal("0.00000001")
        tier = await venue.fee_tier()
        assert tier.maker_fee_rate == Decimal("0.004") and tier.taker_fee_rate == Decimal("0.006")
        balances = await venue.balances()
        assert balances["USD"].available == Decimal(100000) and balances["BTC"].available == Decimal(1)
        assert await venue.find_order("nobody") is None
        # an order placed outside this adapter (the admin API, same account): its fills are still named by our id
        placed = await admin_post(sim, "orders", {
            "account": "user", "client_order_id": "outside-1", "product_id": PID, "side": "BUY",
            "order_configuration": {"market_market_ioc": {"base_size": "0.01"}},
        })
        assert placed["success"]
        fills = await venue.fills()
        assert fills and {f.client_order_id for f in fills} == {"outside-1"}
        assert [f.time for f in fills] == sorted(f.time for f in fills)
        assert await venue.fills(since=fills[-1].time) == [f for f in fills if f.time >= fills[-1].time]
        found = await venue.find_order("outside-1", product_id=PID)
        assert found is not None and found.status is OrderStatus.FILLED
        assert await venue.open_orders(PID) == []
    finally:
        await venue.close()


async def test_every_order_kind_round_trips(sim: SimulatorServer, storage: Storage, make_om: Any) -> None:
    """Each kind of the model is placed, tracked and (when it rests) cancelled; the venue's records agree."""
    om: OrderManager = await make_om(sim)
    bid, ask = best(sim)
    end = datetime.now(UTC) + timedelta(hours=1)
    specs = [
        OrderSpec("k-mkt-quote", PID, Side.BUY, OrderKind.MARKET, quote_size=Decimal("100.005"), time_in_force=TimeInForce.IOC),
        OrderSpec("k-mkt-fok", PID, Side.SELL, OrderKind.MARKET, base_size=Decimal("0.001"), time_in_force=TimeInForce.FOK),
        OrderSpec("k-lim-gtd", PID, Side.BUY, OrderKind.LIMIT, base_size=Decimal("0.01"), limit_price=bid - Decimal(70),
                  time_in_force=TimeInForce.GTD, end_time=end),
        OrderSpec("k-lim-post", PID, Side.SELL, OrderKind.LIMIT, base_size=Decimal("0.01"), limit_price=ask + Decimal(70),
                  post_only=True),
        OrderSpec("k-lim-ioc", PID, Side.BUY, OrderKind.LIMIT, base_size=Decimal("0.01"), limit_price=ask + Decimal(5),
                  time_in_force=TimeInForce.IOC),
        OrderSpec("k-stop", PID, Side.SELL, OrderKind.STOP_LIMIT, base_size=Decimal("0.01"), limit_price=bid - Decimal(200),
                  stop_price=bid - Decimal(190), stop_direction=StopDirection.STOP_DOWN),
        OrderSpec("k-bracket", PID, Side.SELL, OrderKind.BRACKET, base_size=Decimal("0.01"), limit_price=ask + Decimal(300),
                  stop_trigger_price=bid - Decimal(300)),
    ]
    for spec in specs:
        order = await om.submit(spec)
        assert order.venue_order_id is not None, spec.client_order_id
    assert om.order("k-mkt-quote").spec.quote_size == Decimal("100.00")  # type: ignore[union-attr]
    for coid in ("k-mkt-quote", "k-mkt-fok"):
        await wait_stored(storage, coid, OrderStatus.FILLED)

    async def ioc_done() -> bool:  # filled, or partly filled and the rest cancelled: whatever the venue did
        stored = await storage.load_order("k-lim-ioc")
        return stored is not None and stored.is_terminal

    await wait_for(ioc_done, "IOC limit finished")
    resting = ("k-lim-gtd", "k-lim-post", "k-stop", "k-bracket")
    for coid in resting:
        await wait_stored(storage, coid, OrderStatus.OPEN)
    moved = await om.replace("k-stop", price=bid - Decimal(210))
    assert moved.spec.stop_price == bid - Decimal(190) and moved.spec.kind is OrderKind.STOP_LIMIT
    done = await om.cancel_all()
    assert {o.client_order_id for o in done} == {*resting, moved.client_order_id} - {"k-stop"}
    assert all(o.status is OrderStatus.CANCELLED for o in done)
    records = await venue_orders(sim)
    cancelled_at_venue = {c for c, r in records.items() if r["status"] == "CANCELLED"} - {"k-lim-ioc"}  # IOC: the venue's call
    assert cancelled_at_venue == {*resting, moved.client_order_id}
    await assert_storage_equals_venue(sim, storage)
