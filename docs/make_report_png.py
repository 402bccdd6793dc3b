"""Makes docs/report.png for the README: the report.html of a real verify-shaped run (real checks
against the local test edge that tests/checks uses; no droplet, so collect is skipped), opened
in headless Chromium. Run from the repository root: .venv/bin/python docs/make_report_png.py"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from deploy.checks import PublicSite, ChecksConfig, run_checks  # noqa: E402
from deploy.report.run import Run  # noqa: E402
from tests.browser import chromium  # noqa: E402
from tests.checks.certs import STAGING, make_cert  # noqa: E402
from tests.checks.servers import FakeEdge  # noqa: E402

DOMAIN = "app.example.test"


def make_run(work: Path) -> Path:
    with Run(work / "runs", "verify", "verify", ["inv", "verify"]) as run:
        with FakeEdge(make_cert(work, STAGING, DOMAIN)) as edge:
            run.target = {"name": "stackdeploy-demo", "region": "fra1", "ip": "127.0.0.1"}
            run.skip_step("discover", "DROPLET_IP=127.0.0.1 given")
            with run.step("checks") as step:
                target = PublicSite("127.0.0.1", DOMAIN, "staging", https_port=edge.https_port,
                                     http_port=edge.http_port)
                report = run_checks(target, ChecksConfig(samples=5, timeout=5, rate_limit_requests=10))
                run.checks = [r.to_dict() for r in report.results]
                for rel, text in report.files.items():
                    run.artifacts.write_text(rel, text)
                verdict = f"{len(report.results)} checks: {report.status}"
                if report.status == "warn":  # as deploy.steps.run_checks marks the step
                    step.warn(verdict)
                else:
                    step.note(verdict)
        run.skip_step("collect", "the test edge has no SSH")
        run.mark_partial("remote collection", "the test edge has no SSH (a droplet would be collected here)")
    return run.folder / "report.html"


def main() -> None:
    out = ROOT / "docs" / "report.png"
    with tempfile.TemporaryDirectory() as tmp, chromium(width=1000, height=800) as driver:
        driver.get(make_run(Path(tmp)).as_uri())
        # The whole page in one picture: grow the window by what the viewport is short of.
        missing = driver.execute_script("return document.documentElement.scrollHeight - window.innerHeight")
        driver.set_window_size(1000, driver.get_window_size()["height"] + int(missing))
        driver.save_screenshot(str(out))
    print(f"wrote {out} ({out.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
