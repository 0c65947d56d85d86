"""Configuration: one TOML file plus ``CRYPTOJ_*`` environment overrides.

Load it with :func:`load_config`; it returns an :class:`AppConfig` or raises
:class:`~cryptoj.errors.ConfigError` listing *every* problem at once as
``(key_path, message)`` pairs, e.g. ``("risk.max_order_notional", "Input should
be greater than or equal to 0")``.

Rules:

* Unknown keys are errors, in every section (``extra="forbid"``).
* Environment variables override the file: ``CRYPTOJ_<SECTION>__<KEY>``
  (``__`` separates nesting levels, case-insensitive), e.g.
  ``CRYPTOJ_RISK__MAX_ORDER_NOTIONAL=500`` or ``CRYPTOJ_MODE=paper``. Lists are
  given as JSON (``CRYPTOJ_PRODUCTS='["BTC-USD"]'``). Variables without ``__``
  that name no top-level key (``CRYPTOJ_TEST_POSTGRES_URL``...) are ignored.
* Money and fractions are :class:`~decimal.Decimal`. Write them in TOML as
  strings (``"0.1"``) or integers; a TOML float such as ``0.1`` is converted with
  ``Decimal(str(x))``, i.e. from its shortest repr, so ``0.1`` becomes exactly
  ``Decimal("0.1")``. No binary float ever reaches the model.
* API key material never lives in the config: only the *path* of a CDP key file
  (``exchange.key_file``) or the environment (``CRYPTOJ_API_KEY_NAME`` +
  ``CRYPTOJ_API_PRIVATE_KEY``). See :func:`load_api_key` and :func:`resolve_api_key`.
"""

from __future__ import annotations

import base64
import binascii
import contextvars
import difflib
import ipaddress
import os
import re
import stat
import tomllib
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.sources.utils import parse_env_vars

from cryptoj.errors import ConfigError, InvalidValue, KeyFileError
from cryptoj.model.money import parse_decimal

__all__ = [
    "API_KEY_NAME_ENV",
    "API_PRIVATE_KEY_ENV",
    "AlertsConfig",
    "ApiConfig",
    "ApiKey",
    "AppConfig",
    "EmergencyConfig",
    "EngineConfig",
    "ExchangeConfig",
    "ExecutionConfig",
    "ExitsConfig",
    "LoggingConfig",
    "PaperConfig",
    "RiskConfig",
    "StorageConfig",
    "StrategyConfig",
    "check_key_file",
    "load_api_key",
    "load_config",
    "masked_dump",
    "resolve_api_key",
]

ENV_PREFIX = "CRYPTOJ_"
API_KEY_NAME_ENV = "CRYPTOJ_API_KEY_NAME"
API_PRIVATE_KEY_ENV = "CRYPTOJ_API_PRIVATE_KEY"

MASK = "********"


# --- value types -------------------------------------------------------------


def _to_decimal(value: Any) -> Decimal:
    """Parse a config number exactly; TOML floats go through ``str`` (see module doc)."""
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise PydanticCustomError("decimal_parsing", "must be a finite number")
        value = Decimal(str(value))
    try:
        return parse_decimal(value, "value", allow_negative=True)
    except InvalidValue as exc:
        raise PydanticCustomError("decimal_parsing", "{reason}", {"reason": exc.reason}) from None


ConfigDecimal = Annotated[Decimal, BeforeValidator(_to_decimal)]
NonNegativeDecimal = Annotated[Decimal, BeforeValidator(_to_decimal), Field(ge=0)]
Fraction = Annotated[Decimal, BeforeValidator(_to_decimal), Field(ge=0, le=1)]
NonNegativeFloat = Annotated[float, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0)]


def _decimalize(value: Any) -> Any:
    """Turn TOML floats inside free-form tables (strategy params) into Decimals."""
    if isinstance(value, float):
        return Decimal(str(value))
    if isinstance(value, dict):
        return {k: _decimalize(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decimalize(v) for v in value]
    return value


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# --- sections --------------------------------------------------------------------


class ExchangeConfig(_Section):
    """Where the exchange lives and how hard we may hit it."""

    rest_base_url: str = "https://api.coinbase.com"
    ws_market_url: str = "wss://advanced-trade-ws.coinbase.com"
    ws_user_url: str = "wss://advanced-trade-ws-user.coinbase.com"
    key_file: Path | None = None
    """Path of the CDP API key JSON file; relative paths are resolved against the config file's directory."""
    request_timeout: PositiveFloat = 10.0
    """Seconds before a REST request is abandoned."""
    public_rate_limit: PositiveFloat = 10.0
    """Public REST requests per second."""
    private_rate_limit: PositiveFloat = 30.0
    """Private (authenticated) REST requests per second."""
    order_lane: bool = False
    """Send ``POST /orders`` over the REST client's own keep-alive HTTP/1.1 connections (written in the
    caller's event-loop step; about 0.6 ms less tick-to-order latency here) instead of aiohttp. Off by
    default: it is tested against the simulator only (plain HTTP), never against Coinbase over TLS."""

    @field_validator("rest_base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^\s/]+", value):
            raise PydanticCustomError("url", "must be an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("ws_market_url", "ws_user_url")
    @classmethod
    def _ws_url(cls, value: str) -> str:
        if not re.match(r"^wss?://[^\s/]+", value):
            raise PydanticCustomError("url", "must be a ws:// or wss:// URL")
        return value


class StrategyConfig(_Section):
    """Which strategy runs, and its parameters (a free-form table)."""

    name: str = "sma_cross"
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("params", mode="before")
    @classmethod
    def _params_exact(cls, value: Any) -> Any:
        return _decimalize(value)


class ExitsConfig(_Section):
    """Engine-side protective exits for long spot positions. Each is off when ``None`` / empty."""

    stop_loss_fraction: Annotated[Decimal, BeforeValidator(_to_decimal), Field(gt=0, lt=1)] | None = None
    """Sell the whole position when the price falls this fraction below the average entry."""
    trailing_stop_fraction: Annotated[Decimal, BeforeValidator(_to_decimal), Field(gt=0, lt=1)] | None = None
    """Sell the whole position when the price falls this fraction below its highest price since entry."""
    take_profit: list[tuple[Annotated[Decimal, BeforeValidator(_to_decimal), Field(gt=0)], Fraction]] = Field(
        default_factory=list
    )
    """Ladder of ``[gain_fraction, sell_fraction]`` pairs, e.g. ``[["0.02", "0.3"], ["0.05", "0.5"], ["0.10", "1"]]``:
    at +2 % sell 30 % of the position's size, at +5 % another 50 %, at +10 % all that is left."""
    native_stops: bool = True
    """Rest a native stop-limit order at the venue for the stop (re-placed as the trail moves); else sell at market."""
    stop_limit_offset_fraction: Fraction = Decimal("0.005")
    """A native stop's limit price sits this fraction below its trigger price."""

    @field_validator("take_profit")
    @classmethod
    def _ladder(cls, value: list[tuple[Decimal, Decimal]]) -> list[tuple[Decimal, Decimal]]:
        gains = [gain for gain, _ in value]
        if gains != sorted(set(gains)):
            raise PydanticCustomError("ladder", "take-profit gains must be strictly increasing")
        if any(fraction <= 0 for _, fraction in value):
            raise PydanticCustomError("ladder", "each take-profit sell fraction must be above 0")
        return value


class RiskConfig(_Section):
    """Pre-trade risk limits. Every limit is optional: absent (or ``None``) means "off"."""

    max_order_notional: NonNegativeDecimal | None = None
    """Largest single order, in quote currency."""
    max_position_notional: NonNegativeDecimal | None = None
    """Largest position per product, in quote currency."""
    max_total_exposure: NonNegativeDecimal | None = None
    """Largest sum of all positions, in quote currency."""
    max_open_orders: Annotated[int, Field(ge=0)] | None = None
    daily_loss_limit_quote: NonNegativeDecimal | None = None
    """Stop opening risk after losing this much quote currency today (UTC day)."""
    daily_loss_limit_fraction: Fraction | None = None
    """Same, as a fraction of start-of-day equity."""
    max_drawdown_fraction: Fraction | None = None
    """Halt when equity falls this fraction below its peak."""
    price_band_fraction: Fraction | None = None
    """Refuse limit prices further than this fraction from the mid."""
    max_orders_per_minute: Annotated[int, Field(ge=0)] | None = None
    stale_data_seconds: NonNegativeFloat | None = None
    """Refuse new orders when the product's market data is older than this."""
    check_product_rules: bool = True
    """Refuse orders the product's status, increments or min/max sizes forbid (before the venue does)."""
    check_balance: bool = True
    """Refuse orders the available balance (after holds) cannot pay for, fees included."""
    fee_rate: Fraction | None = None
    """Fee fraction assumed by the balance check; None uses the venue's taker rate from the engine."""
    exits: ExitsConfig = Field(default_factory=ExitsConfig)
    """Protective exits (stop loss, trailing stop, take-profit ladder) a strategy can switch on."""


class EmergencyConfig(_Section):
    """Kill-switch triggers. A ``None`` trigger is off."""

    kill_file: str = "KILL"
    """Name of a file in ``storage.state_dir``; its appearance trips the kill switch."""
    error_rate_window_seconds: PositiveFloat = 60.0
    error_rate_threshold: Annotated[int, Field(ge=1)] | None = 20
    """Trip after this many venue errors within ``error_rate_window_seconds``."""
    stale_data_seconds: NonNegativeFloat | None = 60.0
    """Trip when market data has been stale this long."""
    disconnected_seconds: NonNegativeFloat | None = 120.0
    """Trip when a venue stream has been disconnected this long."""
    price_move_fraction: Fraction | None = Decimal("0.10")
    """Trip when a price moves more than this fraction within ``price_move_window_seconds``."""
    price_move_window_seconds: PositiveFloat = 300.0
    flatten_on_kill: bool = False
    """After cancelling all orders, also close positions with market orders."""
    halt_on_daily_loss: bool = True
    """Trip when the risk engine's daily loss limit (``risk.daily_loss_limit_*``) is breached."""
    halt_on_drawdown: bool = True
    """Trip when the risk engine's ``risk.max_drawdown_fraction`` is breached."""
    halt_on_reconciliation_failure: bool = True
    """Trip when a reconciliation reports a disagreement with the venue."""
    cancel_timeout_seconds: PositiveFloat = 30.0
    """How long the kill switch keeps re-sending cancels until the venue reports no open order."""
    flatten_timeout_seconds: PositiveFloat = 30.0
    """How long the kill switch waits for its flattening market orders to leave the account flat."""
    poll_interval_seconds: PositiveFloat = 1.0
    """How often the watcher loop looks for the kill file and stale/disconnected feeds."""

    @field_validator("kill_file")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not value or "/" in value or "\\" in value or value in (".", ".."):
            raise PydanticCustomError("file_name", "must be a plain file name (it lives in storage.state_dir)")
        return value


class ExecutionConfig(_Section):
    """The order manager (``cryptoj.order_execution``)."""

    external_orders: Literal["adopt", "cancel"] = "adopt"
    """Open orders found at the venue that storage does not know: track them as EXTERNAL, or cancel them."""
    unsent_on_restart: Literal["abandon", "resend"] = "abandon"
    """A stored order the venue never received (crash between write-ahead and send): mark it REJECTED, or send it now."""
    resolve_attempts: Annotated[int, Field(ge=1)] = 5
    """Look-ups/same-id re-sends tried for a create whose outcome is unknown before it stays IN_FLIGHT_UNKNOWN."""
    resolve_backoff_seconds: PositiveFloat = 0.2
    """First wait between those attempts (doubles each time, capped at 5 s)."""
    poll_interval_seconds: PositiveFloat = 2.0
    """REST polling period of active orders while the user stream is down."""
    fill_check_interval_seconds: PositiveFloat = 30.0
    """How often fills are confirmed against REST ``/orders/historical/fills`` (also after every reconnect)."""
    fill_lookback_seconds: NonNegativeFloat = 60.0
    """Fill checks ask for fills since the newest stored fill minus this margin (dedup by trade id)."""
    reconcile_on_start: bool = True
    """Run the startup reconciliation in ``OrderManager.start``; a failure persists HALTED."""


class EngineConfig(_Section):
    """The trading engine (``cryptoj.trading_core``): shutdown behaviour and housekeeping."""

    quote_currency: str = "USD"
    """Currency equity and PnL are valued in."""
    cancel_on_shutdown: bool = True
    """On SIGINT/SIGTERM (or any clean stop) cancel every open order; false leaves them resting (the next start reconciles)."""
    equity_interval_seconds: PositiveFloat = 1.0
    """How often equity is valued and fed to the risk engine and the kill-switch watchers."""
    shutdown_timeout_seconds: PositiveFloat = 30.0
    """Longest wait for in-flight sends and cancels at shutdown."""
    wait_for_books_seconds: NonNegativeFloat = 15.0
    """At start, wait up to this long for every product's L2 book before strategies start (0: do not wait)."""
    backfill_candles: Annotated[int, Field(ge=0, le=5000)] = 0
    """Candles per timeframe loaded from REST at start, so indicators are warm (0: none)."""
    sim_url: str | None = None
    """``cryptoj run --mode sim``: base URL of a running simulator (``http://127.0.0.1:8765``); unset starts one in-process."""

    @field_validator("sim_url")
    @classmethod
    def _sim_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^\s/]+", value):
            raise PydanticCustomError("url", "must be an http:// or https:// URL")
        return None if value is None else value.rstrip("/")


class PaperConfig(_Section):
    """Paper trading (``mode = "paper"``): starting balances and the fee tier the matching engine charges."""

    balances: dict[str, NonNegativeDecimal] = Field(default_factory=lambda: {"USD": Decimal(10000)})
    """Starting balance per currency, e.g. ``{ USD = "10000", BTC = "0.1" }``."""
    maker_fee_rate: Fraction = Decimal("0.004")
    taker_fee_rate: Fraction = Decimal("0.006")
    depth: Annotated[int, Field(ge=1, le=1000)] = 50
    """Live book levels per side mirrored into the matching engine."""


class StorageConfig(_Section):
    """Database URL (SQLite by default, ``postgresql+asyncpg://`` for PostgreSQL) and state directory."""

    url: str = "sqlite+aiosqlite:///state/cryptoj.db"
    state_dir: Path = Path("state")
    intent_journal: str = "auto"
    """The order-intent journal (the fast write-ahead of each order, see docs/storage.md): ``"auto"`` is
    ``<database>-intents`` next to a SQLite file (none for PostgreSQL), ``"off"`` writes ahead to the
    database instead (slower), anything else is the journal's file path."""
    intent_sync: bool = False
    """fsync every intent: it then survives a power loss too, not only a crash of the process (a disk
    flush per order)."""

    @field_validator("intent_journal")
    @classmethod
    def _journal(cls, value: str) -> str:
        if not value.strip():
            raise PydanticCustomError("intent_journal", "must be \"auto\", \"off\" or a file path")
        return value

    def intent_options(self) -> dict[str, Any]:
        """``Storage.open`` keyword arguments for the intent journal."""
        journal = self.intent_journal.strip()
        path: str | None = None if journal == "off" else journal
        return {"intents": path, "intents_sync": self.intent_sync}

    @field_validator("url")
    @classmethod
    def _supported(cls, value: str) -> str:
        if not (value.startswith("sqlite+aiosqlite://") or value.startswith("postgresql+asyncpg://")):
            raise PydanticCustomError("url", "must start with sqlite+aiosqlite:// or postgresql+asyncpg://")
        return value


class ApiConfig(_Section):
    """The operator REST API / dashboard listener."""

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8080
    allow_non_loopback: bool = False
    """Must be true to listen on anything but a loopback address."""
    enabled: bool = True
    """Serve the API/dashboard from ``cryptoj run`` / ``cryptoj demo``."""

    @model_validator(mode="after")
    def _loopback(self) -> ApiConfig:
        if not self.allow_non_loopback and not _is_loopback(self.host):
            raise PydanticCustomError(
                "loopback", "'{host}' is not a loopback address; set api.allow_non_loopback = true to listen on it",
                {"host": self.host},
            )
        return self


class AlertsConfig(_Section):
    """Webhook alerts (kill switch, halts/resumes, reconciliation problems, reconnect storms, daily summary)."""

    webhook_urls: list[str] = Field(default_factory=list)
    """Generic JSON POST endpoints (``{"kind", "severity", "message", "time", "detail"}``)."""
    telegram_bot_token: SecretStr | None = None
    """Telegram bot token (prefer the env ``CRYPTOJ_ALERTS__TELEGRAM_BOT_TOKEN``); needs ``telegram_chat_id``."""
    telegram_chat_id: str | None = None
    telegram_api_url: str = "https://api.telegram.org"
    timeout_seconds: PositiveFloat = 5.0
    max_attempts: Annotated[int, Field(ge=1, le=20)] = 5
    """Deliveries tried per alert and destination (backoff doubles from ``backoff_seconds``, capped at 60 s)."""
    backoff_seconds: PositiveFloat = 1.0
    queue_size: Annotated[int, Field(ge=1)] = 1000
    """Alerts waiting for delivery; beyond it the oldest is dropped (trading never waits for alerts)."""
    kill_outcome_wait_seconds: PositiveFloat = 120.0
    """A kill's alert waits this long for the outcome (one alert: trigger + outcome), then goes without it."""
    reconnect_storm_count: Annotated[int, Field(ge=1)] = 5
    """Alert when a stream reconnects this many times within ``reconnect_storm_window_seconds``."""
    reconnect_storm_window_seconds: PositiveFloat = 300.0
    daily_summary_hour_utc: Annotated[int, Field(ge=0, le=23)] | None = 0
    """UTC hour at which the daily summary goes out (None: no summary)."""

    @field_validator("webhook_urls", "telegram_api_url")
    @classmethod
    def _http_urls(cls, value: Any) -> Any:
        for url in [value] if isinstance(value, str) else value:
            if not re.match(r"^https?://[^\s/]+", url):
                raise PydanticCustomError("url", "'{url}' must be an http:// or https:// URL", {"url": url})
        return value

    @model_validator(mode="after")
    def _telegram_pair(self) -> AlertsConfig:
        if (self.telegram_bot_token is None) != (self.telegram_chat_id is None):
            raise PydanticCustomError("telegram", "set both telegram_bot_token and telegram_chat_id, or neither")
        return self


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class LoggingConfig(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    json_output: bool = Field(default=False, alias="json")
    """JSON lines instead of the human console format (TOML key ``json``)."""

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


# --- the whole config ---------------------------------------------------------------

_ENV: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar("cryptoj_config_env", default=None)


class _MappingEnvSource(EnvSettingsSource):
    """pydantic-settings' env source, reading a given mapping instead of ``os.environ``."""

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]) -> None:
        self._mapping = env
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(self._mapping, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str)


class AppConfig(BaseSettings):
    """The whole configuration. Build it with :func:`load_config`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", case_sensitive=False, extra="forbid", frozen=True,
        populate_by_name=True,
    )

    mode: Literal["sim", "paper", "live"] = "sim"
    live_confirmed: bool = False
    """Live trading also needs this set to true (a deliberate second switch)."""
    exchange: ExchangeConfig = Field(default_factory=ExchangeConfig)
    products: list[str] = Field(default_factory=lambda: ["BTC-USD", "ETH-USD"])
    strategy: StrategyConfig = Field(default_factory=StrategyConfig)
    risk: RiskConfig = Field(default_factory=RiskConfig)
    emergency: EmergencyConfig = Field(default_factory=EmergencyConfig)
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    paper: PaperConfig = Field(default_factory=PaperConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)

    @field_validator("products")
    @classmethod
    def _product_ids(cls, value: list[str]) -> list[str]:
        seen: set[str] = set()
        for pid in value:
            if not re.fullmatch(r"[A-Z0-9]+-[A-Z0-9]+", pid):
                raise PydanticCustomError("product_id", "'{pid}' is not a product id like BTC-USD", {"pid": pid})
            if pid in seen:
                raise PydanticCustomError("product_id", "'{pid}' is listed twice", {"pid": pid})
            seen.add(pid)
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Environment first (it overrides), then the TOML values passed as init kwargs."""
        env = _ENV.get()
        return (_MappingEnvSource(settings_cls, os.environ if env is None else env), init_settings)


# --- loading ---------------------------------------------------------------------------


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([("", f"{path}: config file not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([("", f"{path}: cannot read config file: {exc}")]) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # the message carries "(at line L, column C)"
        raise ConfigError([("", f"{path}: TOML syntax error: {exc}")]) from None


def _allowed_keys(loc: tuple[int | str, ...]) -> list[str]:
    """Field names (TOML spelling) of the section at ``loc`` (which ends with the bad key)."""
    model: type[BaseModel] = AppConfig
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        if field is None:
            return []
        annotation = field.annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return sorted(f.alias or name for name, f in model.model_fields.items())


def _problems_from(exc: ValidationError) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        path = ".".join(str(p) for p in loc)
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(loc)
            guess = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            message = "unknown key" + (f" (did you mean {guess[0]!r}?)" if guess else "")
            if allowed:
                message += f"; allowed keys: {', '.join(allowed)}"
        elif err["type"] == "loopback":
            path = ".".join(str(p) for p in (*loc, "host"))
        problems.append((path, message))
    return problems


def _resolve_key_path(raw: Any, base_dir: Path | None) -> Path | None:
    if not isinstance(raw, str | Path) or str(raw) == "":
        return None
    key_path = Path(raw).expanduser()
    if not key_path.is_absolute() and base_dir is not None:
        key_path = base_dir / key_path
    return key_path


def load_config(
    path: Path | None, env: Mapping[str, str] | None = None, *, check_key_file: bool = True
) -> AppConfig:
    """Read ``path`` (or only defaults + env when None), apply env overrides, validate.

    ``env`` defaults to ``os.environ``. When ``check_key_file`` and
    ``exchange.key_file`` is set, the key file is checked too (exists, not readable
    by group/others, valid CDP JSON) and its problems are reported with the rest.
    Raises :class:`ConfigError` with every problem found.
    """
    raw: dict[str, Any] = _read_toml(path) if path is not None else {}
    base_dir = path.parent if path is not None else None
    env_map: Mapping[str, str] = os.environ if env is None else env
    problems: list[tuple[str, str]] = []
    config: AppConfig | None = None
    token = _ENV.set(env_map)
    try:
        config = AppConfig(**raw)
    except ValidationError as exc:
        problems.extend(_problems_from(exc))
    finally:
        _ENV.reset(token)

    # unknown nested env overrides for sections pydantic-settings does not look at
    for name in env_map:
        upper = name.upper()
        if upper.startswith(ENV_PREFIX) and "__" in upper:
            top = upper[len(ENV_PREFIX) :].split("__", 1)[0].lower()
            if top not in AppConfig.model_fields:
                problems.append((f"env {name}", f"unknown section {top!r}; allowed: {', '.join(AppConfig.model_fields)}"))

    key_raw = config.exchange.key_file if config is not None else (raw.get("exchange") or {}).get("key_file")
    key_path = _resolve_key_path(key_raw, base_dir)
    if check_key_file and key_path is not None:
        try:
            load_api_key(key_path)
        except KeyFileError as exc:
            problems.extend(("exchange.key_file", msg) for _, msg in exc.problems)
    if problems or config is None:
        raise ConfigError(problems)
    if key_path is not None and key_path != config.exchange.key_file:
        config = config.model_copy(update={"exchange": config.exchange.model_copy(update={"key_file": key_path})})
    return config


# --- API keys ----------------------------------------------------------------------------


class ApiKey(BaseModel):
    """A CDP API key: its name and private key. The private key never prints."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    private_key: SecretStr
    source: str
    """Where it came from (a file path or the env variable names), for messages."""

    def __str__(self) -> str:
        return f"ApiKey(name={self.name!r}, source={self.source!r})"

    def __repr__(self) -> str:
        return f"ApiKey(name={self.name!r}, private_key={MASK!r}, source={self.source!r})"


def _validate_private_key(pem: str) -> str | None:
    """Problem with the key text, or None. Never echoes the key."""
    text = pem.strip()
    if "-----BEGIN" in text:
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        try:
            load_pem_private_key(text.encode(), password=None)
        except (ValueError, TypeError):
            return "privateKey is not a valid unencrypted PEM private key"
        return None
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) in (32, 64):
        return None  # an Ed25519 key in CDP's base64 form
    return "privateKey is neither a PEM private key (-----BEGIN ...) nor a base64 Ed25519 key"


def check_key_file(path: Path) -> list[str]:
    """Problems with the key file at ``path`` (empty list when usable). Never echoes the key."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return [f"key file {path} does not exist"]
    except OSError as exc:
        return [f"key file {path}: cannot stat: {exc.strerror}"]
    if not stat.S_ISREG(st.st_mode):
        return [f"key file {path} is not a regular file"]
    problems: list[str] = []
    if st.st_mode & 0o077:
        problems.append(
            f"key file {path} is readable by group/others (mode {stat.S_IMODE(st.st_mode):o}); fix it with: chmod 600 {path}"
        )
    try:
        data = orjson.loads(path.read_bytes())
    except OSError as exc:
        return [*problems, f"key file {path}: cannot read: {exc.strerror}"]
    except orjson.JSONDecodeError as exc:
        return [*problems, f"key file {path} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"]
    if not isinstance(data, dict):
        return [*problems, f'key file {path} must hold a JSON object {{"name": ..., "privateKey": ...}}']
    for field in ("name", "privateKey"):
        if not isinstance(data.get(field), str) or not data[field].strip():
            problems.append(f"key file {path} is missing the {field!r} field (a non-empty string)")
    if isinstance(data.get("privateKey"), str) and data["privateKey"].strip():
        problem = _validate_private_key(data["privateKey"])
        if problem:
            problems.append(f"key file {path}: {problem}")
    return problems


def load_api_key(path: Path) -> ApiKey:
    """Load a CDP key file ``{"name": ..., "privateKey": ...}``.

    Refuses a file readable by group or others. Raises
    :class:`~cryptoj.errors.KeyFileError` naming the path and every problem.
    """
    path = Path(path)
    problems = check_key_file(path)
    if problems:
        raise KeyFileError([(str(path), p) for p in problems])
    data = orjson.loads(path.read_bytes())
    return ApiKey(name=data["name"].strip(), private_key=SecretStr(data["privateKey"].strip() + "\n"), source=str(path))


def resolve_api_key(config: AppConfig, env: Mapping[str, str] | None = None) -> ApiKey | None:
    """The API key to use: ``exchange.key_file`` if set, else the env pair, else None.

    In the environment the PEM may use literal ``\\n`` for newlines.
    """
    if config.exchange.key_file is not None:
        return load_api_key(config.exchange.key_file)
    env_map: Mapping[str, str] = os.environ if env is None else env
    name = env_map.get(API_KEY_NAME_ENV, "").strip()
    secret = env_map.get(API_PRIVATE_KEY_ENV, "").strip()
    if not name and not secret:
        return None
    source = f"env {API_KEY_NAME_ENV}/{API_PRIVATE_KEY_ENV}"
    if not name or not secret:
        missing = API_KEY_NAME_ENV if not name else API_PRIVATE_KEY_ENV
        raise KeyFileError([(source, f"{missing} is not set; set both variables or neither")])
    secret = secret.replace("\\n", "\n")
    problem = _validate_private_key(secret)
    if problem:
        raise KeyFileError([(source, f"{API_PRIVATE_KEY_ENV}: {problem}")])
    return ApiKey(name=name, private_key=SecretStr(secret.strip() + "\n"), source=source)


# --- printing ------------------------------------------------------------------------------

_SECRET_KEY = re.compile(r"private_?key|secret|token|password|passphrase|jwt|authorization", re.IGNORECASE)
_URL_PASSWORD = re.compile(r"^(?P<head>[a-z0-9+.-]+://[^:/@\s]*:)(?P<pw>[^@\s]+)(?P<at>@)", re.IGNORECASE)


def _mask(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _mask(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(v, key) for v in value]
    if key and _SECRET_KEY.search(key) and value not in (None, ""):
        return MASK
    if isinstance(value, str):
        return _URL_PASSWORD.sub(lambda m: f"{m['head']}{MASK}{m['at']}", value)
    return value


def masked_dump(config: AppConfig) -> dict[str, Any]:
    """The effective config as plain JSON-able data (Decimals as strings), secrets masked.

    Keys that look secret (``*token*``, ``*secret*``, ``*password*``, ``private_key``...)
    are replaced by ``********``, and so is the password in a database URL.
    """
    data = config.model_dump(mode="json", by_alias=True)
    masked = _mask(data)
    assert isinstance(masked, dict)
    return masked
