"""docs/strategies.md stays true: its example file loads and trades, its parameter tables match the code."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from cryptoj.model.candles import Timeframe
from cryptoj.model.orders import OrderKind
from cryptoj.strategies import BUILTINS
from cryptoj.strategy import Param, Strategy, load_strategy
from tests.unit.strategy_harness import Harness, make_product

pytestmark = pytest.mark.unit

DOC = Path(__file__).resolve().parents[2] / "docs" / "strategies.md"
D = Decimal


def doc_text() -> str:
    return DOC.read_text(encoding="utf-8")


def test_the_example_file_loads_and_trades(tmp_path: Path) -> None:
    code = re.search(r"```python\n(.*?)```", doc_text(), re.S)
    assert code is not None
    path = tmp_path / "band_dip.py"
    path.write_text(code.group(1), encoding="utf-8")
    cls = load_strategy(f"{path}:BandDip")
    s = cls({"period": 5, "k": "1.5", "size": "0.5"}, products=["BTC-USD"])
    assert s.timeframe is Timeframe.ONE_MINUTE
    h = Harness([make_product("BTC-USD")], {"USD": D(100_000)}, fee_rate=D(0))
    h.start(s)
    assert h.timers == {"flatten": timedelta(days=1)}
    for close in ["100", "101", "99", "100", "101", "100", "85"]:  # lower band 97.4 - 1.5 * 6.216 = 88.1
        h.bar("BTC-USD", close)
        h.advance()
    kinds = [x.kind for x in h.specs]
    assert kinds == [OrderKind.MARKET, OrderKind.BRACKET]
    bracket = h.specs[1]
    assert bracket.limit_price == D(85) * D("1.03") and bracket.stop_trigger_price == D(85) * D("0.98")
    s.on_timer("flatten", h.clock)  # daily flatten: cancels the resting bracket and sells what is held
    h.process()
    assert h.cancels == [bracket.client_order_id]
    assert h.specs[-1].kind is OrderKind.MARKET and h.specs[-1].base_size == D("0.5")
    assert h.quantity("BTC-USD") == 0


def test_a_string_timeframe_parameter_still_gives_a_timeframe() -> None:
    class Text(Strategy):
        params = (Param("timeframe", str, "5m"),)

    assert Text().timeframe is Timeframe.FIVE_MINUTE


def _table_rows(section: str) -> dict[str, str]:
    text = doc_text()
    start = text.index(f"### `{section}`")
    end = text.find("\n### ", start + 1)
    rows = {}
    for line in text[start : end if end > 0 else None].splitlines():
        m = re.match(r"\| `(\w+)` \| [^|]+ \| `([^`]*)` \|", line)
        if m:
            rows[m.group(1)] = m.group(2)
    return rows


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_every_builtin_parameter_is_documented_with_its_default(name: str) -> None:
    rows = _table_rows(name)
    described = {r["name"]: r["default"] for r in load_strategy(name).describe_params()}
    assert rows == described
