"""Unit tests for Product: rules, rounding and parsing Coinbase product records."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cryptoj.errors import InvalidValue
from cryptoj.model.instruments import Product, ProductStatus
from cryptoj.model.money import Side, is_on_increment

pytestmark = pytest.mark.unit

D = Decimal


def product(**overrides: object) -> Product:
    fields: dict[str, object] = {
        "product_id": "BTC-USD",
        "base_currency": "BTC",
        "quote_currency": "USD",
        "base_increment": D("0.00000001"),
        "quote_increment": D("0.01"),
        "price_increment": D("0.01"),
        "base_min_size": D("0.0001"),
        "base_max_size": D("3400"),
        "quote_min_size": D("1"),
        "quote_max_size": D("150000000"),
    }
    fields.update(overrides)
    return Product(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"base_increment": D("0")}, r"BTC-USD\.base_increment"),
        ({"quote_increment": D("-0.01")}, r"BTC-USD\.quote_increment"),
        ({"price_increment": D("0")}, r"BTC-USD\.price_increment"),
        ({"base_min_size": D("5000")}, "above base_max_size"),
        ({"quote_min_size": D("2e8")}, "above quote_max_size"),
    ],
)
def test_product_validation(overrides: dict, match: str) -> None:
    with pytest.raises(InvalidValue, match=match):
        product(**overrides)


def test_rounding_delegates_to_money() -> None:
    p = product()
    assert p.round_size(D("0.123456789")) == D("0.12345678")
    assert p.round_quote_size(D("10.129")) == D("10.12")
    assert p.round_price(D("100.005"), Side.BUY) == D("100.00")
    assert p.round_price(D("100.005"), Side.SELL) == D("100.01")


@pytest.mark.parametrize(
    ("size", "problem"),
    [
        (D("0.5"), None),
        (D("0.000000001"), ProductStatus.INVALID_SIZE_PRECISION),
        (D("0.00001"), ProductStatus.ORDER_SIZE_TOO_SMALL),
        (D("0"), ProductStatus.ORDER_SIZE_TOO_SMALL),
        (D("3400"), None),
        (D("3400.00000001"), ProductStatus.ORDER_SIZE_TOO_LARGE),
    ],
)
def test_size_problem(size: Decimal, problem: str | None) -> None:
    assert product().size_problem(size) == problem


def test_size_problem_zero_with_zero_minimum() -> None:
    assert product(base_min_size=D("0")).size_problem(D("0")) == ProductStatus.ORDER_SIZE_TOO_SMALL


@pytest.mark.parametrize(
    ("quote", "problem"),
    [
        (D("10"), None),
        (D("10.001"), ProductStatus.INVALID_SIZE_PRECISION),
        (D("0.99"), ProductStatus.QUOTE_SIZE_TOO_SMALL),
        (D("150000000.01"), ProductStatus.QUOTE_SIZE_TOO_LARGE),
    ],
)
def test_quote_size_problem(quote: Decimal, problem: str | None) -> None:
    assert product().quote_size_problem(quote) == problem


def test_quote_size_problem_zero() -> None:
    assert product(quote_min_size=D("0")).quote_size_problem(D("0")) == ProductStatus.QUOTE_SIZE_TOO_SMALL


@pytest.mark.parametrize(
    ("price", "problem"),
    [
        (D("100.01"), None),
        (D("100.001"), ProductStatus.INVALID_PRICE_PRECISION),
        (D("0"), ProductStatus.INVALID_PRICE_PRECISION),
        (D("-1"), ProductStatus.INVALID_PRICE_PRECISION),
    ],
)
def test_price_problem(price: Decimal, problem: str | None) -> None:
    assert product().price_problem(price) == problem


@pytest.mark.parametrize(
    ("flags", "is_market", "post_only", "problem"),
    [
        ({}, True, False, None),
        ({}, False, True, None),
        ({"trading_disabled": True}, False, True, ProductStatus.TRADING_DISABLED),
        ({"cancel_only": True}, False, False, ProductStatus.CANCEL_ONLY),
        ({"limit_only": True}, True, False, ProductStatus.LIMIT_ONLY),
        ({"limit_only": True}, False, False, None),
        ({"post_only": True}, True, False, ProductStatus.POST_ONLY),
        ({"post_only": True}, False, False, ProductStatus.POST_ONLY),
        ({"post_only": True}, False, True, None),
    ],
)
def test_status_problem(flags: dict, is_market: bool, post_only: bool, problem: str | None) -> None:
    assert product(**flags).status_problem(is_market=is_market, post_only=post_only) == problem


def test_from_coinbase_product_fixture(coinbase_fixtures: Path) -> None:
    data = json.loads((coinbase_fixtures / "http_product.json").read_text())
    p = Product.from_coinbase(data)
    assert p.product_id == "BTC-USD"
    assert (p.base_currency, p.quote_currency) == ("BTC", "USD")
    assert p.base_increment == D(data["base_increment"])
    assert p.price_increment == D(data["price_increment"])
    assert p.base_max_size == D(data["base_max_size"])
    assert p.quote_min_size == D(data["quote_min_size"])
    assert not (p.trading_disabled or p.cancel_only or p.limit_only or p.post_only)
    assert p.status == "online"


def test_from_coinbase_products_list_fixture(coinbase_fixtures: Path) -> None:
    data = json.loads((coinbase_fixtures / "http_products.json").read_text())
    products = [Product.from_coinbase(rec) for rec in data["products"]]
    assert {p.product_id for p in products} == {rec["product_id"] for rec in data["products"]}
    for p in products:
        assert p.base_increment > 0 and p.price_increment > 0


def test_from_coinbase_defaults_and_fallbacks() -> None:
    p = Product.from_coinbase(
        {"product_id": "ETH-EUR", "base_increment": "0.0001", "quote_increment": "0.01", "limit_only": True}
    )
    assert (p.base_currency, p.quote_currency) == ("ETH", "EUR")  # from the id
    assert p.price_increment == D("0.01")  # falls back to quote_increment
    assert p.base_min_size == 0 and p.base_max_size == D("1e18")
    assert p.limit_only and p.status == "online"
    p2 = Product.from_coinbase(
        {"product_id": "X-Y", "base_increment": "1", "quote_increment": "1", "base_display_symbol": "XX", "price_increment": ""}
    )
    assert p2.base_currency == "XX"
    assert p2.price_increment == D("1")


@pytest.mark.parametrize(
    ("record", "match"),
    [
        ({"base_increment": "1", "quote_increment": "1"}, "missing product_id"),
        ({"product_id": "A-B", "quote_increment": "1"}, r"A-B\.base_increment: missing"),
        ({"product_id": "A-B", "base_increment": "x", "quote_increment": "1"}, r"A-B\.base_increment: not a decimal"),
        ({"product_id": "A-B", "base_increment": "1", "quote_increment": "0"}, r"A-B\.quote_increment"),
    ],
)
def test_from_coinbase_rejects_bad_records(record: dict, match: str) -> None:
    with pytest.raises(InvalidValue, match=match):
        Product.from_coinbase(record)


@settings(max_examples=200, deadline=None)
@given(
    st.decimals(min_value=D("0"), max_value=D("10000"), places=10, allow_nan=False, allow_infinity=False),
    st.sampled_from([Side.BUY, Side.SELL]),
)
def test_property_rounded_values_pass_the_product_rules(value: Decimal, side: Side) -> None:
    p = product()
    size = p.round_size(value)
    assert size <= value and is_on_increment(size, p.base_increment)
    assert p.size_problem(size) in (None, ProductStatus.ORDER_SIZE_TOO_SMALL, ProductStatus.ORDER_SIZE_TOO_LARGE)
    price = p.round_price(value + D("0.001"), side)
    assert p.price_problem(price) is None or price == 0
