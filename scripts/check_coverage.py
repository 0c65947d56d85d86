"""Fail when a seed component's coverage (with branches) is under its floor.

Reads the ``coverage.json`` written by ``make test``. The seed components are
checked once they exist; a missing one is reported, not failed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

SEED_COMPONENTS = {
    "market_data": 85.0,
    "websocket_handler": 85.0,
    "order_execution": 90.0,
    "risk_management": 90.0,
    "emergency_manager": 90.0,
    "trading_core": 90.0,
}


def main(path: str) -> int:
    data = json.loads(Path(path).read_text())
    files = data["files"]
    failed = False
    for name, floor in SEED_COMPONENTS.items():
        key = next((k for k in files if k.replace("\\", "/").endswith(f"cryptoj/{name}.py")), None)
        if key is None:
            print(f"  {name:<20} not built yet")
            continue
        pct = float(files[key]["summary"]["percent_covered"])
        ok = pct >= floor
        failed |= not ok
        print(f"  {name:<20} {pct:6.2f}%  (floor {floor:.0f}%)  {'ok' if ok else 'UNDER FLOOR'}")
    total = float(data["totals"]["percent_covered"])
    print(f"  {'total':<20} {total:6.2f}%")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "coverage.json"))
