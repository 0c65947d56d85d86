"""The L2 hot path (protocol l2 parse + book updates) behaves exactly like the checked slow path.

``protocol._parse_l2`` turns plain decimal strings straight into ``Decimal`` and only sends anything
unusual through ``parse_decimal``; ``OrderBook.apply_updates`` keeps a dict plus a bisect-sorted price
list per side. These tests pin that the fast paths accept and refuse exactly what the checked paths do,
and that the book stays equal to a plain reference model.
"""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cryptoj.errors import InvalidValue, MalformedMessage
from cryptoj.model.book import BookSide, OrderBook
from cryptoj.model.events import L2Update
from cryptoj.model.money import Side, parse_decimal
from cryptoj.venues.coinbase.protocol import parse_envelope

pytestmark = pytest.mark.unit


def _frame(*levels: tuple[object, object], side: str = "bid") -> bytes:
    updates = [{"side": side, "event_time": "2026-04-07T14:30:01Z", "price_level": p, "new_quantity": q} for p, q in levels]
    return orjson.dumps(
        {"channel": "l2_data", "timestamp": "2026-04-07T14:30:01.5Z", "sequence_num": 3,
         "events": [{"type": "update", "product_id": "BTC-USD", "updates": updates}]}
    )


@pytest.mark.parametrize(
    ("price", "size", "field"),
    [
        ("NaN", "1", "price_level"),
        ("1", "sNaN", "new_quantity"),
        ("Infinity", "1", "price_level"),
        ("1", "-Infinity", "new_quantity"),
        ("-5", "1", "price_level"),
        ("1", "-0.1", "new_quantity"),
        ("", "1", "price_level"),
        ("1", "  ", "new_quantity"),
        ("abc", "1", "price_level"),
        ("1", "1.2.3", "new_quantity"),
        (1.5, "1", "price_level"),
        ("1", 2.5, "new_quantity"),
        (None, "1", "price_level"),
        ("1", True, "new_quantity"),
    ],
)
def test_bad_level_values_are_malformed_and_name_the_field(price: object, size: object, field: str) -> None:
    with pytest.raises(MalformedMessage) as info:
        parse_envelope(_frame(("100.5", "1"), (price, size)))
    assert field in str(info.value)


@pytest.mark.parametrize("text", ["100.50", " 7.25 ", "1E+2", "0", "0.00000001", "1_000.5", "00012.3400"])
def test_good_strings_parse_exactly_as_parse_decimal(text: str) -> None:
    env = parse_envelope(_frame((text, text), side="offer"))
    (event,) = env.events
    assert isinstance(event, L2Update)
    ((side, price, size),) = event.changes
    assert side is BookSide.ASK
    expected = parse_decimal(text)
    assert price == expected and size == expected
    assert str(price) == str(expected)  # the exact digits, exponent and trailing zeros kept


def test_integers_are_accepted_like_parse_decimal_does() -> None:
    (event,) = parse_envelope(_frame((100, 2))).events
    assert isinstance(event, L2Update)
    assert event.changes == ((BookSide.BID, Decimal(100), Decimal(2)),)


def test_event_time_comes_from_the_first_update_that_has_one() -> None:
    frame = orjson.dumps(
        {"channel": "l2_data", "timestamp": "2026-04-07T14:30:01.5Z", "sequence_num": 3,
         "events": [{"type": "update", "product_id": "BTC-USD", "updates": [
             {"side": "bid", "price_level": "1", "new_quantity": "1"},
             {"side": "bid", "price_level": "2", "new_quantity": "1", "event_time": "2026-04-07T14:30:09Z"},
         ]}]}
    )
    (event,) = parse_envelope(frame).events
    assert isinstance(event, L2Update)
    assert event.time.second == 9


class _Dec(Decimal):
    """A Decimal subclass: must take the checked path and still work."""


def test_book_refuses_bad_updates_in_a_batch_after_applying_the_earlier_ones() -> None:
    book = OrderBook("BTC-USD")
    book.apply_snapshot([(Decimal("99"), Decimal("1"))], [(Decimal("101"), Decimal("1"))])
    for bad in [
        (BookSide.BID, Decimal("98"), Decimal("-1")),
        (BookSide.BID, Decimal("NaN"), Decimal("1")),
        (BookSide.ASK, Decimal("0"), Decimal("1")),
        (BookSide.ASK, Decimal("102"), Decimal("Infinity")),
        (BookSide.ASK, "102", Decimal("1")),
    ]:
        with pytest.raises(InvalidValue):
            book.apply_updates([(BookSide.BID, Decimal("97"), Decimal("3")), bad])  # type: ignore[list-item]
        assert book.size_at(BookSide.BID, Decimal("97")) == Decimal("3")
    with pytest.raises(InvalidValue, match="BookSide"):
        book.apply_updates([("bid", Decimal("1"), Decimal("1"))])  # type: ignore[list-item]
    with pytest.raises(InvalidValue, match="BookSide"):
        book.apply_update("ask", Decimal("1"), Decimal("1"))  # type: ignore[arg-type]
    # subclasses are accepted through the checked path, and keep the price list in order
    assert book.apply_updates([(BookSide.ASK, _Dec("100.5"), _Dec("2")), (BookSide.ASK, _Dec("101"), _Dec("0"))]) == 2
    assert book.asks() == [(Decimal("100.5"), Decimal("2"))]
    assert book.bids() == [(Decimal("99"), Decimal("1")), (Decimal("97"), Decimal("3"))]
    assert book.best_bid() == (Decimal("99"), Decimal("1")) and book.best_ask() == (Decimal("100.5"), Decimal("2"))


def test_equal_prices_with_different_exponents_are_one_level() -> None:
    book = OrderBook()
    book.apply_snapshot([], [])
    book.apply_updates([(BookSide.BID, Decimal("100.0"), Decimal("1")), (BookSide.BID, Decimal("100.00"), Decimal("2"))])
    assert book.bid_count == 1 and book.bids() == [(Decimal("100"), Decimal("2"))]
    book.apply_updates([(BookSide.BID, Decimal("100"), Decimal("0"))])
    assert book.bid_count == 0 and book.best_bid() is None and book.bids() == []


prices = st.integers(min_value=1, max_value=60).map(lambda t: Decimal(t) / 4)
sizes = st.one_of(st.just(Decimal(0)), st.integers(min_value=1, max_value=9).map(Decimal))
updates = st.tuples(st.sampled_from([BookSide.BID, BookSide.ASK]), prices, sizes)
Change = tuple[BookSide, Decimal, Decimal]


@settings(max_examples=150, deadline=None)
@given(st.lists(updates, max_size=30), st.lists(st.lists(updates, max_size=12), max_size=12))
def test_book_equals_a_reference_model(snapshot: list[Change], batches: list[list[Change]]) -> None:
    book = OrderBook("X")
    ref: dict[BookSide, dict[Decimal, Decimal]] = {BookSide.BID: {}, BookSide.ASK: {}}
    book.apply_snapshot([(p, s) for side, p, s in snapshot if side is BookSide.BID],
                        [(p, s) for side, p, s in snapshot if side is BookSide.ASK])
    for side, p, s in snapshot:
        if s:
            ref[side][p] = s
        else:
            ref[side].pop(p, None)
    for i, batch in enumerate(batches):
        if i % 2:
            assert book.apply_updates(batch, sequence=i) == len(batch)
            assert book.sequence == i
        else:
            for change in batch:
                book.apply_update(*change)
        for side, p, s in batch:
            if s:
                ref[side][p] = s
            else:
                ref[side].pop(p, None)
        want_bids = sorted(ref[BookSide.BID].items(), reverse=True)
        want_asks = sorted(ref[BookSide.ASK].items())
        assert book.bids() == want_bids and book.asks() == want_asks
        assert book.depth(3) == (want_bids[:3], want_asks[:3])
        assert book.best_bid() == (want_bids[0] if want_bids else None)
        assert book.best_ask() == (want_asks[0] if want_asks else None)
        assert len(book) == len(want_bids) + len(want_asks)
        assert book.is_crossed() == bool(want_bids and want_asks and want_bids[0][0] >= want_asks[0][0])
        if want_asks:
            total = sum(s for _, s in want_asks)
            assert book.walk(Side.BUY, total) == (total, sum(p * s for p, s in want_asks))
        if want_bids:
            assert book.walk(Side.SELL, want_bids[0][1]) == (want_bids[0][1], want_bids[0][0] * want_bids[0][1])
