"""A client nobody on this project wrote, unchanged, against the simulator over 127.0.0.1.

**Which client:** ccxt's ``coinbase`` class (``ccxt.async_support.coinbase`` for REST and
``ccxt.pro.coinbase`` for the WebSocket), a test-only dependency (the ``test`` extra).

**Why ccxt and not the official ``coinbase-advanced-py`` SDK:** the SDK pins ``websockets < 14``
(it would need its own throwaway virtualenv) and only speaks ``https``/``wss`` (it would need the
TLS option and a test CA). ccxt is pure Python, installs into our venv, signs its requests with
its *own* JWT code from a CDP key (``apiKey`` = key name, ``secret`` = the PEM), parses the
responses with its *own* code, and lets us point its URLs at the simulator. Nothing in ccxt is
patched: the only configuration is its public options — the REST and WebSocket base URLs, and
``options['fetchBalance']`` set to ccxt's own Advanced Trade (v3) accounts call, and
``has['fetchCurrencies'] = False`` because ``load_markets`` would otherwise call Coinbase's
*v2* "Sign In With Coinbase" currency endpoints, which are not part of Advanced Trade and which the
simulator does not serve (the same reason for the v3 balance option; markets themselves come
from ``/api/v3/brokerage/market/products``).

This test found one unfaithful field: the simulator called account types ``FIAT``/``CRYPTO``
where Coinbase sends ``ACCOUNT_TYPE_FIAT``/``ACCOUNT_TYPE_CRYPTO``, so ccxt saw no balances.

ccxt represents prices and sizes as floats; the tests convert them with ``Decimal(str(x))`` and
compare with the simulator's own truth (its admin view), which is exact.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from decimal import Decimal
from typing import Any

import pytest

from cryptoj.venues.simulated.server import SimulatorServer

ccxt_async = pytest.importorskip("ccxt.async_support", reason="ccxt is not installed (pip install -e '.[test]')")
ccxt_pro = pytest.importorskip("ccxt.pro", reason="ccxt is not installed (pip install -e '.[test]')")

pytestmark = pytest.mark.integration

DEADLINE = 30.0
TOP = 50

Levels = list[tuple[Decimal, Decimal]]


def _credentials(sim: SimulatorServer) -> dict[str, str]:
    assert sim.key_file is not None
    raw = json.loads(sim.key_file.read_text())
    return {"apiKey": raw["name"], "secret": raw["privateKey"]}


def _ccxt_config(sim: SimulatorServer) -> dict[str, Any]:
    return {
        **_credentials(sim),
        "urls": {"api": {"rest": sim.base_url, "ws": sim.ws_url}},
        "has": {"fetchCurrencies": False},
        "options": {"fetchBalance": "v3PrivateGetBrokerageAccounts"},  # ccxt's v3 (Advanced Trade) balance call
        "enableRateLimit": False,
        "timeout": 10_000,
    }


def _levels(rows: Sequence[Sequence[float]], top: int = TOP) -> Levels:
    return [(Decimal(str(price)), Decimal(str(size))) for price, size, *_ in rows[:top]]


def _admin_levels(sim: SimulatorServer, product_id: str, top: int = TOP) -> tuple[Levels, Levels]:
    book = sim.admin.book(product_id, top)
    return ([(Decimal(p), Decimal(s)) for p, s in book["bids"]], [(Decimal(p), Decimal(s)) for p, s in book["asks"]])


@pytest.fixture
async def rest(sim: SimulatorServer) -> AsyncIterator[Any]:
    exchange = ccxt_async.coinbase(_ccxt_config(sim))
    try:
        yield exchange
    finally:
        await exchange.close()


@pytest.fixture
async def pro(sim: SimulatorServer) -> AsyncIterator[Any]:
    exchange = ccxt_pro.coinbase(_ccxt_config(sim))
    try:
        yield exchange
    finally:
        await exchange.close()


async def test_ccxt_lists_products_with_the_simulators_rules(rest: Any, sim: SimulatorServer) -> None:
    markets = await rest.load_markets()
    assert {"BTC/USD", "ETH/USD"} <= set(markets)
    btc = markets["BTC/USD"]
    product = sim.products["BTC-USD"]
    assert btc["id"] == "BTC-USD" and btc["spot"] is True and btc["active"] is True
    assert Decimal(str(btc["precision"]["price"])) == product.price_increment
    assert Decimal(str(btc["precision"]["amount"])) == product.base_increment
    assert Decimal(str(btc["limits"]["amount"]["max"])) == product.base_max_size
    # the taker/maker fees ccxt read from /transaction_summary are the simulator's fee tier
    assert Decimal(str(btc["taker"])) == sim.config.taker_fee_rate
    assert Decimal(str(btc["maker"])) == sim.config.maker_fee_rate


async def test_ccxt_reads_the_book_and_balances(rest: Any, sim: SimulatorServer) -> None:
    book = await rest.fetch_order_book("BTC/USD", TOP)
    bids, asks = _admin_levels(sim, "BTC-USD")
    assert len(bids) == TOP and len(asks) == TOP
    assert _levels(book["bids"]) == bids
    assert _levels(book["asks"]) == asks
    balance = await rest.fetch_balance()
    for currency, amount in sim.config.balances.items():
        assert Decimal(str(balance[currency]["free"])) == amount, currency
        assert Decimal(str(balance[currency]["used"])) == 0, currency


async def test_ccxt_places_and_cancels_a_limit_order(rest: Any, sim: SimulatorServer) -> None:
    await rest.load_markets()
    best_bid = _admin_levels(sim, "BTC-USD", 1)[0][0][0]
    price = best_bid - Decimal(500)  # rests well below the market
    created = await rest.create_order("BTC/USD", "limit", "buy", 0.01, float(price))
    order_id = created["id"]
    venue = {o.order_id: o for o in sim.admin.orders()}
    assert order_id in venue, "ccxt's order is not on the simulator"
    placed = venue[order_id]
    assert placed.status.value == "OPEN"
    assert placed.spec.base_size == Decimal("0.01") and placed.spec.limit_price == price
    bids, _ = _admin_levels(sim, "BTC-USD", 10_000)
    assert (price, Decimal("0.01")) in bids
    fetched = await rest.fetch_order(order_id, "BTC/USD")
    assert fetched["status"] == "open" and Decimal(str(fetched["price"])) == price

    cancelled = await rest.cancel_order(order_id, "BTC/USD")
    assert cancelled["id"] == order_id
    assert {o.order_id: o for o in sim.admin.orders()}[order_id].status.value == "CANCELLED"
    assert (price, Decimal("0.01")) not in _admin_levels(sim, "BTC-USD", 10_000)[0]
    assert (await rest.fetch_order(order_id, "BTC/USD"))["status"] == "canceled"


async def test_ccxt_pro_receives_level2_snapshot_and_updates(pro: Any, sim: SimulatorServer) -> None:
    """watch_order_book over the simulator's /ws: the snapshot, then updates, equal the venue's book."""
    book = await asyncio.wait_for(pro.watch_order_book("BTC/USD"), DEADLINE)
    bids, asks = _admin_levels(sim, "BTC-USD")
    assert _levels(book["bids"]) == bids and _levels(book["asks"]) == asks

    # a resting order placed on the venue and a moving market (trades, maker requotes) reach
    # ccxt's book only through l2 updates on the same connection
    price = asks[0][0] + Decimal("0.01")
    sim.admin.place("sim-admin", {"product_id": "BTC-USD", "side": "SELL",
                                  "order_configuration": {"limit_limit_gtc": {"base_size": "0.123", "limit_price": str(price)}}})
    sim.admin.step(20)
    want_bids, want_asks = _admin_levels(sim, "BTC-USD")
    assert (want_bids, want_asks) != (bids, asks), "the venue's book did not change"
    async with asyncio.timeout(DEADLINE):
        while True:
            book = await pro.watch_order_book("BTC/USD")
            if _levels(book["bids"]) == want_bids and _levels(book["asks"]) == want_asks:
                break
