"""Unit and property tests for OrderSpec validation, the Order state machine and fills."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import product as cartesian

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cryptoj.errors import InvalidOrderTransition, InvalidValue
from cryptoj.model.money import Side
from cryptoj.model.orders import (
    ACTIVE_STATUSES,
    TERMINAL_STATUSES,
    Fill,
    Liquidity,
    Order,
    OrderKind,
    OrderSpec,
    OrderStatus,
    StopDirection,
    TimeInForce,
)

pytestmark = pytest.mark.unit

D = Decimal
T = datetime(2024, 4, 4, 12, 0, tzinfo=UTC)
S = OrderStatus

# The state machine, written out independently of the implementation's table.
LEGAL: set[tuple[OrderStatus, OrderStatus]] = {
    (S.NEW, S.SUBMITTED),
    (S.NEW, S.REJECTED),
    (S.NEW, S.IN_FLIGHT_UNKNOWN),
    *((S.SUBMITTED, t) for t in (S.OPEN, S.PARTIALLY_FILLED, S.FILLED, S.CANCELLED, S.EXPIRED)),
    *((S.SUBMITTED, t) for t in (S.REJECTED, S.IN_FLIGHT_UNKNOWN, S.CANCEL_PENDING)),
    *((S.IN_FLIGHT_UNKNOWN, t) for t in (S.OPEN, S.PARTIALLY_FILLED, S.FILLED, S.CANCELLED, S.EXPIRED)),
    *((S.IN_FLIGHT_UNKNOWN, t) for t in (S.SUBMITTED, S.REJECTED, S.CANCEL_PENDING)),
    *((S.OPEN, t) for t in (S.PARTIALLY_FILLED, S.FILLED, S.CANCEL_PENDING, S.CANCELLED, S.EXPIRED)),
    *((S.PARTIALLY_FILLED, t) for t in (S.FILLED, S.CANCEL_PENDING, S.CANCELLED, S.EXPIRED)),
    *((S.CANCEL_PENDING, t) for t in (S.OPEN, S.PARTIALLY_FILLED, S.FILLED, S.CANCELLED, S.EXPIRED)),
}


def limit_spec(cid: str = "c1", size: str = "1", side: Side = Side.BUY, **kw: object) -> OrderSpec:
    return OrderSpec(cid, "BTC-USD", side, OrderKind.LIMIT, base_size=D(size), limit_price=D("100"), **kw)  # type: ignore[arg-type]


def make_fill(trade_id: str, size: str = "0.25", price: str = "100", fee: str = "0.1", cid: str = "c1", **kw: object) -> Fill:
    fields: dict[str, object] = {
        "trade_id": trade_id,
        "client_order_id": cid,
        "product_id": "BTC-USD",
        "side": Side.BUY,
        "price": D(price),
        "size": D(size),
        "fee": D(fee),
        "time": T,
    }
    fields.update(kw)
    return Fill(**fields)  # type: ignore[arg-type]


def order_in(status: OrderStatus, spec: OrderSpec | None = None) -> Order:
    return Order(spec or limit_spec(), status=status)


# -- OrderSpec -----------------------------------------------------------------------------


def test_valid_specs_of_every_kind() -> None:
    market_base = OrderSpec("m1", "BTC-USD", Side.BUY, OrderKind.MARKET, base_size=D("1"), time_in_force=TimeInForce.IOC)
    market_quote = OrderSpec("m2", "BTC-USD", Side.SELL, OrderKind.MARKET, quote_size=D("50"), time_in_force=TimeInForce.FOK)
    gtd = limit_spec("l1", time_in_force=TimeInForce.GTD, end_time=T + timedelta(hours=1))
    post = limit_spec("l2", post_only=True)
    ioc = limit_spec("l3", time_in_force=TimeInForce.IOC)
    stop = OrderSpec(
        "s1",
        "BTC-USD",
        Side.SELL,
        OrderKind.STOP_LIMIT,
        base_size=D("1"),
        limit_price=D("90"),
        stop_price=D("91"),
        stop_direction=StopDirection.STOP_DOWN,
    )
    bracket = OrderSpec(
        "b1", "BTC-USD", Side.SELL, OrderKind.BRACKET, base_size=D("1"), limit_price=D("120"), stop_trigger_price=D("90")
    )
    assert market_base.is_market and market_quote.is_market
    assert not any(s.is_market for s in (gtd, post, ioc, stop, bracket))
    assert stop.stop_direction is StopDirection.STOP_DOWN
    assert StopDirection.STOP_UP.value == "STOP_DIRECTION_STOP_UP"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"client_order_id": ""}, "client_order_id"),
        ({"base_size": None}, "exactly one"),
        ({"quote_size": D("5")}, "exactly one"),
        ({"base_size": D("0")}, "must be positive"),
        ({"base_size": None, "quote_size": D("5")}, "market orders only"),
        ({"limit_price": None}, "positive limit price"),
        ({"limit_price": D("0")}, "positive limit price"),
        ({"time_in_force": TimeInForce.GTD}, "end_time"),
        ({"time_in_force": TimeInForce.GTD, "end_time": datetime(2030, 1, 1)}, "timezone-aware"),
        ({"post_only": True, "time_in_force": TimeInForce.IOC}, "post-only cannot be IOC/FOK"),
        ({"post_only": True, "time_in_force": TimeInForce.FOK}, "post-only cannot be IOC/FOK"),
    ],
)
def test_limit_spec_validation(kwargs: dict, match: str) -> None:
    fields: dict[str, object] = {
        "client_order_id": "c1",
        "product_id": "BTC-USD",
        "side": Side.BUY,
        "kind": OrderKind.LIMIT,
        "base_size": D("1"),
        "limit_price": D("100"),
    }
    fields.update(kwargs)
    with pytest.raises(InvalidValue, match=match):
        OrderSpec(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kind", "kwargs", "match"),
    [
        (OrderKind.MARKET, {"time_in_force": TimeInForce.GTC}, "IOC or FOK"),
        (OrderKind.MARKET, {"time_in_force": TimeInForce.IOC, "limit_price": D("1")}, "no price"),
        (OrderKind.MARKET, {"time_in_force": TimeInForce.IOC, "post_only": True}, "no price/post-only"),
        (OrderKind.STOP_LIMIT, {"limit_price": D("1"), "stop_direction": StopDirection.STOP_UP}, "stop price"),
        (OrderKind.STOP_LIMIT, {"limit_price": D("1"), "stop_price": D("0")}, "stop price"),
        (OrderKind.STOP_LIMIT, {"limit_price": D("1"), "stop_price": D("2")}, "stop direction"),
        (
            OrderKind.STOP_LIMIT,
            {
                "limit_price": D("1"),
                "stop_price": D("2"),
                "stop_direction": StopDirection.STOP_UP,
                "time_in_force": TimeInForce.IOC,
            },
            "GTC or GTD",
        ),
        (OrderKind.BRACKET, {"limit_price": D("1")}, "stop trigger"),
        (OrderKind.BRACKET, {"limit_price": D("1"), "stop_trigger_price": D("-1")}, "stop trigger"),
        (
            OrderKind.BRACKET,
            {"limit_price": D("1"), "stop_trigger_price": D("1"), "time_in_force": TimeInForce.FOK},
            "GTC or GTD",
        ),
    ],
)
def test_other_kinds_validation(kind: OrderKind, kwargs: dict, match: str) -> None:
    with pytest.raises(InvalidValue, match=match) as info:
        OrderSpec("x9", "BTC-USD", Side.BUY, kind, base_size=D("1"), **kwargs)
    assert "order x9" in str(info.value)


# -- Fill ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"trade_id": ""}, "trade_id"),
        ({"size": "0"}, r"t\.size"),
        ({"price": "-1"}, r"t\.price"),
        ({"fee": "-0.01"}, r"t\.fee"),
    ],
)
def test_fill_validation(kwargs: dict, match: str) -> None:
    args = {"trade_id": "t", "size": "1", "price": "1", "fee": "0"}
    args.update(kwargs)
    with pytest.raises(InvalidValue, match=match):
        make_fill(args.pop("trade_id"), **args)


def test_fill_notional_and_defaults() -> None:
    f = make_fill("t", size="0.5", price="200")
    assert f.notional == D("100")
    assert f.liquidity is Liquidity.UNKNOWN and f.venue_order_id is None


# -- state machine ---------------------------------------------------------------------------


def test_status_sets() -> None:
    assert {S.FILLED, S.CANCELLED, S.EXPIRED, S.REJECTED} == TERMINAL_STATUSES
    assert S.NEW not in ACTIVE_STATUSES and not (ACTIVE_STATUSES & TERMINAL_STATUSES)
    assert all(s.is_terminal == (s in TERMINAL_STATUSES) for s in S)


@pytest.mark.parametrize(("current", "requested"), list(cartesian(list(S), list(S))), ids=lambda s: s.value)
def test_every_transition_pair(current: OrderStatus, requested: OrderStatus) -> None:
    order = order_in(current)
    if requested is current:
        assert order.can_transition(requested)
        assert order.transition(requested) is False  # same state is a no-op
        assert order.history == []
    elif (current, requested) in LEGAL:
        assert order.can_transition(requested)
        assert order.transition(requested, at=T) is True
        assert order.status is requested
        assert order.history == [(current, requested)]
        assert order.updated_at == T
    else:
        assert not order.can_transition(requested)
        with pytest.raises(InvalidOrderTransition) as info:
            order.transition(requested)
        assert info.value.current == current.value and info.value.requested == requested.value
        assert f"illegal transition {current.value} -> {requested.value}" in str(info.value)
        assert order.status is current
        assert order.history == []


def test_terminal_states_have_no_exit() -> None:
    for terminal in TERMINAL_STATUSES:
        assert not any((terminal, other) in LEGAL for other in S)


def test_reject_records_reason_and_happy_path_history() -> None:
    order = Order(limit_spec())
    order.transition(S.REJECTED, reason="INSUFFICIENT_FUND")
    assert order.reject_reason == "INSUFFICIENT_FUND" and order.is_terminal and not order.is_active
    order2 = Order(limit_spec("c2"))
    order2.transition(S.SUBMITTED)
    order2.transition(S.OPEN, reason="ignored for non-rejects")
    assert order2.reject_reason is None and order2.is_active
    assert order2.history == [(S.NEW, S.SUBMITTED), (S.SUBMITTED, S.OPEN)]
    assert (order2.client_order_id, order2.product_id, order2.side) == ("c2", "BTC-USD", Side.BUY)


# -- fills on orders ------------------------------------------------------------------------------


def test_fills_derive_size_price_fees_and_status() -> None:
    order = order_in(S.OPEN)
    assert order.filled_size == 0 and order.average_price is None and order.remaining_size == D("1")
    assert order.apply_fill(make_fill("t1", size="0.25", price="100", venue_order_id="v-1"))
    assert order.status is S.PARTIALLY_FILLED
    assert order.venue_order_id == "v-1"
    assert order.apply_fill(make_fill("t2", size="0.75", price="104", fee="0.3"))
    assert order.status is S.FILLED
    assert order.filled_size == D("1")
    assert order.filled_value == D("25") + D("78")
    assert order.average_price == D("103")
    assert order.fees == D("0.4")
    assert order.remaining_size == 0
    assert order.history == [(S.OPEN, S.PARTIALLY_FILLED), (S.PARTIALLY_FILLED, S.FILLED)]


def test_same_fill_twice_counts_once() -> None:
    order = order_in(S.OPEN)
    f = make_fill("t1", size="0.5")
    assert order.apply_fill(f) is True
    assert order.apply_fill(f) is False
    assert order.filled_size == D("0.5") and order.fees == D("0.1")


def test_fill_on_new_or_rejected_order_raises() -> None:
    for status in (S.NEW, S.REJECTED):
        order = order_in(status)
        with pytest.raises(InvalidOrderTransition, match="-> fill"):
            order.apply_fill(make_fill("t1"))
        assert order.fills == {}


def test_overfill_raises() -> None:
    order = order_in(S.OPEN)
    order.apply_fill(make_fill("t1", size="0.75"))
    with pytest.raises(InvalidValue, match="would overfill order c1 of size 1"):
        order.apply_fill(make_fill("t2", size="0.5"))
    assert order.filled_size == D("0.75")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"cid": "other"}, "belongs to another order"),
        ({"product_id": "ETH-USD"}, "order c1 is BTC-USD BUY"),
        ({"side": Side.SELL}, "order c1 is BTC-USD BUY"),
    ],
)
def test_fill_for_another_order_raises(kwargs: dict, match: str) -> None:
    order = order_in(S.OPEN)
    with pytest.raises(InvalidValue, match=match):
        order.apply_fill(make_fill("t1", **kwargs))
    assert order.fills == {}


def test_partial_fill_while_cancel_pending_waits_for_the_cancel() -> None:
    order = order_in(S.CANCEL_PENDING)
    order.apply_fill(make_fill("t1", size="0.5"))
    assert order.status is S.CANCEL_PENDING
    order.apply_fill(make_fill("t2", size="0.5"))
    assert order.status is S.FILLED


def test_fill_in_submitted_or_unknown_state_moves_the_order_on() -> None:
    for status in (S.SUBMITTED, S.IN_FLIGHT_UNKNOWN):
        order = order_in(status)
        order.apply_fill(make_fill("t1", size="0.5"))
        assert order.status is S.PARTIALLY_FILLED


def test_late_fill_on_cancelled_order_is_recorded_without_status_change() -> None:
    order = order_in(S.CANCELLED)
    assert order.apply_fill(make_fill("late", size="0.5"))
    assert order.status is S.CANCELLED and order.filled_size == D("0.5")


def test_quote_sized_market_order_status_is_left_to_the_venue() -> None:
    spec = OrderSpec("c1", "BTC-USD", Side.BUY, OrderKind.MARKET, quote_size=D("100"), time_in_force=TimeInForce.IOC)
    order = order_in(S.OPEN, spec)
    order.apply_fill(make_fill("t1", size="3"))
    assert order.status is S.OPEN
    assert order.remaining_size is None
    assert order.filled_size == D("3")


def test_venue_order_id_is_not_overwritten_by_fills() -> None:
    order = Order(limit_spec(), status=S.OPEN, venue_order_id="v-orig")
    order.apply_fill(make_fill("t1", venue_order_id="v-other"))
    assert order.venue_order_id == "v-orig"


# -- property: fills applied twice count once ----------------------------------------------------

fill_sizes = st.lists(st.integers(min_value=1, max_value=20), min_size=1, max_size=15)


@settings(max_examples=200, deadline=None)
@given(fill_sizes, st.randoms(use_true_random=False))
def test_property_fills_applied_twice_count_once(units: list[int], rnd: object) -> None:
    total = sum(units)
    order = Order(limit_spec(size=str(total)), status=S.OPEN)
    fills = [make_fill(f"t{i}", size=str(u), price=str(100 + i), fee="0.01") for i, u in enumerate(units)]
    deliveries = fills + fills[: len(fills) // 2] + fills[::3]  # duplicates, in a shuffled order
    rnd.shuffle(deliveries)  # type: ignore[attr-defined]
    applied = [order.apply_fill(f) for f in deliveries]
    assert sum(applied) == len(fills)
    assert order.filled_size == total
    assert order.fees == D("0.01") * len(fills)
    assert order.filled_value == sum((D(u) * (100 + i) for i, u in enumerate(units)), D(0))
    assert order.status is S.FILLED
    assert order.remaining_size == 0
    # derived values never depend on delivery order
    again = Order(limit_spec(size=str(total)), status=S.OPEN)
    for f in fills:
        again.apply_fill(f)
    assert (again.filled_size, again.average_price, again.fees) == (order.filled_size, order.average_price, order.fees)


def test_model_values_keep_frozen_dataclass_behaviour_with_the_fast_init() -> None:
    import dataclasses
    import inspect

    from cryptoj.model.positions import Balance, Position

    spec = OrderSpec("c1", "BTC-USD", Side.BUY, OrderKind.MARKET, base_size=Decimal("1"), time_in_force=TimeInForce.IOC)
    assert spec.post_only is False and spec.end_time is None and spec.stop_price is None  # defaults
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.base_size = Decimal("2")  # type: ignore[misc]
    other = dataclasses.replace(spec, client_order_id="c2")
    assert other.client_order_id == "c2" and other.base_size == spec.base_size and other != spec
    back = dataclasses.replace(other, client_order_id="c1")
    assert back == spec and hash(back) == hash(spec)
    with pytest.raises(InvalidValue, match=r"order c3\.size"):
        dataclasses.replace(spec, client_order_id="c3", base_size=Decimal("-1"))
    for cls in (OrderSpec, Fill, Position, Balance):
        names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
        assert list(inspect.signature(cls.__init__).parameters)[1:] == names
    with pytest.raises(TypeError):
        OrderSpec("c1", "BTC-USD", Side.BUY)  # type: ignore[call-arg]
    with pytest.raises(InvalidValue, match=r"fill t1\.size"):
        Fill("t1", "c1", "BTC-USD", Side.BUY, Decimal("1"), Decimal("0"), Decimal("0"), datetime.now(UTC))
    with pytest.raises(InvalidValue, match=r"balance USD\.available"):
        Balance("USD", Decimal("-1"))
