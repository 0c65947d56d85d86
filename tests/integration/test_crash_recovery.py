"""A real process running the order manager is SIGKILLed mid-submit; after a restart, storage equals the venue.

The runner (``tests/om_crash_runner.py``) kills itself with SIGKILL at a deterministic point
(``CRYPTOJ_TEST_CRASH_AT``): after the write-ahead (stored, never sent) or after the send (the
venue accepted the order, its ack never reached storage). A new order manager over the same
database then reconciles; the simulator's admin records are the truth it is compared with.

Every test runs against a SQLite file with its order-intent journal (the default: the intent is
written ahead to the journal, the row follows the send), a SQLite file without one (the row is
the write-ahead) and — when ``CRYPTOJ_TEST_POSTGRES_URL`` is set — PostgreSQL with an intent
journal file, each database in a fresh schema.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from cryptoj.config import ExecutionConfig
from cryptoj.model.orders import OrderStatus
from cryptoj.order_execution import OrderManager
from cryptoj.storage import Storage
from cryptoj.venues.simulated.server import SimulatorServer
from tests.integration.test_order_execution_sim import (
    assert_storage_equals_venue,
    best,
    make_venue,
    venue_orders,
)

pytestmark = pytest.mark.integration

RUNNER = Path(__file__).resolve().parents[1] / "om_crash_runner.py"
ROOT = Path(__file__).resolve().parents[2]
PG_URL = os.environ.get("CRYPTOJ_TEST_POSTGRES_URL")


class Databases:
    """Named databases of one backend: SQLite files in ``tmp``, or PostgreSQL schemas (dropped afterwards)."""

    def __init__(self, kind: str, tmp: Path) -> None:
        self.kind = kind
        self.tmp = tmp
        self.schemas: dict[str, str] = {}

    def url(self, name: str) -> str:
        if self.kind == "postgresql":
            assert PG_URL
            return PG_URL
        return f"sqlite+aiosqlite:///{self.tmp / name}.db"

    def intents(self, name: str) -> str:
        if self.kind == "sqlite-no-journal":
            return "none"
        return str(self.tmp / f"{name}.intents") if self.kind == "postgresql" else "auto"

    async def schema(self, name: str) -> str | None:
        if self.kind != "postgresql":
            return None
        if name not in self.schemas:
            schema = self.schemas[name] = f"crash_{uuid.uuid4().hex[:12]}"
            await self._sql(f'CREATE SCHEMA "{schema}"')
        return self.schemas[name]

    async def open(self, name: str) -> Storage:
        intents = self.intents(name)
        return await Storage.open(
            self.url(name), schema=await self.schema(name), intents=None if intents == "none" else intents
        )

    async def drop(self) -> None:
        for schema in self.schemas.values():
            await self._sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')

    async def _sql(self, statement: str) -> None:
        engine = create_async_engine(self.url(""))
        try:
            async with engine.begin() as conn:
                await conn.execute(text(statement))
        finally:
            await engine.dispose()


@pytest.fixture(params=["sqlite", "sqlite-no-journal", "postgresql"])
async def dbs(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Databases]:
    if request.param == "postgresql" and not PG_URL:
        pytest.skip("PostgreSQL crash tests need CRYPTOJ_TEST_POSTGRES_URL (source scripts/start_postgres.sh)")
    databases = Databases(request.param, tmp_path)
    try:
        yield databases
    finally:
        await databases.drop()


async def run_runner(
    dbs: Databases, sim: SimulatorServer, db: str, orders: list[dict[str, str]], crash_at: str | None
) -> tuple[int, str]:
    env = dict(os.environ)
    env.pop("CRYPTOJ_TEST_CRASH_AT", None)
    if crash_at is not None:
        env["CRYPTOJ_TEST_CRASH_AT"] = crash_at
    env["CRYPTOJ_TEST_DB_SCHEMA"] = await dbs.schema(db) or ""
    env["CRYPTOJ_TEST_INTENTS"] = dbs.intents(db)
    assert sim.key_file is not None
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(RUNNER), sim.base_url, sim.ws_user_url, str(sim.key_file), dbs.url(db),
        orjson.dumps(orders).decode(), cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    text = out.decode()
    if crash_at is None:
        assert proc.returncode == 0, err.decode()[-3000:]
    return proc.returncode, text


def orders_for(sim: SimulatorServer) -> list[dict[str, str]]:
    bid, _ask = best(sim)
    return [
        {"coid": "c-limit-1", "side": "BUY", "kind": "LIMIT", "size": "0.01", "price": str(bid - Decimal(25))},
        {"coid": "c-market-2", "side": "BUY", "kind": "MARKET", "size": "0.05"},
        {"coid": "c-limit-3", "side": "BUY", "kind": "LIMIT", "size": "0.02", "price": str(bid - Decimal(26))},
    ]


async def restart(dbs: Databases, sim: SimulatorServer, db: str, **config: Any) -> tuple[OrderManager, Storage]:
    storage = await dbs.open(db)
    om = OrderManager(make_venue(sim), storage, config=ExecutionConfig(resolve_backoff_seconds=0.01, **config))
    await om.start(background=False)
    return om, storage


@pytest.mark.parametrize("nth", [1, 3])
async def test_sigkill_between_write_ahead_and_send(dbs: Databases, sim: SimulatorServer, nth: int) -> None:
    db = "crash"
    orders = orders_for(sim)
    code, out = await run_runner(dbs, sim, db, orders, f"after_write_ahead:{nth}")
    assert code == -signal.SIGKILL, out
    victim = orders[nth - 1]["coid"]
    assert victim not in await venue_orders(sim)  # it was never sent
    om, storage = await restart(dbs, sim, db)
    try:
        stored = await storage.load_order(victim)
        assert stored is not None and stored.status is OrderStatus.REJECTED and stored.reject_reason == "NOT_SENT"
        report = om.last_reconciliation
        assert report is not None
        assert report.ok, report.summary()
        assert report.abandoned == [victim]
        assert sorted(await venue_orders(sim)) == sorted(o["coid"] for o in orders[: nth - 1])
        await assert_storage_equals_venue(sim, storage)
    finally:
        await om.close()
        await storage.close()


async def test_sigkill_between_send_and_ack(dbs: Databases, sim: SimulatorServer) -> None:
    db = "crash"
    orders = orders_for(sim)
    for nth, victim in ((1, "c-limit-1"), (2, "c-market-2")):
        code, out = await run_runner(dbs, sim, f"{db}-{nth}", orders[nth - 1 : nth], "after_send:1")
        assert code == -signal.SIGKILL, out
        records = await venue_orders(sim)
        assert victim in records  # the venue has it ...
        check = await dbs.open(f"{db}-{nth}")
        try:
            stored = await check.load_order(victim)
            assert stored is not None and stored.status is OrderStatus.NEW and stored.venue_order_id is None  # ... we do not
        finally:
            await check.close()
    # restart each crashed process's database: reconciliation finds the order by client_order_id
    for nth, victim, status in ((1, "c-limit-1", OrderStatus.OPEN), (2, "c-market-2", OrderStatus.FILLED)):
        om, storage = await restart(dbs, sim, f"{db}-{nth}")
        try:
            report = om.last_reconciliation
            assert report is not None
            assert report.ok, report.summary()
            assert victim in report.updated
            order = om.order(victim)
            assert order is not None and order.status is status
            records = await venue_orders(sim)
            assert order.venue_order_id == records[victim]["order_id"]
            assert order.filled_size == Decimal(records[victim]["filled_size"])
            # both crashed processes traded on one venue account: each restart adopts the other's order as EXTERNAL
            all_stored = {o.client_order_id: o for o in await storage.all_orders()}
            assert set(all_stored) == {"c-limit-1", "c-market-2"}
            assert not all_stored[victim].external
            assert all(o.external for coid, o in all_stored.items() if coid != victim)
            await assert_storage_equals_venue(sim, storage)
        finally:
            await om.close()
            await storage.close()


async def test_sigkill_while_the_create_outcome_is_unknown(dbs: Databases, sim: SimulatorServer) -> None:
    """Every answer to the create is dropped after the venue executed it (accept-then-drop on each retry).

    The REST client retries with the same id (the venue answers with the order it has, then the
    answer is dropped again), the order manager stores IN_FLIGHT_UNKNOWN and the process is killed.
    The restart finds exactly one order at the venue by client_order_id.
    """
    db = "crash"
    sim.admin.set_faults(drop_order_create_next=4)  # the runner's client makes 1 + 3 attempts
    code, _ = await run_runner(dbs, sim, db, orders_for(sim)[:1], "after_unknown:1")
    assert code == -signal.SIGKILL
    assert sim.faults.fired["drop_order_create"] == 4
    check = await dbs.open(db)
    try:
        stored = await check.load_order("c-limit-1")
        assert stored is not None and stored.status is OrderStatus.IN_FLIGHT_UNKNOWN
    finally:
        await check.close()
    om, storage = await restart(dbs, sim, db)
    try:
        report = om.last_reconciliation
        assert report is not None and report.ok and report.updated == ["c-limit-1"]
        assert list(await venue_orders(sim)) == ["c-limit-1"]
        await assert_storage_equals_venue(sim, storage)
    finally:
        await om.close()
        await storage.close()


async def test_full_run_then_restart_reconciles_everything(dbs: Databases, sim: SimulatorServer) -> None:
    """Three orders, SIGKILL after the third send; the restart sees all three exactly as the venue does."""
    db = "crash"
    orders = orders_for(sim)
    code, out = await run_runner(dbs, sim, db, orders, "after_send:3")
    assert code == -signal.SIGKILL
    assert "SUBMITTED c-limit-1" in out and "SUBMITTED c-market-2" in out
    om, storage = await restart(dbs, sim, db)
    try:
        report = om.last_reconciliation
        assert report is not None
        assert report.ok, report.summary()
        assert sorted(await venue_orders(sim)) == ["c-limit-1", "c-limit-3", "c-market-2"]
        await assert_storage_equals_venue(sim, storage)
        assert om.order("c-limit-3").status is OrderStatus.OPEN  # type: ignore[union-attr]
    finally:
        await om.close()
        await storage.close()


async def test_unsent_order_is_resent_with_the_same_id_when_configured(dbs: Databases, sim: SimulatorServer) -> None:
    db = "crash"
    orders = orders_for(sim)[:1]
    code, _ = await run_runner(dbs, sim, db, orders, "after_write_ahead:1")
    assert code == -signal.SIGKILL
    om, storage = await restart(dbs, sim, db, unsent_on_restart="resend")
    try:
        report = om.last_reconciliation
        assert report is not None and report.ok and report.resent == ["c-limit-1"]
        records = await venue_orders(sim)
        assert list(records) == ["c-limit-1"]
        await assert_storage_equals_venue(sim, storage)
    finally:
        await om.close()
        await storage.close()


async def test_runner_without_crash_completes(dbs: Databases, sim: SimulatorServer) -> None:
    db = "ok"
    code, out = await run_runner(dbs, sim, db, orders_for(sim)[:1], None)
    assert code == 0 and "DONE" in out
    storage = await dbs.open(db)
    try:
        stored = await storage.load_order("c-limit-1")
        assert stored is not None and stored.venue_order_id is not None
    finally:
        await storage.close()
