"""The repository the rest of the system uses: :class:`Storage`.

Open it with ``storage = await Storage.open(url)`` (``sqlite+aiosqlite:///path``
or ``postgresql+asyncpg://...``) and close it with ``await storage.close()`` (or
use ``async with``). Every method is a coroutine and runs in its own
transaction, unless called inside ``async with storage.transaction():``, in
which case all the calls commit (or roll back) together.

For a SQLite file the storage also holds the **order-intent journal**
(:mod:`cryptoj.storage.intents`, ``<database>-intents`` next to the file): the order
manager's fast write-ahead. :meth:`Storage.write_intent` appends an order's intent
synchronously before its request is sent; its database row follows after the send.
:meth:`Storage.open` imports the intents the database lacks (a process that died in
between) as NEW orders, which the order manager's reconciliation then settles.
"""

from __future__ import annotations

import asyncio
import contextvars
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Final, Literal, NamedTuple, Self

from sqlalchemy import Row, TextClause, bindparam, event, func, inspect, select, text, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from cryptoj.errors import InvalidValue, SchemaVersionMismatch, StorageError, truncate
from cryptoj.model.money import Side
from cryptoj.model.orders import TERMINAL_STATUSES, Fill, Liquidity, Order, OrderStatus
from cryptoj.storage import schema as s
from cryptoj.storage.codec import spec_from_json, spec_to_json
from cryptoj.storage.intents import COMPACT_BYTES, IntentJournal

__all__ = [
    "TRADING_STATES",
    "BalanceSnapshot",
    "JournalEntry",
    "PositionSnapshot",
    "Storage",
    "TradingStateRecord",
]

TRADING_STATES: Final = ("ACTIVE", "REDUCE_ONLY", "HALTED")
DEFAULT_VENUE: Final = "coinbase"


class BalanceSnapshot(NamedTuple):
    """One currency's balance at a moment: free and held (reserved by open orders)."""

    available: Decimal
    hold: Decimal


class PositionSnapshot(NamedTuple):
    """One product's position at a moment (spot: base size held)."""

    size: Decimal
    average_entry_price: Decimal | None
    realised_pnl: Decimal
    fees: Decimal


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One append-only journal record; Decimals in ``payload`` come back as strings."""

    id: int
    time: datetime
    kind: str
    payload: Any


@dataclass(frozen=True, slots=True)
class TradingStateRecord:
    """The persisted trading state (ACTIVE / REDUCE_ONLY / HALTED) and the emergency record."""

    state: str
    reason: str
    since: datetime
    emergency: dict[str, Any] | None


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _safe_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable URL>"


def _db_error(exc: SQLAlchemyError) -> StorageError:
    cause = getattr(exc, "orig", None) or exc
    return StorageError(f"database error ({type(cause).__name__}): {truncate(str(cause), 300)}")


class Storage:
    """Orders, fills, snapshots, the journal and the trading state, in one database."""

    def __init__(self, engine: AsyncEngine, clock: Callable[[], datetime] = _utc_now) -> None:
        """Wrap an engine whose schema is ready; use :meth:`open` instead."""
        self._engine = engine
        self._clock = clock
        self._closed = False
        self._current: contextvars.ContextVar[AsyncConnection | None] = contextvars.ContextVar(
            f"cryptoj_storage_tx_{id(self)}", default=None
        )
        self._saved: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
            f"cryptoj_storage_saved_{id(self)}", default=None
        )
        self._intents: IntentJournal | None = None
        self._intent_pending: set[str] = set()
        self._reader: sqlite3.Connection | None = None
        self.intents_imported = 0
        """Orders the last :meth:`open` found only in the intent journal and stored as NEW."""
        dialect = engine.dialect.name
        if dialect not in ("sqlite", "postgresql"):
            raise StorageError(f"unsupported database dialect {dialect!r}; use SQLite or PostgreSQL")
        self._insert = sqlite.insert if dialect == "sqlite" else postgresql.insert
        # the hot writes as statements built once: SQLAlchemy cannot cache ON CONFLICT constructs, and compiling
        # one per call cost more loop time than the rest of the write (same SQL on SQLite >= 3.24 and PostgreSQL)
        self._order_upsert = _upsert(s.orders, ["client_order_id"], update=True)
        self._fill_insert = _upsert(s.fills, ["venue", "trade_id"], update=False)
        self._journal_insert = s.journal.insert()

    # -- lifecycle ------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        clock: Callable[[], datetime] = _utc_now,
        schema: str | None = None,
        intents: str | Path | Literal["auto"] | None = "auto",
        intents_sync: bool = False,
    ) -> Storage:
        """Connect to ``url``, create the tables on first use, check the schema version.

        For a SQLite file the parent directories are created. ``schema`` (PostgreSQL
        only) puts the tables in that existing schema (via ``search_path``).
        ``intents`` is the order-intent journal's file: ``"auto"`` is ``<database>-intents``
        for a SQLite file and none otherwise; None switches it off (the order manager then
        writes ahead to the database). ``intents_sync`` fsyncs every intent (survives a power
        loss, not only a process crash; see ``docs/storage.md``). When another process holds
        the journal, this storage has none. Intents the database lacks are imported (NEW).
        Raises :class:`~cryptoj.errors.SchemaVersionMismatch` when the database was
        made by an incompatible version, :class:`~cryptoj.errors.StorageError` when
        it cannot be opened.
        """
        try:
            parsed = make_url(url)
        except ArgumentError:
            raise StorageError(f"storage url {url!r} is not a database URL") from None
        backend = parsed.get_backend_name()
        options: dict[str, Any] = {}
        sqlite_file: str | None = None
        if backend == "sqlite":
            if parsed.drivername != "sqlite+aiosqlite":
                raise StorageError(f"storage url {_safe_url(url)}: use the async driver, sqlite+aiosqlite://")
            if schema is not None:
                raise StorageError("storage schema= is for PostgreSQL only")
            database = parsed.database or ""
            options["connect_args"] = {"timeout": 30}
            if database in ("", ":memory:"):
                options["poolclass"] = StaticPool
            elif not database.startswith("file:"):
                await asyncio.to_thread(_make_parent_dirs, database)
                sqlite_file = database
        elif backend == "postgresql":
            if parsed.drivername != "postgresql+asyncpg":
                raise StorageError(f"storage url {_safe_url(url)}: use the async driver, postgresql+asyncpg://")
            if schema is not None:
                options["connect_args"] = {"server_settings": {"search_path": schema}}
        else:
            raise StorageError(f"storage url {_safe_url(url)}: only SQLite and PostgreSQL are supported")

        engine = create_async_engine(parsed, **options)
        if backend == "sqlite":
            event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        try:
            await _prepare_schema(engine)
        except BaseException:
            await engine.dispose()
            raise
        storage = cls(engine, clock)
        try:
            storage._reader, storage._intents = await asyncio.to_thread(_open_side_files, sqlite_file, intents, intents_sync)
            if storage._intents is not None:
                await storage._import_intents(storage._intents)
        except BaseException:
            journal, storage._intents = storage._intents, None
            if journal is not None:
                journal.close()  # as it is: intents that could not be imported must not be lost
            await storage.close()
            raise
        return storage

    async def close(self) -> None:
        """Release every connection (and the intent journal). Further calls raise :class:`StorageError`."""
        if not self._closed:
            self._closed = True
            journal, self._intents = self._intents, None
            if journal is not None:
                try:
                    if not self._intent_pending:  # every intent is stored: nothing for the next start to import
                        journal.truncate()
                finally:
                    journal.close()
            if self._reader is not None:
                self._reader.close()
                self._reader = None
            await self._engine.dispose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self._engine.dialect.name

    # -- the order-intent journal ----------------------------------------------------------

    @property
    def intents_path(self) -> Path | None:
        """The intent journal this storage writes (None: none, or another process holds it)."""
        return None if self._intents is None else self._intents.path

    def write_intent(self, order: Order, *, venue: str = DEFAULT_VENUE, spec: dict[str, Any] | None = None) -> bool:
        """Append ``order``'s intent to the journal, synchronously; False when there is no journal.

        Once this returns True the intent survives the death of the process (and a power
        loss with ``intents_sync``); the order's row is expected from a later
        :meth:`save_order`, until which the intent is kept (and imported by the next
        :meth:`open` if the process dies first). ``spec`` is ``spec_to_json(order.spec)`` when
        the caller has it already.
        """
        journal = self._intents
        if journal is None:
            return False
        if self._closed:
            raise StorageError("storage is closed")
        at = order.created_at or self._clock()
        record = {"v": 1, "coid": order.client_order_id, "venue": venue, "at": s.format_time(at),
                  "spec": spec if spec is not None else spec_to_json(order.spec)}
        journal.append(record)
        self._intent_pending.add(order.client_order_id)
        return True

    def _stored(self, client_order_ids: list[str]) -> None:
        """These orders' rows are committed: their intents are no longer needed."""
        if not self._intent_pending:
            return
        for coid in client_order_ids:
            self._intent_pending.discard(coid)
        journal = self._intents
        if journal is not None and not self._intent_pending and journal.size > COMPACT_BYTES:
            journal.truncate()

    async def _import_intents(self, journal: IntentJournal) -> None:
        records = await asyncio.to_thread(journal.read)
        imported = 0
        if records:
            async with self.transaction(), self._connection() as conn:
                for number, record in enumerate(records, start=1):
                    coid = str(record["coid"])
                    query = select(s.orders.c.client_order_id).where(s.orders.c.client_order_id == coid)
                    if (await conn.execute(query)).first() is not None:
                        continue  # stored after its send: nothing to recover
                    spec = spec_from_json(record["spec"])
                    if spec.client_order_id != coid:
                        raise StorageError(
                            f"order-intent journal {journal.path}, intent {number}: id {coid} but spec of {spec.client_order_id}"
                        )
                    at = s.parse_time(str(record.get("at", "")))
                    order = Order(spec=spec, created_at=at, updated_at=at)
                    await self.save_order(order, venue=str(record.get("venue") or DEFAULT_VENUE))
                    await self.append_journal(
                        "order.new",
                        {"client_order_id": coid, "venue_order_id": None, "product_id": spec.product_id,
                         "status": order.status.value, "spec": record["spec"], "recovered_from": "intent_journal"},
                        at=at,
                    )
                    imported += 1
        self.intents_imported = imported
        journal.truncate()

    async def has_order(self, client_order_id: str) -> bool:
        """Whether an order with this id is stored (or written ahead to the intent journal).

        For a SQLite file this is a synchronous primary-key read on a dedicated read-only
        connection (WAL readers never wait for writers): no thread hop, microseconds.
        """
        if client_order_id in self._intent_pending:
            return True
        if self._closed:
            raise StorageError("storage is closed")
        reader = self._reader
        if reader is not None and self._current.get() is None:
            try:
                return reader.execute(_HAS_ORDER, (client_order_id,)).fetchone() is not None
            except sqlite3.Error:
                pass  # busy or broken: ask through the engine
        async with self._connection() as conn:
            query = select(s.orders.c.client_order_id).where(s.orders.c.client_order_id == client_order_id)
            return (await conn.execute(query)).first() is not None

    # -- transactions ---------------------------------------------------------------

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        """Make every storage call inside the block one atomic transaction.

        Nested blocks join the outer transaction. Do not start other tasks that use
        this storage from inside the block: they would share its connection.
        """
        if self._current.get() is not None:
            yield
            return
        saved: list[str] = []
        async with self._connection() as conn:
            token = self._current.set(conn)
            saved_token = self._saved.set(saved)
            try:
                yield
            finally:
                self._saved.reset(saved_token)
                self._current.reset(token)
        if saved:  # committed
            self._stored(saved)

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[AsyncConnection]:
        if self._closed:
            raise StorageError("storage is closed")
        current = self._current.get()
        try:
            if current is not None:
                yield current
            else:
                async with self._engine.begin() as conn:
                    yield conn
        except SQLAlchemyError as exc:
            raise _db_error(exc) from exc

    # -- orders -------------------------------------------------------------------

    async def save_order(self, order: Order, *, venue: str = DEFAULT_VENUE) -> None:
        """Insert or update ``order`` (spec, status, history) and insert its fills."""
        changed = order.updated_at or order.created_at or self._clock()
        values: dict[str, Any] = {
            "client_order_id": order.client_order_id,
            "venue": venue,
            "venue_order_id": order.venue_order_id,
            "product_id": order.product_id,
            "side": order.side.value,
            "kind": order.spec.kind.value,
            "spec": spec_to_json(order.spec),
            "status": order.status.value,
            "reject_reason": order.reject_reason,
            "external": order.external,
            "created_at": order.created_at,
            "updated_at": order.updated_at,
            "changed_at": changed,
            "history": [[old.value, new.value] for old, new in order.history],
        }
        async with self.transaction(), self._connection() as conn:
            await conn.execute(self._order_upsert, values)
            for fill in order.fills.values():
                await self._insert_fill(conn, fill, venue)
            saved = self._saved.get()
            if saved is not None and order.client_order_id in self._intent_pending:
                saved.append(order.client_order_id)

    async def load_order(self, client_order_id: str) -> Order | None:
        """The stored order with this id (with its fills), or None."""
        orders = await self._load_orders(s.orders.c.client_order_id == client_order_id)
        return orders[0] if orders else None

    async def open_orders(self) -> list[Order]:
        """Every order not in a terminal state (FILLED, CANCELLED, EXPIRED, REJECTED)."""
        terminal = [status.value for status in TERMINAL_STATUSES]
        return await self._load_orders(s.orders.c.status.not_in(terminal))

    async def all_orders(self, since: datetime | None = None) -> list[Order]:
        """Every order, or those created/updated at or after ``since``; oldest change first."""
        if since is None:
            return await self._load_orders(None)
        s.format_time(since)  # refuses a naive time with a clear message
        return await self._load_orders(s.orders.c.changed_at >= since)

    async def _load_orders(self, where: Any) -> list[Order]:
        query = select(s.orders)
        if where is not None:
            query = query.where(where)
        query = query.order_by(s.orders.c.changed_at, s.orders.c.client_order_id)
        async with self._connection() as conn:
            rows = (await conn.execute(query)).all()
            if not rows:
                return []
            ids = select(s.orders.c.client_order_id)
            if where is not None:
                ids = ids.where(where)
            fill_rows = (
                await conn.execute(
                    select(s.fills).where(s.fills.c.client_order_id.in_(ids)).order_by(s.fills.c.time, s.fills.c.id)
                )
            ).all()
        by_order: dict[str, list[Fill]] = {}
        for fill_row in fill_rows:
            by_order.setdefault(fill_row.client_order_id, []).append(_row_to_fill(fill_row))
        return [_row_to_order(row, by_order.get(row.client_order_id, [])) for row in rows]

    # -- fills -----------------------------------------------------------------------

    async def record_fill(self, fill: Fill, venue: str = DEFAULT_VENUE) -> bool:
        """Store ``fill``; False (and nothing written) if ``(venue, trade_id)`` is already stored."""
        async with self._connection() as conn:
            return await self._insert_fill(conn, fill, venue)

    async def _insert_fill(self, conn: AsyncConnection, fill: Fill, venue: str) -> bool:
        params = {
            "venue": venue,
            "trade_id": fill.trade_id,
            "client_order_id": fill.client_order_id,
            "venue_order_id": fill.venue_order_id,
            "product_id": fill.product_id,
            "side": fill.side.value,
            "price": fill.price,
            "size": fill.size,
            "fee": fill.fee,
            "liquidity": fill.liquidity.value,
            "time": fill.time,
        }
        result = await conn.execute(self._fill_insert, params)
        return bool(result.rowcount == 1)

    async def fills_for(self, client_order_id: str) -> list[Fill]:
        """The stored fills of one order, oldest first."""
        query = select(s.fills).where(s.fills.c.client_order_id == client_order_id).order_by(s.fills.c.time, s.fills.c.id)
        async with self._connection() as conn:
            rows = (await conn.execute(query)).all()
        return [_row_to_fill(row) for row in rows]

    async def last_fill_time(self, venue: str | None = None) -> datetime | None:
        """Time of the newest stored fill (of ``venue`` when given), or None."""
        query = select(func.max(s.fills.c.time))
        if venue is not None:
            query = query.where(s.fills.c.venue == venue)
        async with self._connection() as conn:
            value: datetime | None = (await conn.execute(query)).scalar_one_or_none()
        return value

    # -- journal (append-only) --------------------------------------------------------------

    async def append_journal(self, kind: str, payload: Any, *, at: datetime | None = None) -> int:
        """Append an event; returns its id (ids only grow). There is no update or delete."""
        if not kind:
            raise InvalidValue("journal.kind", kind, "required")
        async with self._connection() as conn:
            result = await conn.execute(self._journal_insert, {"time": at or self._clock(), "kind": kind, "payload": payload})
        key = result.inserted_primary_key
        assert key is not None
        return int(key[0])

    async def journal(self, since_id: int = 0, limit: int = 1000, *, kind: str | None = None) -> list[JournalEntry]:
        """Entries with id > ``since_id`` (optionally of one ``kind``), oldest first, at most ``limit``."""
        if limit <= 0:
            raise InvalidValue("journal.limit", limit, "must be positive")
        query = select(s.journal).where(s.journal.c.id > since_id)
        if kind is not None:
            query = query.where(s.journal.c.kind == kind)
        query = query.order_by(s.journal.c.id).limit(limit)
        async with self._connection() as conn:
            rows = (await conn.execute(query)).all()
        return [JournalEntry(id=int(r.id), time=r.time, kind=r.kind, payload=r.payload) for r in rows]

    # -- balance / position snapshots ------------------------------------------------------

    async def save_balances(self, balances: Mapping[str, BalanceSnapshot], *, at: datetime | None = None) -> None:
        """Record a snapshot: currency → (available, hold)."""
        when = at or self._clock()
        rows = [
            {"time": when, "currency": cur, "available": bal.available, "hold": bal.hold} for cur, bal in balances.items()
        ]
        if rows:
            async with self._connection() as conn:
                await conn.execute(s.balances.insert(), rows)

    async def latest_balances(self) -> dict[str, BalanceSnapshot]:
        """Each currency's most recent snapshot."""
        rows = await self._latest(s.balances, s.balances.c.currency)
        return {r.currency: BalanceSnapshot(r.available, r.hold) for r in rows}

    async def save_positions(self, positions: Mapping[str, PositionSnapshot], *, at: datetime | None = None) -> None:
        """Record a snapshot: product id → position."""
        when = at or self._clock()
        rows = [
            {
                "time": when,
                "product_id": pid,
                "size": pos.size,
                "average_entry_price": pos.average_entry_price,
                "realised_pnl": pos.realised_pnl,
                "fees": pos.fees,
            }
            for pid, pos in positions.items()
        ]
        if rows:
            async with self._connection() as conn:
                await conn.execute(s.positions.insert(), rows)

    async def latest_positions(self) -> dict[str, PositionSnapshot]:
        """Each product's most recent snapshot."""
        rows = await self._latest(s.positions, s.positions.c.product_id)
        return {r.product_id: PositionSnapshot(r.size, r.average_entry_price, r.realised_pnl, r.fees) for r in rows}

    async def _latest(self, table: Any, key: Any) -> list[Row[Any]]:
        newest = select(key, func.max(table.c.time)).group_by(key)
        query = select(table).where(tuple_(key, table.c.time).in_(newest)).order_by(key, table.c.id)
        async with self._connection() as conn:
            rows = (await conn.execute(query)).all()
        latest: dict[Any, Row[Any]] = {}
        for row in rows:  # two snapshots at the same instant: the later insert wins
            latest[getattr(row, key.name)] = row
        return list(latest.values())

    # -- trading state ----------------------------------------------------------------------

    async def set_trading_state(
        self,
        state: str,
        reason: str,
        *,
        emergency: Mapping[str, Any] | None = None,
        at: datetime | None = None,
    ) -> None:
        """Persist the trading state (replacing the previous one, emergency record included)."""
        state = str(state)
        if state not in TRADING_STATES:
            raise InvalidValue("trading_state.state", state, f"must be one of {', '.join(TRADING_STATES)}")
        values = {"state": state, "reason": reason, "since": at or self._clock(), "emergency": emergency}
        stmt = self._insert(s.trading_state).values(id=1, **values)
        stmt = stmt.on_conflict_do_update(index_elements=[s.trading_state.c.id], set_=values)
        async with self._connection() as conn:
            await conn.execute(stmt)

    async def get_trading_state(self) -> TradingStateRecord | None:
        """The persisted trading state, or None if never set."""
        async with self._connection() as conn:
            row = (await conn.execute(select(s.trading_state).where(s.trading_state.c.id == 1))).one_or_none()
        if row is None:
            return None
        return TradingStateRecord(state=row.state, reason=row.reason, since=row.since, emergency=row.emergency)


# --- helpers -----------------------------------------------------------------------------


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


_HAS_ORDER: Final = "SELECT 1 FROM orders WHERE client_order_id = ?"


def _upsert(table: Any, keys: list[str], *, update: bool) -> TextClause:
    """``INSERT ... ON CONFLICT (keys) DO UPDATE SET every other column / DO NOTHING``, typed binds by column name."""
    columns = [c for c in table.columns if not (c.primary_key and c.autoincrement is True and c.name not in keys)]
    names = [c.name for c in columns]

    def quoted(name: str) -> str:
        return f'"{name}"'

    # identifiers come from our own schema module, never from input; values are bound parameters
    sql = f"INSERT INTO {quoted(table.name)} ({', '.join(map(quoted, names))}) VALUES ({', '.join(':' + n for n in names)}) "  # noqa: S608
    sql += f"ON CONFLICT ({', '.join(map(quoted, keys))}) "
    if update:
        sql += "DO UPDATE SET " + ", ".join(f"{quoted(n)} = excluded.{quoted(n)}" for n in names if n not in keys)
    else:
        sql += "DO NOTHING"
    return text(sql).bindparams(*[bindparam(c.name, type_=c.type) for c in columns])


def _open_reader(database: Path) -> sqlite3.Connection:
    """A read-only autocommit connection for :meth:`Storage.has_order` (used on the event loop thread)."""
    reader = sqlite3.connect(database, timeout=1.0, isolation_level=None, check_same_thread=False)
    reader.execute("PRAGMA query_only=1")
    return reader


def _open_side_files(
    sqlite_file: str | None, intents: str | Path | None, sync: bool
) -> tuple[sqlite3.Connection | None, IntentJournal | None]:
    """The fast reader (SQLite file) and the intent journal (``"auto"``: ``<database>-intents`` for a SQLite file)."""
    path: Path | None = None
    if intents == "auto":
        path = None if sqlite_file is None else Path(sqlite_file + "-intents").expanduser()
    elif intents is not None:
        path = Path(intents).expanduser()
    reader = None if sqlite_file is None else _open_reader(Path(sqlite_file).expanduser())
    try:
        journal = None if path is None else IntentJournal.open(path, sync=sync)
    except BaseException:
        if reader is not None:
            reader.close()
        raise
    return reader, journal


def _make_parent_dirs(database: str) -> None:
    Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)


def _has_meta(sync_conn: Any) -> bool:
    return bool(inspect(sync_conn).has_table("meta"))


async def _prepare_schema(engine: AsyncEngine) -> None:
    try:
        async with engine.begin() as conn:
            if await conn.run_sync(_has_meta):
                found = (
                    await conn.execute(select(s.meta.c.value).where(s.meta.c.key == "schema_version"))
                ).scalar_one_or_none()
                if found is None or not found.isdigit():
                    raise StorageError(f"database has a meta table but no valid schema_version (found {found!r})")
                if int(found) != s.SCHEMA_VERSION:
                    raise SchemaVersionMismatch(int(found), s.SCHEMA_VERSION)
                await conn.run_sync(s.metadata.create_all)
            else:
                await conn.run_sync(s.metadata.create_all)
                await conn.execute(s.meta.insert().values(key="schema_version", value=str(s.SCHEMA_VERSION)))
    except SQLAlchemyError as exc:
        raise StorageError(f"cannot open database {_safe_url(str(engine.url))}: {_db_error(exc)}") from exc
    except OSError as exc:
        raise StorageError(f"cannot open database {_safe_url(str(engine.url))}: {exc}") from exc


def _row_to_fill(row: Row[Any]) -> Fill:
    return Fill(
        trade_id=row.trade_id,
        client_order_id=row.client_order_id,
        product_id=row.product_id,
        side=Side(row.side),
        price=row.price,
        size=row.size,
        fee=row.fee,
        time=row.time,
        liquidity=Liquidity(row.liquidity),
        venue_order_id=row.venue_order_id,
    )


def _row_to_order(row: Row[Any], fills: Iterable[Fill]) -> Order:
    try:
        status = OrderStatus(row.status)
        history = [(OrderStatus(old), OrderStatus(new)) for old, new in row.history]
    except ValueError as exc:
        raise StorageError(f"stored order {row.client_order_id} has an unknown status: {exc}") from None
    return Order(
        spec=spec_from_json(row.spec),
        status=status,
        venue_order_id=row.venue_order_id,
        reject_reason=row.reject_reason,
        external=bool(row.external),
        created_at=row.created_at,
        updated_at=row.updated_at,
        fills={f.trade_id: f for f in fills},
        history=history,
    )
