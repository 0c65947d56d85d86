"""``cryptoj sim``: run the local Coinbase simulator until SIGINT/SIGTERM.

Registered by :mod:`cryptoj.cli` as ``app.command("sim")(sim_command)``. Prints exactly one
line, ``listening on http://HOST:PORT`` (``https`` with TLS; the real port when ``--port 0``),
then serves until interrupted and exits 0. Bad flags exit 2 with a message naming the flag.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from cryptoj.errors import ConfigError, CryptojError
from cryptoj.venues.simulated.market import parse_product_list
from cryptoj.venues.simulated.server import SimConfig, SimulatorServer, parse_balances

__all__ = ["build_config", "run_simulator", "sim_command"]

EXIT_BAD_CONFIG = 2
REPLAY_MODULE = "cryptoj.venues.simulated.replay"


def build_config(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    products: str = "BTC-USD,ETH-USD",
    seed: int = 1,
    speed: float = 1.0,
    market_rate: float = 10.0,
    balances: str = "USD=100000,BTC=1,ETH=10",
    create_api_key: Path | None = None,
    api_key_file: list[Path] | None = None,
    ssl_certfile: Path | None = None,
    ssl_keyfile: Path | None = None,
    replay: Path | None = None,
    private_rate_limit: int = 30,
    public_rate_limit: int = 10,
    faults: dict[str, Any] | None = None,
) -> SimConfig:
    """A validated :class:`SimConfig` from CLI-style values; :class:`ConfigError` names the bad flag."""
    try:
        product_ids = parse_product_list(products)
    except CryptojError as exc:
        raise ConfigError([("--products", str(exc))]) from None
    try:
        parsed_balances = parse_balances(balances)
    except CryptojError as exc:
        raise ConfigError([("--balances", str(exc))]) from None
    if replay is not None:
        if importlib.util.find_spec(REPLAY_MODULE) is None:
            raise ConfigError([("--replay", "replaying a recording in the simulator is not available in this version")])
        if not replay.is_file():
            raise ConfigError([("--replay", f"recording {replay} does not exist")])
    config = SimConfig(
        host=host,
        port=port,
        products=product_ids,
        seed=seed,
        speed=speed,
        market_rate=market_rate,
        balances=parsed_balances,
        api_key_files=list(api_key_file or []),
        create_api_key=create_api_key,
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
        replay=replay,
        private_rate_limit=private_rate_limit,
        public_rate_limit=public_rate_limit,
        faults={k: v for k, v in (faults or {}).items() if v is not None},
    )
    config.validate()
    return config


async def run_simulator(config: SimConfig, *, stop: asyncio.Event | None = None) -> int:
    """Start the simulator, print the listening line, serve until SIGINT/SIGTERM (or ``stop``)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    server = SimulatorServer(config)
    try:
        await server.start()
        sys.stdout.write(f"listening on {server.base_url}\n")
        sys.stdout.flush()
        await stop.wait()
    finally:
        await server.stop()
        for sig in installed:
            loop.remove_signal_handler(sig)
    return 0


def sim_command(
    host: Annotated[str, typer.Option(help="Interface to bind (the admin API only answers loopback peers).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port; 0 picks a free one (printed).")] = 0,
    products: Annotated[str, typer.Option(help="Comma-separated product ids.")] = "BTC-USD,ETH-USD",
    seed: Annotated[int, typer.Option(help="Seed of the synthetic market, ids and random faults.")] = 1,
    speed: Annotated[float, typer.Option(help="Market speed multiplier (events/s = market-rate × speed).")] = 1.0,
    market_rate: Annotated[float, typer.Option(help="Synthetic market events per second at speed 1 (0 = paused).")] = 10.0,
    balances: Annotated[str, typer.Option(help="Starting balances of the user account.")] = "USD=100000,BTC=1,ETH=10",
    create_api_key: Annotated[
        Path | None, typer.Option(help="Write a new CDP key file (mode 0600) that the simulator accepts.")
    ] = None,
    api_key_file: Annotated[
        list[Path] | None, typer.Option(help="Accept this existing CDP key file (repeatable).")
    ] = None,
    ssl_certfile: Annotated[Path | None, typer.Option(help="TLS certificate (PEM) — serve https/wss.")] = None,
    ssl_keyfile: Annotated[Path | None, typer.Option(help="TLS private key (PEM).")] = None,
    replay: Annotated[
        Path | None,
        typer.Option(help="Replay a recording (cryptoj record's .jsonl.gz) as the market: its level2 books, paced by --speed."),
    ] = None,
    private_rate_limit: Annotated[int, typer.Option(help="Private REST budget, requests/second per key.")] = 30,
    public_rate_limit: Annotated[int, typer.Option(help="Public REST budget, requests/second per IP.")] = 10,
    fault_ws_drop_after: Annotated[int | None, typer.Option(help="Drop every WS connection after N messages.")] = None,
    fault_ws_skip_seq_every: Annotated[int | None, typer.Option(help="Skip a sequence_num every N messages.")] = None,
    fault_ws_stall: Annotated[float | None, typer.Option(help="Stall all feeds for D seconds after start.")] = None,
    fault_http_429: Annotated[int | None, typer.Option(help="Answer the next K REST requests 429.")] = None,
    fault_http_5xx: Annotated[int | None, typer.Option(help="Answer the next K REST requests 503.")] = None,
    fault_http_5xx_probability: Annotated[
        float | None, typer.Option(help="Answer REST 503 with this seeded probability.")
    ] = None,
    fault_http_delay: Annotated[float | None, typer.Option(help="Delay every REST response by D seconds.")] = None,
    fault_drop_order_create: Annotated[
        int | None, typer.Option(help="Place the next K orders but drop the connection instead of answering.")
    ] = None,
) -> None:
    """Run the local Coinbase Advanced Trade simulator."""
    faults = {
        "ws_drop_after": fault_ws_drop_after,
        "ws_skip_seq_every": fault_ws_skip_seq_every,
        "ws_stall_seconds": fault_ws_stall,
        "http_429_next": fault_http_429,
        "http_5xx_next": fault_http_5xx,
        "http_5xx_probability": fault_http_5xx_probability,
        "http_delay_seconds": fault_http_delay,
        "drop_order_create_next": fault_drop_order_create,
    }
    try:
        config = build_config(
            host=host,
            port=port,
            products=products,
            seed=seed,
            speed=speed,
            market_rate=market_rate,
            balances=balances,
            create_api_key=create_api_key,
            api_key_file=api_key_file,
            ssl_certfile=ssl_certfile,
            ssl_keyfile=ssl_keyfile,
            replay=replay,
            private_rate_limit=private_rate_limit,
            public_rate_limit=public_rate_limit,
            faults=faults,
        )
        code = asyncio.run(run_simulator(config))
    except CryptojError as exc:
        typer.echo(f"cryptoj sim: {exc}", err=True)
        raise typer.Exit(EXIT_BAD_CONFIG) from None
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        typer.echo(f"cryptoj sim: cannot listen on {host}:{port}: {reason}", err=True)
        raise typer.Exit(EXIT_BAD_CONFIG) from None
    raise typer.Exit(code)
