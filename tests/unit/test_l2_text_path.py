"""The level-2 *text* hot path behaves exactly like the typed path it replaces on the stream.

* ``protocol.decode_l2_update`` (msgspec) takes only frames ``parse_envelope`` would turn into one
  ``L2Update``, and hands the levels over as text;
* ``OrderBook.apply_text_updates`` keeps prices as exact scaled-integer keys (cached per price text) and
  plain sizes as text until read; it must equal a plain reference model, read exact ``Decimal``s, and
  refuse a malformed number when it arrives;
* ``MarketDataService`` with the hot path (``parse=parse_envelope``) ends in the same books, counters and
  published events as the same service without it, on streams with malformed and impossible frames.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import msgspec
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cryptoj.errors import InvalidValue, MalformedMessage
from cryptoj.market_data import BookReady, BookResync, BookUpdated, MarketDataConfig, MarketDataService
from cryptoj.model import book as book_module
from cryptoj.model.book import BookSide, OrderBook
from cryptoj.model.candles import Timeframe
from cryptoj.model.events import Envelope, L2Update
from cryptoj.model.money import Side
from cryptoj.recorder import synthetic_l2_frames
from cryptoj.venues.coinbase.protocol import decode_l2_update, parse_envelope, parse_time

pytestmark = pytest.mark.unit

D = Decimal
TS = "2026-04-07T14:30:01.456789123Z"


class Lv(msgspec.Struct):
    side: str
    price: str
    size: str


def frame(*levels: tuple[str, object, object], seq: int = 1, kind: str = "update", **top: object) -> bytes:
    updates = [{"side": s, "event_time": TS, "price_level": p, "new_quantity": q} for s, p, q in levels]
    msg: dict[str, Any] = {"channel": "l2_data", "client_id": "", "timestamp": TS, "sequence_num": seq}
    msg.update(top)
    msg["events"] = [{"type": kind, "product_id": "BTC-USD", "updates": updates}]
    return orjson.dumps(msg)


# -- the book's text path -------------------------------------------------------------------------


def test_text_sizes_read_back_as_the_exact_decimal_of_the_text() -> None:
    book = OrderBook("BTC-USD")
    book.apply_snapshot([], [])
    book.apply_text_updates([Lv("bid", "100.50", "1.50000000"), Lv("offer", "101", "00.25"), Lv("offer", "102", "7.")])
    ((price, size),) = book.bids()
    assert (str(price), str(size)) == ("100.50", "1.50000000")  # digits and exponent kept
    assert [(str(p), str(s)) for p, s in book.asks()] == [("101", "0.25"), ("102", "7")]
    assert book.best_ask() == (D("101"), D("0.25")) and isinstance(book.best_ask()[1], Decimal)  # type: ignore[index]
    assert book.size_at(BookSide.ASK, D("102.000")) == D("7") and book.size_at(BookSide.ASK, D("102.0001")) == 0
    assert book.walk(Side.BUY, D("1")) == (D("1"), D("0.25") * 101 + D("0.75") * 102)


@pytest.mark.parametrize("zero", ["0", "0.0", "00.00000000", ".0", "0.", "-0", " 0 ", "0E+3"])
def test_every_spelling_of_zero_removes_the_level(zero: str) -> None:
    book = OrderBook()
    book.apply_snapshot([(D("100"), D("1"))], [])
    assert book.apply_text_updates([Lv("bid", "100", zero)]) == 1
    assert book.bid_count == 0 and book.best_bid() is None


@pytest.mark.parametrize("text", ["1E+2", " 7.25 ", "1_000.5", "+3", "0.1e-3"])
def test_unusual_but_valid_sizes_are_read_like_the_typed_path(text: str) -> None:
    book = OrderBook()
    book.apply_snapshot([], [])
    book.apply_text_updates([Lv("bid", "100", text)])
    assert book.bids() == [(D("100"), D(text.strip()))]


@pytest.mark.parametrize(
    ("price", "size", "match"),
    [
        ("100", "abc", "size"),
        ("100", "", "size"),
        ("100", ".", "size"),
        ("100", "1.2.3", "size"),
        ("100", "NaN", "size"),
        ("100", "-1", "size"),
        ("100", "Infinity", "size"),
        ("100", "\u00b2", "size"),  # a digit to str.isdigit, not to Decimal
        ("abc", "1", "price"),
        ("-1", "1", "price"),
        ("", "1", "price"),
        ("0", "1", "price"),
        ("0.000", "1", "price"),
        ("sNaN", "1", "price"),
    ],
)
def test_text_path_refuses_bad_numbers_when_they_arrive(price: str, size: str, match: str) -> None:
    book = OrderBook("BTC-USD")
    book.apply_snapshot([(D("99"), D("1"))], [])
    with pytest.raises(InvalidValue, match=match):
        book.apply_text_updates([Lv("bid", "98", "2"), Lv("bid", price, size)])
    assert book.bids() == [(D("99"), D("1")), (D("98"), D("2"))]  # the level before it is applied


def test_text_path_sides() -> None:
    book = OrderBook()
    book.apply_snapshot([], [])
    book.apply_text_updates([Lv("BID", "1", "1"), Lv("ask", "3", "1"), Lv("Offer", "4", "1")])
    assert book.bids() == [(D(1), D(1))] and book.asks() == [(D(3), D(1)), (D(4), D(1))]
    with pytest.raises(InvalidValue, match="side"):
        book.apply_text_updates([Lv("buy", "1", "1")])


def test_finer_prices_rescale_the_keys_even_in_the_middle_of_a_message() -> None:
    book = OrderBook()
    book.apply_snapshot([(D("100"), D("1")), (D("99"), D("2"))], [(D("101"), D("3"))])
    book.apply_text_updates([Lv("bid", "99.5", "4"), Lv("offer", "100.75", "5"), Lv("bid", "99.125", "6"), Lv("bid", "100", "0")])
    assert book.bids() == [(D("99.5"), D(4)), (D("99.125"), D(6)), (D(99), D(2))]
    assert book.asks() == [(D("100.75"), D(5)), (D(101), D(3))]
    book.apply_update(BookSide.ASK, D("100.0001"), D("1"))
    assert book.best_ask() == (D("100.0001"), D(1)) and book.spread() == D("100.0001") - D("99.5")
    book.apply_text_updates([Lv("offer", "100.75", "0"), Lv("bid", "99.5", "7")])
    assert book.asks() == [(D("100.0001"), D(1)), (D(101), D(3))] and book.best_bid() == (D("99.5"), D(7))
    assert book.mid() == (D("99.5") + D("100.0001")) / 2


def test_price_cache_and_price_table_stay_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(book_module, "PRICE_CACHE_SIZE", 8)
    book = OrderBook()
    book.apply_snapshot([], [])
    for k in range(1, 200):
        book.apply_text_updates([Lv("bid", f"{k}.5", "1"), Lv("bid", f"{k - 1}.5", "0") if k > 1 else Lv("bid", "1", "0")])
        assert len(book._bid_text) <= 8 and len(book._price_of) <= 2 * 8 + len(book) + 1
    assert book.bids() == [(D("199.5"), D(1))]
    for k in range(300):
        book.apply_update(BookSide.ASK, D(1000 + k), D(1))
        book.apply_update(BookSide.ASK, D(1000 + k), D(0))
    assert len(book._price_of) <= 2 * 8 + len(book) + 1
    assert book.asks() == [] and book.bids() == [(D("199.5"), D(1))]


price_texts = st.sampled_from(["100", "100.0", "100.5", "99.25", "99.125", "101", "101.5", "98", "102.75", "97.0625"])
size_texts = st.one_of(
    st.sampled_from(["0", "0.0", "1", "2.50", "0.00000001", "3.", ".5", "1E+1", " 4 "]),
    st.integers(min_value=1, max_value=10**9).map(lambda n: f"{n // 10**8}.{n % 10**8:08d}"),
)
text_level = st.tuples(st.sampled_from(["bid", "offer"]), price_texts, size_texts)


@settings(max_examples=200, deadline=None)
@given(st.lists(text_level, max_size=20), st.lists(st.lists(text_level, max_size=10), max_size=15))
def test_text_path_equals_a_reference_model(
    snapshot: list[tuple[str, str, str]], batches: list[list[tuple[str, str, str]]]
) -> None:
    book = OrderBook("X")
    ref: dict[str, dict[Decimal, Decimal]] = {"bid": {}, "offer": {}}
    for side, p, s in snapshot:
        ref[side][D(p)] = D(s)
    for levels in ref.values():
        for zero_price in [k for k, v in levels.items() if not v]:
            del levels[zero_price]
    book.apply_snapshot(
        [(D(p), D(s)) for side, p, s in snapshot if side == "bid"], [(D(p), D(s)) for side, p, s in snapshot if side == "offer"]
    )
    for i, batch in enumerate(batches):
        if i % 5 == 4:  # a fresh snapshot of the same state now and then: scale and caches start over
            book.apply_snapshot(list(ref["bid"].items()), list(ref["offer"].items()))
        if i % 3 == 2:  # the typed path on the same book now and then
            book.apply_updates([(BookSide.from_coinbase(side), D(p), D(s)) for side, p, s in batch])
        else:
            assert book.apply_text_updates([Lv(side, p, s) for side, p, s in batch], sequence=i) == len(batch)
        for side, p, s in batch:
            if D(s):
                ref[side][D(p)] = D(s)
            else:
                ref[side].pop(D(p), None)
        want_bids = sorted(ref["bid"].items(), reverse=True)
        want_asks = sorted(ref["offer"].items())
        assert book.bids() == want_bids and book.asks() == want_asks
        assert book.best_bid() == (want_bids[0] if want_bids else None)
        assert book.best_ask() == (want_asks[0] if want_asks else None)
        assert book.depth(2) == (want_bids[:2], want_asks[:2])
        assert book.is_crossed() == bool(want_bids and want_asks and want_bids[0][0] >= want_asks[0][0])
        assert len(book) == len(want_bids) + len(want_asks)
        for bid_price, bid_size in want_bids:
            assert book.size_at(BookSide.BID, bid_price) == bid_size
        if want_asks:
            total = sum((ask_size for _, ask_size in want_asks), D(0))
            assert book.walk(Side.BUY, total) == (total, sum((ap * asz for ap, asz in want_asks), D(0)))


# -- the protocol's hot-path decoder ----------------------------------------------------------------


def test_decode_l2_update_gives_the_levels_as_text() -> None:
    data = frame(("bid", "100.5", "1.25"), ("offer", "101", "0"), seq=42)
    seq, product_id, levels = decode_l2_update(data) or (None, None, [])
    assert (seq, product_id) == (42, "BTC-USD")
    assert [(lv.side, lv.price, lv.size) for lv in levels] == [("bid", "100.5", "1.25"), ("offer", "101", "0")]
    assert decode_l2_update(data.decode()) is not None  # text frames too (websockets gives str)
    assert decode_l2_update(bytearray(data)) is None


@pytest.mark.parametrize(
    "data",
    [
        frame(("bid", "1", "1"), kind="snapshot"),
        frame(("bid", "1", "1"), type="error"),
        frame(("bid", "1", "1"), timestamp=None).replace(f'"event_time":"{TS}",'.encode(), b""),
        frame(("bid", 1, "1")),
        frame(("bid", "1", 2)),
        frame(("buy", "1", "1")),
        frame(("ask", "1", "1")),  # fine for parse_envelope, but not the hot path's spelling
        frame(("bid", "1", "1"), sequence_num="7"),
        frame(("bid", "1", "1"), timestamp="yesterday"),
        frame(("bid", "1", "1"), timestamp=""),
        b'{"channel":"ticker","sequence_num":1,"events":[]}',
        b'{"channel":"l2_data","sequence_num":1,"timestamp":"2026-04-07T14:30:01Z","events":[]}',
        b'{"channel":"l2_data","sequence_num":1,"timestamp":"2026-04-07T14:30:01Z","events":[{"product_id":"A-B","updates":[]},'
        b'{"product_id":"C-D","updates":[]}]}',
        b'{"channel":"l2_data","sequence_num":1,"timestamp":"2026-04-07T14:30:01Z","events":[{"product_id":"","updates":[]}]}',
        b'{"channel":"l2_data", "sequence_num": 1, "events": [',
        b"[]",
    ],
)
def test_decode_l2_update_leaves_everything_else_to_parse_envelope(data: bytes) -> None:
    assert decode_l2_update(data) is None


def test_a_level_without_event_time_uses_the_envelope_timestamp() -> None:
    data = frame(("bid", "1", "1")).replace(f'"event_time":"{TS}",'.encode(), b"")
    assert decode_l2_update(data) is not None
    assert isinstance(parse_envelope(data).events[0], L2Update)


def _check_decode_agrees(data: bytes) -> None:
    decoded = decode_l2_update(data)
    if decoded is None:
        return
    env = parse_envelope(data)  # must not raise: what the hot path takes, the full parser takes
    (event,) = env.events
    assert isinstance(event, L2Update)
    seq, product_id, levels = decoded
    assert (env.sequence_num, event.product_id) == (seq, product_id)
    assert [side for side, _, _ in event.changes] == [BookSide.from_coinbase(lv.side) for lv in levels]


mutations = st.sampled_from(
    [
        ("timestamp", TS),
        ("timestamp", "2026-04-07t14:30:01z"),
        ("timestamp", "2026-04-07 14:30:01+00:00"),
        ("timestamp", "2026-04-07T14:30:01"),
        ("timestamp", "2026-04-07T14:30:60Z"),
        ("timestamp", 1712500201),
        ("timestamp", None),
        ("sequence_num", -3),
        ("sequence_num", 2**64 - 1),
        ("sequence_num", True),
        ("sequence_num", 1.0),
        ("type", "l2_data"),
        ("channel", "level2"),
        ("events", "x"),
    ]
)
event_times = st.sampled_from([TS, None, "", "2026-04-07T14:30:01.1Z", "2026-13-01T00:00:00Z", "2026-04-07T14:30:01+0530", 5])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(mutations, max_size=3), st.lists(st.tuples(st.sampled_from(["bid", "offer", "ask"]), event_times), max_size=4))
def test_whatever_the_hot_path_decodes_parse_envelope_accepts(
    top: list[tuple[str, object]], levels: list[tuple[str, object]]
) -> None:
    updates: list[dict[str, object]] = []
    for side, event_time in levels:
        level: dict[str, object] = {"side": side, "price_level": "100.5", "new_quantity": "1"}
        if event_time is not None:
            level["event_time"] = event_time
        updates.append(level)
    msg: dict[str, object] = {"channel": "l2_data", "timestamp": TS, "sequence_num": 5}
    msg.update(dict(top))
    msg.setdefault("events", [{"type": "update", "product_id": "BTC-USD", "updates": updates}])
    _check_decode_agrees(orjson.dumps(msg))


rfc3339ish = st.builds(
    lambda date, sep, time, frac, zone: f"{date}{sep}{time}{frac}{zone}",
    st.sampled_from(["2026-04-07", "2024-02-29", "2023-02-29", "0001-01-01", "9999-12-31", "2026-4-07"]),
    st.sampled_from(["T", "t", " ", "_", ""]),
    st.sampled_from(["14:30:01", "23:59:60", "24:00:00", "00:00:00", "14:30", "1:30:01"]),
    st.sampled_from(["", ".5", ".456789123", ".1234567891234", ".", ",5"]),
    st.sampled_from(["Z", "z", "+00:00", "-05:30", "+0530", "+05", "+24:00", "", " UTC", "+00:00:30"]),
)


@settings(max_examples=400, deadline=None)
@given(rfc3339ish)
def test_every_time_msgspec_accepts_parse_time_accepts(text: str) -> None:
    try:
        msgspec.json.decode(orjson.dumps(text), type=datetime)
    except msgspec.ValidationError:
        return
    parse_time(text, "t")  # must not raise


# -- the service: hot path vs the full parser ---------------------------------------------------------


def _full_parse_only(data: str | bytes) -> Envelope:
    return parse_envelope(data)  # the same parser, without its decode_l2_update hot path


def _service(parse: Any) -> tuple[MarketDataService, list[object]]:
    svc = MarketDataService(
        MarketDataConfig(products=("BTC-USD", "ETH-USD"), candle_timeframes=(Timeframe.ONE_MINUTE,)),
        parse=parse,
        clock=lambda: 1.0,
    )
    published: list[object] = []
    svc._publish = lambda event, product_id: published.append(event)  # type: ignore[method-assign]
    svc._subscribers[BookUpdated] = []
    return svc, published


def _state(svc: MarketDataService) -> tuple[object, ...]:
    books = []
    for pid in svc.products:
        book = svc._state(pid).book
        books.append((book.valid, book.sequence, book.bids(), book.asks()))
    stats = svc.stats
    return (
        tuple(books),
        (stats.frames, stats.events, stats.malformed, stats.gaps, stats.resyncs, stats.books_ready, stats.crossed),
        (stats.ignored_updates, stats.level_updates, stats.unknown_channels),
        svc._expected_seq,
        sorted(svc._pending_resync),
    )


def test_the_service_takes_the_hot_path_for_update_frames() -> None:
    hot, _ = _service(parse_envelope)
    full, _ = _service(_full_parse_only)
    assert hot._decode_l2 is not None and full._decode_l2 is None
    frames = list(synthetic_l2_frames("BTC-USD", seed=5, snapshot_levels=60, updates=400))
    for data in frames:
        hot.process_frame(data)
        full.process_frame(data)
    assert _state(hot) == _state(full)
    assert hot.stats.level_updates > 400 and hot.stats.malformed == 0 and hot.stats.resyncs == 0


bad_frames = st.sampled_from(
    [
        frame(("bid", "99.5", "abc")),
        frame(("bid", "99.5", "1"), ("offer", "0", "1")),
        frame(("offer", "-1", "1")),
        frame(("bid", "99.5", "-2")),
        frame(("bid", "100000", "1")),  # crosses the book
        frame(("bid", "99.5", "1"), ("bid", "99.25", "1.2.3")),
        frame(("bid", "99.5", "1"), timestamp="2026-04-07t14:30:01z"),
        frame(("BID", "99.5", "1E+1")),
        frame(("bid", "99.5", "1"), kind="snapshot"),
        b'{"channel":"l2_data","sequence_num":1,"timestamp":"2026-04-07T14:30:01Z","events":[{"product_id":"ETH-USD",'
        b'"updates":[{"side":"bid","price_level":"5","new_quantity":"1"}]}]}',
        b'{"channel":"l2_data","sequence_num":1,"events":[{"product_id":"BTC-USD","updates":[]}]}',
        b'{"channel":"l2_data", "sequence_num": 1, "events": [',
        b'{"channel":"heartbeats","sequence_num":1,"events":[{"heartbeat_counter":3}]}',
    ]
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(min_value=0, max_value=60), bad_frames), max_size=6), st.integers(min_value=0, max_value=3))
def test_hot_path_and_full_parser_end_in_the_same_state(inject: list[tuple[int, bytes]], skip: int) -> None:
    frames = list(synthetic_l2_frames("BTC-USD", seed=9, snapshot_levels=40, updates=60, max_levels_per_update=6))
    stream = list(frames)
    for at, bad in sorted(inject, reverse=True):
        stream.insert(at + 1, bad)
    stream.append(frames[0])  # a fresh snapshot: books come back
    stream.extend(frames[1:5])
    hot, hot_events = _service(parse_envelope)
    full, full_events = _service(_full_parse_only)
    renumbered: list[bytes] = []
    for data in stream:
        # the bad frames carry their own sequence numbers: give every frame the stream's next one
        msg = orjson.loads(data) if data.startswith(b"{") and data.endswith(b"}") else None
        if isinstance(msg, dict) and "sequence_num" in msg:
            msg["sequence_num"] = len(renumbered)
            data = orjson.dumps(msg)
        renumbered.append(data)
    if skip:
        del renumbered[10 * skip]  # a sequence gap
    for data in renumbered:
        hot.process_frame(data)
        full.process_frame(data)
        assert _state(hot) == _state(full)
    assert hot_events == full_events
    assert any(isinstance(e, BookReady) for e in hot_events)
    if skip:
        assert hot.stats.gaps >= 1


def test_a_malformed_number_on_the_hot_path_is_counted_as_malformed_with_the_full_parsers_reason() -> None:
    hot, events = _service(parse_envelope)
    frames = list(synthetic_l2_frames("BTC-USD", seed=1, snapshot_levels=10, updates=3))
    for data in frames:
        hot.process_frame(data)
    bad = frame(("bid", "99.5", "12abc"), seq=4)
    with pytest.raises(MalformedMessage, match="new_quantity"):
        parse_envelope(bad)
    hot.process_frame(bad)
    assert hot.stats.malformed == 1 and hot.stats.resyncs == 1 and hot.book("BTC-USD") is None
    assert [e.reason for e in events if isinstance(e, BookResync)] == ["malformed level2 frame"]
    assert "BTC-USD" in hot._pending_resync and "ETH-USD" in hot._pending_resync


@pytest.mark.parametrize("price", ["1E+999999999", "1E-999999999", "1E+31", "0." + "0" * 30 + "1"])
def test_prices_the_integer_keys_cannot_hold_are_refused_quickly(price: str) -> None:
    book = OrderBook("BTC-USD")
    book.apply_snapshot([(D("99"), D("1"))], [])
    with pytest.raises(InvalidValue, match="decimal places"):
        book.apply_text_updates([Lv("bid", price, "1")])
    with pytest.raises(InvalidValue, match="decimal places"):
        book.apply_update(BookSide.ASK, D(price), D("1"))
    with pytest.raises(InvalidValue, match="decimal places"):
        book.apply_snapshot([(D(price), D("1"))], [])
    assert book.size_at(BookSide.BID, D(price)) == 0
    assert book.bids() == [(D("99"), D("1"))] and book.asks() == []


def test_the_finest_and_largest_supported_prices_are_exact() -> None:
    finest = D("0." + "0" * 29 + "1")
    largest = D("9" * 31)
    book = OrderBook()
    book.apply_snapshot([(finest, D(1))], [(largest, D(2))])
    book.apply_text_updates([Lv("bid", "1." + "0" * 40, "3")])  # trailing zeros: one decimal place really
    assert book.bids() == [(D(1), D(3)), (finest, D(1))] and book.asks() == [(largest, D(2))]
    assert book.size_at(BookSide.BID, finest) == 1


def test_typed_path_key_cache_follows_rescales_and_snapshots() -> None:
    book = OrderBook()
    book.apply_snapshot([(D("100.5"), D(1))], [(D("101"), D(1))])
    book.apply_update(BookSide.BID, D("100.25"), D(2))  # rescale: 100.5 is cached at the old scale
    book.apply_update(BookSide.BID, D("100.5"), D(0))
    assert book.bids() == [(D("100.25"), D(2))] and book.size_at(BookSide.BID, D("100.5")) == 0
    book.apply_snapshot([(D("99"), D(3))], [(D("100.5"), D(4))])  # scale back to 1, caches emptied
    book.apply_update(BookSide.BID, D("100.25"), D(5))
    assert book.bids() == [(D("100.25"), D(5)), (D("99"), D(3))] and book.asks() == [(D("100.5"), D(4))]
    book.clear()
    book.apply_snapshot([(D("7"), D(1))], [])
    book.apply_update(BookSide.BID, D("100.25"), D(0))
    assert book.bids() == [(D(7), D(1))] and book.size_at(BookSide.BID, D("100.25")) == 0
