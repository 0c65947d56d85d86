"""Runs an OrderManager in its own process, for the crash-recovery tests (``tests/integration/test_crash_recovery.py``).

Usage: ``python tests/om_crash_runner.py BASE_URL WS_USER_URL KEY_FILE DB ORDERS_JSON``

``DB`` is a SQLite file path or a database URL; ``CRYPTOJ_TEST_DB_SCHEMA`` puts the tables in
that PostgreSQL schema and ``CRYPTOJ_TEST_INTENTS`` is the storage's order-intent journal
(``auto`` — the default: next to a SQLite file, none for PostgreSQL —, ``none``, or a file path).

``ORDERS_JSON`` is a list of ``{"coid", "side", "kind": "LIMIT"|"MARKET", "size", "price"?}``; they
are submitted one after the other. ``CRYPTOJ_TEST_CRASH_AT=<point>:<n>`` makes the process
SIGKILL itself the n-th time the order manager reaches ``<point>`` (``after_write_ahead`` —
the intent is durable (intent journal or database), not sent; ``after_send`` — the venue accepted it, the ack is not yet stored;
``after_unknown`` — the create's answer was lost and IN_FLIGHT_UNKNOWN is stored). Without a
crash the runner prints ``DONE`` and exits 0.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable
from decimal import Decimal

import orjson

from cryptoj.config import ExecutionConfig
from cryptoj.model.money import Side
from cryptoj.model.orders import OrderKind, OrderSpec, TimeInForce
from cryptoj.order_execution import OrderManager
from cryptoj.storage import Storage
from cryptoj.venues.coinbase.auth import load_cdp_key
from cryptoj.venues.coinbase.rest import CoinbaseRestClient
from cryptoj.venues.coinbase.venue import CoinbaseVenue

CRASH_ENV = "CRYPTOJ_TEST_CRASH_AT"


def crash_hook(spec: str | None) -> tuple[dict[str, int], Callable[[str], None]]:
    hits: dict[str, int] = {}
    point, _, nth = (spec or "").partition(":")
    target = int(nth or "1")

    def hook(name: str) -> None:
        hits[name] = hits.get(name, 0) + 1
        if name == point and hits[name] == target:
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGKILL)

    return hits, hook


def spec_of(item: dict[str, str]) -> OrderSpec:
    side = Side(item["side"])
    if item["kind"] == "MARKET":
        return OrderSpec(item["coid"], item.get("product_id", "BTC-USD"), side, OrderKind.MARKET,
                         base_size=Decimal(item["size"]), time_in_force=TimeInForce.IOC)
    return OrderSpec(item["coid"], item.get("product_id", "BTC-USD"), side, OrderKind.LIMIT,
                     base_size=Decimal(item["size"]), limit_price=Decimal(item["price"]))


def intents_option(value: str | None) -> str | None:
    if value in (None, "", "auto"):
        return "auto"
    return None if value == "none" else value


async def main(base_url: str, ws_user_url: str, key_file: str, db: str, orders_json: str) -> None:
    _hits, hook = crash_hook(os.environ.get(CRASH_ENV))
    url = db if "://" in db else f"sqlite+aiosqlite:///{db}"
    schema = os.environ.get("CRYPTOJ_TEST_DB_SCHEMA") or None
    storage = await Storage.open(url, schema=schema, intents=intents_option(os.environ.get("CRYPTOJ_TEST_INTENTS")))
    rest = CoinbaseRestClient(base_url, load_cdp_key(key_file), timeout=5.0, backoff_base=0.01, backoff_cap=0.05)
    venue = CoinbaseVenue(rest, ws_user_url, heartbeat_interval=1.0, backoff_base=0.02, backoff_cap=0.1)
    om = OrderManager(venue, storage, config=ExecutionConfig(resolve_backoff_seconds=0.01), checkpoint=hook)
    try:
        await om.start(background=False)
        for item in orjson.loads(orders_json):
            order = await om.submit(spec_of(item))
            print(f"SUBMITTED {order.client_order_id} {order.status.value}", flush=True)
    finally:
        await om.close()
        await storage.close()
    print("DONE", flush=True)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))
