"""``cryptoj kill`` writes the kill file the engine watches (atomically, with the reason)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from cryptoj.cli import app
from cryptoj.emergency_cli import write_kill_file

pytestmark = pytest.mark.unit


def test_kill_writes_the_kill_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "state"
    monkeypatch.setenv("CRYPTOJ_STORAGE__STATE_DIR", str(state))
    monkeypatch.setenv("CRYPTOJ_EMERGENCY__KILL_FILE", "STOP")
    result = CliRunner().invoke(app, ["kill", "--reason", "fat finger"])
    assert result.exit_code == 0, result.output
    assert "kill file written" in result.output
    data = orjson.loads((state / "STOP").read_bytes())
    assert data["reason"] == "fat finger" and data["time"] and data["pid"]
    assert sorted(p.name for p in state.iterdir()) == ["STOP"]  # no temp file left behind


def test_kill_with_a_bad_config_exits_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRYPTOJ_EMERGENCY__KILL_FILE", "../escape")
    result = CliRunner().invoke(app, ["kill"])
    assert result.exit_code == 2
    assert "emergency.kill_file" in result.output


def test_write_kill_file_cleans_up_on_failure(tmp_path: Path) -> None:
    (tmp_path / "KILL").mkdir()  # a directory in the way: the rename fails
    with pytest.raises(OSError):
        write_kill_file(tmp_path, "KILL", "x")
    assert [p.name for p in tmp_path.iterdir()] == ["KILL"]
