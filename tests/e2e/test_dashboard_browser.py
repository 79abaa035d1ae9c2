"""The dashboard in a real browser (headless Chromium through chromedriver) against the
real `muto cloud serve`, real Mosquitto and simulated agents, during a rollout: what an
operator sees when signing in, watching the phases fill, asking why a vehicle is
blocked, and seeing the rollout complete, without reloading the page."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from muto.sim.profile import SimProfile
from tests.conftest import unavailable
from tests.support.rollout_rig import rig
from tests.support.waits import eventually

pytestmark = [pytest.mark.browser, pytest.mark.mqtt]
# 12 vehicles, nothing running yet: 6 canaries (3 regions x 2 models) and a wave of 6.
FLEET = SimProfile(poll_s=1.0)
# docs/dashboard.png is this page at the moment a wave vehicle is blocked:
#   MUTO_DASHBOARD_SCREENSHOT=docs/dashboard.png pytest tests/e2e/test_dashboard_browser.py
SCREENSHOT = os.environ.get("MUTO_DASHBOARD_SCREENSHOT")
CHROMIUM = ("chromium", "chromium-browser")
DRIVER = ("chromedriver",)


class Browser:
    """A headless Chromium page; every call blocks, so the async test runs them on a
    thread (the agents share the test's event loop)."""

    def __init__(self, driver: Any, base: str) -> None:
        self.driver = driver
        self.base = base

    def open(self, path: str) -> None:
        self.driver.get(self.base + path)

    def text(self, css: str = "main") -> str:
        from selenium.common.exceptions import (
            NoSuchElementException,
            StaleElementReferenceException,
        )

        try:
            return str(self.driver.find_element("css selector", css).text)
        except (NoSuchElementException, StaleElementReferenceException):
            return ""  # swapped by the live refresh in between: read again

    def wait_for(self, what: Callable[[], bool], timeout_s: float = 90) -> None:
        eventually(what, lambda: f"the page; it says:\n{self.text()}", timeout_s, interval=0.2)

    def sees(self, wanted: str, css: str = "main", timeout_s: float = 90) -> None:
        self.wait_for(lambda: wanted in self.text(css), timeout_s)

    def sign_in(self, token: str) -> None:
        self.driver.find_element("id", "token").send_keys(token)
        self.driver.find_element("css selector", "form.login button").click()
        self.wait_for(lambda: "/login" not in self.driver.current_url, 30)

    def mark(self) -> None:
        """A marker in the window: it survives only if the page was never reloaded."""
        self.driver.execute_script("window.__mutoMarker = 'still here';")

    def marked(self) -> bool:
        return self.driver.execute_script("return window.__mutoMarker || null;") == "still here"


@pytest.fixture
def chromium() -> Iterator[Any]:
    binary = next((shutil.which(b) for b in CHROMIUM if shutil.which(b)), None)
    driver_path = next((shutil.which(d) for d in DRIVER if shutil.which(d)), None)
    if binary is None or driver_path is None:
        unavailable("Chromium and chromedriver (Debian: chromium chromium-driver)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        unavailable("selenium (pip install -e '.[dev]')")
        raise
    options = webdriver.ChromeOptions()
    options.binary_location = str(binary)
    for argument in (
        "--headless=new",
        "--no-sandbox",  # root in a container
        "--disable-dev-shm-usage",
        "--window-size=1280,1500",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(str(driver_path)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def test_an_operator_watches_a_rollout_with_a_blocked_vehicle(
    tmp_path: Path, chromium: Any
) -> None:
    async def scenario() -> None:
        async with rig(tmp_path, count=12, profile=FLEET, running=None) as r:
            token = r.operator.http.headers["Authorization"].removeprefix("Bearer ")
            page = Browser(chromium, r.cloud.url)
            run = asyncio.to_thread

            await r.operator.start_rollout(
                {
                    "selector": "fleet=demo",
                    "stack": "autonomy-core",
                    "version": "1.0.0",
                    "rolloutId": "watch",
                    "thresholds": {"bakeSec": 1},  # watched 1 s after the wave gate
                }
            )
            await r.operator.http.post("/rollouts/watch/pause")
            wave = [v["vehicleId"] for v in (await r.rollout("watch"))["vehicles"]]
            moving = next(
                v["vehicleId"]
                for v in (await r.rollout("watch"))["vehicles"]
                if v["phase"] == "wave"
            )
            assert moving in wave
            r.fleet.set_state(moving, speed_mps=5.0)

            # Not signed in: the page says so and offers the form, then lands where asked.
            await run(page.open, "/ui/rollouts/watch")
            await run(page.sees, "sign in with an operator token")
            await run(page.sign_in, token)
            await run(page.sees, "Rollout watch")
            await run(page.mark)

            # The canaries converge while the rollout is paused; the page follows.
            await run(page.sees, "canary: 6/6 converged")
            await run(page.sees, "canary (paused)", "#state")
            await r.operator.http.post("/rollouts/watch/resume")

            # Why is this vehicle blocked? The wave's phase says it, with the reason code.
            await run(page.sees, "blocked by DENY_MOVING")
            row = f'tr[data-vehicle="{moving}"]'
            await run(page.sees, "deferred", row)
            await run(page.sees, "DENY_MOVING", row)
            if SCREENSHOT:
                await run(chromium.save_screenshot, SCREENSHOT)

            # It stops; the rollout completes; all without a reload.
            r.fleet.set_state(moving, speed_mps=0.0)
            await run(page.sees, "completed", "#state", 120)
            await run(page.sees, "wave: 6/6 converged")
            assert await run(page.marked), "the page was reloaded instead of refreshed in place"
            decisions = await run(page.text, "table.decisions")
            assert "CanaryGatePassed" in decisions and "WaveGatePassed" in decisions
            assert "6/6 (100.0% of 6 counted)" in decisions and "95.0%" in decisions

            # The vehicle's own page: what runs, its last report, and its story.
            await run(page.open, f"/ui/vehicles/{moving}")
            await run(page.sees, "autonomy-core@1.0.0", "#running")
            await run(page.sees, "converged", "#last-report")
            timeline = await run(page.text, "table.timeline")
            assert "DENY_MOVING" in timeline and "Rollout.WaveGatePassed" in timeline

            # The fleet: counts by status, and the status filter.
            await run(page.open, "/ui/?status=converged")
            await run(page.sees, "12 vehicle(s) match")
            counts = await run(page.text, "#counts")
            assert "converged 12" in counts

            # An unknown rollout says so.
            await run(page.open, "/ui/rollouts/no-such-rollout")
            await run(page.sees, "rollout 'no-such-rollout' does not exist")

    asyncio.run(scenario())
