"""Replay a recording (``cryptoj record`` format) as the simulator's market, instead of synthetic flow.

``cryptoj sim --replay FILE`` loads the recording with :meth:`ReplayFeed.load` and runs
:meth:`ReplayFeed.run`: the recorded ``l2_data`` messages of the simulator's products are
re-enacted on the exchange, paced by their receive times (divided by ``--speed``). A level of
the recorded book is one resting limit order of the replay maker account at that price with the
recorded size: a snapshot replaces all of them, an update cancels the order at that price and
places the new size. Everything the simulator publishes (``level2``, and ``ticker`` /
``market_trades`` / candles when orders match) then comes from the exchange as usual, so a
client sees the recorded book, and its own orders rest among and trade against the recorded
liquidity. When the recording ends the last book stays.

Only the book is replayed: recorded trades and tickers are not re-printed (a trade on the
simulator's tape is always a real match on its own book). Levels whose price or size does not
fit the product's increments or minimum size are skipped and counted in ``skipped_levels``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

from cryptoj.errors import ConfigError, DataError, MalformedMessage
from cryptoj.model.book import BookSide
from cryptoj.model.events import L2Snapshot, L2Update, LevelChange
from cryptoj.model.money import Side
from cryptoj.recorder import iter_recording
from cryptoj.venues.coinbase.protocol import parse_envelope

if TYPE_CHECKING:
    from cryptoj.venues.simulated.server import SimulatorServer

__all__ = ["ReplayFeed", "ReplayStep"]

log = logging.getLogger("cryptoj.sim")


@dataclass(frozen=True, slots=True)
class ReplayStep:
    """One recorded l2 message for one product: its receive time and the levels it sets."""

    ts_ns: int
    product_id: str
    snapshot: bool
    changes: tuple[LevelChange, ...]


class ReplayFeed:
    """Re-enacts recorded level-2 books on a simulator (see the module docstring)."""

    def __init__(self, server: SimulatorServer, steps: list[ReplayStep]) -> None:
        self.server = server
        self.steps = steps
        self.applied = 0
        self.skipped_levels = 0
        self.finished = asyncio.Event()
        self._orders: dict[tuple[str, Side, Decimal], str] = {}

    @classmethod
    def load(cls, path: Path, server: SimulatorServer) -> ReplayFeed:
        """Read ``path``; :class:`ConfigError` (key ``--replay``) when it cannot be replayed."""
        products = set(server.products)
        steps: list[ReplayStep] = []
        seen: set[str] = set()
        try:
            for ts_ns, payload in iter_recording(Path(path)):
                if isinstance(payload, int) or '"l2_data"' not in payload:
                    continue
                try:
                    envelope = parse_envelope(payload)
                except MalformedMessage:
                    continue  # a frame the live service would also have refused
                for event in envelope.events:
                    if isinstance(event, L2Snapshot | L2Update) and event.product_id in products:
                        seen.add(event.product_id)
                        steps.append(ReplayStep(ts_ns, event.product_id, isinstance(event, L2Snapshot), event.changes))
        except FileNotFoundError:
            raise ConfigError([("--replay", f"recording {path} does not exist")]) from None
        except (DataError, OSError) as exc:
            raise ConfigError([("--replay", f"cannot read recording {path}: {exc}")]) from None
        if not steps:
            raise ConfigError([("--replay", f"recording {path} has no level2 data for {', '.join(sorted(products))}")])
        first = {pid: next(s for s in steps if s.product_id == pid) for pid in seen}
        for pid, step in sorted(first.items()):
            if not step.snapshot:
                raise ConfigError([("--replay", f"recording {path}: the first level2 message of {pid} is not a snapshot")])
        log.info("replay loaded %d level2 messages for %s from %s", len(steps), ", ".join(sorted(seen)), path)
        return cls(server, steps)

    async def run(self) -> None:
        """Apply every step at its recorded pace (``speed`` times faster), then keep the last book."""
        speed = self.server.config.speed
        start_ts = self.steps[0].ts_ns
        started = time.monotonic()
        for step in self.steps:
            due = (step.ts_ns - start_ts) / 1e9 / speed
            wait = due - (time.monotonic() - started)
            if wait > 0:
                await asyncio.sleep(wait)
            self.apply(step)
            self.server.sync()
        self.finished.set()
        log.info("replay finished: %d level2 messages applied, %d levels skipped", self.applied, self.skipped_levels)

    def apply(self, step: ReplayStep) -> None:
        """Make the replay maker's orders of ``step.product_id`` match the recorded levels."""
        bridge = self.server.bridge
        pid = step.product_id
        if step.snapshot:
            for key in [k for k in self._orders if k[0] == pid]:
                bridge.agent_cancel(pid, self._orders.pop(key))
        # removals and changes first, then new sizes: the book never crosses on the way
        placements: dict[tuple[Side, Decimal], Decimal] = {}
        for book_side, price, size in step.changes:
            side = Side.BUY if book_side is BookSide.BID else Side.SELL
            order_id = self._orders.pop((pid, side, price), None)
            if order_id is not None:
                bridge.agent_cancel(pid, order_id)
            if size > 0:
                placements[(side, price)] = size  # a price repeated in one message: the last size counts
            else:
                placements.pop((side, price), None)
        for (side, price), size in placements.items():
            placed = bridge.agent_place_limit(pid, side, price, size)
            if placed is None:
                self.skipped_levels += 1
            else:
                self._orders[(pid, side, price)] = placed
        self.applied += 1
