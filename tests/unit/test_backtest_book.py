"""Book-level backtests: a recording replayed through the MarketDataService L2 path, orders filled against the book."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from cryptoj.backtest.book import BookBacktest
from cryptoj.backtest.fills import FeeTier
from cryptoj.backtest.runner import BacktestConfig
from cryptoj.model.book import OrderBook
from cryptoj.model.candles import Candle
from cryptoj.model.events import MarketTrade
from cryptoj.model.money import Side
from cryptoj.model.orders import Fill, Order, OrderStatus, TimeInForce
from cryptoj.strategy import Strategy

pytestmark = pytest.mark.unit

D = Decimal
T0 = datetime(2026, 1, 1, tzinfo=UTC)
FEES = FeeTier(D("0.001"), D("0.002"))


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


class Frames:
    def __init__(self) -> None:
        self.lines: list[bytes] = [orjson.dumps({"ts_ns": 0, "connected": 1})]
        self.seq = 0

    def add(self, at: datetime, channel: str, event: dict[str, Any]) -> None:
        frame = {"channel": channel, "client_id": "", "timestamp": iso(at), "sequence_num": self.seq, "events": [event]}
        self.seq += 1
        ts_ns = int((at - T0).total_seconds() * 1e9) + 1_767_225_600 * 10**9
        self.lines.append(orjson.dumps({"ts_ns": ts_ns, "frame": orjson.dumps(frame).decode()}))

    def book(self, at: datetime, bids: list[tuple[str, str]], asks: list[tuple[str, str]]) -> None:
        updates = [{"side": "bid", "event_time": iso(at), "price_level": p, "new_quantity": q} for p, q in bids]
        updates += [{"side": "offer", "event_time": iso(at), "price_level": p, "new_quantity": q} for p, q in asks]
        self.add(at, "l2_data", {"type": "snapshot", "product_id": "BTC-USD", "updates": updates})

    def trade(self, at: datetime, price: str, size: str) -> None:
        trade = {
            "trade_id": f"t{self.seq}",
            "product_id": "BTC-USD",
            "price": price,
            "size": size,
            "side": "BUY",
            "time": iso(at),
        }
        self.add(at, "market_trades", {"type": "update", "trades": [trade]})

    def write(self, path: Path) -> Path:
        path.write_bytes(gzip.compress(b"\n".join(self.lines) + b"\n"))
        return path


class Tape(Strategy):
    name = "tape"

    def on_start(self) -> None:
        self.books = 0
        self.trades: list[Decimal] = []
        self.bars: list[Candle] = []
        self.updates: list[tuple[str, OrderStatus]] = []
        self.fills: list[Fill] = []
        self.times: list[datetime] = []

    def on_book(self, product: str, book: OrderBook) -> None:
        self.books += 1
        if self.books == 1:
            assert book.best_ask() == (D("101.00"), D("1"))
            self.buy(product, D("1.5"))  # walks two ask levels
            self.sell(product, D("1"), price=D("103.00"))  # rests
            self.buy(product, quote_size=D("50"))
            self.buy(product, D("10"), price=D("102.00"), tif=TimeInForce.FOK)  # the book cannot fill it
            self.buy(product, D("1"), price=D("101.00"), post_only=True)  # would take
            self.stop_limit(product, Side.SELL, D("1"), stop_price=D("90.00"), limit_price=D("89.00"))
            self.buy(product, D("0.5"), price=D("101.50"), tif=TimeInForce.IOC)  # takes 0.5 at 101
            self.buy(product, D("1"), price=D("50.00"), tif=TimeInForce.GTD, end_time=T0 + timedelta(seconds=30))

    def on_trade(self, product: str, trade: MarketTrade) -> None:
        self.trades.append(trade.price)
        self.times.append(self.now())

    def on_bar(self, product: str, bar: Candle) -> None:
        self.bars.append(bar)

    def on_order_update(self, order: Order) -> None:
        self.updates.append((order.client_order_id, order.status))

    def on_fill(self, fill: Fill) -> None:
        self.fills.append(fill)


def scenario(tmp_path: Path) -> Path:
    f = Frames()
    f.book(T0 + timedelta(seconds=1), [("99.00", "1"), ("98.00", "2")], [("101.00", "1"), ("102.00", "2")])
    f.trade(T0 + timedelta(seconds=5), "100.00", "0.1")
    f.trade(T0 + timedelta(seconds=20), "103.00", "5")  # at the resting sell's price: no fill (queue unknown)
    f.trade(T0 + timedelta(seconds=40), "103.50", "0.25")  # through it: 0.25 fills
    f.trade(T0 + timedelta(seconds=70), "104.00", "5")  # the rest (0.75) fills; closes the first minute bar
    f.trade(T0 + timedelta(seconds=125), "104.50", "1")  # closes the second bar
    f.trade(T0 + timedelta(seconds=130), "49.00", "0.1")  # would fill the GTD buy at 50, but it expired at 00:00:30
    return f.write(tmp_path / "rec.jsonl.gz")


def test_book_backtest_fills_against_the_recorded_book(tmp_path: Path) -> None:
    st = Tape(products=["BTC-USD"])
    config = BacktestConfig(balances={"USD": D(10_000), "BTC": D(1)}, fees=FEES)
    bt = BookBacktest(st, scenario(tmp_path), "BTC-USD", config)
    result = bt.run()
    fills = [(f.client_order_id, f.price, f.size, f.liquidity.value) for f in result.fills]
    assert fills[:2] == [("bt-00000001", D("101.00"), D("1"), "TAKER"), ("bt-00000001", D("102.00"), D("0.5"), "TAKER")]
    quote = [f for f in result.fills if f.client_order_id == "bt-00000003"]
    assert len(quote) == 1 and quote[0].price == D("101.00") and quote[0].size == D("0.49504950")
    assert ("bt-00000007", D("101.00"), D("0.5"), "TAKER") in fills  # the IOC limit took one level
    assert [x for x in fills if x[0] == "bt-00000002"] == [
        ("bt-00000002", D("103.00"), D("0.25"), "MAKER"),
        ("bt-00000002", D("103.00"), D("0.75"), "MAKER"),
    ]
    assert result.fills[0].fee == D("101.00") * D("0.002")
    final = {coid: status for coid, status in st.updates}
    assert final == {
        "bt-00000001": OrderStatus.FILLED,
        "bt-00000002": OrderStatus.FILLED,
        "bt-00000003": OrderStatus.FILLED,
        "bt-00000004": OrderStatus.CANCELLED,  # FOK
        "bt-00000005": OrderStatus.CANCELLED,  # post-only would take
        "bt-00000006": OrderStatus.REJECTED,  # stop-limit: not in book runs
        "bt-00000007": OrderStatus.FILLED,
        "bt-00000008": OrderStatus.EXPIRED,
    }
    assert result.rejections["UNSUPPORTED_ORDER_CONFIGURATION"] == 1
    assert result.rejections["INVALID_LIMIT_PRICE_POST_ONLY"] == 1
    assert len(st.fills) == len(result.fills)
    # the strategy saw the trades, at the frames' times, and the bars the service closed from them
    assert st.trades == [D("100.00"), D("103.00"), D("103.50"), D("104.00"), D("104.50"), D("49.00")]
    assert st.times[0] == T0 + timedelta(seconds=5)
    assert [(b.start, b.open, b.high, b.low, b.close) for b in st.bars] == [
        (T0, D("100.00"), D("103.50"), D("100.00"), D("103.50")),
        (T0 + timedelta(minutes=1), D("104.00"), D("104.00"), D("104.00"), D("104.00")),
    ]
    assert bt.frames == 7 and st.books == 1
    held = D(1) + D("1.5") + D("0.49504950") + D("0.5") - D(1)
    assert bt.portfolio.balance("BTC").total == held
    assert bt.portfolio.balance("USD").hold == 0 and bt.portfolio.balance("BTC").hold == 0
    assert result.metrics.fills == len(result.fills)


def test_unfunded_book_orders_and_progress(tmp_path: Path) -> None:
    class Greedy(Strategy):
        name = "greedy"

        def on_book(self, product: str, book: OrderBook) -> None:
            if not self.open_orders():
                self.buy(product, D("2"))  # 2 BTC cost ~203 USD, only 150 there: the hold is refused
                self.sell(product, D("1"), price=D("120.00"))

    st = Greedy(products=["BTC-USD"])
    marks: list[tuple[int, int]] = []
    config = BacktestConfig(balances={"USD": D(150), "BTC": D(0)}, fees=FEES)
    result = BookBacktest(st, scenario(tmp_path), "BTC-USD", config).run(progress=lambda a, b: marks.append((a, b)))
    assert result.rejections["INSUFFICIENT_FUND"] == 2 and not result.fills
    assert marks == [(7, 7)]


def test_book_edges_timers_gtd_dust_trades_and_fee_squeezed_rests(tmp_path: Path) -> None:
    f = Frames()
    f.book(T0 + timedelta(seconds=1), [("99.00", "1"), ("98.00", "2")], [("101.00", "1"), ("102.00", "2")])
    f.trade(T0 + timedelta(seconds=20), "103.50", "0.000000001")  # through the resting sell, but less than an increment
    f.trade(T0 + timedelta(seconds=30), "97.00", "0.5")  # through the fee-squeezed buy at 98: half fills
    f.trade(T0 + timedelta(seconds=45), "59.00", "1")  # through the GTD buy at 60 — which expired at 00:00:40
    path = f.write(tmp_path / "edges.jsonl.gz")

    class Edges(Strategy):
        name = "edges"

        def on_start(self) -> None:
            self.timers: list[datetime] = []
            self.updates: dict[str, OrderStatus] = {}

        def on_book(self, product: str, book: OrderBook) -> None:
            self.set_timer("t", timedelta(seconds=30))
            self.buy(product, quote_size=D("150"))  # two ask levels
            self.sell(product, D("1"), price=D("99.00"), post_only=True)  # would hit the bid
            self.buy(product, D("0.5"), price=D("60.00"), tif=TimeInForce.GTD, end_time=T0 + timedelta(seconds=40))
            self.sell(product, D("1"), price=D("103.00"))
            self.buy(product, D("1"), price=D("98.00"))

        def on_timer(self, name: str, now: datetime) -> None:
            self.timers.append(now)

        def on_order_update(self, order: Order) -> None:
            self.updates[order.client_order_id] = order.status

    st = Edges(products=["BTC-USD"])
    config = BacktestConfig(balances={"USD": D(300), "BTC": D(2)}, fees=FeeTier(maker=D("0.9"), taker=D(0)))
    result = BookBacktest(st, path, "BTC-USD", config).run()
    quote = [f for f in result.fills if f.client_order_id == "bt-00000001"]
    assert [(q.price, q.size) for q in quote] == [(D("101.00"), D(1)), (D("102.00"), D("0.48039215"))]
    assert st.updates == {
        "bt-00000001": OrderStatus.FILLED,
        "bt-00000002": OrderStatus.CANCELLED,  # post-only sell
        "bt-00000003": OrderStatus.EXPIRED,
        "bt-00000004": OrderStatus.CANCELLED,  # still resting at the end (the dust trade filled nothing)
        "bt-00000005": OrderStatus.CANCELLED,  # half filled; the maker fee left too little to hold the rest
    }
    squeezed = [f for f in result.fills if f.client_order_id == "bt-00000005"]
    assert [(s.price, s.size, s.fee) for s in squeezed] == [(D("98.00"), D("0.5"), D("98.00") * D("0.5") * D("0.9"))]
    assert result.rejections["INVALID_LIMIT_PRICE_POST_ONLY"] == 1 and result.rejections["INSUFFICIENT_FUND"] == 1
    assert st.timers == [T0 + timedelta(seconds=31)]  # due at 00:00:31, fired when the 00:00:45 frame passes the clock
