"""``sim`` mode and a backtest of one strategy on the same market make the same decisions.

1. A simulator session is recorded: a simulator with a hand-driven clock prints trades
   (its synthetic flow plus trending taker bursts) minute after minute; our
   ``WebSocketHandler`` receives the ``market_trades`` frames over loopback and the
   recorder's ``RecordingWriter`` writes them, exactly as ``cryptoj record`` does.
2. The recording is replayed as backtest data (``bars_from_recording``) and ``sma_cross``
   is backtested on it.
3. The same bars drive ``sma_cross`` in ``sim`` mode: the real engine (risk, order manager,
   REST orders, user stream, fills) against a second simulator.

Every order decision — on which bar, which side, what size — is the same in both runs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from cryptoj.backtest.data import bars_from_recording
from cryptoj.backtest.runner import Backtest, BacktestConfig
from cryptoj.model.candles import Candle
from cryptoj.model.events import MarketTrade
from cryptoj.model.money import Side
from cryptoj.recorder import RecordingWriter
from cryptoj.strategies.sma_cross import SmaCross
from cryptoj.venues.coinbase.protocol import parse_envelope
from cryptoj.venues.simulated.server import SimulatorServer
from cryptoj.websocket_handler import WebSocketHandler, WsConnected, WsFrame
from tests.engine_fixtures import feed_bar, sim_config, started, wait_for

pytestmark = pytest.mark.integration

MakeSim = Callable[..., Awaitable[SimulatorServer]]
D = Decimal
PARAMS = {"fast": 3, "slow": 8, "order_size": "0.01"}
MINUTES = 60


class Deciding(SmaCross):
    """sma_cross that notes each decision: (bar start, side, size).

    With ``only_fed`` on it takes only the bar the test is handing it (``feeding``): in sim mode the engine's
    market data also aggregates the strategy's own trades on the simulator into wall-clock 1m candles, and one
    closing mid-run (whenever the run straddles a minute boundary — often, on a loaded machine) would feed the
    SMAs a bar the backtest never saw. Those bars are kept in ``ignored``.
    """

    def on_start(self) -> None:
        super().on_start()
        self.decisions: list[tuple[datetime, str, Decimal]] = []
        self._bar: datetime | None = None
        self.only_fed = False
        self.feeding: Candle | None = None
        self.ignored: list[datetime] = []

    def on_bar(self, product: str, bar: Candle) -> None:
        if self.only_fed and bar is not self.feeding:
            self.ignored.append(bar.start)
            return
        self._bar = bar.start
        super().on_bar(product, bar)

    def buy(self, product: str, size: Decimal | None = None, **kw: Any) -> str:
        assert self._bar is not None and size is not None
        self.decisions.append((self._bar, "BUY", size))
        return super().buy(product, size, **kw)

    def sell(self, product: str, size: Decimal | None = None, **kw: Any) -> str:
        assert self._bar is not None and size is not None
        self.decisions.append((self._bar, "SELL", size))
        return super().sell(product, size, **kw)


async def record_session(make_sim: MakeSim, path: Path) -> None:
    t0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC).timestamp()
    clock = [t0]
    sim = await make_sim(market_rate=0.0, products=["BTC-USD"], clock=lambda: clock[0], seed=5)
    handler = WebSocketHandler(sim.ws_url, {"market_trades": ["BTC-USD"]}, heartbeat_interval=1.0, backoff_base=0.02)
    latest = [0.0]
    subscribed = asyncio.Event()
    async with RecordingWriter(path) as writer, handler:

        async def pump() -> None:
            async for item in handler:
                if isinstance(item, WsConnected):
                    await writer.write_connected(item.connection_id, 0)
                elif isinstance(item, WsFrame):
                    await writer.write_frame(item.data, item.recv_ns)
                    for event in parse_envelope(item.data).events:
                        if isinstance(event, MarketTrade):
                            subscribed.set()
                            latest[0] = max(latest[0], event.time.timestamp())

        task = asyncio.ensure_future(pump())
        try:
            sim.admin.trade("BTC-USD", Side.BUY, D("0.01"))  # one trade so the subscription snapshot is not empty
            await asyncio.wait_for(subscribed.wait(), 30)
            # minute after minute: some synthetic flow, and taker bursts that trend up, then down, then up
            for minute in range(MINUTES):
                phase = (minute // 12) % 2
                for k in range(4):
                    clock[0] = t0 + 60 * (minute + 1) + 10 * k + 1
                    sim.admin.step(3)
                    sim.admin.trade("BTC-USD", Side.BUY if phase == 0 else Side.SELL, D("0.05"))
                # the minute's trades have reached the recording before the clock moves on
                await wait_for(lambda: latest[0] >= clock[0] - 1, f"minute {minute} recorded")
            clock[0] = t0 + 60 * (MINUTES + 2)
            sim.admin.trade("BTC-USD", Side.BUY, D("0.01"))  # a sentinel: everything before it has arrived once it has
            await wait_for(lambda: latest[0] >= clock[0], "the sentinel trade was recorded")
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_sim_mode_and_backtest_make_the_same_decisions(make_sim: MakeSim, sim: SimulatorServer, tmp_path: Path) -> None:
    recording = tmp_path / "session.jsonl.gz"
    await record_session(make_sim, recording)
    series = bars_from_recording(recording, "BTC-USD")
    assert len(series) >= MINUTES  # a bar for every driven minute (plus the subscription minute)

    tested = Deciding(PARAMS, products=["BTC-USD"])
    result = Backtest(tested, series, BacktestConfig(balances={"USD": D(100_000)})).run()
    assert len(tested.decisions) >= 3 and {s for _, s, _ in tested.decisions} == {"BUY", "SELL"}
    assert len(result.fills) == len(tested.decisions)

    live = Deciding(PARAMS, products=["BTC-USD"])
    runtime = await started(sim, sim_config(sim, tmp_path, products=["BTC-USD"]), [live])
    engine = runtime.engine  # type: ignore[attr-defined]
    live.only_fed = True
    try:
        for i in range(len(series)):
            live.feeding = series.candle(i)
            feed_bar(runtime, "BTC-USD", live.feeding)
            # like the backtest's next-bar fill: the order is done, and the strategy has been told, before the next bar
            await wait_for(lambda: not engine.order_manager.open_orders() and not engine._sends, "orders settled")
            await wait_for(lambda: live._state["BTC-USD"].pending is None, "the strategy saw its order end", timeout=10)
    finally:
        await runtime.close()
    assert live.decisions == tested.decisions
    fed = {series.candle(i).start for i in range(len(series))}
    assert not fed & set(live.ignored)  # only the engine's own wall-clock bars were left out
