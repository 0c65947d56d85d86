"""Level-2 order book for one product.

Each side is a ``dict`` price → size plus a plain ``list`` of its prices kept
sorted ascending with :mod:`bisect` (both C code: a book side holds hundreds to
a few thousand levels, where inserting into a flat list beats a tree or a
``SortedDict``, whose bookkeeping runs in Python). Keys are the ``Decimal``
prices, ascending on both sides: the best bid is the *last* bid price, the best
ask the *first* ask price. A level holds the absolute size resting at that price
(Coinbase's ``new_quantity``); a size of zero removes the level, and removing a
level that is not there is harmless (Coinbase sends such removals routinely).

Invariants kept by every method:

* no level has a size of zero or below;
* prices are strictly positive;
* ``depth()`` returns bids best-first (descending) and asks best-first (ascending).

The book itself does not refuse a crossed state (best bid >= best ask): it
records what the feed says and :meth:`OrderBook.is_crossed` reports it, so the
market-data service can decide to resync. ``valid`` is the service's flag:
:meth:`OrderBook.apply_snapshot` sets it to True and :meth:`OrderBook.clear`
to False; the service sets it to False itself on a sequence gap.

``apply_updates`` / ``apply_update`` take ``Decimal`` values: exact ``Decimal``
type and finiteness checks, then one dict operation for a changed level, plus
one ``bisect`` insertion or deletion in the price list when a level appears or
disappears; nothing of their own is allocated.

:meth:`OrderBook.apply_text_updates` is the stream's hot path: it takes the
exchange's decimal *strings* (any objects with ``side``, ``price`` and ``size``
text attributes, e.g. the protocol's decoded levels) and avoids the two
``Decimal`` constructions per level that dominate the cost of the typed path:

* a price string is looked up in a bounded per-book cache of validated prices
  (prices recur: the changes cluster near the top of the book), so its
  ``Decimal`` is built once;
* a size that is a plain decimal of ASCII digits (``"1.25"``, ``"0"``) is
  validated and tested for zero with ``str`` methods and stored **as its
  string**; the ``Decimal`` is built when the level is read (and stored back).
  Anything else (exponents, signs, spaces, ``NaN``, garbage) goes through the
  same ``Decimal`` checks as the typed path and raises
  :class:`~cryptoj.errors.InvalidValue` right there, so a malformed size is
  refused when it arrives, never at read time.

Every reading method returns ``Decimal`` sizes: a level stored as text reads
exactly as ``Decimal(text)``, which is what the typed path would have stored.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterable
from decimal import Decimal
from enum import StrEnum
from itertools import islice
from typing import Final, Protocol

from cryptoj.errors import InvalidValue
from cryptoj.model.money import ZERO, Side, parse_decimal

__all__ = ["PRICE_CACHE_SIZE", "BookSide", "Level", "OrderBook", "TextLevel"]

Level = tuple[Decimal, Decimal]
"""A price level: ``(price, size)``."""

PRICE_CACHE_SIZE: Final = 16_384
"""Most price strings one book remembers (text -> ``Decimal``); the cache is emptied when full."""


class TextLevel(Protocol):
    """One level change as the exchange's text: ``side`` ("bid" / "offer" / "ask"), ``price``, ``size``."""

    @property
    def side(self) -> str: ...

    @property
    def price(self) -> str: ...

    @property
    def size(self) -> str: ...


class BookSide(StrEnum):
    """A side of the book. Coinbase spells the ask side ``"offer"``."""

    BID = "bid"
    ASK = "ask"

    @classmethod
    def from_coinbase(cls, value: str) -> BookSide:
        """Map Coinbase's ``"bid"`` / ``"offer"`` (also ``"ask"``, any case) to a side."""
        side = _COINBASE_SIDES.get(value.lower()) if isinstance(value, str) else None
        if side is None:
            raise InvalidValue("book.side", value, "expected 'bid' or 'offer'")
        return side

    @classmethod
    def taken_by(cls, side: Side) -> BookSide:
        """The side a taker order of ``side`` consumes: a BUY takes the asks, a SELL hits the bids."""
        return cls.ASK if side is Side.BUY else cls.BID


_COINBASE_SIDES: Final[dict[str, BookSide]] = {"bid": BookSide.BID, "offer": BookSide.ASK, "ask": BookSide.ASK}


class OrderBook:
    """An L2 book: price levels with absolute sizes, one product.

    ``sequence`` is the sequence number of the last applied message when the
    caller passes one (it is informational: the book does not check gaps, the
    market-data service does and raises :class:`~cryptoj.errors.SequenceGap`).
    """

    __slots__ = ("_ask_prices", "_asks", "_bid_prices", "_bids", "_price_cache", "product_id", "sequence", "valid")

    def __init__(self, product_id: str = "") -> None:
        self.product_id = product_id
        # price -> size; a size is a Decimal, or (from apply_text_updates) its validated plain-decimal text
        self._bids: dict[Decimal, Decimal | str] = {}
        self._asks: dict[Decimal, Decimal | str] = {}
        self._price_cache: dict[str, Decimal] = {}  # validated price text -> Decimal (bounded)
        self._bid_prices: list[Decimal] = []  # ascending: best bid last
        self._ask_prices: list[Decimal] = []  # ascending: best ask first
        self.sequence: int | None = None
        self.valid: bool = False

    def __repr__(self) -> str:
        return (
            f"OrderBook({self.product_id!r}, bids={len(self._bids)}, asks={len(self._asks)}, "
            f"best_bid={self.best_bid()}, best_ask={self.best_ask()}, valid={self.valid}, sequence={self.sequence})"
        )

    # -- writing -----------------------------------------------------------

    def apply_snapshot(self, bids: Iterable[Level], asks: Iterable[Level], *, sequence: int | None = None) -> None:
        """Replace the whole book with ``bids`` and ``asks`` (``(price, size)`` pairs, any order).

        Zero-size entries are skipped; a later duplicate price overwrites an
        earlier one. A negative size or non-positive price raises
        :class:`~cryptoj.errors.InvalidValue` and leaves the book unchanged.
        Marks the book ``valid``.
        """
        new_bids = self._checked_levels(bids, BookSide.BID)
        new_asks = self._checked_levels(asks, BookSide.ASK)
        self._bids = new_bids
        self._asks = new_asks
        self._bid_prices = sorted(new_bids)
        self._ask_prices = sorted(new_asks)
        self.sequence = sequence
        self.valid = True

    def _checked_levels(self, levels: Iterable[Level], side: BookSide) -> dict[Decimal, Decimal | str]:
        result: dict[Decimal, Decimal | str] = {}
        for price, size in levels:
            self._check(side, price, size)
            if size:
                result[price] = size
            else:
                result.pop(price, None)
        return result

    def _check(self, side: BookSide, price: Decimal, size: Decimal) -> None:
        if not isinstance(price, Decimal) or not price.is_finite() or price <= ZERO:
            where = f"book {self.product_id or '?'} {side.value}"
            raise InvalidValue(f"{where}.price", price, "a positive finite Decimal is required")
        if not isinstance(size, Decimal) or not size.is_finite() or size < ZERO:
            where = f"book {self.product_id or '?'} {side.value}"
            raise InvalidValue(f"{where}.size@{price}", size, "a finite Decimal >= 0 is required")

    def _side(self, side: BookSide) -> tuple[dict[Decimal, Decimal | str], list[Decimal]]:
        if side is BookSide.BID:
            return self._bids, self._bid_prices
        if side is BookSide.ASK:
            return self._asks, self._ask_prices
        raise InvalidValue(f"book {self.product_id or '?'}.side", side, "expected BookSide.BID or BookSide.ASK")

    def apply_update(self, side: BookSide, price: Decimal, size: Decimal) -> None:
        """Set the absolute ``size`` at ``price`` on ``side``; zero removes the level.

        Removing an absent level is a no-op. A negative size, a non-positive
        price or a side that is not a :class:`BookSide` raises
        :class:`~cryptoj.errors.InvalidValue`.
        """
        sizes, prices = self._side(side)
        self._check(side, price, size)
        if size:
            if price not in sizes:
                insort(prices, price)
            sizes[price] = size
        elif sizes.pop(price, None) is not None:
            del prices[bisect_left(prices, price)]

    def apply_updates(self, updates: Iterable[tuple[BookSide, Decimal, Decimal]], *, sequence: int | None = None) -> int:
        """Apply many ``(side, price, size)`` updates in order; returns how many.

        On an invalid update the ones before it stay applied and the error is
        raised (the market-data service then resyncs from a snapshot).
        ``sequence``, when given, is recorded after all updates are applied.
        """
        bids, bid_prices = self._bids, self._bid_prices
        asks, ask_prices = self._asks, self._ask_prices
        bid, ask, dec, zero = BookSide.BID, BookSide.ASK, Decimal, ZERO
        count = 0
        for side, price, size in updates:
            if side is bid:
                sizes, prices = bids, bid_prices
            elif side is ask:
                sizes, prices = asks, ask_prices
            else:
                self._side(side)  # raises with a clear message
                raise AssertionError("unreachable: _side accepted a bad side")  # pragma: no cover
            if type(price) is dec and type(size) is dec and price.is_finite() and size.is_finite() and price > zero:
                if size > zero:
                    if price not in sizes:
                        insort(prices, price)
                    sizes[price] = size
                elif size == zero:
                    if sizes.pop(price, None) is not None:
                        del prices[bisect_left(prices, price)]
                else:
                    self._check(side, price, size)  # raises: negative size
            else:
                self.apply_update(side, price, size)  # Decimal subclasses and bad values: the checked path
            count += 1
        if sequence is not None:
            self.sequence = sequence
        return count

    def apply_text_updates(self, updates: Iterable[TextLevel], *, sequence: int | None = None) -> int:
        """Apply many level changes given as the exchange's text, in order; returns how many.

        Same meaning and checks as :meth:`apply_updates` (absolute sizes, ``"0"``
        removes, price > 0, size >= 0, finite), with the text read the way the
        typed path reads it (``Decimal(text)``; anything else through
        :func:`~cryptoj.model.money.parse_decimal`). A value that is not a
        number, or is out of range, raises :class:`~cryptoj.errors.InvalidValue`
        with the updates before it applied (the caller then resyncs).
        """
        bids, bid_prices = self._bids, self._bid_prices
        asks, ask_prices = self._asks, self._ask_prices
        cached = self._price_cache.get
        count = 0
        for level in updates:
            side = level.side
            if side == "bid":
                sizes, prices = bids, bid_prices
            elif side == "offer":
                sizes, prices = asks, ask_prices
            elif BookSide.from_coinbase(side) is BookSide.BID:  # raises InvalidValue for an unknown side
                sizes, prices = bids, bid_prices
            else:
                sizes, prices = asks, ask_prices
            price = cached(level.price)
            if price is None:
                price = self._text_price(level.price, sizes is bids)
            text = level.size
            size: Decimal | str | None
            if text == "0":
                size = None
            else:
                digits = text.replace(".", "", 1)
                if digits.isdigit() and digits.isascii():  # a plain decimal: valid, finite, >= 0
                    size = text if digits.strip("0") else None
                else:
                    size = self._text_size(text, price, sizes is bids)
            if size is None:
                if sizes.pop(price, None) is not None:
                    del prices[bisect_left(prices, price)]
            else:
                if price not in sizes:
                    insort(prices, price)
                sizes[price] = size
            count += 1
        if sequence is not None:
            self.sequence = sequence
        return count

    def _text_price(self, text: object, is_bid: bool) -> Decimal:
        """A price text not in the cache: read it as the typed path does, check it, remember it."""
        price = _text_decimal(text, "price")
        self._check(BookSide.BID if is_bid else BookSide.ASK, price, ZERO)
        cache = self._price_cache
        if len(cache) >= PRICE_CACHE_SIZE:
            cache.clear()
        if isinstance(text, str):
            cache[text] = price
        return price

    def _text_size(self, text: object, price: Decimal, is_bid: bool) -> Decimal | None:
        """A size text that is not a plain decimal: the typed path's reading; None for zero."""
        size = _text_decimal(text, "size")
        self._check(BookSide.BID if is_bid else BookSide.ASK, price, size)
        return size if size else None

    def clear(self) -> None:
        """Remove every level, forget the sequence and mark the book not valid."""
        self._bids = {}
        self._asks = {}
        self._bid_prices = []
        self._ask_prices = []
        self.sequence = None
        self.valid = False

    # -- reading -----------------------------------------------------------

    def __len__(self) -> int:
        """Total number of price levels on both sides."""
        return len(self._bids) + len(self._asks)

    @property
    def bid_count(self) -> int:
        """Number of bid levels."""
        return len(self._bids)

    @property
    def ask_count(self) -> int:
        """Number of ask levels."""
        return len(self._asks)

    def size_at(self, side: BookSide, price: Decimal) -> Decimal:
        """Size resting at ``price`` on ``side`` (zero when there is no level)."""
        levels = self._bids if side is BookSide.BID else self._asks
        if price not in levels:
            return ZERO
        return _size(levels, price)

    def best_bid(self) -> Level | None:
        """Highest bid ``(price, size)``, or None when there are no bids."""
        prices = self._bid_prices
        if not prices:
            return None
        price = prices[-1]
        size = self._bids[price]
        if isinstance(size, str):
            size = self._bids[price] = Decimal(size)
        return price, size

    def best_ask(self) -> Level | None:
        """Lowest ask ``(price, size)``, or None when there are no asks."""
        prices = self._ask_prices
        if not prices:
            return None
        price = prices[0]
        size = self._asks[price]
        if isinstance(size, str):
            size = self._asks[price] = Decimal(size)
        return price, size

    def mid(self) -> Decimal | None:
        """``(best bid + best ask) / 2``, or None unless both sides have a level."""
        if not self._bid_prices or not self._ask_prices:
            return None
        return (self._bid_prices[-1] + self._ask_prices[0]) / 2

    def spread(self) -> Decimal | None:
        """``best ask - best bid`` (negative or zero when crossed), or None unless both sides have a level."""
        if not self._bid_prices or not self._ask_prices:
            return None
        return self._ask_prices[0] - self._bid_prices[-1]

    def is_crossed(self) -> bool:
        """True when both sides exist and best bid >= best ask (crossed or locked)."""
        bid_prices, ask_prices = self._bid_prices, self._ask_prices
        return bool(bid_prices and ask_prices and bid_prices[-1] >= ask_prices[0])

    def bids(self, n: int | None = None) -> list[Level]:
        """Up to ``n`` bid levels (all when None), best (highest) first."""
        prices = reversed(self._bid_prices) if n is None else islice(reversed(self._bid_prices), max(n, 0))
        bids = self._bids
        return [(price, _size(bids, price)) for price in prices]

    def asks(self, n: int | None = None) -> list[Level]:
        """Up to ``n`` ask levels (all when None), best (lowest) first."""
        prices = self._ask_prices if n is None else self._ask_prices[: max(n, 0)]
        asks = self._asks
        return [(price, _size(asks, price)) for price in prices]

    def depth(self, n: int) -> tuple[list[Level], list[Level]]:
        """The top ``n`` levels of each side: ``(bids descending, asks ascending)``."""
        if n < 0:
            raise InvalidValue("book.depth.n", n, "must be >= 0")
        return self.bids(n), self.asks(n)

    def walk(self, side: Side, size: Decimal) -> tuple[Decimal, Decimal]:
        """Walk the book as a taker of ``side`` for up to ``size`` base.

        A BUY consumes asks from the lowest up, a SELL hits bids from the
        highest down. Returns ``(filled_size, notional)``; ``filled_size`` is
        less than ``size`` when the book is too thin.
        """
        if not isinstance(size, Decimal) or not size.is_finite() or size <= ZERO:
            raise InvalidValue("book.walk.size", size, "a positive finite Decimal is required")
        if side is Side.BUY:
            levels, prices = self._asks, iter(self._ask_prices)
        elif side is Side.SELL:
            levels, prices = self._bids, reversed(self._bid_prices)
        else:
            raise InvalidValue("book.walk.side", side, "expected Side.BUY or Side.SELL")
        remaining = size
        notional = ZERO
        for price in prices:
            level_size = _size(levels, price)
            take = level_size if level_size < remaining else remaining
            notional += take * price
            remaining -= take
            if remaining == ZERO:
                break
        return size - remaining, notional

    def vwap(self, side: Side, size: Decimal) -> Decimal | None:
        """Average price to fill ``size`` base as a taker of ``side``, walking the book.

        A BUY walks the asks, a SELL the bids. Returns **None when the book is
        too thin** to fill the whole ``size`` (use :meth:`walk` for a partial
        answer). The result is exact (not rounded).
        """
        filled, notional = self.walk(side, size)
        if filled < size:
            return None
        return notional / size


def _size(levels: dict[Decimal, Decimal | str], price: Decimal) -> Decimal:
    """The ``Decimal`` size at ``price`` (a level stored as text is converted once and stored back)."""
    size = levels[price]
    if isinstance(size, str):
        size = levels[price] = Decimal(size)
    return size


def _text_decimal(text: object, field: str) -> Decimal:
    """Read one number of a text update exactly as the typed path does (``Decimal(text)``, else parse_decimal)."""
    if type(text) is str:
        try:
            value = Decimal(text)
        except ArithmeticError:
            pass
        else:
            if value.is_finite() and value >= 0:
                return value
    return parse_decimal(text, field)
