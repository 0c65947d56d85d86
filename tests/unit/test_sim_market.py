"""Unit tests of the synthetic market model (no I/O): determinism, ladders, candles."""

from __future__ import annotations

import itertools
import random
from decimal import Decimal

import pytest

from cryptoj.errors import InvalidValue
from cryptoj.model.instruments import Product
from cryptoj.model.money import Side
from cryptoj.venues.simulated.market import (
    GRANULARITIES,
    CandleHistory,
    MarketParams,
    ProductModel,
    SyntheticMarket,
    default_params,
    parse_product_list,
)

pytestmark = pytest.mark.unit


def _product(pid: str = "BTC-USD") -> Product:
    base, quote = pid.split("-")
    return Product(
        product_id=pid,
        base_currency=base,
        quote_currency=quote,
        base_increment=Decimal("0.00000001"),
        quote_increment=Decimal("0.01"),
        price_increment=Decimal("0.01"),
        base_min_size=Decimal("0.00000001"),
        base_max_size=Decimal("3400"),
        quote_min_size=Decimal("1"),
        quote_max_size=Decimal("150000000"),
    )


class RecordingVenue:
    """A minimal in-test venue: rests limit orders, lets market orders eat the opposite side."""

    def __init__(self) -> None:
        self.log: list[tuple[str, ...]] = []
        self.resting: dict[str, tuple[str, Side, Decimal, Decimal]] = {}
        self._next = 0

    def agent_place_limit(self, product_id: str, side: Side, price: Decimal, size: Decimal) -> str | None:
        self._next += 1
        oid = f"o{self._next}"
        self.log.append(("limit", product_id, side.value, str(price), str(size)))
        self.resting[oid] = (product_id, side, price, size)
        return oid

    def agent_cancel(self, product_id: str, order_id: str) -> None:
        self.log.append(("cancel", product_id, order_id))
        self.resting.pop(order_id, None)

    def agent_market(self, product_id: str, side: Side, size: Decimal) -> None:
        self.log.append(("market", product_id, side.value, str(size)))
        opposite = [
            (oid, o) for oid, o in self.resting.items() if o[0] == product_id and o[1] is side.opposite
        ]
        opposite.sort(key=lambda item: item[1][2], reverse=side is Side.SELL)
        left = size
        for oid, (pid, s, price, qty) in opposite:
            if left <= 0:
                break
            take = min(left, qty)
            left -= take
            if take == qty:
                del self.resting[oid]
            else:
                self.resting[oid] = (pid, s, price, qty - take)

    def agent_is_open(self, product_id: str, order_id: str) -> bool:
        return order_id in self.resting

    def sides(self, product_id: str) -> tuple[list[Decimal], list[Decimal]]:
        bids = sorted({o[2] for o in self.resting.values() if o[0] == product_id and o[1] is Side.BUY}, reverse=True)
        asks = sorted({o[2] for o in self.resting.values() if o[0] == product_id and o[1] is Side.SELL})
        return bids, asks


def test_same_seed_gives_same_stream_and_different_seed_differs() -> None:
    def run(seed: int) -> list[tuple[str, ...]]:
        venue = RecordingVenue()
        market = SyntheticMarket([_product("BTC-USD"), _product("ETH-USD")], venue, seed=seed, start_time=1_700_000_000)
        market.prime()
        market.run_steps(300)
        return venue.log

    first = run(7)
    assert first == run(7)
    assert first != run(8)
    assert any(entry[0] == "market" for entry in first)
    assert any(entry[0] == "cancel" for entry in first)


def test_makers_keep_at_least_50_levels_a_side_and_never_cross() -> None:
    venue = RecordingVenue()
    market = SyntheticMarket([_product("BTC-USD")], venue, seed=3)
    market.prime()
    for _ in range(500):
        market.step()
        bids, asks = venue.sides("BTC-USD")
        assert len(bids) >= 50 and len(asks) >= 50
        assert bids[0] < asks[0]
        mid = market.models["BTC-USD"].mid
        assert bids[0] <= mid <= asks[0]
    assert len(market.maker_levels("BTC-USD")) == 100
    market.cancel_all()
    assert venue.resting == {}


def test_prices_and_sizes_are_on_the_product_grid() -> None:
    venue = RecordingVenue()
    product = _product()
    market = SyntheticMarket([product], venue, seed=11)
    market.prime()
    market.run_steps(200)
    for entry in venue.log:
        if entry[0] == "limit":
            assert product.price_problem(Decimal(entry[3])) is None
            assert product.size_problem(Decimal(entry[4])) is None
        if entry[0] == "market":
            assert product.size_problem(Decimal(entry[3])) is None


def test_random_walk_regimes_and_jumps() -> None:
    product = _product()
    params = MarketParams(start_price=Decimal("60000"), regime_switch_prob=0.05, jump_prob=0.05, level_spacing_ticks=600)
    model = ProductModel(product=product, params=params, mid_ticks=6_000_000)
    rng = random.Random(5)
    regimes = set()
    moves = []
    for _ in range(2000):
        moves.append(model.advance(rng))
        regimes.add(model.volatile)
    assert regimes == {True, False}
    assert model.jumps > 0
    assert any(m != 0 for m in moves)
    assert model.mid == model.mid_ticks * Decimal("0.01")
    bids, asks = model.ladder()
    assert len(bids) == 50 and len(asks) == 50
    assert all(b % 600 == 0 for b in bids)
    assert bids[0] < model.mid_ticks <= asks[0]


def test_mid_never_falls_below_the_ladder_floor() -> None:
    params = MarketParams(start_price=Decimal("1"), calm_vol_bps=5000, volatile_vol_bps=5000, levels=3)
    model = ProductModel(product=_product(), params=params, mid_ticks=10)
    rng = random.Random(1)
    for _ in range(200):
        model.advance(rng)
        assert model.mid_ticks >= params.level_spacing_ticks * (params.levels + 2)


def test_candle_history_is_deterministic_consistent_and_covers_30_days() -> None:
    product = _product()
    history = CandleHistory(product, default_params(product), seed=42)
    again = CandleHistory(product, default_params(product), seed=42)
    other = CandleHistory(product, default_params(product), seed=43)
    now = 1_750_000_000
    start = now - 31 * 86400
    bars = history.candles(start, now, GRANULARITIES["ONE_DAY"])
    assert len(bars) == 31
    assert [b.start for b in bars] == sorted((b.start for b in bars), reverse=True)
    assert bars == again.candles(start, now, GRANULARITIES["ONE_DAY"])
    assert bars != other.candles(start, now, GRANULARITIES["ONE_DAY"])
    five = history.candles(now - 300 * 300, now, GRANULARITIES["FIVE_MINUTE"], limit=300)
    assert len(five) == 300
    for newer, older in itertools.pairwise(five):
        assert older.close == newer.open  # continuous path
    for bar in five + bars:
        assert bar.low <= min(bar.open, bar.close) <= max(bar.open, bar.close) <= bar.high
        assert bar.volume > 0
        assert product.price_problem(bar.close) is None
        assert Decimal(30000) < bar.close < Decimal(120000)
    encoded = five[0].to_coinbase("BTC-USD")
    assert encoded["product_id"] == "BTC-USD" and encoded["start"] == str(five[0].start)
    assert "product_id" not in five[0].to_coinbase()


def test_candle_range_edges_and_errors() -> None:
    product = _product()
    history = CandleHistory(product, default_params(product), seed=1)
    # start not aligned: the first bar is the next aligned one; end aligned is exclusive
    bars = history.candles(61, 300, 60)
    assert [b.start for b in bars] == [240, 180, 120]
    assert history.candle(125, 60).start == 120
    assert history.price(1000.0) == history.price_ticks(1000.0) * Decimal("0.01")
    with pytest.raises(InvalidValue, match="before start"):
        history.candles(100, 50, 60)
    with pytest.raises(InvalidValue, match="granularity"):
        history.candle(0, 0)


def test_live_market_starts_at_the_history_price() -> None:
    venue = RecordingVenue()
    product = _product()
    market = SyntheticMarket([product], venue, seed=9, start_time=1_760_000_000)
    assert market.models["BTC-USD"].mid_ticks == market.histories["BTC-USD"].price_ticks(1_760_000_000)
    assert market.product_ids == ["BTC-USD"]


def test_default_params_and_validation() -> None:
    eth = default_params(_product("ETH-USD"))
    assert eth.start_price == Decimal("3000")
    other = default_params(_product("FOO-USD"))
    assert other.start_price == Decimal("100") and other.lot == Decimal("0.1")
    with pytest.raises(InvalidValue, match="start_price"):
        MarketParams(start_price=Decimal(0))
    with pytest.raises(InvalidValue, match="level_spacing_ticks"):
        MarketParams(start_price=Decimal(1), level_spacing_ticks=0)
    with pytest.raises(InvalidValue, match="levels"):
        MarketParams(start_price=Decimal(1), levels=0)
    with pytest.raises(InvalidValue, match="lot"):
        MarketParams(start_price=Decimal(1), lot=Decimal(0))
    with pytest.raises(InvalidValue, match="taker_prob"):
        MarketParams(start_price=Decimal(1), taker_prob=1.5)
    with pytest.raises(InvalidValue, match="at least one product"):
        SyntheticMarket([], RecordingVenue(), seed=1)


def test_maker_skips_orders_the_venue_does_not_rest() -> None:
    class Refusing(RecordingVenue):
        def agent_place_limit(self, product_id: str, side: Side, price: Decimal, size: Decimal) -> str | None:
            super().agent_place_limit(product_id, side, price, size)
            return None

    venue = Refusing()
    market = SyntheticMarket([_product()], venue, seed=2)
    market.prime()
    assert market.maker_levels("BTC-USD") == {}


def test_parse_product_list() -> None:
    assert parse_product_list("btc-usd, ETH-USD,,BTC-USD") == ["BTC-USD", "ETH-USD"]
    assert parse_product_list(["SOL-USD"]) == ["SOL-USD"]
    with pytest.raises(InvalidValue, match="BASE-QUOTE"):
        parse_product_list("BTCUSD")
    with pytest.raises(InvalidValue, match="no product ids"):
        parse_product_list(" , ")
