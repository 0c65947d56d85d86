"""``cryptoj status / orders / positions / api-kill / api-resume`` against a real API server (uvicorn in a thread)."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cryptoj.api.auth import TOKEN_FILE
from cryptoj.cli import app
from tests.api_support import ServerThread

TOKEN = "c" * 40
runner = CliRunner()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerThread]:
    srv = ServerThread(tmp_path / "api.db", TOKEN)
    srv.thread.start()
    srv.wait_ready()
    yield srv
    srv.stop()


def _state(tmp_path: Path, token: str = TOKEN) -> dict[str, str]:
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    path = state / TOKEN_FILE
    path.write_text(token + "\n")
    os.chmod(path, 0o600)
    return {"CRYPTOJ_STORAGE__STATE_DIR": str(state), "COLUMNS": "200"}


def test_status_orders_positions(server: ServerThread, tmp_path: Path) -> None:
    env = _state(tmp_path)
    st = runner.invoke(app, ["status", "--url", server.url], env=env)
    assert st.exit_code == 0, st.output
    assert "mode sim" in st.output and "ACTIVE" in st.output and "BTC-USD" in st.output and "reconciliation: ok" in st.output
    orders = runner.invoke(app, ["orders", "--url", server.url], env=env)
    assert orders.exit_code == 0 and "t-2" in orders.output and "OPEN" in orders.output and "t-1" in orders.output
    recent = runner.invoke(app, ["orders", "--url", server.url, "--state", "recent"], env=env)
    assert recent.exit_code == 0 and "no recent orders" in recent.output
    eth = runner.invoke(app, ["orders", "--url", server.url, "--product", "ETH-USD"], env=env)
    assert "t-2" in eth.output and "t-1" not in eth.output
    bad = runner.invoke(app, ["orders", "--url", server.url, "--state", "closed"], env=env)
    assert bad.exit_code == 2
    pos = runner.invoke(app, ["positions", "--url", server.url], env=env)
    assert pos.exit_code == 0 and "BTC-USD" in pos.output and "0.05" in pos.output and "USD" in pos.output


def test_api_kill_and_resume(server: ServerThread, tmp_path: Path) -> None:
    env = _state(tmp_path)
    killed = runner.invoke(app, ["api-kill", "--url", server.url, "--reason", "cli test"], env=env)
    assert killed.exit_code == 0, killed.output
    assert "CONFIRMED" in killed.output and "HALTED" in killed.output
    assert "HALTED" in runner.invoke(app, ["status", "--url", server.url], env=env).output
    resumed = runner.invoke(app, ["api-resume", "--url", server.url, "--reduce-only"], env=env)
    assert resumed.exit_code == 0 and "REDUCE_ONLY" in resumed.output


def test_wrong_token_and_no_engine(server: ServerThread, tmp_path: Path) -> None:
    env = _state(tmp_path, token="w" * 40)
    r = runner.invoke(app, ["status", "--url", server.url], env=env)
    assert r.exit_code == 4 and "refused the token" in r.output
    assert "w" * 40 not in r.output
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = runner.invoke(app, ["positions", "--url", f"http://127.0.0.1:{port}"], env=_state(tmp_path))
    assert r.exit_code == 3 and "no engine API answers" in r.output and "cryptoj run" in r.output


def test_no_token_file_says_so(tmp_path: Path) -> None:
    r = runner.invoke(app, ["status"], env={"CRYPTOJ_STORAGE__STATE_DIR": str(tmp_path / "nothing"), "COLUMNS": "200"})
    assert r.exit_code == 2
    assert "is an engine running" in r.output


def test_refused_resume_and_api_errors(server: ServerThread, tmp_path: Path) -> None:
    env = _state(tmp_path)
    assert server.view is not None
    server.view.reconciled = server.view.reconciled.model_copy(update={"ok": False, "problems": ["BTC: 1 here, 0 there"]})
    r = runner.invoke(app, ["api-resume", "--url", server.url], env=env)
    assert r.exit_code == 5 and "resume refused" in r.output and "BTC: 1 here, 0 there" in r.output
    st = runner.invoke(app, ["status", "--url", server.url], env=env)
    assert "FAILED: BTC: 1 here, 0 there" in st.output
    bad = runner.invoke(app, ["orders", "--url", server.url, "--product", "not a product"], env=env)
    assert bad.exit_code == 1 and "HTTP 422" in bad.output
    ftp = runner.invoke(app, ["status", "--url", "ftp://127.0.0.1/x"], env=env)
    assert ftp.exit_code == 3 and "not an http(s) URL" in ftp.output
