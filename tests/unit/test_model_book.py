"""Unit and property tests for the L2 order book."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cryptoj.errors import InvalidValue
from cryptoj.model.book import BookSide, OrderBook
from cryptoj.model.money import Side, parse_decimal

pytestmark = pytest.mark.unit

D = Decimal


def make_book() -> OrderBook:
    book = OrderBook("BTC-USD")
    book.apply_snapshot(
        bids=[(D("100"), D("1")), (D("99"), D("2")), (D("98"), D("3"))],
        asks=[(D("101"), D("1.5")), (D("102"), D("2")), (D("103"), D("4"))],
        sequence=7,
    )
    return book


# -- sides -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "side"),
    [("bid", BookSide.BID), ("offer", BookSide.ASK), ("ask", BookSide.ASK), ("BID", BookSide.BID), ("Offer", BookSide.ASK)],
)
def test_book_side_from_coinbase(text: str, side: BookSide) -> None:
    assert BookSide.from_coinbase(text) is side


@pytest.mark.parametrize("bad", ["buy", "", "bids", 1, None])
def test_book_side_from_coinbase_rejects_unknown(bad: object) -> None:
    with pytest.raises(InvalidValue, match=r"book\.side"):
        BookSide.from_coinbase(bad)  # type: ignore[arg-type]


def test_book_side_taken_by() -> None:
    assert BookSide.taken_by(Side.BUY) is BookSide.ASK
    assert BookSide.taken_by(Side.SELL) is BookSide.BID


# -- snapshot / update ---------------------------------------------------------


def test_snapshot_sets_levels_sequence_and_valid() -> None:
    book = OrderBook("BTC-USD")
    assert not book.valid and book.sequence is None and len(book) == 0
    book.apply_snapshot([(D("10"), D("1")), (D("9"), D("0")), (D("10"), D("2"))], [(D("11"), D("3"))], sequence=3)
    assert book.valid
    assert book.sequence == 3
    assert book.bid_count == 1 and book.ask_count == 1 and len(book) == 2
    assert book.best_bid() == (D("10"), D("2"))  # later duplicate wins, zero skipped
    assert book.best_ask() == (D("11"), D("3"))


def test_snapshot_replaces_previous_levels() -> None:
    book = make_book()
    book.apply_snapshot([(D("50"), D("1"))], [(D("60"), D("1"))])
    assert book.depth(10) == ([(D("50"), D("1"))], [(D("60"), D("1"))])
    assert book.sequence is None


def test_snapshot_zero_after_nonzero_removes_duplicate() -> None:
    book = OrderBook()
    book.apply_snapshot([(D("10"), D("1")), (D("10"), D("0"))], [])
    assert book.bid_count == 0


@pytest.mark.parametrize(
    ("bids", "asks", "match"),
    [
        ([(D("-1"), D("1"))], [], "bid.price"),
        ([(D("0"), D("1"))], [], "bid.price"),
        ([], [(D("1"), D("-1"))], r"ask.size@1"),
        ([], [(D("NaN"), D("1"))], "ask.price"),
        ([], [(D("1"), D("Infinity"))], "ask.size"),
        ([(1.5, D("1"))], [], "bid.price"),
        ([(D("1"), "2")], [], "bid.size"),
    ],
)
def test_snapshot_rejects_bad_levels_and_leaves_book_unchanged(bids: list, asks: list, match: str) -> None:
    book = make_book()
    before = book.depth(100)
    with pytest.raises(InvalidValue, match=match):
        book.apply_snapshot(bids, asks, sequence=99)
    assert book.depth(100) == before
    assert book.sequence == 7


def test_update_adds_changes_and_removes_levels() -> None:
    book = make_book()
    book.apply_update(BookSide.BID, D("100.5"), D("0.25"))
    assert book.best_bid() == (D("100.5"), D("0.25"))
    book.apply_update(BookSide.BID, D("100.5"), D("0.75"))
    assert book.size_at(BookSide.BID, D("100.5")) == D("0.75")
    book.apply_update(BookSide.BID, D("100.5"), D("0"))
    assert book.size_at(BookSide.BID, D("100.5")) == 0
    assert book.best_bid() == (D("100"), D("1"))
    book.apply_update(BookSide.ASK, D("101"), D("0"))
    assert book.best_ask() == (D("102"), D("2"))


def test_removing_absent_level_is_harmless() -> None:
    book = make_book()
    before = book.depth(10)
    book.apply_update(BookSide.ASK, D("555"), D("0"))
    book.apply_update(BookSide.BID, D("1"), D("0.000"))
    assert book.depth(10) == before


@pytest.mark.parametrize(
    ("side", "price", "size", "match"),
    [
        (BookSide.BID, D("10"), D("-1"), "size"),
        (BookSide.ASK, D("0"), D("1"), "price"),
        (BookSide.ASK, D("-3"), D("0"), "price"),
        (BookSide.BID, D("NaN"), D("1"), "price"),
        (BookSide.BID, D("10"), D("sNaN"), "size"),
        (BookSide.BID, 10.0, D("1"), "price"),
        (BookSide.ASK, D("10"), 1, "size"),
        ("bid", D("10"), D("1"), "side"),
        ("offer", D("10"), D("1"), "side"),
    ],
)
def test_update_rejects_bad_input(side: BookSide, price: Decimal, size: Decimal, match: str) -> None:
    book = make_book()
    before = book.depth(10)
    with pytest.raises(InvalidValue, match=match):
        book.apply_update(side, price, size)
    assert book.depth(10) == before


class MyDecimal(Decimal):
    """A Decimal subclass: valid, just not on the fast path."""


def test_decimal_subclasses_take_the_checked_path() -> None:
    book = make_book()
    book.apply_update(BookSide.BID, MyDecimal("100.5"), MyDecimal("2"))
    assert book.best_bid() == (D("100.5"), D("2"))
    book.apply_update(BookSide.BID, MyDecimal("100.5"), MyDecimal("0"))
    assert book.best_bid() == (D("100"), D("1"))
    assert (
        book.apply_updates([(BookSide.ASK, MyDecimal("100.75"), MyDecimal("3")), (BookSide.ASK, D("101"), MyDecimal("0"))]) == 2
    )
    assert book.asks(2) == [(D("100.75"), D("3")), (D("102"), D("2"))]


def test_bulk_updates_apply_in_order_and_record_sequence() -> None:
    book = make_book()
    n = book.apply_updates(
        [
            (BookSide.BID, D("100"), D("5")),
            (BookSide.BID, D("100"), D("0")),
            (BookSide.ASK, D("100.5"), D("1")),
            (BookSide.ASK, D("999"), D("0")),
        ],
        sequence=8,
    )
    assert n == 4
    assert book.sequence == 8
    assert book.best_bid() == (D("99"), D("2"))
    assert book.best_ask() == (D("100.5"), D("1"))


def test_bulk_updates_without_sequence_keep_previous() -> None:
    book = make_book()
    assert book.apply_updates([]) == 0
    assert book.sequence == 7


@pytest.mark.parametrize(
    ("update", "match"),
    [
        (("ask", D("1"), D("1")), "side"),
        ((BookSide.ASK, D("1"), D("-1")), "size"),
        ((BookSide.BID, D("0"), D("1")), "price"),
        ((BookSide.BID, "1", D("1")), "price"),
    ],
)
def test_bulk_updates_stop_at_first_bad_update(update: tuple, match: str) -> None:
    book = make_book()
    with pytest.raises(InvalidValue, match=match):
        book.apply_updates([(BookSide.BID, D("100.25"), D("1")), update, (BookSide.BID, D("100.75"), D("1"))], sequence=9)
    assert book.size_at(BookSide.BID, D("100.25")) == D("1")  # applied before the bad one
    assert book.size_at(BookSide.BID, D("100.75")) == 0  # not after it
    assert book.sequence == 7


def test_clear_empties_and_invalidates() -> None:
    book = make_book()
    book.clear()
    assert len(book) == 0
    assert not book.valid
    assert book.sequence is None
    assert book.best_bid() is None and book.best_ask() is None
    assert book.mid() is None and book.spread() is None
    assert not book.is_crossed()


# -- reading ---------------------------------------------------------------------


def test_top_of_book_mid_spread() -> None:
    book = make_book()
    assert book.best_bid() == (D("100"), D("1"))
    assert book.best_ask() == (D("101"), D("1.5"))
    assert book.mid() == D("100.5")
    assert book.spread() == D("1")
    assert not book.is_crossed()


def test_one_sided_book() -> None:
    book = OrderBook()
    book.apply_snapshot([(D("5"), D("1"))], [])
    assert book.best_ask() is None
    assert book.mid() is None
    assert book.spread() is None
    assert not book.is_crossed()
    assert book.vwap(Side.BUY, D("1")) is None
    assert book.vwap(Side.SELL, D("1")) == D("5")


def test_crossed_and_locked_books_are_flagged() -> None:
    book = make_book()
    book.apply_update(BookSide.BID, D("101"), D("1"))  # locked: bid == ask
    assert book.is_crossed()
    assert book.spread() == 0
    book.apply_update(BookSide.BID, D("102"), D("1"))  # crossed
    assert book.is_crossed()
    assert book.spread() == D("-1")
    book.apply_update(BookSide.BID, D("102"), D("0"))
    book.apply_update(BookSide.BID, D("101"), D("0"))
    assert not book.is_crossed()


def test_depth_orders_each_side_best_first() -> None:
    book = make_book()
    bids, asks = book.depth(2)
    assert bids == [(D("100"), D("1")), (D("99"), D("2"))]
    assert asks == [(D("101"), D("1.5")), (D("102"), D("2"))]
    assert book.depth(0) == ([], [])
    all_bids, all_asks = book.depth(100)
    assert len(all_bids) == 3 and len(all_asks) == 3
    assert book.bids() == all_bids and book.asks() == all_asks
    with pytest.raises(InvalidValue, match="depth"):
        book.depth(-1)


def test_walk_and_vwap_buy_walks_asks() -> None:
    book = make_book()
    assert book.vwap(Side.BUY, D("1")) == D("101")
    # 1.5 @ 101 + 1.5 @ 102 = 151.5 + 153 = 304.5 for 3
    assert book.vwap(Side.BUY, D("3")) == D("304.5") / 3
    assert book.walk(Side.BUY, D("3")) == (D("3"), D("304.5"))
    # the whole ask side is 7.5; asking for more is too thin
    assert book.walk(Side.BUY, D("10")) == (D("7.5"), D("151.5") + D("204") + D("412"))
    assert book.vwap(Side.BUY, D("10")) is None
    assert book.vwap(Side.BUY, D("7.5")) == (D("151.5") + D("204") + D("412")) / D("7.5")


def test_walk_and_vwap_sell_walks_bids_from_the_top() -> None:
    book = make_book()
    assert book.vwap(Side.SELL, D("1")) == D("100")
    # 1 @ 100 + 1 @ 99 = 199 for 2
    assert book.vwap(Side.SELL, D("2")) == D("99.5")
    assert book.walk(Side.SELL, D("100")) == (D("6"), D("100") + D("198") + D("294"))
    assert book.vwap(Side.SELL, D("6.0000001")) is None


def test_walk_does_not_change_the_book() -> None:
    book = make_book()
    before = book.depth(10)
    book.walk(Side.BUY, D("5"))
    book.walk(Side.SELL, D("5"))
    assert book.depth(10) == before


@pytest.mark.parametrize("size", [D("0"), D("-1"), D("NaN"), 1])
def test_walk_rejects_bad_size(size: Decimal) -> None:
    with pytest.raises(InvalidValue, match=r"walk\.size"):
        make_book().vwap(Side.BUY, size)


def test_walk_rejects_bad_side() -> None:
    with pytest.raises(InvalidValue, match=r"walk\.side"):
        make_book().walk("BUY_IT", D("1"))  # type: ignore[arg-type]


def test_repr_names_product_and_counts() -> None:
    text = repr(make_book())
    assert "BTC-USD" in text and "bids=3" in text and "valid=True" in text


# -- Coinbase payloads -----------------------------------------------------------


def _apply_l2_message(book: OrderBook, message: dict) -> None:
    for event in message["events"]:
        levels = [
            (BookSide.from_coinbase(u["side"]), parse_decimal(u["price_level"], "price_level"), parse_decimal(u["new_quantity"]))
            for u in event["updates"]
        ]
        if event["type"] == "snapshot":
            book.apply_snapshot(
                [(p, s) for side, p, s in levels if side is BookSide.BID],
                [(p, s) for side, p, s in levels if side is BookSide.ASK],
                sequence=message["sequence_num"],
            )
        else:
            book.apply_updates(levels, sequence=message["sequence_num"])


def test_coinbase_l2_snapshot_then_update_fixture(coinbase_fixtures: Path) -> None:
    snapshot = json.loads((coinbase_fixtures / "ws_l2_data_snapshot.json").read_text())
    update = json.loads((coinbase_fixtures / "ws_l2_data_update.json").read_text())
    book = OrderBook("BTC-USD")
    _apply_l2_message(book, snapshot)
    assert book.valid and len(book) > 0
    best_bid, best_ask = book.best_bid(), book.best_ask()
    assert best_bid is not None and best_ask is not None and best_bid[0] < best_ask[0]
    _apply_l2_message(book, update)
    assert book.sequence == update["sequence_num"]
    for event in update["events"]:
        for u in event["updates"]:
            side = BookSide.from_coinbase(u["side"])
            assert book.size_at(side, D(u["price_level"])) == D(u["new_quantity"])


# -- properties --------------------------------------------------------------------

prices = st.integers(min_value=1, max_value=60).map(lambda i: Decimal(i) / 4)
sizes = st.one_of(st.just(Decimal(0)), st.integers(min_value=1, max_value=500).map(lambda i: Decimal(i) / 100))
updates = st.tuples(st.sampled_from([BookSide.BID, BookSide.ASK]), prices, sizes)


def check_invariants(book: OrderBook) -> None:
    bids, asks = book.depth(10_000)
    assert len(bids) == book.bid_count and len(asks) == book.ask_count
    assert len(book) == book.bid_count + book.ask_count
    assert all(size > 0 for _, size in bids + asks)
    assert [p for p, _ in bids] == sorted((p for p, _ in bids), reverse=True)
    assert [p for p, _ in asks] == sorted(p for p, _ in asks)
    assert len({p for p, _ in bids}) == len(bids)
    best_bid, best_ask = book.best_bid(), book.best_ask()
    if best_bid is not None and best_ask is not None:
        assert (best_bid[0] < best_ask[0]) != book.is_crossed()
        spread = book.spread()
        assert spread is not None and (spread > 0) != book.is_crossed()
    else:
        assert not book.is_crossed()


@settings(max_examples=200, deadline=None)
@given(st.lists(updates, max_size=200), st.booleans())
def test_property_invariants_after_arbitrary_updates(seq: list[tuple[BookSide, Decimal, Decimal]], bulk: bool) -> None:
    book = OrderBook("P")
    model: dict[BookSide, dict[Decimal, Decimal]] = {BookSide.BID: {}, BookSide.ASK: {}}
    if bulk:
        book.apply_updates(seq)
    for side, price, size in seq:
        if not bulk:
            book.apply_update(side, price, size)
        if size:
            model[side][price] = size
        else:
            model[side].pop(price, None)
        if not bulk:
            check_invariants(book)
    check_invariants(book)
    assert dict(book.bids()) == model[BookSide.BID]
    assert dict(book.asks()) == model[BookSide.ASK]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(updates, max_size=100),
    st.integers(min_value=1, max_value=3000).map(lambda i: Decimal(i) / 100),
    st.sampled_from([Side.BUY, Side.SELL]),
)
def test_property_walk_matches_brute_force(seq: list[tuple[BookSide, Decimal, Decimal]], size: Decimal, side: Side) -> None:
    book = OrderBook()
    book.apply_updates(seq)
    levels = book.asks() if side is Side.BUY else book.bids()
    remaining, notional = size, Decimal(0)
    for price, level_size in levels:
        take = min(level_size, remaining)
        notional += take * price
        remaining -= take
    filled, walked = book.walk(side, size)
    assert filled == size - remaining
    assert walked == notional
    vwap = book.vwap(side, size)
    if remaining > 0:
        assert vwap is None
    else:
        assert vwap is not None
        # a VWAP lies between the best level and the worst level used
        used = [p for p, _ in levels]
        assert min(used) <= vwap <= max(used)
        if side is Side.BUY:
            assert vwap >= levels[0][0]
        else:
            assert vwap <= levels[0][0]
