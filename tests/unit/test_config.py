"""Config loading: TOML + env overrides, every problem at once, exact decimals, key files."""

from __future__ import annotations

import base64
import os
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from cryptoj.config import (
    API_KEY_NAME_ENV,
    API_PRIVATE_KEY_ENV,
    AppConfig,
    check_key_file,
    load_api_key,
    load_config,
    masked_dump,
    resolve_api_key,
)
from cryptoj.errors import ConfigError, KeyFileError

pytestmark = pytest.mark.unit

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "example.toml"
KEY_NAME = "organizations/org-1/apiKeys/key-1"


@pytest.fixture(scope="module")
def ec_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    ).decode()


def write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text, encoding="utf-8")
    os.chmod(path, mode)
    return path


def key_file(tmp_path: Path, pem: str, mode: int = 0o600, name: str = "key.json") -> Path:
    import json

    return write(tmp_path / name, json.dumps({"name": KEY_NAME, "privateKey": pem}), mode)


def problems_of(path: Path | None, env: dict[str, str] | None = None, **kw: Any) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        load_config(path, env or {}, **kw)
    result: dict[str, str] = {}
    for key, message in info.value.problems:
        result[key] = (result[key] + " | " + message) if key in result else message
    return result


# --- the example and the defaults -----------------------------------------------------------


def test_example_config_is_valid_and_exact() -> None:
    config = load_config(EXAMPLE, {})
    assert config.mode == "sim" and config.live_confirmed is False
    assert config.products == ["BTC-USD", "ETH-USD"]
    assert config.risk.max_order_notional == Decimal("1000")
    assert config.risk.daily_loss_limit_fraction == Decimal("0.05")
    assert isinstance(config.risk.price_band_fraction, Decimal)
    assert config.emergency.price_move_fraction == Decimal("0.10")
    assert config.strategy.params == {"fast": 10, "slow": 30, "order_size": "0.001"}
    assert config.storage.url == "sqlite+aiosqlite:///state/cryptoj.db"
    assert config.api.host == "127.0.0.1" and config.api.port == 8080
    assert config.logging.level == "INFO" and config.logging.json_output is False


def test_example_mentions_every_key() -> None:
    text = EXAMPLE.read_text()
    for section_name, field in AppConfig.model_fields.items():
        assert section_name in text
        annotation = field.annotation
        if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
            for name, sub in annotation.model_fields.items():
                key = sub.alias or name
                assert f"{key} =" in text or f"[{section_name}.{key}]" in text, f"{section_name}.{key} missing from example"


def test_defaults_without_a_file() -> None:
    config = load_config(None, {})
    assert config.exchange.rest_base_url == "https://api.coinbase.com"
    assert config.exchange.ws_market_url == "wss://advanced-trade-ws.coinbase.com"
    assert config.exchange.ws_user_url == "wss://advanced-trade-ws-user.coinbase.com"
    assert (config.exchange.public_rate_limit, config.exchange.private_rate_limit) == (10.0, 30.0)
    assert config.risk.max_order_notional is None  # every risk limit is off unless set
    assert config.storage.state_dir == Path("state")


def test_env_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRYPTOJ_MODE", "paper")
    assert load_config(None).mode == "paper"


# --- environment overrides ---------------------------------------------------------------------


def test_env_overrides_file_values(tmp_path: Path) -> None:
    path = write(tmp_path / "c.toml", '[risk]\nmax_order_notional = "100"\nmax_open_orders = 3\n')
    env = {
        "CRYPTOJ_RISK__MAX_ORDER_NOTIONAL": "500",
        "cryptoj_mode": "paper",
        "CRYPTOJ_PRODUCTS": '["SOL-USD"]',
        "CRYPTOJ_LOGGING__JSON": "true",
        "CRYPTOJ_STRATEGY__PARAMS__FAST": "7",
        "CRYPTOJ_TEST_POSTGRES_URL": "postgresql+asyncpg://elsewhere/db",  # not ours: ignored
    }
    config = load_config(path, env)
    assert config.risk.max_order_notional == Decimal("500")
    assert config.risk.max_open_orders == 3  # untouched keys of the section survive
    assert config.mode == "paper"
    assert config.products == ["SOL-USD"]
    assert config.logging.json_output is True
    assert config.strategy.params == {"fast": "7"}


def test_bad_env_overrides_are_reported_with_their_path() -> None:
    env = {"CRYPTOJ_RISK__MAX_ORDR_NOTIONAL": "5", "CRYPTOJ_RSK__X": "1", "CRYPTOJ_RISK__MAX_OPEN_ORDERS": "x"}
    problems = problems_of(None, env)
    assert "unknown key" in problems["risk.max_ordr_notional"]
    assert "unknown section 'rsk'" in problems["env CRYPTOJ_RSK__X"]
    assert "valid integer" in problems["risk.max_open_orders"]


# --- every problem at once ------------------------------------------------------------------------


def test_all_problems_reported_with_key_paths(tmp_path: Path) -> None:
    path = write(
        tmp_path / "bad.toml",
        """
mode = "yolo"
products = ["BTC-USD", "btc usd", "BTC-USD"]
colour = "blue"
[exchange]
rest_base_url = "ftp://x"
ws_user_url = "https://not-ws"
request_timeout = 0
[risk]
max_order_notinal = "10"
max_position_notional = "-5"
daily_loss_limit_fraction = "1.5"
max_total_exposure = "abc"
max_drawdown_fraction = true
[emergency]
kill_file = "../KILL"
[storage]
url = "mysql://x"
[api]
host = "0.0.0.0"
[logging]
level = "LOUD"
""",
    )
    problems = problems_of(path)
    assert "sim" in problems["mode"]
    assert "'btc usd' is not a product id" in problems["products"]
    assert problems["colour"].startswith("unknown key")
    assert "http://" in problems["exchange.rest_base_url"]
    assert "ws://" in problems["exchange.ws_user_url"]
    assert "greater than 0" in problems["exchange.request_timeout"]
    assert "did you mean 'max_order_notional'" in problems["risk.max_order_notinal"]
    assert "allowed keys:" in problems["risk.max_order_notinal"]
    assert "greater than or equal to 0" in problems["risk.max_position_notional"]
    assert "less than or equal to 1" in problems["risk.daily_loss_limit_fraction"]
    assert "not a decimal number" in problems["risk.max_total_exposure"]
    assert "boolean" in problems["risk.max_drawdown_fraction"]
    assert "plain file name" in problems["emergency.kill_file"]
    assert "sqlite+aiosqlite://" in problems["storage.url"]
    assert "allow_non_loopback" in problems["api.host"]
    assert "INFO" in problems["logging.level"]
    assert len(problems) == 15


def test_duplicate_products_and_loopback_variants(tmp_path: Path) -> None:
    assert "listed twice" in problems_of(None, {"CRYPTOJ_PRODUCTS": '["BTC-USD","BTC-USD"]'})["products"]
    for host in ("localhost", "::1", "127.0.0.2"):
        assert load_config(None, {"CRYPTOJ_API__HOST": host}).api.host == host
    config = load_config(None, {"CRYPTOJ_API__HOST": "0.0.0.0", "CRYPTOJ_API__ALLOW_NON_LOOPBACK": "true"})
    assert config.api.host == "0.0.0.0"
    assert load_config(None, {"CRYPTOJ_LOGGING__LEVEL": "debug"}).logging.level == "DEBUG"
    assert "less than or equal to 65535" in problems_of(None, {"CRYPTOJ_API__PORT": "70000"})["api.port"]


def test_toml_syntax_error_names_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path / "broken.toml", 'mode = "sim"\n[risk\nmax_open_orders = 1\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    [(key, message)] = info.value.problems
    assert key == ""
    assert "TOML syntax error" in message and "line 2" in message and "column" in message
    assert str(path) in message


def test_missing_and_unreadable_config_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml", {})
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(binary, {})


# --- exact decimals ------------------------------------------------------------------------------------


def test_toml_floats_become_exact_decimals(tmp_path: Path) -> None:
    path = write(
        tmp_path / "f.toml",
        "[risk]\nprice_band_fraction = 0.1\nmax_order_notional = 1000\nmax_total_exposure = 0.30000000000000004\n"
        "[strategy.params]\nalpha = 0.1\nnested = { beta = 2.5, list = [0.2, 1] }\n",
    )
    config = load_config(path, {})
    assert config.risk.price_band_fraction == Decimal("0.1")
    assert config.risk.max_order_notional == Decimal(1000)
    assert config.risk.max_total_exposure == Decimal("0.30000000000000004")
    assert config.strategy.params == {"alpha": Decimal("0.1"), "nested": {"beta": Decimal("2.5"), "list": [Decimal("0.2"), 1]}}


def test_non_finite_toml_floats_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "n.toml", "[risk]\nmax_order_notional = nan\nmax_total_exposure = inf\n")
    problems = problems_of(path)
    assert problems["risk.max_order_notional"] == "must be a finite number"
    assert problems["risk.max_total_exposure"] == "must be a finite number"


@settings(max_examples=75, deadline=None)
@given(st.decimals(min_value=0, max_value=Decimal("1e12"), allow_nan=False, allow_infinity=False, places=12))
def test_any_decimal_string_is_kept_exactly(value: Decimal) -> None:
    config = load_config(None, {"CRYPTOJ_RISK__MAX_ORDER_NOTIONAL": str(value)})
    assert config.risk.max_order_notional == value
    assert str(config.risk.max_order_notional) == str(value)


# --- key files -----------------------------------------------------------------------------------------


def test_valid_key_file_loads_and_never_shows_the_pem(tmp_path: Path, ec_pem: str) -> None:
    path = key_file(tmp_path, ec_pem)
    key = load_api_key(path)
    assert key.name == KEY_NAME
    assert key.private_key.get_secret_value().strip() == ec_pem.strip()
    for text in (repr(key), str(key), f"{key}", repr(key.model_dump())):
        assert "BEGIN" not in text and ec_pem.splitlines()[1] not in text
    assert check_key_file(path) == []


def test_ed25519_base64_key_is_accepted(tmp_path: Path) -> None:
    path = key_file(tmp_path, base64.b64encode(bytes(range(64))).decode())
    assert load_api_key(path).name == KEY_NAME


def test_world_readable_key_file_is_refused_with_the_fix(tmp_path: Path, ec_pem: str) -> None:
    path = key_file(tmp_path, ec_pem, mode=0o644)
    with pytest.raises(KeyFileError) as info:
        load_api_key(path)
    message = str(info.value)
    assert f"chmod 600 {path}" in message and "group/others" in message
    assert "BEGIN" not in message
    assert info.value.problems[0][0] == str(path)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"name": "x", ', "is not valid JSON"),
        ('["a"]', "must hold a JSON object"),
        ('{"privateKey": "abc"}', "missing the 'name' field"),
        ('{"name": "n", "privateKey": ""}', "missing the 'privateKey' field"),
        ('{"name": "n", "privateKey": "not a key"}', "neither a PEM private key"),
        ('{"name": "n", "privateKey": "-----BEGIN EC PRIVATE KEY-----\\nAAAA\\n-----END EC PRIVATE KEY-----"}', "not a valid"),
    ],
)
def test_malformed_key_files_name_path_and_problem(tmp_path: Path, content: str, expected: str) -> None:
    path = write(tmp_path / "k.json", content)
    with pytest.raises(KeyFileError) as info:
        load_api_key(path)
    assert expected in str(info.value) and str(path) in str(info.value)
    assert "AAAA" not in str(info.value)


def test_missing_key_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="does not exist"):
        load_api_key(tmp_path / "absent.json")
    (tmp_path / "dir.json").mkdir()
    assert check_key_file(tmp_path / "dir.json") == [f"key file {tmp_path / 'dir.json'} is not a regular file"]


def test_config_checks_the_key_file_relative_to_the_config(tmp_path: Path, ec_pem: str) -> None:
    (tmp_path / "conf").mkdir()
    key_file(tmp_path / "conf", ec_pem, mode=0o640)
    path = write(tmp_path / "conf" / "c.toml", '[exchange]\nkey_file = "key.json"\n')
    problem = problems_of(path)["exchange.key_file"]
    assert "chmod 600" in problem and str(tmp_path / "conf" / "key.json") in problem
    # not checked on request
    config = load_config(path, {}, check_key_file=False)
    assert config.exchange.key_file == tmp_path / "conf" / "key.json"
    os.chmod(tmp_path / "conf" / "key.json", 0o600)
    config = load_config(path, {})
    assert resolve_api_key(config, {}) is not None


def test_key_file_problem_reported_alongside_other_problems(tmp_path: Path, ec_pem: str) -> None:
    key_file(tmp_path, ec_pem, mode=0o604)
    path = write(tmp_path / "c.toml", '[exchange]\nkey_file = "key.json"\nkey_fil = "x"\n[risk]\nmax_open_orders = -1\n')
    problems = problems_of(path)
    assert set(problems) == {"exchange.key_fil", "exchange.key_file", "risk.max_open_orders"}


def test_resolve_api_key_from_env(ec_pem: str) -> None:
    config = load_config(None, {})
    assert resolve_api_key(config, {}) is None
    escaped = ec_pem.strip().replace("\n", "\\n")
    key = resolve_api_key(config, {API_KEY_NAME_ENV: KEY_NAME, API_PRIVATE_KEY_ENV: escaped})
    assert key is not None and key.name == KEY_NAME
    assert key.private_key.get_secret_value().strip() == ec_pem.strip()
    assert "BEGIN" not in repr(key)
    with pytest.raises(KeyFileError, match=f"{API_PRIVATE_KEY_ENV} is not set"):
        resolve_api_key(config, {API_KEY_NAME_ENV: KEY_NAME})
    with pytest.raises(KeyFileError, match=f"{API_KEY_NAME_ENV} is not set"):
        resolve_api_key(config, {API_PRIVATE_KEY_ENV: escaped})
    with pytest.raises(KeyFileError) as info:
        resolve_api_key(config, {API_KEY_NAME_ENV: KEY_NAME, API_PRIVATE_KEY_ENV: "hunter2"})
    assert "hunter2" not in str(info.value) and "neither a PEM" in str(info.value)


def test_resolve_api_key_uses_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(API_KEY_NAME_ENV, raising=False)
    monkeypatch.delenv(API_PRIVATE_KEY_ENV, raising=False)
    assert resolve_api_key(load_config(None, {})) is None


# --- masked dump ---------------------------------------------------------------------------------------


def test_masked_dump_hides_secrets_and_keeps_decimals_exact() -> None:
    env = {
        "CRYPTOJ_STORAGE__URL": "postgresql+asyncpg://trader:s3cret@db.local/cryptoj",
        "CRYPTOJ_STRATEGY__PARAMS__API_TOKEN": "tok-123",
        "CRYPTOJ_STRATEGY__PARAMS__WINDOW": "5",
        "CRYPTOJ_RISK__MAX_ORDER_NOTIONAL": "123.4500",
    }
    dumped = masked_dump(load_config(None, env))
    assert dumped["storage"]["url"] == "postgresql+asyncpg://trader:********@db.local/cryptoj"
    assert dumped["strategy"]["params"] == {"api_token": "********", "window": "5"}
    assert dumped["risk"]["max_order_notional"] == "123.4500"
    assert dumped["logging"]["json"] is False
    assert "s3cret" not in repr(dumped) and "tok-123" not in repr(dumped)


def test_storage_intent_journal_options() -> None:
    from cryptoj.config import StorageConfig

    assert StorageConfig().intent_options() == {"intents": "auto", "intents_sync": False}
    assert StorageConfig(intent_journal="off").intent_options() == {"intents": None, "intents_sync": False}
    assert StorageConfig(intent_journal="/var/lib/cj/intents", intent_sync=True).intent_options() == {
        "intents": "/var/lib/cj/intents", "intents_sync": True}
    with pytest.raises(ValidationError, match="intent_journal"):
        StorageConfig(intent_journal="  ")
