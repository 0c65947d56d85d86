"""Sans-IO Coinbase Advanced Trade protocol: bytes in, typed values out, and back.

No sockets, no asyncio. The live REST/WS clients, the simulator and the tests all
use these functions, so a parsing bug is found by a unit test on bytes.

Order bodies
    :func:`order_spec_to_body` turns an :class:`~cryptoj.model.orders.OrderSpec` into
    the ``POST /orders`` body; :func:`body_to_order_spec` is its inverse (the
    simulator parses incoming creates with it).

Errors
    Anything that cannot be parsed raises :class:`~cryptoj.errors.MalformedMessage`
    (with the raw text, truncated) or, for a single bad value in an otherwise
    well-formed order body, :class:`~cryptoj.errors.InvalidValue` naming the field.
    Both are :class:`~cryptoj.errors.DataError`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Final, Literal, TypeAlias, TypeVar

import msgspec
import orjson

from cryptoj.errors import (
    AuthenticationFailed,
    InvalidValue,
    MalformedMessage,
    OrderNotFound,
    OrderRejected,
    RateLimited,
    VenueError,
    VenueUnavailable,
    truncate,
)
from cryptoj.model.book import BookSide
from cryptoj.model.events import (
    CandleEvent,
    Envelope,
    Event,
    Heartbeat,
    L2Snapshot,
    L2Update,
    LevelChange,
    MarketTrade,
    StatusEvent,
    SubscriptionAck,
    TickerEvent,
    UnknownChannel,
    UserOrderUpdate,
    VenueErrorMessage,
)
from cryptoj.model.instruments import Product
from cryptoj.model.money import Side, parse_decimal
from cryptoj.model.orders import Fill, Liquidity, OrderKind, OrderSpec, OrderStatus, StopDirection, TimeInForce

__all__ = [
    "ORDER_CONFIGURATIONS",
    "PRIVATE_WS_CHANNELS",
    "UNSUPPORTED_ORDER_CONFIGURATION",
    "VENUE_STATUS",
    "WS_CHANNELS",
    "AccountsPage",
    "Balance",
    "CancelResult",
    "CreatedOrder",
    "EnvelopeParser",
    "FeeTier",
    "FillsPage",
    "FuturesPosition",
    "L2TextUpdate",
    "MarketTrades",
    "OrderConfiguration",
    "OrdersPage",
    "ProductBook",
    "VenueOrder",
    "body_to_order_spec",
    "decode_l2_update",
    "encode_message",
    "error_from_response",
    "format_decimal",
    "format_time",
    "loads",
    "map_order_status",
    "order_configuration_name",
    "order_spec_to_body",
    "parse_account",
    "parse_accounts_page",
    "parse_batch_cancel",
    "parse_best_bid_ask",
    "parse_candles",
    "parse_cfm_balance_summary",
    "parse_cfm_positions",
    "parse_create_order",
    "parse_envelope",
    "parse_fills_page",
    "parse_frame",
    "parse_market_trades",
    "parse_order",
    "parse_order_configuration",
    "parse_orders_page",
    "parse_product",
    "parse_product_book",
    "parse_products",
    "parse_server_time",
    "parse_time",
    "parse_transaction_summary",
    "subscribe_message",
]

_T = TypeVar("_T")

UNSUPPORTED_ORDER_CONFIGURATION: Final = "UNSUPPORTED_ORDER_CONFIGURATION"

# configuration name -> (kind, time in force)
ORDER_CONFIGURATIONS: Final[Mapping[str, tuple[OrderKind, TimeInForce]]] = {
    "market_market_ioc": (OrderKind.MARKET, TimeInForce.IOC),
    "market_market_fok": (OrderKind.MARKET, TimeInForce.FOK),
    "sor_limit_ioc": (OrderKind.LIMIT, TimeInForce.IOC),
    "limit_limit_gtc": (OrderKind.LIMIT, TimeInForce.GTC),
    "limit_limit_gtd": (OrderKind.LIMIT, TimeInForce.GTD),
    "limit_limit_fok": (OrderKind.LIMIT, TimeInForce.FOK),
    "stop_limit_stop_limit_gtc": (OrderKind.STOP_LIMIT, TimeInForce.GTC),
    "stop_limit_stop_limit_gtd": (OrderKind.STOP_LIMIT, TimeInForce.GTD),
    "trigger_bracket_gtc": (OrderKind.BRACKET, TimeInForce.GTC),
    "trigger_bracket_gtd": (OrderKind.BRACKET, TimeInForce.GTD),
}
_CONFIG_BY_KIND: Final = {value: name for name, value in ORDER_CONFIGURATIONS.items()}


# --- scalar formatting / parsing ------------------------------------------


def format_decimal(value: Decimal) -> str:
    """A Decimal as Coinbase wants it: plain notation, never an exponent."""
    return format(value, "f")


def format_time(value: datetime) -> str:
    """RFC 3339 UTC with a ``Z`` (microseconds only when non-zero)."""
    if value.tzinfo is None:
        raise InvalidValue("time", value, "must be timezone-aware")
    utc = value.astimezone(UTC)
    text = utc.strftime("%Y-%m-%dT%H:%M:%S")
    if utc.microsecond:
        text += f".{utc.microsecond:06d}"
    return text + "Z"


def parse_time(value: object, field: str) -> datetime:
    """Parse an RFC 3339 / ISO 8601 time (nanoseconds are truncated to microseconds).

    Also accepts the Go-style ``"2023-06-23 20:31:56.121961769 +0000 UTC m=+917.5"``
    that Coinbase's live heartbeat channel sends. A naive time is taken as UTC.
    """
    if not isinstance(value, str) or not value:
        raise InvalidValue(field, value, "expected an RFC 3339 time string")
    text = value
    if text.endswith(" UTC") or " UTC m=" in text:
        # Go's time.Time.String(): "<date> <time> +0000 UTC[ m=+<monotonic>]"
        parts = text.split(" ")
        if len(parts) >= 3:
            offset = parts[2]
            text = f"{parts[0]}T{parts[1]}{offset[:3]}:{offset[3:]}"
    parsed: datetime | None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        parsed = _lower_case_rfc3339(text)
        if parsed is None:
            raise InvalidValue(field, value, "not an RFC 3339 time") from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed


def _lower_case_rfc3339(text: str) -> datetime | None:
    """RFC 3339 allows a lower-case ``t`` and ``z``; ``datetime.fromisoformat`` (3.11) does not."""
    if len(text) > 10 and text[10] == "t":
        text = f"{text[:10]}T{text[11:]}"
    if text.endswith("z"):
        text = f"{text[:-1]}Z"
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


# --- order configurations ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class OrderConfiguration:
    """The parsed content of an ``order_configuration`` object."""

    name: str
    kind: OrderKind
    time_in_force: TimeInForce
    base_size: Decimal | None = None
    quote_size: Decimal | None = None
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    stop_direction: StopDirection | None = None
    stop_trigger_price: Decimal | None = None
    post_only: bool = False
    end_time: datetime | None = None


def order_configuration_name(spec: OrderSpec) -> str:
    """The Coinbase configuration name for ``spec`` (e.g. ``limit_limit_gtc``)."""
    name = _CONFIG_BY_KIND.get((spec.kind, spec.time_in_force))
    if name is None:
        raise InvalidValue(
            f"order {spec.client_order_id}.time_in_force",
            spec.time_in_force,
            f"{UNSUPPORTED_ORDER_CONFIGURATION}: {spec.kind.value} orders cannot be {spec.time_in_force.value}",
        )
    return name


def _order_configuration(spec: OrderSpec) -> tuple[str, dict[str, Any]]:
    name = order_configuration_name(spec)
    where = f"order {spec.client_order_id}"
    cfg: dict[str, Any] = {}
    if spec.kind is OrderKind.MARKET:
        if spec.quote_size is not None:
            cfg["quote_size"] = format_decimal(spec.quote_size)
        else:
            cfg["base_size"] = format_decimal(_required(spec.base_size, f"{where}.base_size"))
        return name, cfg
    cfg["base_size"] = format_decimal(_required(spec.base_size, f"{where}.base_size"))
    cfg["limit_price"] = format_decimal(_required(spec.limit_price, f"{where}.limit_price"))
    if spec.kind is OrderKind.STOP_LIMIT:
        cfg["stop_price"] = format_decimal(_required(spec.stop_price, f"{where}.stop_price"))
    elif spec.kind is OrderKind.BRACKET:
        cfg["stop_trigger_price"] = format_decimal(_required(spec.stop_trigger_price, f"{where}.stop_trigger_price"))
    if spec.time_in_force is TimeInForce.GTD:
        cfg["end_time"] = format_time(_required(spec.end_time, f"{where}.end_time"))
    if spec.kind is OrderKind.LIMIT and spec.time_in_force in (TimeInForce.GTC, TimeInForce.GTD):
        cfg["post_only"] = spec.post_only
    elif spec.post_only:
        raise InvalidValue(
            f"{where}.post_only", True, f"{UNSUPPORTED_ORDER_CONFIGURATION}: post-only is for GTC/GTD limit orders"
        )
    if spec.kind is OrderKind.STOP_LIMIT:
        cfg["stop_direction"] = _required(spec.stop_direction, f"{where}.stop_direction").value
    return name, cfg


def _required(value: Any, field: str) -> Any:
    if value is None:
        raise InvalidValue(field, None, "required")
    return value


def order_spec_to_body(spec: OrderSpec) -> dict[str, Any]:
    """The ``POST /orders`` JSON body for ``spec`` (numbers as strings, as Coinbase wants)."""
    name, cfg = _order_configuration(spec)
    return {
        "client_order_id": spec.client_order_id,
        "product_id": spec.product_id,
        "side": spec.side.value,
        "order_configuration": {name: cfg},
    }


def _opt_dec(cfg: Mapping[str, object], key: str, where: str) -> Decimal | None:
    raw = cfg.get(key)
    if raw is None or raw == "":
        return None
    return parse_decimal(raw, f"{where}.{key}")


def _parse_bool(raw: object, field: str) -> bool:
    if raw is None:
        return False
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    raise InvalidValue(field, raw, "expected true or false")


def parse_order_configuration(configuration: object, where: str = "order_configuration") -> OrderConfiguration:
    """Parse an ``order_configuration`` object holding exactly one known configuration.

    An unknown configuration raises :class:`MalformedMessage` whose ``reason``
    starts with ``UNSUPPORTED_ORDER_CONFIGURATION``.
    """
    if not isinstance(configuration, Mapping) or not configuration:
        raise MalformedMessage(f"{where}: expected an object with one configuration", repr(configuration))
    present = [key for key, value in configuration.items() if value is not None]
    if len(present) != 1:
        raise MalformedMessage(f"{where}: expected exactly one configuration, got {sorted(present)}", repr(configuration))
    name = present[0]
    if name not in ORDER_CONFIGURATIONS:
        raise MalformedMessage(f"{UNSUPPORTED_ORDER_CONFIGURATION}: {where}.{name} is not supported", repr(configuration))
    cfg = configuration[name]
    if not isinstance(cfg, Mapping):
        raise MalformedMessage(f"{where}.{name}: expected an object", repr(configuration))
    kind, tif = ORDER_CONFIGURATIONS[name]
    at = f"{where}.{name}"
    direction_raw = cfg.get("stop_direction")
    direction: StopDirection | None = None
    if direction_raw not in (None, ""):
        try:
            direction = StopDirection(str(direction_raw))
        except ValueError:
            raise InvalidValue(f"{at}.stop_direction", direction_raw, "expected STOP_DIRECTION_STOP_UP or _DOWN") from None
    end_raw = cfg.get("end_time")
    return OrderConfiguration(
        name=name,
        kind=kind,
        time_in_force=tif,
        base_size=_opt_dec(cfg, "base_size", at),
        quote_size=_opt_dec(cfg, "quote_size", at),
        limit_price=_opt_dec(cfg, "limit_price", at),
        stop_price=_opt_dec(cfg, "stop_price", at),
        stop_direction=direction,
        stop_trigger_price=_opt_dec(cfg, "stop_trigger_price", at),
        post_only=_parse_bool(cfg.get("post_only"), f"{at}.post_only"),
        end_time=None if end_raw in (None, "") else parse_time(end_raw, f"{at}.end_time"),
    )


def body_to_order_spec(body: Mapping[str, object]) -> OrderSpec:
    """Parse a ``POST /orders`` body back into an :class:`OrderSpec`.

    Structural problems (not an object, no/too many configurations, unknown
    configuration) raise :class:`MalformedMessage`; a bad value (size, price,
    side, time, or a combination :class:`OrderSpec` refuses) raises
    :class:`InvalidValue` naming the field. Unknown extra keys are ignored.
    """
    if not isinstance(body, Mapping):
        raise MalformedMessage("order body: expected a JSON object", repr(body))
    cid = body.get("client_order_id")
    if not isinstance(cid, str) or not cid:
        raise InvalidValue("order.client_order_id", cid, "required (a non-empty string)")
    where = f"order {cid}"
    product_id = body.get("product_id")
    if not isinstance(product_id, str) or not product_id:
        raise InvalidValue(f"{where}.product_id", product_id, "required (a non-empty string)")
    side_raw = body.get("side")
    try:
        side = Side(str(side_raw).upper()) if isinstance(side_raw, str) else None
    except ValueError:
        side = None
    if side is None:
        raise InvalidValue(f"{where}.side", side_raw, "expected BUY or SELL")
    if "order_configuration" not in body:
        raise MalformedMessage(f"{where}: order_configuration missing", repr(body))
    cfg = parse_order_configuration(body["order_configuration"], f"{where}.order_configuration")
    return OrderSpec(
        client_order_id=cid,
        product_id=product_id,
        side=side,
        kind=cfg.kind,
        base_size=cfg.base_size,
        quote_size=cfg.quote_size,
        limit_price=cfg.limit_price,
        stop_price=cfg.stop_price,
        stop_direction=cfg.stop_direction,
        stop_trigger_price=cfg.stop_trigger_price,
        time_in_force=cfg.time_in_force,
        post_only=cfg.post_only,
        end_time=cfg.end_time,
    )


# --- WebSocket frames -> events ------------------------------------------------

WS_CHANNELS: Final = frozenset(
    {
        "heartbeats",
        "status",
        "ticker",
        "ticker_batch",
        "level2",
        "market_trades",
        "candles",
        "user",
        "futures_balance_summary",
    }
)
PRIVATE_WS_CHANNELS: Final = frozenset({"user", "futures_balance_summary"})

_BOOK_SIDES: Final[Mapping[str, BookSide]] = {
    "bid": BookSide.BID,
    "offer": BookSide.ASK,
    "ask": BookSide.ASK,
    "BID": BookSide.BID,
    "OFFER": BookSide.ASK,
    "ASK": BookSide.ASK,
}
_SIDES: Final[Mapping[str, Side]] = {"BUY": Side.BUY, "SELL": Side.SELL, "buy": Side.BUY, "sell": Side.SELL}

# Coinbase order status -> our OrderStatus (OPEN with fills becomes PARTIALLY_FILLED)
VENUE_STATUS: Final[Mapping[str, OrderStatus]] = {
    "PENDING": OrderStatus.SUBMITTED,
    "QUEUED": OrderStatus.SUBMITTED,
    "OPEN": OrderStatus.OPEN,
    "FILLED": OrderStatus.FILLED,
    "CANCELLED": OrderStatus.CANCELLED,
    "CANCEL_QUEUED": OrderStatus.CANCEL_PENDING,
    "EXPIRED": OrderStatus.EXPIRED,
    "FAILED": OrderStatus.REJECTED,
    "REJECTED": OrderStatus.REJECTED,
    "UNKNOWN_ORDER_STATUS": OrderStatus.IN_FLIGHT_UNKNOWN,
}


def map_order_status(venue_status: str, filled: Decimal) -> OrderStatus:
    """Our status for a Coinbase order status; ``OPEN`` with fills is ``PARTIALLY_FILLED``."""
    status = VENUE_STATUS.get(venue_status.upper())
    if status is None:
        raise InvalidValue("order.status", venue_status, f"unknown Coinbase order status (known: {sorted(VENUE_STATUS)})")
    if status is OrderStatus.OPEN and filled > 0:
        return OrderStatus.PARTIALLY_FILLED
    return status


def _dec(value: object, field: str) -> Decimal:
    return parse_decimal(value, field)


def _opt(value: object, field: str, *, allow_negative: bool = False) -> Decimal | None:
    if value is None or value == "":
        return None
    return parse_decimal(value, field, allow_negative=allow_negative)


def _int(value: object, field: str) -> int:
    """An integer sent as a JSON number or a decimal string (Coinbase does both)."""
    if isinstance(value, bool):
        raise InvalidValue(field, value, "expected an integer, not a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.lstrip("-").isdigit():
            return int(text)
    raise InvalidValue(field, value, "expected an integer or a string of digits")


def _str(value: object, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidValue(field, value, "expected a non-empty string")
    return value


def _side(value: object, field: str) -> Side:
    side = _SIDES.get(value) if isinstance(value, str) else None
    if side is None:
        raise InvalidValue(field, value, "expected BUY or SELL")
    return side


def _list(value: object, field: str) -> list[Any]:
    if not isinstance(value, list):
        raise InvalidValue(field, value, "expected a list")
    return value


def _obj(value: object, field: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidValue(field, value, "expected an object")
    return value


def _event_kind(ev: Mapping[str, Any], channel: str) -> bool:
    """True for a snapshot, False for an update (absent type = update)."""
    kind = ev.get("type", "update")
    if kind == "snapshot":
        return True
    if kind == "update":
        return False
    raise InvalidValue(f"{channel}.events[].type", kind, "expected snapshot or update")


def _need_time(ts: datetime | None, channel: str) -> datetime:
    if ts is None:
        raise InvalidValue(f"{channel}.timestamp", None, "message has no timestamp")
    return ts


def _parse_l2(events: list[Any], seq: int, ts: datetime | None) -> list[Event]:
    out: list[Event] = []
    sides = _BOOK_SIDES
    dec = Decimal
    for ev in events:
        snapshot = _event_kind(ev, "l2_data")
        product_id = _str(ev["product_id"], "l2_data.product_id")
        updates = _list(ev["updates"], "l2_data.updates")
        changes: list[LevelChange] = []
        append = changes.append
        for u in updates:
            side = sides.get(u["side"])
            if side is None:
                raise InvalidValue("l2_data.updates[].side", u["side"], "expected bid or offer")
            raw_price = u["price_level"]
            raw_size = u["new_quantity"]
            # hot path: the exchange's decimal strings straight into Decimal (C); anything unusual
            # (not a string, not a number, NaN/infinite, negative, empty) gets parse_decimal's checks and errors
            ok = False
            if type(raw_price) is str and type(raw_size) is str:
                try:
                    price = dec(raw_price)
                    size = dec(raw_size)
                except ArithmeticError:
                    pass
                else:
                    ok = price.is_finite() and size.is_finite() and price >= 0 and size >= 0
            if not ok:
                price = parse_decimal(raw_price, "price_level")
                size = parse_decimal(raw_size, "new_quantity")
            append((side, price, size))
        first_time = next((t for u in updates if (t := u.get("event_time")) is not None), None)
        time = parse_time(first_time, "l2_data.event_time") if first_time else _need_time(ts, "l2_data")
        cls = L2Snapshot if snapshot else L2Update
        out.append(cls(product_id, seq, tuple(changes), time))
    return out


def _parse_ticker(events: list[Any], seq: int, ts: datetime | None) -> list[Event]:
    out: list[Event] = []
    time = _need_time(ts, "ticker")
    for ev in events:
        snapshot = _event_kind(ev, "ticker")
        for t in _list(ev["tickers"], "ticker.tickers"):
            out.append(
                TickerEvent(
                    product_id=_str(t["product_id"], "ticker.product_id"),
                    sequence_num=seq,
                    price=_dec(t["price"], "ticker.price"),
                    time=time,
                    best_bid=_opt(t.get("best_bid"), "ticker.best_bid"),
                    best_bid_quantity=_opt(t.get("best_bid_quantity"), "ticker.best_bid_quantity"),
                    best_ask=_opt(t.get("best_ask"), "ticker.best_ask"),
                    best_ask_quantity=_opt(t.get("best_ask_quantity"), "ticker.best_ask_quantity"),
                    volume_24_h=_opt(t.get("volume_24_h"), "ticker.volume_24_h"),
                    low_24_h=_opt(t.get("low_24_h"), "ticker.low_24_h"),
                    high_24_h=_opt(t.get("high_24_h"), "ticker.high_24_h"),
                    price_percent_chg_24_h=_opt(
                        t.get("price_percent_chg_24_h"), "ticker.price_percent_chg_24_h", allow_negative=True
                    ),
                    is_snapshot=snapshot,
                )
            )
    return out


def _parse_trades(events: list[Any], seq: int, ts: datetime | None) -> list[Event]:
    out: list[Event] = []
    for ev in events:
        snapshot = _event_kind(ev, "market_trades")
        for t in _list(ev["trades"], "market_trades.trades"):
            out.append(
                MarketTrade(
                    trade_id=_str(t["trade_id"], "market_trades.trade_id"),
                    product_id=_str(t["product_id"], "market_trades.product_id"),
                    price=_dec(t["price"], "market_trades.price"),
                    size=_dec(t["size"], "market_trades.size"),
                    side=_side(t["side"], "market_trades.side"),
                    time=parse_time(t["time"], "market_trades.time"),
                    sequence_num=seq,
                    is_snapshot=snapshot,
                )
            )
    return out


def _unix(value: object, field: str) -> datetime:
    return datetime.fromtimestamp(_int(value, field), UTC)


def _candle(c: Mapping[str, Any], product_id: str, where: str, seq: int = 0, snapshot: bool = False) -> CandleEvent:
    return CandleEvent(
        product_id=product_id,
        start=_unix(c["start"], f"{where}.start"),
        open=_dec(c["open"], f"{where}.open"),
        high=_dec(c["high"], f"{where}.high"),
        low=_dec(c["low"], f"{where}.low"),
        close=_dec(c["close"], f"{where}.close"),
        volume=_dec(c["volume"], f"{where}.volume"),
        sequence_num=seq,
        is_snapshot=snapshot,
    )


def _parse_candles(events: list[Any], seq: int, ts: datetime | None) -> list[Event]:
    out: list[Event] = []
    for ev in events:
        snapshot = _event_kind(ev, "candles")
        for c in _list(ev["candles"], "candles.candles"):
            out.append(_candle(c, _str(c["product_id"], "candles.product_id"), "candles", seq, snapshot))
    return out


def _parse_heartbeats(events: list[Any], seq: int, ts: datetime | None) -> list[Event]:
    out: list[Event] = []
    for ev in events:
        raw_time = ev.get("current_time")
        out.append(
            Heartbeat(
                counter=_int(ev["heartbeat_counter"], "heartbeats.heartbeat_counter"),
                current_time=parse_time(raw_time, "heartbeats.current_time") if raw_time else None,
                sequence_num=seq,
            )
        )
    return out


def _parse_status(events: list[Any], seq: int, ts: datetime | None) -> list[Event]:
    out: list[Event] = []
    for ev in events:
        snapshot = _event_kind(ev, "status")
        for prod in _list(ev["products"], "status.products"):
            out.append(
                StatusEvent(
                    product_id=_str(prod.get("id") or prod.get("product_id"), "status.products[].id"),
                    status=str(prod.get("status", "")),
                    sequence_num=seq,
                    status_message=str(prod.get("status_message") or ""),
                    base_increment=_opt(prod.get("base_increment"), "status.base_increment"),
                    quote_increment=_opt(prod.get("quote_increment"), "status.quote_increment"),
                    min_market_funds=_opt(prod.get("min_market_funds"), "status.min_market_funds"),
                    is_snapshot=snapshot,
                )
            )
    return out


def _parse_subscriptions(events: list[Any], seq: int, ts: datetime | None) -> list[Event]:
    out: list[Event] = []
    for ev in events:
        subs = _obj(ev["subscriptions"], "subscriptions.subscriptions")
        out.append(
            SubscriptionAck(
                subscriptions={str(ch): tuple(str(pid) for pid in _list(ids, f"subscriptions.{ch}")) for ch, ids in subs.items()},
                sequence_num=seq,
            )
        )
    return out


def _parse_user(events: list[Any], seq: int, ts: datetime | None) -> list[Event]:
    out: list[Event] = []
    for ev in events:
        snapshot = _event_kind(ev, "user")
        for o in _list(ev.get("orders") or [], "user.orders"):
            cumulative = _dec(o["cumulative_quantity"], "user.cumulative_quantity")
            venue_status = _str(o["status"], "user.status")
            fills_raw = o.get("number_of_fills")
            created = o.get("creation_time")
            out.append(
                UserOrderUpdate(
                    order_id=_str(o["order_id"], "user.order_id"),
                    client_order_id=o.get("client_order_id") or None,
                    product_id=_str(o["product_id"], "user.product_id"),
                    side=_side(o["order_side"], "user.order_side"),
                    status=map_order_status(venue_status, cumulative),
                    venue_status=venue_status,
                    cumulative_quantity=cumulative,
                    leaves_quantity=_dec(o["leaves_quantity"], "user.leaves_quantity"),
                    avg_price=_dec(o.get("avg_price") or "0", "user.avg_price"),
                    total_fees=_dec(o.get("total_fees") or "0", "user.total_fees"),
                    sequence_num=seq,
                    is_snapshot=snapshot,
                    order_type=str(o.get("order_type") or ""),
                    limit_price=_opt(o.get("limit_price"), "user.limit_price"),
                    stop_price=_opt(o.get("stop_price"), "user.stop_price"),
                    number_of_fills=None if fills_raw in (None, "") else _int(fills_raw, "user.number_of_fills"),
                    filled_value=_opt(o.get("filled_value"), "user.filled_value"),
                    creation_time=parse_time(created, "user.creation_time") if created else None,
                )
            )
    return out


_Handler = Callable[[list[Any], int, datetime | None], list[Event]]
_HANDLERS: Final[Mapping[str, _Handler]] = {
    "l2_data": _parse_l2,
    "level2": _parse_l2,
    "ticker": _parse_ticker,
    "ticker_batch": _parse_ticker,
    "market_trades": _parse_trades,
    "candles": _parse_candles,
    "heartbeats": _parse_heartbeats,
    "status": _parse_status,
    "subscriptions": _parse_subscriptions,
    "user": _parse_user,
}
_PARSE_ERRORS: Final = (KeyError, TypeError, ValueError, AttributeError, IndexError, ArithmeticError, OverflowError)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, KeyError):
        return f"missing field {exc.args[0]!r}" if exc.args else "missing field"
    if isinstance(exc, InvalidValue):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _parse_envelope(data: bytes | bytearray | memoryview | str) -> Envelope:
    """Parse one WebSocket frame into an :class:`Envelope` of typed events.

    * unknown channels give one :class:`UnknownChannel` event (never dropped silently);
    * ``{"type": "error"}`` messages give a :class:`VenueErrorMessage`;
    * invalid or truncated JSON, missing fields, bad numbers or times raise
      :class:`MalformedMessage` carrying the raw text (truncated). No other
      exception type escapes.
    """
    try:
        msg = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise MalformedMessage(f"invalid JSON ({exc})", bytes(data) if not isinstance(data, str) else data) from None
    if not isinstance(msg, dict):
        raise MalformedMessage("expected a JSON object", _raw(data))
    try:
        if msg.get("type") == "error":
            message = str(msg.get("message") or "")
            return Envelope("error", None, None, (VenueErrorMessage(message, str(msg.get("reason") or "")),))
        channel = msg.get("channel")
        if not isinstance(channel, str) or not channel:
            raise InvalidValue("channel", channel, "missing channel")
        seq = _int(msg["sequence_num"], "sequence_num")
        raw_ts = msg.get("timestamp")
        ts = parse_time(raw_ts, "timestamp") if raw_ts else None
        handler = _HANDLERS.get(channel)
        if handler is None:
            return Envelope(channel, seq, ts, (UnknownChannel(channel, seq, truncate(_raw(data))),))
        events = handler(_list(msg["events"], "events"), seq, ts)
    except _PARSE_ERRORS as exc:
        raise MalformedMessage(_describe(exc), _raw(data)) from None
    return Envelope(channel, seq, ts, tuple(events))


# --- the level-2 hot path ---------------------------------------------------------------------


class _L2Level(msgspec.Struct, gc=False):
    """One ``l2_data`` level change, numbers left as the exchange's text (see OrderBook.apply_text_updates)."""

    side: Literal["bid", "offer"]
    price: str = msgspec.field(name="price_level")
    size: str = msgspec.field(name="new_quantity")
    event_time: str | None = None  # only the first one is read (as parse_envelope does): no datetime per level


class _L2Event(msgspec.Struct, gc=False):
    product_id: Annotated[str, msgspec.Meta(min_length=1)]
    updates: list[_L2Level]
    type: Literal["snapshot", "update"] = "update"


class _L2Frame(msgspec.Struct, gc=False):
    channel: Literal["l2_data", "level2"]
    sequence_num: int
    events: list[_L2Event]
    timestamp: datetime | None = None
    type: Any = None


_L2_DECODER: Final = msgspec.json.Decoder(_L2Frame)
_fromisoformat: Final = datetime.fromisoformat
_L2_DECODE_ERRORS: Final = (msgspec.DecodeError, msgspec.ValidationError)
L2TextUpdate: TypeAlias = tuple[int, str, list[_L2Level]]
"""``(sequence_num, product_id, levels)``: each level has ``side``, ``price`` and ``size`` text."""


def decode_l2_update(data: bytes | bytearray | memoryview | str) -> L2TextUpdate | None:
    """The hot path of the level-2 stream: one ``l2_data`` *update* frame, numbers left as text.

    Returns ``(sequence_num, product_id, levels)`` for a frame that
    :func:`parse_envelope` would turn into exactly one :class:`L2Update`, with
    the structure, the sides and the times checked (msgspec, in C). Prices and
    sizes stay strings for :meth:`~cryptoj.model.book.OrderBook.apply_text_updates`,
    which reads and checks them the way :func:`parse_envelope` does.

    Returns None for every other frame (other channels, snapshots, several
    events, an error message, anything unusual or malformed): the caller then
    uses :func:`parse_envelope`, which has the last word on what is accepted and
    on the errors. Everything this function accepts, :func:`parse_envelope` accepts.
    """
    if type(data) is bytes:
        if b'"l2_data"' not in data:
            return None
    elif type(data) is str:
        if '"l2_data"' not in data:
            return None
    else:
        return None
    try:
        frame = _L2_DECODER.decode(data)
    except _L2_DECODE_ERRORS:
        return None
    events = frame.events
    if len(events) != 1 or frame.type == "error":
        return None
    event = events[0]
    if event.type != "update":
        return None
    updates = event.updates
    first_time = updates[0].event_time if updates else None
    if first_time:
        try:
            _fromisoformat(first_time)  # if fromisoformat takes it, so does parse_time (the full path)
        except ValueError:
            return None
    elif first_time is not None or frame.timestamp is None or any(u.event_time is not None for u in updates):
        return None  # an empty first time, no time at all, or a later first one: parse_envelope decides
    return frame.sequence_num, event.product_id, updates


class EnvelopeParser:
    """The Coinbase frame parser: call it for an :class:`Envelope`; ``decode_l2_update`` is the level-2 hot path.

    :data:`parse_envelope` is the one instance. A consumer that finds a
    ``decode_l2_update`` on the parser it was given (the market-data service
    does) may send level-2 update frames through it first.
    """

    __slots__ = ()

    def __call__(self, data: bytes | bytearray | memoryview | str) -> Envelope:
        return _parse_envelope(data)

    @staticmethod
    def decode_l2_update(data: bytes | bytearray | memoryview | str) -> L2TextUpdate | None:
        return decode_l2_update(data)

    def __repr__(self) -> str:
        return "parse_envelope"


parse_envelope: Final = EnvelopeParser()
"""Parse one WebSocket frame into an :class:`Envelope` of typed events (see ``_parse_envelope``).

* unknown channels give one :class:`UnknownChannel` event (never dropped silently);
* ``{"type": "error"}`` messages give a :class:`VenueErrorMessage`;
* invalid or truncated JSON, missing fields, bad numbers or times raise
  :class:`MalformedMessage` carrying the raw text (truncated). No other
  exception type escapes.
"""


def parse_frame(data: bytes | bytearray | memoryview | str) -> list[Event]:
    """The events of one frame (see :func:`parse_envelope`; use that to check sequence numbers)."""
    return list(parse_envelope(data).events)


def _raw(data: bytes | bytearray | memoryview | str) -> str:
    if isinstance(data, str):
        return data
    return bytes(data).decode("utf-8", errors="replace")


def subscribe_message(
    channel: str, product_ids: Sequence[str] = (), *, jwt: str | None = None, unsubscribe: bool = False
) -> dict[str, Any]:
    """A (un)subscribe message for one channel; Coinbase wants one message per channel.

    ``jwt`` (a fresh :func:`~cryptoj.venues.coinbase.auth.ws_jwt`) is required for
    the private channels ``user`` and ``futures_balance_summary``.
    """
    if channel not in WS_CHANNELS:
        raise InvalidValue("subscribe.channel", channel, f"unknown channel (known: {sorted(WS_CHANNELS)})")
    if channel in PRIVATE_WS_CHANNELS and not jwt and not unsubscribe:
        raise InvalidValue("subscribe.jwt", None, f"channel {channel} needs a JWT")
    msg: dict[str, Any] = {"type": "unsubscribe" if unsubscribe else "subscribe", "channel": channel}
    if product_ids:
        msg["product_ids"] = list(product_ids)
    if jwt:
        msg["jwt"] = jwt
    return msg


def encode_message(message: Mapping[str, Any]) -> str:
    """JSON text for a WebSocket message."""
    return orjson.dumps(message).decode()


# --- REST responses -> typed results ---------------------------------------------


def loads(body: bytes | str, what: str) -> Any:
    """Decode a JSON response body; invalid JSON raises :class:`MalformedMessage`."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedMessage(f"{what}: invalid JSON ({exc})", body) from None


def _guard(what: str, raw: object, fn: Callable[[], _T]) -> _T:
    """Run a parser; any parse failure becomes :class:`MalformedMessage` naming ``what``."""
    try:
        return fn()
    except _PARSE_ERRORS as exc:
        raw_text = raw if isinstance(raw, str | bytes) else orjson.dumps(raw, default=str).decode()
        raise MalformedMessage(f"{what}: {_describe(exc)}", raw_text) from None


@dataclass(frozen=True, slots=True)
class VenueOrder:
    """An order as Coinbase reports it (``/orders/historical/...``)."""

    order_id: str
    client_order_id: str | None
    product_id: str
    side: Side
    status: OrderStatus
    venue_status: str
    configuration: OrderConfiguration | None
    filled_size: Decimal
    average_filled_price: Decimal | None
    total_fees: Decimal
    filled_value: Decimal
    number_of_fills: int
    created_time: datetime | None = None
    last_fill_time: datetime | None = None
    order_type: str = ""
    time_in_force: str = ""
    reject_reason: str | None = None
    outstanding_hold_amount: Decimal | None = None
    size_in_quote: bool = False

    def to_spec(self) -> OrderSpec:
        """The :class:`OrderSpec` this order was placed with (needs a known configuration)."""
        cfg = self.configuration
        if cfg is None:
            raise InvalidValue(f"order {self.order_id}.order_configuration", None, "unknown configuration")
        return OrderSpec(
            client_order_id=self.client_order_id or self.order_id,
            product_id=self.product_id,
            side=self.side,
            kind=cfg.kind,
            base_size=cfg.base_size,
            quote_size=cfg.quote_size,
            limit_price=cfg.limit_price,
            stop_price=cfg.stop_price,
            stop_direction=cfg.stop_direction,
            stop_trigger_price=cfg.stop_trigger_price,
            time_in_force=cfg.time_in_force,
            post_only=cfg.post_only,
            end_time=cfg.end_time,
        )


_NO_REASON: Final = frozenset({"", "REJECT_REASON_UNSPECIFIED", "UNKNOWN_FAILURE_REASON", "UNKNOWN_PREVIEW_FAILURE_REASON"})


def _opt_time(value: object, field: str) -> datetime | None:
    return parse_time(value, field) if value not in (None, "") else None


def _order_record(o: Mapping[str, Any]) -> VenueOrder:
    order_id = _str(o["order_id"], "order.order_id")
    where = f"order {order_id}"
    filled = _dec(o.get("filled_size") or "0", f"{where}.filled_size")
    venue_status = _str(o["status"], f"{where}.status")
    cfg_raw = o.get("order_configuration")
    configuration: OrderConfiguration | None = None
    if cfg_raw:
        try:
            configuration = parse_order_configuration(cfg_raw, f"{where}.order_configuration")
        except MalformedMessage as exc:
            if not exc.reason.startswith(UNSUPPORTED_ORDER_CONFIGURATION):
                raise InvalidValue(f"{where}.order_configuration", cfg_raw, exc.reason) from None
            configuration = None  # a configuration this client does not trade (e.g. twap): state is still usable
    reason = str(o.get("reject_reason") or "")
    avg = _opt(o.get("average_filled_price"), f"{where}.average_filled_price")
    return VenueOrder(
        order_id=order_id,
        client_order_id=o.get("client_order_id") or None,
        product_id=_str(o["product_id"], f"{where}.product_id"),
        side=_side(o["side"], f"{where}.side"),
        status=map_order_status(venue_status, filled),
        venue_status=venue_status,
        configuration=configuration,
        filled_size=filled,
        average_filled_price=avg if avg else None,
        total_fees=_dec(o.get("total_fees") or "0", f"{where}.total_fees"),
        filled_value=_dec(o.get("filled_value") or "0", f"{where}.filled_value"),
        number_of_fills=_int(o.get("number_of_fills") or 0, f"{where}.number_of_fills"),
        created_time=_opt_time(o.get("created_time"), f"{where}.created_time"),
        last_fill_time=_opt_time(o.get("last_fill_time"), f"{where}.last_fill_time"),
        order_type=str(o.get("order_type") or ""),
        time_in_force=str(o.get("time_in_force") or ""),
        reject_reason=None if reason in _NO_REASON else reason,
        outstanding_hold_amount=_opt(o.get("outstanding_hold_amount"), f"{where}.outstanding_hold_amount"),
        size_in_quote=bool(o.get("size_in_quote", False)),
    )


def parse_order(body: Mapping[str, Any]) -> VenueOrder:
    """``GET /orders/historical/{order_id}`` → the order (``{"order": {...}}``)."""
    return _guard("order", body, lambda: _order_record(_obj(body["order"], "order")))


@dataclass(frozen=True, slots=True)
class OrdersPage:
    orders: list[VenueOrder]
    has_next: bool
    cursor: str
    sequence: str = ""


def parse_orders_page(body: Mapping[str, Any]) -> OrdersPage:
    """``GET /orders/historical/batch`` → one page of orders."""

    def run() -> OrdersPage:
        orders = [_order_record(_obj(o, "orders[]")) for o in _list(body["orders"], "orders")]
        return OrdersPage(
            orders, bool(body.get("has_next", False)), str(body.get("cursor") or ""), str(body.get("sequence") or "")
        )

    return _guard("orders", body, run)


@dataclass(frozen=True, slots=True)
class FillsPage:
    fills: list[Fill]
    cursor: str


_LIQUIDITY: Final[Mapping[str, Liquidity]] = {"MAKER": Liquidity.MAKER, "TAKER": Liquidity.TAKER}


def _fill_record(f: Mapping[str, Any], client_order_ids: Mapping[str, str]) -> Fill:
    trade_id = _str(f["trade_id"], "fill.trade_id")
    where = f"fill {trade_id}"
    order_id = _str(f["order_id"], f"{where}.order_id")
    price = _dec(f["price"], f"{where}.price")
    size = _dec(f["size"], f"{where}.size")
    if f.get("size_in_quote") is True:
        # Coinbase reports the size of a quote-sized order's fill in quote currency.
        size = size / price
    return Fill(
        trade_id=trade_id,
        client_order_id=client_order_ids.get(order_id, ""),
        product_id=_str(f["product_id"], f"{where}.product_id"),
        side=_side(f["side"], f"{where}.side"),
        price=price,
        size=size,
        fee=_dec(f.get("commission") or "0", f"{where}.commission"),
        time=parse_time(f["trade_time"], f"{where}.trade_time"),
        liquidity=_LIQUIDITY.get(str(f.get("liquidity_indicator", "")).upper(), Liquidity.UNKNOWN),
        venue_order_id=order_id,
    )


def parse_fills_page(body: Mapping[str, Any], client_order_ids: Mapping[str, str] | None = None) -> FillsPage:
    """``GET /orders/historical/fills`` → :class:`Fill` records.

    Coinbase fills name the venue ``order_id`` only; ``client_order_ids`` maps it
    to ours (an unknown order gives ``client_order_id=""``).
    """
    ids = client_order_ids or {}

    def run() -> FillsPage:
        fills = [_fill_record(_obj(f, "fills[]"), ids) for f in _list(body["fills"], "fills")]
        return FillsPage(fills, str(body.get("cursor") or ""))

    return _guard("fills", body, run)


@dataclass(frozen=True, slots=True)
class Balance:
    """One currency account: ``available`` can be spent, ``hold`` is reserved by open orders."""

    currency: str
    available: Decimal
    hold: Decimal
    uuid: str = ""
    name: str = ""
    type: str = ""
    ready: bool = True
    active: bool = True

    @property
    def total(self) -> Decimal:
        return self.available + self.hold


@dataclass(frozen=True, slots=True)
class AccountsPage:
    accounts: list[Balance]
    has_next: bool
    cursor: str


def _money_value(obj: object, field: str) -> Decimal:
    return _dec(_obj(obj, field)["value"], f"{field}.value")


def _account(a: Mapping[str, Any]) -> Balance:
    currency = _str(a["currency"], "account.currency")
    where = f"account {currency}"
    return Balance(
        currency=currency,
        available=_money_value(a["available_balance"], f"{where}.available_balance"),
        hold=_money_value(a.get("hold") or {"value": "0"}, f"{where}.hold"),
        uuid=str(a.get("uuid") or ""),
        name=str(a.get("name") or ""),
        type=str(a.get("type") or ""),
        ready=bool(a.get("ready", True)),
        active=bool(a.get("active", True)),
    )


def parse_accounts_page(body: Mapping[str, Any]) -> AccountsPage:
    """``GET /accounts`` → one page of balances."""

    def run() -> AccountsPage:
        accounts = [_account(_obj(a, "accounts[]")) for a in _list(body["accounts"], "accounts")]
        return AccountsPage(accounts, bool(body.get("has_next", False)), str(body.get("cursor") or ""))

    return _guard("accounts", body, run)


def parse_account(body: Mapping[str, Any]) -> Balance:
    """``GET /accounts/{uuid}`` → one balance."""
    return _guard("account", body, lambda: _account(_obj(body["account"], "account")))


def parse_product(body: Mapping[str, Any]) -> Product:
    """``GET /products/{id}`` (the record itself) → :class:`Product`."""
    return _guard("product", body, lambda: Product.from_coinbase(_obj(body, "product")))


def parse_products(body: Mapping[str, Any]) -> list[Product]:
    """``GET /products`` → every product."""
    return _guard(
        "products", body, lambda: [Product.from_coinbase(_obj(p, "products[]")) for p in _list(body["products"], "products")]
    )


PriceLevel: TypeAlias = tuple[Decimal, Decimal]


@dataclass(frozen=True, slots=True)
class ProductBook:
    """``/product_book`` or one entry of ``/best_bid_ask``: best-first (price, size) levels."""

    product_id: str
    bids: tuple[PriceLevel, ...]
    asks: tuple[PriceLevel, ...]
    time: datetime | None = None
    last: Decimal | None = None
    mid_market: Decimal | None = None
    spread_bps: Decimal | None = None

    @property
    def best_bid(self) -> PriceLevel | None:
        return self.bids[0] if self.bids else None

    @property
    def best_ask(self) -> PriceLevel | None:
        return self.asks[0] if self.asks else None


def _levels(raw: object, field: str) -> tuple[PriceLevel, ...]:
    return tuple((_dec(lv["price"], f"{field}.price"), _dec(lv["size"], f"{field}.size")) for lv in _list(raw or [], field))


def _pricebook(pb: Mapping[str, Any], extra: Mapping[str, Any]) -> ProductBook:
    pid = _str(pb["product_id"], "pricebook.product_id")
    return ProductBook(
        product_id=pid,
        bids=_levels(pb.get("bids"), f"{pid}.bids"),
        asks=_levels(pb.get("asks"), f"{pid}.asks"),
        time=_opt_time(pb.get("time"), f"{pid}.time"),
        last=_opt(extra.get("last"), f"{pid}.last"),
        mid_market=_opt(extra.get("mid_market"), f"{pid}.mid_market"),
        spread_bps=_opt(extra.get("spread_bps"), f"{pid}.spread_bps"),
    )


def parse_product_book(body: Mapping[str, Any]) -> ProductBook:
    """``GET /product_book`` → :class:`ProductBook`."""
    return _guard("product_book", body, lambda: _pricebook(_obj(body["pricebook"], "pricebook"), body))


def parse_best_bid_ask(body: Mapping[str, Any]) -> list[ProductBook]:
    """``GET /best_bid_ask`` → one top-of-book per product."""
    return _guard(
        "best_bid_ask", body, lambda: [_pricebook(_obj(pb, "pricebooks[]"), {}) for pb in _list(body["pricebooks"], "pricebooks")]
    )


def parse_candles(body: Mapping[str, Any], product_id: str) -> list[CandleEvent]:
    """``GET /products/{id}/candles`` → candles **oldest first** (Coinbase sends newest first)."""

    def run() -> list[CandleEvent]:
        candles = [_candle(_obj(c, "candles[]"), product_id, f"{product_id}.candles") for c in _list(body["candles"], "candles")]
        candles.sort(key=lambda c: c.start)
        return candles

    return _guard("candles", body, run)


@dataclass(frozen=True, slots=True)
class MarketTrades:
    """``GET /products/{id}/ticker``: recent public trades plus best bid/ask."""

    trades: list[MarketTrade]
    best_bid: Decimal | None
    best_ask: Decimal | None


def parse_market_trades(body: Mapping[str, Any]) -> MarketTrades:
    def trade(t: Mapping[str, Any]) -> MarketTrade:
        tid = _str(t["trade_id"], "trades[].trade_id")
        return MarketTrade(
            trade_id=tid,
            product_id=_str(t["product_id"], f"trade {tid}.product_id"),
            price=_dec(t["price"], f"trade {tid}.price"),
            size=_dec(t["size"], f"trade {tid}.size"),
            side=_side(t["side"], f"trade {tid}.side"),
            time=parse_time(t["time"], f"trade {tid}.time"),
        )

    return _guard(
        "ticker",
        body,
        lambda: MarketTrades(
            [trade(_obj(t, "trades[]")) for t in _list(body["trades"], "trades")],
            _opt(body.get("best_bid"), "best_bid"),
            _opt(body.get("best_ask"), "best_ask"),
        ),
    )


@dataclass(frozen=True, slots=True)
class FeeTier:
    """``/transaction_summary``: fee rates are fractions (``0.006`` = 0.6 %)."""

    pricing_tier: str
    taker_fee_rate: Decimal
    maker_fee_rate: Decimal
    total_volume: Decimal | None = None
    total_fees: Decimal | None = None


def _number(value: object, field: str) -> Decimal | None:
    """Coinbase sends some summary numbers as JSON numbers: take their text exactly."""
    if isinstance(value, float):
        return parse_decimal(repr(value), field)
    return _opt(value, field)


def parse_transaction_summary(body: Mapping[str, Any]) -> FeeTier:
    def run() -> FeeTier:
        tier = _obj(body["fee_tier"], "fee_tier")
        return FeeTier(
            pricing_tier=str(tier.get("pricing_tier") or ""),
            taker_fee_rate=_dec(tier["taker_fee_rate"], "fee_tier.taker_fee_rate"),
            maker_fee_rate=_dec(tier["maker_fee_rate"], "fee_tier.maker_fee_rate"),
            total_volume=_number(body.get("total_volume"), "total_volume"),
            total_fees=_number(body.get("total_fees"), "total_fees"),
        )

    return _guard("transaction_summary", body, run)


def parse_server_time(body: Mapping[str, Any]) -> datetime:
    """``GET /time`` → the venue's clock (``iso``, else ``epochMillis``/``epochSeconds``)."""

    def run() -> datetime:
        if body.get("iso"):
            return parse_time(body["iso"], "time.iso")
        if body.get("epochMillis") not in (None, ""):
            return datetime.fromtimestamp(_int(body["epochMillis"], "time.epochMillis") / 1000, UTC)
        return _unix(body["epochSeconds"], "time.epochSeconds")

    return _guard("time", body, run)


@dataclass(frozen=True, slots=True)
class CreatedOrder:
    """A successful ``POST /orders``."""

    order_id: str
    client_order_id: str
    product_id: str
    side: Side


def _failure_reason(err: Mapping[str, Any]) -> str:
    for key in ("new_order_failure_reason", "preview_failure_reason", "error", "failure_reason"):
        value = err.get(key)
        if isinstance(value, str) and value not in _NO_REASON:
            return value
    value = err.get("error")
    return value if isinstance(value, str) and value else "UNKNOWN_FAILURE_REASON"


def parse_create_order(body: Mapping[str, Any], client_order_id: str) -> CreatedOrder:
    """``POST /orders`` → :class:`CreatedOrder`, or :class:`OrderRejected` with Coinbase's reason code.

    A refusal for rate limiting (``RATE_LIMIT_EXCEEDED``) raises :class:`RateLimited`.
    """
    if not isinstance(body, Mapping) or "success" not in body:
        raise MalformedMessage("create order: response has no 'success'", orjson.dumps(body, default=str))
    if body.get("success") is True:

        def run() -> CreatedOrder:
            ok = _obj(body.get("success_response") or {}, "success_response")
            oid = ok.get("order_id") or body.get("order_id")
            return CreatedOrder(
                order_id=_str(oid, "success_response.order_id"),
                client_order_id=str(ok.get("client_order_id") or client_order_id),
                product_id=str(ok.get("product_id") or ""),
                side=_side(ok["side"], "success_response.side") if ok.get("side") else Side.BUY,
            )

        return _guard("create order", body, run)
    err = body.get("error_response") or {}
    if not isinstance(err, Mapping):
        err = {}
    reason = _failure_reason(err)
    message = str(err.get("message") or err.get("error_details") or "")
    if reason == "RATE_LIMIT_EXCEEDED":
        raise RateLimited(f"create order {client_order_id}: {reason} {message}".strip())
    raise OrderRejected(reason, truncate(message, 200), client_order_id=client_order_id)


@dataclass(frozen=True, slots=True)
class CancelResult:
    order_id: str
    success: bool
    failure_reason: str | None = None


def parse_batch_cancel(body: Mapping[str, Any]) -> list[CancelResult]:
    """``POST /orders/batch_cancel`` → one result per order id."""

    def run() -> list[CancelResult]:
        out = []
        for r in _list(body["results"], "results"):
            r = _obj(r, "results[]")
            reason = str(r.get("failure_reason") or "")
            ok = bool(r.get("success", False))
            out.append(CancelResult(_str(r["order_id"], "results[].order_id"), ok, None if ok or not reason else reason))
        return out

    return _guard("batch_cancel", body, run)


# --- futures (CFM) summaries: parsed exactly, not traded -----------------------------


def parse_cfm_balance_summary(body: Mapping[str, Any]) -> dict[str, Decimal]:
    """``/cfm/balance_summary`` flattened to dotted names.

    E.g. ``{"futures_buying_power": Decimal(...), "intraday_margin_window_measure.initial_margin": ...}``.
    """

    def flatten(obj: Mapping[str, Any], prefix: str, out: dict[str, Decimal]) -> None:
        for key, value in obj.items():
            name = f"{prefix}{key}"
            if isinstance(value, Mapping):
                if "value" in value:
                    out[name] = parse_decimal(value["value"], name, allow_negative=True)
                else:
                    flatten(value, f"{name}.", out)
            elif isinstance(value, str) and value and key.endswith(("percentage", "_amount", "_balance", "_pnl")):
                out[name] = parse_decimal(value, name, allow_negative=True)

    def run() -> dict[str, Decimal]:
        out: dict[str, Decimal] = {}
        flatten(_obj(body["balance_summary"], "balance_summary"), "", out)
        return out

    return _guard("balance_summary", body, run)


@dataclass(frozen=True, slots=True)
class FuturesPosition:
    product_id: str
    side: str
    number_of_contracts: Decimal
    avg_entry_price: Decimal
    current_price: Decimal
    unrealized_pnl: Decimal
    daily_realized_pnl: Decimal
    total_fees: Decimal
    contract_size: Decimal | None = None
    expiration_time: datetime | None = None


def _position(p: Mapping[str, Any]) -> FuturesPosition:
    pid = _str(p["product_id"], "position.product_id")

    def money(key: str) -> Decimal:
        return parse_decimal(_obj(p[key], f"{pid}.{key}")["value"], f"{pid}.{key}", allow_negative=True)

    return FuturesPosition(
        product_id=pid,
        side=str(p.get("side") or ""),
        number_of_contracts=_dec(p["number_of_contracts"], f"{pid}.number_of_contracts"),
        avg_entry_price=money("avg_entry_price"),
        current_price=money("current_price"),
        unrealized_pnl=money("unrealized_pnl"),
        daily_realized_pnl=money("daily_realized_pnl"),
        total_fees=money("total_fees"),
        contract_size=_opt(p.get("contract_size"), f"{pid}.contract_size"),
        expiration_time=_opt_time(p.get("expiration_time"), f"{pid}.expiration_time"),
    )


def parse_cfm_positions(body: Mapping[str, Any]) -> list[FuturesPosition]:
    """``/cfm/positions`` (``{"positions": [...]}``) or ``/cfm/positions/{id}`` (``{"position": {...}}``)."""

    def run() -> list[FuturesPosition]:
        if "position" in body:
            return [_position(_obj(body["position"], "position"))]
        return [_position(_obj(p, "positions[]")) for p in _list(body["positions"], "positions")]

    return _guard("positions", body, run)


# --- errors ------------------------------------------------------------------------


def error_from_response(
    status: int, body: bytes | str | Mapping[str, Any] | None, *, retry_after: float | None = None
) -> VenueError:
    """The :mod:`cryptoj.errors` exception for a failed HTTP response.

    429 → :class:`RateLimited`; 401/403 → :class:`AuthenticationFailed`; 404 →
    :class:`OrderNotFound` when the body says the order is unknown, else a
    plain :class:`VenueError`; a 400 carrying an order failure reason →
    :class:`OrderRejected` with that code; 5xx → :class:`VenueUnavailable`.
    Response bodies may be JSON (``error``/``message``/``error_details``) or text.
    """
    data: Mapping[str, Any] = {}
    text = ""
    if isinstance(body, Mapping):
        data = body
    elif body:
        text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
        try:
            parsed = orjson.loads(text)
        except orjson.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict):
            data = parsed
    err = data.get("error_response") if isinstance(data.get("error_response"), Mapping) else None
    code = str(data.get("error") or (err or {}).get("error") or "")
    message = str(data.get("message") or data.get("error_details") or (err or {}).get("message") or text.strip())
    summary = truncate(f"HTTP {status}" + (f" {code}" if code else "") + (f": {message}" if message else ""), 300)
    if status == 429:
        return RateLimited(summary, retry_after=retry_after)
    if status in (401, 403):
        return AuthenticationFailed(summary, status=status)
    if status == 404 and "order" in summary.lower():
        return OrderNotFound(summary, status=404)
    if status >= 500:
        return VenueUnavailable(summary, status=status)
    if err is not None or any(k in data for k in ("new_order_failure_reason", "preview_failure_reason")):
        reason = _failure_reason(err if err is not None else data)
        return OrderRejected(reason, truncate(message, 200))
    return VenueError(summary, status=status)
