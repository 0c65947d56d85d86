"""``cryptoj kill`` and ``cryptoj resume``: the operator's side of the kill switch.

``cryptoj kill`` writes the kill file (``storage.state_dir``/``emergency.kill_file``);
a running engine's :class:`~cryptoj.emergency_manager.EmergencyManager` sees it
within ``emergency.poll_interval_seconds`` and runs the kill sequence. The file
is written atomically (temp file + rename) and holds the reason and time as JSON.

``cryptoj resume`` leaves HALTED: it re-runs the health checks and a
reconciliation against the venue first, and only when both pass does it persist
ACTIVE (or REDUCE_ONLY) and remove the kill file.
"""

from __future__ import annotations

import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.console import Console
from rich.markup import escape

from cryptoj.config import AppConfig, load_config
from cryptoj.errors import ConfigError

__all__ = ["EXIT_CONFIG_INVALID", "EXIT_REFUSED", "kill_command", "write_kill_file"]

EXIT_CONFIG_INVALID = 2
EXIT_REFUSED = 3

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="The TOML config file (default: defaults + CRYPTOJ_* env).", dir_okay=False)
]


def _load(config_path: Path | None) -> AppConfig:
    err = Console(stderr=True, soft_wrap=True, highlight=False)
    try:
        return load_config(config_path, os.environ, check_key_file=False)
    except ConfigError as exc:
        for path, message in exc.problems:
            err.print(f"  [bold]{escape(path or '(file)')}[/bold]: {escape(message)}", emoji=False)
        raise typer.Exit(EXIT_CONFIG_INVALID) from None


def write_kill_file(state_dir: Path, name: str, reason: str, now: datetime | None = None) -> Path:
    """Create ``state_dir/name`` atomically with ``{"reason", "time", "pid"}``; returns its path."""
    state_dir.mkdir(parents=True, exist_ok=True)
    target = state_dir / name
    payload = {"reason": reason, "time": (now or datetime.now(UTC)).isoformat(), "pid": os.getpid()}
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=state_dir)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(orjson.dumps(payload))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def kill_command(
    config: ConfigOption = None,
    reason: Annotated[str, typer.Option(help="Why (recorded with the kill).")] = "operator: cryptoj kill",
) -> None:
    """Trip the kill switch: write the KILL file that the running engine watches.

    The engine halts, cancels every open order until the venue shows none, optionally
    flattens, and confirms via REST. Trading stays HALTED (across restarts) until
    ``cryptoj resume``.
    """
    cfg = _load(config)
    path = write_kill_file(cfg.storage.state_dir, cfg.emergency.kill_file, reason)
    out = Console(soft_wrap=True, highlight=False)
    out.print(f"[bold red]kill file written:[/bold red] {escape(str(path))}")
    out.print(
        f"a running engine trips the kill switch within {cfg.emergency.poll_interval_seconds}s; "
        "trading stays HALTED until `cryptoj resume`"
    )
