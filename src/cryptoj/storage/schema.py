"""Tables and column types. Exact values on every backend.

* Decimals are stored as TEXT via :class:`DecimalText` (``str(Decimal)`` in,
  ``Decimal(text)`` out — the same digits and exponent come back). SQLAlchemy's
  ``Numeric`` is never used: SQLite stores it as a float and loses digits.
* Times are stored as TEXT via :class:`UtcText`: always UTC, fixed width
  (``2026-01-02T03:04:05.123456Z``), so text order is time order on every backend.
* JSON payloads are TEXT via :class:`JsonText` (orjson; Decimals become strings).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final

import orjson
from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Dialect,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.types import TypeDecorator

from cryptoj.errors import StorageError

__all__ = [
    "SCHEMA_VERSION",
    "DecimalText",
    "JsonText",
    "UtcText",
    "balances",
    "fills",
    "journal",
    "meta",
    "metadata",
    "orders",
    "positions",
    "trading_state",
]

SCHEMA_VERSION: Final = 1
"""Bump when the tables change; :meth:`Storage.open` refuses a database with another version."""

_TIME_FORMAT: Final = "%Y-%m-%dT%H:%M:%S.%fZ"


class DecimalText(TypeDecorator[Decimal]):
    """A :class:`~decimal.Decimal` stored exactly, as its string form."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        if not isinstance(value, Decimal) or not value.is_finite():
            raise StorageError(f"DecimalText column needs a finite Decimal, got {value!r} ({type(value).__name__})")
        return str(value)

    def process_result_value(self, value: str | None, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        try:
            return Decimal(value)
        except InvalidOperation:
            raise StorageError(f"DecimalText column holds {value!r}, which is not a decimal") from None


def format_time(value: datetime) -> str:
    """The stored form of a timezone-aware time (UTC, microseconds, ``Z``)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise StorageError(f"times must be timezone-aware, got naive {value.isoformat()}")
    return value.astimezone(UTC).strftime(_TIME_FORMAT)


def parse_time(value: str) -> datetime:
    try:
        return datetime.strptime(value, _TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        raise StorageError(f"stored time {value!r} is not in the format {_TIME_FORMAT}") from None


class UtcText(TypeDecorator[datetime]):
    """A timezone-aware datetime stored as fixed-width UTC text (sortable)."""

    impl = String(32)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> str | None:
        return None if value is None else format_time(value)

    def process_result_value(self, value: str | None, dialect: Dialect) -> datetime | None:
        return None if value is None else parse_time(value)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        return str(obj)
    if isinstance(obj, set | frozenset):
        return sorted(obj, key=str)
    raise TypeError(f"cannot store {type(obj).__name__} as JSON")


def dumps(value: Any) -> str:
    """JSON text for a payload; Decimals become strings, datetimes ISO 8601."""
    try:
        return orjson.dumps(value, default=_json_default, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError as exc:
        raise StorageError(f"payload is not JSON-serialisable: {exc}") from None


class JsonText(TypeDecorator[Any]):
    """JSON stored as TEXT (same on SQLite and PostgreSQL)."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else dumps(value)

    def process_result_value(self, value: str | None, dialect: Dialect) -> Any:
        return None if value is None else orjson.loads(value)


# SQLite only auto-increments an "INTEGER PRIMARY KEY"; PostgreSQL gets a BIGINT identity.
_BigId = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData()

meta = Table(
    "meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

orders = Table(
    "orders",
    metadata,
    Column("client_order_id", String(128), primary_key=True),
    Column("venue", String(32), nullable=False),
    Column("venue_order_id", String(128), nullable=True, index=True),
    Column("product_id", String(64), nullable=False),
    Column("side", String(8), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("spec", JsonText, nullable=False),
    Column("status", String(32), nullable=False, index=True),
    Column("reject_reason", Text, nullable=True),
    Column("external", Boolean, nullable=False, default=False),
    Column("created_at", UtcText, nullable=True),
    Column("updated_at", UtcText, nullable=True),
    Column("changed_at", UtcText, nullable=False, index=True),
    Column("history", JsonText, nullable=False),
)

fills = Table(
    "fills",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("venue", String(32), nullable=False),
    Column("trade_id", String(128), nullable=False),
    Column("client_order_id", String(128), nullable=False, index=True),
    Column("venue_order_id", String(128), nullable=True),
    Column("product_id", String(64), nullable=False),
    Column("side", String(8), nullable=False),
    Column("price", DecimalText, nullable=False),
    Column("size", DecimalText, nullable=False),
    Column("fee", DecimalText, nullable=False),
    Column("liquidity", String(16), nullable=False),
    Column("time", UtcText, nullable=False, index=True),
    UniqueConstraint("venue", "trade_id", name="uq_fills_venue_trade_id"),
)

balances = Table(
    "balances",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("time", UtcText, nullable=False),
    Column("currency", String(32), nullable=False),
    Column("available", DecimalText, nullable=False),
    Column("hold", DecimalText, nullable=False),
    Index("ix_balances_currency_time", "currency", "time"),
)

positions = Table(
    "positions",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("time", UtcText, nullable=False),
    Column("product_id", String(64), nullable=False),
    Column("size", DecimalText, nullable=False),
    Column("average_entry_price", DecimalText, nullable=True),
    Column("realised_pnl", DecimalText, nullable=False),
    Column("fees", DecimalText, nullable=False),
    Index("ix_positions_product_time", "product_id", "time"),
)

journal = Table(
    "journal",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("time", UtcText, nullable=False),
    Column("kind", String(64), nullable=False, index=True),
    Column("payload", JsonText, nullable=False),
)

trading_state = Table(
    "trading_state",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("state", String(16), nullable=False),
    Column("reason", Text, nullable=False),
    Column("since", UtcText, nullable=False),
    Column("emergency", JsonText, nullable=True),
    CheckConstraint("id = 1", name="ck_trading_state_single_row"),
    CheckConstraint("state IN ('ACTIVE', 'REDUCE_ONLY', 'HALTED')", name="ck_trading_state_state"),
)
