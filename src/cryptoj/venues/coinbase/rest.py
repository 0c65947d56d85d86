"""Async REST client for Coinbase Advanced Trade (and the simulator, same protocol).

One :class:`aiohttp.ClientSession` per client; use it as an async context manager::

    async with CoinbaseRestClient("https://api.coinbase.com", load_cdp_key(path)) as client:
        products = await client.products()

Behaviour
    * every call has a timeout (``timeout`` seconds, covering connect, send and read);
    * two token buckets — public (default 10/s) and private (default 30/s) — pace
      requests, and follow the venue's ``x-ratelimit-remaining``/``x-ratelimit-reset``
      headers and ``Retry-After`` on HTTP 429;
    * reads are retried (up to ``max_retries``) on 429, 5xx, timeouts and connection
      errors with exponential backoff and full jitter (seeded RNG injectable);
    * **order creation is only ever retried with the same ``client_order_id``** —
      Coinbase answers a reused id with the order it already has, so a retry can
      never place a second order. If the last attempt still fails in a way that
      means the request may have reached the venue (timeout, connection reset after
      sending, 5xx), :class:`~cryptoj.errors.AmbiguousOutcome` is raised: the caller
      must resolve it by creating again with the same id (or by listing orders);
    * errors map to :mod:`cryptoj.errors`: ``RateLimited``, ``AuthenticationFailed``,
      ``OrderRejected(reason)``, ``OrderNotFound``, ``VenueUnavailable``,
      ``AmbiguousOutcome``; unparseable bodies raise ``MalformedMessage``.

Without a key the public ``/market/...`` endpoints are used for products, the
product book, candles and market trades; private calls then raise
:class:`~cryptoj.errors.AuthenticationFailed` before sending anything.

Signing a JWT takes about 0.1 ms, so with a key the client keeps a small
:class:`~cryptoj.venues.coinbase.auth.JwtPool` of pre-signed tokens for ``POST /orders``
and ``POST /orders/batch_cancel`` (``jwt_pool_size`` each, 0 switches it off), topped
up one token per event-loop step after each private response and every
``JWT_REFRESH_SECONDS``; an empty or stale pool falls back to signing in line. Each token
still serves exactly one request.

Counters (``requests``, ``retries``, ``rate_limited``, ``errors``, ``timeouts``,
``latency_sum``, ``latency_max``) are plain attributes for the metrics layer.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp
import orjson

from cryptoj.errors import (
    AmbiguousOutcome,
    AuthenticationFailed,
    InvalidValue,
    OrderNotFound,
    VenueError,
    VenueUnavailable,
)
from cryptoj.logging import get_logger
from cryptoj.model.events import CandleEvent
from cryptoj.model.instruments import Product
from cryptoj.model.orders import Fill, OrderSpec
from cryptoj.venues.coinbase import protocol as p
from cryptoj.venues.coinbase.auth import CdpKey, JwtPool, rest_jwt

__all__ = ["API_PREFIX", "DEFAULT_BASE_URL", "GRANULARITY_SECONDS", "CoinbaseRestClient", "TokenBucket"]

DEFAULT_BASE_URL: Final = "https://api.coinbase.com"
API_PREFIX: Final = "/api/v3/brokerage"
GRANULARITY_SECONDS: Final[Mapping[str, int]] = {
    "ONE_MINUTE": 60,
    "FIVE_MINUTE": 300,
    "FIFTEEN_MINUTE": 900,
    "THIRTY_MINUTE": 1800,
    "ONE_HOUR": 3600,
    "TWO_HOUR": 7200,
    "SIX_HOUR": 21600,
    "ONE_DAY": 86400,
}
CANDLES_PER_REQUEST: Final = 300
CANCEL_BATCH: Final = 100
_MAX_HEADER_WAIT: Final = 10.0
JWT_REFRESH_SECONDS: Final = 15.0
"""How often the pre-signed JWT pool drops stale tokens and is topped up, even without traffic."""
_JWT_STEP_SECONDS: Final = 0.001
"""Gap between two pool top-up steps (one signature each), so market data is read in between."""

log = get_logger(__name__)


class TokenBucket:
    """A token bucket (``rate`` tokens/s, ``burst`` capacity) on an injectable monotonic clock.

    :meth:`reserve` takes a token and returns how long to wait before using it, so
    callers queue fairly without a lock. :meth:`pause_until` blocks the bucket
    (``Retry-After``, an exhausted ``x-ratelimit-remaining``).
    """

    def __init__(self, rate: float, burst: float | None = None, *, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0:
            raise InvalidValue("rate", rate, "must be positive")
        self.rate = float(rate)
        self.burst = float(burst if burst is not None else rate)
        if self.burst < 1:
            raise InvalidValue("burst", burst, "must be at least 1")
        self._clock = clock
        self._tokens = self.burst
        self._last = clock()
        self._blocked_until = 0.0

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self._last)
        self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
        self._last = now

    def reserve(self) -> float:
        """Take one token; seconds to wait before the request may go (0 when none)."""
        now = self._clock()
        self._refill(now)
        self._tokens -= 1.0
        wait = 0.0 if self._tokens >= 0 else -self._tokens / self.rate
        return max(wait, self._blocked_until - now)

    def pause_until(self, when: float) -> None:
        """No request before monotonic time ``when``."""
        self._blocked_until = max(self._blocked_until, when)

    def limit_remaining(self, remaining: int) -> None:
        """The venue says only ``remaining`` requests are left in its window."""
        self._refill(self._clock())
        self._tokens = min(self._tokens, float(remaining))

    @property
    def available(self) -> float:
        self._refill(self._clock())
        return self._tokens


@dataclass(frozen=True, slots=True)
class _Response:
    status: int
    body: bytes
    headers: Mapping[str, str]


class _ConnectFailed(Exception):
    """The order lane could not connect: the request was never sent."""


_MAX_HEAD: Final = 64 * 1024
_LANE_WARM_TIMEOUT: Final = 10.0
_MAX_BODY: Final = 16 * 1024 * 1024


class _LaneConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection of the order lane: one request at a time, its answer parsed here."""

    def __init__(self, lane: _OrderLane) -> None:
        self._lane = lane
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._buffer = bytearray()
        self._waiter: asyncio.Future[_Response] | None = None
        self._status = 0
        self._headers: dict[str, str] | None = None
        self._length: int | None = None
        self._chunked = False
        self._keep_alive = True

    # -- protocol callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._lane.forget(self)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            if self._headers is not None and self._length is None and not self._chunked:
                waiter.set_result(self._response(bytes(self._buffer)))  # body delimited by the end of the connection
            else:
                waiter.set_exception(ConnectionResetError(f"connection closed before the answer was complete ({exc})"))

    def data_received(self, data: bytes) -> None:
        if self._waiter is None or self._waiter.done():
            self.close()  # nothing was asked: a server that talks out of turn is not trusted with the next order
            return
        self._buffer += data
        try:
            result = self._parse()
        except ConnectionError as exc:
            self._waiter.set_exception(exc)
            self.close()
            return
        if result is not None:
            self._waiter.set_result(result)

    # -- the exchange
    def send(self, request: bytes) -> asyncio.Future[_Response]:
        """Write ``request`` now (in the caller's step) and return the future of its answer."""
        assert self.transport is not None
        self._buffer.clear()
        self._status, self._headers, self._length, self._chunked, self._keep_alive = 0, None, None, False, True
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return self._waiter

    def reusable(self) -> bool:
        return not self.closed and self._keep_alive and self.transport is not None and not self.transport.is_closing()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _response(self, body: bytes) -> _Response:
        assert self._headers is not None
        return _Response(self._status, body, self._headers)

    def _parse(self) -> _Response | None:
        buf = self._buffer
        if self._headers is None:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > _MAX_HEAD:
                    raise ConnectionError("HTTP answer head too large")
                return None
            lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
            del buf[: end + 4]
            parts = lines[0].split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
                raise ConnectionError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
            status = int(parts[1])
            if 100 <= status < 200:  # an interim answer: the real one follows
                return self._parse() if buf else None
            headers: dict[str, str] = {}
            for line in lines[1:]:
                name, sep, value = line.partition(":")
                if not sep:
                    raise ConnectionError(f"malformed HTTP header line {line[:80]!r}")
                key = name.strip().lower()
                headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
            self._status, self._headers = status, headers
            self._keep_alive = headers.get("connection", "").lower() != "close" and parts[0] == "HTTP/1.1"
            if "chunked" in headers.get("transfer-encoding", "").lower():
                self._chunked = True
            elif "content-length" in headers:
                try:
                    self._length = int(headers["content-length"])
                except ValueError:
                    raise ConnectionError(f"bad Content-Length {headers['content-length']!r}") from None
                if not 0 <= self._length <= _MAX_BODY:
                    raise ConnectionError(f"Content-Length {self._length} out of range")
            elif status in (204, 304):
                self._length = 0
            else:
                self._keep_alive = False  # the body ends with the connection
        if self._chunked:
            return self._parse_chunked()
        if self._length is not None and len(buf) >= self._length:
            body = bytes(buf[: self._length])
            del buf[: self._length]
            return self._response(body)
        if len(buf) > _MAX_BODY:
            raise ConnectionError("HTTP answer body too large")
        return None

    def _parse_chunked(self) -> _Response | None:
        buf = self._buffer
        body = bytearray()
        pos = 0
        while True:
            end = buf.find(b"\r\n", pos)
            if end < 0:
                return None
            size_text = bytes(buf[pos:end]).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise ConnectionError(f"bad chunk size {size_text[:20]!r}") from None
            if size == 0:
                trailer_end = buf.find(b"\r\n\r\n", end)
                if buf[end : end + 4] == b"\r\n\r\n":
                    trailer_end = end
                if trailer_end < 0:
                    return None
                del buf[: trailer_end + 4]
                return self._response(bytes(body))
            start = end + 2
            if len(buf) < start + size + 2:
                if len(buf) > _MAX_BODY:
                    raise ConnectionError("HTTP answer body too large")
                return None
            body += buf[start : start + size]
            pos = start + size + 2


class _OrderLane:
    """``POST /orders`` over keep-alive HTTP/1.1 connections of our own (see the module doc).

    aiohttp writes a request body in a task of its own (Python 3.11), i.e. one event-loop
    iteration after the call, behind whatever else is ready; here the request is built as
    bytes and written with one ``transport.write`` in the caller's step.
    """

    def __init__(self, base_url: str, *, max_idle: int = 4) -> None:
        split = urlsplit(base_url)
        self.secure = split.scheme == "https"
        self.host = split.hostname or ""
        self.port = split.port or (443 if self.secure else 80)
        self.host_header = split.netloc.rsplit("@", 1)[-1]
        self.max_idle = max_idle
        self._idle: list[_LaneConnection] = []
        self._all: set[_LaneConnection] = set()
        self._ssl: ssl.SSLContext | None = ssl.create_default_context() if self.secure else None
        self.connects = 0
        self.requests = 0

    def forget(self, conn: _LaneConnection) -> None:
        self._all.discard(conn)
        if conn in self._idle:
            self._idle.remove(conn)

    async def _connection(self) -> _LaneConnection:
        while self._idle:
            conn = self._idle.pop()
            if conn.reusable():
                return conn
            conn.close()
        loop = asyncio.get_running_loop()
        try:
            _transport, conn = await loop.create_connection(
                lambda: _LaneConnection(self), self.host, self.port, ssl=self._ssl,
                server_hostname=self.host if self.secure else None,
            )
        except (OSError, ssl.SSLError) as exc:
            raise _ConnectFailed(f"cannot connect to {self.host_header} ({type(exc).__name__}: {exc})") from exc
        self.connects += 1
        self._all.add(conn)
        return conn

    async def warm(self) -> None:
        """Open one idle connection ahead of the first order (errors are left for that order to meet)."""
        if self._idle:
            return
        try:
            async with asyncio.timeout(_LANE_WARM_TIMEOUT):
                conn = await self._connection()
        except (_ConnectFailed, TimeoutError):
            return
        self._release(conn)

    def _release(self, conn: _LaneConnection) -> None:
        if conn.reusable() and len(self._idle) < self.max_idle:
            self._idle.append(conn)
        else:
            conn.close()

    async def post(self, target: str, headers: Iterable[tuple[str, str]], body: bytes,
                   on_written: Callable[[bytes], None] | None) -> _Response:
        conn = await self._connection()
        head = [f"POST {target} HTTP/1.1\r\nHost: {self.host_header}\r\nContent-Length: {len(body)}\r\n"]
        head.extend(f"{name}: {value}\r\n" for name, value in headers)
        head.append("\r\n")
        done = False
        try:
            answer = conn.send("".join(head).encode("latin-1") + body)
            self.requests += 1
            if on_written is not None:
                on_written(body)
            response = await answer
            done = True
        finally:
            if done:
                self._release(conn)
            else:
                conn.close()  # timed out, cancelled or broken: never reused with an answer still pending
        return response

    def close(self) -> None:
        for conn in list(self._all):
            conn.close()
        self._idle.clear()
        self._all.clear()


class _Attempt:
    """What went wrong on one attempt, for the retry decision."""

    __slots__ = ("ambiguous", "error")

    def __init__(self, error: VenueError, *, ambiguous: bool) -> None:
        self.error = error
        self.ambiguous = ambiguous


class CoinbaseRestClient:
    """Coinbase Advanced Trade REST API over one aiohttp session (see the module doc)."""

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        key: CdpKey | None = None,
        *,
        timeout: float = 10.0,
        public_rate: float = 10.0,
        private_rate: float = 30.0,
        max_retries: int = 3,
        backoff_base: float = 0.25,
        backoff_cap: float = 8.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        jwt_pool_size: int = 4,
        order_lane: bool = False,
    ) -> None:
        if timeout <= 0:
            raise InvalidValue("timeout", timeout, "must be positive")
        if max_retries < 0:
            raise InvalidValue("max_retries", max_retries, "must not be negative")
        split = urlsplit(base_url)
        if split.scheme not in ("http", "https") or not split.netloc:
            raise InvalidValue("base_url", base_url, "expected http(s)://host[:port]")
        path = split.path.rstrip("/")
        if path.endswith(API_PREFIX):
            path = path[: -len(API_PREFIX)]
        self.base_url = f"{split.scheme}://{split.netloc}{path}"
        self.host = split.netloc
        self._path_root = path
        self.key = key
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self._clock = clock
        self._wall_clock = wall_clock
        self._sleep = sleep
        self._rng = rng if rng is not None else random.Random()
        self.public_bucket = TokenBucket(public_rate, clock=clock)
        self.private_bucket = TokenBucket(private_rate, clock=clock)
        self._session: aiohttp.ClientSession | None = None
        self.jwt_pool: JwtPool | None = None
        if key is not None and jwt_pool_size > 0:
            hot = [("POST", f"{path}{API_PREFIX}/orders"), ("POST", f"{path}{API_PREFIX}/orders/batch_cancel")]
            self.jwt_pool = JwtPool(key, self.host, hot, size=jwt_pool_size, wall_clock=wall_clock)
        self._lane = _OrderLane(self.base_url) if order_lane else None
        self._lane_warm: asyncio.Task[None] | None = None
        self.on_order_written: Callable[[bytes], None] | None = None
        """Called with the body of each ``POST /orders`` the order lane has just written (benchmarks)."""
        self._jwt_step: asyncio.TimerHandle | None = None
        self._jwt_refresh: asyncio.TimerHandle | None = None
        # counters for the metrics layer
        self.requests = 0
        self.retries = 0
        self.rate_limited = 0
        self.errors = 0
        self.timeouts = 0
        self.latency_sum = 0.0
        self.latency_max = 0.0

    def __repr__(self) -> str:
        key = self.key.name if self.key else None
        return f"CoinbaseRestClient(base_url={self.base_url!r}, key={key!r})"

    # -- lifecycle --------------------------------------------------------------

    async def __aenter__(self) -> CoinbaseRestClient:
        await self.open()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    async def open(self) -> None:
        """Create the session (idempotent); needs a running event loop."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        if self.jwt_pool is not None and self._jwt_refresh is None:
            self._refresh_jwts()
        if self._lane is not None and self.key is not None and self._lane_warm is None:
            self._lane_warm = asyncio.get_running_loop().create_task(self._lane.warm(), name="coinbase-order-lane-warm")

    async def close(self) -> None:
        """Close the session and its connections."""
        for handle in (self._jwt_step, self._jwt_refresh):
            if handle is not None:
                handle.cancel()
        self._jwt_step = self._jwt_refresh = None
        warm, self._lane_warm = self._lane_warm, None
        if warm is not None and not warm.done():
            warm.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await warm
        if self._lane is not None:
            self._lane.close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def authenticated(self) -> bool:
        return self.key is not None

    # -- pre-signed JWTs -----------------------------------------------------------

    def _refresh_jwts(self) -> None:
        """Drop stale pooled tokens, top the pool up, and come back in ``JWT_REFRESH_SECONDS``."""
        loop = asyncio.get_running_loop()
        if self.jwt_pool is not None:
            self.jwt_pool.prune()
            self._top_up_jwts()
        self._jwt_refresh = loop.call_later(JWT_REFRESH_SECONDS, self._refresh_jwts)

    def _top_up_jwts(self) -> None:
        """Schedule the next top-up step unless one is pending or the pool is full."""
        if self._jwt_step is None and self.jwt_pool is not None and self.jwt_pool.wanted():
            self._jwt_step = asyncio.get_running_loop().call_later(_JWT_STEP_SECONDS, self._jwt_step_run)

    def _jwt_step_run(self) -> None:
        self._jwt_step = None
        if self.jwt_pool is None or self._session is None:
            return
        self.jwt_pool.sign_one()
        self._top_up_jwts()

    # -- the request loop ----------------------------------------------------------

    def _backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2**attempt)]."""
        return self._rng.uniform(0.0, min(self.backoff_cap, self.backoff_base * (2**attempt)))

    def _observe_headers(self, bucket: TokenBucket, headers: Mapping[str, str]) -> None:
        """Follow ``x-ratelimit-*`` (``headers`` keys are lower-case)."""
        remaining = _header_int(headers.get("x-ratelimit-remaining"))
        if remaining is None:
            return
        bucket.limit_remaining(remaining)
        if remaining <= 0:
            reset = _header_float(headers.get("x-ratelimit-reset"))
            wait = 1.0
            if reset is not None:
                # Coinbase's docs do not say whether this is an epoch or a delay: accept both.
                wait = reset - self._wall_clock() if reset > 1e9 else reset
            bucket.pause_until(self._clock() + min(max(wait, 0.0), _MAX_HEADER_WAIT))

    def _retry_after(self, headers: Mapping[str, str]) -> float | None:
        """Seconds from ``retry-after`` (a number or an HTTP date; ``headers`` keys are lower-case)."""
        raw = headers.get("retry-after")
        if not raw:
            return None
        value = _header_float(raw)
        if value is not None:
            return max(0.0, value)
        try:
            when = parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - self._wall_clock())

    async def _send(self, method: str, path: str, params: Sequence[tuple[str, str]], body: Any, private: bool) -> _Response:
        if self._session is None:
            await self.open()
        assert self._session is not None
        full_path = f"{self._path_root}{API_PREFIX}{path}"
        headers = {"Accept": "application/json"}
        if private:
            assert self.key is not None
            token = self.jwt_pool.take(method, full_path) if self.jwt_pool is not None else None
            if token is None:
                token = rest_jwt(self.key, method, self.host, full_path, now=self._wall_clock())
            headers["Authorization"] = "Bearer " + token
        data: bytes | None = None
        if body is not None:
            data = orjson.dumps(body)
            headers["Content-Type"] = "application/json"
        if self._lane is not None and data is not None and method == "POST" and path == "/orders" and not params:
            async with asyncio.timeout(self.timeout):
                response = await self._lane.post(full_path, headers.items(), data, self.on_order_written)
            if private and self.jwt_pool is not None:
                self._top_up_jwts()
            return response
        async with asyncio.timeout(self.timeout):
            async with self._session.request(
                method, f"{self.base_url}{API_PREFIX}{path}", params=list(params), data=data, headers=headers
            ) as r:
                raw = await r.read()
                if private and self.jwt_pool is not None:
                    self._top_up_jwts()  # after the answer: the signing stays out of this request's way
                return _Response(r.status, raw, {k.lower(): v for k, v in r.headers.items()})

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: Iterable[tuple[str, Any]] = (),
        body: Any = None,
        private: bool = True,
        create_id: str | None = None,
    ) -> Any:
        """Send with pacing, retries and error mapping; returns the decoded JSON body.

        ``create_id`` marks an order create: retried only with that same id, and
        an outcome that stays unknown raises :class:`AmbiguousOutcome`.
        """
        if private and self.key is None:
            raise AuthenticationFailed(f"{method} {path} needs an API key; this client has none")
        bucket = self.private_bucket if private else self.public_bucket
        query = [(k, _query_value(v)) for k, v in params if v is not None]
        ambiguous_seen = False
        last: _Attempt | None = None
        for attempt in range(self.max_retries + 1):
            if attempt:
                self.retries += 1
            wait = bucket.reserve()
            if wait > 0:
                await self._sleep(wait)
            self.requests += 1
            started = self._clock()
            resp: _Response | None = None
            try:
                resp = await self._send(method, path, query, body, private)
            except TimeoutError:
                self.timeouts += 1
                last = _Attempt(VenueUnavailable(f"{method} {path}: no response within {self.timeout}s"), ambiguous=True)
            except aiohttp.ClientConnectorError as exc:
                # the connection was never made, so the request was never sent
                last = _Attempt(VenueUnavailable(f"{method} {path}: cannot connect ({type(exc).__name__})"), ambiguous=False)
            except _ConnectFailed as exc:  # the order lane's: never sent either
                last = _Attempt(VenueUnavailable(f"{method} {path}: {exc}"), ambiguous=False)
            except (aiohttp.ClientError, OSError) as exc:
                last = _Attempt(VenueUnavailable(f"{method} {path}: connection failed ({type(exc).__name__})"), ambiguous=True)
            self._observe_latency(started)
            if resp is not None:
                self._observe_headers(bucket, resp.headers)
                if resp.status < 400:
                    return p.loads(resp.body, f"{method} {path}") if resp.body.strip() else {}
                retry_after = self._retry_after(resp.headers) if resp.status == 429 else None
                error = p.error_from_response(resp.status, resp.body, retry_after=retry_after)
                if resp.status == 429:
                    self.rate_limited += 1
                    if retry_after is not None:
                        bucket.pause_until(self._clock() + retry_after)
                    last = _Attempt(error, ambiguous=False)
                elif resp.status >= 500:
                    last = _Attempt(error, ambiguous=True)
                else:
                    self.errors += 1
                    raise error
            assert last is not None
            ambiguous_seen |= last.ambiguous
            if attempt < self.max_retries:
                delay = self._backoff(attempt)
                log.info(
                    "coinbase_retry",
                    method=method,
                    path=path,
                    attempt=attempt + 1,
                    delay=round(delay, 3),
                    reason=str(last.error),
                    client_order_id=create_id,
                )
                await self._sleep(delay)
        self.errors += 1
        assert last is not None
        if create_id is not None and ambiguous_seen:
            raise AmbiguousOutcome(create_id, str(last.error))
        raise last.error

    def _observe_latency(self, started: float) -> None:
        elapsed = max(0.0, self._clock() - started)
        self.latency_sum += elapsed
        self.latency_max = max(self.latency_max, elapsed)

    # -- market data (public variants without a key) ---------------------------------

    def _market(self, path: str) -> tuple[str, bool]:
        """Public ``/market/...`` path when there is no key, else the private one."""
        return (path, True) if self.key is not None else (f"/market{path}", False)

    async def server_time(self) -> datetime:
        """``GET /time`` (public)."""
        return p.parse_server_time(await self._request("GET", "/time", private=False))

    async def products(self, product_ids: Sequence[str] | None = None) -> list[Product]:
        path, private = self._market("/products")
        params = [("product_ids", pid) for pid in product_ids or ()]
        return p.parse_products(await self._request("GET", path, params=params, private=private))

    async def product(self, product_id: str) -> Product:
        path, private = self._market(f"/products/{product_id}")
        return p.parse_product(await self._request("GET", path, private=private))

    async def product_book(self, product_id: str, limit: int | None = None) -> p.ProductBook:
        path, private = self._market("/product_book")
        params = [("product_id", product_id), ("limit", limit)]
        return p.parse_product_book(await self._request("GET", path, params=params, private=private))

    async def best_bid_ask(self, product_ids: Sequence[str]) -> list[p.ProductBook]:
        """``GET /best_bid_ask``; without a key, the top of ``/market/product_book`` per product."""
        if self.key is None:
            books = []
            for pid in product_ids:
                book = await self.product_book(pid, limit=1)
                books.append(p.ProductBook(book.product_id, book.bids[:1], book.asks[:1], book.time))
            return books
        params = [("product_ids", pid) for pid in product_ids]
        return p.parse_best_bid_ask(await self._request("GET", "/best_bid_ask", params=params))

    async def market_trades(self, product_id: str, limit: int = 100) -> p.MarketTrades:
        path, private = self._market(f"/products/{product_id}/ticker")
        return p.parse_market_trades(await self._request("GET", path, params=[("limit", limit)], private=private))

    async def candles(
        self, product_id: str, start: datetime, end: datetime, granularity: str = "ONE_MINUTE"
    ) -> list[CandleEvent]:
        """Candles with ``start <= candle.start < end``, oldest first, fetched 300 per request."""
        step = GRANULARITY_SECONDS.get(granularity)
        if step is None:
            raise InvalidValue("granularity", granularity, f"expected one of {', '.join(GRANULARITY_SECONDS)}")
        if start.tzinfo is None or end.tzinfo is None:
            raise InvalidValue("candles.start/end", (start, end), "must be timezone-aware")
        first, last = int(start.timestamp()), int(end.timestamp())
        if last < first:
            raise InvalidValue("candles.end", end, f"is before start {start.isoformat()}")
        path, private = self._market(f"/products/{product_id}/candles")
        seen: dict[datetime, CandleEvent] = {}
        window = CANDLES_PER_REQUEST * step
        lo = first
        while lo < last:
            hi = min(lo + window, last)
            params = [("start", lo), ("end", hi), ("granularity", granularity)]
            for candle in p.parse_candles(await self._request("GET", path, params=params, private=private), product_id):
                if start <= candle.start < end:
                    seen[candle.start] = candle
            lo = hi
        return [seen[k] for k in sorted(seen)]

    # -- account ------------------------------------------------------------------------

    async def accounts(self, page_size: int = 250) -> list[p.Balance]:
        """Every account, following the cursor."""
        out: list[p.Balance] = []
        cursor = ""
        seen: set[str] = set()
        while True:
            params = [("limit", page_size), ("cursor", cursor or None)]
            page = p.parse_accounts_page(await self._request("GET", "/accounts", params=params))
            out.extend(page.accounts)
            if not page.has_next or not page.cursor or page.cursor in seen:
                return out
            seen.add(page.cursor)
            cursor = page.cursor

    async def transaction_summary(self) -> p.FeeTier:
        """The fee tier (maker/taker rates) from ``GET /transaction_summary``."""
        return p.parse_transaction_summary(await self._request("GET", "/transaction_summary"))

    # -- orders ---------------------------------------------------------------------------

    async def create_order(self, spec: OrderSpec) -> p.CreatedOrder:
        """``POST /orders``. Retried only with ``spec.client_order_id``; see the module doc.

        Raises :class:`OrderRejected` (Coinbase's reason code), :class:`RateLimited`,
        :class:`AuthenticationFailed` or :class:`AmbiguousOutcome`.
        """
        body = p.order_spec_to_body(spec)
        coid = spec.client_order_id
        log.debug("coinbase_create_order", client_order_id=coid, product_id=spec.product_id,
                  configuration=next(iter(body["order_configuration"])))
        data = await self._request("POST", "/orders", body=body, create_id=coid)
        result = p.parse_create_order(data, coid)
        log.info("coinbase_order_created", client_order_id=coid, product_id=spec.product_id, order_id=result.order_id)
        return result

    async def cancel_orders(self, order_ids: Sequence[str]) -> list[p.CancelResult]:
        """``POST /orders/batch_cancel`` (100 ids per request; cancelling is idempotent, so retried)."""
        out: list[p.CancelResult] = []
        ids = list(order_ids)
        for i in range(0, len(ids), CANCEL_BATCH):
            data = await self._request("POST", "/orders/batch_cancel", body={"order_ids": ids[i : i + CANCEL_BATCH]})
            out.extend(p.parse_batch_cancel(data))
        return out

    async def get_order(self, order_id: str) -> p.VenueOrder:
        """``GET /orders/historical/{order_id}``; an unknown id raises :class:`OrderNotFound`."""
        try:
            return p.parse_order(await self._request("GET", f"/orders/historical/{order_id}"))
        except VenueError as exc:
            if exc.status == 404 and not isinstance(exc, OrderNotFound):
                raise OrderNotFound(f"order {order_id} not found ({exc})", status=404) from None
            raise

    async def list_orders(
        self,
        *,
        product_ids: Sequence[str] = (),
        order_status: Sequence[str] = (),
        start_date: datetime | None = None,
        end_date: datetime | None = None,
        page_size: int = 100,
        max_pages: int | None = None,
    ) -> list[p.VenueOrder]:
        """``GET /orders/historical/batch`` with filters, following the cursor."""
        params: list[tuple[str, Any]] = [("product_ids", pid) for pid in product_ids]
        params += [("order_status", s) for s in order_status]
        params += [("start_date", start_date), ("end_date", end_date), ("limit", page_size)]
        out: list[p.VenueOrder] = []
        cursor = ""
        pages = 0
        seen: set[str] = set()
        while True:
            page = p.parse_orders_page(
                await self._request("GET", "/orders/historical/batch", params=[*params, ("cursor", cursor or None)])
            )
            out.extend(page.orders)
            pages += 1
            if not page.has_next or not page.cursor or page.cursor in seen or (max_pages is not None and pages >= max_pages):
                return out
            seen.add(page.cursor)
            cursor = page.cursor

    async def list_fills(
        self,
        *,
        order_ids: Sequence[str] = (),
        product_ids: Sequence[str] = (),
        client_order_ids: Mapping[str, str] | None = None,
        page_size: int = 100,
        max_pages: int | None = None,
        start: datetime | None = None,
    ) -> list[Fill]:
        """``GET /orders/historical/fills``, following the cursor.

        ``client_order_ids`` maps venue order ids to ours (see :func:`protocol.parse_fills_page`).
        ``start`` asks only for fills at or after that time (``start_sequence_timestamp``).
        """
        params: list[tuple[str, Any]] = [("order_ids", oid) for oid in order_ids]
        params += [("product_ids", pid) for pid in product_ids]
        params += [("start_sequence_timestamp", start), ("limit", page_size)]
        out: list[Fill] = []
        cursor = ""
        pages = 0
        seen: set[str] = set()
        while True:
            data = await self._request("GET", "/orders/historical/fills", params=[*params, ("cursor", cursor or None)])
            page = p.parse_fills_page(data, client_order_ids)
            out.extend(page.fills)
            pages += 1
            if not page.cursor or page.cursor in seen or (max_pages is not None and pages >= max_pages):
                return out
            seen.add(page.cursor)
            cursor = page.cursor


def _query_value(value: Any) -> str:
    if isinstance(value, datetime):
        return p.format_time(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _header_float(raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        return float(raw.strip())
    except ValueError:
        return None


def _header_int(raw: str | None) -> int | None:
    value = _header_float(raw)
    return None if value is None else int(value)
