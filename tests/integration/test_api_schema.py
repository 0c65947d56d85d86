"""Property-based checking of the operator API against its own OpenAPI schema (schemathesis).

The app runs under uvicorn on 127.0.0.1 in a background thread (its own event loop,
with a view over real components: SQLite Storage, Portfolio, RiskEngine, holding
orders and fills). Schemathesis generates requests for every operation (valid and
invalid parameters and bodies, with and without the token) and checks that none gets
a server error and that every response matches the schema.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from cryptoj.api.app import create_app, serve_app
from cryptoj.model.money import Side
from cryptoj.storage import Storage
from tests.api_support import LocalView, StepClock

pytestmark = pytest.mark.integration

TOKEN = "s" * 40
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class _ServerThread:
    def __init__(self, db: Path) -> None:
        self.db = db
        self.url = ""
        self.spec: dict[str, Any] = {}
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.thread = threading.Thread(target=self._main, name="api-schema-server", daemon=True)

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # surfaced by the fixture
            self.error = exc
            self.ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        clock = StepClock()
        storage = await Storage.open(f"sqlite+aiosqlite:///{self.db}", clock=clock)
        try:
            view = LocalView(storage, clock)
            view.portfolio.deposit("ETH", view.portfolio.balance("USD").available / 10000)
            a = await view.place("BTC-USD", Side.BUY, "0.1", "49000")
            await view.fill(a.client_order_id, "0.05")
            await view.place("ETH-USD", Side.SELL, "1", "3100")
            view.sample_equity()
            app = create_app(view, token=TOKEN, sse_ping_seconds=0.5)
            self.spec = app.openapi()
            async with serve_app(app, "127.0.0.1", 0) as served:
                self.url = served.url
                self.ready.set()
                await self._stop.wait()
        finally:
            await storage.close()

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(30)


@pytest.fixture(scope="module")
def api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_ServerThread]:
    server = _ServerThread(tmp_path_factory.mktemp("schema") / "api.db")
    server.thread.start()
    assert server.ready.wait(60), "the API server did not start"
    if server.error is not None:
        raise server.error
    yield server
    server.stop()


@pytest.fixture(scope="module")
def api_schema(api_server: _ServerThread) -> Any:
    schema = schemathesis.openapi.from_dict(api_server.spec)
    schema.config.update(base_url=api_server.url)
    return schema.exclude(path="/api/stream")  # an endless event stream: tested in test_api_http / test_api_engine


def test_no_server_errors_and_responses_match_the_schema(api_schema: Any) -> None:
    """Every operation, generated cases (positive and negative), each checked by schemathesis' default checks."""
    failures: list[str] = []
    labels: list[str] = []
    calls = 0
    for result in api_schema.get_all_operations():
        operation = result.ok()
        labels.append(operation.label)

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case: schemathesis.Case) -> None:
            nonlocal calls
            calls += 1
            case.call_and_validate(headers=AUTH)

        try:
            check()
        except Exception as exc:
            failures.append(f"{operation.label}: {exc}")
    assert len(labels) == 14, labels  # every operation but the stream
    assert calls >= 14 * 10
    assert failures == []
