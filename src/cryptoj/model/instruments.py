"""Tradable products and their rules (increments, size limits, status flags)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from cryptoj.errors import InvalidValue
from cryptoj.model.money import Side, is_on_increment, parse_decimal, parse_optional_decimal, round_price, round_size

__all__ = ["Product", "ProductStatus"]


class ProductStatus:
    """Reason codes for product-rule violations (Coinbase's spelling where one exists)."""

    TRADING_DISABLED = "TRADING_DISABLED"
    CANCEL_ONLY = "CANCEL_ONLY"
    LIMIT_ONLY = "LIMIT_ONLY"
    POST_ONLY = "POST_ONLY"
    INVALID_SIZE_PRECISION = "INVALID_SIZE_PRECISION"
    INVALID_PRICE_PRECISION = "INVALID_PRICE_PRECISION"
    ORDER_SIZE_TOO_SMALL = "ORDER_SIZE_TOO_SMALL"  # Coinbase: preview_failure_reason PREVIEW_INVALID_BASE_SIZE_TOO_SMALL
    ORDER_SIZE_TOO_LARGE = "ORDER_SIZE_TOO_LARGE"
    QUOTE_SIZE_TOO_SMALL = "QUOTE_SIZE_TOO_SMALL"
    QUOTE_SIZE_TOO_LARGE = "QUOTE_SIZE_TOO_LARGE"


@dataclass(frozen=True, slots=True)
class Product:
    """A spot product such as ``BTC-USD`` and the venue's rules for it."""

    product_id: str
    base_currency: str
    quote_currency: str
    base_increment: Decimal
    quote_increment: Decimal
    price_increment: Decimal
    base_min_size: Decimal
    base_max_size: Decimal
    quote_min_size: Decimal
    quote_max_size: Decimal
    trading_disabled: bool = False
    cancel_only: bool = False
    limit_only: bool = False
    post_only: bool = False
    status: str = "online"

    def __post_init__(self) -> None:
        for name in ("base_increment", "quote_increment", "price_increment"):
            value = getattr(self, name)
            if value <= 0:
                raise InvalidValue(f"{self.product_id}.{name}", value, "increment must be positive")
        if self.base_min_size > self.base_max_size:
            raise InvalidValue(f"{self.product_id}.base_min_size", self.base_min_size, "above base_max_size")
        if self.quote_min_size > self.quote_max_size:
            raise InvalidValue(f"{self.product_id}.quote_min_size", self.quote_min_size, "above quote_max_size")

    # -- rounding: delegates to money, the one place that rounds ---------

    def round_size(self, size: Decimal) -> Decimal:
        """Base size rounded down to ``base_increment``."""
        return round_size(size, self.base_increment)

    def round_quote_size(self, quote_size: Decimal) -> Decimal:
        """Quote size rounded down to ``quote_increment``."""
        return round_size(quote_size, self.quote_increment)

    def round_price(self, price: Decimal, side: Side) -> Decimal:
        """Price rounded to ``price_increment`` toward the passive side."""
        return round_price(price, self.price_increment, side)

    # -- validation -------------------------------------------------------

    def size_problem(self, base_size: Decimal) -> str | None:
        """Reason code if ``base_size`` breaks the product's size rules, else None."""
        if not is_on_increment(base_size, self.base_increment):
            return ProductStatus.INVALID_SIZE_PRECISION
        if base_size < self.base_min_size or base_size <= 0:
            return ProductStatus.ORDER_SIZE_TOO_SMALL
        if base_size > self.base_max_size:
            return ProductStatus.ORDER_SIZE_TOO_LARGE
        return None

    def quote_size_problem(self, quote_size: Decimal) -> str | None:
        """Reason code if a quote-denominated size breaks the product's rules, else None."""
        if not is_on_increment(quote_size, self.quote_increment):
            return ProductStatus.INVALID_SIZE_PRECISION
        if quote_size < self.quote_min_size or quote_size <= 0:
            return ProductStatus.QUOTE_SIZE_TOO_SMALL
        if quote_size > self.quote_max_size:
            return ProductStatus.QUOTE_SIZE_TOO_LARGE
        return None

    def price_problem(self, price: Decimal) -> str | None:
        """Reason code if ``price`` is off the price increment or not positive, else None."""
        if price <= 0 or not is_on_increment(price, self.price_increment):
            return ProductStatus.INVALID_PRICE_PRECISION
        return None

    def status_problem(self, *, is_market: bool, post_only: bool) -> str | None:
        """Reason code if the product's status flags forbid a new order of this kind."""
        if self.trading_disabled:
            return ProductStatus.TRADING_DISABLED
        if self.cancel_only:
            return ProductStatus.CANCEL_ONLY
        if self.limit_only and is_market:
            return ProductStatus.LIMIT_ONLY
        if self.post_only and (is_market or not post_only):
            return ProductStatus.POST_ONLY
        return None

    @classmethod
    def from_coinbase(cls, data: Mapping[str, object]) -> Product:
        """Build from a Coinbase ``/products`` record (strings for every number)."""
        pid = str(data.get("product_id", ""))
        if not pid:
            raise InvalidValue("product.product_id", data.get("product_id"), "missing product_id")

        def dec(name: str, default: str | None = None) -> Decimal:
            raw = data.get(name, default)
            value = parse_optional_decimal(raw, f"{pid}.{name}")
            if value is None:
                if default is None:
                    raise InvalidValue(f"{pid}.{name}", raw, "missing")
                return parse_decimal(default, f"{pid}.{name}")
            return value

        quote_increment = dec("quote_increment")
        return cls(
            product_id=pid,
            base_currency=str(data.get("base_currency_id") or data.get("base_display_symbol") or pid.split("-")[0]),
            quote_currency=str(data.get("quote_currency_id") or data.get("quote_display_symbol") or pid.split("-")[-1]),
            base_increment=dec("base_increment"),
            quote_increment=quote_increment,
            price_increment=dec("price_increment", str(quote_increment)),
            base_min_size=dec("base_min_size", "0"),
            base_max_size=dec("base_max_size", "1e18"),
            quote_min_size=dec("quote_min_size", "0"),
            quote_max_size=dec("quote_max_size", "1e18"),
            trading_disabled=bool(data.get("trading_disabled", False)),
            cancel_only=bool(data.get("cancel_only", False)),
            limit_only=bool(data.get("limit_only", False)),
            post_only=bool(data.get("post_only", False)),
            status=str(data.get("status", "online")),
        )
