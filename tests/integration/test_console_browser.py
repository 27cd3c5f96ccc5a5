"""The console in headless Chromium after a real loop: traffic, checks, a shift, an insight."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from insightloop.daemon.replay import replay
from insightloop.deploy import Registry
from tests.integration.browser import CHROMEDRIVER, CHROMIUM, chrome
from tests.integration.daemon_process import InProcessDaemon
from tests.integration.test_loop import FAST_JOBS, loop_registry, wait_for  # noqa: F401 - loop_registry is a fixture
from tests.integration.test_promotion import TOKEN
from tests.synthetic import KITCHEN_NEGATIVE, KITCHEN_POSITIVE, domain_rows, sentiment_rows, write_jsonl

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "console.png"


@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="Debian's chromium and chromium-driver are not installed")
def test_console_renders_every_view_after_a_loop(make_config, loop_registry: Path, tmp_path: Path) -> None:  # noqa: F811
    from selenium.webdriver.common.by import By

    registry_root = tmp_path / "registry"
    shutil.copytree(loop_registry, registry_root)
    registry = Registry(registry_root)
    v1 = registry.production() or ""
    config = make_config(
        registry={"path": str(registry_root)},
        api={"approval_token": TOKEN},
        monitor={
            "window_size": 300,
            "min_window": 150,
            "check_every_records": 150,
            "check_interval_s": 3600,
            "min_check_interval_s": 0,
        },
        controller=FAST_JOBS,
    )
    before = write_jsonl(tmp_path / "before.jsonl", sentiment_rows(300, seed=22, prefix="b"))
    after = write_jsonl(tmp_path / "after.jsonl", domain_rows(600, 23, "a", KITCHEN_POSITIVE, KITCHEN_NEGATIVE))
    with InProcessDaemon(config) as daemon:
        store = daemon.app.store
        replay(config, before, labels_delay=20, progress=False)
        wait_for(lambda: len(store.check_history()) >= 1, 180, "a check on unchanged traffic")
        replay(config, after, labels_delay=20, progress=False)
        insight = wait_for(lambda: next(iter(store.insights()), None), 240, "an insight on the shifted traffic")
        wait_for(lambda: len(store.check_history()) >= 3, 180, "three checks")
        # The controller's real job for the insight, and the candidate it registered.
        job = wait_for(
            lambda: next((j for j in store.jobs() if j.state == "succeeded" and j.version), None), 420, "the job"
        )
        assert job.insight_id == insight["id"], "the job was launched for the insight on the page"
        candidate = job.version or ""
        assert registry.get(candidate).parent == v1
        driver = chrome(tmp_path / "chromium", "--window-size=1300,2400")
        try:
            driver.get(daemon.url + "/")
            for section in ("now", "insights", "versions", "trends"):
                assert driver.find_element(By.ID, section).text.strip(), f"the {section} view is empty"
            assert driver.find_element(By.ID, "serving").text == v1
            now = driver.find_element(By.ID, "now").text
            assert candidate in now and "approve or reject" in now
            details = driver.find_element(By.CSS_SELECTOR, f'details[data-insight="{insight["id"]}"]')
            details.find_element(By.TAG_NAME, "summary").click()
            assert "examples hidden: needs the read right" in details.text or "No example texts" in details.text
            job_link = details.find_element(By.CSS_SELECTOR, "a.job-link")
            candidate_link = details.find_element(By.CSS_SELECTOR, "a.candidate-link")
            assert job_link.get_attribute("href").endswith(f"/api/jobs#{job.id}")
            assert candidate_link.get_attribute("href").endswith(f"/api/models/{candidate}")
            trends = driver.find_element(By.ID, "trends")
            circles = trends.find_elements(By.CSS_SELECTOR, "svg.chart circle")
            assert len(circles) >= 3, "the trend charts have a point per check"
            polylines = trends.find_elements(By.CSS_SELECTOR, "svg.chart polyline")
            assert any(len(re.findall(r"[\d.]+,[\d.]+", p.get_attribute("points"))) >= 3 for p in polylines)
            lineage = driver.find_element(By.ID, "versions")
            assert lineage.find_elements(By.CSS_SELECTOR, f'path.edge[data-child="{candidate}"]')
            driver.save_screenshot(str(SCREENSHOT))
            errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
            assert errors == [], errors
            driver.get(daemon.url + "/approvals")
            assert driver.find_element(By.CSS_SELECTOR, f'.card[data-version="{candidate}"]')
            assert [e for e in driver.get_log("browser") if e["level"] == "SEVERE"] == []
        finally:
            driver.quit()
