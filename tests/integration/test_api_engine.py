"""The operator API of a real running engine (Runtime in sim mode) against the simulator, over real sockets.

Everything is real: the simulator on 127.0.0.1, build_runtime's engine with the demo
strategy, the order manager / risk engine / kill switch, the API served by uvicorn,
an HTTP client, and a local aiohttp webhook receiver for the alert.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import httpx
import pytest

from tests.api_engine_support import MakeSim, operator_stack, until, webhook_receiver
from tests.engine_fixtures import wait_for

pytestmark = pytest.mark.integration


def _metric(text: str, name: str, labels: str = "") -> float:
    pattern = re.escape(name) + (re.escape("{" + labels + "}") if labels else "") + r" ([0-9.e+\-]+|NaN)\n"
    m = re.search(pattern, text)
    assert m, f"{name}{{{labels}}} not in /metrics"
    return float(m.group(1))


async def test_engine_api_end_to_end_kill_confirmed_and_one_alert(make_sim: MakeSim, tmp_path: Path) -> None:
    async with webhook_receiver() as receiver, operator_stack(make_sim, tmp_path, webhook=receiver.url) as st:
        token_file = tmp_path / "api_token"
        assert token_file.stat().st_mode & 0o777 == 0o600
        async with httpx.AsyncClient(base_url=st.api.url, timeout=30) as c:
            assert (await c.get("/api/status")).status_code == 401
            assert (await c.post("/api/kill", headers={"Authorization": "Bearer x" * 3})).status_code == 401
            status = (await c.get("/api/status", headers=st.auth)).json()
            assert status["mode"] == "sim" and status["trading_state"] == "ACTIVE"
            assert status["strategies"] == ["book_reversion"]
            assert {f["product_id"] for f in status["feeds"]} == {"BTC-USD", "ETH-USD"}
            assert status["reconciliation"]["ok"] is True

            # the demo strategy trades on the live synthetic market: fills, positions, equity points appear
            async def traded() -> bool:
                fills = (await c.get("/api/fills", headers=st.auth)).json()
                return len(fills) >= 2

            await until(traded, "the demo strategy's fills in /api/fills")
            await until(lambda: _len(c, "/api/pnl", st.auth, 3), "three equity points")

            # one resting order: cancel it through the API; the simulator agrees
            coid = st.rest_far_below()
            await until(lambda: _has_open(c, st.auth, coid), f"{coid} open in /api/orders")
            r = await c.post(f"/api/orders/{coid}/cancel", headers=st.auth)
            assert r.status_code == 200 and r.json()["status"] == "CANCELLED"
            assert all(o.client_order_id != coid for o in st.sim_open_orders())
            assert (await c.post("/api/orders/nope-1/cancel", headers=st.auth)).status_code == 404

            # more resting orders, then the kill switch through the API
            resting = [st.rest_far_below("BTC-USD"), st.rest_far_below("ETH-USD", size="0.01")]
            for oid in resting:
                await until(lambda oid=oid: _has_open(c, st.auth, oid), f"{oid} open")
            kill = await c.post("/api/kill", json={"reason": "api e2e test"}, headers=st.auth)
            assert kill.status_code == 200
            body = kill.json()
            assert body["trigger"] == "MANUAL" and body["confirmed"] is True and body["open_after"] == []
            assert body["trading_state"] == "HALTED"
            assert set(resting) <= set(body["cancelled"])
            assert st.sim_open_orders() == []  # the simulator confirms: nothing rests
            assert (await c.get("/api/status", headers=st.auth)).json()["trading_state"] == "HALTED"
            assert (await c.get("/api/orders?state=open", headers=st.auth)).json() == []

            # exactly one alert for the kill, with the trigger and the outcome
            await wait_for(lambda: any(b["kind"] == "kill" for b in receiver.bodies), "the kill alert")
            await st.api.alerts.flush(10)
            kills = [b for b in receiver.bodies if b["kind"].startswith("kill")]
            assert len(kills) == 1, receiver.bodies
            assert not any(b["kind"] == "trading_state" for b in receiver.bodies)  # the kill's HALTED is not alerted twice
            alert = kills[0]
            assert alert["detail"]["trigger"] == "MANUAL" and alert["detail"]["outcome"] == "confirmed"
            assert alert["detail"]["reason"] == "api e2e test"
            assert "no open orders" in alert["message"] and alert["severity"] == "critical"

            events = (await c.get("/api/events?kind=emergency.report", headers=st.auth)).json()
            assert events and events[-1]["payload"]["confirmed"] is True

            metrics = (await c.get("/metrics")).text
            assert _metric(metrics, "cryptoj_trading_state", 'state="HALTED"') == 1.0
            assert _metric(metrics, "cryptoj_ws_messages_total", 'channel="level2"') > 0
            assert _metric(metrics, "cryptoj_order_roundtrip_seconds_count") >= 3
            assert 0 < _metric(metrics, "cryptoj_order_roundtrip_seconds_sum") < 60
            assert _metric(metrics, "cryptoj_equity", 'currency="USD"') > 9000
            assert _metric(metrics, "cryptoj_kills_total", 'trigger="MANUAL"') == 1
            assert _metric(metrics, "cryptoj_orders", 'status="CANCELLED"') >= 3
            assert _metric(metrics, "cryptoj_rate_limit_headroom", 'limiter="private"') > 0
            assert 0 <= _metric(metrics, "cryptoj_book_staleness_seconds", 'product="BTC-USD"') < 30
            for series in ("cryptoj_ws_reconnects_total", "cryptoj_book_resyncs_total", "cryptoj_pnl_realised",
                           "cryptoj_pnl_unrealised", "cryptoj_risk_rejections", "cryptoj_ws_messages_per_second"):
                assert series in metrics

            health = await c.get("/healthz")
            assert health.json()["components"]["feeds"]["status"] in ("healthy", "degraded")
            assert st.token not in health.text and st.token not in metrics

            # resume: health checks + reconciliation, then ACTIVE again
            resumed = (await c.post("/api/resume", json={"reason": "e2e done"}, headers=st.auth)).json()
            assert resumed["ok"] is True, resumed
            assert resumed["trading_state"] == "ACTIVE"
            await wait_for(lambda: any(b["kind"] == "resumed" for b in receiver.bodies), "the resume alert")


async def test_engine_sse_stream_pushes_order_updates(make_sim: MakeSim, tmp_path: Path) -> None:
    async with operator_stack(make_sim, tmp_path, market_rate=0.0) as st, \
            httpx.AsyncClient(base_url=st.api.url, timeout=30) as c:
        assert (await c.get("/api/stream")).status_code == 401
        got: list[dict[str, object]] = []

        async def read() -> None:
            async with c.stream("GET", "/api/stream", headers=st.auth) as resp:
                assert resp.status_code == 200
                assert resp.headers["content-type"].startswith("text/event-stream")
                event = None
                async for line in resp.aiter_lines():
                    if line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: ") and event == "order":
                        got.append(json.loads(line[6:]))
                        if got[-1]["data"]["status"] in ("SUBMITTED", "OPEN"):  # type: ignore[index]
                            return

        reader = asyncio.ensure_future(read())
        await wait_for(lambda: st.api.view.hub.subscribers == 1 or reader.done(), "the SSE subscriber")
        coid = st.rest_far_below()
        await asyncio.wait_for(reader, 30)
        assert got[-1]["data"]["client_order_id"] == coid  # type: ignore[index]
        assert got[-1]["kind"] == "order"


async def _len(c: httpx.AsyncClient, path: str, auth: dict[str, str], n: int) -> bool:
    return len((await c.get(path, headers=auth)).json()) >= n


async def _has_open(c: httpx.AsyncClient, auth: dict[str, str], coid: str) -> bool:
    return any(o["client_order_id"] == coid for o in (await c.get("/api/orders?state=open", headers=auth)).json())


async def test_operator_api_helper_respects_api_enabled(make_sim: MakeSim, tmp_path: Path) -> None:
    from cryptoj.api.engine_view import operator_api
    from cryptoj.config import ApiConfig

    async with operator_stack(make_sim, tmp_path, market_rate=0.0) as st:
        off = st.runtime.config.model_copy(update={"api": ApiConfig(enabled=False)})
        async with operator_api(st.runtime, off) as none:
            assert none is None
        on = st.runtime.config.model_copy(update={"api": ApiConfig(port=0)})
        async with operator_api(st.runtime, on) as served, httpx.AsyncClient(base_url=served.url) as c:  # type: ignore[union-attr]
            assert (await c.get("/api/status", headers=st.auth)).json()["mode"] == "sim"


async def test_recent_orders_come_from_memory_and_the_oldest_finished_are_forgotten(
    make_sim: MakeSim, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cryptoj.api import engine_view

    monkeypatch.setattr(engine_view, "MAX_REMEMBERED", 2)
    async with operator_stack(make_sim, tmp_path, market_rate=0.0) as st, \
            httpx.AsyncClient(base_url=st.api.url, timeout=30) as c:
        ids = []
        for _ in range(3):
            coid = st.rest_far_below()
            await until(lambda coid=coid: _has_open(c, st.auth, coid), f"{coid} open")
            assert (await c.post(f"/api/orders/{coid}/cancel", headers=st.auth)).json()["status"] == "CANCELLED"
            ids.append(coid)
        await until(lambda: len(st.api.view._recent) <= 2, "the oldest finished order forgotten")
        recent = [o["client_order_id"] for o in (await c.get("/api/orders?state=recent", headers=st.auth)).json()]
        assert recent == [ids[2], ids[1]]  # newest first; the first one is still in storage, not in memory
        assert await st.runtime.storage.load_order(ids[0]) is not None


async def test_kill_alerts_go_out_without_the_operator_api(make_sim: MakeSim, tmp_path: Path) -> None:
    """The runtime owns its alert sink ([alerts]): a kill alerts even when no API is served."""
    from decimal import Decimal

    from cryptoj.config import AlertsConfig
    from cryptoj.demo import BookReversion
    from cryptoj.emergency_manager import Trigger
    from tests.engine_fixtures import sim_config, started

    sim = await make_sim(market_rate=0.0, seed=3, balances={"USD": Decimal(10000)})
    async with webhook_receiver() as receiver:
        config = sim_config(sim, tmp_path, alerts=AlertsConfig(webhook_urls=[receiver.url], backoff_seconds=0.05))
        runtime = await started(sim, config, [BookReversion({}, products=list(config.products))])
        try:
            assert runtime.alerts is not None and runtime.emergency.alert is runtime.alerts
            report = await runtime.emergency.trigger(Trigger.MANUAL, "no api")
            assert report.confirmed
            await wait_for(lambda: any(b["kind"] == "kill" for b in receiver.bodies), "the kill alert")
        finally:
            await runtime.close()
        kills = [b for b in receiver.bodies if b["kind"] == "kill"]
        assert len(kills) == 1 and kills[0]["detail"]["trigger"] == "MANUAL" and kills[0]["detail"]["outcome"]
        assert runtime.alerts.closed  # closed with the runtime


async def test_build_runtime_alert_hook_receives_the_kill(make_sim: MakeSim, tmp_path: Path) -> None:
    from decimal import Decimal

    from cryptoj.demo import BookReversion
    from cryptoj.emergency_manager import Alert, Trigger
    from cryptoj.trading_core import build_runtime
    from tests.engine_fixtures import sim_config

    sim = await make_sim(market_rate=0.0, seed=3, balances={"USD": Decimal(10000)})
    seen: list[Alert] = []
    config = sim_config(sim, tmp_path)
    runtime = await build_runtime(config, strategies=[BookReversion({}, products=list(config.products))], simulator=sim,
                                  alert=seen.append)
    await runtime.start()
    try:
        assert runtime.alerts is None and runtime.emergency.alert is not None
        await runtime.emergency.trigger(Trigger.MANUAL, "hooked")
    finally:
        await runtime.close()
    assert [a.kind for a in seen][:1] == ["kill_triggered"] and any(a.kind == "kill_completed" for a in seen)
