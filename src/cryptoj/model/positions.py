"""Spot balances, positions and PnL.

A :class:`Portfolio` holds, per currency, an ``available`` amount and a
``hold`` (funds reserved by open orders), and per product a :class:`Position`.

Accounting conventions (average-cost method, fees in the quote currency):

* A **buy** of ``size`` at ``price`` with fee ``fee``: quote goes down by
  ``price·size + fee``, base goes up by ``size``. The position's
  ``avg_entry_price`` becomes the size-weighted average of the fill prices —
  **fees are not folded into the entry price**; the buy fee is booked at once
  as a realised cost (``realised_pnl -= fee``).
* A **sell** of ``size`` at ``price`` with fee ``fee``: base goes down by
  ``size``, quote goes up by ``price·size - fee``. It realises
  ``(price - avg_entry_price)·size - fee``; the average entry of what is left
  is unchanged. (The position stores the exact quote ``cost`` of its open
  quantity and derives ``avg_entry_price`` from it, so a full close realises
  exactly ``proceeds - cost - fees`` with no rounding.)
* So ``realised_pnl`` is net of every fee paid, ``fees_paid`` shows them
  separately, and at any set of prices
  ``equity(prices) - equity_at_start(prices) == realised + unrealised``
  for holdings that came from fills.
* Spot positions are never short. Selling more than the position's quantity
  (coins deposited, not bought through this portfolio) realises PnL only on
  the tracked quantity; the excess is treated as having cost basis equal to
  the sell price (no PnL) — the *balance* check still applies.
* **Balances never go negative**: a fill, hold or withdrawal that would need
  more than is there raises :class:`~cryptoj.errors.InvalidValue` and changes
  nothing.
* :meth:`Portfolio.apply_fill` is idempotent by ``trade_id``: the same trade
  applied twice counts once (the second call returns False).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal

from cryptoj.errors import InvalidValue
from cryptoj.model.instruments import Product
from cryptoj.model.money import ZERO, Side, fast_frozen_init
from cryptoj.model.orders import Fill

__all__ = ["Balance", "Portfolio", "PortfolioSnapshot", "Position"]


def _amount(value: Decimal, field_name: str) -> Decimal:
    if not isinstance(value, Decimal) or not value.is_finite():
        raise InvalidValue(field_name, value, "a finite Decimal is required")
    if value < ZERO:
        raise InvalidValue(field_name, value, "must not be negative")
    return value


@fast_frozen_init
@dataclass(frozen=True, slots=True)
class Balance:
    """One currency: ``available`` to trade and ``hold`` reserved by open orders."""

    currency: str
    available: Decimal = ZERO
    hold: Decimal = ZERO

    def __post_init__(self) -> None:
        _amount(self.available, f"balance {self.currency}.available")
        _amount(self.hold, f"balance {self.currency}.hold")

    @property
    def total(self) -> Decimal:
        return self.available + self.hold


_new_balance = object.__new__
_set_currency = Balance.__dict__["currency"].__set__  # the slot descriptors
_set_available = Balance.__dict__["available"].__set__
_set_hold = Balance.__dict__["hold"].__set__


def _checked_balance(currency: str, available: Decimal, hold: Decimal) -> Balance:
    """A Balance from amounts the portfolio has already checked (finite, not negative): no second validation."""
    balance = _new_balance(Balance)
    _set_currency(balance, currency)
    _set_available(balance, available)
    _set_hold(balance, hold)
    return balance


@fast_frozen_init
@dataclass(frozen=True, slots=True)
class Position:
    """A spot position in one product (long or flat)."""

    product_id: str
    base_currency: str
    quote_currency: str
    quantity: Decimal = ZERO
    cost: Decimal = ZERO
    realised_pnl: Decimal = ZERO
    fees_paid: Decimal = ZERO
    bought: Decimal = ZERO
    sold: Decimal = ZERO
    fill_count: int = 0

    @property
    def is_flat(self) -> bool:
        return self.quantity == ZERO

    @property
    def avg_entry_price(self) -> Decimal:
        """Average entry price in quote per base (fees excluded); zero when flat."""
        if self.quantity == ZERO:
            return ZERO
        return self.cost / self.quantity

    @property
    def cost_basis(self) -> Decimal:
        """What the open quantity cost in quote at ``avg_entry_price`` (fees excluded)."""
        return self.cost

    def unrealised_pnl(self, price: Decimal) -> Decimal:
        """``(price - avg_entry_price) · quantity``, computed as ``price · quantity - cost`` (zero when flat)."""
        if self.quantity == ZERO:
            return ZERO
        return price * self.quantity - self.cost

    def with_fill(self, side: Side, price: Decimal, size: Decimal, fee: Decimal) -> Position:
        """The position after one fill (see the module doc for the conventions).

        The position keeps the exact ``cost`` of its open quantity rather than
        a rounded average, so buys never lose precision; a partial sell removes
        ``cost · sold / quantity`` of it, a full close all of it.
        """
        # positional construction, not dataclasses.replace: this runs once per fill (backtests: thousands)
        if side is Side.BUY:
            return Position(
                self.product_id,
                self.base_currency,
                self.quote_currency,
                self.quantity + size,
                self.cost + price * size,
                self.realised_pnl - fee,
                self.fees_paid + fee,
                self.bought + size,
                self.sold,
                self.fill_count + 1,
            )
        tracked = min(size, self.quantity)
        quantity = self.quantity - tracked
        removed = self.cost if quantity == ZERO else self.cost * tracked / self.quantity
        return Position(
            self.product_id,
            self.base_currency,
            self.quote_currency,
            quantity,
            self.cost - removed,
            self.realised_pnl + price * tracked - removed - fee,
            self.fees_paid + fee,
            self.bought,
            self.sold + size,
            self.fill_count + 1,
        )


@dataclass(frozen=True, slots=True)
class PortfolioSnapshot:
    """An immutable copy of a portfolio's state."""

    balances: Mapping[str, Balance]
    positions: Mapping[str, Position]
    trade_count: int = 0

    def total(self, currency: str) -> Decimal:
        """Available + hold of ``currency`` (zero when unknown)."""
        balance = self.balances.get(currency)
        return balance.total if balance is not None else ZERO


class Portfolio:
    """Spot balances (with holds) and per-product positions, updated by fills.

    ``balances`` gives starting ``available`` amounts by currency.
    """

    __slots__ = ("_balances", "_positions", "_trade_ids")

    def __init__(self, balances: Mapping[str, Decimal] | None = None) -> None:
        self._balances: dict[str, Balance] = {}
        self._positions: dict[str, Position] = {}
        self._trade_ids: set[str] = set()
        for currency, amount in (balances or {}).items():
            self.set_balance(currency, amount)

    def __repr__(self) -> str:
        totals = ", ".join(f"{c}={b.total}" for c, b in sorted(self._balances.items()))
        return f"Portfolio({totals}; positions={len(self._positions)}, trades={len(self._trade_ids)})"

    # -- balances ------------------------------------------------------------

    def balance(self, currency: str) -> Balance:
        """The balance of ``currency`` (a zero balance when unknown)."""
        return self._balances.get(currency) or Balance(currency)

    def balances(self) -> dict[str, Balance]:
        """A copy of every balance, by currency."""
        return dict(self._balances)

    def set_balance(self, currency: str, available: Decimal, hold: Decimal = ZERO) -> None:
        """Overwrite a balance (reconciling with the exchange's accounts)."""
        if not currency:
            raise InvalidValue("balance.currency", currency, "required")
        self._balances[currency] = Balance(currency, available, hold)

    def deposit(self, currency: str, amount: Decimal) -> Balance:
        """Add ``amount`` to ``currency``'s available balance."""
        _amount(amount, f"deposit {currency}")
        return self._put(self.balance(currency), available=amount)

    def withdraw(self, currency: str, amount: Decimal) -> Balance:
        """Take ``amount`` from ``currency``'s available balance (never below zero)."""
        _amount(amount, f"withdraw {currency}")
        return self._put(self.balance(currency), available=-amount, what="withdraw")

    def hold(self, currency: str, amount: Decimal) -> Balance:
        """Reserve ``amount`` of ``currency``: available → hold."""
        _amount(amount, f"hold {currency}")
        return self._put(self.balance(currency), available=-amount, hold=amount, what="hold")

    def release(self, currency: str, amount: Decimal) -> Balance:
        """Release ``amount`` of a hold: hold → available."""
        _amount(amount, f"release {currency}")
        return self._put(self.balance(currency), available=amount, hold=-amount, what="release")

    def _put(self, balance: Balance, *, available: Decimal = ZERO, hold: Decimal = ZERO, what: str = "") -> Balance:
        new_available = balance.available + available
        new_hold = balance.hold + hold
        if new_available < ZERO:
            raise InvalidValue(
                f"balance {balance.currency}.available",
                balance.available,
                f"{what or 'change'} of {-available} would make it negative",
            )
        if new_hold < ZERO:
            raise InvalidValue(
                f"balance {balance.currency}.hold", balance.hold, f"{what or 'change'} of {-hold} is more than is held"
            )
        result = _checked_balance(balance.currency, new_available, new_hold)
        self._balances[balance.currency] = result
        return result

    # -- fills ----------------------------------------------------------------

    def position(self, product: Product | str) -> Position | None:
        """The position in ``product`` (a Product or a product id), or None if never traded."""
        product_id = product if isinstance(product, str) else product.product_id
        return self._positions.get(product_id)

    def positions(self) -> dict[str, Position]:
        """A copy of every position, by product id."""
        return dict(self._positions)

    def seen(self, trade_id: str) -> bool:
        """True when a fill with this trade id was already applied."""
        return trade_id in self._trade_ids

    def apply_fill(self, fill: Fill, product: Product, *, from_hold: bool = False, release: Decimal = ZERO) -> bool:
        """Apply one fill to balances and the product's position.

        Returns False (and changes nothing) when ``fill.trade_id`` was already
        applied. With ``from_hold`` the amount the fill spends (quote for a
        buy, base for a sell) is taken from the hold first and from available
        for any remainder. ``release`` first releases that much of the spent
        currency's hold back to available — the same as :meth:`release` before
        the fill (the release stands even when the fill then raises), in one step.
        Raises :class:`~cryptoj.errors.InvalidValue` when the fill is for another
        product or would make a balance negative.
        """
        trade_id = fill.trade_id
        if trade_id in self._trade_ids:
            return False
        if fill.product_id != product.product_id:
            raise InvalidValue(f"fill {trade_id}.product_id", fill.product_id, f"applied with product {product.product_id}")
        base, quote = product.base_currency, product.quote_currency
        side, price, size, fee = fill.side, fill.price, fill.size, fill.fee
        notional = price * size
        if side is Side.BUY:
            spend_currency, spend = quote, notional + fee
            gain_currency, gain = base, size
        else:
            spend_currency, spend = base, size
            gain_currency, gain = quote, notional - fee
        balances = self._balances
        balance = balances.get(spend_currency) or Balance(spend_currency)
        available, held = balance.available, balance.hold
        if release:  # as release() checks it; the released amounts are stored only with the fill or its error
            _amount(release, f"release {spend_currency}")
            if held < release:
                raise InvalidValue(f"balance {spend_currency}.hold", held, f"release of {release} is more than is held")
            available, held = available + release, held - release
        # the debit (from the hold first with from_hold), nothing stored until every check passed
        from_held = min(spend, held) if from_hold else ZERO
        from_available = spend - from_held
        if from_available > available:
            if release:
                balances[spend_currency] = _checked_balance(spend_currency, available, held)
            source = "hold + available" if from_hold else "available"
            raise InvalidValue(
                f"fill {trade_id}.size",
                spend,
                f"needs {spend} {spend_currency} but only {held + available if from_hold else available}"
                f" {spend_currency} is {source}; spot balances cannot go negative",
            )
        debited = _checked_balance(spend_currency, available - from_available, held - from_held)
        credited = debited if gain_currency == spend_currency else balances.get(gain_currency) or Balance(gain_currency)
        gained = credited.available + gain
        if gained < ZERO:  # only when a sell's fee is larger than its proceeds
            if release:
                balances[spend_currency] = _checked_balance(spend_currency, available, held)
            raise InvalidValue(f"fill {trade_id}.fee", fee, f"exceeds the proceeds and the available {gain_currency} balance")
        positions = self._positions
        position = positions.get(product.product_id) or Position(product.product_id, base, quote)
        positions[product.product_id] = position.with_fill(side, price, size, fee)
        balances[spend_currency] = debited
        balances[gain_currency] = _checked_balance(gain_currency, gained, credited.hold)
        self._trade_ids.add(trade_id)
        return True

    def apply_fills(self, fills: Iterable[Fill], products: Mapping[str, Product]) -> int:
        """Apply many fills; returns how many were new. A fill for an unknown product raises."""
        applied = 0
        for fill in fills:
            product = products.get(fill.product_id)
            if product is None:
                raise InvalidValue(f"fill {fill.trade_id}.product_id", fill.product_id, "no such product given")
            applied += self.apply_fill(fill, product)
        return applied

    # -- valuation -------------------------------------------------------------

    @property
    def realised_pnl(self) -> Decimal:
        """Sum of realised PnL (net of fees) over all positions, in their quote currencies."""
        return sum((p.realised_pnl for p in self._positions.values()), ZERO)

    @property
    def fees_paid(self) -> Decimal:
        """Sum of fees over all positions, in their quote currencies."""
        return sum((p.fees_paid for p in self._positions.values()), ZERO)

    def unrealised_pnl(self, prices: Mapping[str, Decimal]) -> Decimal:
        """Sum of unrealised PnL of every open position, valued at ``prices`` (by product id).

        A non-flat position without a price raises :class:`~cryptoj.errors.InvalidValue`.
        """
        total = ZERO
        for product_id, position in self._positions.items():
            if position.is_flat:
                continue
            price = prices.get(product_id)
            if price is None:
                raise InvalidValue("prices", product_id, "no price for an open position")
            total += position.unrealised_pnl(price)
        return total

    def value_of(self, currency: str, amount: Decimal, prices: Mapping[str, Decimal], quote: str) -> Decimal:
        """``amount`` of ``currency`` in ``quote``, using ``prices`` keyed by product id.

        Looks for ``CUR-QUOTE`` (multiply) then ``QUOTE-CUR`` (divide); raises
        :class:`~cryptoj.errors.InvalidValue` when neither price is given.
        """
        if currency == quote or amount == ZERO:
            return amount
        direct = prices.get(f"{currency}-{quote}")
        if direct is not None:
            return amount * direct
        inverse = prices.get(f"{quote}-{currency}")
        if inverse is not None and inverse > ZERO:
            return amount / inverse
        raise InvalidValue("prices", currency, f"no price to value {currency} in {quote} (need {currency}-{quote})")

    def equity(self, prices: Mapping[str, Decimal], quote: str) -> Decimal:
        """Total value (available + hold of every currency) in ``quote`` at ``prices``."""
        return sum((self.value_of(c, b.total, prices, quote) for c, b in self._balances.items()), ZERO)

    def snapshot(self) -> PortfolioSnapshot:
        """An immutable copy of the balances and positions."""
        return PortfolioSnapshot(dict(self._balances), dict(self._positions), len(self._trade_ids))
