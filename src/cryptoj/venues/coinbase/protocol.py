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

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

from cryptoj.errors import InvalidValue, MalformedMessage
from cryptoj.model.money import Side, parse_decimal
from cryptoj.model.orders import OrderKind, OrderSpec, StopDirection, TimeInForce

__all__ = [
    "ORDER_CONFIGURATIONS",
    "UNSUPPORTED_ORDER_CONFIGURATION",
    "OrderConfiguration",
    "body_to_order_spec",
    "format_decimal",
    "format_time",
    "order_configuration_name",
    "order_spec_to_body",
    "parse_order_configuration",
    "parse_time",
]

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
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidValue(field, value, "not an RFC 3339 time") from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed


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
