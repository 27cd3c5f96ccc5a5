"""Texts stay private (issue 17, findings 2, 5 and 6): reading texts needs a token with the read right,
/files serves an allow-list, the Host header is checked, reports are served sandboxed, malformed paths get
400, and idle connections cannot grow the server's thread count.

Real daemon API (in-process, real sockets), real registry and Evidently files, real tokens.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from pathlib import Path

import pytest

from insightloop.daemon.http import REPORT_CSP
from insightloop.deploy import Registry
from insightloop.retrain.evaluate import evidently_classification_report
from tests.integration.daemon_process import InProcessDaemon

pytestmark = pytest.mark.integration

OPERATOR = "operator-privacy-token-4c1f0a"  # api.approval_token: every right, read included
READER = "reader-privacy-token-9e2b7d51"  # tokens file: read only
APPROVER = "approver-privacy-token-77c0e3"  # tokens file: approve and reject, not read
EXAMPLE_TEXT = "my card 4929 1234 5678 was charged twice, call me on 555-0134"


def request(
    port: int, path: str, token: str | None = None, host: str | None = None, method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of one request (``host`` replaces the Host header)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.putrequest(method, path, skip_host=host is not None, skip_accept_encoding=True)
        if host is not None:
            connection.putheader("Host", host)
        if token is not None:
            connection.putheader("Authorization", f"Bearer {token}")
        connection.endheaders()
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def raw(port: int, line: bytes) -> tuple[int, bytes]:
    """Send one raw request line (what http.client refuses to send) and return status and body."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(line + b"\r\nHost: localhost\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


@pytest.fixture
def served(make_config, registry_copy: Path, tmp_path: Path):
    """The API of a daemon over a registry whose champion has an Evidently evaluation report, a state store
    holding an insight with example texts, and a monitor report; yields (daemon, champion, report name)."""
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(
        f"- {{name: reader, token: {READER}, rights: [read]}}\n"
        f"- {{name: approver, token: {APPROVER}, rights: [approve, reject]}}\n",
        encoding="utf-8",
    )
    state = tmp_path / "state"
    config = make_config(
        registry={"path": str(registry_copy)},
        state={"dir": str(state)},
        api={"approval_token": OPERATOR, "tokens_file": str(tokens)},
    )
    registry = Registry(registry_copy)
    champion = registry.production() or ""
    truth = ["negative", "positive"] * 30
    predicted = ["negative", "positive", "positive"] * 20
    evidently_classification_report(
        truth, predicted, ["negative", "positive"], registry.path_of(champion) / "evaluation" / "recent.html"
    )
    evidently_classification_report(truth, predicted, ["negative", "positive"], state / "reports" / "w1-quality.html")
    with InProcessDaemon(config, role="api") as daemon:
        daemon.app.store.upsert_insight(
            "i-privacy",
            "text_drift",
            "text_drift",
            "warning",
            "raised",
            {
                "id": "i-privacy",
                "kind": "text_drift",
                "summary": "texts got longer",
                "evidence": {"examples": [{"id": "t1", "text": EXAMPLE_TEXT, "score": 3.2}]},
            },
        )
        yield daemon, champion


def test_reading_texts_needs_the_read_right(served) -> None:
    """The issue's repro: GET /files/v0001/reference/rows.json answered 200 with the reference rows to anyone;
    so did vocabulary.json, the examples in /api/insights and the reports."""
    daemon, champion = served
    port = daemon.api.port
    texts = [
        f"/files/{champion}/reference/rows.json",
        f"/files/{champion}/reference/vocabulary.json",
        f"/files/{champion}/evaluation/recent.html",
        f"/files/{champion}/evaluation/recent.json",
        f"/files/{champion}/data/train.jsonl",
        "/reports/w1-quality.html",
        "/reports/w1-quality.json",
    ]
    for path in texts:
        status, headers, body = request(port, path)
        assert status == 401 and headers.get("www-authenticate", "").startswith("Bearer"), (path, status, body)
        assert request(port, path, token=APPROVER)[0] == 403, f"{path}: approve/reject is not read"
        assert request(port, path, token="not-a-token-0123456789")[0] == 401, path
        for token in (READER, OPERATOR):
            status, _, body = request(port, path, token=token)
            assert status == 200 and len(body) > 50, (path, token, status)

    # Insights: without the read right the list still answers, with the example texts removed.
    for token in (None, APPROVER):
        status, _, body = request(port, "/api/insights", token=token)
        assert status == 200 and EXAMPLE_TEXT.encode() not in body, token
        (insight,) = json.loads(body)["insights"]
        assert insight["evidence"]["examples"] == [] and insight["redacted"] == {"evidence.examples": 1}
        assert insight["summary"] == "texts got longer"
    assert request(port, "/api/insights", token="not-a-token-0123456789")[0] == 401
    status, _, body = request(port, "/api/insights", token=READER)
    assert status == 200 and json.loads(body)["insights"][0]["evidence"]["examples"][0]["text"] == EXAMPLE_TEXT

    # Metrics and health stay open.
    for path in ("/metrics", "/healthz", "/readyz"):
        assert request(port, path)[0] == 200, path


def test_files_serves_an_allow_list_only(served) -> None:
    daemon, champion = served
    port = daemon.api.port
    for path in (
        f"/files/{champion}/version.json",
        f"/files/{champion}/artifact.json",
        f"/files/{champion}/model/config.json",
        f"/files/{champion}/reference/../version.json",
        f"/files/{champion}/evaluation/../../PRODUCTION",
        f"/files/{champion}/%2e%2e/%2e%2e/etc/passwd",
        "/reports/../registry/audit.jsonl",
    ):
        status, _, body = request(port, path, token=OPERATOR)
        assert status == 404, (path, status, body)


def test_a_dns_rebinding_host_is_refused(served) -> None:
    """A page on evil.example whose name now resolves to 127.0.0.1 sends Host: evil.example; it used to be
    answered like any other request."""
    daemon, champion = served
    port = daemon.api.port
    for path in ("/approvals", "/api/models", "/api/insights", f"/files/{champion}/reference/rows.json"):
        status, _, body = request(port, path, token=OPERATOR, host=f"evil.example:{port}")
        assert status == 421 and b"api.allowed_hosts" in body, (path, status, body)
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", "insightloop.ml.svc.cluster.local", "insightloop"):
        assert request(port, "/api/models", host=host)[0] == 200, host
    # Prometheus and the kubelet come with the pod's IP.
    for path in ("/metrics", "/healthz", "/readyz"):
        assert request(port, path, host=f"10.1.2.3:{port}")[0] == 200, path


def test_reports_are_served_sandboxed_and_the_page_keeps_its_policy(served) -> None:
    daemon, champion = served
    port = daemon.api.port
    for path in (f"/files/{champion}/evaluation/recent.html", "/reports/w1-quality.html"):
        status, headers, body = request(port, path, token=READER)
        assert status == 200 and b"<script" in body
        policy = headers["content-security-policy"]
        assert policy == REPORT_CSP
        assert policy.startswith("sandbox allow-scripts") and "allow-same-origin" not in policy
        assert "connect-src 'none'" in policy
    _, headers, _ = request(port, "/approvals")
    assert "script-src 'self';" in headers["content-security-policy"]
    assert "unsafe-inline" not in headers["content-security-policy"].split("script-src")[1].split(";")[0]
    assert "sandbox" not in headers["content-security-policy"]


def test_signed_links_open_reports_without_a_header_and_only_as_signed(served) -> None:
    daemon, champion = served
    port = daemon.api.port
    path = f"/files/{champion}/evaluation/recent.html"
    assert request(port, f"/api/links?path={path}")[0] == 401
    assert request(port, f"/api/links?path={path}", token=APPROVER)[0] == 403
    assert request(port, "/api/links?path=/api/models", token=READER)[0] == 400
    status, _, body = request(port, f"/api/links?path={path}", token=READER)
    assert status == 200
    url = json.loads(body)["url"]
    assert READER not in url
    status, headers, body = request(port, url)
    assert status == 200 and b"<script" in body and headers["content-security-policy"] == REPORT_CSP
    # The link opens that path only, and not once altered.
    other = url.replace("evaluation/recent.html", "reference/rows.json")
    assert request(port, other)[0] == 401
    tampered = url[:-1] + ("0" if url[-1] != "0" else "1")
    assert request(port, tampered)[0] == 401


def test_malformed_paths_answer_400_without_a_traceback(served) -> None:
    """The issue's repro: a NUL byte or a 6 KB path answered 500 with a traceback."""
    daemon, champion = served
    port = daemon.api.port
    for line in (
        b"GET /files/" + champion.encode() + b"/reference/rows.json\x00.html HTTP/1.0",
        b"GET /api/models%00 HTTP/1.0",
        b"GET /" + b"a" * 6144 + b" HTTP/1.0",
        b"GET /files/" + b"x" * 6144 + b"/reference/rows.json HTTP/1.0",
        b"GET /api/models/%zz HTTP/1.0",
        b"GET /api/models/%ff%fe HTTP/1.0",
        b"GET /reports/%e2%28%a1.html HTTP/1.0",
    ):
        status, body = raw(port, line)
        assert status == 400, (line[:80], status, body[:200])
        assert b"Traceback" not in body and b'File "' not in body
        assert "error" in json.loads(body)
    assert request(port, "/healthz")[0] == 200, "the server answers after them"


def test_idle_connections_do_not_grow_the_thread_count(served) -> None:
    """The issue's repro: the server held 300 idle sockets with a thread each; nothing capped them."""
    daemon, _ = served
    port = daemon.api.port
    settings = daemon.app.api.context.settings
    before = threading.active_count()
    idle = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(300)]
    try:
        for sock in idle[:50]:
            sock.sendall(b"GET /api/mod")  # half a request line: a slow client
        time.sleep(1.0)
        grown = threading.active_count() - before
        assert grown <= settings.max_workers + 2, f"{grown} more threads for 300 idle connections"
        started = time.monotonic()
        status, _, _ = request(port, "/healthz")
        assert status == 200, "the server must still answer"
        assert time.monotonic() - started < settings.socket_timeout_s, "a request waited for idle clients"
        assert threading.active_count() - before <= settings.max_workers + 2
    finally:
        for sock in idle:
            sock.close()
