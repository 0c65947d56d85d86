"""Every fault switch of the simulator, over 127.0.0.1, as ``faults.py`` documents it.

Plain aiohttp clients (not our own client), so these pin what the wire shows. What other test
files already cover is not repeated here:

* ``test_coinbase_rest_sim.py`` — our REST client under ``http_429_next`` storms, ``http_5xx_next``
  retries, ``http_delay_seconds`` timeouts and ``drop_order_create_next`` (accept then drop);
* ``test_market_data_sim.py`` — our market data recovering from ``ws_drop_after``,
  ``ws_skip_seq_every`` and ``ws_stall_seconds``.

Here: the exact wire behaviour of each WebSocket fault (how many frames, which sequence numbers,
what a stall holds back), the seeded random faults repeating exactly for a seed, the countdown
switches firing exactly K times with the configured status, switches given at start (the CLI's
path), and the admin API refusing bad switches without changing anything.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

import aiohttp
import pytest

from cryptoj.errors import InvalidValue
from cryptoj.model.money import Side
from cryptoj.venues.simulated.faults import FAULT_FIELDS, Faults
from cryptoj.venues.simulated.server import API, SimConfig, SimulatorServer

pytestmark = pytest.mark.integration

MakeSim = Callable[..., Awaitable[SimulatorServer]]
DEADLINE = 30.0
FAST_HEARTBEAT = 0.02
PUBLIC = f"{API}/market/products"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def admin_faults(http: aiohttp.ClientSession, sim: SimulatorServer, body: Any = None) -> tuple[int, dict[str, Any]]:
    """POST the switches (or GET the state when ``body`` is None); returns (status, json)."""
    url = f"{sim.base_url}/sim/admin/faults"
    if body is None:
        async with http.get(url) as resp:
            return resp.status, await resp.json()
    async with http.post(url, json=body) as resp:
        return resp.status, await resp.json()


async def subscribe(ws: aiohttp.ClientWebSocketResponse, channel: str, products: list[str] | None = None) -> None:
    await ws.send_json({"type": "subscribe", "channel": channel, "product_ids": products or []})


async def read_frames(ws: aiohttp.ClientWebSocketResponse, n: int) -> list[dict[str, Any]]:
    """Exactly ``n`` frames (fails on a closed connection or after a generous deadline)."""
    frames: list[dict[str, Any]] = []
    async with asyncio.timeout(DEADLINE):
        while len(frames) < n:
            msg = await ws.receive()
            assert msg.type == aiohttp.WSMsgType.TEXT, f"connection ended after {len(frames)} frames ({msg.type})"
            frames.append(msg.json())
    return frames


async def read_until_closed(ws: aiohttp.ClientWebSocketResponse) -> tuple[list[dict[str, Any]], aiohttp.WSMsgType]:
    """Every frame until the connection ends; returns the frames and how it ended."""
    frames: list[dict[str, Any]] = []
    async with asyncio.timeout(DEADLINE):
        while True:
            msg = await ws.receive()
            if msg.type != aiohttp.WSMsgType.TEXT:
                return frames, msg.type
            frames.append(msg.json())


def gap_positions(frames: list[dict[str, Any]]) -> list[int]:
    """1-based positions of frames whose ``sequence_num`` skipped a number."""
    seqs = [f["sequence_num"] for f in frames]
    assert seqs[0] in (0, 1), seqs[:3]
    out = [1] if seqs[0] == 1 else []
    for i in range(1, len(seqs)):
        step = seqs[i] - seqs[i - 1]
        assert step in (1, 2), f"sequence went {seqs[i - 1]} -> {seqs[i]}"
        if step == 2:
            out.append(i + 1)
    return out


def frame_time(frame: dict[str, Any]) -> float:
    """The frame's ``timestamp`` (set by the simulator when it sends the frame) as epoch seconds."""
    stamp: str = frame["timestamp"]
    return datetime.fromisoformat(stamp[:26] + "+00:00").timestamp()


# --- WebSocket faults -----------------------------------------------------------------------------


async def test_ws_drop_after_n_messages_from_start_config(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    """Given at start (as ``--fault-ws-drop-after 4`` does): every connection gets exactly 4 frames, then is cut."""
    # heartbeats slower than our two subscribes, so the cut never races the second one
    sim = await make_sim(heartbeat_interval=0.1, faults={"ws_drop_after": 4})
    status, state = await admin_faults(http, sim)
    assert status == 200 and state["ws_drop_after"] == 4
    for _ in range(2):  # per connection, not once for the server
        async with http.ws_connect(sim.ws_url) as ws:
            await subscribe(ws, "heartbeats")
            await subscribe(ws, "level2", ["BTC-USD"])
            frames, ended = await read_until_closed(ws)
        assert len(frames) == 4, [f["channel"] for f in frames]
        assert ended in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSE)
        assert [f["sequence_num"] for f in frames] == [0, 1, 2, 3]
    _, state = await admin_faults(http, sim)
    assert state["fired"]["ws_drop"] == 2


async def test_ws_skip_seq_every_n_skips_one_number_on_every_nth_message(
    make_sim: MakeSim, http: aiohttp.ClientSession
) -> None:
    sim = await make_sim(heartbeat_interval=FAST_HEARTBEAT)
    status, _ = await admin_faults(http, sim, {"ws_skip_seq_every": 4})
    assert status == 200
    async with http.ws_connect(sim.ws_url) as ws:
        await subscribe(ws, "heartbeats")
        frames = await read_frames(ws, 24)
    # message k (1-based) carries (k - 1) + floor(k / 4): one number skipped before every 4th message
    assert [f["sequence_num"] for f in frames] == [(k - 1) + k // 4 for k in range(1, 25)]
    assert gap_positions(frames) == [4, 8, 12, 16, 20, 24]


async def _random_skip_pattern(make_sim: MakeSim, http: aiohttp.ClientSession, seed: int, n: int = 80) -> list[int]:
    sim = await make_sim(seed=seed, heartbeat_interval=0.01, faults={"ws_skip_seq_probability": 0.3})
    async with http.ws_connect(sim.ws_url) as ws:
        await subscribe(ws, "heartbeats")
        frames = await read_frames(ws, n)
    gaps = gap_positions(frames)
    _, state = await admin_faults(http, sim)
    assert state["fired"].get("ws_skip_seq", 0) >= len(gaps)  # frames sent after our last read may have fired too
    return gaps


async def test_ws_skip_seq_probability_repeats_exactly_for_a_seed(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    first = await _random_skip_pattern(make_sim, http, seed=5)
    again = await _random_skip_pattern(make_sim, http, seed=5)
    other = await _random_skip_pattern(make_sim, http, seed=6)
    assert first == again, "the same seed must skip the same sequence numbers"
    assert first != other, "another seed gives another pattern"
    assert 8 <= len(first) <= 40, f"{len(first)} gaps in 80 messages at p=0.3"


async def test_ws_stall_holds_every_frame_for_its_duration_then_delivers_all(
    make_sim: MakeSim, http: aiohttp.ClientSession
) -> None:
    """During a stall nothing is sent (no data, no heartbeats); what was queued is delivered afterwards, in order."""
    stall = 1.0
    sim = await make_sim(heartbeat_interval=0.05)
    async with http.ws_connect(sim.ws_url) as ws:
        await subscribe(ws, "heartbeats")
        await subscribe(ws, "level2", ["BTC-USD"])
        before = await read_frames(ws, 6)  # snapshot, ack, heartbeats: the feed is live
        set_at = time.time()
        status, state = await admin_faults(http, sim, {"ws_stall_seconds": stall})
        set_done = time.time()
        assert status == 200 and 0 < state["ws_stall_remaining"] <= stall
        sim.admin.step(10)  # market changes during the stall: queued, not sent
        after = await read_frames(ws, 15)
    frames = before + after
    seqs = [f["sequence_num"] for f in frames]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "a stall holds frames back; it never loses one"
    sent_in_stall = [f for f in frames if set_done < frame_time(f) < set_at + stall - 0.001]
    assert sent_in_stall == [], [(f["channel"], f["timestamp"]) for f in sent_in_stall]
    updates = [f for f in after if f["channel"] == "l2_data" and f["events"][0]["type"] == "update"]
    assert updates, "the market's changes during the stall were delivered after it"
    assert all(frame_time(f) >= set_at + stall - 0.001 for f in updates)
    assert any(f["channel"] == "heartbeats" and frame_time(f) >= set_at + stall for f in after), "heartbeats resume"
    _, state = await admin_faults(http, sim)
    assert state["ws_stall_remaining"] == 0


async def test_ws_stall_given_at_start_holds_the_first_frames(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    """``--fault-ws-stall D``: feeds are held for D seconds from the simulator's start."""
    stall = 0.6
    started = time.time()
    sim = await make_sim(heartbeat_interval=0.05, faults={"ws_stall_seconds": stall})
    async with http.ws_connect(sim.ws_url) as ws:
        await subscribe(ws, "heartbeats")
        first = (await read_frames(ws, 1))[0]
    assert first["channel"] == "subscriptions"
    assert frame_time(first) >= started + stall - 0.001


async def test_stalled_slow_consumer_is_cut_when_its_queue_overflows(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    """A connection whose outgoing queue passes ``max_ws_queue`` is dropped (here: frames piling up in a stall)."""
    sim = await make_sim(max_ws_queue=5)
    async with http.ws_connect(sim.ws_url) as ws:
        await subscribe(ws, "level2", ["BTC-USD"])
        await read_frames(ws, 2)  # snapshot, ack
        await admin_faults(http, sim, {"ws_stall_seconds": 30})
        for _ in range(10):  # ten trades on BTC-USD: at least ten l2 updates queued behind the stall
            sim.admin.trade("BTC-USD", Side.BUY, Decimal("0.001"))
        frames, ended = await read_until_closed(ws)
    assert frames == []  # nothing was sent during the stall; the queue overflowed and the connection was cut
    assert ended in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSE)


# --- REST faults ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("switches", "expected"),
    [
        ({"http_429_next": 2}, [429, 429, 200, 200]),
        ({"http_5xx_next": 3, "http_5xx_status": 504}, [504, 504, 504, 200]),
        ({"http_5xx_next": 1}, [503, 200, 200, 200]),  # the default status
        ({"http_429_next": 1, "http_5xx_next": 1}, [429, 503, 200, 200]),  # 429 is answered first
    ],
)
async def test_countdown_switches_fire_exactly_k_times(
    make_sim: MakeSim, http: aiohttp.ClientSession, switches: dict[str, int], expected: list[int]
) -> None:
    sim = await make_sim()
    assert (await admin_faults(http, sim, switches))[0] == 200
    statuses = []
    for _ in expected:
        async with http.get(sim.base_url + PUBLIC) as resp:
            statuses.append(resp.status)
            body = await resp.json()
            assert "x-ratelimit-limit" in resp.headers and "x-ratelimit-reset" in resp.headers
            if resp.status == 429:
                assert resp.headers["x-ratelimit-remaining"] == "0" and body["error"] == "RATE_LIMIT_EXCEEDED"
            elif resp.status >= 500:
                assert body["message"] == "simulated upstream failure" and set(body) >= {"error", "code", "details"}
            else:
                assert body["products"]
    assert statuses == expected
    _, state = await admin_faults(http, sim)
    assert state["http_429_next"] == 0 and state["http_5xx_next"] == 0
    assert state["fired"].get("http_429", 0) == expected.count(429)
    assert state["fired"].get("http_5xx", 0) == sum(1 for s in expected if s >= 500)


async def _random_5xx_pattern(make_sim: MakeSim, http: aiohttp.ClientSession, seed: int, n: int = 60) -> list[int]:
    sim = await make_sim(seed=seed, faults={"http_5xx_probability": 0.25, "http_5xx_status": 502})
    statuses = []
    for _ in range(n):
        async with http.get(sim.base_url + PUBLIC) as resp:
            statuses.append(resp.status)
    _, state = await admin_faults(http, sim)
    assert state["fired"].get("http_5xx", 0) == statuses.count(502)
    assert all(s in (200, 502) for s in statuses)
    return statuses


async def test_http_5xx_probability_repeats_exactly_for_a_seed(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    first = await _random_5xx_pattern(make_sim, http, seed=11)
    again = await _random_5xx_pattern(make_sim, http, seed=11)
    other = await _random_5xx_pattern(make_sim, http, seed=12)
    assert first == again, "the same seed must fail the same requests"
    assert first != other, "another seed gives another pattern"
    assert 5 <= first.count(502) <= 30, f"{first.count(502)} of 60 requests failed at p=0.25"


async def test_probabilities_of_zero_and_one(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    sim = await make_sim(faults={"http_5xx_probability": 1.0})
    for _ in range(3):
        async with http.get(sim.base_url + PUBLIC) as resp:
            assert resp.status == 503
    async with http.get(f"{sim.base_url}/sim/admin/status") as resp:
        assert resp.status == 200  # never faulted
    assert (await admin_faults(http, sim, {"http_5xx_probability": 0}))[0] == 200
    async with http.get(sim.base_url + PUBLIC) as resp:
        assert resp.status == 200


# --- switching faults through the admin API ------------------------------------------------------------


@pytest.mark.parametrize(
    ("switches", "named"),
    [
        ({"ws_drop_after": 0}, "faults.ws_drop_after"),
        ({"ws_skip_seq_every": "3"}, "faults.ws_skip_seq_every"),
        ({"ws_skip_seq_every": True}, "faults.ws_skip_seq_every"),
        ({"http_429_next": -1}, "faults.http_429_next"),
        ({"drop_order_create_next": 1.5}, "faults.drop_order_create_next"),
        ({"ws_skip_seq_probability": 1.5}, "faults.ws_skip_seq_probability"),
        ({"http_5xx_probability": "high"}, "faults.http_5xx_probability"),
        ({"http_delay_seconds": -0.1}, "faults.http_delay_seconds"),
        ({"http_5xx_status": 404}, "faults.http_5xx_status"),
        ({"ws_stall_seconds": -1}, "faults.ws_stall_seconds"),
        ({"ws_stall_seconds": True}, "faults.ws_stall_seconds"),
        ({"http_429_next": 2, "ws_stall_seconds": 5, "http_5xx_status": 200}, "faults.http_5xx_status"),
        ({"http_500_next": 1, "http_429_next": 2}, "unknown fault switch"),
    ],
)
async def test_admin_refuses_bad_switches_naming_them_and_changes_nothing(
    sim: SimulatorServer, http: aiohttp.ClientSession, switches: dict[str, Any], named: str
) -> None:
    _, before = await admin_faults(http, sim)
    status, body = await admin_faults(http, sim, switches)
    assert status == 400
    assert named in body["message"]
    if named == "unknown fault switch":
        assert "http_500_next" in body["message"] and "ws_stall_seconds" in body["message"]  # the known ones are listed
    _, after = await admin_faults(http, sim)
    assert after == before, "a refused update must leave every switch as it was"


async def test_admin_body_must_be_an_object_and_clear_switches_everything_off(
    sim: SimulatorServer, http: aiohttp.ClientSession
) -> None:
    status, body = await admin_faults(http, sim, [1, 2])
    assert status == 400 and "faults" in body["message"]
    status, state = await admin_faults(http, sim, {
        "ws_drop_after": 9, "ws_skip_seq_every": 3, "ws_skip_seq_probability": 0.5, "ws_stall_seconds": 30,
        "http_429_next": 4, "http_5xx_next": 4, "http_5xx_status": 500, "http_5xx_probability": 0.5,
        "http_delay_seconds": 0.5, "drop_order_create_next": 2,
    })
    assert status == 200 and state["ws_stall_remaining"] > 0 and state["http_5xx_status"] == 500
    async with http.post(f"{sim.base_url}/sim/admin/faults/clear") as resp:
        assert resp.status == 200
        cleared = await resp.json()
    assert {k: cleared[k] for k in FAULT_FIELDS} == {k: getattr(Faults(), k) for k in FAULT_FIELDS}
    assert cleared["ws_stall_remaining"] == 0
    async with http.get(sim.base_url + PUBLIC) as resp:
        assert resp.status == 200
    # the in-process admin does the same
    sim.admin.set_faults(http_429_next=1)
    sim.admin.clear_faults()
    assert sim.faults.http_429_next == 0


def test_bad_switches_at_start_name_the_key() -> None:
    with pytest.raises(InvalidValue, match=r"faults\.ws_drop_after"):
        SimulatorServer(SimConfig(faults={"ws_drop_after": -3}, market_rate=0))
    with pytest.raises(InvalidValue, match="unknown fault switch"):
        SimulatorServer(SimConfig(faults={"drop_everything": True}, market_rate=0))


@pytest.mark.parametrize("release", ["zero", "clear"])
async def test_ending_a_stall_early_releases_the_held_frames(
    make_sim: MakeSim, http: aiohttp.ClientSession, release: str
) -> None:
    """``ws_stall_seconds: 0`` (or clearing the faults) ends a stall now, not when it would have ended.

    (The simulator's writer used to sleep for the whole stall it saw, so held frames stayed held.)
    """
    sim = await make_sim()
    async with http.ws_connect(sim.ws_url) as ws:
        await subscribe(ws, "level2", ["BTC-USD"])
        await read_frames(ws, 2)  # snapshot, ack
        await admin_faults(http, sim, {"ws_stall_seconds": 600})
        sim.admin.trade("BTC-USD", Side.BUY, Decimal("0.001"))  # an update, held by the stall
        if release == "zero":
            status, state = await admin_faults(http, sim, {"ws_stall_seconds": 0})
            assert status == 200
        else:
            async with http.post(f"{sim.base_url}/sim/admin/faults/clear") as resp:
                state = await resp.json()
        assert state["ws_stall_remaining"] == 0
        held = await read_frames(ws, 1)  # well before the 600 s stall would have ended (the test timeout is 120 s)
    assert held[0]["channel"] == "l2_data" and held[0]["events"][0]["type"] == "update"
