"""report.html in every run folder: self-contained, redacted, and read in headless Chromium the
way an operator opens it (a file:// URL)."""
from __future__ import annotations

import html
import json
import os
import re
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from rich.console import Console

from core.errors import OperatorError
from deploy.checks import PublicSite, ChecksConfig, run_checks
from deploy.checks.lines import human_line
from deploy.redact import SecretRegistry
from deploy.report.run import Run
from tests.browser import chromium
from tests.checks.certs import STAGING, make_cert
from tests.checks.servers import Behaviour, FakeEdge

# Characters HTML escapes, so an escaped copy of the secret would slip past a redactor run afterwards.
CANARY = 'canary<&>"Zq81-secret'


def quiet() -> Console:
    return Console(file=open(os.devnull, "w"))


def finished_run(tmp_path: Path) -> Run:
    """A failed verify-like run: timed steps, real checks against a local edge, a skipped step."""
    registry = SecretRegistry()
    registry.add_value(CANARY)
    with pytest.raises(OperatorError):
        with Run(tmp_path / "runs", "verify", "verify", ["inv", "verify"], console=quiet(), registry=registry) as run:
            with run.step("short"):
                time.sleep(0.2)
            with run.step("long") as step:
                time.sleep(0.6)
                step.note(f"waited, token {CANARY}")
            with run.step("checks") as step, FakeEdge(make_cert(tmp_path, STAGING, "localhost"),
                                                       Behaviour(flower_open=True)) as edge:
                target = PublicSite("127.0.0.1", "localhost", "staging", https_port=edge.https_port, http_port=edge.http_port)
                report = run_checks(target, ChecksConfig(samples=2, timeout=5, rate_limit_burst=False))
                run.checks = [r.to_dict() for r in report.results]
                step.step.status = "failed"  # as deploy.steps.run_checks marks the step when a check fails
                for rel, text in report.files.items():
                    run.artifacts.write_text(rel, text)
            run.artifacts.write_text("remote/odd name #1.txt", "a file whose name needs quoting in a link\n")
            run.skip_step("collect", "no SSH in this test")
            run.mark_partial("remote collection", "sshd refused the key")
            run.warn(f"remote said {CANARY}")
            raise OperatorError("1 check(s) failed: flower", "see summary.md")
    return run


@pytest.fixture(scope="module")
def report_run(tmp_path_factory) -> Run:
    return finished_run(tmp_path_factory.mktemp("report"))


def test_every_run_folder_has_a_self_contained_redacted_report(report_run):
    text = (report_run.folder / "report.html").read_text()
    assert CANARY not in text and html.escape(CANARY) not in text and "Zq81" not in text
    assert not re.search(r"<script|<link|<iframe|<img|@import|url\(", text, re.I), "must need nothing but itself"
    hrefs = re.findall(r'href="([^"]*)"', text)
    assert hrefs and not [h for h in hrefs if re.match(r"[a-z]+:|/", h)], "links stay relative to the folder"
    assert json.loads((report_run.folder / "run.json").read_text())["outcome"] == "failed"


def test_a_run_that_fails_at_once_still_has_its_report(tmp_path):
    with pytest.raises(RuntimeError):
        with Run(tmp_path, "deploy", "full", ["inv", "deploy"], console=quiet(), registry=SecretRegistry()) as run:
            raise RuntimeError("boom before any step")
    text = (run.folder / "report.html").read_text()
    assert "RuntimeError: boom before any step" in text and 'data-step="deploy"' in text


@pytest.mark.browser
def test_report_renders_timeline_checks_latency_skips_and_links(report_run, tmp_path):
    from selenium.webdriver.common.by import By

    folder = report_run.folder
    manifest = json.loads((folder / "run.json").read_text())
    with chromium() as driver:
        driver.get((folder / "report.html").as_uri())
        text = driver.find_element(By.TAG_NAME, "body").text

        # The timeline: a bar per step, in run order, widths to scale of the durations.
        bars = driver.find_elements(By.CSS_SELECTOR, "#timeline .bar")
        assert [b.get_attribute("data-step") for b in bars] == [s["name"] for s in manifest["steps"]]
        names = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#timeline .name")]
        assert names == ["short", "long", "checks", "collect"]
        width = {b.get_attribute("data-step"): b.size["width"] for b in bars}
        seconds = {s["name"]: s["seconds"] for s in manifest["steps"]}
        assert width["long"] / width["short"] == pytest.approx(seconds["long"] / seconds["short"], rel=0.1)
        left = {b.get_attribute("data-step"): b.location["x"] for b in bars}
        assert left["short"] < left["long"] < left["checks"], "bars start where their steps started"

        # Each check with its human line, the latency figures, the skips with their reasons.
        lines = {r.find_element(By.CSS_SELECTOR, "td:nth-child(2)").text: r.find_element(By.CSS_SELECTOR, "td.line").text
                 for r in driver.find_elements(By.CSS_SELECTOR, "#checks tr") if r.find_elements(By.TAG_NAME, "td")}
        assert lines == {c["name"]: human_line(c) for c in report_run.checks}
        assert lines["tls"] == "issuer: (STAGING) Let's Encrypt Pretend Pear X1"
        routes = [r.find_element(By.TAG_NAME, "td").text for r in driver.find_elements(By.CSS_SELECTOR, "#latency tr")[1:]]
        assert routes == ["home", "api-health"]
        skipped = driver.find_element(By.ID, "skipped").text
        assert "remote collection: sshd refused the key" in skipped and "step collect: no SSH in this test" in skipped
        assert "1 check(s) failed: flower" in driver.find_element(By.ID, "error").text
        assert "verify (verify) failed" in text

        # Every artifact is linked, and every link opens a file that exists.
        hrefs = [a.get_attribute("href") for a in driver.find_elements(By.CSS_SELECTOR, "#files a")]
        linked = {Path(unquote(urlsplit(h).path)) for h in hrefs}
        assert all(p.is_file() for p in linked), [p for p in linked if not p.is_file()]
        on_disk = {p for p in folder.rglob("*") if p.is_file() and p.name != "report.html"}
        assert linked == on_disk

        shot = tmp_path / "report.png"
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
