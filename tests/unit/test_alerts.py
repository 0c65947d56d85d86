"""The webhook alert sink against a local aiohttp receiver on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from pydantic import SecretStr

from cryptoj.alerts import AlertSink, AlertWatch, alert_body, telegram_text
from cryptoj.config import AlertsConfig
from cryptoj.emergency_manager import Alert
from tests.api_engine_support import webhook_receiver

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _kill_pair(outcome: str = "kill_completed") -> tuple[Alert, Alert]:
    start = Alert("kill_triggered", "critical", "kill switch: MANUAL: operator", T0, {"trigger": "MANUAL", "detail": "operator"})
    report = {"trigger": "MANUAL", "detail": "operator", "confirmed": outcome == "kill_completed", "open_after": [],
              "started_at": T0.isoformat(), "dust": {"BTC": Decimal("0.00000001")}}
    end = Alert(outcome, "critical", "kill confirmed in 0.100s: no open orders", T0 + timedelta(seconds=1), report)
    return start, end


def _config(url: str, **kw: object) -> AlertsConfig:
    return AlertsConfig(webhook_urls=[url], backoff_seconds=0.01, **kw)  # type: ignore[arg-type]


async def test_a_kill_is_one_alert_with_trigger_and_outcome() -> None:
    async with webhook_receiver() as rec:
        sink = AlertSink(_config(rec.url))
        await sink.start()
        start, end = _kill_pair()
        sink(start)
        await asyncio.sleep(0)
        assert rec.bodies == []  # held until the outcome
        sink(end)
        assert await sink.flush(10)
        await sink.close()
    assert len(rec.bodies) == 1
    body = rec.bodies[0]
    assert body["kind"] == "kill" and body["severity"] == "critical" and body["source"] == "cryptoj"
    assert body["detail"]["trigger"] == "MANUAL" and body["detail"]["outcome"] == "confirmed"
    assert body["detail"]["reason"] == "operator"
    assert body["detail"]["report"]["dust"] == {"BTC": "0.00000001"}  # Decimals as exact strings
    assert body["message"] == "kill switch: MANUAL: operator — kill confirmed in 0.100s: no open orders"
    assert sink.deliveries[0].ok and sink.deliveries[0].attempts == 1


async def test_unconfirmed_kill_and_outcome_without_a_start() -> None:
    async with webhook_receiver() as rec:
        sink = AlertSink(_config(rec.url))
        await sink.start()
        _, end = _kill_pair("kill_unconfirmed")
        sink(end)
        await sink.flush(10)
        await sink.close()
    assert rec.bodies[0]["detail"]["outcome"] == "unconfirmed"
    assert rec.bodies[0]["detail"]["trigger"] == "MANUAL"
    assert rec.bodies[0]["message"].startswith("kill switch: MANUAL: operator — ")


async def test_kill_without_outcome_goes_out_as_pending_after_the_wait() -> None:
    async with webhook_receiver() as rec:
        sink = AlertSink(_config(rec.url, kill_outcome_wait_seconds=0.05))
        await sink.start()
        start, _ = _kill_pair()
        sink(start)
        for _ in range(400):
            if rec.bodies:
                break
            await asyncio.sleep(0.01)
        await sink.close()
    assert [b["detail"]["outcome"] for b in rec.bodies] == ["pending"]
    assert rec.bodies[0]["detail"]["trigger"] == "MANUAL"


async def test_close_sends_a_held_kill_and_ignores_later_alerts() -> None:
    async with webhook_receiver() as rec:
        sink = AlertSink(_config(rec.url))
        await sink.start()
        sink(_kill_pair()[0])
        await sink.close()
        sink.send("late", "info", "after close")
        await sink.close()  # idempotent
    assert [b["kind"] for b in rec.bodies] == ["kill"]
    assert rec.bodies[0]["detail"]["outcome"] == "pending"


async def test_retries_with_backoff_until_delivered() -> None:
    async with webhook_receiver(fail_first=2) as rec:
        delays: list[float] = []

        async def sleep(s: float) -> None:
            delays.append(s)

        sink = AlertSink(_config(rec.url, max_attempts=5), sleep=sleep)
        await sink.start()
        sink.send("resumed", "info", "trading resumed")
        await sink.flush(10)
        await sink.close()
    assert rec.calls == 3 and len(rec.bodies) == 1
    assert delays == [0.01, 0.02]
    assert sink.deliveries[-1].ok and sink.deliveries[-1].attempts == 3


async def test_gives_up_after_max_attempts_on_a_dead_receiver() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed when the block ends: nothing listens there
    sink = AlertSink(_config(f"http://127.0.0.1:{port}/hook", max_attempts=3))
    await sink.start()
    sink.send("reconciliation", "critical", "x")
    await sink.flush(10)
    await sink.close()
    d = sink.deliveries[-1]
    assert not d.ok and d.attempts == 3 and d.error is not None and str(port) not in d.error


async def test_a_4xx_refusal_is_not_retried() -> None:
    async with webhook_receiver() as rec:
        sink = AlertSink(_config(rec.url.replace("/hook", "/refuse"), max_attempts=5))
        await sink.start()
        sink.send("x", "info", "y")
        await sink.flush(10)
        await sink.close()
    assert sink.deliveries[-1].attempts == 1 and sink.deliveries[-1].error == "HTTP 400"


async def test_telegram_format_and_token_never_shown() -> None:
    async with webhook_receiver() as rec:
        base = rec.url.rsplit("/", 1)[0]
        secret = "123456:SECRET-bot-token"
        config = AlertsConfig(webhook_urls=[rec.url], telegram_bot_token=SecretStr(secret), telegram_chat_id="-10042",
                              telegram_api_url=base + "/tg/", backoff_seconds=0.01)
        sink = AlertSink(config)
        await sink.start()
        sink.send("resume_refused", "warning", "resume refused: feed stale")
        await sink.flush(10)
        await sink.close()
    assert sorted(rec.paths) == sorted(["/hook", f"/tg/bot{secret}/sendMessage"])
    tg = next(b for b in rec.bodies if "chat_id" in b)
    assert tg["chat_id"] == "-10042" and "resume refused: feed stale" in tg["text"]
    assert {d.destination for d in sink.deliveries} == {"webhook[0]", "telegram"}
    assert all(d.ok for d in sink.deliveries)
    assert secret not in repr(sink) and all(secret not in str(d) for d in sink.deliveries)
    text = telegram_text(Alert("resume_refused", "warning", "resume refused: feed stale", T0))
    assert "resume_refused (warning)" in text and "feed stale" in text


def test_alert_body_shape() -> None:
    body = alert_body(Alert("resumed", "info", "ok", T0, {"state": "ACTIVE"}))
    assert body == {"source": "cryptoj", "kind": "resumed", "severity": "info", "message": "ok", "time": T0.isoformat(),
                    "detail": {"state": "ACTIVE"}}


async def test_full_queue_drops_the_oldest() -> None:
    sink = AlertSink(_config("http://127.0.0.1:9/hook", queue_size=2))  # not started: nothing is delivered
    for i in range(3):
        sink.send("n", "info", str(i))
    assert sink.dropped == 1
    assert [a.message for a in sink._queue] == ["1", "2"]


def test_without_destinations_alerts_are_only_logged() -> None:
    sink = AlertSink(AlertsConfig(), clock=lambda: T0)
    assert not sink.enabled
    sink.state_changed("HALTED", "manual")
    sink.state_changed("REDUCE_ONLY", "drawdown")
    sink.state_changed("ACTIVE", "ok")
    sink.reconciliation([])
    sink.reconciliation(["order x unknown"])
    assert [(a.kind, a.severity) for a in sink.sent] == [("trading_state", "critical"), ("trading_state", "warning"),
                                                         ("trading_state", "info"), ("reconciliation", "critical")]
    assert sink.sent[-1].detail == {"problems": ["order x unknown"]}


def test_reconnect_storm_alerts_once_per_window() -> None:
    sink = AlertSink(AlertsConfig(reconnect_storm_count=3, reconnect_storm_window_seconds=60), clock=lambda: T0)
    results = [sink.reconnected("market", T0 + timedelta(seconds=i)) for i in range(5)]
    assert results == [False, False, True, False, False]
    assert sink.reconnected("user", T0) is False
    later = T0 + timedelta(seconds=200)
    assert [sink.reconnected("market", later + timedelta(seconds=i)) for i in range(3)] == [False, False, True]
    storms = [a for a in sink.sent if a.kind == "reconnect_storm"]
    assert len(storms) == 2 and storms[0].detail["reconnects"] == 3


def test_daily_summary_once_per_day_at_the_hour() -> None:
    sink = AlertSink(AlertsConfig(daily_summary_hour_utc=18), clock=lambda: T0)
    calls = 0

    def summary() -> dict[str, object]:
        nonlocal calls
        calls += 1
        return {"equity": Decimal("10000.50"), "fills": 3, "mode": "sim"}

    assert sink.maybe_daily_summary(summary, T0) is False  # first call: starts the clock (12:00 < 18:00)
    assert sink.maybe_daily_summary(summary, T0 + timedelta(hours=1)) is False  # 13:00 < 18:00
    evening = T0.replace(hour=18, minute=5)
    assert sink.maybe_daily_summary(summary, evening) is True
    assert sink.maybe_daily_summary(summary, evening + timedelta(hours=1)) is False
    assert sink.maybe_daily_summary(summary, evening + timedelta(days=1)) is True
    assert calls == 2
    assert "equity=10000.50" in sink.sent[0].message and "fills=3" in sink.sent[0].message
    off = AlertSink(AlertsConfig(daily_summary_hour_utc=None))
    assert off.maybe_daily_summary(summary, evening) is False
    restarted = AlertSink(AlertsConfig(daily_summary_hour_utc=18))
    assert restarted.maybe_daily_summary(summary, evening) is False  # started after the hour: no summary on restart
    assert restarted.maybe_daily_summary(summary, evening + timedelta(hours=2)) is False
    assert restarted.maybe_daily_summary(summary, evening + timedelta(days=1)) is True


@pytest.mark.parametrize("bad", [{"webhook_urls": ["ftp://x"]}, {"telegram_chat_id": "1"}, {"max_attempts": 0}])
def test_config_problems_name_the_key(bad: dict[str, object]) -> None:
    from cryptoj.config import load_config
    from cryptoj.errors import ConfigError

    env = {f"CRYPTOJ_ALERTS__{k.upper()}": (str(v).replace("'", '"') if isinstance(v, list) else str(v)) for k, v in bad.items()}
    with pytest.raises(ConfigError) as err:
        load_config(None, env=env)
    assert "alerts" in str(err.value)


def test_alert_watch_turns_engine_numbers_into_alerts() -> None:
    from types import SimpleNamespace

    sink = AlertSink(AlertsConfig(reconnect_storm_count=2, reconnect_storm_window_seconds=60, daily_summary_hour_utc=13),
                     clock=lambda: T0)
    numbers: dict[str, object] = {"state": ("ACTIVE", ""), "report": None, "reconnects": 0}
    watch = AlertWatch(
        sink,
        state=lambda: numbers["state"],  # type: ignore[arg-type,return-value]
        reconciliation=lambda: numbers["report"],
        reconnects=lambda: numbers["reconnects"],  # type: ignore[arg-type,return-value]
        summary=lambda: {"fills": 1},
    )
    watch.tick(T0)
    assert sink.sent == []  # the first look only learns the state
    numbers["state"] = ("HALTED", "kill switch: MANUAL: operator")  # the kill switch alerts for itself
    watch.tick(T0)
    numbers["state"] = ("ACTIVE", "resumed")
    watch.tick(T0)
    assert sink.sent == []
    numbers["state"] = ("REDUCE_ONLY", "drawdown 9% >= 8%")
    watch.tick(T0)
    numbers["state"] = ("HALTED", "reconciliation failed: order x unknown")
    watch.tick(T0)
    watch.tick(T0)
    clean, bad = SimpleNamespace(problems=[]), SimpleNamespace(problems=["order x unknown"])
    numbers["report"] = clean
    watch.tick(T0)
    numbers["report"] = bad
    watch.tick(T0)
    watch.tick(T0)  # the same report: not again
    numbers["reconnects"] = 2
    watch.tick(T0 + timedelta(seconds=1))
    watch.tick(T0.replace(hour=13, minute=1))
    kinds = [(a.kind, a.severity) for a in sink.sent]
    assert kinds == [("trading_state", "warning"), ("trading_state", "critical"), ("reconciliation", "critical"),
                     ("reconnect_storm", "warning"), ("daily_summary", "info")], kinds
    assert sink.sent[1].detail["reason"] == "reconciliation failed: order x unknown"
