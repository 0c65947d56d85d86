"""The Strategy base class: parameters, helpers, brackets, binding, loading."""

from __future__ import annotations

import textwrap
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from cryptoj.errors import ConfigError, InvalidValue
from cryptoj.model.candles import Candle, Timeframe
from cryptoj.model.money import Side
from cryptoj.model.orders import Order, OrderKind, OrderStatus, StopDirection, TimeInForce
from cryptoj.strategy import CALLBACKS, Param, Params, Strategy, StrategyContext, StrategyError, load_strategy, make_strategy
from tests.unit.strategy_harness import T0, Harness, make_product

pytestmark = pytest.mark.unit

D = Decimal


class Demo(Strategy):
    params = (
        Param("fast", int, 20, min=2, max=500, doc="fast length"),
        Param("size", Decimal, D("0.01"), min=D("0.0001"), max=D(10)),
        Param("enabled", bool, True),
        Param("mode", str, "calm", choices=("calm", "wild")),
        Param("timeframe", Timeframe, "5m"),
        Param("levels", tuple, (D("0.01"), D("0.02")), min=1, max=3, item=Decimal),
        Param("skip", tuple, ()),
    )


def problems(exc: pytest.ExceptionInfo[ConfigError]) -> dict[str, str]:
    return dict(exc.value.problems)


# -- parameters ------------------------------------------------------------------------------------


def test_defaults_fill_every_parameter() -> None:
    s = Demo()
    assert s.p.as_dict() == {
        "fast": 20,
        "size": D("0.01"),
        "enabled": True,
        "mode": "calm",
        "timeframe": Timeframe.FIVE_MINUTE,
        "levels": (D("0.01"), D("0.02")),
        "skip": (),
    }
    assert s.timeframe is Timeframe.FIVE_MINUTE  # a 'timeframe' parameter drives the bars
    assert Demo.name == "Demo"
    assert "fast=20" in repr(s) and "products=[]" in repr(s)


def test_values_are_converted_from_config_and_environment_text() -> None:
    s = Demo(
        {"fast": "7", "size": "0.5", "enabled": "false", "mode": "wild", "timeframe": "ONE_HOUR", "levels": "0.1, 0.2",
         "skip": ["USDT-USD"]},
        products=["BTC-USD"],
    )
    assert (s.p.fast, s.p.size, s.p.enabled, s.p.mode) == (7, D("0.5"), False, "wild")
    assert s.p.timeframe is Timeframe.ONE_HOUR and s.timeframe is Timeframe.ONE_HOUR
    assert s.p.levels == (D("0.1"), D("0.2"))
    assert s.p.skip == ("USDT-USD",)
    assert s.products == ("BTC-USD",)
    # ints, integral Decimals and floats (via their shortest text, the config's convention)
    t = Demo({"fast": D("9"), "size": 0.25, "enabled": True, "levels": [1, D("0.5")]})
    assert (t.p.fast, t.p.size, t.p.levels) == (9, D("0.25"), (D(1), D("0.5")))
    assert Demo({"size": 2}).p.size == D(2)


def test_every_problem_is_reported_with_key_path_and_range() -> None:
    with pytest.raises(ConfigError) as exc:
        Demo({"fast": 1, "size": "abc", "mode": "loud", "levels": [], "bogus": 3, "enabled": "maybe"})
    got = problems(exc)
    assert "too small" in got["strategy.params.fast"] and "between 2 and 500" in got["strategy.params.fast"]
    assert "expected a decimal number" in got["strategy.params.size"]
    assert "one of calm, wild" in got["strategy.params.mode"]
    assert "too few items" in got["strategy.params.levels"] and "length between 1 and 3" in got["strategy.params.levels"]
    assert "unknown parameter for Demo" in got["strategy.params.bogus"] and "known: enabled, fast" in got["strategy.params.bogus"]
    assert "true or false" in got["strategy.params.enabled"]
    assert "strategy.params.fast: too small (got 1; allowed: value between 2 and 500)" in str(exc.value)


@pytest.mark.parametrize(
    ("values", "key", "text"),
    [
        ({"fast": 1000}, "fast", "too large"),
        ({"fast": 2.5}, "fast", "expected an integer"),
        ({"fast": True}, "fast", "expected an integer"),
        ({"fast": D("2.5")}, "fast", "not a whole number"),
        ({"fast": [1]}, "fast", "expected an integer"),
        ({"size": D(11)}, "size", "too large"),
        ({"size": True}, "size", "expected a decimal number"),
        ({"size": "NaN"}, "size", "expected a decimal number"),
        ({"size": None}, "size", "expected a decimal number"),
        ({"mode": 3}, "mode", "expected a string"),
        ({"timeframe": "7m"}, "timeframe", "expected a timeframe (1m, 5m"),
        ({"timeframe": 5}, "timeframe", "expected a timeframe (1m, 5m"),
        ({"levels": [1, 2, 3, 4]}, "levels", "too many items"),
        ({"levels": 5}, "levels", "expected a list of decimal numbers"),
        ({"enabled": 1}, "enabled", "true or false"),
    ],
)
def test_bad_values(values: dict[str, Any], key: str, text: str) -> None:
    with pytest.raises(ConfigError) as exc:
        Demo(values)
    assert text in problems(exc)[f"strategy.params.{key}"]


def test_params_must_be_a_mapping_and_products_a_list() -> None:
    with pytest.raises(ConfigError, match="expected a table of parameters, got list"):
        Demo([("fast", 3)])  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="expected a list of product ids"):
        Demo(products="BTC-USD")


def test_range_text_variants() -> None:
    assert Param("a", int, 1, min=0).range_text == "value >= 0"
    assert Param("a", int, 1, max=5).range_text == "value <= 5"
    assert Param("a", Decimal, D(1)).range_text == "any"
    assert Param("a", tuple, ("x",), item=str).range_text == "any length"
    assert Param("a", Timeframe, "1h").range_text == "one of 1m, 5m, 15m, 1h, 6h, 1d"


def test_declaration_mistakes_are_caught_at_class_definition() -> None:
    with pytest.raises(ConfigError, match="lower_snake_case"):
        Param("Fast", int, 1)
    with pytest.raises(ConfigError, match="unsupported kind"):
        Param("x", float, 1.0)
    with pytest.raises(ConfigError, match="item is for tuple"):
        Param("x", int, 1, item=int)
    with pytest.raises(ConfigError, match=r"Param\('x'\)\.default: too small"):
        Param("x", int, 1, min=2)
    with pytest.raises(ConfigError, match="declared twice: x"):

        class Twice(Strategy):
            params = (Param("x", int, 1), Param("x", int, 2))

    with pytest.raises(ConfigError, match="must be a tuple of Param"):

        class NotTuple(Strategy):
            params = [Param("x", int, 1)]  # type: ignore[assignment]


def test_cross_parameter_checks_and_description() -> None:
    class Pair(Strategy):
        name = "pair"
        params = (Param("lo", int, 1), Param("hi", int, 2, doc="upper"))

        @classmethod
        def check_params(cls, values: Any) -> list[tuple[str, str]]:
            return [] if values["lo"] < values["hi"] else [("lo", "must be below hi")]

    with pytest.raises(ConfigError, match=r"strategy\.params\.lo: must be below hi"):
        Pair({"lo": 5})
    assert Pair.describe_params() == [
        {"name": "lo", "type": "an integer", "default": "1", "allowed": "any", "doc": ""},
        {"name": "hi", "type": "an integer", "default": "2", "allowed": "any", "doc": "upper"},
    ]
    assert Demo.describe_params()[5]["default"] == "0.01, 0.02"
    assert isinstance(Pair().p, Params)


# -- engine wiring ---------------------------------------------------------------------------------


def test_handles_reports_overridden_callbacks() -> None:
    class Bars(Strategy):
        def on_bar(self, product: str, bar: Candle) -> None:
            pass

    assert Bars.handles("on_bar")
    assert not Bars.handles("on_book") and not Bars.handles("on_trade") and not Bars.handles("on_timer")
    assert Bars.handles("on_order_update")  # always: brackets rely on it
    with pytest.raises(StrategyError, match="unknown callback 'on_tick'"):
        Bars.handles("on_tick")
    assert set(CALLBACKS) >= {"on_bar", "on_fill"}


def test_helpers_before_bind_say_what_to_do() -> None:
    s = Demo()
    assert not s.is_bound
    with pytest.raises(StrategyError, match=r"not bound to an engine yet: the engine calls bind\(ctx\) before on_start"):
        s.buy("BTC-USD", D(1))


def test_harness_is_a_strategy_context() -> None:
    assert isinstance(Harness([make_product("BTC-USD")], {}), StrategyContext)


def test_default_callbacks_do_nothing_harmful() -> None:
    h = Harness([make_product("BTC-USD")], {"USD": D(1000)})
    s = h.start(Strategy(products=["BTC-USD"]))
    h.prices["BTC-USD"] = D(100)
    h.bar("BTC-USD", 100)
    h.trade("BTC-USD", D(100))
    h.book_update("BTC-USD", D(99), D(101))
    s.on_timer("t", T0)
    s.on_stop()
    assert h.specs == []


# -- helpers ---------------------------------------------------------------------------------------


@pytest.fixture
def harness() -> Harness:
    h = Harness([make_product("BTC-USD")], {"USD": D(100_000), "BTC": D(0)})
    h.prices["BTC-USD"] = D(20_000)
    h.start(Strategy(products=["BTC-USD"]))
    return h


def test_buy_and_sell_build_the_right_orders(harness: Harness) -> None:
    s = harness.s
    c1 = s.buy("BTC-USD", D("0.1"))
    c2 = s.buy("BTC-USD", quote_size=D(500))
    c3 = s.sell("BTC-USD", D("0.05"), price=D(21_000), post_only=True)
    end = T0 + timedelta(hours=1)
    c4 = s.sell("BTC-USD", D("0.01"), price=D(22_000), tif=TimeInForce.GTD, end_time=end)
    c5 = s.sell("BTC-USD", quote_size=D(100), tif=TimeInForce.FOK)
    a, b, c, d, e = harness.specs
    assert [x.client_order_id for x in harness.specs] == [c1, c2, c3, c4, c5]
    assert (a.kind, a.side, a.base_size, a.time_in_force) == (OrderKind.MARKET, Side.BUY, D("0.1"), TimeInForce.IOC)
    assert (b.quote_size, b.base_size) == (D(500), None)
    assert (c.kind, c.limit_price, c.post_only, c.time_in_force) == (OrderKind.LIMIT, D(21_000), True, TimeInForce.GTC)
    assert (d.time_in_force, d.end_time) == (TimeInForce.GTD, end)
    assert (e.side, e.time_in_force) == (Side.SELL, TimeInForce.FOK)
    with pytest.raises(InvalidValue, match="exactly one of base/quote size"):
        s.buy("BTC-USD")


def test_stop_limit_directions(harness: Harness) -> None:
    s = harness.s
    s.stop_limit("BTC-USD", Side.SELL, D("0.1"), stop_price=D(19_000), limit_price=D(18_900))
    s.stop_limit("BTC-USD", Side.BUY, D("0.1"), stop_price=D(21_000), limit_price=D(21_100))
    s.stop_limit(
        "BTC-USD", Side.SELL, D("0.1"), stop_price=D(22_000), limit_price=D(22_000), direction=StopDirection.STOP_UP,
        end_time=T0 + timedelta(days=1),
    )
    a, b, c = harness.specs
    assert (a.kind, a.stop_direction, a.stop_price, a.limit_price) == (
        OrderKind.STOP_LIMIT, StopDirection.STOP_DOWN, D(19_000), D(18_900)
    )
    assert b.stop_direction is StopDirection.STOP_UP and b.time_in_force is TimeInForce.GTC
    assert c.stop_direction is StopDirection.STOP_UP and c.time_in_force is TimeInForce.GTD


def test_bracket_with_market_entry_places_the_exit_after_the_fill(harness: Harness) -> None:
    s = harness.s
    coid = s.bracket("BTC-USD", D("0.1"), stop_loss=D(19_000), take_profit=D(22_000))
    assert s.pending_brackets == [coid]
    harness.process()  # the market entry fills; the exit follows
    entry, exit_ = harness.specs
    assert entry.kind is OrderKind.MARKET and entry.side is Side.BUY
    assert (exit_.kind, exit_.side, exit_.base_size, exit_.limit_price, exit_.stop_trigger_price) == (
        OrderKind.BRACKET, Side.SELL, D("0.1"), D(22_000), D(19_000)
    )
    assert s.pending_brackets == []


def test_bracket_with_limit_entry_waits_for_the_fill(harness: Harness) -> None:
    s = harness.s
    coid = s.bracket("BTC-USD", D("0.2"), stop_loss=D(18_000), take_profit=D(23_000), entry=D(19_500))
    harness.process()
    assert len(harness.specs) == 1 and harness.orders[coid].status is OrderStatus.OPEN
    harness.fill(coid)
    assert harness.specs[-1].kind is OrderKind.BRACKET and harness.specs[-1].base_size == D("0.2")


def test_bracket_without_fill_places_no_exit(harness: Harness) -> None:
    s = harness.s
    coid = s.bracket("BTC-USD", D("0.2"), stop_loss=D(18_000), take_profit=D(23_000), entry=D(19_500))
    harness.process()
    s.cancel(coid)
    assert harness.cancels == [coid]
    assert [x.kind for x in harness.specs] == [OrderKind.LIMIT]
    assert s.pending_brackets == []


def test_bracket_exit_only_and_bad_brackets(harness: Harness) -> None:
    s = harness.s
    coid = s.bracket("BTC-USD", D("0.1"), stop_loss=D(19_000), take_profit=D(22_000), entry=None)
    assert harness.specs[-1].client_order_id == coid and harness.specs[-1].kind is OrderKind.BRACKET
    with pytest.raises(StrategyError, match="stop_loss 22000 must be below take_profit 19000"):
        s.bracket("BTC-USD", D("0.1"), stop_loss=D(22_000), take_profit=D(19_000))
    with pytest.raises(StrategyError, match="entry 25000 must lie between"):
        s.bracket("BTC-USD", D("0.1"), stop_loss=D(19_000), take_profit=D(22_000), entry=D(25_000))
    with pytest.raises(StrategyError, match="entry must be 'market'"):
        s.bracket("BTC-USD", D("0.1"), stop_loss=D(19_000), take_profit=D(22_000), entry="limit")


def test_brackets_survive_a_subclass_that_overrides_on_order_update() -> None:
    seen: list[OrderStatus] = []

    class Own(Strategy):
        def on_order_update(self, order: Order) -> None:
            seen.append(order.status)

    class Deeper(Own):
        def on_order_update(self, order: Order) -> None:
            super().on_order_update(order)

    for cls in (Own, Deeper):
        seen.clear()
        h = Harness([make_product("BTC-USD")], {"USD": D(100_000)})
        h.prices["BTC-USD"] = D(20_000)
        s = h.start(cls(products=["BTC-USD"]))
        s.bracket("BTC-USD", D("0.1"), stop_loss=D(19_000), take_profit=D(22_000))
        h.process()
        assert [x.kind for x in h.specs] == [OrderKind.MARKET, OrderKind.BRACKET]
        assert seen == [OrderStatus.FILLED, OrderStatus.OPEN]
    assert Own.on_order_update.__name__ == "on_order_update"


def test_rejected_bracket_entry_places_no_exit(harness: Harness) -> None:
    harness.reject_next.add("coid-1")
    harness.s.bracket("BTC-USD", D("0.1"), stop_loss=D(19_000), take_profit=D(22_000))
    harness.process()
    assert harness.orders["coid-1"].status is OrderStatus.REJECTED
    assert len(harness.specs) == 1


def test_state_helpers(harness: Harness) -> None:
    s = harness.s
    flat = s.position("BTC-USD")
    assert flat.is_flat and (flat.base_currency, flat.quote_currency) == ("BTC", "USD")
    s.buy("BTC-USD", D("0.5"))
    harness.process()
    assert s.position("BTC-USD").quantity == D("0.5")
    assert s.balance("BTC").available == D("0.5")
    assert s.equity() == D(100_000) - D("0.005") * D(10_000)
    assert s.now() == T0 and s.product("BTC-USD").base_currency == "BTC"
    assert s.log is harness.log
    assert s.book("BTC-USD") is None and s.mid("BTC-USD") is None
    harness.book_update("BTC-USD", D(100), D(102))
    assert s.mid("BTC-USD") == D(101)


def test_candles_helper(harness: Harness) -> None:
    s = harness.s
    for close in (1, 2, 3):
        harness.bar("BTC-USD", close, timeframe=Timeframe.ONE_MINUTE)
        harness.advance()
    assert [c.close for c in s.candles("BTC-USD", n=2)] == [D(2), D(3)]
    assert [c.close for c in s.candles("BTC-USD", "1m", 5)] == [D(1), D(2), D(3)]
    assert s.candles("BTC-USD", Timeframe.ONE_HOUR, 5) == []
    with pytest.raises(StrategyError, match="n must be >= 1"):
        s.candles("BTC-USD", n=0)


def test_cancel_all_and_open_orders(harness: Harness) -> None:
    s = harness.s
    a = s.buy("BTC-USD", D("0.1"), price=D(19_000))
    b = s.sell("BTC-USD", D("0.1"), price=D(21_000))
    harness.process()
    assert {o.client_order_id for o in s.open_orders()} == {a, b}
    assert s.cancel_all("BTC-USD") == 2
    assert harness.cancels == [a, b]
    assert s.open_orders("BTC-USD") == []


def test_timers(harness: Harness) -> None:
    s = harness.s
    s.set_timer("rebalance", timedelta(minutes=5))
    s.set_timer("fast", 2)
    s.set_timer("half", D("0.5"))
    s.set_timer("rebalance", None)
    assert harness.timers == {"rebalance": None, "fast": timedelta(seconds=2), "half": timedelta(milliseconds=500)}
    with pytest.raises(StrategyError, match="interval must be positive"):
        s.set_timer("x", 0)
    with pytest.raises(StrategyError, match="must be a timedelta or seconds"):
        s.set_timer("x", "5")  # type: ignore[arg-type]
    with pytest.raises(StrategyError, match="must be a timedelta or seconds"):
        s.set_timer("x", True)


def test_rebinding_to_another_context() -> None:
    s = Strategy(products=["BTC-USD"])
    h1 = Harness([make_product("BTC-USD")], {"USD": D(1)})
    h2 = Harness([make_product("BTC-USD")], {"USD": D(2)})
    s.bind(h1)
    assert s.balance("USD").available == D(1)
    s.bind(h2)
    assert s.balance("USD").available == D(2)


# -- loading -----------------------------------------------------------------------------------------


def write(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return path


def test_load_builtin() -> None:
    from cryptoj.strategies.sma_cross import SmaCross

    class Tuned(SmaCross):
        pass

    assert (SmaCross.name, Tuned.name) == ("sma_cross", "Tuned")

    assert load_strategy("sma_cross") is SmaCross
    s = make_strategy("sma_cross", {"fast": 5, "slow": 10}, products=["BTC-USD"])
    assert isinstance(s, SmaCross) and s.p.fast == 5 and s.products == ("BTC-USD",)


def test_unknown_builtin_lists_the_builtins() -> None:
    with pytest.raises(ConfigError, match=r"strategy\.name: unknown strategy 'nope'; built-ins: .*sma_cross"):
        load_strategy("nope")
    with pytest.raises(ConfigError, match="empty strategy name"):
        load_strategy("  ")


def test_load_from_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "mine.py",
        """
        from cryptoj.strategy import Param, Strategy

        class Mine(Strategy):
            params = (Param("n", int, 3),)

        class Other(Strategy):
            pass

        NOT_A_CLASS = 3
        """,
    )
    cls = load_strategy(f"{path}:Mine")
    assert cls.__name__ == "Mine" and issubclass(cls, Strategy)
    assert load_strategy(f"{path}:Mine") is cls  # imported once
    assert make_strategy(f"{path}:Mine", {"n": "4"}).p.n == 4
    with pytest.raises(ConfigError, match=r"no class 'Missing' \(Strategy subclasses in the file: Mine, Other\)"):
        load_strategy(f"{path}:Missing")
    with pytest.raises(ConfigError, match="NOT_A_CLASS is not a Strategy subclass"):
        load_strategy(f"{path}:NOT_A_CLASS")
    with pytest.raises(ConfigError, match=r"name the class as .*:ClassName \(Strategy subclasses found: Mine, Other\)"):
        load_strategy(str(path))


def test_load_single_class_file_without_class_name(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "single.py",
        """
        from cryptoj.strategy import Strategy
        from cryptoj.strategies.sma_cross import SmaCross  # imported, not defined here

        class Only(Strategy):
            pass
        """,
    )
    assert load_strategy(str(path)).__name__ == "Only"


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"strategy file '.*missing\.py' not found"):
        load_strategy(str(tmp_path / "missing.py") + ":X")
    with pytest.raises(ConfigError, match=r"the path must end in \.py"):
        load_strategy("some/file.txt:X")
    broken = write(tmp_path, "broken.py", "raise RuntimeError('boom at import')\n")
    with pytest.raises(ConfigError, match="failed to import: RuntimeError: boom at import"):
        load_strategy(f"{broken}:X")
    with pytest.raises(ConfigError, match="failed to import"):  # not cached after a failure
        load_strategy(f"{broken}:X")
    empty = write(tmp_path, "empty.py", "X = 1\n")
    with pytest.raises(ConfigError, match="Strategy subclasses found: none"):
        load_strategy(str(empty))
