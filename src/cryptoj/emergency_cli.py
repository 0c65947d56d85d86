"""``cryptoj kill`` and ``cryptoj resume``: the operator's side of the kill switch.

``cryptoj kill`` writes the kill file (``storage.state_dir``/``emergency.kill_file``);
a running engine's :class:`~cryptoj.emergency_manager.EmergencyManager` sees it
within ``emergency.poll_interval_seconds`` and runs the kill sequence. The file
is written atomically (temp file + rename) and holds the reason and time as JSON.
``cryptoj kill --now [--flatten]`` also runs the kill sequence from the command
itself (REST only), for when no engine is running.

``cryptoj resume`` leaves HALTED: it connects to the venue (``exchange.*`` and the
API key), checks the venue answers (products, balances) and runs the order
manager's reconciliation against storage; only when both pass does it persist
ACTIVE (or REDUCE_ONLY with ``--reduce-only``) and remove the kill file. It exits 3
with every problem printed otherwise, and nothing changes. In ``mode = "paper"`` the
venue lives only inside the engine, so resume checks storage, clears the persisted
state and leaves the reconciliation to the engine's start (which reconciles
before trading and halts again on any disagreement).

Run ``resume`` while the engine is stopped: the engine reads the persisted state at
start (:meth:`~cryptoj.emergency_manager.EmergencyManager.restore`).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.console import Console
from rich.markup import escape

from cryptoj.config import AppConfig, load_config, resolve_api_key
from cryptoj.emergency_manager import EmergencyManager, KillReport, ResumeReport, Trigger
from cryptoj.errors import ConfigError, CryptojError, KeyFileError
from cryptoj.model.instruments import Product
from cryptoj.model.orders import Order
from cryptoj.model.positions import Balance
from cryptoj.order_execution import OrderManager
from cryptoj.risk_management import RiskEngine, TradingState
from cryptoj.storage import Storage
from cryptoj.venues.coinbase.auth import from_api_key
from cryptoj.venues.coinbase.rest import CoinbaseRestClient
from cryptoj.venues.coinbase.venue import CoinbaseVenue

__all__ = [
    "EXIT_CONFIG_INVALID",
    "EXIT_REFUSED",
    "kill_command",
    "print_kill_report",
    "resume_command",
    "run_kill_now",
    "run_resume",
    "write_kill_file",
]

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
    now: Annotated[
        bool, typer.Option("--now", help="Also run the kill here, against the venue (for when no engine is running).")
    ] = False,
    flatten: Annotated[bool, typer.Option("--flatten", help="With --now: also market-sell the base balances.")] = False,
) -> None:
    """Trip the kill switch: write the KILL file that the running engine watches.

    The engine halts, cancels every open order until the venue shows none, optionally
    flattens, and confirms via REST. Trading stays HALTED (across restarts) until
    ``cryptoj resume``. With ``--now`` this command runs that sequence itself (exit 0
    when the venue confirms, 3 when it does not).
    """
    cfg = _load(config)
    out = Console(soft_wrap=True, highlight=False)
    err = Console(stderr=True, soft_wrap=True, highlight=False)
    if now and cfg.mode == "paper":
        err.print("[bold red]--now needs a venue:[/bold red] in paper mode the venue lives inside the engine; "
                  "write the kill file (without --now) and let the engine act")
        raise typer.Exit(EXIT_CONFIG_INVALID)
    path = write_kill_file(cfg.storage.state_dir, cfg.emergency.kill_file, reason)
    out.print(f"[bold red]kill file written:[/bold red] {escape(str(path))}")
    if not now:
        out.print(
            f"a running engine trips the kill switch within {cfg.emergency.poll_interval_seconds}s; "
            "trading stays HALTED until `cryptoj resume`"
        )
        return
    try:
        report = asyncio.run(run_kill_now(cfg, reason, flatten=flatten))
    except (CryptojError, OSError) as exc:
        err.print(f"[bold red]kill failed:[/bold red] {type(exc).__name__}: {escape(str(exc))}")
        raise typer.Exit(EXIT_REFUSED) from None
    code = print_kill_report(report, out, err)
    if code:
        raise typer.Exit(code)


def print_kill_report(report: KillReport, out: Console, err: Console) -> int:
    """Print every step and the outcome; the exit code (0 confirmed, ``EXIT_REFUSED`` not)."""
    for step in report.steps:
        mark = "[green]ok[/green]" if step.ok else "[bold red]FAILED[/bold red]"
        out.print(f"  {mark} {escape(step.name)}: {escape(step.detail)}", emoji=False)
    if not report.confirmed:
        err.print(f"[bold red]kill NOT confirmed[/bold red]: open orders {report.open_after}, "
                  f"holdings {report.unflat}; act by hand")
        return EXIT_REFUSED
    out.print(f"[green]kill confirmed[/green] in {report.elapsed_seconds:.3f}s; trading stays HALTED until `cryptoj resume`")
    return 0


async def run_kill_now(cfg: AppConfig, reason: str, *, flatten: bool = False) -> KillReport:
    """What ``cryptoj kill --now`` does: the kill sequence from this process, against the venue."""
    storage = await Storage.open(cfg.storage.url, **cfg.storage.intent_options())
    try:
        om, venue = _order_manager(cfg, storage)
        try:
            await om.start(background=False)
            products = {pid: om.product(pid) for pid in cfg.products}
            manager = EmergencyManager(
                orders=om, risk=RiskEngine(cfg.risk, _NoTrading(), _utc_now), storage=storage,
                state_dir=cfg.storage.state_dir, config=cfg.emergency, clock=_utc_now, products=lambda: products,
                cancel_venue_orders=venue.cancel_orders,
            )
            return await manager.trigger(Trigger.MANUAL, reason, flatten=flatten)
        finally:
            await om.close()
    finally:
        await storage.close()


NO_KEY = "no API key: set exchange.key_file or CRYPTOJ_API_KEY_NAME/CRYPTOJ_API_PRIVATE_KEY"


def _order_manager(cfg: AppConfig, storage: Storage) -> tuple[OrderManager, CoinbaseVenue]:
    """A REST-only order manager on the configured venue (no user stream, no startup reconciliation)."""
    api_key = resolve_api_key(cfg)
    if api_key is None:
        raise KeyFileError([("exchange.key_file", NO_KEY)])
    rest = CoinbaseRestClient(
        cfg.exchange.rest_base_url, from_api_key(api_key), timeout=cfg.exchange.request_timeout,
        public_rate=cfg.exchange.public_rate_limit, private_rate=cfg.exchange.private_rate_limit,
    )
    venue = CoinbaseVenue(rest, None)
    return OrderManager(venue, storage, config=cfg.execution.model_copy(update={"reconcile_on_start": False})), venue


# --- resume -----------------------------------------------------------------------------


def _utc_now() -> datetime:
    return datetime.now(UTC)


class _NoTrading:
    """The risk context of the resume command: it places no order, so it knows no market."""

    def product(self, product_id: str) -> Product | None:
        return None

    def mid_price(self, product_id: str) -> Decimal | None:
        return None

    def data_age(self, product_id: str) -> float | None:
        return None

    def position_size(self, product_id: str) -> Decimal:
        return Decimal(0)

    def balance(self, currency: str) -> Balance:
        return Balance(currency)

    def open_orders(self) -> Sequence[Order]:
        return []

    def fee_rate(self, product_id: str) -> Decimal:
        return Decimal(0)

    def product_ids(self) -> Sequence[str]:
        return []


async def run_resume(cfg: AppConfig, reason: str, state: TradingState = TradingState.ACTIVE) -> ResumeReport:
    """What ``cryptoj resume`` does (see the module doc); returns the report."""
    storage = await Storage.open(cfg.storage.url, **cfg.storage.intent_options())
    try:
        if cfg.mode == "paper":
            return await _resume_paper(cfg, storage, reason, state)
        try:
            om, venue = _order_manager(cfg, storage)
        except KeyFileError as exc:
            return ResumeReport(False, [msg for _, msg in exc.problems], TradingState.HALTED)

        async def venue_answers() -> list[str]:
            problems: list[str] = []
            if not await venue.products():
                problems.append("the venue lists no products")
            await venue.balances()
            return problems

        try:
            try:
                await om.start(background=False)
            except CryptojError as exc:
                return ResumeReport(False, [f"cannot reach the venue: {type(exc).__name__}: {exc}"], TradingState.HALTED)
            risk = RiskEngine(cfg.risk, _NoTrading(), _utc_now)
            manager = EmergencyManager(
                orders=om, risk=risk, storage=storage, state_dir=cfg.storage.state_dir, config=cfg.emergency, clock=_utc_now,
                products=dict, health_checks=[venue_answers],
            )
            await manager.restore(rerun_unconfirmed=False, watch_kill_file=False)
            return await manager.resume(reason, state=state)
        finally:
            await om.close()
    finally:
        await storage.close()


async def _resume_paper(cfg: AppConfig, storage: Storage, reason: str, state: TradingState) -> ResumeReport:
    now = _utc_now()
    kill_file = cfg.storage.state_dir / cfg.emergency.kill_file
    try:
        kill_file.unlink(missing_ok=True)
    except OSError as exc:
        return ResumeReport(False, [f"cannot remove kill file {kill_file}: {exc.strerror}"], TradingState.HALTED)
    async with storage.transaction():
        await storage.set_trading_state(state.value, reason, emergency=None, at=now)
        await storage.append_journal(
            "emergency.resume", {"reason": reason, "state": state.value, "mode": "paper", "reconciliation": "at engine start"},
            at=now,
        )
    return ResumeReport(True, [], state)


def resume_command(
    config: ConfigOption = None,
    reason: Annotated[str, typer.Option(help="Why (recorded with the resume).")] = "operator: cryptoj resume",
    reduce_only: Annotated[bool, typer.Option("--reduce-only", help="Resume to REDUCE_ONLY instead of ACTIVE.")] = False,
) -> None:
    """Leave HALTED after the venue health checks and a reconciliation pass (run it while the engine is stopped).

    Exits 0 when the persisted state is now ACTIVE (or REDUCE_ONLY), 3 with every
    problem listed when a check failed (nothing changed), 2 on a bad config.
    """
    cfg = _load(config)
    out = Console(soft_wrap=True, highlight=False)
    err = Console(stderr=True, soft_wrap=True, highlight=False)
    state = TradingState.REDUCE_ONLY if reduce_only else TradingState.ACTIVE
    try:
        report = asyncio.run(run_resume(cfg, reason, state))
    except (CryptojError, OSError) as exc:  # storage cannot be opened, a key file vanished...
        err.print(f"[bold red]resume failed:[/bold red] {type(exc).__name__}: {escape(str(exc))}")
        raise typer.Exit(EXIT_REFUSED) from None
    if not report.ok:
        count = len(report.problems)
        err.print(f"[bold red]resume refused[/bold red] ({count} problem{'s' if count != 1 else ''}); trading stays HALTED:")
        for problem in report.problems:
            err.print(f"  - {escape(problem)}", emoji=False)
        raise typer.Exit(EXIT_REFUSED)
    out.print(f"[green]resumed:[/green] trading state is {report.state.value} (mode={cfg.mode})")
