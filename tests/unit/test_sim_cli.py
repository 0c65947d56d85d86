"""``cryptoj sim`` flag handling: build_config and the command's error exits (no sockets here)."""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import structlog
from typer.testing import CliRunner

from cryptoj.cli import app
from cryptoj.errors import ConfigError
from cryptoj.venues.simulated.cli import EXIT_BAD_CONFIG, REPLAY_MODULE, build_config

pytestmark = pytest.mark.unit


@pytest.fixture
def runner() -> Iterator[CliRunner]:
    yield CliRunner()
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_cryptoj_handler", False)]:
        root.removeHandler(handler)
    root.setLevel(logging.WARNING)
    structlog.reset_defaults()


def test_build_config_defaults_match_the_documented_flags() -> None:
    config = build_config()
    assert config.host == "127.0.0.1"
    assert config.port == 0
    assert config.products == ["BTC-USD", "ETH-USD"]
    assert config.seed == 1
    assert config.speed == 1.0
    assert config.market_rate == 10.0
    assert config.balances == {"USD": Decimal(100000), "BTC": Decimal(1), "ETH": Decimal(10)}
    assert config.api_key_files == []
    assert config.create_api_key is None
    assert (config.ssl_certfile, config.ssl_keyfile, config.replay) == (None, None, None)
    assert (config.private_rate_limit, config.public_rate_limit) == (30, 10)
    assert config.faults == {}


def test_build_config_maps_every_value(tmp_path: Path) -> None:
    config = build_config(
        host="::1",
        port=8123,
        products="sol-usd, BTC-USD",
        seed=42,
        speed=10.0,
        market_rate=0.0,
        balances="usd=5, btc=0.5",
        create_api_key=tmp_path / "new.json",
        api_key_file=[tmp_path / "a.json", tmp_path / "b.json"],
        private_rate_limit=100,
        public_rate_limit=50,
        faults={"ws_drop_after": 5, "http_429_next": None, "ws_stall_seconds": 1.5},
    )
    assert config.host == "::1" and config.port == 8123
    assert config.products == ["SOL-USD", "BTC-USD"]
    assert config.seed == 42 and config.speed == 10.0 and config.market_rate == 0.0
    assert config.balances == {"USD": Decimal(5), "BTC": Decimal("0.5")}
    assert config.create_api_key == tmp_path / "new.json"
    assert config.api_key_files == [tmp_path / "a.json", tmp_path / "b.json"]
    assert (config.private_rate_limit, config.public_rate_limit) == (100, 50)
    # unset fault flags (None) are left out, set ones pass through
    assert config.faults == {"ws_drop_after": 5, "ws_stall_seconds": 1.5}


@pytest.mark.parametrize(
    ("kwargs", "key", "fragment"),
    [
        ({"products": "BTCUSD"}, "--products", "BTCUSD"),
        ({"balances": "USD100"}, "--balances", "CURRENCY=AMOUNT"),
        ({"balances": "USD=lots"}, "--balances", "lots"),
        ({"products": "DOGE-USD"}, "products", "DOGE-USD is not a known product"),
        ({"speed": 0.0}, "speed", "must be > 0"),
        ({"market_rate": -1.0}, "market_rate", "must be >= 0"),
        ({"port": 70000}, "port", "0..65535"),
        ({"private_rate_limit": 0}, "rate_limit", "at least 1"),
        ({"ssl_certfile": Path("cert.pem")}, "ssl", "--ssl-keyfile"),
    ],
)
def test_build_config_names_the_bad_flag(kwargs: dict[str, object], key: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_config(**kwargs)  # type: ignore[arg-type]
    keys = [k for k, _ in info.value.problems]
    assert key in keys, info.value.problems
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--products", "NOPE"], "--products"),
        (["--products", "DOGE-USD"], "DOGE-USD is not a known product"),
        (["--balances", "USD"], "--balances"),
        (["--speed", "0"], "speed: must be > 0"),
        (["--port", "-1"], "port: must be 0..65535"),
        (["--ssl-keyfile", "k.pem"], "give both --ssl-certfile and --ssl-keyfile"),
        (["--fault-ws-drop-after", "0"], "faults.ws_drop_after"),
        (["--fault-http-5xx-probability", "1.5"], "faults.http_5xx_probability"),
        (["--fault-ws-stall", "-2"], "faults.ws_stall_seconds"),
    ],
)
def test_bad_flags_exit_2_with_a_message(runner: CliRunner, args: list[str], fragment: str) -> None:
    result = runner.invoke(app, ["sim", *args])
    assert result.exit_code == EXIT_BAD_CONFIG, result.output
    assert "cryptoj sim:" in result.output
    assert fragment in result.output
    assert "listening on" not in result.output
    assert "Traceback" not in result.output


def test_replay_without_the_replay_module_is_refused_with_a_message(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == REPLAY_MODULE else real_find_spec(name, *a))
    recording = tmp_path / "rec.jsonl.gz"
    recording.write_bytes(b"")
    result = runner.invoke(app, ["sim", "--replay", str(recording)])
    assert result.exit_code == EXIT_BAD_CONFIG
    assert "--replay: replaying a recording in the simulator is not available" in result.output
    assert "Traceback" not in result.output


def test_replay_of_a_missing_file_names_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: object() if name == REPLAY_MODULE else real_find_spec(name, *a)
    )
    with pytest.raises(ConfigError) as info:
        build_config(replay=tmp_path / "missing.jsonl.gz")
    assert info.value.problems == [("--replay", f"recording {tmp_path / 'missing.jsonl.gz'} does not exist")]
    existing = tmp_path / "there.jsonl.gz"
    existing.write_bytes(b"")
    assert build_config(replay=existing).replay == existing


def test_help_lists_every_flag(runner: CliRunner) -> None:
    result = runner.invoke(app, ["sim", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for flag in (
        "--host", "--port", "--products", "--seed", "--speed", "--market-rate", "--balances", "--create-api-key",
        "--api-key-file", "--ssl-certfile", "--ssl-keyfile", "--replay", "--private-rate-limit", "--public-rate-limit",
        "--fault-ws-drop-after", "--fault-ws-skip-seq-every", "--fault-ws-stall", "--fault-http-429", "--fault-http-5xx",
        "--fault-http-5xx-probability", "--fault-http-delay", "--fault-drop-order-create",
    ):
        assert flag in result.output, flag
