"""Faults injected at the simulator show up in /metrics, /healthz and the alerts of a real running engine."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from tests.api_engine_support import MakeSim, operator_stack, until, webhook_receiver
from tests.engine_fixtures import wait_for

pytestmark = pytest.mark.integration


def _sum(text: str, name: str) -> float:
    return sum(float(v) for v in re.findall(rf"^{re.escape(name)}(?:{{[^}}]*}})? ([0-9.e+\-]+)$", text, re.M))


async def test_gaps_reconnects_and_rest_errors_are_visible(make_sim: MakeSim, tmp_path: Path) -> None:
    async with webhook_receiver() as receiver, operator_stack(
        make_sim, tmp_path, webhook=receiver.url, strategy_params={"entry_bps": "1000"},  # the strategy stays out
        alerts={"reconnect_storm_count": 2, "reconnect_storm_window_seconds": 600},
    ) as st, httpx.AsyncClient(base_url=st.api.url, timeout=30) as c:
        st.sim.faults.ws_skip_seq_every = 40  # sequence gaps on every connection: the books resync
        metrics = ""

        async def scrape() -> str:
            nonlocal metrics
            metrics = (await c.get("/metrics")).text
            return metrics

        async def gapped() -> bool:
            text = await scrape()
            return _sum(text, "cryptoj_book_gaps_total") >= 1 and _sum(text, "cryptoj_book_resyncs_total") >= 1

        await until(gapped, "gaps and resyncs in /metrics")
        st.sim.faults.ws_skip_seq_every = None
        status = (await c.get("/api/status", headers=st.auth)).json()
        assert sum(f["resyncs"] for f in status["feeds"]) >= 1

        st.sim.faults.ws_drop_after = 30  # connections cut after 30 messages: reconnects, then a storm alert
        await wait_for(lambda: any(b["kind"] == "reconnect_storm" for b in receiver.bodies), "the reconnect storm alert",
                       timeout=60)
        st.sim.faults.ws_drop_after = None
        storm = next(b for b in receiver.bodies if b["kind"] == "reconnect_storm")
        assert storm["detail"]["stream"] == "market" and storm["detail"]["reconnects"] >= 2
        assert _sum(await scrape(), "cryptoj_ws_reconnects_total") >= 2

        st.sim.faults.http_5xx_next = 3  # the REST client retries through them; the errors are counted
        await st.runtime.rest.products(["BTC-USD"])
        assert _sum(await scrape(), "cryptoj_venue_errors_total") >= 3
        health = (await c.get("/healthz")).json()
        assert health["components"]["venue"]["requests"] >= 1
        assert set(health["components"]) == {"feeds", "venue", "event_loop", "memory", "reconciliation"}


async def test_halts_outside_the_kill_switch_are_alerted_once(make_sim: MakeSim, tmp_path: Path) -> None:
    from cryptoj.risk_management import TradingState

    async with webhook_receiver() as receiver, operator_stack(make_sim, tmp_path, webhook=receiver.url, market_rate=0.0) as st:
        st.runtime.risk.set_state(TradingState.REDUCE_ONLY, "drawdown watch")
        await until(lambda: any(b["kind"] == "trading_state" for b in receiver.bodies), "the REDUCE_ONLY alert")
        st.runtime.risk.set_state(TradingState.HALTED, "order manager: reconciliation failed")
        await until(lambda: sum(b["kind"] == "trading_state" for b in receiver.bodies) == 2, "the HALTED alert")
        states = [(b["detail"]["state"], b["severity"]) for b in receiver.bodies if b["kind"] == "trading_state"]
        assert states == [("REDUCE_ONLY", "warning"), ("HALTED", "critical")]
        assert receiver.bodies[-1]["detail"]["reason"] == "order manager: reconciliation failed"


async def test_one_venue_error_number_for_healthz_metrics_and_the_kill_switch(make_sim: MakeSim, tmp_path: Path) -> None:
    """/healthz, /metrics and the kill switch's error-rate trigger read one number (venue_failures of the REST client):
    a 429 storm is pacing, not failure, and trips nothing; a 5xx burst counts once everywhere and trips the switch."""
    from cryptoj.emergency_manager import Trigger, venue_failures
    from cryptoj.errors import RateLimited, VenueUnavailable
    from cryptoj.risk_management import TradingState

    async with operator_stack(
        make_sim, tmp_path, strategy_params={"entry_bps": "1000"}, market_rate=0.0,
        emergency={"error_rate_threshold": 5, "error_rate_window_seconds": 600},
    ) as st, httpx.AsyncClient(base_url=st.api.url, timeout=30) as c:
        rest, emergency = st.runtime.rest, st.runtime.emergency
        before = venue_failures(rest)
        limited = rest.rate_limited

        st.sim.faults.http_429_next = 2 * (rest.max_retries + 1)  # two requests answered 429 on every attempt
        for _ in range(2):
            with pytest.raises(RateLimited):
                await rest.products(["BTC-USD"])
        assert rest.rate_limited - limited == 2 * (rest.max_retries + 1)
        await emergency.tick()  # what the watcher does every poll: nothing new to count
        assert venue_failures(rest) == before
        assert st.runtime.risk.state is TradingState.ACTIVE and Trigger.ERROR_RATE.value not in emergency.trigger_counts
        health = (await c.get("/healthz")).json()["components"]["venue"]
        assert health["error_rate"] == 0.0, health
        assert _sum((await c.get("/metrics")).text, "cryptoj_venue_errors_total") == before

        st.sim.faults.http_5xx_next = rest.max_retries + 1 + 2  # one request fails outright, the next after 2 retries
        with pytest.raises(VenueUnavailable):
            await rest.products(["BTC-USD"])
        await rest.products(["BTC-USD"])
        failures = venue_failures(rest)
        assert failures - before >= rest.max_retries + 1 + 2
        metrics = (await c.get("/metrics")).text
        assert _sum(metrics, "cryptoj_venue_errors_total") == failures  # the same number, not a second count
        health = (await c.get("/healthz")).json()["components"]["venue"]
        assert health["error_rate"] > 0 and health["status"] != "healthy", health

        await until(lambda: st.runtime.risk.state is TradingState.HALTED, "the error-rate kill")
        assert emergency.trigger_counts.get(Trigger.ERROR_RATE.value, 0) >= 1
        assert "REST client" in st.runtime.risk.state_reason
