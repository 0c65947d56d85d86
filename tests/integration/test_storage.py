"""Storage against real databases: a SQLite file, and PostgreSQL when CRYPTOJ_TEST_POSTGRES_URL is set.

Every test taking the ``backend`` / ``storage`` fixture runs once per backend. PostgreSQL tests
get a fresh schema each (dropped afterwards); locally, ``source scripts/start_postgres.sh`` starts
a throwaway server and exports the URL.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from cryptoj.errors import InvalidValue, SchemaVersionMismatch, StorageError
from cryptoj.model.money import Side
from cryptoj.model.orders import (
    Fill,
    Liquidity,
    Order,
    OrderKind,
    OrderSpec,
    OrderStatus,
    StopDirection,
    TimeInForce,
)
from cryptoj.storage import SCHEMA_VERSION, BalanceSnapshot, PositionSnapshot, Storage
from cryptoj.storage.codec import spec_from_json, spec_to_json

pytestmark = pytest.mark.integration

PG_URL = os.environ.get("CRYPTOJ_TEST_POSTGRES_URL")
T0 = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)


class StepClock:
    """Deterministic clock: each call is one second after the previous."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


@dataclass
class Backend:
    name: str
    url: str
    schema: str | None

    async def open(self, clock: Callable[[], datetime] | None = None) -> Storage:
        return await Storage.open(self.url, clock=clock or StepClock(), schema=self.schema)

    async def execute(self, sql: str) -> None:
        engine = create_async_engine(
            self.url, connect_args={"server_settings": {"search_path": self.schema}} if self.schema else {}
        )
        try:
            async with engine.begin() as conn:
                await conn.execute(text(sql))
        finally:
            await engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "sqlite":
        yield Backend("sqlite", f"sqlite+aiosqlite:///{tmp_path}/state/nested/test.db", None)
        return
    if not PG_URL:
        pytest.skip("PostgreSQL storage tests need CRYPTOJ_TEST_POSTGRES_URL (source scripts/start_postgres.sh)")
    schema = f"t_{uuid.uuid4().hex[:16]}"
    admin = create_async_engine(PG_URL)
    try:
        async with admin.begin() as conn:
            await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        yield Backend("postgresql", PG_URL, schema)
    finally:
        async with admin.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        await admin.dispose()


@pytest.fixture
async def storage(backend: Backend) -> AsyncIterator[Storage]:
    st = await backend.open()
    try:
        yield st
    finally:
        await st.close()


def limit_order(cid: str = "cid-1", size: str = "0.5", price: str = "30000.01", side: Side = Side.BUY) -> Order:
    spec = OrderSpec(cid, "BTC-USD", side, OrderKind.LIMIT, base_size=Decimal(size), limit_price=Decimal(price))
    return Order(spec=spec, created_at=T0)


def fill_for(order: Order, trade_id: str, size: str, price: str = "30000.01", fee: str = "0.12", minutes: int = 0) -> Fill:
    return Fill(
        trade_id=trade_id,
        client_order_id=order.client_order_id,
        product_id=order.product_id,
        side=order.side,
        price=Decimal(price),
        size=Decimal(size),
        fee=Decimal(fee),
        time=T0 + timedelta(minutes=minutes),
        liquidity=Liquidity.MAKER,
        venue_order_id="venue-" + order.client_order_id,
    )


# --- exact decimals -------------------------------------------------------------------------


async def test_decimal_with_18_significant_digits_round_trips_identically(storage: Storage) -> None:
    order = limit_order()
    order.transition(OrderStatus.SUBMITTED)
    price = Decimal("12345678.9012345678")  # 18 significant digits
    size = Decimal("0.123456789012345678")  # 18 significant digits
    fee = Decimal("98765.4321098765432")  # 18 significant digits
    assert len(price.as_tuple().digits) == len(size.as_tuple().digits) == len(fee.as_tuple().digits) == 18
    fill = Fill("t-18", order.client_order_id, "BTC-USD", Side.BUY, price, size, fee, T0)
    assert await storage.record_fill(fill)
    [back] = await storage.fills_for(order.client_order_id)
    assert (back.price, back.size, back.fee) == (price, size, fee)
    assert (str(back.price), str(back.size), str(back.fee)) == (str(price), str(size), str(fee))
    assert back == fill


async def test_decimal_exponents_and_trailing_zeros_survive(storage: Storage) -> None:
    values = {
        "BTC": BalanceSnapshot(Decimal("1E+2"), Decimal("0.000000000000000001")),
        "USD": BalanceSnapshot(Decimal("100.1000"), Decimal("0")),
        "ETH": BalanceSnapshot(Decimal("123456789012345678"), Decimal("-0.5")),
    }
    await storage.save_balances(values, at=T0)
    back = await storage.latest_balances()
    assert back == values
    assert {k: (str(v.available), str(v.hold)) for k, v in back.items()} == {
        k: (str(v.available), str(v.hold)) for k, v in values.items()
    }


async def test_floats_are_refused_by_decimal_columns(storage: Storage) -> None:
    with pytest.raises(StorageError, match="finite Decimal"):
        await storage.save_balances({"USD": BalanceSnapshot(0.1, Decimal(0))}, at=T0)  # type: ignore[arg-type]
    assert await storage.latest_balances() == {}


# --- orders ---------------------------------------------------------------------------------


def every_kind_of_order() -> list[Order]:
    end = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    specs = [
        OrderSpec("m-quote", "BTC-USD", Side.BUY, OrderKind.MARKET, quote_size=Decimal("25.00"), time_in_force=TimeInForce.IOC),
        OrderSpec("m-base", "ETH-USD", Side.SELL, OrderKind.MARKET, base_size=Decimal("0.01"), time_in_force=TimeInForce.FOK),
        OrderSpec(
            "l-gtd", "BTC-USD", Side.SELL, OrderKind.LIMIT, base_size=Decimal("0.2"), limit_price=Decimal("31000.5"),
            time_in_force=TimeInForce.GTD, end_time=end, post_only=True,
        ),
        OrderSpec(
            "sl", "BTC-USD", Side.SELL, OrderKind.STOP_LIMIT, base_size=Decimal("0.3"), limit_price=Decimal("29000"),
            stop_price=Decimal("29100"), stop_direction=StopDirection.STOP_DOWN,
        ),
        OrderSpec(
            "br", "BTC-USD", Side.BUY, OrderKind.BRACKET, base_size=Decimal("0.4"), limit_price=Decimal("32000"),
            stop_trigger_price=Decimal("28000"),
        ),
    ]
    return [Order(spec=spec, created_at=T0, updated_at=T0 + timedelta(seconds=i)) for i, spec in enumerate(specs)]


async def test_every_kind_of_order_loads_equal_to_what_was_saved(storage: Storage) -> None:
    orders = every_kind_of_order()
    orders[0].transition(OrderStatus.SUBMITTED)
    orders[0].transition(OrderStatus.FILLED)
    orders[1].transition(OrderStatus.REJECTED, reason="INSUFFICIENT_FUND")
    orders[2].transition(OrderStatus.SUBMITTED)
    orders[2].transition(OrderStatus.OPEN)
    orders[2].apply_fill(fill_for(orders[2], "tr-1", "0.05", price="31000.5"))
    orders[2].apply_fill(fill_for(orders[2], "tr-2", "0.15", price="31000.5", minutes=1))
    orders[3].external = True
    orders[3].venue_order_id = "venue-sl"
    for order in orders:
        await storage.save_order(order)
    for order in orders:
        loaded = await storage.load_order(order.client_order_id)
        assert loaded == order
    loaded_filled = await storage.load_order("l-gtd")
    assert loaded_filled is not None
    assert loaded_filled.status is OrderStatus.FILLED
    assert loaded_filled.filled_size == Decimal("0.20")
    assert loaded_filled.average_price == Decimal("31000.5")
    assert loaded_filled.history == [
        (OrderStatus.NEW, OrderStatus.SUBMITTED),
        (OrderStatus.SUBMITTED, OrderStatus.OPEN),
        (OrderStatus.OPEN, OrderStatus.PARTIALLY_FILLED),
        (OrderStatus.PARTIALLY_FILLED, OrderStatus.FILLED),
    ]
    rejected = await storage.load_order("m-base")
    assert rejected is not None and rejected.reject_reason == "INSUFFICIENT_FUND"
    assert await storage.load_order("nope") is None


async def test_save_order_is_an_upsert(storage: Storage) -> None:
    order = limit_order()
    await storage.save_order(order)
    order.transition(OrderStatus.SUBMITTED, at=T0 + timedelta(seconds=1))
    order.venue_order_id = "v-1"
    order.transition(OrderStatus.OPEN, at=T0 + timedelta(seconds=2))
    order.apply_fill(fill_for(order, "a", "0.1"))
    await storage.save_order(order)
    await storage.save_order(order)  # saving twice changes nothing
    assert await storage.load_order("cid-1") == order
    assert len(await storage.all_orders()) == 1
    assert len(await storage.fills_for("cid-1")) == 1


async def test_open_orders_and_all_orders_since(storage: Storage) -> None:
    a, b, c = limit_order("a"), limit_order("b"), limit_order("c")
    a.updated_at = T0 + timedelta(minutes=1)
    b.transition(OrderStatus.SUBMITTED, at=T0 + timedelta(minutes=2))
    b.transition(OrderStatus.OPEN, at=T0 + timedelta(minutes=3))
    c.transition(OrderStatus.SUBMITTED, at=T0 + timedelta(minutes=4))
    c.transition(OrderStatus.CANCELLED, at=T0 + timedelta(minutes=5))
    for order in (c, b, a):
        await storage.save_order(order)
    assert [o.client_order_id for o in await storage.open_orders()] == ["a", "b"]
    assert [o.client_order_id for o in await storage.all_orders()] == ["a", "b", "c"]
    assert [o.client_order_id for o in await storage.all_orders(since=T0 + timedelta(minutes=3))] == ["b", "c"]
    assert await storage.all_orders(since=T0 + timedelta(hours=1)) == []
    assert (await storage.open_orders())[1] == b


async def test_orders_without_times_use_the_clock(backend: Backend) -> None:
    clock = StepClock()
    st = await backend.open(clock)
    try:
        order = Order(spec=limit_order("x").spec)
        await st.save_order(order)
        assert [o.client_order_id for o in await st.all_orders(since=T0 + timedelta(seconds=1))] == ["x"]
        assert await st.all_orders(since=T0 + timedelta(seconds=2)) == []
        assert await st.load_order("x") == order
    finally:
        await st.close()


# --- fills -----------------------------------------------------------------------------------


async def test_record_fill_is_idempotent_per_venue_and_trade_id(storage: Storage) -> None:
    order = limit_order()
    fill = fill_for(order, "trade-1", "0.1")
    assert await storage.record_fill(fill) is True
    assert await storage.record_fill(fill) is False
    assert await storage.record_fill(fill, venue="simulator") is True
    assert await storage.fills_for("cid-1") == [fill, fill]
    assert await storage.fills_for("other") == []


async def test_concurrent_duplicate_fills_are_stored_once(storage: Storage) -> None:
    order = limit_order()
    fill = fill_for(order, "race", "0.1")
    results = await asyncio.gather(*(storage.record_fill(fill) for _ in range(8)))
    assert sorted(results) == [False] * 7 + [True]
    assert len(await storage.fills_for("cid-1")) == 1


async def test_last_fill_time(storage: Storage) -> None:
    assert await storage.last_fill_time() is None
    order = limit_order()
    await storage.record_fill(fill_for(order, "1", "0.1", minutes=5))
    await storage.record_fill(fill_for(order, "2", "0.1", minutes=2), venue="simulator")
    assert await storage.last_fill_time() == T0 + timedelta(minutes=5)
    assert await storage.last_fill_time("simulator") == T0 + timedelta(minutes=2)
    assert await storage.last_fill_time("kraken") is None


async def test_times_keep_their_instant_whatever_the_zone(storage: Storage) -> None:
    order = limit_order()
    plus_two = timezone_offset_hours(2)
    local = datetime(2026, 1, 2, 5, 4, 5, 123456, tzinfo=plus_two)  # same instant as T0
    fill = Fill("tz", order.client_order_id, "BTC-USD", Side.BUY, Decimal(1), Decimal(1), Decimal(0), local)
    await storage.record_fill(fill)
    [back] = await storage.fills_for(order.client_order_id)
    assert back.time == T0 and back.time.tzinfo is UTC


def timezone_offset_hours(hours: int) -> object:
    from datetime import timezone

    return timezone(timedelta(hours=hours))


async def test_naive_times_are_refused(storage: Storage) -> None:
    with pytest.raises(StorageError, match="timezone-aware"):
        await storage.append_journal("x", {}, at=datetime(2026, 1, 1))


# --- journal ---------------------------------------------------------------------------------


async def test_journal_is_append_only_and_ordered(storage: Storage) -> None:
    ids = [await storage.append_journal("order", {"n": i, "price": Decimal("1.10")}) for i in range(5)]
    ids.append(await storage.append_journal("risk", ["halt", None]))
    assert ids == sorted(ids) and len(set(ids)) == 6
    entries = await storage.journal()
    assert [e.id for e in entries] == ids
    assert entries[0].payload == {"n": 0, "price": "1.10"}
    assert entries[-1].payload == ["halt", None] and entries[-1].kind == "risk"
    assert entries[1].time > entries[0].time
    assert [e.id for e in await storage.journal(since_id=ids[2], limit=2)] == ids[3:5]
    assert [e.id for e in await storage.journal(kind="risk")] == [ids[-1]]
    # the public API can append and read the journal, nothing else
    assert sorted(n for n in dir(Storage) if "journal" in n and not n.startswith("_")) == ["append_journal", "journal"]


async def test_journal_rejects_bad_input(storage: Storage) -> None:
    with pytest.raises(InvalidValue, match=r"journal\.kind"):
        await storage.append_journal("", {})
    with pytest.raises(InvalidValue, match=r"journal\.limit"):
        await storage.journal(limit=0)
    with pytest.raises(StorageError, match="not JSON-serialisable"):
        await storage.append_journal("x", {"obj": object()})
    assert await storage.journal() == []


# --- transactions ----------------------------------------------------------------------------


async def test_transaction_commits_together(storage: Storage) -> None:
    order = limit_order()
    order.transition(OrderStatus.SUBMITTED)
    async with storage.transaction():
        await storage.save_order(order)
        async with storage.transaction():  # nested joins the outer
            await storage.append_journal("submitted", {"cid": order.client_order_id})
        await storage.set_trading_state("ACTIVE", "start", at=T0)
    assert await storage.load_order("cid-1") == order
    assert len(await storage.journal()) == 1


async def test_transaction_rolls_back_everything_on_error(storage: Storage) -> None:
    order = limit_order()
    fill_order = limit_order("other")
    with pytest.raises(RuntimeError, match="boom"):
        async with storage.transaction():
            await storage.save_order(order)
            await storage.record_fill(fill_for(fill_order, "f1", "0.1"))
            await storage.append_journal("x", {})
            raise RuntimeError("boom")
    assert await storage.load_order("cid-1") is None
    assert await storage.fills_for("other") == []
    assert await storage.journal() == []


async def test_database_errors_become_storage_errors(storage: Storage) -> None:
    order = limit_order()
    await storage.save_order(order)
    with pytest.raises(StorageError, match="database error"):
        async with storage.transaction():
            await storage.append_journal("ok", {})
            # violate the single-row constraint of trading_state directly
            async with storage._connection() as conn:
                await conn.execute(text("INSERT INTO trading_state (id, state, reason, since) VALUES (2, 'ACTIVE', 'r', 's')"))
    assert await storage.journal() == []


# --- snapshots and trading state ---------------------------------------------------------------


async def test_latest_snapshots(storage: Storage) -> None:
    await storage.save_balances({"USD": BalanceSnapshot(Decimal("100"), Decimal("5"))}, at=T0)
    await storage.save_balances(
        {"USD": BalanceSnapshot(Decimal("90"), Decimal("0")), "BTC": BalanceSnapshot(Decimal("0.1"), Decimal(0))},
        at=T0 + timedelta(seconds=1),
    )
    await storage.save_balances({}, at=T0 + timedelta(seconds=5))  # empty snapshot writes nothing
    assert await storage.latest_balances() == {
        "USD": BalanceSnapshot(Decimal("90"), Decimal("0")),
        "BTC": BalanceSnapshot(Decimal("0.1"), Decimal(0)),
    }
    first = PositionSnapshot(Decimal("0.1"), Decimal("30000"), Decimal("0"), Decimal("0.5"))
    flat = PositionSnapshot(Decimal("0"), None, Decimal("12.34"), Decimal("1.0"))
    await storage.save_positions({"BTC-USD": first, "ETH-USD": first}, at=T0)
    await storage.save_positions({"BTC-USD": flat})
    await storage.save_positions({})
    assert await storage.latest_positions() == {"BTC-USD": flat, "ETH-USD": first}


async def test_trading_state_round_trip(storage: Storage) -> None:
    assert await storage.get_trading_state() is None
    await storage.set_trading_state("ACTIVE", "startup", at=T0)
    record = {"trigger": "kill_file", "cancelled": ["a", "b"], "flat": True, "notional": Decimal("12.5")}
    await storage.set_trading_state("HALTED", "kill switch", emergency=record, at=T0 + timedelta(minutes=1))
    state = await storage.get_trading_state()
    assert state is not None
    assert (state.state, state.reason, state.since) == ("HALTED", "kill switch", T0 + timedelta(minutes=1))
    assert state.emergency == {"trigger": "kill_file", "cancelled": ["a", "b"], "flat": True, "notional": "12.5"}
    await storage.set_trading_state("REDUCE_ONLY", "drawdown")
    state = await storage.get_trading_state()
    assert state is not None and state.state == "REDUCE_ONLY" and state.emergency is None
    with pytest.raises(InvalidValue, match="must be one of ACTIVE, REDUCE_ONLY, HALTED"):
        await storage.set_trading_state("PAUSED", "x")


# --- opening, versions, reopening --------------------------------------------------------------


async def test_data_survives_reopen_and_version_is_recorded(backend: Backend) -> None:
    st = await backend.open()
    order = limit_order()
    await st.save_order(order)
    await st.close()
    with pytest.raises(StorageError, match="closed"):
        await st.load_order("cid-1")
    await st.close()  # closing twice is harmless
    async with await backend.open() as again:
        assert await again.load_order("cid-1") == order
        assert again.dialect == backend.name
        async with again._connection() as conn:
            version = (await conn.execute(text("SELECT value FROM meta WHERE key = 'schema_version'"))).scalar_one()
        assert version == str(SCHEMA_VERSION)


async def test_schema_version_mismatch_is_refused(backend: Backend) -> None:
    st = await backend.open()
    await st.close()
    await backend.execute("UPDATE meta SET value = '999' WHERE key = 'schema_version'")
    with pytest.raises(SchemaVersionMismatch) as info:
        await backend.open()
    assert (info.value.found, info.value.expected) == (999, SCHEMA_VERSION)
    await backend.execute("DELETE FROM meta")
    with pytest.raises(StorageError, match="no valid schema_version"):
        await backend.open()


async def test_sqlite_file_and_parent_directories_are_created(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "c.db"
    async with await Storage.open(f"sqlite+aiosqlite:///{path}") as st:
        await st.append_journal("hello", {"x": 1})
    assert path.is_file()


async def test_in_memory_sqlite_works() -> None:
    async with await Storage.open("sqlite+aiosqlite:///:memory:") as st:
        assert await st.record_fill(fill_for(limit_order(), "m", "0.1"))
        assert len(await st.fills_for("cid-1")) == 1


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("not a url", "is not a database URL"),
        ("sqlite:///x.db", "sqlite\\+aiosqlite"),
        ("postgresql://u:hunter2@h/db", "postgresql\\+asyncpg"),
        ("mysql+aiomysql://u:hunter2@h/db", "only SQLite and PostgreSQL"),
    ],
)
async def test_bad_urls_are_refused_without_leaking_passwords(url: str, message: str) -> None:
    with pytest.raises(StorageError, match=message) as info:
        await Storage.open(url)
    assert "hunter2" not in str(info.value)


async def test_schema_option_is_postgresql_only(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="PostgreSQL only"):
        await Storage.open(f"sqlite+aiosqlite:///{tmp_path}/x.db", schema="s")


async def test_unreachable_postgresql_is_a_storage_error() -> None:
    # port 9 on loopback: nothing listens there, so the connection is refused at once
    with pytest.raises(StorageError, match="cannot open database") as info:
        await Storage.open("postgresql+asyncpg://u:hunter2@127.0.0.1:9/db")
    assert "hunter2" not in str(info.value)


async def test_unusable_sqlite_path_is_a_storage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises((StorageError, OSError)):
        await Storage.open(f"sqlite+aiosqlite:///{blocker}/sub/x.db")


# --- the spec codec --------------------------------------------------------------------------


def test_spec_codec_round_trips_and_rejects_unknown_fields() -> None:
    for order in every_kind_of_order():
        data = spec_to_json(order.spec)
        assert all(not isinstance(v, Decimal | datetime) for v in data.values())
        assert spec_from_json(data) == order.spec
    data = spec_to_json(every_kind_of_order()[2].spec)
    with pytest.raises(StorageError, match="unknown fields \\['leverage'\\]"):
        spec_from_json({**data, "leverage": "3"})
    with pytest.raises(StorageError, match="unusable"):
        spec_from_json({**data, "limit_price": "abc"})


async def test_corrupt_rows_raise_storage_errors(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/corrupt.db"
    async with await Storage.open(url) as st:
        order = limit_order()
        await st.save_order(order)
        await st.record_fill(fill_for(order, "f", "0.1"))
        await st.append_journal("tags", {"set": {"b", "a"}})
        assert (await st.journal())[0].payload == {"set": ["a", "b"]}
        async with st._connection() as conn:
            await conn.execute(text("UPDATE fills SET price = 'abc'"))
        with pytest.raises(StorageError, match="'abc', which is not a decimal"):
            await st.fills_for("cid-1")
        async with st._connection() as conn:
            await conn.execute(text("UPDATE fills SET price = '1', time = 'yesterday'"))
        with pytest.raises(StorageError, match="stored time 'yesterday'"):
            await st.fills_for("cid-1")
        async with st._connection() as conn:
            await conn.execute(text("UPDATE fills SET time = '2026-01-02T03:04:05.123456Z'"))
            await conn.execute(text("UPDATE orders SET status = 'LOST'"))
        with pytest.raises(StorageError, match="unknown status"):
            await st.load_order("cid-1")


# --- the order-intent journal (SQLite files) ---------------------------------------------------------


def _db_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path}/state/intents.db"


async def test_intents_of_orders_never_stored_are_imported_as_new_on_the_next_open(tmp_path: Path) -> None:
    st = await Storage.open(_db_url(tmp_path), clock=StepClock())
    path = st.intents_path
    assert path == tmp_path / "state" / "intents.db-intents"
    stored, lost = limit_order("kept"), limit_order("lost", price="29000.5")
    assert st.write_intent(stored, venue="coinbase") and st.write_intent(lost, venue="coinbase")
    assert await st.has_order("lost") and not await st.has_order("other")
    stored.transition(OrderStatus.SUBMITTED, at=T0)
    await st.save_order(stored)  # its row is committed: its intent is no longer needed
    await st.close()  # 'lost' never got a row: the file keeps the intents
    assert len(path.read_bytes().splitlines()) == 2
    again = await Storage.open(_db_url(tmp_path), clock=StepClock())
    try:
        assert again.intents_imported == 1
        order = await again.load_order("lost")
        assert order is not None and order.status is OrderStatus.NEW and order.spec == lost.spec
        assert order.created_at == T0 and order.venue_order_id is None
        kept = await again.load_order("kept")
        assert kept is not None and kept.status is OrderStatus.SUBMITTED  # not overwritten by its intent
        entries = await again.journal(kind="order.new")
        assert [(e.payload["client_order_id"], e.payload["recovered_from"]) for e in entries] == [("lost", "intent_journal")]
        assert path.read_bytes() == b""  # imported: emptied
    finally:
        await again.close()


async def test_intent_journal_torn_last_line_is_skipped_a_broken_one_is_an_error(tmp_path: Path) -> None:
    st = await Storage.open(_db_url(tmp_path))
    path = st.intents_path
    assert path is not None
    st.write_intent(limit_order("whole"))
    await st.close()
    with path.open("ab") as f:
        f.write(b'{"v":1,"coid":"torn","spec":{')  # the process died inside the write: never sent
    st = await Storage.open(_db_url(tmp_path))
    try:
        assert st.intents_imported == 1 and await st.load_order("torn") is None and await st.load_order("whole") is not None
    finally:
        await st.close()
    path.write_bytes(b'not json\n{"v":1}\n')
    with pytest.raises(StorageError, match=r"intents.db-intents, line 1: not JSON"):
        await Storage.open(_db_url(tmp_path))
    assert path.read_bytes() == b'not json\n{"v":1}\n'  # left as it is for the operator
    path.write_bytes(b'{"v":1}\n')
    with pytest.raises(StorageError, match="line 1: not an order intent"):
        await Storage.open(_db_url(tmp_path))


async def test_intent_journal_is_held_by_one_storage_at_a_time(tmp_path: Path) -> None:
    first = await Storage.open(_db_url(tmp_path))
    second = await Storage.open(_db_url(tmp_path))
    try:
        assert first.intents_path is not None and second.intents_path is None
        assert not second.write_intent(limit_order("x"))  # no journal: the caller writes ahead to the database
        assert first.write_intent(limit_order("y"))
        assert await second.load_order("y") is None and second.intents_imported == 0
    finally:
        await second.close()
        await first.close()
    third = await Storage.open(_db_url(tmp_path))
    try:
        assert third.intents_path is not None and third.intents_imported == 1
    finally:
        await third.close()


async def test_intent_journal_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    memory = await Storage.open("sqlite+aiosqlite://")
    off = await Storage.open(_db_url(tmp_path), intents=None)
    own = await Storage.open(f"sqlite+aiosqlite:///{tmp_path}/other.db", intents=tmp_path / "j" / "own.jsonl",
                             intents_sync=True)
    try:
        assert memory.intents_path is None and not memory.write_intent(limit_order("m"))
        assert off.intents_path is None and not off.write_intent(limit_order("o"))
        assert own.intents_path is not None and own.intents_path.name == "own.jsonl"
        assert own.write_intent(limit_order("s"))  # fdatasync'ed
        assert b'"coid":"s"' in own.intents_path.read_bytes()
        # once every intent is stored and the file is past the compaction size, it is emptied
        monkeypatch.setattr("cryptoj.storage.store.COMPACT_BYTES", 10)
        order = limit_order("s")
        await own.save_order(order)
        assert own.intents_path.read_bytes() == b""
        assert not await own.has_order("nope") and await own.has_order("s")
    finally:
        await own.close()
        await off.close()
        await memory.close()
    (tmp_path / "a-file").write_text("")
    with pytest.raises(StorageError, match="cannot open the order-intent journal"):
        await Storage.open(f"sqlite+aiosqlite:///{tmp_path}/third.db", intents=tmp_path / "a-file" / "x")


async def test_intent_journal_short_write_raises_and_leaves_no_torn_line(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    st = await Storage.open(_db_url(tmp_path))
    try:
        path = st.intents_path
        assert path is not None
        assert st.write_intent(limit_order("first"))
        before = path.read_bytes()
        real_write = os.write
        monkeypatch.setattr("cryptoj.storage.intents.os.write", lambda fd, data: real_write(fd, data[: len(data) // 2]))
        with pytest.raises(StorageError, match="short write"):
            st.write_intent(limit_order("half"))  # a full disk: the order must not be sent
        monkeypatch.setattr("cryptoj.storage.intents.os.write", real_write)
        assert path.read_bytes() == before  # the torn half is cut off again
        assert st.write_intent(limit_order("next"))
    finally:
        await st.close()
    again = await Storage.open(_db_url(tmp_path))
    try:
        assert again.intents_imported == 2  # first and next; the half-written one was never sent
        assert await again.load_order("half") is None
    finally:
        await again.close()
