"""The operator API over a view built on real components (Storage on SQLite, Portfolio, RiskEngine)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from cryptoj.api.app import create_app
from cryptoj.errors import InvalidValue, RiskRejected
from cryptoj.model.money import Side
from cryptoj.storage import Storage
from tests.api_support import LocalView, StepClock

TOKEN = "t" * 43
AUTH = {"Authorization": f"Bearer {TOKEN}"}

READS = ["/api/status", "/api/positions", "/api/balances", "/api/orders", "/api/fills", "/api/pnl", "/api/risk", "/api/events",
         "/api/stream"]
ACTIONS = ["/api/kill", "/api/resume", "/api/orders/x-1/cancel", "/api/orders/cancel-all"]


@pytest.fixture
async def view(tmp_path: Path) -> AsyncIterator[LocalView]:
    clock = StepClock()
    storage = await Storage.open(f"sqlite+aiosqlite:///{tmp_path / 'api.db'}", clock=clock)
    try:
        yield LocalView(storage, clock)
    finally:
        await storage.close()


@pytest.fixture
async def client(view: LocalView) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(view, token=TOKEN)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                                                    base_url="http://test") as c:
        yield c


@pytest.mark.parametrize("path", READS)
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"},
                                     {"Authorization": "Bearer"}], ids=["missing", "wrong", "scheme", "empty"])
async def test_reads_need_the_token(client: httpx.AsyncClient, path: str, headers: dict[str, str]) -> None:
    r = await client.get(path, headers=headers)
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert TOKEN not in r.text


@pytest.mark.parametrize("path", ACTIONS)
async def test_actions_need_the_token_and_change_nothing(client: httpx.AsyncClient, view: LocalView, path: str) -> None:
    order = await view.place("BTC-USD", Side.BUY, "0.01", "49000")
    r = await client.post(path, headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401
    assert view.risk_engine.state.value == "ACTIVE"
    assert not order.is_terminal


async def test_open_endpoints_need_no_token(client: httpx.AsyncClient) -> None:
    h = await client.get("/healthz")
    assert h.status_code == 200
    assert h.json()["status"] in ("healthy", "degraded")
    m = await client.get("/metrics")
    assert m.status_code == 200
    assert "cryptoj_trading_state" in m.text
    page = await client.get("/")
    assert page.status_code == 200
    assert "kill-button" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    js = await client.get("/static/app.js")
    assert js.status_code == 200
    assert "Authorization" in js.text
    assert js.headers["x-content-type-options"] == "nosniff"
    assert (await client.get("/openapi.json")).json()["info"]["title"].startswith("CryptoJ")


async def test_openapi_docs_work_offline(client: httpx.AsyncClient) -> None:
    """/docs (Swagger UI) and /redoc load every asset from this server: no CDN, no Google fonts."""
    import re

    for path, asset_kinds in (("/docs", (".js", ".css")), ("/redoc", (".js",))):
        page = await client.get(path)
        assert page.status_code == 200, path
        assert "/openapi.json" in page.text
        urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text) + re.findall(r"url: '([^']+)'", page.text)
        assert urls, page.text
        assert not [u for u in urls if u.startswith(("http:", "https:", "//"))], urls
        for kind in asset_kinds:
            asset = next(u for u in urls if u.endswith(kind))
            got = await client.get(asset)
            assert got.status_code == 200 and len(got.content) > 10_000, asset
    assert "cdn.jsdelivr.net" not in (await client.get("/docs")).text
    assert "fonts.googleapis.com" not in (await client.get("/redoc")).text


async def test_status_positions_balances(client: httpx.AsyncClient, view: LocalView) -> None:
    o = await view.place("BTC-USD", Side.BUY, "0.5", "50000.00")
    await view.fill(o.client_order_id)
    view.clock.advance(30)
    st = (await client.get("/api/status", headers=AUTH)).json()
    assert st["mode"] == "sim"
    assert st["trading_state"] == "ACTIVE"
    assert st["uptime_s"] == 30.0
    assert [f["product_id"] for f in st["feeds"]] == ["BTC-USD", "ETH-USD"]
    assert st["reconciliation"]["ok"] is True
    pos = (await client.get("/api/positions", headers=AUTH)).json()
    assert pos == [{"product_id": "BTC-USD", "base_currency": "BTC", "quote_currency": "USD", "size": "0.5",
                    "avg_entry_price": "50000.00", "mark_price": "50000.00", "realised_pnl": "-0.5",
                    "unrealised_pnl": "0.000", "fees_paid": "0.5"}]
    bal = {b["currency"]: b for b in (await client.get("/api/balances", headers=AUTH)).json()}
    # 100000 - 0.5 * 50000 - 0.5 fee, exact
    assert bal["USD"]["available"] == "74999.500"
    assert bal["BTC"]["total"] == "0.5"


async def test_orders_filters_and_fills(client: httpx.AsyncClient, view: LocalView) -> None:
    view.portfolio.deposit("ETH", Decimal("5"))
    a = await view.place("BTC-USD", Side.BUY, "0.1", "49000")
    view.clock.advance(1)
    b = await view.place("ETH-USD", Side.SELL, "1", "3100")
    view.clock.advance(1)
    c = await view.place("ETH-USD", Side.BUY, "2", "2900")
    await view.fill(c.client_order_id)
    all_ids = [o["client_order_id"] for o in (await client.get("/api/orders", headers=AUTH)).json()]
    assert all_ids == [c.client_order_id, b.client_order_id, a.client_order_id]
    open_ids = [o["client_order_id"] for o in (await client.get("/api/orders?state=open", headers=AUTH)).json()]
    assert open_ids == [b.client_order_id, a.client_order_id]
    recent = (await client.get("/api/orders?state=recent", headers=AUTH)).json()
    assert [o["status"] for o in recent] == ["FILLED"]
    assert recent[0]["filled_size"] == "2" and recent[0]["average_price"] == "2900"
    eth = await client.get("/api/orders", params={"product_id": "ETH-USD", "side": "SELL"}, headers=AUTH)
    assert [o["client_order_id"] for o in eth.json()] == [b.client_order_id]
    assert len((await client.get("/api/orders?limit=1", headers=AUTH)).json()) == 1
    assert (await client.get("/api/orders?status=FILLED", headers=AUTH)).json()[0]["client_order_id"] == c.client_order_id
    fills = (await client.get("/api/fills", headers=AUTH)).json()
    assert [(f["client_order_id"], f["price"], f["size"]) for f in fills] == [(c.client_order_id, "2900", "2")]
    assert (await client.get("/api/fills?product_id=BTC-USD", headers=AUTH)).json() == []
    by_id = await client.get("/api/fills", params={"client_order_id": c.client_order_id}, headers=AUTH)
    assert len(by_id.json()) == 1


@pytest.mark.parametrize("query", ["state=closed", "limit=0", "limit=1001", "product_id=btc-usd", "side=HOLD",
                                   "status=filled;drop"])
async def test_bad_filters_are_422_naming_the_parameter(client: httpx.AsyncClient, query: str) -> None:
    r = await client.get(f"/api/orders?{query}", headers=AUTH)
    assert r.status_code == 422
    assert query.split("=")[0] in r.text


async def test_pnl_series_and_risk(client: httpx.AsyncClient, view: LocalView) -> None:
    view.sample_equity()
    view.clock.advance(60)
    view.marks["BTC-USD"] = Decimal("51000.00")
    o = await view.place("BTC-USD", Side.BUY, "1", "51000.00")
    await view.fill(o.client_order_id)
    view.marks["BTC-USD"] = Decimal("40000.00")
    view.clock.advance(60)
    view.sample_equity()
    with pytest.raises(RiskRejected):
        await view.place("BTC-USD", Side.BUY, "5", "40000.00")  # 200000 > max_order_notional 60000
    pnl = (await client.get("/api/pnl", headers=AUTH)).json()
    assert [p["equity"] for p in pnl] == ["100000", "99999.50", "88999.50"]
    assert pnl[-1]["unrealised_pnl"] == "-11000.00"
    assert (await client.get("/api/pnl?limit=1", headers=AUTH)).json() == pnl[-1:]
    risk = (await client.get("/api/risk", headers=AUTH)).json()
    assert risk["trading_state"] == "ACTIVE"
    assert risk["peak_equity"] == "100000"
    limits = {lim["name"]: lim for lim in risk["limits"]}
    assert limits["max_order_notional"]["limit"] == "60000"
    assert limits["max_open_orders"]["usage"] == "0"
    assert limits["max_total_exposure"]["limit"] is None
    assert limits["max_drawdown_fraction"]["fraction_used"] == pytest.approx(0.11000500 / 0.2, rel=1e-6)
    assert risk["rejections_by_reason"] == {"MAX_ORDER_NOTIONAL": 1}
    assert risk["recent_rejections"][0]["reason"] == "MAX_ORDER_NOTIONAL"
    assert "60000" in risk["recent_rejections"][0]["message"]


async def test_events_journal(client: httpx.AsyncClient, view: LocalView) -> None:
    first = await view.storage.append_journal("test.one", {"n": 1})
    await view.storage.append_journal("test.two", {"price": Decimal("1.10")})
    events = (await client.get("/api/events", headers=AUTH)).json()
    assert [e["kind"] for e in events] == ["test.one", "test.two"]
    assert events[1]["payload"] == {"price": "1.10"}
    later = (await client.get(f"/api/events?since_id={first}", headers=AUTH)).json()
    assert [e["kind"] for e in later] == ["test.two"]
    assert [e["kind"] for e in (await client.get("/api/events?kind=test.one", headers=AUTH)).json()] == ["test.one"]
    assert (await client.get("/api/events?since_id=-1", headers=AUTH)).status_code == 422


async def test_cancel_one_and_unknown(client: httpx.AsyncClient, view: LocalView) -> None:
    o = await view.place("BTC-USD", Side.BUY, "0.1", "49000")
    r = await client.post(f"/api/orders/{o.client_order_id}/cancel", headers=AUTH)
    assert r.status_code == 200
    assert r.json()["status"] == "CANCELLED"
    assert (await view.storage.load_order(o.client_order_id)).status.value == "CANCELLED"  # type: ignore[union-attr]
    missing = await client.post("/api/orders/no-such-order/cancel", headers=AUTH)
    assert missing.status_code == 404
    assert missing.json()["error"] == "order_not_found"
    assert "no-such-order" in missing.json()["detail"]
    bad = await client.post("/api/orders/bad%20id/cancel", headers=AUTH)
    assert bad.status_code == 422


async def test_cancel_all_by_product(client: httpx.AsyncClient, view: LocalView) -> None:
    a = await view.place("BTC-USD", Side.BUY, "0.1", "49000")
    b = await view.place("ETH-USD", Side.BUY, "1", "2900")
    r = await client.post("/api/orders/cancel-all?product_id=ETH-USD", headers=AUTH)
    assert [o["client_order_id"] for o in r.json()] == [b.client_order_id]
    assert not a.is_terminal
    r = await client.post("/api/orders/cancel-all", headers=AUTH)
    assert [o["client_order_id"] for o in r.json()] == [a.client_order_id]
    assert view.open_orders() == []


async def test_kill_then_resume(client: httpx.AsyncClient, view: LocalView) -> None:
    a = await view.place("BTC-USD", Side.BUY, "0.1", "49000")
    r = await client.post("/api/kill", json={"reason": "test kill", "flatten": False}, headers=AUTH)
    assert r.status_code == 200
    body = r.json()
    assert body["confirmed"] is True and body["trigger"] == "MANUAL" and body["trading_state"] == "HALTED"
    assert body["cancelled"] == [a.client_order_id]
    assert (await client.get("/api/status", headers=AUTH)).json()["trading_state"] == "HALTED"
    assert (await view.storage.get_trading_state()).state == "HALTED"  # type: ignore[union-attr]
    view.reconciled = view.reconciled.model_copy(update={"ok": False, "problems": ["BTC-USD: 0.1 at venue, 0 here"]})
    refused = (await client.post("/api/resume", json={}, headers=AUTH)).json()
    assert refused["ok"] is False and refused["trading_state"] == "HALTED"
    assert "BTC-USD: 0.1 at venue" in refused["problems"][0]
    view.reconciled = view.reconciled.model_copy(update={"ok": True, "problems": []})
    ok = (await client.post("/api/resume", json={"reason": "checked", "state": "REDUCE_ONLY"}, headers=AUTH)).json()
    assert ok == {"ok": True, "problems": [], "trading_state": "REDUCE_ONLY"}
    assert (await client.post("/api/resume", headers=AUTH)).json()["trading_state"] == "ACTIVE"
    assert (await client.post("/api/kill", headers=AUTH)).json()["trading_state"] == "HALTED"  # body optional


@pytest.mark.parametrize("body", [{"reason": ""}, {"reason": "x", "extra": 1}, {"flatten": "maybe"}])
async def test_kill_rejects_bad_bodies(client: httpx.AsyncClient, view: LocalView, body: dict[str, object]) -> None:
    r = await client.post("/api/kill", json=body, headers=AUTH)
    assert r.status_code == 422
    assert view.risk_engine.state.value == "ACTIVE"


async def test_resume_rejects_halted_as_target(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/resume", json={"state": "HALTED"}, headers=AUTH)
    assert r.status_code == 422


async def test_errors_from_the_view_map_to_status_codes(view: LocalView) -> None:
    from cryptoj.errors import AmbiguousOutcome, OrderRejected, StorageError, TradingHalted, VenueError, VenueUnavailable

    raised: list[Exception] = [OrderRejected("INSUFFICIENT_FUND", "no money"), TradingHalted("halted"),
                               VenueUnavailable("down"), VenueError("teapot"), StorageError("disk full"),
                               InvalidValue("limit", 0, "must be positive"), AmbiguousOutcome("c-1", "timeout")]
    expected = [409, 409, 503, 502, 409, 422, 502]

    class Failing(LocalView):
        async def cancel_all(self, product_id: str | None = None) -> list:  # type: ignore[type-arg]
            raise raised.pop(0)

    failing = Failing(view.storage, view.clock)
    app = create_app(failing, token=TOKEN)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
        codes = [(await c.post("/api/orders/cancel-all", headers=AUTH)).status_code for _ in expected]
    assert codes == expected


def test_short_token_is_refused(view: LocalView) -> None:
    with pytest.raises(InvalidValue, match="at least 16"):
        create_app(view, token="short")


async def test_unhealthy_is_503(view: LocalView) -> None:
    view.reconciled = view.reconciled.model_copy(update={"ok": False, "problems": ["order x unknown at venue"]})
    app = create_app(view, token=TOKEN)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
        r = await c.get("/healthz")
    assert r.status_code == 503
    rec = r.json()["components"]["reconciliation"]
    assert rec["status"] == "unhealthy"
    assert rec["reasons"] == ["reconciliation failed: order x unknown at venue"]
