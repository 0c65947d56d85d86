"""``cryptoj status`` / ``orders`` / ``positions`` / ``api-kill`` / ``api-resume``: the CLI side of the operator API.

Each command talks to the running engine's API (``http://{api.host}:{api.port}``, or
``--url``) with the token from ``<storage.state_dir>/api_token`` and renders rich
tables. When nothing answers it says so clearly (exit 3); a refused token exits 4;
a kill the venue did not confirm, or a refused resume, exits 5.

``cryptoj kill`` / ``cryptoj resume`` (``cryptoj.emergency_cli``) work without a
running API (kill file; resume against the venue). ``api-kill`` / ``api-resume`` do
the same through a running engine's API and print the kill report / the resume
problems at once.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cryptoj.api.auth import read_token
from cryptoj.config import AppConfig, load_config
from cryptoj.errors import ConfigError, CryptojError

__all__ = [
    "EXIT_NO_ENGINE",
    "EXIT_REFUSED",
    "EXIT_UNAUTHORIZED",
    "ApiUnauthorized",
    "ApiUnreachable",
    "OperatorClient",
    "api_kill_command",
    "api_resume_command",
    "orders_command",
    "positions_command",
    "status_command",
]

EXIT_CONFIG_INVALID = 2
EXIT_NO_ENGINE = 3
EXIT_UNAUTHORIZED = 4
EXIT_REFUSED = 5


class ApiUnreachable(CryptojError):
    """No engine API answers at the URL."""


class ApiUnauthorized(CryptojError):
    """The engine refused the token."""


@dataclass(frozen=True, slots=True)
class OperatorClient:
    """A small synchronous client of the operator API (stdlib HTTP; the token never appears in errors)."""

    base_url: str
    token: str
    timeout: float = 60.0

    def __repr__(self) -> str:
        return f"OperatorClient(base_url={self.base_url!r})"

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base_url.rstrip("/") + path, data=data, method=method,  # noqa: S310 - http(s) only
                                     headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
        if not req.full_url.startswith(("http://", "https://")):
            raise ApiUnreachable(f"{self.base_url}: not an http(s) URL")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            if exc.code == 401:
                raise ApiUnauthorized(f"the engine at {self.base_url} refused the token") from None
            try:
                detail = json.loads(exc.read()).get("detail")
            except (ValueError, AttributeError):
                detail = exc.reason
            raise CryptojError(f"{method} {path}: HTTP {exc.code}: {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ApiUnreachable(f"no engine API answers at {self.base_url} ({reason}); is `cryptoj run` or `cryptoj demo` "
                                 "running with this config?") from None

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self.request("POST", path, body)


ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="The TOML config file (default: defaults + CRYPTOJ_* env).", dir_okay=False)
]
UrlOption = Annotated[str | None, typer.Option("--url", help="The engine API's URL (default: from api.host / api.port).")]


def _client(config_path: Path | None, url: str | None) -> OperatorClient:
    err = Console(stderr=True, soft_wrap=True, highlight=False)
    try:
        cfg: AppConfig = load_config(config_path, os.environ, check_key_file=False)
        token = read_token(cfg.storage.state_dir)
    except ConfigError as exc:
        for path, message in exc.problems:
            err.print(f"[bold]{escape(path or '(config)')}[/bold]: {escape(message)}", emoji=False)
        if any("api_token" in path for path, _ in exc.problems):
            err.print("no API token: is an engine running with this state directory (storage.state_dir)?")
        raise typer.Exit(EXIT_CONFIG_INVALID) from None
    host = f"[{cfg.api.host}]" if ":" in cfg.api.host else cfg.api.host
    return OperatorClient(url or f"http://{host}:{cfg.api.port}", token)


def _call(client: OperatorClient, fn: Any) -> Any:
    err = Console(stderr=True, soft_wrap=True, highlight=False)
    try:
        return fn(client)
    except ApiUnreachable as exc:
        err.print(f"[bold red]{escape(str(exc))}[/bold red]")
        raise typer.Exit(EXIT_NO_ENGINE) from None
    except ApiUnauthorized as exc:
        err.print(f"[bold red]{escape(str(exc))}[/bold red] (the token file belongs to another state directory?)")
        raise typer.Exit(EXIT_UNAUTHORIZED) from None
    except CryptojError as exc:
        err.print(f"[bold red]{escape(str(exc))}[/bold red]")
        raise typer.Exit(1) from None


def _out() -> Console:
    return Console(soft_wrap=True, highlight=False)


def _v(value: Any) -> str:
    return "–" if value is None else escape(str(value))


def status_command(config: ConfigOption = None, url: UrlOption = None) -> None:
    """Show the running engine: mode, uptime, trading state, feeds and reconciliation."""
    st = _call(_client(config, url), lambda c: c.get("/api/status"))
    out = _out()
    colour = {"ACTIVE": "green", "REDUCE_ONLY": "yellow", "HALTED": "red"}.get(st["trading_state"], "white")
    out.print(f"mode [bold]{_v(st['mode'])}[/bold] · up {st['uptime_s']:.0f}s · state [bold {colour}]{_v(st['trading_state'])}"
              f"[/bold {colour}] ({_v(st['trading_state_reason'])})" + (" · KILL IN PROGRESS" if st["kill_in_progress"] else ""))
    feeds = Table(title="feeds")
    for col in ("product", "connected", "book", "last data", "resyncs", "mid"):
        feeds.add_column(col)
    for f in st["feeds"]:
        age = f["last_message_age_s"]
        feeds.add_row(_v(f["product_id"]), "yes" if f["connected"] else "[red]no[/red]", "ok" if f["book_valid"] else "resync",
                      "never" if age is None else f"{age:.1f}s", str(f["resyncs"]), _v(f["mid_price"]))
    out.print(feeds)
    rec = st["reconciliation"]
    verdict = "not run yet" if rec["ok"] is None else "ok" if rec["ok"] else "FAILED: " + "; ".join(rec["problems"])
    out.print(f"reconciliation: {escape(verdict)}")


def orders_command(
    config: ConfigOption = None,
    url: UrlOption = None,
    state: Annotated[str, typer.Option(help="open, recent or all.")] = "open",
    product: Annotated[str | None, typer.Option(help="Only this product, e.g. BTC-USD.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
) -> None:
    """List orders (open by default), newest first."""
    if state not in ("open", "recent", "all"):
        raise typer.BadParameter("choose open, recent or all", param_hint="--state")
    params: dict[str, str | int] = {"state": state, "limit": limit}
    if product:
        params["product_id"] = product
    query = "/api/orders?" + urllib.parse.urlencode(params)
    rows = _call(_client(config, url), lambda c: c.get(query))
    table = Table(title=f"orders ({state})")
    for col in ("client id", "product", "side", "kind", "price", "size", "filled", "status", "updated"):
        table.add_column(col)
    for o in rows:
        size = o["base_size"] or (f"{o['quote_size']} (quote)" if o["quote_size"] else None)
        table.add_row(_v(o["client_order_id"]), _v(o["product_id"]), _v(o["side"]), _v(o["kind"]), _v(o["limit_price"]),
                      _v(size), _v(o["filled_size"]), _v(o["status"]), _v(o["updated_at"]))
    _out().print(table if rows else f"no {state} orders")


def positions_command(config: ConfigOption = None, url: UrlOption = None) -> None:
    """Positions (with marks and PnL) and balances."""
    client = _client(config, url)
    positions = _call(client, lambda c: c.get("/api/positions"))
    balances = _call(client, lambda c: c.get("/api/balances"))
    out = _out()
    table = Table(title="positions")
    for col in ("product", "size", "avg entry", "mark", "unrealised", "realised", "fees"):
        table.add_column(col)
    for p in positions:
        table.add_row(_v(p["product_id"]), _v(p["size"]), _v(p["avg_entry_price"]), _v(p["mark_price"]), _v(p["unrealised_pnl"]),
                      _v(p["realised_pnl"]), _v(p["fees_paid"]))
    out.print(table if positions else "no positions")
    bal = Table(title="balances")
    for col in ("currency", "available", "hold", "total"):
        bal.add_column(col)
    for b in balances:
        bal.add_row(_v(b["currency"]), _v(b["available"]), _v(b["hold"]), _v(b["total"]))
    out.print(bal)


def api_kill_command(
    config: ConfigOption = None,
    url: UrlOption = None,
    reason: Annotated[str, typer.Option(help="Why (recorded with the kill).")] = "operator: cryptoj api-kill",
    flatten: Annotated[bool, typer.Option("--flatten", help="Also close positions with market orders.")] = False,
) -> None:
    """Trip the kill switch through the running engine's API and print its report (exit 5 if not confirmed)."""
    report = _call(_client(config, url), lambda c: c.post("/api/kill", {"reason": reason, "flatten": flatten}))
    out = _out()
    verdict = "[bold green]CONFIRMED[/bold green]" if report["confirmed"] else "[bold red]NOT CONFIRMED[/bold red]"
    out.print(f"kill {verdict}: state {_v(report['trading_state'])}, cancelled {len(report['cancelled'])} order(s), "
              f"open after: {len(report['open_after'])}, {report['elapsed_s']:.3f}s")
    for step in report["steps"]:
        out.print(f"  {'ok ' if step['ok'] else 'BAD'} {_v(step['name'])}: {_v(step['detail'])}")
    if not report["confirmed"]:
        raise typer.Exit(EXIT_REFUSED)


def api_resume_command(
    config: ConfigOption = None,
    url: UrlOption = None,
    reason: Annotated[str, typer.Option(help="Why (recorded).")] = "operator: cryptoj api-resume",
    reduce_only: Annotated[bool, typer.Option("--reduce-only", help="Resume to REDUCE_ONLY instead of ACTIVE.")] = False,
) -> None:
    """Leave HALTED through the running engine's API (health checks + reconciliation first; exit 5 with the problems)."""
    body = {"reason": reason, "state": "REDUCE_ONLY" if reduce_only else "ACTIVE"}
    result = _call(_client(config, url), lambda c: c.post("/api/resume", body))
    out = _out()
    if result["ok"]:
        out.print(f"[green]resumed[/green]: state {_v(result['trading_state'])}")
        return
    out.print(f"[bold red]resume refused[/bold red] (state {_v(result['trading_state'])}):")
    for problem in result["problems"]:
        out.print(f"  - {escape(problem)}")
    raise typer.Exit(EXIT_REFUSED)
