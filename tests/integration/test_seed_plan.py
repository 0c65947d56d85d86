"""The seed test plan's names (``TestMarketData`` with ``mock_exchange_service`` / ``mock_market_data``),
backed by real components: our market data service over our websocket handler, against the simulator.

Later components add ``TestOrderExecution`` and ``TestSystemIntegration`` (``trading_system``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from decimal import Decimal

import aiohttp
import pytest

from cryptoj.market_data import MarketDataService
from cryptoj.model.events import MarketTrade
from cryptoj.venues.simulated.server import SimulatorServer

pytestmark = pytest.mark.integration

DEADLINE = 30.0


async def _until(predicate: Callable[[], bool]) -> None:
    async with asyncio.timeout(DEADLINE):
        while not predicate():
            await asyncio.sleep(0.01)


class TestMarketData:
    async def test_real_time_updates_build_books_and_tape(self, mock_market_data: MarketDataService) -> None:
        trades = mock_market_data.subscribe([MarketTrade], ["BTC-USD"])
        await _until(lambda: all(mock_market_data.book(p) is not None for p in ("BTC-USD", "ETH-USD")))
        async with asyncio.timeout(DEADLINE):
            trade = await anext(aiter(trades))
        assert trade.product_id == "BTC-USD" and trade.price > 0 and trade.size > 0
        for pid in ("BTC-USD", "ETH-USD"):
            book = mock_market_data.book(pid)
            assert book is not None
            bid, ask = book.best_bid(), book.best_ask()
            assert bid is not None and ask is not None and bid[0] < ask[0]
        trades.close()

    async def test_price_history_management(self, mock_market_data: MarketDataService) -> None:
        await _until(lambda: len(mock_market_data.price_history("BTC-USD")) >= 3)
        history = mock_market_data.price_history("BTC-USD")
        times = [t for t, _ in history]
        assert times == sorted(times)
        assert mock_market_data.last_price("BTC-USD") == history[-1][1]
        assert all(isinstance(p, Decimal) and p > 0 for _, p in history)
        assert len(history) <= mock_market_data.config.price_history_size

    async def test_error_recovery_after_a_dropped_connection(
        self, mock_exchange_service: SimulatorServer, mock_market_data: MarketDataService
    ) -> None:
        await _until(lambda: all(mock_market_data.book(p) is not None for p in ("BTC-USD", "ETH-USD")))
        before = mock_market_data.stats.books_ready
        base = mock_exchange_service.base_url
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{base}/sim/admin/faults", json={"ws_drop_after": 40}) as resp:
                assert resp.status == 200, await resp.text()
            # Every connection is dropped after 40 messages: each reconnect brings fresh snapshots.
            await _until(lambda: mock_market_data.stats.books_ready >= before + 2)
            async with http.post(f"{base}/sim/admin/faults/clear") as resp:
                assert resp.status == 200, await resp.text()
        await _until(lambda: all(mock_market_data.book(p) is not None for p in ("BTC-USD", "ETH-USD")))
        for pid in ("BTC-USD", "ETH-USD"):
            book = mock_market_data.book(pid)
            assert book is not None and not book.is_crossed()
