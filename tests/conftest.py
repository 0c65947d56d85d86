"""Fixtures shared by every test.

- ``shared_data``: the project's shared test data (``../shared/data`` beside the repo,
  or ``$CRYPTOJ_SHARED_DIR/data``): real Coinbase payloads and historical candles.
- The simulator fixtures (``sim`` and friends) live in ``tests/sim_fixtures.py`` and are
  loaded as a plugin, so every integration test can start a real simulator on a free
  loopback port.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(os.environ.get("CRYPTOJ_SHARED_DIR", REPO_ROOT.parent / "shared"))
SHARED_DATA = SHARED_DIR / "data"
COINBASE_FIXTURES = SHARED_DATA / "coinbase-fixtures"

if (Path(__file__).parent / "sim_fixtures.py").exists():
    pytest_plugins = ["tests.sim_fixtures"]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared data directory; a missing one is a setup error, not a skip."""
    if not SHARED_DATA.is_dir():
        raise RuntimeError(f"shared test data not found at {SHARED_DATA} (set CRYPTOJ_SHARED_DIR)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def coinbase_fixtures(shared_data: Path) -> Path:
    return shared_data / "coinbase-fixtures"
