"""The dashboard in a real browser: headless Chromium (Debian's ``chromium``) driven by Playwright.

A demo-style engine runs against the simulator with its operator API; the browser
opens ``/``, is refused with a wrong token, connects with the right one, sees
positions and the equity chart update, opens a resting order's row, clicks KILL and
confirms, and sees HALTED — and the simulator confirms that no order rests.
Skipped, saying why, when Playwright or a Chromium binary is not installed.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.api_engine_support import MakeSim, operator_stack

pytestmark = pytest.mark.integration

playwright_api = pytest.importorskip("playwright.async_api", reason="playwright is not installed (pip install -e '.[test]')")
expect = playwright_api.expect


def _chromium() -> str | None:
    explicit = os.environ.get("CRYPTOJ_CHROMIUM")
    if explicit:
        return explicit if Path(explicit).exists() else None
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


CHROMIUM = _chromium()
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium binary (apt-get install chromium; or CRYPTOJ_CHROMIUM)")

TIMEOUT_MS = 30_000


@needs_chromium
async def test_dashboard_shows_the_engine_and_kills_it(make_sim: MakeSim, tmp_path: Path) -> None:
    async with operator_stack(make_sim, tmp_path) as st, playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            page = await browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(st.api.url + "/")
            await page.fill("#token-input", "not-the-token")
            await page.click("#token-save")
            await expect(page.locator("#login-error")).to_have_text("wrong token", timeout=TIMEOUT_MS)
            assert await page.is_hidden("#main")

            await page.fill("#token-input", st.token)
            await page.click("#token-save")
            await page.wait_for_selector("#main", state="visible", timeout=TIMEOUT_MS)
            await expect(page.locator("#state")).to_have_text("ACTIVE", timeout=TIMEOUT_MS)
            assert await page.inner_text("#mode") == "sim"

            # the demo strategy trades: a position row appears and the equity chart grows
            await page.wait_for_selector("#positions tbody tr", timeout=TIMEOUT_MS)
            first = int(await page.inner_text("#chart-points"))
            await expect(page.locator("#chart-points")).not_to_have_text(str(first), timeout=TIMEOUT_MS)
            assert int(await page.inner_text("#chart-points")) > first
            assert (await page.get_attribute("#chart-line", "points") or "").count(",") >= 2
            await expect(page.locator("#live")).to_have_class("live on", timeout=TIMEOUT_MS)
            products = await page.locator("#positions tbody tr td:first-child").all_inner_texts()
            assert set(products) <= {"BTC-USD", "ETH-USD"} and products
            assert await page.locator("#feeds tbody tr").count() == 2

            # a resting order shows up with its cancel button
            coid = st.rest_far_below()
            await page.wait_for_selector(f"#orders tbody tr[data-coid='{coid}']", timeout=TIMEOUT_MS)

            # KILL asks first; cancelling the dialog changes nothing
            await page.click("#kill-button")
            await page.wait_for_selector("#kill-dialog[open]", timeout=TIMEOUT_MS)
            await page.click("#kill-cancel")
            assert st.runtime.risk.state.value == "ACTIVE"

            await page.click("#kill-button")
            await page.fill("#kill-reason", "browser test")
            await page.click("#kill-confirm")
            await expect(page.locator("#state")).to_have_text("HALTED", timeout=TIMEOUT_MS)
            await expect(page.locator("#message")).to_contain_text("kill CONFIRMED", timeout=TIMEOUT_MS)
            await expect(page.locator("#orders tbody tr")).to_have_count(0, timeout=TIMEOUT_MS)
            assert st.sim_open_orders() == []  # the simulator: nothing rests
            assert st.runtime.risk.state.value == "HALTED"
            assert errors == []
        finally:
            await browser.close()
