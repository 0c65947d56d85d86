"""The ``cryptoj`` command line (typer + rich).

``cryptoj --version``, ``cryptoj config check FILE`` and, as other parts land,
the commands registered at the bottom of this module. Global options
``--log-json`` and ``--log-level`` come before the command:
``cryptoj --log-json config check config/example.toml``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from cryptoj import __version__
from cryptoj.config import load_config, masked_dump
from cryptoj.errors import ConfigError
from cryptoj.logging import configure_logging

__all__ = ["app", "config_app"]

EXIT_CONFIG_INVALID = 2

app = typer.Typer(
    name="cryptoj",
    help="CryptoJ Trader: an async automated cryptocurrency trading system.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals may hold secrets
)
config_app = typer.Typer(help="Inspect and validate configuration files.", no_args_is_help=True)
app.add_typer(config_app, name="config")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cryptoj {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    log_json: Annotated[bool, typer.Option("--log-json", help="Log JSON lines instead of the console format.")] = False,
    log_level: Annotated[str, typer.Option("--log-level", help="DEBUG, INFO, WARNING, ERROR or CRITICAL.")] = "INFO",
) -> None:
    """CryptoJ Trader command line."""
    try:
        configure_logging(log_level, json=log_json)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--log-level") from None


@config_app.command("check")
def config_check(
    file: Annotated[Path, typer.Argument(help="The TOML config file to check.", dir_okay=False)],
) -> None:
    """Validate FILE (plus CRYPTOJ_* env overrides and the key file).

    Prints every problem with its key path and exits 2, or prints the
    effective configuration with secrets masked and exits 0.
    """
    out = Console(soft_wrap=True, highlight=False)
    err = Console(stderr=True, soft_wrap=True, highlight=False)
    try:
        config = load_config(file, os.environ)
    except ConfigError as exc:
        count = len(exc.problems)
        err.print(f"[bold red]{escape(str(file))}: {count} problem{'s' if count != 1 else ''}[/bold red]")
        for path, message in exc.problems:
            err.print(f"  [bold]{escape(path or '(file)')}[/bold]: {escape(message)}", emoji=False)
        raise typer.Exit(EXIT_CONFIG_INVALID) from None
    out.print(f"[green]{escape(str(file))}: OK[/green] (mode={config.mode})")
    out.print_json(data=masked_dump(config))


# --- commands from other parts -------------------------------------------------------
# Register further commands here, importing only modules that exist, e.g.:
#     from cryptoj.venues.simulated.cli import sim_command
#     app.command("sim")(sim_command)

from cryptoj.recorder import record_command  # noqa: E402
from cryptoj.venues.simulated.cli import sim_command  # noqa: E402

app.command("sim")(sim_command)
app.command("record")(record_command)

from cryptoj.emergency_cli import kill_command  # noqa: E402

app.command("kill")(kill_command)

from cryptoj.demo import demo_command, run_command  # noqa: E402

app.command("run")(run_command)
app.command("demo")(demo_command)

from cryptoj.emergency_cli import resume_command  # noqa: E402

app.command("resume")(resume_command)

from cryptoj.backtest.cli import backtest_command, data_app  # noqa: E402

app.command("backtest")(backtest_command)
app.add_typer(data_app, name="data")

from cryptoj.api.client import (  # noqa: E402
    api_kill_command,
    api_resume_command,
    orders_command,
    positions_command,
    status_command,
)

app.command("status")(status_command)
app.command("orders")(orders_command)
app.command("positions")(positions_command)
app.command("api-kill")(api_kill_command)
app.command("api-resume")(api_resume_command)
