"""Level-2 order book for one product.

Prices are held as **exact scaled integers**: a price ``p`` is the key
``p * 10**scale``, where ``scale`` is the most decimal places seen so far in this
book (it only grows; the keys are rescaled, once, when a finer price arrives).
Integer keys hash and compare several times faster than ``Decimal`` ones, and
the hot path below spends most of its time on exactly that. The ``Decimal`` of
every key is kept (``price_of``), so everything a reader gets is the exact
``Decimal`` the feed sent (a value-equal one: ``100.0`` and ``100.00`` are one
level).

Each side is a ``dict`` key → size plus a plain ``list`` of its keys kept sorted
ascending with :mod:`bisect` (both C code: a book side holds hundreds to a few
thousand levels, where inserting into a flat list beats a tree or a
``SortedDict``, whose bookkeeping runs in Python). Ask keys are *negated*, so on
both sides the best level is the **last** key and the changes, which cluster
near the top, insert and delete near the end of the list (little memory moved).
A level holds the absolute size resting at that price (Coinbase's
``new_quantity``); a size of zero removes the level, and removing a level that
is not there is harmless (Coinbase sends such removals routinely).

Invariants kept by every method:

* no level has a size of zero or below;
* prices are strictly positive;
* ``depth()`` returns bids best-first (descending) and asks best-first (ascending).

The book itself does not refuse a crossed state (best bid >= best ask): it
records what the feed says and :meth:`OrderBook.is_crossed` reports it, so the
market-data service can decide to resync. ``valid`` is the service's flag:
:meth:`OrderBook.apply_snapshot` sets it to True and :meth:`OrderBook.clear`
to False; the service sets it to False itself on a sequence gap.

``apply_updates`` / ``apply_update`` take ``Decimal`` values, with exact
``Decimal`` type and finiteness checks.

:meth:`OrderBook.apply_text_updates` is the stream's hot path: it takes the
exchange's decimal *strings* (any objects with ``side``, ``price`` and ``size``
text attributes, e.g. the protocol's decoded levels) and avoids the two
``Decimal`` constructions per level that dominate the cost of the typed path:

* a price string is looked up in a bounded per-book, per-side cache of
  validated prices (prices recur: the changes cluster near the top of the
  book), so its ``Decimal`` and key are computed once;
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
from collections.abc import Iterable, Sequence
from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, Context, Decimal
from enum import StrEnum
from itertools import islice
from typing import Final, Protocol

from cryptoj.errors import InvalidValue
from cryptoj.model.money import ZERO, Side, parse_decimal

__all__ = ["MAX_PRICE_EXPONENT", "MAX_PRICE_PLACES", "PRICE_CACHE_SIZE", "BookSide", "Level", "OrderBook", "TextLevel"]

Level = tuple[Decimal, Decimal]
"""A price level: ``(price, size)``."""

PRICE_CACHE_SIZE: Final = 16_384
"""Most price strings one book side remembers (text -> key); the cache is emptied when full."""

MAX_PRICE_PLACES: Final = 30
"""Most decimal places a price may have (the integer keys are ``price * 10**places``)."""

MAX_PRICE_EXPONENT: Final = 30
"""Prices must be below ``10**(MAX_PRICE_EXPONENT + 1)``: a feed's ``1E+999999999`` must not become a huge key."""

_EXACT: Final = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN)


def _in_key_range(price: Decimal) -> bool:
    """True for a finite price the book can key exactly (see MAX_PRICE_PLACES, MAX_PRICE_EXPONENT)."""
    if price.adjusted() > MAX_PRICE_EXPONENT:
        return False
    exponent = price.as_tuple().exponent
    assert isinstance(exponent, int)  # finite
    return exponent >= -MAX_PRICE_PLACES or price.normalize(_EXACT).as_tuple().exponent >= -MAX_PRICE_PLACES  # type: ignore[operator]


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

    __slots__ = (
        "_ask_keys",
        "_ask_text",
        "_asks",
        "_bid_keys",
        "_bid_text",
        "_bids",
        "_dec_keys",
        "_price_of",
        "_scale",
        "product_id",
        "sequence",
        "valid",
    )

    def __init__(self, product_id: str = "") -> None:
        self.product_id = product_id
        self._scale = 0  # key = price * 10**scale (bids), -(price * 10**scale) (asks)
        # key -> size; a size is a Decimal, or (from apply_text_updates) its validated plain-decimal text
        self._bids: dict[int, Decimal | str] = {}
        self._asks: dict[int, Decimal | str] = {}
        self._bid_keys: list[int] = []  # ascending: best bid last
        self._ask_keys: list[int] = []  # ascending negated prices: best (lowest) ask last
        self._price_of: dict[int, Decimal] = {}  # positive key -> its Decimal price (every key in the book or a cache)
        self._dec_keys: dict[Decimal, int] = {}  # Decimal price -> positive key, for the typed path (bounded)
        self._bid_text: dict[str, int] = {}  # validated price text -> bid key (bounded)
        self._ask_text: dict[str, int] = {}  # validated price text -> ask key (bounded)
        self.sequence: int | None = None
        self.valid: bool = False

    def __repr__(self) -> str:
        return (
            f"OrderBook({self.product_id!r}, bids={len(self._bids)}, asks={len(self._asks)}, "
            f"best_bid={self.best_bid()}, best_ask={self.best_ask()}, valid={self.valid}, sequence={self.sequence})"
        )

    # -- keys --------------------------------------------------------------------

    def _key(self, price: Decimal) -> int:
        """The (positive) key of a checked price, rescaling the book first if the price is finer than ``scale``."""
        key = self._find_key(price)
        if key is None:
            exponent = price.normalize(_EXACT).as_tuple().exponent
            assert isinstance(exponent, int)  # a finite price, range checked by _check
            self._rescale(-exponent)
            key = self._find_key(price)
            assert key is not None
        cache = self._dec_keys
        if price not in cache:
            if len(cache) >= PRICE_CACHE_SIZE:
                cache.clear()
            cache[price] = key
        price_of = self._price_of
        if key not in price_of:
            price_of[key] = price
        return key

    def _find_key(self, price: Decimal) -> int | None:
        """The key of a finite ``price`` at the current scale, or None if it has more decimal places (or is out of range)."""
        key = self._dec_keys.get(price)
        if key is not None:
            return key
        if not _in_key_range(price):
            return None
        scaled = price.scaleb(self._scale, _EXACT)
        if scaled != scaled.to_integral_value(context=_EXACT):
            return None
        return int(scaled)

    def _rescale(self, scale: int) -> None:
        """Multiply every key by ``10**(scale - self.scale)``, in place (the hot loop holds references)."""
        factor = 10 ** (scale - self._scale)
        for levels in (self._bids, self._asks):
            items = list(levels.items())
            levels.clear()
            levels.update((key * factor, size) for key, size in items)
        for keys in (self._bid_keys, self._ask_keys):
            keys[:] = [key * factor for key in keys]
        prices = list(self._price_of.items())
        self._price_of.clear()
        self._price_of.update((key * factor, price) for key, price in prices)
        for cache in (self._bid_text, self._ask_text):
            for text, key in cache.items():
                cache[text] = key * factor
        dec_keys = self._dec_keys
        for price, key in dec_keys.items():
            dec_keys[price] = key * factor
        self._scale = scale

    def _trim_prices(self) -> None:
        """Keep the price of every key still in the book or a cache (bounds ``price_of``)."""
        keep = {*self._bids, *(-k for k in self._asks), *self._bid_text.values(), *(-k for k in self._ask_text.values())}
        price_of = self._price_of
        for key in [k for k in price_of if k not in keep]:
            del price_of[key]

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
        self.clear()
        scale = 0
        for price in (*new_bids, *new_asks):
            exponent = price.normalize(_EXACT).as_tuple().exponent
            assert isinstance(exponent, int)  # checked finite
            scale = max(scale, -exponent)
        self._scale = scale  # fine enough for every price: _key will not rescale below
        key = self._key
        self._bids = {key(price): size for price, size in new_bids.items()}
        self._asks = {-key(price): size for price, size in new_asks.items()}
        self._bid_keys = sorted(self._bids)
        self._ask_keys = sorted(self._asks)
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
        if price not in self._dec_keys and not _in_key_range(price):
            where = f"book {self.product_id or '?'} {side.value}"
            reason = f"at most {MAX_PRICE_PLACES} decimal places and below 1E+{MAX_PRICE_EXPONENT + 1} are supported"
            raise InvalidValue(f"{where}.price", price, reason)
        if not isinstance(size, Decimal) or not size.is_finite() or size < ZERO:
            where = f"book {self.product_id or '?'} {side.value}"
            raise InvalidValue(f"{where}.size@{price}", size, "a finite Decimal >= 0 is required")

    def apply_update(self, side: BookSide, price: Decimal, size: Decimal) -> None:
        """Set the absolute ``size`` at ``price`` on ``side``; zero removes the level.

        Removing an absent level is a no-op. A negative size, a non-positive
        price or a side that is not a :class:`BookSide` raises
        :class:`~cryptoj.errors.InvalidValue`.
        """
        if side is not BookSide.BID and side is not BookSide.ASK:
            raise InvalidValue(f"book {self.product_id or '?'}.side", side, "expected BookSide.BID or BookSide.ASK")
        self._check(side, price, size)
        self._set(side is BookSide.BID, price, size)

    def _set(self, is_bid: bool, price: Decimal, size: Decimal) -> None:
        """Set a checked level (Decimal values)."""
        if size:
            key = self._key(price)
            if is_bid:
                levels, keys = self._bids, self._bid_keys
            else:
                levels, keys, key = self._asks, self._ask_keys, -key
            if key not in levels:
                insort(keys, key)
                self._price_of[abs(key)] = price
                if len(self._price_of) > 2 * PRICE_CACHE_SIZE + len(self._bids) + len(self._asks):
                    self._trim_prices()
            levels[key] = size
        else:
            found = self._find_key(price)
            if found is None:
                return  # finer than every price in the book: not there
            if is_bid:
                levels, keys, key = self._bids, self._bid_keys, found
            else:
                levels, keys, key = self._asks, self._ask_keys, -found
            if levels.pop(key, None) is not None:
                del keys[bisect_left(keys, key)]

    def apply_updates(self, updates: Iterable[tuple[BookSide, Decimal, Decimal]], *, sequence: int | None = None) -> int:
        """Apply many ``(side, price, size)`` updates in order; returns how many.

        On an invalid update the ones before it stay applied and the error is
        raised (the market-data service then resyncs from a snapshot).
        ``sequence``, when given, is recorded after all updates are applied.
        """
        count = 0
        for side, price, size in updates:
            self.apply_update(side, price, size)
            count += 1
        if sequence is not None:
            self.sequence = sequence
        return count

    def apply_text_updates(self, updates: Sequence[TextLevel], *, sequence: int | None = None) -> int:
        """Apply many level changes given as the exchange's text, in order; returns how many.

        Same meaning and checks as :meth:`apply_updates` (absolute sizes, ``"0"``
        removes, price > 0, size >= 0, finite), with the text read the way the
        typed path reads it (``Decimal(text)``; anything else through
        :func:`~cryptoj.model.money.parse_decimal`). A value that is not a
        number, or is out of range, raises :class:`~cryptoj.errors.InvalidValue`
        with the updates before it applied (the caller then resyncs).
        """
        bids, bid_keys, bid_text = self._bids, self._bid_keys, self._bid_text
        asks, ask_keys, ask_text = self._asks, self._ask_keys, self._ask_text
        for level in updates:
            side = level.side
            if side == "bid":
                levels = bids
                keys = bid_keys
                key = bid_text.get(level.price)
            elif side == "offer":
                levels = asks
                keys = ask_keys
                key = ask_text.get(level.price)
            else:  # other spellings ("ask", "BID"); InvalidValue for an unknown side
                is_bid = BookSide.from_coinbase(side) is BookSide.BID
                levels, keys = (bids, bid_keys) if is_bid else (asks, ask_keys)
                key = (bid_text if is_bid else ask_text).get(level.price)
            if key is None:
                key = self._text_key(level.price, levels is bids)  # may rescale: in place, the locals stay good
            text = level.size
            if text != "0":
                digits = text.replace(".", "", 1)
                if digits.isdigit() and digits.isascii() and digits.strip("0"):  # a plain decimal, > 0: keep the text
                    if key not in levels:
                        insort(keys, key)
                    levels[key] = text
                    continue
                size = self._text_size(text, abs(key), levels is bids)  # the typed path's reading; None for zero
                if size is not None:
                    if key not in levels:
                        insort(keys, key)
                    levels[key] = size
                    continue
            if levels.pop(key, None) is not None:  # zero: remove the level
                del keys[bisect_left(keys, key)]
        if sequence is not None:
            self.sequence = sequence
        return len(updates)

    def _text_key(self, text: object, is_bid: bool) -> int:
        """A price text not in the cache: read it as the typed path does, check it, remember its key."""
        price = _text_decimal(text, "price")
        self._check(BookSide.BID if is_bid else BookSide.ASK, price, ZERO)
        cache = self._bid_text if is_bid else self._ask_text
        if len(cache) >= PRICE_CACHE_SIZE:
            cache.clear()
            self._trim_prices()
        key = self._key(price)
        if not is_bid:
            key = -key
        if isinstance(text, str):
            cache[text] = key
        return key

    def _text_size(self, text: object, key: int, is_bid: bool) -> Decimal | None:
        """A size text that is not a plain decimal: the typed path's reading; None for zero."""
        size = _text_decimal(text, "size")
        self._check(BookSide.BID if is_bid else BookSide.ASK, self._price_of[key], size)
        return size if size else None

    def clear(self) -> None:
        """Remove every level, forget the sequence and mark the book not valid."""
        self._bids = {}
        self._asks = {}
        self._bid_keys = []
        self._ask_keys = []
        self._price_of = {}
        self._bid_text = {}
        self._ask_text = {}
        self._dec_keys = {}
        self._scale = 0
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
        if not isinstance(price, Decimal) or not price.is_finite():
            return ZERO
        key = self._find_key(price)
        if key is None:
            return ZERO
        levels = self._bids if side is BookSide.BID else self._asks
        if side is not BookSide.BID:
            key = -key
        if key not in levels:
            return ZERO
        return _size(levels, key)

    def best_bid(self) -> Level | None:
        """Highest bid ``(price, size)``, or None when there are no bids."""
        keys = self._bid_keys
        if not keys:
            return None
        key = keys[-1]
        size = self._bids[key]
        if isinstance(size, str):
            size = self._bids[key] = Decimal(size)
        return self._price_of[key], size

    def best_ask(self) -> Level | None:
        """Lowest ask ``(price, size)``, or None when there are no asks."""
        keys = self._ask_keys
        if not keys:
            return None
        key = keys[-1]
        size = self._asks[key]
        if isinstance(size, str):
            size = self._asks[key] = Decimal(size)
        return self._price_of[-key], size

    def mid(self) -> Decimal | None:
        """``(best bid + best ask) / 2``, or None unless both sides have a level."""
        if not self._bid_keys or not self._ask_keys:
            return None
        return (self._price_of[self._bid_keys[-1]] + self._price_of[-self._ask_keys[-1]]) / 2

    def spread(self) -> Decimal | None:
        """``best ask - best bid`` (negative or zero when crossed), or None unless both sides have a level."""
        if not self._bid_keys or not self._ask_keys:
            return None
        return self._price_of[-self._ask_keys[-1]] - self._price_of[self._bid_keys[-1]]

    def is_crossed(self) -> bool:
        """True when both sides exist and best bid >= best ask (crossed or locked)."""
        bid_keys, ask_keys = self._bid_keys, self._ask_keys
        return bool(bid_keys and ask_keys and bid_keys[-1] >= -ask_keys[-1])

    def bids(self, n: int | None = None) -> list[Level]:
        """Up to ``n`` bid levels (all when None), best (highest) first."""
        keys = reversed(self._bid_keys) if n is None else islice(reversed(self._bid_keys), max(n, 0))
        bids, price_of = self._bids, self._price_of
        return [(price_of[key], _size(bids, key)) for key in keys]

    def asks(self, n: int | None = None) -> list[Level]:
        """Up to ``n`` ask levels (all when None), best (lowest) first."""
        keys = reversed(self._ask_keys) if n is None else islice(reversed(self._ask_keys), max(n, 0))
        asks, price_of = self._asks, self._price_of
        return [(price_of[-key], _size(asks, key)) for key in keys]

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
            levels, keys, sign = self._asks, reversed(self._ask_keys), -1
        elif side is Side.SELL:
            levels, keys, sign = self._bids, reversed(self._bid_keys), 1
        else:
            raise InvalidValue("book.walk.side", side, "expected Side.BUY or Side.SELL")
        price_of = self._price_of
        remaining = size
        notional = ZERO
        for key in keys:
            level_size = _size(levels, key)
            take = level_size if level_size < remaining else remaining
            notional += take * price_of[sign * key]
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


def _size(levels: dict[int, Decimal | str], key: int) -> Decimal:
    """The ``Decimal`` size at ``key`` (a level stored as text is converted once and stored back)."""
    size = levels[key]
    if isinstance(size, str):
        size = levels[key] = Decimal(size)
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
