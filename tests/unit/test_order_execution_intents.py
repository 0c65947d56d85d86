"""The order manager's write-ahead through the storage's order-intent journal (a SQLite file).

The intent must be durable before the venue sees the request; the database row and the
``order.new`` journal entry follow the send; a process that never got to write the row
leaves the intent for the next :meth:`Storage.open`, which stores it as NEW for the
reconciliation. The crash tests (``tests/integration/test_crash_recovery.py``) kill a real
process at each point; these check the in-process details.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from cryptoj.errors import OrderRejected, VenueUnavailable
from cryptoj.model.orders import OrderSpec, OrderStatus
from cryptoj.order_execution import OrderManager
from cryptoj.storage import Storage
from cryptoj.storage.codec import spec_to_json
from tests.unit.fake_venue import FakeVenue, limit_spec
from tests.unit.test_order_execution import FAST, Clock, Sleeps


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state" / "om.db"


@pytest.fixture
async def storage(db: Path) -> AsyncIterator[Storage]:
    store = await Storage.open(f"sqlite+aiosqlite:///{db}")
    yield store
    await store.close()


async def started(venue: FakeVenue, storage: Storage, **kw: Any) -> OrderManager:
    om = OrderManager(venue, storage, config=FAST, clock=Clock(), sleep=Sleeps(), **kw)
    await om.start(background=False)
    return om


def intents(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line]


async def test_the_intent_is_in_the_journal_before_the_send_and_the_row_after(
    venue: FakeVenue, storage: Storage, db: Path
) -> None:
    journal = storage.intents_path
    assert journal == Path(f"{db}-intents")
    om = await started(venue, storage)
    seen: dict[str, Any] = {}
    create = venue.create_order

    async def observed(spec: OrderSpec) -> Any:
        seen["intents"] = intents(journal)
        seen["row"] = await storage.load_order(spec.client_order_id)
        return await create(spec)

    venue.create_order = observed  # type: ignore[method-assign]
    order = await om.submit(limit_spec("j1"))
    assert [i["coid"] for i in seen["intents"]] == ["j1"]
    assert seen["intents"][0]["spec"] == spec_to_json(order.spec)
    assert seen["row"] is None  # the database write is after the send
    stored = await storage.load_order("j1")
    assert stored is not None and stored.status is OrderStatus.SUBMITTED and stored.venue_order_id == order.venue_order_id
    entries = [(e.kind, e.payload.get("write_ahead")) for e in await storage.journal() if e.kind.startswith("order.")]
    assert entries == [("order.new", "intent_journal"), ("order.ack", None)]
    await om.close()
    await storage.close()
    assert journal.read_bytes() == b""  # every intent is stored: emptied on close


@pytest.fixture
def venue() -> FakeVenue:
    return FakeVenue()


async def test_a_refused_or_unknown_create_stores_the_new_entry_first(venue: FakeVenue, storage: Storage) -> None:
    om = await started(venue, storage)
    venue.fail("create_order", OrderRejected("INSUFFICIENT_FUND", "no money"))
    with pytest.raises(OrderRejected):
        await om.submit(limit_spec("r1"))
    venue.fail("create_order", VenueUnavailable("down"))
    with pytest.raises(VenueUnavailable):
        await om.submit(limit_spec("r2"))
    kinds = [(e.kind, e.payload["client_order_id"]) for e in await storage.journal() if e.kind.startswith("order.")]
    assert kinds == [("order.new", "r1"), ("order.rejected", "r1"), ("order.new", "r2"), ("order.rejected", "r2")]
    for coid in ("r1", "r2"):
        stored = await storage.load_order(coid)
        assert stored is not None and stored.status is OrderStatus.REJECTED
    await om.close()


async def test_an_id_only_in_the_intent_journal_is_not_reused(venue: FakeVenue, storage: Storage) -> None:
    om = await started(venue, storage)
    never = asyncio.Event()
    sending = asyncio.Event()

    async def stuck(spec: OrderSpec) -> Any:
        sending.set()
        await never.wait()
        raise AssertionError("unreachable")

    venue.create_order = stuck  # type: ignore[method-assign]
    task = asyncio.create_task(om.submit(limit_spec("s1")))
    async with asyncio.timeout(5):
        await sending.wait()
    assert await storage.has_order("s1") and await storage.load_order("s1") is None
    other = OrderManager(FakeVenue(), storage, config=FAST, clock=Clock(), sleep=Sleeps())
    with pytest.raises(Exception, match="never reused"):
        await other.submit(limit_spec("s1"))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # the cancelled send left the order NEW in memory only; the poll settles it and stores it, order.new first
    await om.poll()
    stored = await storage.load_order("s1")
    assert stored is not None and stored.status is OrderStatus.REJECTED and stored.reject_reason == "NOT_SENT"
    kinds = [e.kind for e in await storage.journal() if e.kind.startswith("order.")]
    assert kinds[0] == "order.new" and kinds.count("order.new") == 1, kinds
    await om.close()


async def test_a_process_that_dies_before_the_row_leaves_the_intent_for_the_next_start(
    venue: FakeVenue, db: Path
) -> None:
    first = await Storage.open(f"sqlite+aiosqlite:///{db}")
    om = await started(venue, first)
    gate = asyncio.Event()
    create = venue.create_order

    async def sent_then_hang(spec: OrderSpec) -> Any:
        ack = await create(spec)  # the venue has it ...
        await gate.wait()  # ... and this process "dies" before the answer is stored
        return ack

    venue.create_order = sent_then_hang  # type: ignore[method-assign]
    task = asyncio.create_task(om.submit(limit_spec("d1")))
    async with asyncio.timeout(5):
        while not venue.orders:
            await asyncio.sleep(0)
    # a second storage on the same file cannot take the journal while the first holds it
    second = await Storage.open(f"sqlite+aiosqlite:///{db}")
    assert second.intents_path is None and second.intents_imported == 0
    assert await second.load_order("d1") is None
    await second.close()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await first.close()  # the intent is not stored: the file keeps it
    assert [i["coid"] for i in intents(Path(f"{db}-intents"))] == ["d1"]
    venue.create_order = create  # type: ignore[method-assign]
    restarted = await Storage.open(f"sqlite+aiosqlite:///{db}")
    try:
        assert restarted.intents_imported == 1
        stored = await restarted.load_order("d1")
        assert stored is not None and stored.status is OrderStatus.NEW and stored.venue_order_id is None
        new = [e for e in await restarted.journal() if e.kind == "order.new"]
        assert len(new) == 1 and new[0].payload["recovered_from"] == "intent_journal"
        om2 = await started(venue, restarted)
        report = om2.last_reconciliation
        assert report is not None
        assert report.ok, report.summary()
        order = om2.order("d1")
        assert order is not None and order.status is OrderStatus.OPEN and order.venue_order_id == "v1"
        await om2.close()
    finally:
        await restarted.close()
    assert Path(f"{db}-intents").read_bytes() == b""
