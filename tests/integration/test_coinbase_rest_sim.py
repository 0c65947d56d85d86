"""The real REST client against the real simulator over 127.0.0.1 (no mocks of our classes).

The simulator's admin API (``/sim/admin/...``) is the venue's truth and drives its faults.
Time for the client's pacing and backoff is virtual (``VirtualTime``) unless a test waits
on the venue's own rate-limit window; nothing asserts on wall-clock durations.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from orjson import loads as orjson_loads

from cryptoj.errors import (
    AmbiguousOutcome,
    AuthenticationFailed,
    OrderNotFound,
    OrderRejected,
    RateLimited,
    VenueError,
    VenueUnavailable,
)
from cryptoj.model.money import Side
from cryptoj.model.orders import OrderKind, OrderSpec, OrderStatus, StopDirection, TimeInForce
from cryptoj.venues.coinbase.auth import CdpKey, load_cdp_key
from cryptoj.venues.coinbase.rest import CoinbaseRestClient
from cryptoj.venues.simulated.server import SimulatorServer
from tests.sim_fixtures import make_key_file

pytestmark = pytest.mark.integration

D = Decimal


class VirtualTime:
    """A monotonic clock that only moves when the client sleeps; records every sleep."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        self.now += delay
        await asyncio.sleep(0)


class Admin:
    """The simulator's admin API over HTTP: its own truth, and its fault switches."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str) -> None:
        self.session = session
        self.base = f"{base_url}/sim/admin"

    async def get(self, path: str) -> Any:
        async with self.session.get(f"{self.base}/{path}") as r:
            assert r.status == 200, await r.text()
            return await r.json()

    async def post(self, path: str, body: Any) -> Any:
        async with self.session.post(f"{self.base}/{path}", json=body) as r:
            assert r.status == 200, await r.text()
            return await r.json()

    async def faults(self, **switches: Any) -> None:
        await self.post("faults", switches)

    async def orders(self) -> list[dict[str, Any]]:
        return list((await self.get("orders"))["orders"])

    async def orders_with_cid(self, cid: str) -> list[dict[str, Any]]:
        return [o for o in await self.orders() if o["client_order_id"] == cid]


@pytest.fixture
async def admin(sim: SimulatorServer) -> AsyncIterator[Admin]:
    async with aiohttp.ClientSession() as session:
        yield Admin(session, sim.base_url)


@pytest.fixture
def key(sim: SimulatorServer) -> CdpKey:
    assert sim.key_file is not None
    return load_cdp_key(sim.key_file)


@pytest.fixture
def vtime() -> VirtualTime:
    return VirtualTime()


@pytest.fixture
async def make_client(
    sim: SimulatorServer, key: CdpKey, vtime: VirtualTime
) -> AsyncIterator[Callable[..., Awaitable[CoinbaseRestClient]]]:
    clients: list[CoinbaseRestClient] = []

    async def factory(**kwargs: Any) -> CoinbaseRestClient:
        kwargs.setdefault("key", key)
        kwargs.setdefault("clock", vtime)
        kwargs.setdefault("sleep", vtime.sleep)
        kwargs.setdefault("rng", random.Random(7))
        kwargs.setdefault("timeout", 10.0)
        client = CoinbaseRestClient(sim.base_url, **kwargs)
        await client.open()
        clients.append(client)
        return client

    yield factory
    for client in clients:
        await client.close()


@pytest.fixture
async def client(make_client: Callable[..., Awaitable[CoinbaseRestClient]]) -> CoinbaseRestClient:
    return await make_client()


# --- market data -----------------------------------------------------------------------


async def test_products_book_and_time(client: CoinbaseRestClient, admin: Admin) -> None:
    products = await client.products()
    assert [p.product_id for p in products] == ["BTC-USD", "ETH-USD"]
    btc = await client.product("BTC-USD")
    assert btc == products[0] and btc.price_increment == D("0.01")
    truth = await admin.get("book?product_id=BTC-USD")
    book = await client.product_book("BTC-USD", limit=5)
    assert [[str(p), str(s)] for p, s in book.bids] == truth["bids"][:5]
    assert [[str(p), str(s)] for p, s in book.asks] == truth["asks"][:5]
    (top_btc, top_eth) = await client.best_bid_ask(["BTC-USD", "ETH-USD"])
    assert top_btc.best_bid == book.best_bid and top_btc.best_ask == book.best_ask
    assert top_eth.product_id == "ETH-USD"
    trades = await client.market_trades("BTC-USD", limit=10)
    assert trades.best_bid == book.best_bid[0]  # type: ignore[index]
    assert (await client.server_time()).tzinfo is not None


async def test_candles_paged_300_per_request(client: CoinbaseRestClient, sim: SimulatorServer) -> None:
    # bars are synthetic history up to the simulator's start minute and live (trades only) after it: take the
    # range from its start time, not from "now" — a minute (or hour) rolling over since it started would leave
    # the live bar of that minute empty, i.e. missing
    end = datetime.fromtimestamp(int(sim.started_at) // 60 * 60, UTC)
    start = end - timedelta(minutes=700)
    before = client.requests
    candles = await client.candles("BTC-USD", start, end, "ONE_MINUTE")
    assert client.requests - before == 3  # 300 + 300 + 100
    assert len(candles) == 700
    assert [c.start for c in candles] == [start + timedelta(minutes=i) for i in range(700)]
    assert all(c.low <= min(c.open, c.close) and c.high >= max(c.open, c.close) for c in candles)
    hour = datetime.fromtimestamp(int(sim.started_at) // 3600 * 3600, UTC)
    hourly = await client.candles("BTC-USD", hour - timedelta(hours=5), hour, "ONE_HOUR")
    assert [c.start for c in hourly] == [hour - timedelta(hours=5 - i) for i in range(5)]


async def test_public_client_uses_market_endpoints(make_client: Callable[..., Awaitable[CoinbaseRestClient]]) -> None:
    public = await make_client(key=None)
    assert [p.product_id for p in await public.products()] == ["BTC-USD", "ETH-USD"]
    book = await public.product_book("ETH-USD", limit=2)
    assert len(book.bids) == 2
    (top,) = await public.best_bid_ask(["ETH-USD"])
    assert top.best_bid == book.best_bid
    with pytest.raises(AuthenticationFailed, match="needs an API key"):
        await public.accounts()


# --- orders of every configuration ----------------------------------------------------------


def _specs(bid: Decimal, ask: Decimal) -> list[OrderSpec]:
    end = datetime.now(UTC) + timedelta(hours=1)
    low, high = (bid * D("0.9")).quantize(D("0.01")), (ask * D("1.1")).quantize(D("0.01"))
    size = D("0.001")
    return [
        OrderSpec("m-ioc-q", "BTC-USD", Side.BUY, OrderKind.MARKET, quote_size=D("25"), time_in_force=TimeInForce.IOC),
        OrderSpec("m-ioc-b", "BTC-USD", Side.SELL, OrderKind.MARKET, base_size=size, time_in_force=TimeInForce.IOC),
        OrderSpec("m-fok-b", "BTC-USD", Side.BUY, OrderKind.MARKET, base_size=size, time_in_force=TimeInForce.FOK),
        OrderSpec("l-gtc", "BTC-USD", Side.BUY, OrderKind.LIMIT, base_size=size, limit_price=low),
        OrderSpec("l-gtc-po", "BTC-USD", Side.SELL, OrderKind.LIMIT, base_size=size, limit_price=high, post_only=True),
        OrderSpec(
            "l-gtd",
            "BTC-USD",
            Side.BUY,
            OrderKind.LIMIT,
            base_size=size,
            limit_price=low,
            time_in_force=TimeInForce.GTD,
            end_time=end,
            post_only=True,
        ),
        OrderSpec("l-ioc", "BTC-USD", Side.BUY, OrderKind.LIMIT, base_size=size, limit_price=low, time_in_force=TimeInForce.IOC),
        OrderSpec("l-fok", "BTC-USD", Side.BUY, OrderKind.LIMIT, base_size=size, limit_price=high, time_in_force=TimeInForce.FOK),
        OrderSpec(
            "sl-gtc",
            "BTC-USD",
            Side.BUY,
            OrderKind.STOP_LIMIT,
            base_size=size,
            limit_price=high + 10,
            stop_price=high,
            stop_direction=StopDirection.STOP_UP,
        ),
        OrderSpec(
            "sl-gtd",
            "BTC-USD",
            Side.SELL,
            OrderKind.STOP_LIMIT,
            base_size=size,
            limit_price=low - 10,
            stop_price=low,
            stop_direction=StopDirection.STOP_DOWN,
            time_in_force=TimeInForce.GTD,
            end_time=end,
        ),
        OrderSpec("tb-gtc", "BTC-USD", Side.SELL, OrderKind.BRACKET, base_size=size, limit_price=high, stop_trigger_price=low),
        OrderSpec(
            "tb-gtd",
            "BTC-USD",
            Side.SELL,
            OrderKind.BRACKET,
            base_size=size,
            limit_price=high,
            stop_trigger_price=low,
            time_in_force=TimeInForce.GTD,
            end_time=end,
        ),
    ]


EXPECTED_AFTER_CREATE = {
    "m-ioc-q": {OrderStatus.FILLED},
    "m-ioc-b": {OrderStatus.FILLED},
    "m-fok-b": {OrderStatus.FILLED},
    "l-gtc": {OrderStatus.OPEN},
    "l-gtc-po": {OrderStatus.OPEN},
    "l-gtd": {OrderStatus.OPEN},
    "l-ioc": {OrderStatus.CANCELLED, OrderStatus.EXPIRED},
    "l-fok": {OrderStatus.FILLED},
    "sl-gtc": {OrderStatus.OPEN, OrderStatus.SUBMITTED},
    "sl-gtd": {OrderStatus.OPEN, OrderStatus.SUBMITTED},
    "tb-gtc": {OrderStatus.OPEN},
    "tb-gtd": {OrderStatus.OPEN},
}


async def test_create_fetch_list_cancel_every_configuration(client: CoinbaseRestClient, admin: Admin) -> None:
    book = await client.product_book("BTC-USD", limit=1)
    assert book.best_bid and book.best_ask
    specs = _specs(book.best_bid[0], book.best_ask[0])
    created = {}
    for spec in specs:
        result = await client.create_order(spec)
        assert result.client_order_id == spec.client_order_id and result.product_id == "BTC-USD"
        created[spec.client_order_id] = result.order_id
    truth = {o["client_order_id"]: o for o in await admin.orders()}
    assert set(truth) == set(created)
    for spec in specs:
        order = await client.get_order(created[spec.client_order_id])
        assert order.to_spec() == spec, spec.client_order_id  # the venue holds exactly what we sent
        assert order.status in EXPECTED_AFTER_CREATE[spec.client_order_id], (spec.client_order_id, order.venue_status)
        assert order.venue_status == truth[spec.client_order_id]["status"]
    listed = await client.list_orders(product_ids=["BTC-USD"], page_size=5)  # 12 orders → 3 pages
    assert {o.client_order_id for o in listed} == set(created)
    open_ids = [o.order_id for o in await client.list_orders(order_status=["OPEN", "PENDING"], page_size=2)]
    assert sorted(open_ids) == sorted(o.order_id for o in listed if o.status in (OrderStatus.OPEN, OrderStatus.SUBMITTED))
    results = await client.cancel_orders(open_ids)
    assert [r.order_id for r in results] == open_ids and all(r.success for r in results)
    for oid in open_ids:
        assert (await client.get_order(oid)).status is OrderStatus.CANCELLED
    again = await client.cancel_orders(open_ids[:1])
    assert not again[0].success and again[0].failure_reason
    assert {o["status"] for o in await admin.orders() if o["order_id"] in open_ids} == {"CANCELLED"}


async def test_fills_and_balances_agree_with_the_venue(client: CoinbaseRestClient, admin: Admin) -> None:
    start = {b.currency: b for b in await client.accounts(page_size=2)}  # several pages
    assert {"USD", "BTC", "ETH"} <= set(start)
    bought = await client.create_order(
        OrderSpec("buy-1", "BTC-USD", Side.BUY, OrderKind.MARKET, quote_size=D("500"), time_in_force=TimeInForce.IOC)
    )
    order = await client.get_order(bought.order_id)
    fills = await client.list_fills(order_ids=[bought.order_id], client_order_ids={bought.order_id: "buy-1"}, page_size=1)
    assert fills and {f.client_order_id for f in fills} == {"buy-1"}
    assert sum(f.size for f in fills) == order.filled_size
    assert sum(f.fee for f in fills) == order.total_fees
    assert sum(f.price * f.size for f in fills) == order.filled_value
    truth_fills = (await admin.get("fills"))["fills"]
    assert sorted(f.trade_id for f in fills) == sorted(f["trade_id"] for f in truth_fills)
    book = await client.product_book("BTC-USD", limit=1)
    assert book.best_bid is not None
    price = (book.best_bid[0] * D("0.8")).quantize(D("0.01"))
    resting = await client.create_order(
        OrderSpec("rest-1", "BTC-USD", Side.BUY, OrderKind.LIMIT, base_size=D("0.01"), limit_price=price)
    )
    after = {b.currency: b for b in await client.accounts()}
    assert after["BTC"].available == start["BTC"].available + order.filled_size
    assert after["USD"].total == start["USD"].total - order.filled_value - order.total_fees
    assert after["USD"].hold >= price * D("0.01")  # the resting buy holds its notional (and fee headroom)
    truth = (await admin.get("balances"))["user"]
    for currency in ("USD", "BTC"):
        assert str(after[currency].available) == truth[currency]["available"]
        assert str(after[currency].hold) == truth[currency]["hold"]
    await client.cancel_orders([resting.order_id])
    assert {b.currency: b for b in await client.accounts()}["USD"].hold == start["USD"].hold
    tier = await client.transaction_summary()
    assert (tier.taker_fee_rate, tier.maker_fee_rate) == (D("0.006"), D("0.004"))
    assert order.total_fees == (order.filled_value * tier.taker_fee_rate) or order.total_fees > 0


async def test_rejections_carry_coinbase_reason_codes(client: CoinbaseRestClient, admin: Admin) -> None:
    book = await client.product_book("BTC-USD", limit=1)
    assert book.best_ask is not None
    crossing = OrderSpec(
        "po-x", "BTC-USD", Side.BUY, OrderKind.LIMIT, base_size=D("0.001"), limit_price=book.best_ask[0], post_only=True
    )
    with pytest.raises(OrderRejected) as info:
        await client.create_order(crossing)
    assert info.value.reason == "INVALID_LIMIT_PRICE_POST_ONLY" and info.value.client_order_id == "po-x"
    too_big = OrderSpec("big", "BTC-USD", Side.BUY, OrderKind.LIMIT, base_size=D("100"), limit_price=D("1000"))
    with pytest.raises(OrderRejected, match="INSUFFICIENT_FUND"):
        await client.create_order(too_big)
    precision = OrderSpec("prec", "BTC-USD", Side.BUY, OrderKind.LIMIT, base_size=D("0.001"), limit_price=D("1000.001"))
    with pytest.raises(OrderRejected, match="INVALID_PRICE_PRECISION"):
        await client.create_order(precision)
    assert [o for o in await admin.orders() if o["status"] == "OPEN"] == []
    with pytest.raises(OrderNotFound):
        await client.get_order("no-such-order")
    with pytest.raises(VenueError) as missing:
        await client.product("DOGE-USD")
    assert missing.value.status == 404


# --- authentication ---------------------------------------------------------------------------


async def test_unknown_key_and_expired_jwt_are_refused(
    make_client: Callable[..., Awaitable[CoinbaseRestClient]], tmp_path: Path
) -> None:
    stranger_path = tmp_path / "stranger.json"
    make_key_file(stranger_path)
    stranger = await make_client(key=load_cdp_key(stranger_path))
    with pytest.raises(AuthenticationFailed, match="401"):
        await stranger.accounts()
    assert stranger.requests == 1 and stranger.retries == 0  # never retried
    late = await make_client(wall_clock=lambda: time.time() - 600)  # our clock is 10 min slow: JWT already expired
    with pytest.raises(AuthenticationFailed, match="expired"):
        await late.accounts()
    early = await make_client(wall_clock=lambda: time.time() + 600)  # nbf in the future
    with pytest.raises(AuthenticationFailed, match="not yet valid"):
        await early.transaction_summary()


async def test_ed25519_key_is_accepted(make_sim: Callable[..., Awaitable[SimulatorServer]], tmp_path: Path) -> None:
    path = tmp_path / "ed.json"
    make_key_file(path, algorithm="EdDSA")
    sim = await make_sim(api_key_files=[path])
    key = load_cdp_key(path)
    assert key.algorithm == "EdDSA"
    async with CoinbaseRestClient(sim.base_url, key) as client:
        assert {b.currency for b in await client.accounts()} >= {"USD", "BTC"}


# --- faults: 429 storms, 5xx, timeouts, accept-then-drop ------------------------------------------


async def test_429_storm_backs_off_and_places_exactly_one_order(
    make_client: Callable[..., Awaitable[CoinbaseRestClient]], admin: Admin, vtime: VirtualTime
) -> None:
    client = await make_client(max_retries=6)
    await admin.faults(http_429_next=4)
    spec = OrderSpec("storm-1", "BTC-USD", Side.BUY, OrderKind.MARKET, quote_size=D("20"), time_in_force=TimeInForce.IOC)
    result = await client.create_order(spec)
    assert client.rate_limited == 4 and client.retries == 4
    assert len(vtime.sleeps) >= 4 and all(s >= 0 for s in vtime.sleeps)
    (only,) = await admin.orders_with_cid("storm-1")
    assert only["order_id"] == result.order_id


async def test_429_storm_longer_than_retries_raises_rate_limited(
    make_client: Callable[..., Awaitable[CoinbaseRestClient]], admin: Admin
) -> None:
    client = await make_client(max_retries=2)
    await admin.faults(http_429_next=10)
    spec = OrderSpec("storm-2", "BTC-USD", Side.BUY, OrderKind.MARKET, quote_size=D("20"), time_in_force=TimeInForce.IOC)
    with pytest.raises(RateLimited):
        await client.create_order(spec)
    assert client.rate_limited == 3
    assert await admin.orders_with_cid("storm-2") == []  # a 429 is never ambiguous: nothing was placed
    with pytest.raises(RateLimited):
        await client.products()


async def test_5xx_on_reads_is_retried(make_client: Callable[..., Awaitable[CoinbaseRestClient]], admin: Admin) -> None:
    client = await make_client(max_retries=3)
    await admin.faults(http_5xx_next=2)
    assert len(await client.accounts()) >= 3
    assert client.retries == 2
    await admin.faults(http_5xx_next=10)
    with pytest.raises(VenueUnavailable, match="503"):
        await client.transaction_summary()


async def test_accept_then_drop_is_ambiguous_and_same_id_retry_leaves_one_order(
    make_client: Callable[..., Awaitable[CoinbaseRestClient]], admin: Admin
) -> None:
    client = await make_client(max_retries=2)
    await admin.faults(drop_order_create_next=3)  # every attempt is executed, then its response is dropped
    spec = OrderSpec("drop-1", "BTC-USD", Side.BUY, OrderKind.LIMIT, base_size=D("0.001"), limit_price=D("1000.00"))
    with pytest.raises(AmbiguousOutcome) as info:
        await client.create_order(spec)
    assert info.value.client_order_id == "drop-1"
    (placed,) = await admin.orders_with_cid("drop-1")  # it did reach the venue, exactly once
    again = await client.create_order(spec)  # the caller resolves it: same client_order_id
    assert again.order_id == placed["order_id"]
    assert len(await admin.orders_with_cid("drop-1")) == 1
    listed = await client.list_orders(order_status=["OPEN"])
    assert [o.client_order_id for o in listed].count("drop-1") == 1


async def test_single_drop_is_recovered_by_same_id_retry(
    make_client: Callable[..., Awaitable[CoinbaseRestClient]], admin: Admin
) -> None:
    client = await make_client(max_retries=2)
    await admin.faults(drop_order_create_next=1)
    spec = OrderSpec("drop-2", "BTC-USD", Side.SELL, OrderKind.LIMIT, base_size=D("0.001"), limit_price=D("900000.00"))
    result = await client.create_order(spec)
    (placed,) = await admin.orders_with_cid("drop-2")
    assert result.order_id == placed["order_id"] and client.retries == 1


async def test_timeouts_read_unavailable_create_ambiguous(
    make_client: Callable[..., Awaitable[CoinbaseRestClient]], admin: Admin
) -> None:
    client = await make_client(max_retries=1, timeout=0.2)
    await admin.faults(http_delay_seconds=1.0)
    with pytest.raises(VenueUnavailable, match="no response within"):
        await client.accounts()
    assert client.timeouts == 2
    spec = OrderSpec("slow-1", "BTC-USD", Side.BUY, OrderKind.LIMIT, base_size=D("0.001"), limit_price=D("1000.00"))
    with pytest.raises(AmbiguousOutcome):
        await client.create_order(spec)
    await admin.faults(http_delay_seconds=0.0)
    settled = await make_client()
    result = await settled.create_order(spec)  # the same id resolves it, however the slow attempts ended
    await asyncio.wait_for(_until(lambda: _one_order(admin, "slow-1")), timeout=10)
    (only,) = await admin.orders_with_cid("slow-1")
    assert only["order_id"] == result.order_id


async def _one_order(admin: Admin, cid: str) -> bool:
    return len(await admin.orders_with_cid(cid)) == 1


async def _until(check: Callable[[], Awaitable[bool]]) -> None:
    while not await check():
        await asyncio.sleep(0.05)


async def test_connection_refused_is_unavailable_not_ambiguous(key: CdpKey, vtime: VirtualTime) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with CoinbaseRestClient(f"http://127.0.0.1:{port}", key, max_retries=1, clock=vtime, sleep=vtime.sleep) as client:
        spec = OrderSpec("nowhere", "BTC-USD", Side.BUY, OrderKind.LIMIT, base_size=D("0.001"), limit_price=D("1000.00"))
        with pytest.raises(VenueUnavailable, match="cannot connect"):
            await client.create_order(spec)  # never sent, so never ambiguous
        assert client.retries == 1


async def test_venue_rate_limit_headers_pace_the_client(
    make_sim: Callable[..., Awaitable[SimulatorServer]], tmp_path: Path
) -> None:
    """The venue allows 3 private requests a second; the client (configured for 100/s) follows its headers."""
    sim = await make_sim(private_rate_limit=3)
    assert sim.key_file is not None
    pauses: list[float] = []

    async def sleep(delay: float) -> None:  # real waiting: the venue's window is real time
        pauses.append(delay)
        await asyncio.sleep(delay)

    async with CoinbaseRestClient(
        sim.base_url, load_cdp_key(sim.key_file), private_rate=100, sleep=sleep, max_retries=5
    ) as client:
        for _ in range(7):
            await client.transaction_summary()
        assert client.requests - client.retries == 7
        assert any(p > 0 for p in pauses)  # it waited for the venue's window at least once
        assert client.rate_limited <= 1  # at most one 429 (a window edge), never a storm


async def test_presigned_jwts_are_used_once_each_and_accepted(
    make_client: Callable[..., Awaitable[CoinbaseRestClient]], admin: Admin
) -> None:
    client = await make_client(jwt_pool_size=2, order_lane=False)  # every request through aiohttp, traced here
    tokens: list[str] = []

    async def on_start(session: aiohttp.ClientSession, ctx: Any, params: aiohttp.TraceRequestStartParams) -> None:
        tokens.append(params.headers.get("Authorization", ""))

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(on_start)
    old = client._session
    client._session = aiohttp.ClientSession(trace_configs=[trace])
    if old is not None:
        await old.close()
    pool = client.jwt_pool
    assert pool is not None
    async with asyncio.timeout(30):  # topped up one signature per loop step after open()
        while pool.wanted():
            await asyncio.sleep(0.01)
    book = await client.product_book("BTC-USD", limit=1)
    assert book.best_bid
    price = book.best_bid[0] - D(100)
    ids = []
    for n in range(5):
        spec = OrderSpec(f"pool-{n}", "BTC-USD", Side.BUY, OrderKind.LIMIT, base_size=D("0.001"), limit_price=price)
        ids.append((await client.create_order(spec)).order_id)
    results = await client.cancel_orders(ids)
    assert all(r.success for r in results)
    private = [t for t in tokens if t]
    assert len(private) == len(set(private)) == 7  # the book (signed in line), 5 creates, 1 cancel: none reused
    assert pool.hits >= 2  # at least the two pre-signed create tokens, the rest signed in line or topped up meanwhile
    assert pool.hits + pool.misses == 6
    assert {o["client_order_id"] for o in await admin.orders()} >= {f"pool-{n}" for n in range(5)}


async def test_orders_go_through_the_order_lane_on_one_kept_alive_connection(
    make_client: Callable[..., Awaitable[CoinbaseRestClient]], admin: Admin
) -> None:
    client = await make_client(order_lane=True)  # opt-in (exchange.order_lane)
    lane = client._lane
    assert lane is not None
    written: list[bytes] = []
    client.on_order_written = written.append
    book = await client.product_book("BTC-USD", limit=1)
    assert book.best_bid
    price = book.best_bid[0] - D(100)
    specs = [
        OrderSpec(f"lane-{n}", "BTC-USD", Side.BUY, OrderKind.LIMIT, base_size=D("0.001"), limit_price=price) for n in range(4)
    ]
    ids = [(await client.create_order(spec)).order_id for spec in specs[:2]]
    assert lane.requests == 2 and lane.connects == 1  # warmed at open(), then reused
    for conn in list(lane._idle):  # the server (or a proxy) closed the idle connection
        assert conn.transport is not None
        conn.transport.close()
    async with asyncio.timeout(10):
        while lane._idle:
            await asyncio.sleep(0.01)
    ids += [(await client.create_order(spec)).order_id for spec in specs[2:]]
    assert lane.requests == 4 and lane.connects == 2
    assert [orjson_loads(body)["client_order_id"] for body in written] == [s.client_order_id for s in specs]
    assert {o["client_order_id"]: o["order_id"] for o in await admin.orders()} == {
        s.client_order_id: oid for s, oid in zip(specs, ids, strict=True)
    }
    with pytest.raises(OrderRejected):  # a venue refusal through the lane is the same error as through aiohttp
        await client.create_order(OrderSpec("lane-bad", "BTC-USD", Side.BUY, OrderKind.LIMIT, base_size=D("1000000"),
                                            limit_price=price))


async def test_order_lane_connect_failure_is_not_ambiguous(make_client: Callable[..., Awaitable[CoinbaseRestClient]]) -> None:
    client = await make_client(max_retries=1, order_lane=True)
    lane = client._lane
    assert lane is not None
    lane.close()
    lane.port = 1  # nothing listens there: the order was never sent
    spec = OrderSpec("lane-down", "BTC-USD", Side.BUY, OrderKind.LIMIT, base_size=D("0.001"), limit_price=D("100"))
    with pytest.raises(VenueUnavailable, match="cannot connect"):
        await client.create_order(spec)
