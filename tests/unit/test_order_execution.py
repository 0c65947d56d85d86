"""Unit tests of the order manager over an in-memory venue (tests/unit/fake_venue.py) and in-memory SQLite.

The integration tests (tests/integration/test_order_execution_sim.py, test_crash_recovery.py) run it
against the simulator over loopback; these cover the decisions one by one, errors included.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from cryptoj.config import ExecutionConfig
from cryptoj.errors import (
    AmbiguousOutcome,
    AuthenticationFailed,
    InvalidValue,
    MalformedMessage,
    OrderNotFound,
    OrderRejected,
    RateLimited,
    RiskRejected,
    StorageError,
    TradingHalted,
    VenueUnavailable,
)
from cryptoj.model.money import Side
from cryptoj.model.orders import Fill, Liquidity, Order, OrderKind, OrderSpec, OrderStatus, TimeInForce
from cryptoj.order_execution import DailyStats, OrderManager, ProductDayStats, ReconciliationReport
from cryptoj.storage import Storage
from cryptoj.venues.base import CancelResult, UserStreamConnected, UserStreamDown, Venue
from tests.unit.fake_venue import BTC, T0, FakeVenue, limit_spec, market_spec

FAST = ExecutionConfig(
    resolve_attempts=3, resolve_backoff_seconds=0.01, poll_interval_seconds=0.01, fill_check_interval_seconds=0.01
)


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class Sleeps:
    """Records requested sleeps and yields to the loop (no wall-clock waiting)."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        await asyncio.sleep(0)


@pytest.fixture
async def storage() -> AsyncIterator[Storage]:
    store = await Storage.open("sqlite+aiosqlite://")
    yield store
    await store.close()


@pytest.fixture
def venue() -> FakeVenue:
    return FakeVenue()


def manager(venue: Venue, storage: Storage, **kw: Any) -> OrderManager:
    kw.setdefault("config", FAST)
    kw.setdefault("clock", Clock())
    kw.setdefault("sleep", Sleeps())
    return OrderManager(venue, storage, **kw)


async def started(venue: Venue, storage: Storage, **kw: Any) -> OrderManager:
    om = manager(venue, storage, **kw)
    await om.start(background=False)
    return om


# --- results ----------------------------------------------------------------------------------------


def test_report_summary_and_payload() -> None:
    report = ReconciliationReport(started_at=T0)
    assert report.ok and report.summary().startswith("reconciliation ok")
    report.problems.append("order x: stored OPEN, venue says FILLED")
    report.adopted.append("ext-1")
    text = report.summary()
    assert "FAILED (1 problem(s))" in text and "order x: stored OPEN" in text and "adopted=1" in text
    payload = report.as_dict()
    assert payload["ok"] is False and payload["adopted"] == ["ext-1"] and payload["started_at"] == T0.isoformat()


def test_day_stats_win_rate_and_add() -> None:
    stats = ProductDayStats()
    assert stats.win_rate is None
    stats.wins, stats.losses = 3, 1
    assert stats.win_rate == Decimal("0.75")
    total = ProductDayStats()
    total.add(stats)
    total.add(ProductDayStats(trades=2, volume=Decimal(5), fees=Decimal("0.1"), realised_pnl=Decimal(-1), wins=0, losses=1))
    assert (total.trades, total.volume, total.wins, total.losses, total.realised_pnl) == (2, Decimal(5), 3, 2, Decimal(-1))


def test_new_client_order_ids_are_unique() -> None:
    ids = {OrderManager.new_client_order_id() for _ in range(100)}
    assert len(ids) == 100


# --- lifecycle and lookups -----------------------------------------------------------------------------


async def test_start_loads_products_and_reconciles(venue: FakeVenue, storage: Storage) -> None:
    om = manager(venue, storage)
    report = await om.start(background=False)
    assert report is not None and report.ok and venue.started == 1
    assert om.product("BTC-USD") is BTC
    with pytest.raises(InvalidValue, match="unknown product"):
        om.product("DOGE-USD")
    with pytest.raises(InvalidValue, match="already called"):
        await om.start()
    assert "USD" in report.balances and (await storage.latest_balances())["USD"].available == Decimal(1000)
    assert report.balance_changes == {"BTC": (Decimal(0), Decimal(1)), "USD": (Decimal(0), Decimal(1000))}  # first snapshot
    venue.balances_data["USD"] = dataclasses.replace(venue.balances_data["USD"], available=Decimal(900), hold=Decimal(50))
    del venue.balances_data["BTC"]
    again = await om.reconcile()
    assert again.ok and again.balance_changes == {"BTC": (Decimal(1), Decimal(0)), "USD": (Decimal(1000), Decimal(950))}
    assert again.as_dict()["balance_changes"] == {"BTC": ["1", "0"], "USD": ["1000", "950"]}
    assert repr(om) == "OrderManager(venue='fake', orders=0)"
    await om.close()
    await om.close()  # idempotent
    assert venue.closed == 1
    with pytest.raises(VenueUnavailable, match="closed"):
        await om.submit(limit_spec("late"))
    stream = om.updates()
    assert [u async for u in stream] == []


async def test_products_by_mapping_or_lookup(venue: FakeVenue, storage: Storage) -> None:
    om = await started(venue, storage, products={"BTC-USD": BTC}, config=ExecutionConfig(reconcile_on_start=False))
    assert om.last_reconciliation is None and om.product("BTC-USD") is BTC and "products" not in venue.calls
    om2 = manager(venue, storage, products=lambda pid: BTC if pid == "BTC-USD" else None)
    assert om2.product("BTC-USD") is BTC
    with pytest.raises(InvalidValue):
        om2.product("ETH-USD")


async def test_context_manager_runs_the_loops(venue: FakeVenue, storage: Storage) -> None:
    async with manager(venue, storage) as om:
        assert len(om._tasks) == 3
        venue.push(UserStreamConnected(reconnect=False))
        async with asyncio.timeout(5):
            while not om.stream_connected:
                await asyncio.sleep(0)
    assert om._tasks == []


# --- prepare: rounding and product rules ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "field", "expected"),
    [
        (limit_spec("a", "0.01239", "100.019"), "base_size", Decimal("0.0123")),
        (limit_spec("b", "0.01239", "100.019"), "limit_price", Decimal("100.01")),
        (limit_spec("c", "0.01", "100.011", Side.SELL), "limit_price", Decimal("100.02")),
        (OrderSpec("d", "BTC-USD", Side.BUY, OrderKind.MARKET, quote_size=Decimal("10.009"), time_in_force=TimeInForce.IOC),
         "quote_size", Decimal("10.00")),
    ],
)
async def test_prepare_rounds_to_increments(
    venue: FakeVenue, storage: Storage, spec: OrderSpec, field: str, expected: Decimal
) -> None:
    om = manager(venue, storage, products={"BTC-USD": BTC})
    assert getattr(om.prepare(spec), field) == expected


async def test_prepare_keeps_an_exact_spec(venue: FakeVenue, storage: Storage) -> None:
    om = manager(venue, storage, products={"BTC-USD": BTC})
    spec = limit_spec("exact", "0.01", "100")
    assert om.prepare(spec) is spec


@pytest.mark.parametrize(
    ("spec", "product", "reason"),
    [
        (limit_spec("s1", "0.0009"), BTC, "ORDER_SIZE_TOO_SMALL"),
        (limit_spec("s2", "0.00001"), BTC, "ORDER_SIZE_TOO_SMALL"),
        (limit_spec("s3", "101"), BTC, "ORDER_SIZE_TOO_LARGE"),
        (OrderSpec("q1", "BTC-USD", Side.BUY, OrderKind.MARKET, quote_size=Decimal("0.5"), time_in_force=TimeInForce.IOC),
         BTC, "QUOTE_SIZE_TOO_SMALL"),
        (OrderSpec("q2", "BTC-USD", Side.BUY, OrderKind.MARKET, quote_size=Decimal("0.001"), time_in_force=TimeInForce.IOC),
         BTC, "QUOTE_SIZE_TOO_SMALL"),
        (limit_spec("p1", "0.01", "0.001"), BTC, "INVALID_PRICE_PRECISION"),
        (limit_spec("x1"), dataclasses.replace(BTC, trading_disabled=True), "TRADING_DISABLED"),
        (market_spec("x2"), dataclasses.replace(BTC, limit_only=True), "LIMIT_ONLY"),
    ],
)
async def test_prepare_rejects_rule_breakers(
    venue: FakeVenue, storage: Storage, spec: OrderSpec, product: Any, reason: str
) -> None:
    om = manager(venue, storage, products={"BTC-USD": product})
    with pytest.raises(RiskRejected) as exc:
        om.prepare(spec)
    assert exc.value.reason == reason
    assert spec.client_order_id in str(exc.value)


# --- submit --------------------------------------------------------------------------------------------


async def test_submit_writes_ahead_then_sends(venue: FakeVenue, storage: Storage) -> None:
    points: list[str] = []
    om = await started(venue, storage, checkpoint=points.append)
    updates = om.updates()
    order = await om.submit(limit_spec("w1"))
    assert points == ["after_write_ahead", "after_send"]
    assert order.status is OrderStatus.SUBMITTED and order.venue_order_id == "v1"
    kinds = [e.kind for e in await storage.journal()]
    assert kinds[-2:] == ["order.new", "order.ack"]
    first = await anext(updates)
    assert first.order.status is OrderStatus.SUBMITTED and first.fill is None
    assert om.order("w1") == order and om.order("nope") is None
    assert [o.client_order_id for o in om.open_orders()] == ["w1"] and om.open_orders("ETH-USD") == []
    live, snap = om.live_orders(), om.open_orders()
    assert live == snap and live[0] is om.live_orders("BTC-USD")[0] and snap[0] is not live[0]  # no copies, same selection
    assert om.live_orders("ETH-USD") == []
    with pytest.raises(InvalidValue, match="already used"):
        await om.submit(limit_spec("w1"))
    await om.close()
    with pytest.raises(StopAsyncIteration):
        await anext(updates)


async def test_submit_refuses_a_reused_id_found_only_in_storage(venue: FakeVenue, storage: Storage) -> None:
    await storage.save_order(Order(spec=limit_spec("old"), status=OrderStatus.REJECTED, created_at=T0))
    om = await started(venue, storage)
    with pytest.raises(InvalidValue, match="never reused"):
        await om.submit(limit_spec("old"))


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (RiskRejected("MAX_ORDER_NOTIONAL", "too big"), "MAX_ORDER_NOTIONAL"),
        (TradingHalted("halted by the kill switch"), "TRADING_HALTED"),
    ],
)
async def test_pre_trade_refusal_is_stored_and_raised(venue: FakeVenue, storage: Storage, error: Exception, reason: str) -> None:
    def check(spec: OrderSpec) -> None:
        raise error

    om = await started(venue, storage, pre_trade=check)
    with pytest.raises(type(error)):
        await om.submit(limit_spec("r1"))
    stored = await storage.load_order("r1")
    assert stored is not None and stored.status is OrderStatus.REJECTED and stored.reject_reason == reason
    assert "create_order" not in venue.calls and om.stats["rejected"] == 1


async def test_pre_trade_sees_the_rounded_spec(venue: FakeVenue, storage: Storage) -> None:
    checked: list[OrderSpec] = []
    om = await started(venue, storage, pre_trade=checked.append)
    await om.submit(limit_spec("r2", "0.01239", "100.019"))
    assert checked[0].base_size == Decimal("0.0123") and checked[0].limit_price == Decimal("100.01")


@pytest.mark.parametrize(
    ("error", "raised", "reason"),
    [
        (OrderRejected("INSUFFICIENT_FUND", "no money"), OrderRejected, "INSUFFICIENT_FUND"),
        (RateLimited("slow down"), RateLimited, "RATE_LIMITED"),
        (VenueUnavailable("cannot connect"), VenueUnavailable, "VENUE_UNAVAILABLE"),
        (AuthenticationFailed("bad key"), AuthenticationFailed, "AUTHENTICATION_FAILED"),
        (OrderNotFound("odd"), OrderNotFound, "ORDERNOTFOUND"),
    ],
)
async def test_venue_refusals_are_stored_rejected(
    venue: FakeVenue, storage: Storage, error: Exception, raised: type[Exception], reason: str
) -> None:
    om = await started(venue, storage)
    venue.fail("create_order", error)
    with pytest.raises(raised):
        await om.submit(limit_spec("v1"))
    stored = await storage.load_order("v1")
    assert stored is not None and stored.status is OrderStatus.REJECTED and stored.reject_reason == reason
    assert venue.orders == {}


async def test_halted_by_failed_reconciliation_blocks_submit(venue: FakeVenue, storage: Storage) -> None:
    halts: list[ReconciliationReport] = []
    venue.fail("open_orders", VenueUnavailable("down"))
    om = await started(venue, storage, on_halt=halts.append)
    assert om.halted_reason is not None and "venue error during reconciliation" in om.halted_reason
    assert len(halts) == 1 and not halts[0].ok
    state = await storage.get_trading_state()
    assert state is not None and state.state == "HALTED" and "reconciliation failed" in state.reason
    assert state.emergency is not None and state.emergency["source"] == "reconciliation"
    with pytest.raises(TradingHalted):
        await om.submit(limit_spec("h1"))
    report = await om.reconcile()  # the venue answers again: reconciliation clears the block
    assert report.ok and om.halted_reason is None
    assert (await om.submit(limit_spec("h2"))).status is OrderStatus.SUBMITTED


async def test_failed_reconciliation_keeps_an_existing_halt_record(venue: FakeVenue, storage: Storage) -> None:
    await storage.set_trading_state("HALTED", "kill switch: MANUAL", emergency={"trigger": "MANUAL", "confirmed": False})
    venue.fail("open_orders", VenueUnavailable("down"))
    om = await started(venue, storage)
    assert om.halted_reason is not None
    state = await storage.get_trading_state()
    assert state is not None and state.reason == "kill switch: MANUAL"
    assert state.emergency == {"trigger": "MANUAL", "confirmed": False}
    assert [e.kind for e in await storage.journal()][-1] == "reconcile.failed"


async def test_on_halt_may_be_async(venue: FakeVenue, storage: Storage) -> None:
    calls: list[str] = []

    async def halt(report: ReconciliationReport) -> None:
        calls.append(report.summary())

    venue.fail("balances", VenueUnavailable("down"))
    await started(venue, storage, on_halt=halt)
    assert len(calls) == 1 and "FAILED" in calls[0]


# --- unknown outcomes -------------------------------------------------------------------------------------


async def test_ambiguous_create_found_by_client_order_id(venue: FakeVenue, storage: Storage) -> None:
    om = await started(venue, storage)

    async def placed_then_lost(spec: OrderSpec) -> Any:
        venue.place(spec)  # the venue executed it ...
        raise AmbiguousOutcome(spec.client_order_id, "connection reset")  # ... but the answer was lost

    venue.create_order = placed_then_lost  # type: ignore[method-assign]
    order = await om.submit(limit_spec("amb1"))
    assert order.status is OrderStatus.OPEN and order.venue_order_id == "v1"
    assert [o.client_order_id for o in venue.orders.values()] == ["amb1"]
    kinds = [e.kind for e in await storage.journal()]
    assert kinds.index("order.new") < kinds.index("order.unknown") < kinds.index("order.ack")
    assert om.stats["ambiguous"] == 1 and om.stats["resolved"] == 1 and om.stats["resent"] == 0


async def test_ambiguous_create_absent_is_resent_with_the_same_id(venue: FakeVenue, storage: Storage) -> None:
    om = await started(venue, storage)
    venue.fail("create_order", AmbiguousOutcome("amb2", "timeout"))
    order = await om.submit(limit_spec("amb2"))
    assert order.status is OrderStatus.SUBMITTED and om.stats["resent"] == 1
    assert [vo.client_order_id for vo in venue.orders.values()] == ["amb2"]


async def test_unreadable_answer_is_treated_as_unknown(venue: FakeVenue, storage: Storage) -> None:
    om = await started(venue, storage)
    venue.fail("create_order", MalformedMessage("create order: response has no 'success'", "{}"))
    order = await om.submit(limit_spec("amb3"))
    assert order.status is OrderStatus.SUBMITTED and om.stats["ambiguous"] == 1


async def test_resend_rejected_settles_as_rejected(venue: FakeVenue, storage: Storage) -> None:
    om = await started(venue, storage)
    venue.fail("create_order", AmbiguousOutcome("amb4", "timeout"), OrderRejected("INSUFFICIENT_FUND"))
    order = await om.submit(limit_spec("amb4"))
    assert order.status is OrderStatus.REJECTED and order.reject_reason == "INSUFFICIENT_FUND"


async def test_unresolved_stays_in_flight_unknown_then_poll_settles_it(venue: FakeVenue, storage: Storage) -> None:
    sleeps = Sleeps()
    om = await started(venue, storage, sleep=sleeps)
    venue.fail("create_order", AmbiguousOutcome("amb5", "timeout"))
    venue.fail("find_order", VenueUnavailable("down"), VenueUnavailable("down"), VenueUnavailable("down"))
    order = await om.submit(limit_spec("amb5"))
    assert order.status is OrderStatus.IN_FLIGHT_UNKNOWN and order.is_active
    assert sleeps.calls == [0.01, 0.02]  # backoff doubles between attempts
    assert om.open_orders()[0].status is OrderStatus.IN_FLIGHT_UNKNOWN
    await om.poll()  # the poll loop keeps resolving: absent, so re-sent with the same id
    assert om.order("amb5").status is OrderStatus.SUBMITTED  # type: ignore[union-attr]
    assert len(venue.orders) == 1


# --- the user stream ----------------------------------------------------------------------------------------


async def test_cumulative_deltas_fetch_fills_once(venue: FakeVenue, storage: Storage) -> None:
    om = await started(venue, storage)
    updates = om.updates()
    await om.submit(limit_spec("f1", "0.3", "100"))
    await om.process_update(venue.update_of("v1"))
    assert om.order("f1").status is OrderStatus.OPEN  # type: ignore[union-attr]
    venue.execute("v1", "0.1", "100", "0.04")
    await om.process_update(venue.update_of("v1"))
    venue.execute("v1", "0.05", "100", "0.02")
    await om.process_update(venue.update_of("v1"))
    await om.process_update(venue.update_of("v1"))  # the same state again: nothing new
    await om.process_update(venue.update_of("v1", snapshot=True))  # a snapshot: nothing new either
    order = om.order("f1")
    assert order is not None and order.filled_size == Decimal("0.15") and order.fees == Decimal("0.06")
    assert order.status is OrderStatus.PARTIALLY_FILLED and len(order.fills) == 2
    assert len(await storage.fills_for("f1")) == 2
    assert om.stats["stream_snapshots"] == 1 and om.stats["fills"] == 2
    fills: list[str] = []
    while len(fills) < 2:
        update = await anext(updates)
        if update.fill is not None:
            fills.append(update.fill.trade_id)
    assert fills == ["t1", "t2"]
    venue.execute("v1", "0.15", "101", "0.06")
    await om.process_update(venue.update_of("v1"))
    order = om.order("f1")
    assert order is not None and order.status is OrderStatus.FILLED
    assert order.average_price == (Decimal("0.15") * 100 + Decimal("0.15") * 101) / Decimal("0.3")


async def test_rest_lagging_behind_the_stream_is_retried_by_poll(venue: FakeVenue, storage: Storage) -> None:
    om = await started(venue, storage)
    await om.submit(limit_spec("lag", "0.2", "100"))
    venue.push(UserStreamConnected(reconnect=False))
    om._stream_up = True
    venue.execute("v1", "0.2", "100")
    venue.fills_hidden = True
    await om.process_update(venue.update_of("v1"))
    order = om.order("lag")
    assert order is not None and order.filled_size == 0 and order.status is OrderStatus.FILLED
    assert "lag" in om._fill_gaps
    venue.fills_hidden = False
    await om.poll()
    order = om.order("lag")
    assert order is not None and order.filled_size == Decimal("0.2") and "lag" not in om._fill_gaps


async def test_update_for_an_order_acked_nowhere_sets_its_venue_id(venue: FakeVenue, storage: Storage) -> None:
    """After a crash the order is stored NEW with no venue id; the stream tells us which it is."""
    await storage.save_order(Order(spec=limit_spec("crash"), created_at=T0))
    om = await started(venue, storage, config=ExecutionConfig(reconcile_on_start=False))
    vo = venue.place(limit_spec("crash"))
    await om.process_update(venue.update_of(vo.order_id))
    order = om.order("crash")
    assert order is not None and order.venue_order_id == vo.order_id and order.status is OrderStatus.OPEN


async def test_update_for_a_stored_but_unloaded_order(venue: FakeVenue, storage: Storage) -> None:
    om = await started(venue, storage)
    vo = venue.place(limit_spec("later"))
    await storage.save_order(Order(spec=limit_spec("later"), status=OrderStatus.SUBMITTED, venue_order_id=vo.order_id,
                                   created_at=T0))
    await om.process_update(venue.update_of(vo.order_id))
    assert om.order("later").status is OrderStatus.OPEN  # type: ignore[union-attr]
    vo2 = venue.place(limit_spec("later2"))
    await storage.save_order(Order(spec=limit_spec("later2"), status=OrderStatus.SUBMITTED, venue_order_id=vo2.order_id,
                                   created_at=T0))
    update = dataclasses.replace(venue.update_of(vo2.order_id), client_order_id=None)  # an update without our id
    await om.process_update(update)
    assert om.order("later2").status is OrderStatus.OPEN  # type: ignore[union-attr]


async def test_update_for_an_unknown_order_adopts_it(venue: FakeVenue, storage: Storage) -> None:
    om = await started(venue, storage)
    vo = venue.place(limit_spec("elsewhere"))
    await om.process_update(venue.update_of(vo.order_id))
    order = om.order("elsewhere")
    assert order is not None and order.external and order.status is OrderStatus.OPEN
    odd = venue.place(limit_spec("odd"), with_config=False)
    await om.process_update(venue.update_of(odd.order_id))  # cannot be adopted: no configuration
    assert om.order("odd") is None


async def test_cancel_pending_survives_a_stale_open_update(venue: FakeVenue, storage: Storage) -> None:
    om = await started(venue, storage)
    await om.submit(limit_spec("cp"))
    stale = venue.update_of("v1")
    venue.fail("cancel_orders", VenueUnavailable("down"))
    with pytest.raises(VenueUnavailable):
        await om.cancel("cp")
    assert om.order("cp").status is OrderStatus.CANCEL_PENDING  # type: ignore[union-attr]
    await om.process_update(stale)  # OPEN from before the cancel: ignored
    assert om.order("cp").status is OrderStatus.CANCEL_PENDING  # type: ignore[union-attr]
    await om.cancel("cp")
    assert om.order("cp").status is OrderStatus.CANCELLED  # type: ignore[union-attr]


async def test_pending_at_the_venue_changes_nothing(venue: FakeVenue, storage: Storage) -> None:
    om = await started(venue, storage)
    await om.submit(limit_spec("pend"))
    await om.process_update(venue.update_of("v1"))
    pending = dataclasses.replace(venue.update_of("v1"), status=OrderStatus.SUBMITTED, venue_status="PENDING")
    await om.process_update(pending)
    assert om.order("pend").status is OrderStatus.OPEN and om.stats["errors"] == 0  # type: ignore[union-attr]


async def test_conflicting_status_is_counted_not_applied(venue: FakeVenue, storage: Storage) -> None:
    om = await started(venue, storage)
    await om.submit(limit_spec("cf"))
    await om.cancel("cf")
    venue.orders["v1"] = dataclasses.replace(venue.orders["v1"], status=OrderStatus.EXPIRED, venue_status="EXPIRED")
    await om.process_update(venue.update_of("v1"))
    assert om.order("cf").status is OrderStatus.CANCELLED and om.stats["errors"] == 1  # type: ignore[union-attr]


async def test_stream_loop_resyncs_on_reconnect_and_survives_errors(venue: FakeVenue, storage: Storage) -> None:
    om = await started(venue, storage)
    await om.submit(limit_spec("s1", "0.2"))
    task = asyncio.create_task(om._stream_loop())
    venue.push(UserStreamConnected(reconnect=False))
    venue.push(UserStreamDown("closed by peer"))
    venue.execute("v1", "0.1", "100")  # missed while down
    venue.push(UserStreamConnected(reconnect=True))
    ghost = dataclasses.replace(venue.update_of("v1"), order_id="v-ghost", client_order_id=None)
    venue.push(ghost)  # get_order fails for it: logged and counted, the loop goes on
    venue.push(venue.update_of("v1"))
    async with asyncio.timeout(5):
        while om.stats["stream_updates"] < 2:
            await asyncio.sleep(0)
    assert om.stats["resyncs"] == 1 and om.stats["stream_downs"] == 1 and om.stats["errors"] >= 1
    assert om.order("s1").filled_size == Decimal("0.1")  # type: ignore[union-attr]
    assert "order.resync" in [e.kind for e in await storage.journal()]
    om._closed = True
    venue.push(None)
    async with asyncio.timeout(5):
        await task


async def test_background_loops_keep_going_after_errors(venue: FakeVenue, storage: Storage) -> None:
    om = await started(venue, storage)
    await om.submit(limit_spec("bg", "0.2"))

    async def broken_poll() -> None:
        raise StorageError("disk full")

    async def broken_sync(since: datetime | None = None) -> int:
        raise StorageError("disk full")

    om.poll = broken_poll  # type: ignore[method-assign]
    om.sync_fills = broken_sync  # type: ignore[method-assign]
    tasks = [asyncio.create_task(om._poll_loop()), asyncio.create_task(om._fill_check_loop())]
    async with asyncio.timeout(5):
        while om.stats["errors"] < 4:
            await asyncio.sleep(0)
    om._closed = True
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_stream_loop_restarts_an_ended_stream(venue: FakeVenue, storage: Storage) -> None:
    sleeps = Sleeps()
    om = await started(venue, storage, sleep=sleeps)
    task = asyncio.create_task(om._stream_loop())
    venue.push(None)  # the venue's stream ended
    async with asyncio.timeout(5):
        while not sleeps.calls:
            await asyncio.sleep(0)
    om._closed = True
    venue.push(None)
    async with asyncio.timeout(5):
        await task
    assert sleeps.calls[0] == FAST.poll_interval_seconds


async def test_an_interrupted_submit_is_settled_by_poll(venue: FakeVenue, storage: Storage) -> None:
    """The submitting task is cancelled while the create is on the wire: the order stays NEW until poll settles it."""
    om = await started(venue, storage)
    gate = asyncio.Event()

    async def hanging_create(spec: OrderSpec) -> Any:
        venue.place(spec)  # it reached the venue ...
        await gate.wait()  # ... and the answer never comes back before the caller gives up
        raise AssertionError("unreachable")

    venue.create_order = hanging_create  # type: ignore[method-assign]
    task = asyncio.create_task(om.submit(limit_spec("cut")))
    async with asyncio.timeout(5):
        while not venue.orders:
            await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert om.order("cut").status is OrderStatus.NEW  # type: ignore[union-attr]
    om._stream_up = True
    await om.poll()  # found by client_order_id
    order = om.order("cut")
    assert order is not None and order.status is OrderStatus.OPEN and order.venue_order_id == "v1"
    # interrupted before it reached the venue: abandoned as NOT_SENT
    never = asyncio.Event()
    sending = asyncio.Event()

    async def stuck_create(spec: OrderSpec) -> Any:
        sending.set()
        await never.wait()
        raise AssertionError("unreachable")

    venue.create_order = stuck_create  # type: ignore[method-assign]
    task = asyncio.create_task(om.submit(limit_spec("cut2")))
    async with asyncio.timeout(5):
        await sending.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await om.poll()
    stored = await storage.load_order("cut2")
    assert stored is not None and stored.status is OrderStatus.REJECTED and stored.reject_reason == "NOT_SENT"


async def test_poll_when_the_stream_is_down(venue: FakeVenue, storage: Storage) -> None:
    om = await started(venue, storage)
    await om.submit(limit_spec("p1", "0.2"))
    venue.execute("v1", "0.2", "100")
    venue.fail("get_order", VenueUnavailable("down"))
    await om.poll()
    assert om.stats["errors"] == 1 and om.order("p1").status is OrderStatus.SUBMITTED  # type: ignore[union-attr]
    await om.poll()
    order = om.order("p1")
    assert order is not None and order.status is OrderStatus.FILLED and order.filled_size == Decimal("0.2")
    om._stream_up = True
    await om.submit(limit_spec("p2"))
    calls = len(venue.calls)
    await om.poll()  # stream up, nothing pending: no REST
    assert len(venue.calls) == calls


async def test_poll_reports_disagreement(venue: FakeVenue, storage: Storage) -> None:
    om = await started(venue, storage)
    await om.submit(limit_spec("dis", "0.2"))
    venue.execute("v1", "0.1", "100", "0.05")
    venue.orders["v1"] = dataclasses.replace(venue.orders["v1"], total_fees=Decimal("0.07"))
    await om.poll()
    assert om.order("dis").filled_size == Decimal("0.1")  # type: ignore[union-attr]


# --- cancel / cancel_all / replace ---------------------------------------------------------------------------


async def test_cancel_paths(venue: FakeVenue, storage: Storage) -> None:
    om = await started(venue, storage)
    with pytest.raises(OrderNotFound):
        await om.cancel("ghost")
    await om.submit(limit_spec("c1", "0.2"))
    venue.execute("v1", "0.2", "100")  # filled before the cancel arrives
    order = await om.cancel("c1")
    assert order.status is OrderStatus.FILLED and order.filled_size == Decimal("0.2")
    assert om.stats["cancels"] == 0


async def test_cancel_an_order_never_placed(venue: FakeVenue, storage: Storage) -> None:
    om = await started(venue, storage)
    venue.fail("create_order", AmbiguousOutcome("u1", "timeout"))
    venue.fail("find_order", *(VenueUnavailable("down") for _ in range(3)))
    await om.submit(limit_spec("u1"))
    order = await om.cancel("u1")
    assert order.status is OrderStatus.REJECTED and order.reject_reason == "CANCELLED_BEFORE_PLACED"
    assert venue.orders == {}


async def test_cancel_an_unknown_that_turns_out_filled(venue: FakeVenue, storage: Storage) -> None:
    om = await started(venue, storage)
    venue.fail("create_order", AmbiguousOutcome("u2", "timeout"))
    venue.fail("find_order", *(VenueUnavailable("down") for _ in range(3)))
    await om.submit(limit_spec("u2", "0.1"))
    vo = venue.place(limit_spec("u2", "0.1"))
    venue.execute(vo.order_id, "0.1", "100")
    order = await om.cancel("u2")
    assert order.status is OrderStatus.FILLED and order.venue_order_id == vo.order_id


async def test_cancel_all_adopts_and_cancels_everything(venue: FakeVenue, storage: Storage) -> None:
    om = await started(venue, storage)
    for i in range(3):
        await om.submit(limit_spec(f"ca{i}"))
    venue.place(limit_spec("outsider"))
    venue.cancel_override["v2"] = CancelResult("v2", False, "UNKNOWN_CANCEL_ORDER")
    venue.orders["v2"] = dataclasses.replace(venue.orders["v2"], status=OrderStatus.CANCELLED, venue_status="CANCELLED")
    done = await om.cancel_all()
    assert {o.client_order_id: o.status for o in done} == {
        "ca0": OrderStatus.CANCELLED, "ca1": OrderStatus.CANCELLED, "ca2": OrderStatus.CANCELLED,
        "outsider": OrderStatus.CANCELLED,
    }
    assert om.order("outsider").external  # type: ignore[union-attr]
    assert await om.venue_open_orders() == [] and "USD" in await om.venue_balances()


async def test_cancel_all_asks_about_orders_without_a_result(venue: FakeVenue, storage: Storage) -> None:
    om = await started(venue, storage)
    await om.submit(limit_spec("nr"))
    venue.drop_cancel_results = True
    done = await om.cancel_all("BTC-USD")
    assert done[0].status is OrderStatus.OPEN  # the venue still has it open: reverted from CANCEL_PENDING
    assert await om.cancel_all("ETH-USD") == []


async def test_replace(venue: FakeVenue, storage: Storage) -> None:
    om = await started(venue, storage)
    await om.submit(limit_spec("r1", "0.3", "100"))
    venue.execute("v1", "0.1", "100")
    await om.process_update(venue.update_of("v1"))
    new = await om.replace("r1", price=Decimal("99.5"))
    assert new.spec.base_size == Decimal("0.2") and new.spec.limit_price == Decimal("99.5") and new.client_order_id != "r1"
    newer = await om.replace(new.client_order_id, size=Decimal("0.05"), new_client_order_id="cj-7")
    assert newer.spec.base_size == Decimal("0.05") and newer.spec.limit_price == Decimal("99.5")
    assert newer.client_order_id == "cj-7"
    journal = [e for e in await storage.journal() if e.kind == "order.replace"]
    assert journal[0].payload == {"old": "r1", "new": new.client_order_id}
    with pytest.raises(InvalidValue, match="new price and/or size"):
        await om.replace(newer.client_order_id)
    await om.submit(market_spec("m1"))
    with pytest.raises(InvalidValue, match="cannot be replaced"):
        await om.replace("m1", price=Decimal(1))
    await om.submit(limit_spec("r2", "0.1"))
    vid = om.order("r2").venue_order_id  # type: ignore[union-attr]
    assert vid is not None
    venue.execute(vid, "0.1", "100")
    with pytest.raises(OrderRejected) as exc:
        await om.replace("r2", price=Decimal(101))
    assert exc.value.reason == "REPLACE_NOT_CANCELLED"
    await om.submit(limit_spec("r3", "0.1"))
    vid = om.order("r3").venue_order_id  # type: ignore[union-attr]
    assert vid is not None
    with pytest.raises(OrderRejected) as exc:
        await om.replace("r3", size=Decimal(0))
    assert exc.value.reason == "REPLACE_NOTHING_LEFT"


# --- fills sync ------------------------------------------------------------------------------------------------


async def test_sync_fills_recovers_attributes_and_adopts(venue: FakeVenue, storage: Storage) -> None:
    om = await started(venue, storage)
    await om.submit(limit_spec("sf", "0.2"))
    venue.execute("v1", "0.2", "100")
    ext = venue.place(market_spec("ext-m", "0.05"), OrderStatus.OPEN)
    venue.execute(ext.order_id, "0.05", "100")
    orphan = venue.place(limit_spec("orphan"), with_config=False)
    venue.execute(orphan.order_id, "0.01", "100")
    assert await om.sync_fills() == 2  # ours and the adopted order's; the orphan's is a logged problem
    assert om.order("sf").status is OrderStatus.FILLED  # type: ignore[union-attr]
    adopted = om.order("ext-m")
    assert adopted is not None and adopted.external and adopted.status is OrderStatus.FILLED
    assert await om.sync_fills() == 0  # nothing new, dedup by trade id


async def test_sync_fills_uses_the_lookback(venue: FakeVenue, storage: Storage) -> None:
    om = await started(venue, storage)
    await om.submit(limit_spec("lb", "0.2"))
    venue.execute("v1", "0.1", "100", at=T0)
    await om.sync_fills()
    since: list[datetime | None] = []
    original = venue.fills

    async def spy(**kwargs: Any) -> list[Fill]:
        since.append(kwargs.get("since"))
        return await original(**kwargs)

    venue.fills = spy  # type: ignore[method-assign,assignment]
    await om.sync_fills()
    assert since == [T0 - timedelta(seconds=FAST.fill_lookback_seconds)]


async def test_a_fresh_account_history_is_not_pulled_in(venue: FakeVenue, storage: Storage) -> None:
    """No stored fill and no order of ours: neither reconciliation nor fill checks fetch the venue's old fills."""
    old = venue.place(market_spec("long-ago"), OrderStatus.OPEN)
    venue.execute(old.order_id, "0.01", "100")
    om = await started(venue, storage)
    assert om.last_reconciliation is not None and om.last_reconciliation.ok
    assert await om.sync_fills() == 0
    assert "fills" not in venue.calls and om.order("long-ago") is None


async def test_sync_fills_loads_stored_orders(venue: FakeVenue, storage: Storage) -> None:
    om = await started(venue, storage)
    vo = venue.place(limit_spec("st", "0.1"))
    await storage.save_order(Order(spec=limit_spec("st", "0.1"), status=OrderStatus.OPEN, venue_order_id=None, created_at=T0))
    venue.execute(vo.order_id, "0.1", "100")
    assert await om.sync_fills(since=T0 - timedelta(hours=1)) == 1
    assert om.order("st").status is OrderStatus.FILLED  # type: ignore[union-attr]
    vo2 = venue.place(limit_spec("st2", "0.1"))
    await storage.save_order(Order(spec=limit_spec("st2", "0.1"), status=OrderStatus.OPEN, created_at=T0))
    fill = venue.execute(vo2.order_id, "0.1", "100")
    venue.all_fills[-1] = dataclasses.replace(fill, client_order_id="")  # the venue did not name our id
    assert await om.sync_fills(since=T0 - timedelta(hours=1)) == 1
    assert om.order("st2").status is OrderStatus.FILLED  # type: ignore[union-attr]


async def test_fills_of_another_venue_order_are_ignored(venue: FakeVenue, storage: Storage) -> None:
    om = await started(venue, storage)
    await om.submit(limit_spec("mix", "0.2"))
    order = om._orders["mix"]
    stray = Fill("tx", "mix", "BTC-USD", Side.BUY, Decimal(100), Decimal("0.1"), Decimal(0), T0, Liquidity.TAKER, "v-other")
    assert await om._apply_fills(order, [stray], "test") == 0


# --- reconciliation -----------------------------------------------------------------------------------------------


async def test_reconcile_settles_stored_orders(venue: FakeVenue, storage: Storage) -> None:
    # stored open with a venue id, now filled at the venue
    vo1 = venue.place(limit_spec("k1", "0.1"))
    venue.execute(vo1.order_id, "0.1", "100")
    await storage.save_order(Order(spec=limit_spec("k1", "0.1"), status=OrderStatus.OPEN, venue_order_id=vo1.order_id,
                                   created_at=T0))
    # stored NEW, placed at the venue before the crash (found by client_order_id)
    vo2 = venue.place(limit_spec("k2"))
    await storage.save_order(Order(spec=limit_spec("k2"), created_at=T0))
    # stored NEW, never sent: abandoned
    await storage.save_order(Order(spec=limit_spec("k3"), created_at=T0))
    # stored with a venue id the venue does not know
    await storage.save_order(Order(spec=limit_spec("k4"), status=OrderStatus.OPEN, venue_order_id="v-lost", created_at=T0))
    om = manager(venue, storage)
    report = await om.start(background=False)
    assert report is not None
    assert report.updated == ["k1", "k2"] and report.abandoned == ["k3"]
    assert report.problems == ["order k4 is stored OPEN with venue id v-lost, but the venue does not know that id"]
    assert om.order("k1").status is OrderStatus.FILLED  # type: ignore[union-attr]
    assert om.order("k2").venue_order_id == vo2.order_id  # type: ignore[union-attr]
    stored = await storage.load_order("k3")
    assert stored is not None and stored.status is OrderStatus.REJECTED and stored.reject_reason == "NOT_SENT"


async def test_reconcile_venue_open_order_known_by_client_id_only(venue: FakeVenue, storage: Storage) -> None:
    om = await started(venue, storage)
    vo = venue.place(limit_spec("known"))
    await storage.save_order(
        Order(spec=limit_spec("known"), status=OrderStatus.REJECTED, reject_reason="NOT_SENT", created_at=T0)
    )
    report = await om.reconcile()
    assert not report.ok
    assert any("known" in p and "REJECTED" in p for p in report.problems), report.problems
    assert vo.order_id in om._by_venue_id


async def test_reconcile_resend_that_does_not_settle(venue: FakeVenue, storage: Storage) -> None:
    await storage.save_order(Order(spec=limit_spec("rs"), created_at=T0))
    venue.fail("create_order", *(VenueUnavailable("down") for _ in range(3)))
    om = manager(venue, storage, config=FAST.model_copy(update={"unsent_on_restart": "resend"}))
    report = await om.start(background=False)
    assert report is not None and report.problems == ["order rs: re-sent after restart, still IN_FLIGHT_UNKNOWN"]


async def test_reconcile_external_cancel_policy(venue: FakeVenue, storage: Storage) -> None:
    venue.place(limit_spec("e1"))
    venue.place(limit_spec("e2"))
    venue.cancel_override["v2"] = CancelResult("v2", False, "ALREADY_FILLED")
    om = manager(venue, storage, config=FAST.model_copy(update={"external_orders": "cancel"}))
    report = await om.start(background=False)
    assert report is not None
    assert report.cancelled_external == ["v1"]
    assert report.problems[0] == "external order v2 (BTC-USD) could not be cancelled: ALREADY_FILLED"
    assert "venue open order v2 is not tracked" in report.problems
    venue.drop_cancel_results = True
    venue.place(limit_spec("e3"))
    report = await om.reconcile()
    assert any("could not be cancelled: no result" in p for p in report.problems)


async def test_reconcile_external_that_cannot_be_adopted(venue: FakeVenue, storage: Storage) -> None:
    venue.place(limit_spec("twap"), with_config=False)
    om = manager(venue, storage)
    report = await om.start(background=False)
    assert report is not None and not report.ok
    assert report.problems[0].startswith("venue order v1 (BTC-USD) cannot be adopted")


async def test_adopt_refuses_a_venue_order_reusing_our_id(venue: FakeVenue, storage: Storage) -> None:
    om = await started(venue, storage)
    await om.submit(limit_spec("dup"))
    clash = venue.place(limit_spec("dup"))
    report = ReconciliationReport(started_at=T0)
    assert await om._adopt(clash, report) is None
    assert report.problems == [f"venue order {clash.order_id} reuses our client_order_id dup"]


async def test_fee_and_size_disagreements_are_problems(venue: FakeVenue, storage: Storage) -> None:
    om = await started(venue, storage)
    await om.submit(limit_spec("fee", "0.2"))
    venue.execute("v1", "0.1", "100", "0.05")
    venue.orders["v1"] = dataclasses.replace(venue.orders["v1"], total_fees=Decimal("0.09"))
    report = await om.reconcile()
    assert report.problems == ["order fee (venue id v1): venue fees 0.09 but fills' fees add up to 0.05"]
    venue.orders["v1"] = dataclasses.replace(venue.orders["v1"], filled_size=Decimal("0.15"), total_fees=Decimal("0.05"))
    report = await om.reconcile()
    assert report.problems == ["order fee (venue id v1): venue filled 0.15 but the venue's fills add up to 0.1"]


async def test_reconcile_reports_status_conflicts(venue: FakeVenue, storage: Storage) -> None:
    om = await started(venue, storage)
    await om.submit(limit_spec("sc"))
    om._orders["sc"].status = OrderStatus.CANCEL_PENDING
    venue.orders["v1"] = dataclasses.replace(venue.orders["v1"], status=OrderStatus.REJECTED, venue_status="FAILED",
                                             reject_reason="INSUFFICIENT_FUND")
    report = await om.reconcile()
    assert report.problems == ["order sc (venue id v1): stored status CANCEL_PENDING but the venue says REJECTED"]


# --- daily stats ---------------------------------------------------------------------------------------------------


async def test_daily_stats(venue: FakeVenue, storage: Storage) -> None:
    clock = Clock(T0)
    om = await started(venue, storage, clock=clock)
    yesterday = T0 - timedelta(days=1)
    await om.submit(limit_spec("d-buy", "1", "100"))
    venue.execute("v1", "1", "100", "0.5", at=yesterday)
    await om.submit(limit_spec("d-sell1", "0.5", "110", Side.SELL))
    venue.execute("v2", "0.5", "110", "0.25", at=T0)
    await om.submit(limit_spec("d-sell2", "0.5", "90", Side.SELL))
    venue.execute("v3", "0.5", "90", "0.25", at=T0 + timedelta(hours=1))
    await om.submit(limit_spec("d-late", "0.1", "100"))
    venue.execute("v4", "0.1", "100", "0.1", at=T0 + timedelta(days=1))
    await om.sync_fills(since=yesterday)
    stats = await om.daily_stats()
    assert isinstance(stats, DailyStats) and stats.day == date(2026, 3, 1)
    ps = stats.products["BTC-USD"]
    assert ps.trades == 2 and ps.volume == Decimal(55) + Decimal(45) and ps.fees == Decimal("0.5")
    assert ps.realised_pnl == (Decimal(5) - Decimal("0.25")) + (Decimal(-5) - Decimal("0.25"))
    assert (ps.wins, ps.losses, ps.win_rate) == (1, 1, Decimal("0.5"))
    assert stats.total.trades == 2 and stats.total.realised_pnl == ps.realised_pnl
    before = await om.daily_stats(date(2026, 2, 28))
    assert before.products["BTC-USD"].trades == 1 and before.products["BTC-USD"].realised_pnl == Decimal("-0.5")
    empty = await om.daily_stats(date(2026, 1, 1))
    assert empty.products == {} and empty.total.trades == 0
    assert datetime(2026, 3, 1, tzinfo=UTC).date() == stats.day
