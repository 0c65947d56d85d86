"""Sans-IO Coinbase protocol: order bodies (golden), frames and REST responses on bytes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from cryptoj.errors import (
    AuthenticationFailed,
    InvalidValue,
    MalformedMessage,
    OrderNotFound,
    OrderRejected,
    RateLimited,
    VenueError,
    VenueUnavailable,
)
from cryptoj.model.book import BookSide
from cryptoj.model.events import (
    CandleEvent,
    Heartbeat,
    L2Snapshot,
    L2Update,
    MarketTrade,
    StatusEvent,
    SubscriptionAck,
    TickerEvent,
    UnknownChannel,
    UserOrderUpdate,
    VenueErrorMessage,
)
from cryptoj.model.money import Side
from cryptoj.model.orders import Liquidity, OrderKind, OrderSpec, OrderStatus, StopDirection, TimeInForce
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


# --- WebSocket frames on bytes: every fixture parsed without loss -------------------


def _fixture(coinbase_fixtures: Path, name: str) -> bytes:
    return (coinbase_fixtures / name).read_bytes()


def _json(coinbase_fixtures: Path, name: str) -> Any:
    return json.loads(_fixture(coinbase_fixtures, name))


def test_l2_snapshot_fixture_exact(coinbase_fixtures: Path) -> None:
    raw = _fixture(coinbase_fixtures, "ws_l2_data_snapshot.json")
    env = p.parse_envelope(raw)
    assert (env.channel, env.sequence_num) == ("l2_data", 0)
    assert env.timestamp == datetime(2026, 4, 7, 14, 30, 0, 123456, tzinfo=UTC)
    (snap,) = env.events
    assert isinstance(snap, L2Snapshot)
    source = json.loads(raw)["events"][0]["updates"]
    assert len(snap.changes) == len(source) == 6
    for (side, price, size), u in zip(snap.changes, source, strict=True):
        assert side is (BookSide.BID if u["side"] == "bid" else BookSide.ASK)
        assert str(price) == u["price_level"] and str(size) == u["new_quantity"]  # exact digits kept
    assert snap.product_id == "BTC-USD"
    assert snap.time == datetime(2026, 4, 7, 14, 30, 0, 123456, tzinfo=UTC)


def test_l2_update_fixture_exact(coinbase_fixtures: Path) -> None:
    (upd,) = p.parse_frame(_fixture(coinbase_fixtures, "ws_l2_data_update.json"))
    assert isinstance(upd, L2Update)
    assert upd.sequence_num == 1
    assert upd.changes == ((BookSide.BID, D("68900.00"), D("2.00000000")), (BookSide.ASK, D("68901.00"), D("0")))
    assert str(upd.changes[1][2]) == "0E-8"


def test_ticker_fixture_exact(coinbase_fixtures: Path) -> None:
    raw = _fixture(coinbase_fixtures, "ws_ticker.json")
    (t,) = p.parse_frame(raw)
    src = json.loads(raw)["events"][0]["tickers"][0]
    assert isinstance(t, TickerEvent)
    assert t.is_snapshot and t.sequence_num == 12 and t.product_id == "BTC-USD"
    for name in (
        "price",
        "best_bid",
        "best_bid_quantity",
        "best_ask",
        "best_ask_quantity",
        "volume_24_h",
        "low_24_h",
        "high_24_h",
    ):
        assert str(getattr(t, name)) == src[name], name
    assert t.price_percent_chg_24_h == D("1.85")


def test_market_trades_fixture_exact(coinbase_fixtures: Path) -> None:
    trades = p.parse_frame(_fixture(coinbase_fixtures, "ws_market_trades.json"))
    assert trades == [
        MarketTrade(
            "995098700",
            "BTC-USD",
            D("68900.50"),
            D("0.00150000"),
            Side.BUY,
            datetime(2026, 4, 7, 14, 30, 2, 789012, tzinfo=UTC),
            5,
        ),
        MarketTrade(
            "995098701",
            "BTC-USD",
            D("68900.00"),
            D("0.05000000"),
            Side.SELL,
            datetime(2026, 4, 7, 14, 30, 2, 800000, tzinfo=UTC),
            5,
        ),
    ]
    assert str(trades[0].size) == "0.00150000"  # type: ignore[union-attr]


def test_candles_fixture_exact(coinbase_fixtures: Path) -> None:
    (c,) = p.parse_frame(_fixture(coinbase_fixtures, "ws_candles.json"))
    assert c == CandleEvent(
        "BTC-USD",
        datetime.fromtimestamp(1775521800, UTC),
        D("68900.00"),
        D("68950.00"),
        D("68850.00"),
        D("68920.50"),
        D("42.15000000"),
        sequence_num=3,
    )


def test_heartbeat_fixture_and_string_counter(coinbase_fixtures: Path) -> None:
    (hb,) = p.parse_frame(_fixture(coinbase_fixtures, "ws_heartbeats.json"))
    assert hb == Heartbeat(42, datetime(2026, 4, 7, 14, 30, 10, tzinfo=UTC), 0)
    frame = {
        "channel": "heartbeats",
        "timestamp": "2023-06-23T20:31:56.121961769Z",
        "sequence_num": "7",
        "events": [{"current_time": "2023-06-23 20:31:56.121961769 +0000 UTC m=+91717.525857105", "heartbeat_counter": "3749"}],
    }  # documented shape: string counter, no client_id; Go-formatted current_time from the live feed
    env = p.parse_envelope(orjson.dumps(frame))
    assert env.sequence_num == 7
    assert env.events == (Heartbeat(3749, datetime(2023, 6, 23, 20, 31, 56, 121961, tzinfo=UTC), 7),)
    frame["events"] = [{"heartbeat_counter": 1}]
    assert p.parse_frame(json.dumps(frame)) == [Heartbeat(1, None, 7)]


def test_subscriptions_fixture(coinbase_fixtures: Path) -> None:
    (ack,) = p.parse_frame(_fixture(coinbase_fixtures, "ws_subscriptions.json"))
    assert isinstance(ack, SubscriptionAck)
    assert dict(ack.subscriptions) == {"level2": ("BTC-USD",), "market_trades": ("BTC-USD", "ETH-USD")}
    assert ack.sequence_num == 0


def test_user_fixture_exact(coinbase_fixtures: Path) -> None:
    (u,) = p.parse_frame(_fixture(coinbase_fixtures, "ws_user.json"))
    assert isinstance(u, UserOrderUpdate)
    assert u.is_snapshot and u.sequence_num == 1
    assert (u.order_id, u.client_order_id, u.product_id, u.side) == (
        "a1b2c3d4-e5f6-7890-abcd-ef1234567890",
        "11111-000000-000001",
        "BTC-USD",
        Side.BUY,
    )
    assert (u.status, u.venue_status) == (OrderStatus.OPEN, "OPEN")
    assert (u.cumulative_quantity, u.leaves_quantity, u.avg_price, u.total_fees) == (D("0"), D("0.001"), D("0"), D("0"))
    assert str(u.leaves_quantity) == "0.001"
    assert u.creation_time == datetime(2026, 4, 7, 14, 29, 55, 123456, tzinfo=UTC)
    assert u.order_type == "Limit" and u.limit_price is None and u.number_of_fills is None


def test_user_update_partial_fill_and_empty_client_id() -> None:
    order = {
        "order_id": "o1",
        "client_order_id": "",
        "product_id": "ETH-USD",
        "order_side": "SELL",
        "status": "OPEN",
        "cumulative_quantity": "0.5",
        "leaves_quantity": "0.5",
        "avg_price": "2000.10",
        "total_fees": "1.2",
        "limit_price": "2000",
        "stop_price": "",
        "number_of_fills": "3",
        "filled_value": "1000.05",
        "creation_time": "",
    }
    frame = {"channel": "user", "sequence_num": 9, "events": [{"type": "update", "orders": [order]}, {"type": "snapshot"}]}
    (u,) = p.parse_frame(orjson.dumps(frame))
    assert isinstance(u, UserOrderUpdate)
    assert u.client_order_id is None and not u.is_snapshot
    assert u.status is OrderStatus.PARTIALLY_FILLED
    assert (u.limit_price, u.stop_price, u.number_of_fills, u.filled_value) == (D("2000"), None, 3, D("1000.05"))
    assert u.creation_time is None


def test_status_channel() -> None:
    frame = {
        "channel": "status",
        "timestamp": "2023-02-09T20:29:49.753424311Z",
        "sequence_num": 0,
        "events": [
            {
                "type": "snapshot",
                "products": [
                    {
                        "product_type": "SPOT",
                        "id": "BTC-USD",
                        "base_currency": "BTC",
                        "quote_currency": "USD",
                        "base_increment": "0.00000001",
                        "quote_increment": "0.01",
                        "display_name": "BTC/USD",
                        "status": "online",
                        "status_message": "",
                        "min_market_funds": "1",
                    }
                ],
            }
        ],
    }
    (s,) = p.parse_frame(orjson.dumps(frame))
    assert s == StatusEvent("BTC-USD", "online", 0, "", D("0.00000001"), D("0.01"), D("1"), True)


def test_ticker_batch_and_absent_client_id_and_extra_fields() -> None:
    frame = {
        "channel": "ticker_batch",
        "timestamp": "2024-01-01T00:00:00Z",
        "sequence_num": 4,
        "something_new": {"x": 1},
        "events": [{"type": "update", "tickers": [{"type": "ticker", "product_id": "ETH-USD", "price": "2300.1", "new": 1}]}],
    }
    (t,) = p.parse_frame(orjson.dumps(frame))
    assert isinstance(t, TickerEvent)
    assert (t.product_id, t.price, t.best_bid, t.is_snapshot) == ("ETH-USD", D("2300.1"), None, False)


def test_unknown_channel_is_kept_not_dropped() -> None:
    raw = b'{"channel":"futures_balance_summary","sequence_num":3,"events":[{"fcm_balance_summary":{}}]}'
    env = p.parse_envelope(raw)
    assert env.events == (UnknownChannel("futures_balance_summary", 3, raw.decode()),)


def test_error_message() -> None:
    env = p.parse_envelope('{"type":"error","message":"authentication failure","reason":"jwt"}')
    assert env.channel == "error" and env.sequence_num is None
    assert env.events == (VenueErrorMessage("authentication failure", "jwt"),)


def test_empty_events_frame_keeps_its_sequence() -> None:
    env = p.parse_envelope(b'{"channel":"l2_data","timestamp":"2024-01-01T00:00:00Z","sequence_num":11,"events":[]}')
    assert env.sequence_num == 11 and env.events == ()
    (upd,) = p.parse_frame(
        b'{"channel":"l2_data","timestamp":"2024-01-01T00:00:00Z","sequence_num":12,'
        b'"events":[{"type":"update","product_id":"BTC-USD","updates":[]}]}'
    )
    assert upd == L2Update("BTC-USD", 12, (), datetime(2024, 1, 1, tzinfo=UTC))


@pytest.mark.parametrize("name", ["ws_l2_data_snapshot.json", "ws_ticker.json", "ws_user.json", "ws_market_trades.json"])
def test_truncated_fixture_frames_raise_malformed_with_raw(coinbase_fixtures: Path, name: str) -> None:
    raw = _fixture(coinbase_fixtures, name)
    for cut in (1, len(raw) // 3, len(raw) // 2, len(raw) - 3):
        with pytest.raises(MalformedMessage) as info:
            p.parse_frame(raw[:cut])
        assert info.value.raw == raw[:cut].decode()[:512] or info.value.raw.startswith(raw[:cut].decode()[:512])


L2 = '{"channel":"l2_data","timestamp":"2024-01-01T00:00:00Z","sequence_num":1,"events":[EV]}'


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b"", "invalid JSON"),
        (b"\xff\xfe", "invalid JSON"),
        ("[1,2]", "expected a JSON object"),
        ('{"sequence_num":1,"events":[]}', "missing channel"),
        ('{"channel":"l2_data","events":[]}', "missing field 'sequence_num'"),
        ('{"channel":"l2_data","sequence_num":true,"events":[]}', "sequence_num"),
        ('{"channel":"l2_data","sequence_num":1.5,"events":[]}', "sequence_num"),
        ('{"channel":"l2_data","sequence_num":1,"events":{}}', "events"),
        ('{"channel":"l2_data","sequence_num":1,"timestamp":"noon","events":[]}', "timestamp"),
        (L2.replace("EV", '{"type":"snapshot","updates":[]}'), "product_id"),
        (L2.replace("EV", '{"type":"weird","product_id":"B","updates":[]}'), "snapshot or update"),
        (
            L2.replace("EV", '{"type":"update","product_id":"B","updates":[{"side":"up","price_level":"1","new_quantity":"1"}]}'),
            "bid or offer",
        ),
        (
            L2.replace(
                "EV", '{"type":"update","product_id":"B","updates":[{"side":"bid","price_level":"x","new_quantity":"1"}]}'
            ),
            "price_level",
        ),
        (
            L2.replace(
                "EV", '{"type":"update","product_id":"B","updates":[{"side":"bid","price_level":"1","new_quantity":"-1"}]}'
            ),
            "new_quantity",
        ),
        (
            L2.replace(
                "EV", '{"type":"update","product_id":"B","updates":[{"side":"bid","price_level":1.5,"new_quantity":"1"}]}'
            ),
            "floats",
        ),
        (L2.replace("EV", '"not an object"'), "AttributeError|TypeError"),
        ('{"channel":"l2_data","sequence_num":1,"events":[{"type":"update","product_id":"B","updates":[]}]}', "no timestamp"),
        ('{"channel":"heartbeats","sequence_num":1,"events":[{"heartbeat_counter":"x"}]}', "heartbeat_counter"),
        ('{"channel":"market_trades","sequence_num":1,"events":[{"trades":[{"trade_id":"1"}]}]}', "product_id"),
        (
            '{"channel":"market_trades","sequence_num":1,"events":[{"trades":[{"trade_id":"1","product_id":"B","price":"1",'
            '"size":"1","side":"HOLD","time":"2024-01-01T00:00:00Z"}]}]}',
            "BUY or SELL",
        ),
        ('{"channel":"candles","sequence_num":1,"events":[{"candles":[{"start":"abc","product_id":"B"}]}]}', "start"),
        ('{"channel":"subscriptions","sequence_num":1,"events":[{"subscriptions":[]}]}', "subscriptions"),
        (
            '{"channel":"user","sequence_num":1,"events":[{"orders":[{"order_id":"o","product_id":"B","order_side":"BUY",'
            '"status":"LOST","cumulative_quantity":"0","leaves_quantity":"1"}]}]}',
            "unknown Coinbase order status",
        ),
        ('{"channel":"status","sequence_num":1,"events":[{"products":[{"status":"online"}]}]}', "status.products"),
        ('{"channel":"ticker","sequence_num":1,"events":[]}', "no timestamp"),
    ],
)
def test_malformed_frames(frame: str | bytes, reason: str) -> None:
    with pytest.raises(MalformedMessage, match=reason) as info:
        p.parse_envelope(frame)
    raw = frame.decode("utf-8", errors="replace") if isinstance(frame, bytes) else frame
    assert info.value.raw == raw


def test_malformed_raw_is_truncated() -> None:
    frame = '{"channel":"l2_data","sequence_num":1,"pad":"' + "x" * 5000 + '"'
    with pytest.raises(MalformedMessage) as info:
        p.parse_frame(frame)
    assert len(info.value.raw) < 600 and "more chars" in info.value.raw


def test_every_ws_fixture_parses(coinbase_fixtures: Path) -> None:
    names = sorted(f.name for f in coinbase_fixtures.glob("ws_*.json"))
    assert len(names) == 8
    for name in names:
        env = p.parse_envelope(_fixture(coinbase_fixtures, name))
        assert env.events and not any(isinstance(e, UnknownChannel) for e in env.events), name


def test_subscribe_messages() -> None:
    assert p.subscribe_message("level2", ["BTC-USD", "ETH-USD"]) == {
        "type": "subscribe",
        "channel": "level2",
        "product_ids": ["BTC-USD", "ETH-USD"],
    }
    assert p.subscribe_message("heartbeats") == {"type": "subscribe", "channel": "heartbeats"}
    assert p.subscribe_message("user", ["BTC-USD"], jwt="tok") == {
        "type": "subscribe",
        "channel": "user",
        "product_ids": ["BTC-USD"],
        "jwt": "tok",
    }
    assert p.subscribe_message("user", unsubscribe=True) == {"type": "unsubscribe", "channel": "user"}
    assert json.loads(p.encode_message(p.subscribe_message("ticker", ["BTC-USD"]))) == {
        "type": "subscribe",
        "channel": "ticker",
        "product_ids": ["BTC-USD"],
    }
    with pytest.raises(InvalidValue, match="unknown channel"):
        p.subscribe_message("l2_data", ["BTC-USD"])
    with pytest.raises(InvalidValue, match="needs a JWT"):
        p.subscribe_message("user", ["BTC-USD"])


# --- REST responses -------------------------------------------------------------------


def test_order_fixture_exact(coinbase_fixtures: Path) -> None:
    o = p.parse_order(_json(coinbase_fixtures, "http_order.json"))
    assert (o.order_id, o.client_order_id, o.product_id, o.side) == (
        "0000-000000-000000",
        "11111-000000-000000",
        "BTC-USD",
        Side.BUY,
    )
    assert o.venue_status == "OPEN" and o.status is OrderStatus.PARTIALLY_FILLED  # OPEN with a fill
    assert o.configuration == p.OrderConfiguration(
        "limit_limit_gtc", OrderKind.LIMIT, TimeInForce.GTC, base_size=D("0.001"), limit_price=D("10000.00")
    )
    assert (o.filled_size, o.average_filled_price, o.total_fees, o.filled_value) == (D("0.001"), D("50"), D("5.00"), D("10000"))
    assert str(o.total_fees) == "5.00" and o.number_of_fills == 2
    assert o.reject_reason is None  # REJECT_REASON_UNSPECIFIED
    assert o.outstanding_hold_amount == D("1.00")
    assert o.created_time == datetime(2021, 5, 31, 9, 59, 59, tzinfo=UTC)
    assert o.last_fill_time == datetime(2021, 5, 31, 10, 30, tzinfo=UTC)
    spec = o.to_spec()
    assert spec == OrderSpec(
        "11111-000000-000000", "BTC-USD", Side.BUY, OrderKind.LIMIT, base_size=D("0.001"), limit_price=D("10000.00")
    )


def test_orders_list_fixture(coinbase_fixtures: Path) -> None:
    page = p.parse_orders_page(_json(coinbase_fixtures, "http_orders_list.json"))
    assert not page.has_next and page.cursor == ""
    a, b = page.orders
    assert a.status is OrderStatus.OPEN and a.last_fill_time is None and a.average_filled_price is None
    assert b.status is OrderStatus.FILLED and b.size_in_quote
    assert b.configuration is not None and b.configuration.quote_size == D("100")
    assert b.to_spec().quote_size == D("100")


def test_order_with_unsupported_configuration_still_parses() -> None:
    rec = {
        "order_id": "x",
        "product_id": "BTC-USD",
        "side": "SELL",
        "status": "FAILED",
        "order_configuration": {"twap_limit_gtd": {"quote_size": "1"}},
        "reject_reason": "INSUFFICIENT_FUND",
    }
    o = p.parse_order({"order": rec})
    assert o.configuration is None and o.status is OrderStatus.REJECTED and o.reject_reason == "INSUFFICIENT_FUND"
    with pytest.raises(InvalidValue, match="unknown configuration"):
        o.to_spec()
    rec["order_configuration"] = {"a": {}, "b": {}}
    with pytest.raises(MalformedMessage, match="order_configuration"):
        p.parse_order({"order": rec})


def test_fills_fixture_exact(coinbase_fixtures: Path) -> None:
    page = p.parse_fills_page(_json(coinbase_fixtures, "http_fills.json"), {"0000-000000-000000": "my-cid"})
    f1, f2 = page.fills
    assert (f1.trade_id, f1.client_order_id, f1.venue_order_id) == ("1111-11111-111111", "my-cid", "0000-000000-000000")
    assert (f1.price, f1.size, f1.fee, f1.liquidity, f1.side) == (D("45123.45"), D("0.005"), D("1.14"), Liquidity.MAKER, Side.BUY)
    assert f1.time == datetime(2024, 1, 15, 10, 30, tzinfo=UTC)
    assert (f2.client_order_id, f2.liquidity, f2.side, str(f2.size)) == ("", Liquidity.TAKER, Side.SELL, "0.0325")
    assert page.cursor == ""


def test_fill_size_in_quote_converted_to_base() -> None:
    body = {
        "fills": [
            {
                "trade_id": "t",
                "order_id": "o",
                "price": "200",
                "size": "50",
                "size_in_quote": True,
                "commission": "0.3",
                "product_id": "ETH-USD",
                "side": "BUY",
                "trade_time": "2024-01-01T00:00:00Z",
                "liquidity_indicator": "weird",
            }
        ],
        "cursor": "c2",
    }
    page = p.parse_fills_page(body)
    assert page.fills[0].size == D("0.25") and page.fills[0].liquidity is Liquidity.UNKNOWN and page.cursor == "c2"


def test_accounts_fixture_exact(coinbase_fixtures: Path) -> None:
    page = p.parse_accounts_page(_json(coinbase_fixtures, "http_accounts.json"))
    btc, usd = page.accounts
    assert (btc.currency, str(btc.available), str(btc.hold), btc.total) == ("BTC", "1.23456789", "0.00500000", D("1.23956789"))
    assert (usd.currency, usd.available, usd.hold, usd.type) == ("USD", D("10000.50"), D("450.00"), "FIAT")
    assert btc.uuid == "8bfc20d7-f7c6-4422-bf07-8243ca4169fe" and not page.has_next
    one = p.parse_account({"account": _json(coinbase_fixtures, "http_accounts.json")["accounts"][0]})
    assert one == btc


def test_products_fixtures(coinbase_fixtures: Path) -> None:
    spot = p.parse_products(_json(coinbase_fixtures, "http_products.json"))
    assert [x.product_id for x in spot] == ["BTC-USD", "BTC-USDC"]
    one = p.parse_product(_json(coinbase_fixtures, "http_product.json"))
    assert (one.base_increment, one.quote_increment, one.price_increment) == (D("0.00000001"), D("0.01"), D("0.01"))
    assert (one.base_min_size, one.base_max_size, one.quote_min_size, one.quote_max_size) == (
        D("1E-8"),
        D("3400"),
        D("1"),
        D("150000000"),
    )
    futures = p.parse_products(_json(coinbase_fixtures, "http_products_future.json"))
    assert [x.price_increment for x in futures] == [D("5"), D("5")]


def test_product_book_fixture_exact(coinbase_fixtures: Path) -> None:
    data = _json(coinbase_fixtures, "http_product_book.json")
    book = p.parse_product_book(data)
    assert [(str(a), str(b)) for a, b in book.bids] == [(lv["price"], lv["size"]) for lv in data["pricebook"]["bids"]]
    assert [(str(a), str(b)) for a, b in book.asks] == [(lv["price"], lv["size"]) for lv in data["pricebook"]["asks"]]
    assert book.best_bid == (D("68923.66"), D("0.17189468")) and book.best_ask == (D("68923.67"), D("0.16987193"))
    assert (book.last, book.mid_market, book.spread_bps) == (D("68923.665"), D("68923.665"), D("0.001450880372"))
    empty = p.parse_product_book({"pricebook": {"product_id": "X-Y", "bids": [], "asks": None}})
    assert empty.best_bid is None and empty.best_ask is None and empty.time is None


def test_best_bid_ask() -> None:
    body = {
        "pricebooks": [
            {
                "product_id": "BTC-USD",
                "bids": [{"price": "1", "size": "2"}],
                "asks": [{"price": "3", "size": "4"}],
                "time": "2024-01-01T00:00:00Z",
            }
        ]
    }
    (b,) = p.parse_best_bid_ask(body)
    assert (b.best_bid, b.best_ask) == ((D(1), D(2)), (D(3), D(4)))


def test_candles_fixture_oldest_first(coinbase_fixtures: Path) -> None:
    candles = p.parse_candles(_json(coinbase_fixtures, "http_candles.json"), "BTC-USD")
    assert [c.start for c in candles] == [datetime.fromtimestamp(1712188800, UTC), datetime.fromtimestamp(1712192400, UTC)]
    assert (candles[1].open, candles[1].high, candles[1].low, candles[1].close, candles[1].volume) == (
        D("66312.4"),
        D("66331.99"),
        D("66055.14"),
        D("66181.6"),
        D("355.82896243"),
    )


def test_market_trades_fixture(coinbase_fixtures: Path) -> None:
    mt = p.parse_market_trades(_json(coinbase_fixtures, "http_ticker.json"))
    assert [t.trade_id for t in mt.trades] == ["995098663", "995098662", "995098661"]
    assert mt.trades[2].size == D("0.01450854") and mt.trades[2].side is Side.BUY
    assert (mt.best_bid, mt.best_ask) == (D("68923.66"), D("68923.67"))


def test_cfm_fixtures(coinbase_fixtures: Path) -> None:
    summary = p.parse_cfm_balance_summary(_json(coinbase_fixtures, "http_cfm_balance_summary.json"))
    assert summary["futures_buying_power"] == D("5000.00")
    assert summary["liquidation_buffer_percentage"] == D("2400")
    assert summary["overnight_margin_window_measure.futures_buying_power"] == D("4000.00")
    assert len(summary) == 22
    (short,) = p.parse_cfm_positions(_json(coinbase_fixtures, "http_cfm_position.json"))
    assert (short.side, short.number_of_contracts, short.avg_entry_price, short.contract_size) == (
        "SHORT",
        D("3"),
        D("51000.00"),
        D("0.01"),
    )
    (pos,) = p.parse_cfm_positions(_json(coinbase_fixtures, "http_cfm_positions.json"))
    assert pos.product_id.endswith("-CDE")


def test_ccxt_recorded_v3_responses_parse(coinbase_fixtures: Path) -> None:
    methods = _json(coinbase_fixtures, "ccxt-static-response-coinbase.json")["methods"]
    spot_fill = methods["fetchMyTrades"][0]["httpResponse"]
    (f,) = p.parse_fills_page(spot_fill).fills
    assert (f.price, f.size, f.fee, f.side) == (D("0.392"), D("10"), D("0.03136"), Side.SELL)
    (o,) = p.parse_orders_page(methods["fetchClosedOrders"][0]["httpResponse"]).orders
    assert o.status is OrderStatus.FILLED and o.to_spec().base_size == D("10")
    mt = p.parse_market_trades(methods["fetchTicker"][0]["httpResponse"])
    assert mt.trades[0].price == D("66363.03")


def test_every_http_fixture_is_covered_by_a_parser(coinbase_fixtures: Path) -> None:
    parsers = {
        "http_accounts.json": p.parse_accounts_page,
        "http_candles.json": lambda b: p.parse_candles(b, "BTC-USD"),
        "http_cfm_balance_summary.json": p.parse_cfm_balance_summary,
        "http_cfm_position.json": p.parse_cfm_positions,
        "http_cfm_positions.json": p.parse_cfm_positions,
        "http_fills.json": p.parse_fills_page,
        "http_order.json": p.parse_order,
        "http_orders_list.json": p.parse_orders_page,
        "http_product.json": p.parse_product,
        "http_product_book.json": p.parse_product_book,
        "http_products.json": p.parse_products,
        "http_products_future.json": p.parse_products,
        "http_ticker.json": p.parse_market_trades,
    }
    assert sorted(parsers) == sorted(f.name for f in coinbase_fixtures.glob("http_*.json"))
    for name, parse in parsers.items():
        assert parse(_json(coinbase_fixtures, name)), name


def test_transaction_summary_and_server_time() -> None:
    tier = p.parse_transaction_summary(
        {
            "total_volume": 1000.5,
            "total_fees": "3.1",
            "fee_tier": {"pricing_tier": "<$10k", "taker_fee_rate": "0.006", "maker_fee_rate": "0.004"},
        }
    )
    assert (tier.pricing_tier, tier.taker_fee_rate, tier.maker_fee_rate, tier.total_volume, tier.total_fees) == (
        "<$10k",
        D("0.006"),
        D("0.004"),
        D("1000.5"),
        D("3.1"),
    )
    t = datetime(2024, 1, 1, 0, 0, 1, tzinfo=UTC)
    assert p.parse_server_time({"iso": "2024-01-01T00:00:01Z", "epochSeconds": "1704067201"}) == t
    assert p.parse_server_time({"epochMillis": "1704067201000"}) == t
    assert p.parse_server_time({"epochSeconds": 1704067201}) == t
    with pytest.raises(MalformedMessage, match="epochSeconds"):
        p.parse_server_time({})


def test_create_order_responses() -> None:
    ok = {
        "success": True,
        "success_response": {"order_id": "oid", "product_id": "BTC-USD", "side": "BUY", "client_order_id": "cid"},
        "order_configuration": {"limit_limit_gtc": {}},
    }
    assert p.parse_create_order(ok, "cid") == p.CreatedOrder("oid", "cid", "BTC-USD", Side.BUY)
    assert p.parse_create_order({"success": True, "order_id": "o2"}, "c2") == p.CreatedOrder("o2", "c2", "", Side.BUY)
    fail = {
        "success": False,
        "failure_reason": "UNKNOWN_FAILURE_REASON",
        "error_response": {
            "error": "INSUFFICIENT_FUND",
            "message": "Insufficient balance in source account",
            "preview_failure_reason": "PREVIEW_INSUFFICIENT_FUND",
            "new_order_failure_reason": "UNKNOWN_FAILURE_REASON",
        },
    }
    with pytest.raises(OrderRejected) as info:
        p.parse_create_order(fail, "cid")
    assert info.value.reason == "PREVIEW_INSUFFICIENT_FUND" and info.value.client_order_id == "cid"
    fail["error_response"] = {
        "error": "INVALID_LIMIT_PRICE_POST_ONLY",
        "new_order_failure_reason": "INVALID_LIMIT_PRICE_POST_ONLY",
    }
    with pytest.raises(OrderRejected, match="INVALID_LIMIT_PRICE_POST_ONLY"):
        p.parse_create_order(fail, "cid")
    with pytest.raises(OrderRejected) as info:
        p.parse_create_order({"success": False, "error_response": "?"}, "cid")
    assert info.value.reason == "UNKNOWN_FAILURE_REASON"
    with pytest.raises(RateLimited):
        p.parse_create_order({"success": False, "error_response": {"error": "RATE_LIMIT_EXCEEDED"}}, "cid")
    with pytest.raises(MalformedMessage, match="success"):
        p.parse_create_order({"order_id": "x"}, "cid")
    with pytest.raises(MalformedMessage, match="order_id"):
        p.parse_create_order({"success": True, "success_response": {}}, "cid")


def test_batch_cancel() -> None:
    body = {
        "results": [
            {"success": True, "failure_reason": "UNKNOWN_CANCEL_FAILURE_REASON", "order_id": "a"},
            {"success": False, "failure_reason": "UNKNOWN_CANCEL_ORDER", "order_id": "b"},
            {"success": False, "order_id": "c"},
        ]
    }
    assert p.parse_batch_cancel(body) == [
        p.CancelResult("a", True, None),
        p.CancelResult("b", False, "UNKNOWN_CANCEL_ORDER"),
        p.CancelResult("c", False, None),
    ]


@pytest.mark.parametrize(
    ("parse", "body", "match"),
    [
        (p.parse_order, {}, "missing field 'order'"),
        (
            p.parse_order,
            {"order": {"order_id": "o", "product_id": "B", "side": "BUY", "status": "OPEN", "filled_size": "x"}},
            "filled_size",
        ),
        (p.parse_orders_page, {"orders": {}}, "orders"),
        (p.parse_fills_page, {"fills": [{"trade_id": "t"}]}, "order_id"),
        (p.parse_accounts_page, {"accounts": [{"currency": "BTC", "available_balance": "1"}]}, "available_balance"),
        (p.parse_product, {"product_id": "B-C"}, "increment"),
        (p.parse_products, {"products": [1]}, "products"),
        (p.parse_product_book, {"pricebook": {"product_id": "B", "bids": [{"price": "1"}]}}, "size"),
        (p.parse_transaction_summary, {"fee_tier": {"taker_fee_rate": "abc", "maker_fee_rate": "0"}}, "taker_fee_rate"),
        (p.parse_batch_cancel, {"results": [{"success": True}]}, "order_id"),
        (p.parse_cfm_positions, {"positions": [{"product_id": "X", "number_of_contracts": "1"}]}, "avg_entry_price"),
        (p.parse_cfm_balance_summary, {"balance_summary": {"x": {"value": "bad"}}}, "x"),
    ],
)
def test_malformed_rest_bodies(parse: Any, body: Any, match: str) -> None:
    with pytest.raises(MalformedMessage, match=match):
        parse(body)


def test_loads() -> None:
    assert p.loads(b'{"a":1}', "x") == {"a": 1}
    with pytest.raises(MalformedMessage, match="orders: invalid JSON") as info:
        p.loads(b"<html>oops", "orders")
    assert info.value.raw == "<html>oops"


@pytest.mark.parametrize(
    ("status", "body", "kind", "text"),
    [
        (429, b'{"error":"RATE_LIMIT_EXCEEDED","message":"Too many requests"}', RateLimited, "Too many"),
        (401, b"Unauthorized\n", AuthenticationFailed, "HTTP 401: Unauthorized"),
        (403, {"error": "PERMISSION_DENIED", "message": "Missing required scopes"}, AuthenticationFailed, "PERMISSION_DENIED"),
        (404, b'{"error":"NOT_FOUND","message":"order with this orderID was not found"}', OrderNotFound, "not found"),
        (404, b'{"error":"NOT_FOUND","message":"product not found"}', VenueError, "product"),
        (500, b"<html>boom</html>", VenueUnavailable, "boom"),
        (503, None, VenueUnavailable, "HTTP 503"),
        (
            400,
            b'{"error":"INVALID_ARGUMENT","error_response":{"error":"INVALID_SIZE_PRECISION","message":"bad size",'
            b'"new_order_failure_reason":"INVALID_SIZE_PRECISION"}}',
            OrderRejected,
            "INVALID_SIZE_PRECISION",
        ),
        (400, b'{"error":"INVALID_ARGUMENT","error_details":"limit must be <= 250"}', VenueError, "limit must be"),
        (400, '{"preview_failure_reason":"PREVIEW_INVALID_BASE_SIZE_TOO_SMALL"}', OrderRejected, "TOO_SMALL"),
    ],
)
def test_error_from_response(status: int, body: Any, kind: type[VenueError], text: str) -> None:
    err = p.error_from_response(status, body, retry_after=2.5)
    assert type(err) is kind
    assert text in str(err)
    if kind is RateLimited:
        assert isinstance(err, RateLimited) and err.retry_after == 2.5
    if kind is not OrderRejected:
        assert err.status == status


def test_map_order_status() -> None:
    assert p.map_order_status("OPEN", D(0)) is OrderStatus.OPEN
    assert p.map_order_status("open", D(1)) is OrderStatus.PARTIALLY_FILLED
    assert p.map_order_status("CANCEL_QUEUED", D(0)) is OrderStatus.CANCEL_PENDING
    assert p.map_order_status("UNKNOWN_ORDER_STATUS", D(0)) is OrderStatus.IN_FLIGHT_UNKNOWN
    with pytest.raises(InvalidValue, match="unknown Coinbase order status"):
        p.map_order_status("MYSTERY", D(0))
