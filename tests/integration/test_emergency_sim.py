"""The kill switch end to end over loopback: real OrderManager, CoinbaseVenue, RiskEngine and Storage
against the simulator. Every test checks the outcome against the simulator's own records
(``/sim/admin/orders`` and ``/sim/admin/balances``), not only our view."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from cryptoj.config import EmergencyConfig, ExecutionConfig, RiskConfig
from cryptoj.emergency_manager import EmergencyManager, KillReport, Trigger
from cryptoj.errors import InvalidValue, TradingHalted
from cryptoj.model.instruments import Product
from cryptoj.model.money import Side
from cryptoj.model.orders import Order, OrderKind, OrderSpec, OrderStatus
from cryptoj.model.positions import Balance as ModelBalance
from cryptoj.order_execution import OrderManager
from cryptoj.risk_management import RiskEngine, TradingState
from cryptoj.storage import Storage
from cryptoj.venues.coinbase.auth import load_cdp_key
from cryptoj.venues.coinbase.rest import CoinbaseRestClient
from cryptoj.venues.coinbase.venue import CoinbaseVenue
from cryptoj.venues.simulated.server import SimulatorServer

pytestmark = pytest.mark.integration

PID = "BTC-USD"
DEADLINE = 20.0
FAST = ExecutionConfig(resolve_backoff_seconds=0.01, poll_interval_seconds=0.05, fill_check_interval_seconds=0.5)
_OPEN = {"OPEN", "PENDING", "QUEUED", "CANCEL_QUEUED"}


async def admin_get(sim: SimulatorServer, path: str) -> Any:
    async with aiohttp.ClientSession() as session, session.get(f"{sim.base_url}/sim/admin/{path}") as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def sim_open_orders(sim: SimulatorServer) -> list[dict[str, Any]]:
    data = await admin_get(sim, "orders")
    return [o for o in data["orders"] if o["status"] in _OPEN]


async def sim_balances(sim: SimulatorServer) -> dict[str, dict[str, Decimal]]:
    data = await admin_get(sim, "balances")
    return {cur: {k: Decimal(v) for k, v in bal.items()} for cur, bal in data["user"].items()}


class SimRiskContext:
    """The RiskContext protocol over the order manager and the simulator's book (the engine's job in production)."""

    def __init__(self, om: OrderManager, sim: SimulatorServer) -> None:
        self.om = om
        self.sim = sim
        self.balances: dict[str, ModelBalance] = {}

    async def refresh(self) -> None:
        self.balances = {c: ModelBalance(c, b.available, b.hold) for c, b in (await self.om.venue_balances()).items()}

    def product(self, product_id: str) -> Product | None:
        try:
            return self.om.product(product_id)
        except InvalidValue:
            return None

    def mid_price(self, product_id: str) -> Decimal | None:
        book = self.sim.admin.book(product_id, 1)
        if not book["bids"] or not book["asks"]:
            return None
        return (Decimal(book["bids"][0][0]) + Decimal(book["asks"][0][0])) / 2

    def data_age(self, product_id: str) -> float | None:
        return 0.0

    def position_size(self, product_id: str) -> Decimal:
        product = self.product(product_id)
        return self.balance(product.base_currency).total if product else Decimal(0)

    def balance(self, currency: str) -> ModelBalance:
        return self.balances.get(currency) or ModelBalance(currency)

    def open_orders(self) -> Sequence[Order]:
        return self.om.open_orders()

    def fee_rate(self, product_id: str) -> Decimal:
        return Decimal("0.006")

    def product_ids(self) -> Sequence[str]:
        return ["BTC-USD", "ETH-USD"]


@dataclass
class Stack:
    sim: SimulatorServer
    om: OrderManager
    risk: RiskEngine
    ctx: SimRiskContext
    manager: EmergencyManager
    storage: Storage
    alerts: list[Any]

    async def rest_n(self, n: int, pid: str = PID) -> list[Order]:
        """``n`` resting limit buys well below the bid (they never fill)."""
        book = self.sim.admin.book(pid, 1)
        bid = Decimal(book["bids"][0][0])
        orders = []
        for i in range(n):
            price = (bid * Decimal("0.9") - i).quantize(Decimal("0.01"))
            spec = OrderSpec(self.om.new_client_order_id(), pid, Side.BUY, OrderKind.LIMIT, base_size=Decimal("0.001"),
                             limit_price=price)
            orders.append(await self.om.submit(spec))
        assert all(o.status in (OrderStatus.SUBMITTED, OrderStatus.OPEN) for o in orders)
        async with asyncio.timeout(DEADLINE):  # the user stream confirms them OPEN
            while any((cur := self.om.order(o.client_order_id)) is None or cur.status is not OrderStatus.OPEN for o in orders):
                await asyncio.sleep(0.01)
        assert len(await sim_open_orders(self.sim)) >= n
        return orders


def make_venue(sim: SimulatorServer) -> CoinbaseVenue:
    assert sim.key_file is not None
    rest = CoinbaseRestClient(sim.base_url, load_cdp_key(sim.key_file), timeout=5.0, max_retries=3, backoff_base=0.01,
                              backoff_cap=0.05, rng=random.Random(3))
    return CoinbaseVenue(rest, sim.ws_user_url, heartbeat_interval=0.5, backoff_base=0.02, backoff_cap=0.1, rng=random.Random(5))


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[Storage]:
    store = await Storage.open(f"sqlite+aiosqlite:///{tmp_path / 'kill.db'}")
    yield store
    await store.close()


@pytest.fixture
async def make_stack(storage: Storage, tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    made: list[Stack] = []

    async def factory(sim: SimulatorServer, *, risk_config: RiskConfig | None = None, **config: Any) -> Stack:
        config.setdefault("cancel_timeout_seconds", 10.0)
        config.setdefault("flatten_timeout_seconds", 10.0)
        holder: dict[str, RiskEngine] = {}
        om = OrderManager(make_venue(sim), storage, pre_trade=lambda spec: holder["risk"].check(spec), config=FAST)
        await om.start()
        ctx = SimRiskContext(om, sim)
        await ctx.refresh()
        risk = RiskEngine(risk_config or RiskConfig(), ctx, lambda: datetime.now(UTC))
        holder["risk"] = risk
        alerts: list[Any] = []
        venue = om.venue
        manager = EmergencyManager(
            orders=om, risk=risk, storage=storage, state_dir=tmp_path / "state", config=EmergencyConfig(**config),
            clock=lambda: datetime.now(UTC), products=lambda: {p: om.product(p) for p in ("BTC-USD", "ETH-USD")},
            alert=alerts.append, cancel_venue_orders=venue.cancel_orders,
        )
        stack = Stack(sim, om, risk, ctx, manager, storage, alerts)
        made.append(stack)
        return stack

    yield factory
    for stack in made:
        await stack.manager.close()
        await stack.om.close()


async def assert_killed(stack: Stack, report: KillReport | None, trigger: Trigger) -> None:
    assert report is not None
    assert report.trigger is trigger, report
    assert report.confirmed, report.as_payload()
    assert report.open_after == []
    assert await sim_open_orders(stack.sim) == [], "the simulator still holds open orders"
    assert stack.risk.state is TradingState.HALTED
    record = await stack.storage.get_trading_state()
    assert record is not None and record.state == "HALTED"
    assert record.emergency is not None and record.emergency["confirmed"] is True
    with pytest.raises(TradingHalted):
        await stack.om.submit(OrderSpec(stack.om.new_client_order_id(), PID, Side.BUY, OrderKind.LIMIT,
                                        base_size=Decimal("0.001"), limit_price=Decimal("1000")))
    assert [a.kind for a in stack.alerts] == ["kill_triggered", "kill_completed"]


SMALL = {"USD": Decimal(100000), "BTC": Decimal("0.02"), "ETH": Decimal("0.2")}


async def assert_flat(stack: Stack) -> None:
    """Every base balance at the simulator is under its product's minimum size."""
    balances = await sim_balances(stack.sim)
    for currency in ("BTC", "ETH"):
        total = balances[currency]["available"] + balances[currency]["hold"]
        assert total < stack.om.product(f"{currency}-USD").base_min_size, f"{currency}: {total} left at the simulator"


def _error_rate(stack: Stack) -> None:
    for i in range(3):
        stack.manager.observe_venue_error(f"503 #{i}")


def _price_move(stack: Stack) -> None:
    now = datetime.now(UTC)
    stack.manager.observe_price(PID, Decimal("50000"), now)
    stack.manager.observe_price(PID, Decimal("44000"), now + timedelta(seconds=1))


def _daily_loss(stack: Stack) -> None:
    stack.manager.observe_equity(Decimal("100000"))
    stack.manager.observe_equity(Decimal("99000"))


def _drawdown(stack: Stack) -> None:
    stack.risk.restore_equity(day_start=Decimal("80000"), peak=Decimal("120000"), day=datetime.now(UTC))
    stack.manager.observe_equity(Decimal("90000"))


def _kill_file(stack: Stack) -> None:
    stack.manager.kill_file.parent.mkdir(parents=True, exist_ok=True)
    stack.manager.kill_file.write_text("operator")
    stack.manager.check_kill_file()


TRIGGERS: list[tuple[Trigger, Callable[[Stack], Any]]] = [
    (Trigger.KILL_FILE, _kill_file),
    (Trigger.DAILY_LOSS, _daily_loss),
    (Trigger.DRAWDOWN, _drawdown),
    (Trigger.ERROR_RATE, _error_rate),
    (Trigger.STALE_DATA, lambda s: s.manager.observe_data_age(PID, 61.0)),
    (Trigger.DISCONNECTED, lambda s: s.manager.observe_disconnected("user", 121.0)),
    (Trigger.PRICE_MOVE, _price_move),
]


@pytest.mark.parametrize(("trigger", "act"), TRIGGERS, ids=[t[0].value for t in TRIGGERS])
async def test_each_trigger_cancels_everything_at_the_venue(
    make_sim: Callable[..., Any], make_stack: Callable[..., Any], trigger: Trigger, act: Callable[[Stack], Any]
) -> None:
    sim = await make_sim(balances=SMALL)
    stack = await make_stack(sim, risk_config=RiskConfig(daily_loss_limit_quote=Decimal("500"),
                                                         max_drawdown_fraction=Decimal("0.2")),
                             error_rate_threshold=3, flatten_on_kill=True)
    await stack.rest_n(5)
    act(stack)
    await stack.manager.settle()
    await assert_killed(stack, stack.manager.last_report, trigger)
    await assert_flat(stack)


async def test_manual_and_reconciliation_triggers(make_sim: Callable[..., Any], make_stack: Callable[..., Any]) -> None:
    sim = await make_sim(balances=SMALL)
    stack = await make_stack(sim)
    await stack.rest_n(3)
    report = await stack.manager.trigger(Trigger.MANUAL, "operator", flatten=True)
    await assert_killed(stack, report, Trigger.MANUAL)
    await assert_flat(stack)

    sim2 = await make_sim(balances=SMALL)
    stack2 = await make_stack(sim2)
    await stack2.rest_n(3)
    # a real reconciliation run whose report carries a disagreement (as H3's reconcile reports them)
    recon = await stack2.om.reconcile()
    assert recon.ok
    recon.problems.append("test: venue balance differs from storage")
    stack2.manager.config = stack2.manager.config.model_copy(update={"flatten_on_kill": True})
    stack2.manager.observe_reconciliation(recon)
    await stack2.manager.settle()
    await assert_killed(stack2, stack2.manager.last_report, Trigger.RECONCILIATION)
    await assert_flat(stack2)


async def test_external_orders_and_5xx_during_the_kill(make_sim: Callable[..., Any], make_stack: Callable[..., Any]) -> None:
    sim = await make_sim()
    stack = await make_stack(sim)
    await stack.rest_n(4)
    bid = Decimal(sim.admin.book(PID, 1)["bids"][0][0])
    # an order placed at the venue behind our back (another client on the same account)
    far = str((bid * Decimal("0.8")).quantize(Decimal("0.01")))
    sim.admin.place("user", {"product_id": PID, "side": "BUY", "client_order_id": "external-1",
                             "order_configuration": {"limit_limit_gtc": {"base_size": "0.002", "limit_price": far}}})
    sim.admin.set_faults(http_5xx_next=4)  # the cancel path meets a burst of 503s (the REST client retries 3 times)
    report = await stack.manager.trigger(Trigger.MANUAL, "with faults")
    await assert_killed(stack, report, Trigger.MANUAL)
    assert "external-1" not in {o["client_order_id"] for o in await sim_open_orders(sim)}


async def test_flatten_sells_to_dust_and_confirms_against_the_venue(
    make_sim: Callable[..., Any], make_stack: Callable[..., Any]
) -> None:
    sim = await make_sim(balances={"USD": Decimal(100000), "BTC": Decimal("0.1"), "ETH": Decimal("1")})
    stack = await make_stack(sim, flatten_on_kill=True)
    await stack.rest_n(2)
    before = await sim_balances(sim)
    assert before["BTC"]["available"] == Decimal("0.1") and before["ETH"]["available"] == Decimal(1)
    report = await stack.manager.trigger(Trigger.MANUAL, "flatten")
    await assert_killed(stack, report, Trigger.MANUAL)
    after = await sim_balances(sim)
    for currency in ("BTC", "ETH"):
        product = stack.om.product(f"{currency}-USD")
        total = after[currency]["available"] + after[currency]["hold"]
        assert total < product.base_min_size, f"{currency} still {total} after flatten"
    assert after["USD"]["available"] > before["USD"]["available"]
    assert len(report.flatten_orders) >= 2  # one sell per currency, more when the book is thin
    flatten_records = [o for o in (await admin_get(sim, "orders"))["orders"] if o["client_order_id"] in report.flatten_orders]
    assert {o["status"] for o in flatten_records} == {"FILLED"}


async def test_restart_stays_halted_until_resume(
    make_sim: Callable[..., Any], make_stack: Callable[..., Any], storage: Storage
) -> None:
    sim = await make_sim()
    first = await make_stack(sim)
    await first.rest_n(3)
    await first.manager.trigger(Trigger.MANUAL, "before restart")
    await first.manager.close()
    await first.om.close()

    second = await make_stack(sim)  # a new process: same storage, same venue
    assert await second.manager.restore() is TradingState.HALTED
    await second.manager.settle()
    assert second.manager.last_report is None  # the kill was confirmed: not re-run
    with pytest.raises(TradingHalted):
        await second.om.submit(OrderSpec(second.om.new_client_order_id(), PID, Side.BUY, OrderKind.LIMIT,
                                         base_size=Decimal("0.001"), limit_price=Decimal("1000")))
    result = await second.manager.resume("checked")
    assert result.ok, result.problems
    assert second.risk.state is TradingState.ACTIVE
    await second.rest_n(1)
    record = await storage.get_trading_state()
    assert record is not None and record.state == "ACTIVE"
    kinds = [e.kind for e in await storage.journal(limit=10000) if e.kind.startswith("emergency.")]
    assert kinds[0] == "emergency.trigger" and "emergency.report" in kinds and kinds[-1] == "emergency.resume"


async def test_kill_file_through_the_watcher_loop(make_sim: Callable[..., Any], make_stack: Callable[..., Any]) -> None:
    sim = await make_sim()
    stack = await make_stack(sim, poll_interval_seconds=0.05)
    await stack.rest_n(3)
    runner = asyncio.create_task(stack.manager.run())
    from cryptoj.emergency_cli import write_kill_file

    write_kill_file(stack.manager.state_dir, stack.manager.config.kill_file, "cryptoj kill")
    async with asyncio.timeout(DEADLINE):
        while stack.manager.last_report is None:  # the watcher saw the file and started the kill
            await asyncio.sleep(0.02)
    await stack.manager.settle()  # ... which then runs to its end
    await assert_killed(stack, stack.manager.last_report, Trigger.KILL_FILE)
    await stack.manager.close()
    await runner


async def _run_actions(stack: Stack, actions: list[Any]) -> list[Order]:
    placed = []
    for action in actions:
        if action.cancel_client_order_id is not None:
            await stack.om.cancel(action.cancel_client_order_id)
        if action.spec is not None:
            placed.append(await stack.om.submit(action.spec))
    return placed


async def test_protective_native_stop_rests_at_the_venue_and_fires(
    make_sim: Callable[..., Any], make_stack: Callable[..., Any]
) -> None:
    from cryptoj.config import ExitsConfig
    from cryptoj.risk_management import ProtectiveExits

    sim = await make_sim(balances={"USD": Decimal(100000), "BTC": Decimal("0.01"), "ETH": Decimal(0)})
    stack = await make_stack(sim)
    mid = stack.ctx.mid_price(PID)
    assert mid is not None
    exits = ProtectiveExits(ExitsConfig(stop_loss_fraction=Decimal("0.001"), trailing_stop_fraction=Decimal("0.0005"),
                                        stop_limit_offset_fraction=Decimal("0.05")),
                            stack.om.product, native_kinds=stack.om.venue.native_kinds)
    [stop] = await _run_actions(stack, exits.on_position(PID, Decimal("0.01"), mid, last_price=mid))
    assert stop.spec.kind is OrderKind.STOP_LIMIT
    records = {o["client_order_id"]: o for o in (await admin_get(sim, "orders"))["orders"]}
    assert records[stop.client_order_id]["status"] in _OPEN  # resting at the venue, not in our process
    # the market falls through the stop: the venue triggers it and sells our position
    sim.admin.trade(PID, Side.SELL, Decimal("0.2"))
    async with asyncio.timeout(DEADLINE):
        while (await sim_balances(sim))["BTC"]["available"] + (await sim_balances(sim))["BTC"]["hold"] != 0:
            await asyncio.sleep(0.02)
    records = {o["client_order_id"]: o for o in (await admin_get(sim, "orders"))["orders"]}
    assert records[stop.client_order_id]["status"] == "FILLED"
    assert Decimal(records[stop.client_order_id]["filled_size"]) == Decimal("0.01")


async def test_protective_take_profit_engine_side_sells_at_the_venue(
    make_sim: Callable[..., Any], make_stack: Callable[..., Any]
) -> None:
    from cryptoj.config import ExitsConfig
    from cryptoj.risk_management import ProtectiveExits

    sim = await make_sim(balances={"USD": Decimal(100000), "BTC": Decimal("0.01"), "ETH": Decimal(0)})
    stack = await make_stack(sim)
    mid = stack.ctx.mid_price(PID)
    assert mid is not None
    exits = ProtectiveExits(ExitsConfig(take_profit=[(Decimal("0.01"), Decimal("0.5")), (Decimal("0.02"), Decimal("1"))],
                                        native_stops=False), stack.om.product)
    assert await _run_actions(stack, exits.on_position(PID, Decimal("0.01"), mid)) == []
    [first] = await _run_actions(stack, exits.on_price(PID, mid * Decimal("1.011")))
    [second] = await _run_actions(stack, exits.on_price(PID, mid * Decimal("1.03")))
    assert (first.spec.base_size, second.spec.base_size) == (Decimal("0.005"), Decimal("0.005"))
    async with asyncio.timeout(DEADLINE):
        while True:
            records = {o["client_order_id"]: o for o in (await admin_get(sim, "orders"))["orders"]}
            if all(records.get(o.client_order_id, {}).get("status") == "FILLED" for o in (first, second)):
                break
            await asyncio.sleep(0.02)
    balances = await sim_balances(sim)
    assert balances["BTC"]["available"] + balances["BTC"]["hold"] == 0


_CHILD = r"""
import asyncio, os, random, sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from cryptoj.config import EmergencyConfig, ExecutionConfig, RiskConfig
from cryptoj.emergency_manager import EmergencyManager, Trigger
from cryptoj.model.money import Side
from cryptoj.model.orders import OrderKind, OrderSpec
from cryptoj.model.positions import Balance
from cryptoj.order_execution import OrderManager
from cryptoj.risk_management import RiskEngine
from cryptoj.storage import Storage
from cryptoj.venues.coinbase.auth import load_cdp_key
from cryptoj.venues.coinbase.rest import CoinbaseRestClient
from cryptoj.venues.coinbase.venue import CoinbaseVenue


class Ctx:
    def __init__(self, om):
        self.om = om
    def product(self, pid): return self.om.product(pid)
    def mid_price(self, pid): return None
    def data_age(self, pid): return 0.0
    def position_size(self, pid): return Decimal(0)
    def balance(self, cur): return Balance(cur, Decimal(10**9))
    def open_orders(self): return self.om.open_orders()
    def fee_rate(self, pid): return Decimal(0)
    def product_ids(self): return ["BTC-USD"]


async def main():
    env = os.environ
    storage = await Storage.open(env["KILL_DB"])
    rest = CoinbaseRestClient(env["SIM_URL"], load_cdp_key(env["SIM_KEY"]), timeout=5.0, max_retries=0, rng=random.Random(1))
    om = OrderManager(CoinbaseVenue(rest, None), storage, pre_trade=lambda s: risk.check(s),
                      config=ExecutionConfig(poll_interval_seconds=0.05))
    await om.start()
    risk = RiskEngine(RiskConfig(check_balance=False), Ctx(om), lambda: datetime.now(UTC))
    manager = EmergencyManager(orders=om, risk=risk, storage=storage, state_dir=Path(env["KILL_STATE"]),
                               config=EmergencyConfig(cancel_timeout_seconds=300.0), clock=lambda: datetime.now(UTC),
                               products=lambda: {"BTC-USD": om.product("BTC-USD")})
    price = Decimal(env["PRICE"])
    for i in range(3):
        await om.submit(OrderSpec(om.new_client_order_id(), "BTC-USD", Side.BUY, OrderKind.LIMIT,
                                  base_size=Decimal("0.001"), limit_price=price - i))
    print("PLACED", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    await manager.trigger(Trigger.MANUAL, "child")  # the cancels fail until the process is killed


asyncio.run(main())
"""


async def test_process_killed_during_a_kill_comes_back_halted_and_finishes_it(
    make_sim: Callable[..., Any], make_stack: Callable[..., Any], storage: Storage, tmp_path: Path
) -> None:
    import os
    import signal
    import sys

    sim = await make_sim()
    bid = Decimal(sim.admin.book(PID, 1)["bids"][0][0])
    env = {**os.environ, "KILL_DB": f"sqlite+aiosqlite:///{tmp_path / 'kill.db'}", "SIM_URL": sim.base_url,
           "SIM_KEY": str(sim.key_file), "KILL_STATE": str(tmp_path / "state"),
           "PRICE": str((bid * Decimal("0.9")).quantize(Decimal("0.01")))}
    child = await asyncio.create_subprocess_exec(sys.executable, "-c", _CHILD, env=env, stdin=asyncio.subprocess.PIPE,
                                                 stdout=asyncio.subprocess.PIPE)
    assert child.stdout is not None and child.stdin is not None
    try:
        async with asyncio.timeout(DEADLINE * 2):
            while b"PLACED" not in await child.stdout.readline():
                pass
        assert len(await sim_open_orders(sim)) == 3
        sim.admin.set_faults(http_5xx_next=1_000_000)  # every cancel fails: the child's kill keeps retrying
        child.stdin.write(b"go\n")
        await child.stdin.drain()
        async with asyncio.timeout(DEADLINE):  # until the child has persisted HALTED and tried to cancel
            while not [e for e in await storage.journal(kind="emergency.step", limit=100) if e.payload["name"] == "cancel_all"]:
                await asyncio.sleep(0.02)
        child.send_signal(signal.SIGKILL)  # really killed, mid-kill
        await child.wait()
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    assert len(await sim_open_orders(sim)) == 3  # nothing was cancelled
    record = await storage.get_trading_state()
    assert record is not None and record.state == "HALTED" and record.emergency is not None
    assert record.emergency["confirmed"] is False

    sim.admin.clear_faults()
    stack = await make_stack(sim)  # the restarted process
    assert await stack.manager.restore() is TradingState.HALTED
    await stack.manager.settle()
    await assert_killed(stack, stack.manager.last_report, Trigger.RESTART_UNCONFIRMED)
