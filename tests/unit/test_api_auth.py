"""The API token file and bearer checks; serving rules (loopback, start failures, token announcement)."""

from __future__ import annotations

import io
import os
import socket
from pathlib import Path

import pytest

from cryptoj.api.app import ServedApi, announce_token, create_app, is_loopback, serve_app
from cryptoj.api.auth import TOKEN_FILE, check_bearer, load_or_create_token, read_token
from cryptoj.errors import ConfigError, InvalidValue
from cryptoj.storage import Storage
from tests.api_support import LocalView as View
from tests.api_support import StepClock


def test_first_start_creates_a_0600_token_then_reuses_it(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = load_or_create_token(state)
    assert first.created and first.path == state / TOKEN_FILE
    assert os.stat(first.path).st_mode & 0o777 == 0o600
    assert len(first.value) >= 40
    again = load_or_create_token(state)
    assert not again.created and again.value == first.value
    assert read_token(state) == first.value
    assert first.value not in repr(first) and first.value not in str(first)


def test_a_readable_token_file_is_refused(tmp_path: Path) -> None:
    tok = load_or_create_token(tmp_path)
    os.chmod(tok.path, 0o644)
    with pytest.raises(ConfigError) as err:
        load_or_create_token(tmp_path)
    assert str(tok.path) in str(err.value) and "chmod 600" in str(err.value)
    assert tok.value not in str(err.value)


@pytest.mark.parametrize("content", ["short", "two words " * 8, ""])
def test_a_bad_token_file_is_refused(tmp_path: Path, content: str) -> None:
    path = tmp_path / TOKEN_FILE
    path.write_text(content)
    os.chmod(path, 0o600)
    with pytest.raises(ConfigError, match="at least 32 characters"):
        read_token(tmp_path)


def test_missing_or_odd_token_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the API token file"):
        read_token(tmp_path)
    (tmp_path / TOKEN_FILE).mkdir()
    os.chmod(tmp_path / TOKEN_FILE, 0o700)
    with pytest.raises(ConfigError, match="not a regular file"):
        read_token(tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="cannot create the state directory"):
        load_or_create_token(blocker / "state")


@pytest.mark.parametrize(("header", "ok"), [
    ("Bearer " + "k" * 32, True), ("bearer " + "k" * 32, True), ("Bearer " + "k" * 31, False), ("Basic " + "k" * 32, False),
    ("Bearer", False), ("", False), (None, False), ("Bearer  " + "k" * 32, True),
])
def test_check_bearer(header: str | None, ok: bool) -> None:
    assert check_bearer(header, "k" * 32) is ok


def test_loopback_detection() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("127.9.9.9")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.1") and not is_loopback("example.org")
    assert ServedApi("::1", 8080).url == "http://[::1]:8080"


async def test_non_loopback_needs_the_explicit_setting(tmp_path: Path) -> None:
    clock = StepClock()
    storage = await Storage.open(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}", clock=clock)
    try:
        app = create_app(View(storage, clock), token="z" * 32)
        with pytest.raises(InvalidValue, match="allow_non_loopback"):
            async with serve_app(app, "0.0.0.0", 0):
                pass
        # a port already taken: a clear error, not a hang
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            port = busy.getsockname()[1]
            with pytest.raises(InvalidValue, match="did not start"):
                async with serve_app(app, "127.0.0.1", port):
                    pass
        async with serve_app(app, "127.0.0.1", 0) as served:
            assert served.port > 0 and served.url.startswith("http://127.0.0.1:")
    finally:
        await storage.close()


def test_the_token_is_announced_once_to_the_terminal() -> None:
    out = io.StringIO()
    announce_token("abc" * 12, "/state/api_token", out)
    text = out.getvalue()
    assert "abc" * 12 in text and "/state/api_token" in text and "only this once" in text
