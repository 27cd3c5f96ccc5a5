"""The approvals page: rendered safely, and a real headless Chromium approves a candidate."""

from __future__ import annotations

import shutil
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from insightloop.deploy import GateVerdict, InsightRef, Registry, VersionStatus
from tests.integration.browser import CHROMEDRIVER, CHROMIUM, chrome
from tests.integration.daemon_process import InProcessDaemon, http_get
from tests.integration.test_promotion import TOKEN, post, register_copy

pytestmark = pytest.mark.integration
PAYLOAD = "<script>window.__pwned = 1</script>"


@pytest.fixture
def registry_copy(trained_registry: Path, tmp_path: Path) -> Path:
    target = tmp_path / "registry"
    shutil.copytree(trained_registry, target)
    return target


def read(url: str, token: str) -> tuple[int, str]:
    """Status and body of a GET with a bearer token."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def add_insight(registry: Registry, version: str, summary: str) -> None:
    """Attach a cause to a candidate the way the controller does (record fields written at creation)."""
    path = registry.path_of(version) / "version.json"
    record = registry.get(version).model_copy(
        update={
            "insights": [InsightRef(id="i1", kind="text_drift", severity="warning", summary=summary)],
            "gate": GateVerdict(passed=True, reasons=["recent: +0.08 accuracy, CI [0.03, 0.13]"]),
        }
    )
    path.write_text(record.model_dump_json(indent=2))


def test_page_escapes_user_controlled_strings(make_config, registry_copy: Path) -> None:
    config = make_config(registry={"path": str(registry_copy)}, api={"approval_token": TOKEN})
    registry = Registry(registry_copy)
    v1 = registry.production() or ""
    candidate = register_copy(registry, v1)
    add_insight(registry, candidate, f"texts like {PAYLOAD} doubled")
    with InProcessDaemon(config) as daemon:
        status, page = http_get(daemon.url + "/approvals")
        assert status == 200
        assert PAYLOAD not in page and "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in page
        assert f'data-version="{candidate}"' in page and "recent: +0.08 accuracy" in page
        # A note carrying a script lands in the audit log as data, and is rendered escaped.
        other = register_copy(registry, v1)
        status, _ = post(f"{daemon.url}/api/models/{other}/reject", {"by": PAYLOAD, "note": PAYLOAD})
        assert status == 200
        _, audit = http_get(daemon.url + "/api/audit")
        assert PAYLOAD in audit  # stored verbatim as JSON data
        _, page = http_get(daemon.url + "/approvals")
        assert PAYLOAD not in page


def test_api_errors_are_clear(make_config, registry_copy: Path, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text("- {name: viewer, token: viewer-token-0123456789, rights: [reject]}\n")
    config = make_config(
        registry={"path": str(registry_copy)},
        api={"approval_token": TOKEN, "tokens_file": str(tokens), "max_body_bytes": 1024},
    )
    registry = Registry(registry_copy)
    candidate = register_copy(registry, registry.production() or "")
    with InProcessDaemon(config) as daemon:
        url = daemon.url
        status, body = post(f"{url}/api/models/{candidate}/approve", {"by": "v"}, token="viewer-token-0123456789")
        assert status == 403 and "may not approve" in body["error"]
        status, body = post(f"{url}/api/models/{candidate}/approve", {"by": "x" * 5000})
        assert status == 413
        status, body = post(f"{url}/api/models/{candidate}/approve", {"who": "x"})
        assert status == 400 and "by" in body["error"]
        status, body = post(f"{url}/api/models/v9999/approve", {"by": "a"})
        assert status == 404
        status, body = post(f"{url}/api/models/{registry.production()}/reject", {"by": "a"})
        assert status == 409 and "only a candidate" in body["error"]
        assert registry.get(candidate).status == VersionStatus.CANDIDATE
        status, _ = http_get(f"{url}/files/{candidate}/../../etc/passwd")
        assert status == 401, "files need a token with the read right before anything else"
        status, _ = read(f"{url}/files/{candidate}/../../etc/passwd", TOKEN)
        assert status == 404
        status, models = http_get(f"{url}/api/models")
        assert status == 200 and candidate in models
        assert TOKEN not in models


@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="Debian's chromium and chromium-driver are not installed")
def test_a_person_approves_in_headless_chromium(make_config, registry_copy: Path, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    config = make_config(registry={"path": str(registry_copy)}, api={"approval_token": TOKEN})
    registry = Registry(registry_copy)
    candidate = register_copy(registry, registry.production() or "")
    add_insight(registry, candidate, "reviews of kitchen products doubled")
    with InProcessDaemon(config) as daemon:
        driver = chrome(tmp_path / "chromium")
        try:
            driver.get(daemon.url + "/approvals")
            card = driver.find_element(By.CSS_SELECTOR, f'.card[data-version="{candidate}"]')
            assert "reviews of kitchen products doubled" in card.text
            driver.find_element(By.ID, "by").send_keys("carol")
            driver.find_element(By.ID, "token").send_keys(TOKEN)
            card.find_element(By.CSS_SELECTOR, ".note").send_keys("checked the kitchen slice")
            card.find_element(By.CSS_SELECTOR, 'button[data-action="approve"]').click()
            # The page reloads 0.8 s after the answer; the outcome must survive that reload, and the
            # reloaded page must show the new version serving.
            WebDriverWait(driver, 120).until(
                lambda d: f"Serving now: {candidate}." in d.find_element(By.TAG_NAME, "body").text,
                message=f"page never showed {candidate} serving; status: {_status(driver)!r}",
            )
            WebDriverWait(driver, 10).until(
                expected_conditions.text_to_be_present_in_element((By.ID, "status"), f"{candidate}: approve done"),
                message=f"the outcome was lost on reload; status: {_status(driver)!r}",
            )
            driver.save_screenshot(str(tmp_path / "approved.png"))
        finally:
            driver.quit()
    assert registry.production() == candidate
    entry = [e for e in registry.audit_log() if e.version == candidate and e.action == "approve"][-1]
    assert (entry.by, entry.reason, entry.authenticated_as) == ("carol", "checked the kitchen slice", "operator")


def _status(driver) -> str:
    """The status line's text, for failure messages."""
    from selenium.webdriver.common.by import By

    try:
        return str(driver.find_element(By.ID, "status").text)
    except Exception as exc:  # a failure message must not raise itself
        return f"<unreadable: {exc}>"
