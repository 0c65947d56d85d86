"""Property-based checking of the operator API against its own OpenAPI schema (schemathesis).

The app runs under uvicorn on 127.0.0.1 in a background thread (its own event loop,
with a view over real components: SQLite Storage, Portfolio, RiskEngine, holding
orders and fills). Schemathesis generates requests for every operation (valid and
invalid parameters and bodies, with and without the token) and checks that none gets
a server error and that every response matches the schema.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.api_support import ServerThread

pytestmark = pytest.mark.integration

TOKEN = "s" * 40
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    server = ServerThread(tmp_path_factory.mktemp("schema") / "api.db", TOKEN)
    server.thread.start()
    server.wait_ready()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def api_schema(api_server: ServerThread) -> Any:
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
