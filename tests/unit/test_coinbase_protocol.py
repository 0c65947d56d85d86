"""Sans-IO Coinbase protocol: order bodies (golden), frames and REST responses on bytes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from cryptoj.errors import InvalidValue, MalformedMessage
from cryptoj.model.money import Side
from cryptoj.model.orders import OrderKind, OrderSpec, StopDirection, TimeInForce
from cryptoj.venues.coinbase import protocol as p

pytestmark = pytest.mark.unit

D = Decimal
END = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)

# --- golden request bodies: one per order configuration on the protocol page ---------

GOLDEN: list[tuple[str, OrderSpec, dict[str, Any]]] = [
    (
        "market_ioc_quote",
        OrderSpec("c1", "BTC-USD", Side.BUY, OrderKind.MARKET, quote_size=D("10.00"), time_in_force=TimeInForce.IOC),
        {"market_market_ioc": {"quote_size": "10.00"}},
    ),
    (
        "market_ioc_base",
        OrderSpec("c2", "BTC-USD", Side.SELL, OrderKind.MARKET, base_size=D("0.001"), time_in_force=TimeInForce.IOC),
        {"market_market_ioc": {"base_size": "0.001"}},
    ),
    (
        "market_fok_base",
        OrderSpec("c3", "BTC-USD", Side.SELL, OrderKind.MARKET, base_size=D("0.5"), time_in_force=TimeInForce.FOK),
        {"market_market_fok": {"base_size": "0.5"}},
    ),
    (
        "market_fok_quote",
        OrderSpec("c4", "ETH-USD", Side.BUY, OrderKind.MARKET, quote_size=D("25"), time_in_force=TimeInForce.FOK),
        {"market_market_fok": {"quote_size": "25"}},
    ),
    (
        "limit_gtc",
        OrderSpec("c5", "BTC-USD", Side.BUY, OrderKind.LIMIT, base_size=D("0.01"), limit_price=D("30000.00")),
        {"limit_limit_gtc": {"base_size": "0.01", "limit_price": "30000.00", "post_only": False}},
    ),
    (
        "limit_gtc_post_only",
        OrderSpec("c6", "BTC-USD", Side.SELL, OrderKind.LIMIT, base_size=D("0.01"), limit_price=D("31000"), post_only=True),
        {"limit_limit_gtc": {"base_size": "0.01", "limit_price": "31000", "post_only": True}},
    ),
    (
        "limit_gtd_post_only",
        OrderSpec(
            "c7",
            "BTC-USD",
            Side.BUY,
            OrderKind.LIMIT,
            base_size=D("0.02"),
            limit_price=D("29000.5"),
            time_in_force=TimeInForce.GTD,
            end_time=END,
            post_only=True,
        ),
        {
            "limit_limit_gtd": {
                "base_size": "0.02",
                "limit_price": "29000.5",
                "end_time": "2030-01-02T03:04:05Z",
                "post_only": True,
            }
        },
    ),
    (
        "limit_ioc",
        OrderSpec(
            "c8", "BTC-USD", Side.BUY, OrderKind.LIMIT, base_size=D("0.3"), limit_price=D("1.5"), time_in_force=TimeInForce.IOC
        ),
        {"sor_limit_ioc": {"base_size": "0.3", "limit_price": "1.5"}},
    ),
    (
        "limit_fok",
        OrderSpec(
            "c9", "BTC-USD", Side.SELL, OrderKind.LIMIT, base_size=D("0.3"), limit_price=D("2"), time_in_force=TimeInForce.FOK
        ),
        {"limit_limit_fok": {"base_size": "0.3", "limit_price": "2"}},
    ),
    (
        "stop_limit_gtc_up",
        OrderSpec(
            "c10",
            "BTC-USD",
            Side.BUY,
            OrderKind.STOP_LIMIT,
            base_size=D("0.1"),
            limit_price=D("35100"),
            stop_price=D("35000"),
            stop_direction=StopDirection.STOP_UP,
        ),
        {
            "stop_limit_stop_limit_gtc": {
                "base_size": "0.1",
                "limit_price": "35100",
                "stop_price": "35000",
                "stop_direction": "STOP_DIRECTION_STOP_UP",
            }
        },
    ),
    (
        "stop_limit_gtd_down",
        OrderSpec(
            "c11",
            "BTC-USD",
            Side.SELL,
            OrderKind.STOP_LIMIT,
            base_size=D("0.1"),
            limit_price=D("24900"),
            stop_price=D("25000"),
            stop_direction=StopDirection.STOP_DOWN,
            time_in_force=TimeInForce.GTD,
            end_time=datetime(2030, 1, 2, 4, 4, 5, 250000, tzinfo=timezone(timedelta(hours=1))),
        ),
        {
            "stop_limit_stop_limit_gtd": {
                "base_size": "0.1",
                "limit_price": "24900",
                "stop_price": "25000",
                "end_time": "2030-01-02T03:04:05.250000Z",
                "stop_direction": "STOP_DIRECTION_STOP_DOWN",
            }
        },
    ),
    (
        "bracket_gtc",
        OrderSpec(
            "c12",
            "BTC-USD",
            Side.SELL,
            OrderKind.BRACKET,
            base_size=D("0.1"),
            limit_price=D("40000"),
            stop_trigger_price=D("28000"),
        ),
        {"trigger_bracket_gtc": {"base_size": "0.1", "limit_price": "40000", "stop_trigger_price": "28000"}},
    ),
    (
        "bracket_gtd",
        OrderSpec(
            "c13",
            "BTC-USD",
            Side.SELL,
            OrderKind.BRACKET,
            base_size=D("0.1"),
            limit_price=D("40000"),
            stop_trigger_price=D("28000"),
            time_in_force=TimeInForce.GTD,
            end_time=END,
        ),
        {
            "trigger_bracket_gtd": {
                "base_size": "0.1",
                "limit_price": "40000",
                "stop_trigger_price": "28000",
                "end_time": "2030-01-02T03:04:05Z",
            }
        },
    ),
]


@pytest.mark.parametrize(("name", "spec", "configuration"), GOLDEN, ids=[g[0] for g in GOLDEN])
def test_order_body_matches_protocol_page(name: str, spec: OrderSpec, configuration: dict[str, Any]) -> None:
    body = p.order_spec_to_body(spec)
    assert body == {
        "client_order_id": spec.client_order_id,
        "product_id": spec.product_id,
        "side": spec.side.value,
        "order_configuration": configuration,
    }
    # the body survives JSON and parses back to the same spec
    assert p.body_to_order_spec(orjson.loads(orjson.dumps(body))) == spec
    assert p.order_configuration_name(spec) == next(iter(configuration))


def test_every_configuration_has_a_golden_body() -> None:
    covered = {next(iter(cfg)) for _, _, cfg in GOLDEN}
    assert covered == set(p.ORDER_CONFIGURATIONS)


def test_bodies_match_ccxt_recorded_requests(coinbase_fixtures: Path) -> None:
    """ccxt's recorded spot createOrder bodies: ours must be byte-for-byte the same JSON object."""
    data = json.loads((coinbase_fixtures / "ccxt-static-request-coinbase.json").read_text())
    checked = 0
    for case in data["methods"]["createOrder"] + data["methods"]["createMarketBuyOrderWithCost"]:
        expected = json.loads(case.get("output") or "{}")
        if not case["url"].endswith("/orders") or "PERP" in expected.get("product_id", "PERP"):
            continue
        spec = p.body_to_order_spec(expected)
        assert p.order_spec_to_body(spec) == expected, case["description"]
        checked += 1
    assert checked == 9


def test_decimal_never_uses_exponent() -> None:
    spec = OrderSpec("e", "BTC-USD", Side.BUY, OrderKind.LIMIT, base_size=D("1E-8"), limit_price=D("1E+5"))
    cfg = p.order_spec_to_body(spec)["order_configuration"]["limit_limit_gtc"]
    assert cfg["base_size"] == "0.00000001"
    assert cfg["limit_price"] == "100000"


def test_post_only_stop_limit_refused() -> None:
    spec = OrderSpec(
        "s",
        "BTC-USD",
        Side.BUY,
        OrderKind.STOP_LIMIT,
        base_size=D("1"),
        limit_price=D("2"),
        stop_price=D("2"),
        stop_direction=StopDirection.STOP_UP,
        post_only=True,
    )
    with pytest.raises(InvalidValue, match="post_only"):
        p.order_spec_to_body(spec)


def _body(**cfg: Any) -> dict[str, Any]:
    return {"client_order_id": "x1", "product_id": "BTC-USD", "side": "BUY", "order_configuration": cfg}


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ([1, 2], "expected a JSON object"),
        ({"product_id": "BTC-USD", "side": "BUY"}, "client_order_id"),
        ({"client_order_id": "x", "side": "BUY"}, "product_id"),
        ({"client_order_id": "x", "product_id": "BTC-USD", "side": "HOLD"}, "side"),
        ({"client_order_id": "x", "product_id": "BTC-USD", "side": 1}, "side"),
        ({"client_order_id": "x", "product_id": "BTC-USD", "side": "BUY"}, "order_configuration missing"),
        (_body(), "one configuration"),
        (_body(a={}, b={}), "exactly one"),
        (_body(twap_limit_gtd={"base_size": "1"}), "UNSUPPORTED_ORDER_CONFIGURATION"),
        (_body(limit_limit_gtc="nope"), "expected an object"),
    ],
)
def test_malformed_order_bodies(body: Any, match: str) -> None:
    with pytest.raises((MalformedMessage, InvalidValue), match=match):
        p.body_to_order_spec(body)


def test_unsupported_configuration_reason_code() -> None:
    with pytest.raises(MalformedMessage) as info:
        p.body_to_order_spec(_body(twap_limit_gtd={"base_size": "1"}))
    assert info.value.reason.startswith(p.UNSUPPORTED_ORDER_CONFIGURATION)


@pytest.mark.parametrize(
    ("cfg", "field"),
    [
        ({"limit_limit_gtc": {"base_size": "abc", "limit_price": "1"}}, "base_size"),
        ({"limit_limit_gtc": {"base_size": "1", "limit_price": "-1"}}, "limit_price"),
        ({"limit_limit_gtc": {"base_size": "1", "limit_price": "1", "post_only": "maybe"}}, "post_only"),
        ({"limit_limit_gtd": {"base_size": "1", "limit_price": "1", "end_time": "tomorrow"}}, "end_time"),
        (
            {
                "stop_limit_stop_limit_gtc": {
                    "base_size": "1",
                    "limit_price": "1",
                    "stop_price": "1",
                    "stop_direction": "SIDEWAYS",
                }
            },
            "stop_direction",
        ),
        ({"stop_limit_stop_limit_gtc": {"base_size": "1", "limit_price": "1", "stop_price": "1"}}, "stop_direction"),
        ({"market_market_ioc": {"base_size": "1", "quote_size": "1"}}, "size"),
        ({"limit_limit_gtc": {"limit_price": "1"}}, "size"),
    ],
)
def test_bad_values_name_the_field(cfg: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidValue, match=field):
        p.body_to_order_spec(_body(**cfg))


def test_body_tolerates_string_booleans_nulls_and_extra_keys() -> None:
    body = _body(limit_limit_gtc={"base_size": "1", "limit_price": "2", "post_only": "true", "extra": 1}, market_market_ioc=None)
    body["retail_portfolio_id"] = "p"
    body["side"] = "buy"
    spec = p.body_to_order_spec(body)
    assert spec.post_only is True
    assert spec.side is Side.BUY
    assert spec.kind is OrderKind.LIMIT


def test_time_helpers() -> None:
    assert p.parse_time("2023-02-09T20:32:50.714964855Z", "t") == datetime(2023, 2, 9, 20, 32, 50, 714964, tzinfo=UTC)
    assert p.parse_time("2026-04-07 14:30:10.000000000+00:00", "t") == datetime(2026, 4, 7, 14, 30, 10, tzinfo=UTC)
    assert p.parse_time("2023-06-23 20:31:56.121961769 +0000 UTC m=+91717.525857105", "t") == datetime(
        2023, 6, 23, 20, 31, 56, 121961, tzinfo=UTC
    )
    assert p.parse_time("2021-05-31T09:59:59", "t").tzinfo is UTC
    for bad in ("", None, 5, "yesterday"):
        with pytest.raises(InvalidValue, match="t"):
            p.parse_time(bad, "t")
    with pytest.raises(InvalidValue, match="timezone-aware"):
        p.format_time(datetime(2030, 1, 1))
