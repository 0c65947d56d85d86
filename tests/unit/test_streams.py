"""QueueStream: the async-iterator queue behind OrderManager.updates and PaperVenue.user_updates."""

from __future__ import annotations

import asyncio

import pytest

from cryptoj.streams import QueueStream

pytestmark = pytest.mark.unit


async def test_items_arrive_in_order_and_close_ends_after_the_queued_ones() -> None:
    detached: list[QueueStream[int]] = []
    stream: QueueStream[int] = QueueStream(detached.append)
    stream.push(1)
    stream.push(2)
    stream.close()
    stream.close()  # idempotent: the owner is told once
    stream.push(3)  # ignored once closed
    assert [item async for item in stream] == [1, 2]
    assert stream.closed and detached == [stream]


async def test_a_waiting_reader_wakes_on_push_and_on_close() -> None:
    stream: QueueStream[str] = QueueStream()
    reader = asyncio.create_task(anext(stream))
    await asyncio.sleep(0)  # the reader is now waiting on an empty queue
    assert not reader.done()
    stream.push("a")
    assert await asyncio.wait_for(reader, 10) == "a"
    ending = asyncio.create_task(anext(stream))
    await asyncio.sleep(0)
    stream.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(ending, 10)


async def test_bounded_stream_keeps_the_newest_and_starts_with_the_initial_items() -> None:
    async with QueueStream[int](maxsize=3, initial=[0]) as stream:
        for i in range(1, 6):
            stream.push(i)
        assert [await anext(stream) for _ in range(3)] == [3, 4, 5]
    assert stream.closed
