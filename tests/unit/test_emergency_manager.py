"""The kill switch against a small fake of the order-manager protocol (the real OrderManager runs
in tests/integration/test_emergency_sim.py). Storage is the real one on in-memory SQLite."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from cryptoj.config import EmergencyConfig, RiskConfig
from cryptoj.emergency_manager import Alert, EmergencyManager, KillReport, Trigger
from cryptoj.errors import InvalidValue, OrderRejected, StorageError, TradingHalted, VenueUnavailable
from cryptoj.model.instruments import Product
from cryptoj.model.money import Side
from cryptoj.model.orders import Order, OrderKind, OrderSpec, OrderStatus
from cryptoj.model.positions import Balance as ModelBalance
from cryptoj.risk_management import RiskEngine, TradingState
from cryptoj.storage import Storage
from cryptoj.venues.base import Balance, VenueOrder

D = Decimal
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

BTC = Product("BTC-USD", "BTC", "USD", D("0.00000001"), D("0.01"), D("0.01"), D("0.0001"), D("100"), D("1"), D("1000000"))
ETH = replace(BTC, product_id="ETH-USD", base_currency="ETH", base_min_size=D("0.001"))
PRODUCTS = {"BTC-USD": BTC, "ETH-USD": ETH}


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


class RiskCtx:
    def product(self, product_id: str) -> Product | None:
        return PRODUCTS.get(product_id)

    def mid_price(self, product_id: str) -> Decimal | None:
        return D("100")

    def data_age(self, product_id: str) -> float | None:
        return 0.0

    def position_size(self, product_id: str) -> Decimal:
        return D("1000")

    def balance(self, currency: str) -> ModelBalance:
        return ModelBalance(currency, D("1000000"))

    def open_orders(self) -> Sequence[Order]:
        return []

    def fee_rate(self, product_id: str) -> Decimal:
        return D("0")

    def product_ids(self) -> Sequence[str]:
        return list(PRODUCTS)


def venue_order(order_id: str, pid: str = "BTC-USD") -> VenueOrder:
    return VenueOrder(order_id, f"c-{order_id}", pid, Side.BUY, OrderStatus.OPEN, "OPEN", None, D(0), None, D(0), D(0), 0)


@dataclass
class Recon:
    ok: bool
    problems: list[str] = field(default_factory=list)


@dataclass
class FakeOrders:
    """The OrderManagerLike protocol over a dict of 'venue' state, with scripted failures."""

    risk: RiskEngine
    open: dict[str, str] = field(default_factory=dict)  # venue order id -> product
    stubborn: set[str] = field(default_factory=set)  # ignored by cancel_all (external orders)
    never_cancel: set[str] = field(default_factory=set)
    balances: dict[str, Balance] = field(default_factory=dict)
    cancel_failures: int = 0
    list_failures: int = 0
    balance_failures: int = 0
    submit_error: Exception | None = None
    fill_on_submit: bool = True
    recon: Recon = field(default_factory=lambda: Recon(True))
    recon_error: Exception | None = None
    cancel_calls: int = 0
    submitted: list[OrderSpec] = field(default_factory=list)
    venue_cancels: list[list[str]] = field(default_factory=list)

    async def submit(self, spec: OrderSpec) -> Order:
        self.risk.check(spec)  # the real pre_trade hook
        if self.submit_error is not None:
            raise self.submit_error
        self.submitted.append(spec)
        product = PRODUCTS[spec.product_id]
        if self.fill_on_submit:
            bal = self.balances[product.base_currency]
            assert spec.base_size is not None
            self.balances[product.base_currency] = replace(bal, available=bal.available - spec.base_size)
            return Order(spec=spec, status=OrderStatus.FILLED)
        return Order(spec=spec, status=OrderStatus.OPEN)

    async def cancel_all(self, product_id: str | None = None) -> list[Order]:
        self.cancel_calls += 1
        if self.cancel_failures:
            self.cancel_failures -= 1
            raise VenueUnavailable("503 from the venue", status=503)
        done = [oid for oid in self.open if oid not in self.stubborn and oid not in self.never_cancel]
        for oid in done:
            del self.open[oid]
        return [Order(spec=OrderSpec(f"c-{oid}", "BTC-USD", Side.BUY, OrderKind.LIMIT, base_size=D(1), limit_price=D(1)),
                      status=OrderStatus.CANCELLED) for oid in done]

    async def venue_open_orders(self) -> Sequence[VenueOrder]:
        if self.list_failures:
            self.list_failures -= 1
            raise VenueUnavailable("timeout listing orders")
        return [venue_order(oid, pid) for oid, pid in self.open.items()]

    async def venue_balances(self) -> Mapping[str, Balance]:
        if self.balance_failures:
            self.balance_failures -= 1
            raise VenueUnavailable("accounts timeout")
        return dict(self.balances)

    async def reconcile(self) -> Recon:
        if self.recon_error is not None:
            raise self.recon_error
        return self.recon

    async def cancel_venue_orders(self, order_ids: Sequence[str]) -> object:
        self.venue_cancels.append(list(order_ids))
        for oid in order_ids:
            if oid not in self.never_cancel:
                self.open.pop(oid, None)
        return None


@pytest.fixture
async def storage() -> AsyncIterator[Storage]:
    store = await Storage.open("sqlite+aiosqlite:///:memory:")
    yield store
    await store.close()


@dataclass
class Rig:
    manager: EmergencyManager
    orders: FakeOrders
    risk: RiskEngine
    storage: Storage
    alerts: list[Alert]
    clock: Clock

    async def journal_kinds(self) -> list[str]:
        return [e.kind for e in await self.storage.journal()]


MakeRig = Callable[..., Rig]


@pytest.fixture
def make_rig(storage: Storage, tmp_path: Path) -> MakeRig:
    def make(*, risk_config: RiskConfig | None = None, health: Sequence[Any] = (), use_venue_cancel: bool = True,
             async_alerts: bool = False, data_ages: Any = None, disconnected: Any = None, errors: Any = None,
             prices: Any = None, **config: Any) -> Rig:
        config.setdefault("cancel_timeout_seconds", 5.0)
        config.setdefault("flatten_timeout_seconds", 5.0)
        clock = Clock()
        risk = RiskEngine(risk_config or RiskConfig(), RiskCtx(), clock)
        orders = FakeOrders(risk)
        alerts: list[Alert] = []

        def sync_hook(alert: Alert) -> None:
            alerts.append(alert)

        async def async_hook(alert: Alert) -> None:
            alerts.append(alert)

        manager = EmergencyManager(
            orders=orders, risk=risk, storage=storage, state_dir=tmp_path, config=EmergencyConfig(**config), clock=clock,
            products=lambda: PRODUCTS, alert=async_hook if async_alerts else sync_hook, health_checks=health,
            cancel_venue_orders=orders.cancel_venue_orders if use_venue_cancel else None,
            data_ages=data_ages, disconnected_for=disconnected, venue_error_count=errors, prices=prices,
        )
        return Rig(manager, orders, risk, storage, alerts, clock)

    return make


async def test_manual_kill_cancels_everything_and_persists(make_rig: MakeRig) -> None:
    rig = make_rig(async_alerts=True)
    rig.orders.open = {"v1": "BTC-USD", "v2": "ETH-USD"}
    report = await rig.manager.trigger(Trigger.MANUAL, "operator said so")
    assert rig.risk.state is TradingState.HALTED
    assert report.confirmed and report.open_after == [] and not report.flatten
    assert sorted(report.cancelled) == ["c-v1", "c-v2"]
    assert [s.name for s in report.steps] == ["halted", "cancel_all", "check_open", "confirm"]
    assert report.finished_at is not None and report.elapsed_seconds >= 0
    kinds = await rig.journal_kinds()
    assert kinds[0] == "emergency.trigger" and kinds[-1] == "emergency.report"
    assert kinds.count("emergency.step") == 4
    record = await rig.storage.get_trading_state()
    assert record is not None and record.state == "HALTED" and record.reason.startswith("MANUAL")
    assert record.emergency is not None and record.emergency["confirmed"] is True
    assert [a.kind for a in rig.alerts] == ["kill_triggered", "kill_completed"]
    with pytest.raises(TradingHalted):
        rig.risk.check(OrderSpec("new", "BTC-USD", Side.BUY, OrderKind.LIMIT, base_size=D("0.01"), limit_price=D("100")))


async def test_cancel_retries_until_the_venue_reports_none(make_rig: MakeRig) -> None:
    rig = make_rig()
    rig.orders.open = {"v1": "BTC-USD", "ext": "BTC-USD"}
    rig.orders.stubborn = {"ext"}  # an order the order manager does not know
    rig.orders.cancel_failures = 1
    rig.orders.list_failures = 1
    report = await rig.manager.trigger("MANUAL", "retry")
    assert report.confirmed
    assert report.cancel_rounds == 3
    assert rig.orders.venue_cancels == [["ext"]]
    failed = [(s.name, s.detail) for s in report.steps if not s.ok]
    assert failed[0][0] == "cancel_all" and "VenueUnavailable" in failed[0][1]
    assert failed[1][0] == "check_open" and "cannot list" in failed[1][1]
    assert failed[2] == ("check_open", "round 2: 1 still open at the venue")


async def test_cancel_gives_up_after_the_timeout_unconfirmed(make_rig: MakeRig) -> None:
    rig = make_rig(cancel_timeout_seconds=0.2, use_venue_cancel=False)
    rig.orders.open = {"stuck": "BTC-USD"}
    rig.orders.never_cancel = {"stuck"}
    report = await rig.manager.trigger(Trigger.MANUAL, "stuck order")
    assert not report.confirmed
    assert report.open_after == ["stuck"]
    assert any(s.name == "cancel_timeout" and not s.ok for s in report.steps)
    assert rig.alerts[-1].kind == "kill_unconfirmed"
    assert "stuck" in rig.alerts[-1].message
    record = await rig.storage.get_trading_state()
    assert record is not None and record.emergency is not None and record.emergency["confirmed"] is False


async def test_flatten_sells_base_balances_and_reports_dust(make_rig: MakeRig) -> None:
    rig = make_rig(flatten_on_kill=True)
    rig.orders.balances = {
        "BTC": Balance("BTC", D("1.234567891"), D("0")),
        "ETH": Balance("ETH", D("0.0005"), D("0")),  # under ETH's 0.001 minimum
        "USD": Balance("USD", D("500"), D("0")),
    }
    report = await rig.manager.trigger(Trigger.MANUAL, "flatten")
    [sell] = rig.orders.submitted
    assert (sell.product_id, sell.side, sell.kind, sell.base_size) == ("BTC-USD", Side.SELL, OrderKind.MARKET, D("1.23456789"))
    assert report.flatten_orders == [sell.client_order_id]
    assert report.dust == {"BTC": D("0.000000001"), "ETH": D("0.0005")}  # below the increment / the min size
    assert report.confirmed and report.unflat == {}
    payload = report.as_payload()
    assert payload["dust"] == {"BTC": "1E-9", "ETH": "0.0005"} and payload["flatten"] is True
    # the flatten order passed a HALTED risk engine only through allow_exit
    assert rig.risk.state is TradingState.HALTED


async def test_flatten_failures_leave_the_kill_unconfirmed(make_rig: MakeRig) -> None:
    rig = make_rig(flatten_on_kill=True, flatten_timeout_seconds=0.2)
    rig.orders.balances = {"BTC": Balance("BTC", D("2"), D("0"))}
    rig.orders.submit_error = OrderRejected("INSUFFICIENT_FUND", "no")
    report = await rig.manager.trigger(Trigger.MANUAL, "flatten fails")
    assert not report.confirmed
    assert report.unflat == {"BTC": D("2")}
    assert any("failed" in s.detail for s in report.steps if s.name == "flatten")

    # an order that rests without filling: waits, times out
    rig2 = make_rig(flatten_on_kill=True, flatten_timeout_seconds=0.2)
    rig2.orders.balances = {"BTC": Balance("BTC", D("2"), D("0"))}
    rig2.orders.fill_on_submit = False
    report2 = await rig2.manager.trigger(Trigger.MANUAL, "no fill")
    assert not report2.confirmed
    assert any(s.name == "flatten_timeout" for s in report2.steps)


async def test_flatten_balance_errors_are_retried(make_rig: MakeRig) -> None:
    rig = make_rig(flatten_on_kill=True)
    rig.orders.balances = {"BTC": Balance("BTC", D("1"), D("0"))}
    rig.orders.balance_failures = 1
    report = await rig.manager.trigger(Trigger.MANUAL, "balances down")
    assert any(s.name == "flatten" and "cannot read balances" in s.detail for s in report.steps)
    assert report.confirmed and len(rig.orders.submitted) == 1  # the next round sold it


async def test_flatten_sells_again_after_a_partial_fill_and_waits_for_holds(make_rig: MakeRig) -> None:
    rig = make_rig(flatten_on_kill=True)
    rig.orders.balances = {"BTC": Balance("BTC", D("1"), D("0"))}
    sizes: list[Decimal] = []
    released = Balance("BTC", D("0.5"), D("0"))

    async def submit(spec: OrderSpec) -> Order:
        rig.risk.check(spec)
        assert spec.base_size is not None
        sizes.append(spec.base_size)
        if len(sizes) == 1:  # half fills; the other half is held by the IOC still in flight
            rig.orders.balances["BTC"] = Balance("BTC", D("0"), D("0.5"))
        else:
            rig.orders.balances["BTC"] = Balance("BTC", D("0.00001"), D("0"))
        return Order(spec=spec, status=OrderStatus.SUBMITTED)

    async def balances() -> Mapping[str, Balance]:
        current = dict(rig.orders.balances)
        if current["BTC"].hold:  # seen held once, then the IOC ends and releases the rest
            rig.orders.balances["BTC"] = released
        return current

    rig.orders.submit = submit  # type: ignore[method-assign]
    rig.orders.venue_balances = balances  # type: ignore[method-assign]
    report = await rig.manager.trigger(Trigger.MANUAL, "partial")
    assert sizes == [D("1"), D("0.5")]  # nothing was sold while held
    assert len(report.flatten_orders) == 2
    assert report.dust == {"BTC": D("0.00001")}
    assert report.confirmed


async def test_confirm_failure_is_unconfirmed(make_rig: MakeRig) -> None:
    rig = make_rig()
    real = rig.orders.venue_open_orders
    calls = 0

    async def fails_on_confirm() -> Sequence[VenueOrder]:
        nonlocal calls
        calls += 1
        if calls >= 2:
            raise VenueUnavailable("down")
        return await real()

    rig.orders.venue_open_orders = fails_on_confirm  # type: ignore[method-assign]
    report = await rig.manager.trigger(Trigger.MANUAL, "confirm fails")
    assert not report.confirmed
    assert report.steps[-1].name == "confirm" and not report.steps[-1].ok


async def test_concurrent_triggers_join_one_kill(make_rig: MakeRig) -> None:
    rig = make_rig()
    rig.orders.open = {"v1": "BTC-USD"}
    import asyncio

    first, second = await asyncio.gather(rig.manager.trigger(Trigger.MANUAL, "a"), rig.manager.trigger(Trigger.KILL_FILE, "b"))
    assert first is second
    assert rig.orders.cancel_calls == 1
    assert "emergency.trigger_joined" in await rig.journal_kinds()
    assert rig.manager.trigger_counts == {"MANUAL": 1, "KILL_FILE": 1}


# --- triggers ---------------------------------------------------------------------------------


def _error_rate(rig: Rig) -> None:
    for i in range(3):
        rig.manager.observe_venue_error(f"err {i}")
        rig.clock.now += timedelta(seconds=1)


def _price_drop(rig: Rig) -> None:
    rig.manager.observe_price("BTC-USD", D("100"))
    rig.clock.now += timedelta(seconds=10)
    rig.manager.observe_price("BTC-USD", D("89"))


def _price_spike(rig: Rig) -> None:
    rig.manager.observe_price("BTC-USD", D("100"))
    rig.manager.observe_price("BTC-USD", D("111"))


def _daily_loss(rig: Rig) -> None:
    rig.manager.observe_equity(D("10000"))
    rig.manager.observe_equity(D("9400"))


def _drawdown(rig: Rig) -> None:
    rig.manager.observe_equity(D("10000"))
    rig.clock.now += timedelta(days=1)  # a new day: no daily loss, the peak stays
    rig.manager.observe_equity(D("7000"))


def _kill_file(rig: Rig) -> None:
    rig.manager.kill_file.write_text("operator")
    assert rig.manager.check_kill_file() is True


TRIGGERS: list[tuple[str, dict[str, Any], Callable[[Rig], None], Trigger]] = [
    ("venue error rate", {"error_rate_threshold": 3}, _error_rate, Trigger.ERROR_RATE),
    ("stale data", {"stale_data_seconds": 30.0}, lambda r: r.manager.observe_data_age("BTC-USD", 31.0), Trigger.STALE_DATA),
    ("disconnected", {"disconnected_seconds": 60.0}, lambda r: r.manager.observe_disconnected("user", 61.0),
     Trigger.DISCONNECTED),
    ("price drop", {"price_move_fraction": D("0.10")}, _price_drop, Trigger.PRICE_MOVE),
    ("price spike", {"price_move_fraction": D("0.10")}, _price_spike, Trigger.PRICE_MOVE),
    ("daily loss", {}, _daily_loss, Trigger.DAILY_LOSS),
    ("drawdown", {}, _drawdown, Trigger.DRAWDOWN),
    ("reconciliation", {}, lambda r: r.manager.observe_reconciliation(Recon(False, ["order x unknown"])), Trigger.RECONCILIATION),
    ("kill file", {}, _kill_file, Trigger.KILL_FILE),
]


@pytest.mark.parametrize(("name", "config", "act", "expected"), TRIGGERS, ids=[t[0] for t in TRIGGERS])
async def test_each_trigger_trips_the_switch(
    make_rig: MakeRig, name: str, config: dict[str, Any], act: Callable[[Rig], None], expected: Trigger
) -> None:
    rig = make_rig(risk_config=RiskConfig(daily_loss_limit_quote=D("500"), max_drawdown_fraction=D("0.25")), **config)
    rig.orders.open = {"v1": "BTC-USD"}
    act(rig)
    await rig.manager.settle()
    report = rig.manager.last_report
    assert isinstance(report, KillReport)
    assert report.trigger is expected and report.confirmed
    assert rig.orders.open == {}
    assert rig.risk.state is TradingState.HALTED
    # once HALTED, automatic triggers do not start another kill
    act(rig) if expected is not Trigger.KILL_FILE else rig.manager.check_kill_file()
    await rig.manager.settle()
    assert rig.manager.last_report is report


NOT_TRIGGERS: list[tuple[str, dict[str, Any], Callable[[Rig], None]]] = [
    ("errors below threshold", {"error_rate_threshold": 4}, _error_rate),
    ("errors outside the window", {"error_rate_threshold": 3, "error_rate_window_seconds": 0.5}, _error_rate),
    ("error trigger off", {"error_rate_threshold": None}, _error_rate),
    ("fresh data", {"stale_data_seconds": 30.0}, lambda r: r.manager.observe_data_age("BTC-USD", 29.0)),
    ("no data yet", {"stale_data_seconds": 30.0}, lambda r: r.manager.observe_data_age("BTC-USD", None)),
    ("stale trigger off", {"stale_data_seconds": None}, lambda r: r.manager.observe_data_age("BTC-USD", 1e9)),
    ("short disconnect", {"disconnected_seconds": 60.0}, lambda r: r.manager.observe_disconnected("user", 59.0)),
    ("small move", {"price_move_fraction": D("0.10")},
     lambda r: [r.manager.observe_price("BTC-USD", D(p)) for p in ("100", "91")]),
    ("move outside the window", {"price_move_fraction": D("0.10"), "price_move_window_seconds": 5.0}, _price_drop),
    ("price trigger off", {"price_move_fraction": None}, _price_drop),
    ("daily loss trigger off", {"halt_on_daily_loss": False, "halt_on_drawdown": False}, _daily_loss),
    ("drawdown trigger off", {"halt_on_drawdown": False}, _drawdown),
    ("reconciliation ok", {}, lambda r: r.manager.observe_reconciliation(Recon(True))),
    ("reconciliation trigger off", {"halt_on_reconciliation_failure": False},
     lambda r: r.manager.observe_reconciliation(Recon(False, ["x"]))),
    ("no kill file", {}, lambda r: r.manager.check_kill_file()),
]


@pytest.mark.parametrize(("name", "config", "act"), NOT_TRIGGERS, ids=[t[0] for t in NOT_TRIGGERS])
async def test_conditions_that_do_not_trip(
    make_rig: MakeRig, name: str, config: dict[str, Any], act: Callable[[Rig], None]
) -> None:
    rig = make_rig(risk_config=RiskConfig(daily_loss_limit_quote=D("500"), max_drawdown_fraction=D("0.25")), **config)
    act(rig)
    await rig.manager.settle()
    assert rig.manager.last_report is None
    assert rig.risk.state is TradingState.ACTIVE


async def test_kill_file_trips_once_per_appearance(make_rig: MakeRig) -> None:
    rig = make_rig()
    await rig.manager.tick()
    assert rig.manager.last_report is None
    rig.manager.kill_file.write_text("")
    await rig.manager.tick()
    await rig.manager.settle()
    first = rig.manager.last_report
    assert first is not None and first.trigger is Trigger.KILL_FILE
    await rig.manager.tick()
    await rig.manager.settle()
    assert rig.manager.last_report is first  # still there: not re-triggered
    rig.manager.kill_file.unlink()
    await rig.manager.tick()
    rig.manager.kill_file.write_text("")
    await rig.manager.tick()  # a new appearance is an operator action: runs again even while HALTED
    await rig.manager.settle()
    assert rig.manager.last_report is not first


async def test_tick_polls_data_and_stream_sources(make_rig: MakeRig) -> None:
    rig = make_rig(disconnected_seconds=10.0, data_ages=lambda: {"BTC-USD": 1.0, "ETH-USD": None},
                   disconnected=lambda: {"user": 11.0})
    await rig.manager.tick()
    await rig.manager.settle()
    assert rig.manager.last_report is not None and rig.manager.last_report.trigger is Trigger.DISCONNECTED
    rig2 = make_rig(stale_data_seconds=5.0, data_ages=lambda: {"BTC-USD": 6.0})
    await rig2.manager.tick()
    await rig2.manager.settle()
    assert rig2.manager.last_report is not None and rig2.manager.last_report.trigger is Trigger.STALE_DATA


async def test_flush_rejections_journals_them(make_rig: MakeRig) -> None:
    rig = make_rig()
    rig.risk.set_state(TradingState.REDUCE_ONLY, "test")
    with pytest.raises(Exception, match="REDUCE_ONLY"):
        rig.risk.check(OrderSpec("r1", "BTC-USD", Side.BUY, OrderKind.LIMIT, base_size=D("0.01"), limit_price=D("100")))
    assert await rig.manager.flush_rejections() == 1
    [entry] = await rig.storage.journal(kind="risk.rejected")
    assert entry.payload["reason"] == "REDUCE_ONLY" and entry.payload["client_order_id"] == "r1"
    assert await rig.manager.flush_rejections() == 0


async def test_run_loop_and_close(make_rig: MakeRig) -> None:
    import asyncio

    rig = make_rig(poll_interval_seconds=0.01)
    task = asyncio.create_task(rig.manager.run())
    rig.manager.kill_file.write_text("")
    for _ in range(500):
        if rig.manager.last_report is not None and rig.manager.last_report.finished_at is not None:
            break
        await asyncio.sleep(0.01)
    assert rig.manager.last_report is not None and rig.manager.last_report.trigger is Trigger.KILL_FILE
    await rig.manager.close()
    await asyncio.wait_for(task, 5)
    rig.manager.observe_data_age("BTC-USD", 1e9)  # closed: nothing more starts
    assert not rig.manager.kill_in_progress


# --- restore and resume ----------------------------------------------------------------------------


async def test_restore_keeps_halted_and_reruns_an_unconfirmed_kill(make_rig: MakeRig, storage: Storage) -> None:
    await storage.set_trading_state("HALTED", "DAILY_LOSS: boom", emergency={"trigger": "DAILY_LOSS", "confirmed": False})
    rig = make_rig()
    rig.orders.open = {"v9": "BTC-USD"}
    assert await rig.manager.restore() is TradingState.HALTED
    await rig.manager.settle()
    assert rig.manager.last_report is not None and rig.manager.last_report.trigger is Trigger.RESTART_UNCONFIRMED
    assert rig.orders.open == {}

    await storage.set_trading_state("HALTED", "MANUAL: x", emergency={"trigger": "MANUAL", "confirmed": True})
    rig2 = make_rig()
    assert await rig2.manager.restore() is TradingState.HALTED
    await rig2.manager.settle()
    assert rig2.manager.last_report is None  # confirmed before: only the state comes back
    assert rig2.risk.state_reason.startswith("restored")

    # a HALTED persisted by the order manager's failed reconciliation is restored as it is
    await storage.set_trading_state("HALTED", "reconciliation failed: x", emergency={"source": "reconciliation"})
    rig3 = make_rig()
    rig3.manager.kill_file.write_text("")
    assert await rig3.manager.restore(watch_kill_file=False) is TradingState.HALTED
    await rig3.manager.settle()
    assert rig3.manager.last_report is None  # no kill re-run, and the kill file was not looked at


async def test_restore_active_and_reduce_only(make_rig: MakeRig, storage: Storage) -> None:
    rig = make_rig()
    assert await rig.manager.restore() is TradingState.ACTIVE  # nothing persisted
    await storage.set_trading_state("REDUCE_ONLY", "operator")
    rig2 = make_rig()
    assert await rig2.manager.restore() is TradingState.REDUCE_ONLY
    rig3 = make_rig()
    rig3.manager.kill_file.write_text("")
    await rig3.manager.restore()
    await rig3.manager.settle()
    assert rig3.manager.last_report is not None and rig3.manager.last_report.trigger is Trigger.KILL_FILE


async def test_restart_comes_back_halted_until_resume(make_rig: MakeRig) -> None:
    rig = make_rig()
    await rig.manager.trigger(Trigger.MANUAL, "before restart")
    restarted = make_rig()  # same storage: a new process
    assert await restarted.manager.restore() is TradingState.HALTED
    result = await restarted.manager.resume("checked by hand")
    assert result.ok and result.state is TradingState.ACTIVE
    assert restarted.risk.state is TradingState.ACTIVE
    record = await restarted.storage.get_trading_state()
    assert record is not None and (record.state, record.reason, record.emergency) == ("ACTIVE", "checked by hand", None)
    assert restarted.alerts[-1].kind == "resumed"
    again = make_rig()
    assert await again.manager.restore() is TradingState.ACTIVE


async def test_resume_refused_by_health_checks_and_reconciliation(make_rig: MakeRig) -> None:
    async def market_data() -> list[str]:
        return ["BTC-USD book is stale"]

    def broken() -> list[str]:
        raise RuntimeError("probe crashed")

    rig = make_rig(health=[market_data, broken])
    await rig.manager.trigger(Trigger.MANUAL, "x")
    result = await rig.manager.resume()
    assert not result.ok and result.state is TradingState.HALTED
    assert result.problems == ["market_data: BTC-USD book is stale", "broken: RuntimeError: probe crashed"]
    assert rig.risk.state is TradingState.HALTED
    assert "emergency.resume_refused" in await rig.journal_kinds()
    assert rig.alerts[-1].kind == "resume_refused"

    rig2 = make_rig()
    await rig2.manager.trigger(Trigger.MANUAL, "x")
    rig2.orders.recon = Recon(False, ["venue has order v7 we do not know"])
    result2 = await rig2.manager.resume()
    assert result2.problems == ["reconciliation: venue has order v7 we do not know"]
    rig2.orders.recon = Recon(False, [])
    assert (await rig2.manager.resume()).problems == ["reconciliation: failed"]
    rig2.orders.recon_error = VenueUnavailable("down")
    assert (await rig2.manager.resume()).problems == ["reconciliation: VenueUnavailable: down"]
    rig2.orders.recon_error = None
    rig2.orders.recon = Recon(True)
    assert (await rig2.manager.resume(state=TradingState.REDUCE_ONLY)).ok
    assert rig2.risk.state is TradingState.REDUCE_ONLY
    with pytest.raises(InvalidValue, match="resume"):
        await rig2.manager.resume(state=TradingState.HALTED)


async def test_resume_removes_the_kill_file_and_is_refused_during_a_kill(make_rig: MakeRig) -> None:
    import asyncio

    rig = make_rig(cancel_timeout_seconds=1.0, use_venue_cancel=False)
    rig.manager.kill_file.write_text("")
    rig.orders.open = {"stuck": "BTC-USD"}
    rig.orders.never_cancel = {"stuck"}
    rig.manager.check_kill_file()
    await asyncio.sleep(0)
    assert rig.manager.kill_in_progress
    refused = await rig.manager.resume()
    assert "a kill is still in progress" in refused.problems
    await rig.manager.settle()
    rig.orders.open.clear()
    result = await rig.manager.resume()
    assert result.ok
    assert not rig.manager.kill_file.exists()


async def test_alert_hook_failure_does_not_stop_the_kill(make_rig: MakeRig) -> None:
    rig = make_rig()

    def bad_hook(alert: Alert) -> None:
        raise RuntimeError("webhook down")

    assert rig.manager.alert is not None  # the rig's recording hook
    rig.manager.attach_alert(bad_hook)
    assert rig.manager.alert is bad_hook
    report = await rig.manager.trigger(Trigger.MANUAL, "hook fails")
    assert report.confirmed


@pytest.mark.parametrize(
    ("errors", "retries", "rate_limited", "expected"),
    [
        (0, 0, 0, 0),
        (0, 3, 3, 0),  # a 429 then success, three times: pacing, not failure
        (1, 3, 4, 0),  # every attempt of one request answered 429: still pacing
        (1, 3, 0, 4),  # every attempt of one request failed (5xx / timeout): four failures
        (0, 2, 0, 2),  # two failed attempts, then success
        (2, 5, 1, 6),  # a mix: one of the failed attempts was a 429
    ],
)
def test_venue_failures_counts_failed_attempts_but_not_429s(errors: int, retries: int, rate_limited: int,
                                                           expected: int) -> None:
    from types import SimpleNamespace

    from cryptoj.emergency_manager import venue_failures

    counters = SimpleNamespace(requests=10, errors=errors, retries=retries, rate_limited=rate_limited)
    assert venue_failures(counters) == expected


async def test_journal_failure_during_a_step_does_not_stop_the_kill(make_rig: MakeRig, storage: Storage) -> None:
    rig = make_rig()
    real = storage.append_journal
    calls = 0

    async def flaky(kind: str, payload: Any, *, at: datetime | None = None) -> int:
        nonlocal calls
        calls += 1
        if kind == "emergency.step" and calls == 3:
            raise StorageError("disk full")
        return await real(kind, payload, at=at)

    storage.append_journal = flaky  # type: ignore[method-assign]
    report = await rig.manager.trigger(Trigger.MANUAL, "db hiccup")
    assert report.confirmed and len(report.steps) == 4


async def test_tick_trips_on_equity_fed_straight_to_the_risk_engine(make_rig: MakeRig) -> None:
    rig = make_rig(risk_config=RiskConfig(daily_loss_limit_fraction=D("0.05")))
    rig.risk.on_equity(D("10000"))
    rig.risk.on_equity(D("9400"))  # an engine that feeds the risk engine directly, not observe_equity
    await rig.manager.tick()
    await rig.manager.settle()
    assert rig.manager.last_report is not None and rig.manager.last_report.trigger is Trigger.DAILY_LOSS


async def test_tick_polls_venue_error_count_and_prices(make_rig: MakeRig) -> None:
    count = [7]  # errors before the manager started do not count
    rig = make_rig(error_rate_threshold=3, errors=lambda: count[0])
    await rig.manager.tick()
    count[0] = 9
    await rig.manager.tick()
    await rig.manager.settle()
    assert rig.manager.last_report is None  # 2 new errors: under the threshold
    count[0] = 10
    await rig.manager.tick()
    await rig.manager.settle()
    assert rig.manager.last_report is not None and rig.manager.last_report.trigger is Trigger.ERROR_RATE

    quotes: dict[str, Decimal | None] = {"BTC-USD": D("100"), "ETH-USD": None}
    rig2 = make_rig(price_move_fraction=D("0.1"), prices=lambda: quotes)
    await rig2.manager.tick()
    quotes["BTC-USD"] = D("120")
    await rig2.manager.tick()
    await rig2.manager.settle()
    assert rig2.manager.last_report is not None and rig2.manager.last_report.trigger is Trigger.PRICE_MOVE


async def test_a_failing_database_does_not_stop_the_kill(make_rig: MakeRig, storage: Storage) -> None:
    rig = make_rig()
    rig.orders.open = {"v1": "BTC-USD"}

    async def broken(*args: Any, **kwargs: Any) -> None:
        raise StorageError("database is locked")

    storage.set_trading_state = broken  # type: ignore[method-assign]
    report = await rig.manager.trigger(Trigger.MANUAL, "db down")
    assert report.confirmed and rig.orders.open == {}  # the orders were cancelled all the same
    assert rig.risk.state is TradingState.HALTED
    assert not report.steps[0].ok and "NOT persisted" in report.steps[0].detail
    assert report.persisted is False
    with pytest.raises(InvalidValue, match=r"emergency\.trigger"):
        await rig.manager.trigger("PANIC", "unknown trigger name")
