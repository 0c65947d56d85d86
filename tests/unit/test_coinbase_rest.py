"""REST client logic that needs no socket: pacing, headers, backoff, validation."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from cryptoj.errors import AuthenticationFailed, InvalidValue
from cryptoj.venues.coinbase.auth import CdpKey
from cryptoj.venues.coinbase.rest import (
    CoinbaseRestClient,
    TokenBucket,
    _header_int,
    _LaneConnection,
    _OrderLane,
    _query_value,
)

pytestmark = pytest.mark.unit


class FakeClock:
    """Virtual time: ``sleep`` advances it and records the delay."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        self.now += delay


def _key() -> CdpKey:
    pem = (
        ec.generate_private_key(ec.SECP256R1())
        .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption())
        .decode()
    )
    return CdpKey.from_text("organizations/o/apiKeys/k", pem)


def test_token_bucket_paces_after_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(10, clock=clock)
    waits = [bucket.reserve() for _ in range(15)]
    assert waits[:10] == [0.0] * 10
    assert waits[10:] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])
    clock.now += 10
    assert bucket.available == pytest.approx(10)  # refilled, capped at burst
    assert bucket.reserve() == 0.0


def test_token_bucket_pause_and_remaining() -> None:
    clock = FakeClock()
    bucket = TokenBucket(30, burst=5, clock=clock)
    bucket.pause_until(clock.now + 2.5)
    assert bucket.reserve() == pytest.approx(2.5)
    clock.now += 3
    bucket.limit_remaining(0)
    assert bucket.reserve() == pytest.approx(1 / 30)
    with pytest.raises(InvalidValue, match="rate"):
        TokenBucket(0)
    with pytest.raises(InvalidValue, match="burst"):
        TokenBucket(1, burst=0.5)


def test_backoff_is_full_jitter_and_seeded() -> None:
    a = CoinbaseRestClient(rng=random.Random(42), backoff_base=0.5, backoff_cap=4)
    b = CoinbaseRestClient(rng=random.Random(42), backoff_base=0.5, backoff_cap=4)
    delays = [a._backoff(n) for n in range(8)]
    assert delays == [b._backoff(n) for n in range(8)]
    for n, d in enumerate(delays):
        assert 0 <= d <= min(4, 0.5 * 2**n)


def _client(clock: FakeClock, wall: Callable[[], float] = lambda: 1_700_000_000.0) -> CoinbaseRestClient:
    return CoinbaseRestClient(clock=clock, sleep=clock.sleep, wall_clock=wall)


def test_retry_after_forms() -> None:
    clock = FakeClock()
    client = _client(clock)
    assert client._retry_after({"retry-after": "3"}) == 3.0
    assert client._retry_after({"retry-after": "-1"}) == 0.0
    assert client._retry_after({}) is None
    assert client._retry_after({"retry-after": "soon"}) is None
    when = datetime.fromtimestamp(1_700_000_000, UTC) + timedelta(seconds=7)
    assert client._retry_after({"retry-after": format_datetime(when, usegmt=True)}) == pytest.approx(7)


@pytest.mark.parametrize(
    ("headers", "pause"),
    [
        ({"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1700000002"}, 2.0),  # epoch seconds
        ({"x-ratelimit-remaining": "0", "x-ratelimit-reset": "0.5"}, 0.5),  # seconds from now
        ({"x-ratelimit-remaining": "0"}, 1.0),  # no reset: wait a window
        ({"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1800000000"}, 10.0),  # capped
    ],
)
def test_rate_limit_headers_pause_the_bucket(headers: dict[str, str], pause: float) -> None:
    clock = FakeClock()
    client = _client(clock)
    client._observe_headers(client.private_bucket, headers)
    assert client.private_bucket.reserve() == pytest.approx(pause)


def test_remaining_headers_cap_tokens() -> None:
    clock = FakeClock()
    client = _client(clock)
    client._observe_headers(client.private_bucket, {"x-ratelimit-remaining": "2"})
    assert [client.private_bucket.reserve() for _ in range(3)][:2] == [0.0, 0.0]
    client._observe_headers(client.public_bucket, {"x-ratelimit-remaining": "junk"})
    assert client.public_bucket.available == pytest.approx(10)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"timeout": 0}, "timeout"),
        ({"max_retries": -1}, "max_retries"),
        ({"base_url": "ftp://x"}, "base_url"),
        ({"base_url": "api.coinbase.com"}, "base_url"),
    ],
)
def test_constructor_validation(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidValue, match=field):
        CoinbaseRestClient(**kwargs)  # type: ignore[arg-type]


def test_base_url_normalised_and_repr_hides_key() -> None:
    key = _key()
    client = CoinbaseRestClient("http://127.0.0.1:8080/api/v3/brokerage/", key)
    assert client.base_url == "http://127.0.0.1:8080" and client.host == "127.0.0.1:8080"
    assert client.authenticated
    assert "apiKeys/k" in repr(client) and "PRIVATE" not in repr(client)
    proxied = CoinbaseRestClient("https://proxy.example/coinbase")
    assert proxied.base_url == "https://proxy.example/coinbase" and not proxied.authenticated


async def test_private_calls_without_key_fail_before_sending() -> None:
    clock = FakeClock()
    client = _client(clock)
    for call in (client.accounts(), client.transaction_summary(), client.get_order("x"), client.list_fills()):
        with pytest.raises(AuthenticationFailed, match="needs an API key"):
            await call
    assert client.requests == 0
    await client.close()


async def test_candles_validate_before_sending() -> None:
    client = CoinbaseRestClient()
    now = datetime(2024, 1, 1, tzinfo=UTC)
    with pytest.raises(InvalidValue, match="granularity"):
        await client.candles("BTC-USD", now, now, "ONE_WEEK")
    with pytest.raises(InvalidValue, match="timezone-aware"):
        await client.candles("BTC-USD", now.replace(tzinfo=None), now)
    with pytest.raises(InvalidValue, match="before start"):
        await client.candles("BTC-USD", now, now - timedelta(minutes=1))
    assert await client.candles("BTC-USD", now, now) == []  # empty range: no request at all
    assert client.requests == 0


def test_query_values_and_headers() -> None:
    assert _query_value(datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2024-01-02T03:04:05Z"
    assert _query_value(True) == "true" and _query_value(False) == "false"
    assert _query_value(5) == "5"
    assert _header_int("7") == 7 and _header_int(None) is None and _header_int("x") is None


# --- the order lane's HTTP/1.1 answer parsing ------------------------------------------------------------


class _FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True


def _lane_conn() -> tuple[_LaneConnection, _FakeTransport]:
    conn = _LaneConnection(_OrderLane("http://127.0.0.1:1"))
    transport = _FakeTransport()
    conn.connection_made(transport)
    return conn, transport


async def _answer(pieces: list[bytes], *, eof: bool = False) -> tuple[Any, _LaneConnection]:
    conn, transport = _lane_conn()
    future = conn.send(b"POST /x HTTP/1.1\r\n\r\n")
    assert transport.written == b"POST /x HTTP/1.1\r\n\r\n"
    for piece in pieces:
        assert not future.done()
        conn.data_received(piece)
    if eof:
        conn.connection_lost(None)
    return await future, conn


async def test_order_lane_reads_content_length_chunked_and_close_delimited_answers() -> None:
    resp, conn = await _answer([b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Ratelimit-Remaining: 7\r\n",
                                b"Content-Length: 11\r\n\r\n{\"ok\":", b"true}"])
    assert (resp.status, resp.body, resp.headers["x-ratelimit-remaining"]) == (200, b'{"ok":true}', "7")
    assert conn.reusable()
    chunked = [b"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n", b"4\r\n{\"a\"\r", b"\n3;ext=1\r\n:1}\r\n",
               b"0\r\n", b"\r\n"]
    resp, conn = await _answer(chunked)
    assert (resp.status, resp.body) == (400, b'{"a":1}') and conn.reusable()
    resp, conn = await _answer([b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 503 Busy\r\n\r\nbusy"], eof=True)
    assert (resp.status, resp.body) == (503, b"busy") and not conn.reusable()
    resp, conn = await _answer([b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n"])
    assert (resp.status, resp.body) == (204, b"") and not conn.reusable()


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"SMTP 220 hello\r\n\r\n", "status line"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "header line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", "Content-Length"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "chunk size"),
    ],
)
async def test_order_lane_refuses_a_malformed_answer(data: bytes, match: str) -> None:
    conn, transport = _lane_conn()
    future = conn.send(b"req")
    conn.data_received(data)
    with pytest.raises(ConnectionError, match=match):
        await future
    assert transport.closing and not conn.reusable()


async def test_order_lane_connection_lost_mid_answer_is_a_reset() -> None:
    conn, _transport = _lane_conn()
    future = conn.send(b"req")
    conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{\"a\"")
    conn.connection_lost(None)
    with pytest.raises(ConnectionResetError):
        await future
    conn2, transport2 = _lane_conn()
    conn2.data_received(b"HTTP/1.1 200 OK\r\n\r\n")  # nobody asked
    assert transport2.closing
