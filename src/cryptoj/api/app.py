"""The operator API: FastAPI app over an :class:`~cryptoj.api.views.OperatorView`.

:func:`create_app` builds the app; :func:`serve_app` runs it with uvicorn inside
the current event loop (no signal handlers of its own: the engine owns SIGINT /
SIGTERM); :func:`serve_operator_api` does both for a running engine, with the
token from the state directory (printed once, when created).

Endpoints (see ``docs/operations.md`` and ``/docs``): ``GET /api/status``,
``/api/positions``, ``/api/balances``, ``/api/orders``, ``/api/fills``,
``/api/pnl``, ``/api/risk``, ``/api/events``, ``/api/stream`` (server-sent
events); ``POST /api/kill``, ``/api/resume``, ``/api/orders/{id}/cancel``,
``/api/orders/cancel-all``. All of them need ``Authorization: Bearer <token>``
(401 otherwise). Open without a token: ``/healthz``, ``/metrics``, and the pages
that hold no data (the dashboard's HTML/JS/CSS at ``/`` and ``/static``, and the
OpenAPI schema at ``/openapi.json`` / ``/docs``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Annotated, Any, Final, Literal, TextIO

import orjson
import structlog
import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles

from cryptoj.api.auth import check_bearer
from cryptoj.api.views import (
    BalanceView,
    EventView,
    FillView,
    KillRequest,
    KillResult,
    LiveUpdate,
    OperatorView,
    OrderView,
    PnlPoint,
    PositionView,
    ResumeRequest,
    ResumeResult,
    RiskView,
    StatusView,
)
from cryptoj.errors import (
    CryptojError,
    InvalidValue,
    OrderNotFound,
    OrderRejected,
    RiskRejected,
    TradingHalted,
    VenueError,
    VenueUnavailable,
)
from cryptoj.health import HealthMonitor, HealthStatus
from cryptoj.metrics import CONTENT_TYPE, OperatorMetrics

__all__ = ["ServedApi", "announce_token", "create_app", "is_loopback", "serve_app"]

log = structlog.get_logger("cryptoj.api")

PRODUCT_PATTERN: Final = r"^[A-Z0-9]{1,20}-[A-Z0-9]{1,20}$"
COID_PATTERN: Final = r"^[A-Za-z0-9._:\-]{1,128}$"
STATIC_DIR: Final = resources.files("cryptoj.api") / "static"
DOCS_ASSETS_DIR: Final = resources.files("fastapi_offline") / "static"
"""Swagger UI 5 and ReDoc bundles shipped in the ``fastapi-offline`` wheel (licences there): ``/docs`` and
``/redoc`` load them from this server, never from a CDN."""
DOCS_ASSETS_URL: Final = "/docs-assets"

_bearer = HTTPBearer(auto_error=False, description="The token from <state_dir>/api_token")

_DASHBOARD_HEADERS: Final = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": code, "detail": message}, status_code=status)


def create_app(
    view: OperatorView,
    *,
    token: str,
    metrics: OperatorMetrics | None = None,
    health: HealthMonitor | None = None,
    sse_ping_seconds: float = 15.0,
    sample_interval: float = 1.0,
) -> FastAPI:
    """The operator API for ``view``, protected by ``token`` (see the module doc)."""
    if len(token) < 16:
        raise InvalidValue("token", "********", "the API token must be at least 16 characters")
    metrics = metrics or OperatorMetrics(view.metrics_snapshot)
    health = health or HealthMonitor(view.health_sample)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        health.probe.start()

        async def sample() -> None:
            while True:
                await asyncio.sleep(sample_interval)
                metrics.sample_rates()

        sampler = asyncio.get_running_loop().create_task(sample(), name="metrics-rate-sampler")
        try:
            yield
        finally:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
            await health.probe.stop()

    app = FastAPI(
        title="CryptoJ Trader operator API",
        version="1",
        description="Watch and stop a running CryptoJ engine. Every /api endpoint needs `Authorization: Bearer <token>`; "
        "the token is in `<state_dir>/api_token`. Money, prices and sizes are exact decimal strings.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.view = view
    app.state.metrics = metrics
    app.state.health = health

    def require_token(
        request: Request, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)] = None
    ) -> None:
        if not check_bearer(request.headers.get("authorization"), token):
            raise HTTPException(status_code=401, detail="missing or wrong bearer token",
                                headers={"WWW-Authenticate": 'Bearer realm="cryptoj"'})

    auth = [Depends(require_token)]
    unauthorized: dict[int | str, dict[str, Any]] = {401: {"description": "missing or wrong bearer token"}}

    @app.exception_handler(OrderNotFound)
    async def _not_found(_r: Request, exc: OrderNotFound) -> JSONResponse:
        return _error(404, "order_not_found", str(exc))

    @app.exception_handler(InvalidValue)
    async def _invalid(_r: Request, exc: InvalidValue) -> JSONResponse:
        return _error(422, "invalid_value", str(exc))

    @app.exception_handler(RiskRejected)
    async def _risk(_r: Request, exc: RiskRejected) -> JSONResponse:
        return _error(409, "risk_rejected", str(exc))

    @app.exception_handler(TradingHalted)
    async def _halted(_r: Request, exc: TradingHalted) -> JSONResponse:
        return _error(409, "trading_halted", str(exc))

    @app.exception_handler(OrderRejected)
    async def _rejected(_r: Request, exc: OrderRejected) -> JSONResponse:
        return _error(409, "order_rejected", str(exc))

    @app.exception_handler(VenueUnavailable)
    async def _unavailable(_r: Request, exc: VenueUnavailable) -> JSONResponse:
        return _error(503, "venue_unavailable", str(exc))

    @app.exception_handler(VenueError)
    async def _venue(_r: Request, exc: VenueError) -> JSONResponse:
        return _error(502, "venue_error", str(exc))

    @app.exception_handler(CryptojError)
    async def _other(_r: Request, exc: CryptojError) -> JSONResponse:
        return _error(409, type(exc).__name__, str(exc))

    # -- open endpoints --------------------------------------------------------------------------

    @app.get("/healthz", tags=["open"], summary="Health per component (no auth, no secrets)",
             responses={503: {"description": "unhealthy"}})
    def healthz() -> JSONResponse:
        report = health.report()
        return JSONResponse(report.as_dict(), status_code=503 if report.status is HealthStatus.UNHEALTHY else 200)

    @app.get("/metrics", tags=["open"], summary="Prometheus metrics (no auth)", response_class=Response)
    def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/", include_in_schema=False)
    def dashboard() -> FileResponse:
        return FileResponse(str(STATIC_DIR / "index.html"), headers=_DASHBOARD_HEADERS)

    app.mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")

    # OpenAPI docs without a CDN: the Swagger UI / ReDoc bundles are served from the installed package
    app.mount(DOCS_ASSETS_URL, StaticFiles(directory=str(DOCS_ASSETS_DIR)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def swagger_docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{DOCS_ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS_URL}/favicon.png",
        )

    @app.get("/redoc", include_in_schema=False)
    def redoc_docs() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{DOCS_ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{DOCS_ASSETS_URL}/favicon.png",
            with_google_fonts=False,
        )

    @app.middleware("http")
    async def _static_headers(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        if request.url.path.startswith("/static/"):
            response.headers.update(_DASHBOARD_HEADERS)
        return response

    # -- reads -------------------------------------------------------------------------------------

    @app.get("/api/status", dependencies=auth, responses=unauthorized, tags=["read"])
    def status() -> StatusView:
        """Mode, uptime, trading state, feed health per product, reconciliation state."""
        return view.status()

    @app.get("/api/positions", dependencies=auth, responses=unauthorized, tags=["read"])
    def positions() -> list[PositionView]:
        return view.positions()

    @app.get("/api/balances", dependencies=auth, responses=unauthorized, tags=["read"])
    def balances() -> list[BalanceView]:
        return view.balances()

    @app.get("/api/orders", dependencies=auth, responses=unauthorized, tags=["read"])
    async def orders(
        state: Literal["open", "recent", "all"] = "all",
        product_id: Annotated[str | None, Query(pattern=PRODUCT_PATTERN)] = None,
        side: Literal["BUY", "SELL"] | None = None,
        status: Annotated[str | None, Query(pattern=r"^[A-Z_]{1,32}$")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[OrderView]:
        """Open orders, finished ones (``recent``) or both, newest first."""
        return await view.orders(state, product_id=product_id, side=side, status=status, limit=limit)

    @app.get("/api/fills", dependencies=auth, responses=unauthorized, tags=["read"])
    async def fills(
        product_id: Annotated[str | None, Query(pattern=PRODUCT_PATTERN)] = None,
        client_order_id: Annotated[str | None, Query(pattern=COID_PATTERN)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[FillView]:
        """Fills, newest first."""
        return await view.fills(product_id=product_id, client_order_id=client_order_id, limit=limit)

    @app.get("/api/pnl", dependencies=auth, responses=unauthorized, tags=["read"])
    def pnl(limit: Annotated[int, Query(ge=1, le=10_000)] = 1000) -> list[PnlPoint]:
        """The equity / PnL time series, oldest first."""
        return view.pnl(limit=limit)

    @app.get("/api/risk", dependencies=auth, responses=unauthorized, tags=["read"])
    async def risk() -> RiskView:
        """Limits, their usage, rejections by reason and the most recent ones."""
        return await view.risk()

    @app.get("/api/events", dependencies=auth, responses=unauthorized, tags=["read"])
    async def events(
        since_id: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
        kind: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    ) -> list[EventView]:
        """Journal entries after ``since_id``, oldest first."""
        return await view.events(since_id=since_id, kind=kind, limit=limit)

    @app.get("/api/stream", dependencies=auth, responses={**unauthorized, 200: {"content": {"text/event-stream": {}}}},
             tags=["read"], response_class=StreamingResponse)
    async def stream(request: Request) -> StreamingResponse:
        """Live updates as server-sent events (``event: order|fill|equity|state|event|lagged``; ``data``: JSON)."""
        return StreamingResponse(_sse(view, request, sse_ping_seconds), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    # -- actions ---------------------------------------------------------------------------------------

    @app.post("/api/kill", dependencies=auth, responses=unauthorized, tags=["control"])
    async def kill(body: KillRequest | None = None) -> KillResult:
        """Trip the kill switch: HALTED, cancel every order (optionally flatten), confirm with the venue."""
        body = body or KillRequest()
        log.warning("api_kill", reason=body.reason, flatten=body.flatten)
        return await view.kill(body.reason, flatten=body.flatten)

    @app.post("/api/resume", dependencies=auth, responses=unauthorized, tags=["control"])
    async def resume(body: ResumeRequest | None = None) -> ResumeResult:
        """Leave HALTED after health checks and a reconciliation (``ok=false`` with the problems otherwise)."""
        body = body or ResumeRequest()
        log.warning("api_resume", reason=body.reason, state=body.state)
        return await view.resume(body.reason, state=body.state)

    @app.post("/api/orders/cancel-all", dependencies=auth, responses=unauthorized, tags=["control"])
    async def cancel_all(product_id: Annotated[str | None, Query(pattern=PRODUCT_PATTERN)] = None) -> list[OrderView]:
        """Cancel every open order (of one product)."""
        log.warning("api_cancel_all", product_id=product_id)
        return await view.cancel_all(product_id)

    @app.post("/api/orders/{client_order_id}/cancel", dependencies=auth,
              responses={**unauthorized, 404: {"description": "no such order"}}, tags=["control"])
    async def cancel(client_order_id: Annotated[str, Path(pattern=COID_PATTERN)]) -> OrderView:
        """Cancel one order by its client order id."""
        log.warning("api_cancel", client_order_id=client_order_id)
        return await view.cancel_order(client_order_id)

    return app


def _sse_event(update: LiveUpdate) -> bytes:
    data = orjson.dumps(update.model_dump(mode="json"))
    return b"event: " + update.kind.encode() + b"\ndata: " + data + b"\n\n"


async def _sse(view: OperatorView, request: Request, ping: float) -> AsyncIterator[bytes]:
    updates = view.updates()
    it = updates.__aiter__()
    yield b": connected\n\nretry: 2000\n\n"
    pending: asyncio.Future[LiveUpdate] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(it.__anext__())
            done, _ = await asyncio.wait({pending}, timeout=ping)
            if not done:
                if await request.is_disconnected():
                    return
                yield b": ping\n\n"
                continue
            try:
                update = pending.result()
            except StopAsyncIteration:
                return
            finally:
                pending = None
            yield _sse_event(update)
    finally:
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await pending
        aclose = getattr(it, "aclose", None)
        if aclose is not None:
            await aclose()


# --- serving -----------------------------------------------------------------------------------------


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the engine owns SIGINT/SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass(frozen=True, slots=True)
class ServedApi:
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


@asynccontextmanager
async def serve_app(app: FastAPI, host: str = "127.0.0.1", port: int = 8080, *, allow_non_loopback: bool = False,
                    startup_timeout: float = 30.0) -> AsyncIterator[ServedApi]:
    """Serve ``app`` in this event loop until the block exits (port 0 picks a free port)."""
    if not is_loopback(host):
        if not allow_non_loopback:
            raise InvalidValue("api.host", host, "not a loopback address; set api.allow_non_loopback = true to listen on it")
        log.warning("api_listening_on_non_loopback", host=host, port=port,
                    advice="anyone who can reach this address and has the token controls trading; put TLS in front")
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="on",
                            loop="none", http="h11", ws="none")
    server = _Server(config)

    async def run() -> None:
        try:
            await server.serve()
        except SystemExit as exc:  # uvicorn exits the process when it cannot bind: make it an error here
            message = f"the operator API did not start: cannot listen (exit {exc.code})"
            raise InvalidValue("api", f"{host}:{port}", message) from None

    task = asyncio.get_running_loop().create_task(run(), name="operator-api")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + startup_timeout
    while not server.started:
        if task.done():
            exc = task.exception() if not task.cancelled() else None
            raise InvalidValue("api", f"{host}:{port}", f"the operator API did not start: {exc or 'server exited'}")
        if loop.time() > deadline:  # pragma: no cover - a machine this slow fails elsewhere first
            task.cancel()
            raise InvalidValue("api", f"{host}:{port}", "the operator API did not start in time")
        await asyncio.sleep(0.01)
    bound = server.servers[0].sockets[0].getsockname()
    served = ServedApi(host, int(bound[1]))
    log.info("api_listening", url=served.url)
    try:
        yield served
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task


def announce_token(token_value: str, path: str, out: TextIO | None = None) -> None:
    """Print a freshly generated token once (to the terminal, not to the logs)."""
    stream = out or sys.stderr
    stream.write(f"\nOperator API token (saved to {path}, mode 0600; shown only this once):\n  {token_value}\n\n")
    stream.flush()

