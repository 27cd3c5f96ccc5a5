"""The HTTP server: /metrics, /healthz, /readyz (JSON endpoints and approvals come with the registry)."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger(__name__)

HealthProbe = Callable[[], tuple[bool, dict[str, Any]]]


class ApiServer:
    """A named worker serving the daemon's HTTP endpoints until the daemon stops."""

    name = "api"

    def __init__(
        self, host: str, port: int, metrics: CollectorRegistry, health: HealthProbe, readiness: HealthProbe
    ) -> None:
        self._metrics = metrics
        self._health = health
        self._readiness = readiness
        self._server = ThreadingHTTPServer((host, port), self._handler_class())
        self._server.daemon_threads = True
        self._serving = threading.Event()

    @property
    def port(self) -> int:
        """The port actually bound (useful when 0 was asked for)."""
        return int(self._server.server_address[1])

    @property
    def ready(self) -> bool:
        """True while the server accepts requests."""
        return self._serving.is_set()

    def status(self) -> dict[str, Any]:
        """What /readyz shows about this worker."""
        return {"port": self.port}

    def run(self, stop: threading.Event) -> None:
        """Serve until ``stop`` is set."""
        thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, name="api-http", daemon=True
        )
        thread.start()
        self._serving.set()
        log.info("HTTP API on port %d", self.port)
        try:
            stop.wait()
        finally:
            self._serving.clear()
            self._server.shutdown()
            self._server.server_close()
            thread.join(5)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "insightloop"

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("http %s", format % args)

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _send_json(self, status: int, payload: Any) -> None:
                self._send(status, json.dumps(payload, default=str).encode(), "application/json")

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(api._metrics), CONTENT_TYPE_LATEST)
                elif path in ("/healthz", "/readyz"):
                    ok, detail = (api._health if path == "/healthz" else api._readiness)()
                    self._send_json(200 if ok else 503, {"ok": ok, **detail})
                else:
                    self._send_json(404, {"error": f"no such endpoint: {path}"})

        return Handler
