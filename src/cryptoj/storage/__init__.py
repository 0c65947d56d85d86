"""Persistence: orders, fills, balance/position snapshots, the journal, the trading state.

SQLAlchemy 2 async; SQLite file by default (``sqlite+aiosqlite:///state/cryptoj.db``),
PostgreSQL by URL (``postgresql+asyncpg://...``). Decimals are stored exactly as TEXT.
See ``docs/storage.md``.
"""

from cryptoj.storage.schema import SCHEMA_VERSION, DecimalText, JsonText, UtcText
from cryptoj.storage.store import (
    TRADING_STATES,
    BalanceSnapshot,
    JournalEntry,
    PositionSnapshot,
    Storage,
    TradingStateRecord,
)

__all__ = [
    "SCHEMA_VERSION",
    "TRADING_STATES",
    "BalanceSnapshot",
    "DecimalText",
    "JournalEntry",
    "JsonText",
    "PositionSnapshot",
    "Storage",
    "TradingStateRecord",
    "UtcText",
]
