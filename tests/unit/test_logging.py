"""Logging: real rendered output (console and JSON) never contains a secret."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator
from decimal import Decimal

import orjson
import pytest
import structlog

from cryptoj.logging import REDACTED, configure_logging, get_logger, redact_secrets, redact_text

pytestmark = pytest.mark.unit

PEM = (
    "-----BEGIN EC PRIVATE KEY-----\n"
    "MHcCAQEEIBkg4LVWM9nuwNSk3yByxZpYRTBnVJk5oWwlDk8LYEZ0oAoGCCqGSM49\n"
    "AwEHoUQDQgAE3Pb5lDg0m6Z5qzq0Yk6vG1mHn8c1LQz4pCzY1bQe1n1Zb2wE9Y9Y\n"
    "-----END EC PRIVATE KEY-----\n"
)
PEM_BODY = "MHcCAQEEIBkg4LVWM9nuwNSk3yByxZpYRTBnVJk5oWwlDk8LYEZ0oAoGCCqGSM49"
JWT = "eyJhbGciOiJFUzI1NiIsImtpZCI6Im9yZy9rZXkifQ.eyJzdWIiOiJvcmcva2V5IiwiaXNzIjoiY2RwIn0.MEUCIQDx4v3Yt8sig_nature-part"
JWT_SIG = "MEUCIQDx4v3Yt8sig_nature-part"
BEARER = "Bearer sk_live_51HxYzAbCdEfGh"
BEARER_TOKEN = "sk_live_51HxYzAbCdEfGh"
SECRETS = (PEM_BODY, "BEGIN EC PRIVATE KEY", JWT, JWT_SIG, "eyJzdWIi", BEARER_TOKEN, "hunter2")


@pytest.fixture
def capture() -> Iterator[Callable[[bool, str], io.StringIO]]:
    streams: list[io.StringIO] = []

    def setup(json: bool, level: str = "DEBUG") -> io.StringIO:
        stream = io.StringIO()
        configure_logging(level, json, stream=stream)
        streams.append(stream)
        return stream

    yield setup
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_cryptoj_handler", False)]:
        root.removeHandler(handler)
    root.setLevel(logging.WARNING)
    structlog.reset_defaults()


class Leaky:
    """An object whose repr carries a token."""

    def __repr__(self) -> str:
        return f"Leaky(auth='{BEARER}')"


def log_everything() -> None:
    log = get_logger("cryptoj.test", product_id="BTC-USD")
    log.info(
        "secrets_everywhere",
        private_key=PEM,
        jwt=JWT,
        headers={"Authorization": BEARER, "Content-Type": "application/json"},
        note=f"signed with {JWT} using key {PEM}",
        nested={"level": [{"deeper": (f"text {BEARER} more", {"password": "hunter2"})}], "set": {f"x {JWT}"}},
        raw=f"raw {BEARER}".encode(),
        obj=Leaky(),
        price=Decimal("30000.01"),
        client_order_id="cid-1",
    )
    try:
        raise RuntimeError(f"request failed: Authorization: {BEARER}; jwt={JWT}; pem={PEM}")
    except RuntimeError:
        log.exception("request_failed")
    logging.getLogger("aiohttp.client").warning("stdlib says %s and %s", JWT, PEM)
    logging.getLogger("sqlalchemy").error("connect postgresql+asyncpg://trader:hunter2@db/x failed")


@pytest.mark.parametrize("json", [False, True])
def test_no_secret_reaches_the_output(capture: Callable[[bool, str], io.StringIO], json: bool) -> None:
    stream = capture(json, "DEBUG")
    log_everything()
    output = stream.getvalue()
    for secret in SECRETS:
        assert secret not in output, f"{secret!r} leaked into the log output"
    # what is not secret is still there, so the log stays useful
    assert "secrets_everywhere" in output and "request_failed" in output and "stdlib says" in output
    assert "BTC-USD" in output and "cid-1" in output and "30000.01" in output and "Content-Type" in output
    assert "RuntimeError" in output and "Traceback" in output
    assert "trader:" in output and "@db/x" in output
    assert output.count(REDACTED) >= 10


def test_json_lines_are_valid_json_with_redacted_fields(capture: Callable[[bool, str], io.StringIO]) -> None:
    stream = capture(True, "DEBUG")
    log_everything()
    records = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    assert [r["event"] for r in records][:2] == ["secrets_everywhere", "request_failed"]
    first = records[0]
    assert first["private_key"] == REDACTED and first["jwt"] == REDACTED
    assert first["headers"] == {"Authorization": REDACTED, "Content-Type": "application/json"}
    assert first["nested"]["level"][0]["deeper"][1] == {"password": REDACTED}
    assert first["price"] == "30000.01" and first["level"] == "info" and first["logger"] == "cryptoj.test"
    assert first["timestamp"].endswith("Z")
    assert "exception" in records[1] and REDACTED in records[1]["exception"]
    assert records[2]["logger"] == "aiohttp.client" and records[2]["level"] == "warning"


def test_console_output_is_human_readable(capture: Callable[[bool, str], io.StringIO]) -> None:
    stream = capture(False, "INFO")
    get_logger("cryptoj.x").info("order_submitted", client_order_id="abc", product_id="ETH-USD")
    line = stream.getvalue().strip()
    assert "order_submitted" in line and "client_order_id=abc" in line and "product_id=ETH-USD" in line
    assert not line.startswith("{")


def test_level_filtering_and_reconfiguring(capture: Callable[[bool, str], io.StringIO]) -> None:
    first = capture(False, "WARNING")
    log = get_logger("cryptoj.lvl")
    log.info("hidden")
    log.warning("shown")
    second = capture(True, "INFO")  # replaces the first handler: no duplicate output
    log.info("now_json")
    assert "hidden" not in first.getvalue() and "shown" in first.getvalue()
    assert "now_json" not in first.getvalue()
    assert orjson.loads(second.getvalue())["event"] == "now_json"
    assert sum(1 for h in logging.getLogger().handlers if getattr(h, "_cryptoj_handler", False)) == 1


def test_numeric_level_and_unknown_level(capture: Callable[[bool, str], io.StringIO]) -> None:
    with pytest.raises(ValueError, match="unknown log level 'LOUD'"):
        configure_logging("LOUD")
    stream = capture(False, "INFO")  # the fixture removes our handler afterwards
    configure_logging(logging.ERROR, stream=stream)
    get_logger("n").warning("dropped")
    get_logger("n").error("only_errors")
    assert "only_errors" in stream.getvalue() and "dropped" not in stream.getvalue()


def test_redact_text_variants() -> None:
    assert redact_text(f"a {PEM} b") == f"a {REDACTED}\n b"
    truncated = "key: -----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMG"  # cut before its END line
    assert redact_text(truncated) == f"key: {REDACTED}"
    assert redact_text(f"auth={BEARER}") == f"auth=Bearer {REDACTED}"
    assert redact_text(f"token {JWT}.") == f"token {REDACTED}."
    assert redact_text("https://u:pw@host/x") == f"https://u:{REDACTED}@host/x"
    assert redact_text("nothing to see, eyJ but no dots") == "nothing to see, eyJ but no dots"
    public = "-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----"
    assert redact_text(public) == REDACTED  # any PEM block is masked


def test_redact_secrets_processor_directly() -> None:
    event = {
        "event": f"e {JWT}",
        "api_secret": 12345,
        "Cookie": ["a", "b"],
        "_record": "kept as is",
        "count": 3,
        "ratio": 0.5,
        "flag": True,
        "none": None,
        "clean_bytes": b"plain",
        "frozen": frozenset({"ok"}),
    }
    out = redact_secrets(None, "info", event)
    assert out["event"] == f"e {REDACTED}"
    assert out["api_secret"] == REDACTED and out["Cookie"] == REDACTED
    assert out["_record"] == "kept as is"
    assert (out["count"], out["ratio"], out["flag"], out["none"]) == (3, 0.5, True, None)
    assert out["clean_bytes"] == b"plain" and out["frozen"] == frozenset({"ok"})
