"""Front end: Vitest unit tests, the production build, and one headless-Chromium run."""
from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
import requests

from tests.browser import chromium
from tests.conftest import need

from .helpers import PROVIDED_BY, STACK
from .servers import nginx_headers, serving, spa_server

FRONTEND = STACK / "frontend"


def _npm(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(["npm", *args], cwd=FRONTEND, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "CI": "1", "NO_COLOR": "1"})


@pytest.fixture(scope="session")
def frontend_deps():
    """npm ci from the committed lockfile (this fixture is the only install step CI needs)."""
    need(shutil.which("npm") is not None, "npm (Node 20+ with npm)", provided_by=PROVIDED_BY)
    lock = FRONTEND / "package-lock.json"
    marker = FRONTEND / "node_modules" / ".package-lock.json"
    if not marker.exists() or marker.stat().st_mtime < lock.stat().st_mtime:
        result = _npm("ci", "--no-audit", "--no-fund")
        assert result.returncode == 0, f"npm ci failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


@pytest.fixture(scope="session")
def frontend_dist(frontend_deps):
    result = _npm("run", "build")
    assert result.returncode == 0, f"npm run build failed (tsc or vite):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    dist = FRONTEND / "dist"
    assert (dist / "index.html").is_file()
    return dist


def test_vitest_unit_tests_pass(frontend_deps):
    result = _npm("test")
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    assert re.search(r"Tests\s+\d+ passed", result.stdout), result.stdout[-2000:]
    assert "failed" not in result.stdout


@pytest.mark.browser
def test_page_shows_health_and_a_finished_job(frontend_dist, api_server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    with serving(spa_server(frontend_dist, api_server.url)) as server, chromium() as driver:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        # The page comes with nginx's Content-Security-Policy, so the browser enforces it below:
        # the app must render and run its job under it.
        csp = requests.get(f"{base}/some/deep/link", timeout=5).headers["Content-Security-Policy"]
        assert csp == nginx_headers()["Content-Security-Policy"] and "script-src 'self'" in csp
        # A deep link proves the SPA fallback as well.
        driver.get(f"{base}/some/deep/link")
        wait = WebDriverWait(driver, 30)
        wait.until(EC.text_to_be_present_in_element((By.CSS_SELECTOR, "[data-testid=health-status]"), "ok"))
        assert driver.find_element(By.CSS_SELECTOR, "[data-testid=health-status]").text == "ok"
        assert "django" in driver.find_element(By.CSS_SELECTOR, "[data-testid=versions]").text
        box = driver.find_element(By.CSS_SELECTOR, "input[aria-label='job text']")
        box.clear()
        box.send_keys("browser made this")
        driver.find_element(By.XPATH, "//button[text()='Start demo job']").click()
        wait.until(EC.text_to_be_present_in_element((By.CSS_SELECTOR, "[data-testid=job-state]"), "SUCCESS"))
        assert "BROWSER MADE THIS" in driver.find_element(By.CSS_SELECTOR, "[data-testid=job-result]").text
