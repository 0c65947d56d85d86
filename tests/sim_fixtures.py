"""Simulator fixtures (loaded as a pytest plugin by ``tests/conftest.py``).

* ``sim``       — a fresh simulator on a free 127.0.0.1 port, synthetic market primed
  (≥ 50 levels a side) but **no background flow** (``market_rate=0``): drive it
  with ``sim.admin.step(n)`` / ``sim.admin.trade(...)``. Generous rate limits.
  ``sim.key_file`` is an accepted CDP key file in ``tmp_path``; ``sim_key`` the loaded key.
* ``sim_live``  — the same with background market flow on (seeded, 20 events/s).
* ``make_sim``  — a factory: ``await make_sim(market_rate=..., faults={...}, ...)`` for
  custom configs; every simulator it makes is stopped at teardown.
* ``sim_jwt``   — ``sim_jwt(method, path)`` → a fresh Bearer token for ``sim``'s key
  (``sim_jwt()`` with no arguments gives a WebSocket JWT).
* ``make_key_file(path)`` — write a new key file (a plain function, importable).
* ``mock_exchange_service`` / ``mock_market_data`` — the seed test plan's fixture names, backed by
  real components: a simulator on a free loopback port with background flow, and our real
  ``MarketDataService`` fed by our real ``WebSocketHandler`` connected to it (BTC-USD, ETH-USD).
"""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from cryptoj.market_data import MarketDataConfig, MarketDataService
from cryptoj.venues.coinbase.protocol import parse_envelope
from cryptoj.venues.simulated.keys import ApiKey, create_key_file, load_key_file, sign_jwt
from cryptoj.venues.simulated.server import SimConfig, SimulatorServer
from cryptoj.websocket_handler import WebSocketHandler

__all__ = ["make_key_file", "make_sim", "mock_exchange_service", "mock_market_data", "sim", "sim_jwt", "sim_key", "sim_live"]

SEED_PRODUCTS = ("BTC-USD", "ETH-USD")

TEST_RATE_LIMIT = 10_000


def make_key_file(path: Path, algorithm: str = "ES256") -> ApiKey:
    """Create a CDP-format key file at ``path`` (mode 0600) and return the key."""
    return create_key_file(path, algorithm=algorithm)


@pytest.fixture
async def make_sim(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[SimulatorServer]]]:
    started: list[SimulatorServer] = []
    counter = 0

    async def factory(**overrides: Any) -> SimulatorServer:
        nonlocal counter
        counter += 1
        key_path = tmp_path / f"sim-key-{counter}.json"
        if "api_key_files" not in overrides and "create_api_key" not in overrides:
            overrides["create_api_key"] = key_path
        overrides.setdefault("market_rate", 0.0)
        overrides.setdefault("private_rate_limit", TEST_RATE_LIMIT)
        overrides.setdefault("public_rate_limit", TEST_RATE_LIMIT)
        server = SimulatorServer(SimConfig(**overrides))
        started.append(server)
        await server.start()
        return server

    yield factory
    for server in started:
        await server.stop()


@pytest.fixture
async def sim(make_sim: Callable[..., Awaitable[SimulatorServer]]) -> SimulatorServer:
    """A fresh simulator per test: market primed, background flow off, an API key in tmp_path."""
    return await make_sim()


@pytest.fixture
async def sim_live(make_sim: Callable[..., Awaitable[SimulatorServer]]) -> SimulatorServer:
    """A fresh simulator with seeded background market flow (20 events/s)."""
    return await make_sim(market_rate=20.0)


@pytest.fixture
def sim_key(sim: SimulatorServer) -> ApiKey:
    assert sim.key_file is not None
    return load_key_file(sim.key_file)


@pytest.fixture
def sim_jwt(sim_key: ApiKey) -> Callable[..., str]:
    def make(method: str | None = None, path: str | None = None, **kwargs: Any) -> str:
        return sign_jwt(sim_key, now=time.time(), method=method, path=path, **kwargs)

    return make


@pytest.fixture
async def mock_exchange_service(make_sim: Callable[..., Awaitable[SimulatorServer]]) -> SimulatorServer:
    """The seed plan's exchange fixture: a real simulator (not a mock) with seeded background flow."""
    return await make_sim(market_rate=50.0, heartbeat_interval=0.2, products=list(SEED_PRODUCTS))


@pytest.fixture
async def mock_market_data(mock_exchange_service: SimulatorServer) -> AsyncIterator[MarketDataService]:
    """The seed plan's market data fixture: our MarketDataService over our WebSocketHandler, live on the simulator."""
    handler = WebSocketHandler(
        mock_exchange_service.ws_url,
        {"level2": list(SEED_PRODUCTS), "market_trades": list(SEED_PRODUCTS), "ticker": list(SEED_PRODUCTS)},
        heartbeat_interval=0.2,
        backoff_base=0.02,
        backoff_cap=0.2,
        rng=random.Random(7),
    )
    service = MarketDataService(MarketDataConfig(products=SEED_PRODUCTS, resync_timeout_s=3.0), parse=parse_envelope)
    handler.start()
    service.start(handler)
    try:
        yield service
    finally:
        await service.close()
        await handler.close()
