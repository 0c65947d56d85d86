"""``cryptoj sim`` for real: in-process, through typer's CliRunner, and as a subprocess, over 127.0.0.1.

Every test waits on a condition (the listening line, an HTTP answer, the process exit) with a
generous deadline; nothing sleeps for a fixed time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import socket
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import structlog
from typer.testing import CliRunner

from cryptoj.cli import app
from cryptoj.venues.simulated.cli import EXIT_BAD_CONFIG, build_config, run_simulator
from cryptoj.venues.simulated.keys import load_key_file

pytestmark = pytest.mark.integration

LISTENING = re.compile(r"^listening on (https?)://127\.0\.0\.1:(\d+)$")
DEADLINE_S = 60.0
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def runner() -> Iterator[CliRunner]:
    yield CliRunner()
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_cryptoj_handler", False)]:
        root.removeHandler(handler)
    root.setLevel(logging.WARNING)
    structlog.reset_defaults()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _get_json(url: str) -> tuple[int, object]:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return resp.status, await resp.json()


async def test_run_simulator_prints_the_real_port_serves_and_stops(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    key_path = tmp_path / "key.json"
    config = build_config(products="BTC-USD", market_rate=0.0, create_api_key=key_path, seed=5)
    stop = asyncio.Event()
    task = asyncio.ensure_future(run_simulator(config, stop=stop))
    line = ""
    async with asyncio.timeout(DEADLINE_S):
        while not line:
            if task.done():
                pytest.fail(f"run_simulator ended early: {task.result()!r}")
            line = capsys.readouterr().out.strip()
            if not line:
                await asyncio.sleep(0.01)
    match = LISTENING.match(line)
    assert match, line
    port = int(match.group(2))
    assert port > 0
    status, body = await _get_json(f"http://127.0.0.1:{port}/sim/admin/status")
    assert status == 200
    assert isinstance(body, dict) and body["products"] == ["BTC-USD"] and body["seed"] == 5
    # the created key file is a real CDP key the simulator accepts (mode 0600)
    assert load_key_file(key_path).name
    assert key_path.stat().st_mode & 0o777 == 0o600
    stop.set()
    async with asyncio.timeout(DEADLINE_S):
        assert await task == 0
    with pytest.raises(aiohttp.ClientConnectionError):
        await _get_json(f"http://127.0.0.1:{port}/sim/admin/status")


def test_cli_runner_serves_until_sigterm_and_exits_0(runner: CliRunner) -> None:
    """The registered command, in this process: SIGTERM (sent once the port answers) ends it with exit 0."""
    port = _free_port()
    answered = threading.Event()

    finished = threading.Event()

    def stop_when_listening() -> None:
        # only signal this process once *our* simulator answers (its admin status names seed 3), never a stranger
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline and not finished.is_set():
            with contextlib.suppress(OSError, ValueError):
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/sim/admin/status", timeout=1.0) as resp:
                    status = json.loads(resp.read())
                if status.get("seed") == 3 and status.get("products") == ["ETH-USD"] and not finished.is_set():
                    answered.set()
                    os.kill(os.getpid(), signal.SIGTERM)
                    return
            time.sleep(0.02)

    killer = threading.Thread(target=stop_when_listening, daemon=True)
    killer.start()
    try:
        result = runner.invoke(app, ["sim", "--port", str(port), "--products", "ETH-USD", "--market-rate", "0", "--seed", "3"])
    finally:
        finished.set()
    killer.join(DEADLINE_S)
    assert answered.is_set()
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines() == [f"listening on http://127.0.0.1:{port}"]


def test_port_in_use_exits_2_naming_host_and_port(runner: CliRunner) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = runner.invoke(app, ["sim", "--port", str(port), "--market-rate", "0"])
    assert result.exit_code == EXIT_BAD_CONFIG
    assert f"cryptoj sim: cannot listen on 127.0.0.1:{port}: Address already in use" in result.output
    assert "listening on" not in result.output


async def _start_process(*args: str) -> tuple[asyncio.subprocess.Process, int]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cryptoj", "sim", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPO, env=env,
    )
    assert proc.stdout is not None
    async with asyncio.timeout(DEADLINE_S):
        raw = await proc.stdout.readline()
    match = LISTENING.match(raw.decode().strip())
    if match is None:
        proc.kill()
        _, err = await proc.communicate()
        pytest.fail(f"unexpected first line {raw!r}; stderr: {err.decode()[-2000:]}")
    return proc, int(match.group(2))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_subprocess_answers_http_and_exits_0_on_signal(tmp_path: Path, sig: signal.Signals) -> None:
    key_path = tmp_path / "cdp.json"
    proc, port = await _start_process(
        "--port", "0", "--products", "BTC-USD,ETH-USD", "--seed", "9", "--market-rate", "5", "--speed", "2",
        "--create-api-key", str(key_path), "--fault-http-429", "1",
    )
    try:
        base = f"http://127.0.0.1:{port}"
        # the fault flag is live: the first public request is answered 429, the next one 200
        status, body = await _get_json(f"{base}/api/v3/brokerage/time")
        assert status == 429 and isinstance(body, dict) and body["error"] == "RATE_LIMIT_EXCEEDED"
        status, body = await _get_json(f"{base}/api/v3/brokerage/time")
        assert status == 200 and isinstance(body, dict) and int(body["epochSeconds"]) > 0
        status, status_body = await _get_json(f"{base}/sim/admin/status")
        assert status == 200 and isinstance(status_body, dict)
        assert status_body["products"] == ["BTC-USD", "ETH-USD"]
        assert status_body["speed"] == 2.0 and status_body["market_rate"] == 5.0
        status, book = await _get_json(f"{base}/sim/admin/book?product_id=BTC-USD&limit=50")
        assert status == 200 and isinstance(book, dict)
        assert len(book["bids"]) == 50 and len(book["asks"]) == 50
        assert load_key_file(key_path).name.startswith("organizations/")
    finally:
        if proc.returncode is None:
            proc.send_signal(sig)
    async with asyncio.timeout(DEADLINE_S):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()[-2000:]
    assert out.decode().strip() == ""  # the listening line was the only stdout line
    assert "Traceback" not in err.decode()


async def test_subprocess_bad_flag_exits_2_without_listening() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cryptoj", "sim", "--products", "BTC-EUR",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPO,
    )
    async with asyncio.timeout(DEADLINE_S):
        out, err = await proc.communicate()
    assert proc.returncode == EXIT_BAD_CONFIG
    assert out == b""
    assert "BTC-EUR is not a known product" in err.decode()
