"""One small async-iterator queue shared by the services that hand out update streams.

``QueueStream`` is what :meth:`OrderManager.updates` and :meth:`PaperVenue.user_updates`
return: items are pushed synchronously by the owner and read with ``async for``; closing it
ends the iteration once the queued items are read and tells the owner (``on_close``).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

__all__ = ["QueueStream"]

T = TypeVar("T")


class QueueStream(Generic[T]):
    """An async iterator over pushed items; unbounded, or keeping the newest ``maxsize`` (the oldest dropped)."""

    def __init__(
        self, on_close: Callable[[QueueStream[T]], None] | None = None, *, maxsize: int | None = None, initial: Iterable[T] = ()
    ) -> None:
        self._items: deque[T] = deque(initial, maxlen=maxsize)
        self._ready = asyncio.Event()
        self._closed = False
        self._on_close = on_close

    @property
    def closed(self) -> bool:
        return self._closed

    def push(self, item: T) -> None:
        """Queue ``item`` (ignored once closed)."""
        if not self._closed:
            self._items.append(item)
            self._ready.set()

    def __aiter__(self) -> QueueStream[T]:
        return self

    async def __anext__(self) -> T:
        while True:
            if self._items:
                return self._items.popleft()
            if self._closed:
                raise StopAsyncIteration
            self._ready.clear()
            await self._ready.wait()

    def close(self) -> None:
        """End the stream (queued items are still delivered) and detach it from its owner. Idempotent."""
        if not self._closed:
            self._closed = True
            self._ready.set()
            if self._on_close is not None:
                self._on_close(self)

    async def __aenter__(self) -> QueueStream[T]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
