"""Fault switches for the simulator.

Each fault is a plain field of :class:`Faults`, set from CLI flags at start and
changed at run time through ``POST /sim/admin/faults``. The server consults it
at the few points where a fault can bite:

* ``ws_drop_after``       — close every WebSocket connection after it has been sent N messages.
* ``ws_skip_seq_every``   — every N-th message on a connection skips one ``sequence_num`` (a gap).
* ``ws_stall_seconds``    — hold every feed (no messages, no heartbeats) for D seconds from now.
* ``http_429_next``       — answer the next K REST requests 429 with rate-limit headers.
* ``http_5xx_next``       — answer the next K REST requests ``http_5xx_status`` (default 503).
* ``http_delay_seconds``  — delay every REST response by D seconds.
* ``drop_order_create_next`` — the next K ``POST /orders`` are executed, then the
  connection is closed without a response ("accept then drop").
* ``http_5xx_probability`` / ``ws_skip_seq_probability`` — random faults drawn from
  a generator seeded with the simulator's seed, so a run repeats exactly.

Counters count down as they fire. Everything runs on the event loop; no locks.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from cryptoj.errors import InvalidValue

__all__ = ["FAULT_FIELDS", "Faults"]


@dataclass(slots=True)
class Faults:
    """The current fault switches; ``clock`` is a monotonic seconds source (the loop's time)."""

    ws_drop_after: int | None = None
    ws_skip_seq_every: int | None = None
    ws_skip_seq_probability: float = 0.0
    ws_stall_until: float = 0.0
    http_429_next: int = 0
    http_5xx_next: int = 0
    http_5xx_status: int = 503
    http_5xx_probability: float = 0.0
    http_delay_seconds: float = 0.0
    drop_order_create_next: int = 0
    seed: int = 0
    clock: Callable[[], float] = field(default=lambda: 0.0, repr=False, compare=False)
    _rng: random.Random = field(init=False, repr=False, compare=False)
    fired: dict[str, int] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed ^ 0x5EED_FA17)
        self._validate()

    # -- configuration ----------------------------------------------------

    def _validate(self) -> None:
        for name in ("ws_drop_after", "ws_skip_seq_every"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise InvalidValue(f"faults.{name}", value, "must be a positive integer or null")
        for name in ("http_429_next", "http_5xx_next", "drop_order_create_next"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise InvalidValue(f"faults.{name}", value, "must be a non-negative integer")
        for name in ("ws_skip_seq_probability", "http_5xx_probability"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or not 0.0 <= value <= 1.0:
                raise InvalidValue(f"faults.{name}", value, "must be a probability in [0, 1]")
        if not isinstance(self.http_delay_seconds, int | float) or self.http_delay_seconds < 0:
            raise InvalidValue("faults.http_delay_seconds", self.http_delay_seconds, "must be >= 0 seconds")
        if not isinstance(self.http_5xx_status, int) or not 500 <= self.http_5xx_status <= 599:
            raise InvalidValue("faults.http_5xx_status", self.http_5xx_status, "must be a 5xx status code")

    def update(self, changes: Mapping[str, Any]) -> None:
        """Apply admin changes. ``ws_stall_seconds`` starts a stall from now; unknown keys are refused."""
        changes = dict(changes)
        stall = changes.pop("ws_stall_seconds", None)
        unknown = sorted(k for k in changes if k not in FAULT_FIELDS)
        if unknown:
            known = sorted((*FAULT_FIELDS, "ws_stall_seconds"))
            raise InvalidValue("faults", unknown, f"unknown fault switch(es); known: {known}")
        before = {name: getattr(self, name) for name in FAULT_FIELDS}
        for key, value in changes.items():
            setattr(self, key, value)
        try:
            self._validate()
            if stall is not None:
                if not isinstance(stall, int | float) or isinstance(stall, bool) or stall < 0:
                    raise InvalidValue("faults.ws_stall_seconds", stall, "must be >= 0 seconds")
                self.ws_stall_until = self.clock() + float(stall) if stall > 0 else 0.0
        except InvalidValue:
            for name, value in before.items():
                setattr(self, name, value)
            raise

    def clear(self) -> None:
        """Switch every fault off."""
        self.ws_drop_after = None
        self.ws_skip_seq_every = None
        self.ws_skip_seq_probability = 0.0
        self.ws_stall_until = 0.0
        self.http_429_next = 0
        self.http_5xx_next = 0
        self.http_5xx_status = 503
        self.http_5xx_probability = 0.0
        self.http_delay_seconds = 0.0
        self.drop_order_create_next = 0

    def snapshot(self) -> dict[str, Any]:
        out: dict[str, Any] = {name: getattr(self, name) for name in FAULT_FIELDS}
        out["ws_stall_remaining"] = self.stall_remaining()
        out["fired"] = dict(self.fired)
        return out

    def _fire(self, name: str) -> None:
        self.fired[name] = self.fired.get(name, 0) + 1

    # -- questions the server asks -----------------------------------------

    def stall_remaining(self) -> float:
        """Seconds left in a feed stall (0 when not stalled)."""
        return max(0.0, self.ws_stall_until - self.clock())

    def take_http_429(self) -> bool:
        if self.http_429_next > 0:
            self.http_429_next -= 1
            self._fire("http_429")
            return True
        return False

    def take_http_5xx(self) -> int | None:
        """The 5xx status to answer with now, or None."""
        if self.http_5xx_next > 0:
            self.http_5xx_next -= 1
            self._fire("http_5xx")
            return self.http_5xx_status
        if self.http_5xx_probability > 0 and self._rng.random() < self.http_5xx_probability:
            self._fire("http_5xx")
            return self.http_5xx_status
        return None

    def take_drop_order_create(self) -> bool:
        if self.drop_order_create_next > 0:
            self.drop_order_create_next -= 1
            self._fire("drop_order_create")
            return True
        return False

    def should_drop_ws(self, sent: int) -> bool:
        """True once a connection has sent ``ws_drop_after`` messages."""
        if self.ws_drop_after is not None and sent >= self.ws_drop_after:
            self._fire("ws_drop")
            return True
        return False

    def seq_skip(self, sent: int) -> int:
        """How many sequence numbers to skip before the message numbered ``sent`` (1-based) on a connection."""
        periodic = self.ws_skip_seq_every is not None and sent % self.ws_skip_seq_every == 0
        skip = 1 if periodic else 0
        if not periodic and self.ws_skip_seq_probability > 0 and self._rng.random() < self.ws_skip_seq_probability:
            skip = 1
        if skip:
            self._fire("ws_skip_seq")
        return skip


FAULT_FIELDS: frozenset[str] = frozenset(
    f.name for f in fields(Faults) if f.name not in ("seed", "clock", "_rng", "fired")
)
