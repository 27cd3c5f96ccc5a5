"""Reports open in a browser from the API (issue 17, finding 5): headless Chromium opens the approvals page,
follows a candidate's report link with a token that may read, and opens a monitor report; every report renders
content under its sandboxed policy, and the console shows no blocked script."""

from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path

import pytest

from insightloop.deploy import Evaluation, EvaluationSection, Registry
from insightloop.retrain.evaluate import evidently_classification_report
from tests.integration.browser import CHROMEDRIVER, CHROMIUM, chrome
from tests.integration.daemon_process import InProcessDaemon
from tests.integration.test_promotion import TOKEN, register_copy

pytestmark = pytest.mark.integration
LABELS = ["negative", "positive"]


@pytest.fixture
def registry_copy(trained_registry: Path, tmp_path: Path) -> Path:
    target = tmp_path / "registry"
    shutil.copytree(trained_registry, target)
    return target


def attach_report(registry: Registry, version: str) -> str:
    """A real Evidently report in the candidate's evaluation folder, linked from its record like a job does."""
    truth = LABELS * 40
    evidently_classification_report(
        truth,
        ["negative", "positive", "positive", "negative"] * 20,
        LABELS,
        registry.path_of(version) / "evaluation" / "recent_candidate.html",
        reference=(truth, truth),
    )
    section = EvaluationSection(name="recent production", report="evaluation/recent_candidate.html")
    record = registry.get(version).model_copy(update={"evaluation": Evaluation(sections=[section])})
    (registry.path_of(version) / "version.json").write_text(record.model_dump_json(indent=2))
    return f"/files/{version}/evaluation/recent_candidate.html"


def blocked(logs: list[dict[str, object]]) -> list[str]:
    """Console entries that say a script (or anything) was refused, or that a script failed."""
    words = ("Content Security Policy", "Refused to", "blocked", "Uncaught")
    return [str(e["message"]) for e in logs if any(w in str(e["message"]) for w in words)]


@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="Debian's chromium and chromium-driver are not installed")
def test_approvals_page_and_reports_render_in_headless_chromium(
    make_config, registry_copy: Path, tmp_path: Path
) -> None:
    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    state = tmp_path / "state"
    config = make_config(
        registry={"path": str(registry_copy)}, state={"dir": str(state)}, api={"approval_token": TOKEN}
    )
    registry = Registry(registry_copy)
    candidate = register_copy(registry, registry.production() or "")
    report_path = attach_report(registry, candidate)
    evidently_classification_report(LABELS * 30, LABELS[::-1] * 30, LABELS, state / "reports" / "w1-quality.html")

    def rendered(driver: webdriver.Chrome) -> str:
        """Wait until Evidently's scripts have drawn the report; return its text."""
        WebDriverWait(driver, 60).until(
            lambda d: len(d.find_element(By.TAG_NAME, "body").text) > 200 and d.find_elements(By.CSS_SELECTOR, "svg"),
            message=f"the report at {driver.current_url} rendered nothing; console: {driver.get_log('browser')}",
        )
        return str(driver.find_element(By.TAG_NAME, "body").text)

    with InProcessDaemon(config) as daemon:
        driver = chrome(tmp_path / "chromium")
        try:
            driver.get(daemon.url + "/approvals")
            card = driver.find_element(By.CSS_SELECTOR, f'.card[data-version="{candidate}"]')
            link = card.find_element(By.CSS_SELECTOR, "a[data-report]")
            assert link.get_attribute("data-report") == report_path
            assert not blocked(driver.get_log("browser")), "the approvals page logged a refused resource"
            # Without a token the link only asks for one.
            link.click()
            WebDriverWait(driver, 10).until(lambda d: "read right" in d.find_element(By.ID, "status").text)
            driver.find_element(By.ID, "token").send_keys(TOKEN)
            card.find_element(By.CSS_SELECTOR, "a[data-report]").click()
            WebDriverWait(driver, 30).until(lambda d: "/evaluation/recent_candidate.html?" in d.current_url)
            text = rendered(driver)
            assert "Accuracy" in text or "accuracy" in text.lower(), text[:500]
            logs = driver.get_log("browser")
            assert not blocked(logs), f"the evaluation report logged refused scripts: {blocked(logs)}"
            driver.save_screenshot(str(tmp_path / "evaluation-report.png"))

            # A monitor report, through a signed link the API hands to a token with the read right.
            ask = urllib.request.Request(
                f"{daemon.url}/api/links?path=/reports/w1-quality.html", headers={"Authorization": f"Bearer {TOKEN}"}
            )
            with urllib.request.urlopen(ask, timeout=30) as response:
                url = json.loads(response.read())["url"]
            driver.get(daemon.url + url)
            rendered(driver)
            logs = driver.get_log("browser")
            assert not blocked(logs), f"the monitor report logged refused scripts: {blocked(logs)}"
            # The sandbox holds: the report runs in an opaque origin, not the API's.
            assert driver.execute_script("return window.origin") == "null"
        finally:
            driver.quit()
