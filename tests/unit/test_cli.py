"""The cryptoj CLI, driven through typer's CliRunner."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from typer.testing import CliRunner

from cryptoj import __version__
from cryptoj.cli import app

pytestmark = pytest.mark.unit

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "example.toml"


@pytest.fixture
def runner() -> Iterator[CliRunner]:
    yield CliRunner()
    # the CLI configures logging globally; undo it for the next test
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_cryptoj_handler", False)]:
        root.removeHandler(handler)
    root.setLevel(logging.WARNING)
    structlog.reset_defaults()


def clean_env() -> dict[str, str | None]:
    """Unset every CRYPTOJ_* variable of the outer environment for the invocation."""
    return {name: None for name in os.environ if name.upper().startswith("CRYPTOJ_")}


def test_version(runner: CliRunner) -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"cryptoj {__version__}"


def test_no_arguments_shows_help(runner: CliRunner) -> None:
    result = runner.invoke(app, [])
    assert "config" in result.output and "--log-json" in result.output
    assert result.exit_code == 2  # no_args_is_help: usage shown, exit code 2 like any usage error


def test_config_check_example_exits_0_and_prints_the_config(runner: CliRunner) -> None:
    result = runner.invoke(app, ["config", "check", str(EXAMPLE)], env=clean_env())
    assert result.exit_code == 0, result.output
    assert "OK (mode=sim)" in result.output
    body = json.loads(result.output[result.output.index("{") :])
    assert body["products"] == ["BTC-USD", "ETH-USD"]
    assert body["risk"]["max_order_notional"] == "1000"


def test_config_check_names_typo_negative_limit_and_world_readable_key(runner: CliRunner, tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    ).decode()
    key_path = tmp_path / "cdp_api_key.json"
    key_path.write_text(json.dumps({"name": "organizations/o/apiKeys/k", "privateKey": pem}))
    os.chmod(key_path, 0o644)
    config = tmp_path / "bad.toml"
    config.write_text(
        'mode = "sim"\n'
        "[exchange]\n"
        'key_file = "cdp_api_key.json"\n'
        "[risk]\n"
        'max_order_notional = "-100"\n'
        'max_open_order = 5\n'  # typo for max_open_orders
    )
    result = runner.invoke(app, ["config", "check", str(config)], env=clean_env())
    assert result.exit_code == 2, result.output
    out = result.output
    assert "3 problems" in out
    assert "risk.max_open_order: unknown key (did you mean 'max_open_orders'?)" in out
    assert "risk.max_order_notional: Input should be greater than or equal to 0" in out
    assert "exchange.key_file:" in out and f"chmod 600 {key_path}" in out
    assert "BEGIN" not in out and pem.splitlines()[1] not in out


def test_config_check_reports_toml_syntax_errors(runner: CliRunner, tmp_path: Path) -> None:
    config = tmp_path / "broken.toml"
    config.write_text("[risk\n")
    result = runner.invoke(app, ["config", "check", str(config)], env=clean_env())
    assert result.exit_code == 2
    assert "1 problem" in result.output and "(file)" in result.output and "line 1" in result.output


def test_config_check_applies_env_overrides(runner: CliRunner) -> None:
    env = {**clean_env(), "CRYPTOJ_RISK__MAX_ORDER_NOTIONAL": "-1"}
    result = runner.invoke(app, ["config", "check", str(EXAMPLE)], env=env)
    assert result.exit_code == 2
    assert "risk.max_order_notional" in result.output


def test_config_check_masks_secrets(runner: CliRunner) -> None:
    env = {**clean_env(), "CRYPTOJ_STORAGE__URL": "postgresql+asyncpg://me:topsecret@db/x"}
    result = runner.invoke(app, ["config", "check", str(EXAMPLE)], env=env)
    assert result.exit_code == 0, result.output
    assert "topsecret" not in result.output and "me:********@db/x" in result.output


def test_global_log_options(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["--log-json", "--log-level", "debug", "config", "check", str(EXAMPLE)], env=clean_env())
    assert result.exit_code == 0, result.output
    root = logging.getLogger()
    assert root.level == logging.DEBUG
    bad = runner.invoke(app, ["--log-level", "LOUD", "config", "check", str(EXAMPLE)], env=clean_env())
    assert bad.exit_code == 2
    assert "unknown log level" in bad.output


def test_missing_config_file(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["config", "check", str(tmp_path / "absent.toml")], env=clean_env())
    assert result.exit_code == 2
    assert "config file not found" in result.output


def test_python_dash_m_runs_the_same_app(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import runpy
    import sys

    monkeypatch.setattr(sys, "argv", ["cryptoj", "--version"])
    with pytest.raises(SystemExit) as info:
        runpy.run_module("cryptoj", run_name="__main__")
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"cryptoj {__version__}"
    import importlib

    module = importlib.import_module("cryptoj.__main__")  # importing it does not run the CLI
    assert module.app is app
