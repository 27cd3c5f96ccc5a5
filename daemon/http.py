"""The HTTP server: metrics, health, the JSON API, approvals (authenticated) and the approvals page."""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from insightloop.daemon.auth import AuthResult, Right, TokenStore
from insightloop.daemon.pages import SCRIPT, render_approvals
from insightloop.daemon.promotion import ModelRefusedError, ModelService
from insightloop.daemon.state import StateStore
from insightloop.deploy import GateFailedError, Registry, RegistryError

log = logging.getLogger(__name__)

BodyT = TypeVar("BodyT", bound=BaseModel)
HealthProbe = Callable[[], tuple[bool, dict[str, Any]]]
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
}
SERVABLE = {".html": "text/html; charset=utf-8", ".json": "application/json"}


class ChangeRequest(BaseModel):
    """Body of approve / reject."""

    model_config = ConfigDict(extra="forbid")

    by: str = Field(min_length=1, max_length=200)
    note: str = Field("", max_length=2000)
    override: bool = False


class RollbackRequest(BaseModel):
    """Body of rollback."""

    model_config = ConfigDict(extra="forbid")

    by: str = Field(min_length=1, max_length=200)
    note: str = Field("", max_length=2000)
    version: str | None = Field(None, max_length=64)


@dataclass
class ApiContext:
    """What the API serves from."""

    metrics: CollectorRegistry
    health: HealthProbe
    readiness: HealthProbe
    registry: Registry
    models: ModelService
    tokens: TokenStore
    store: StateStore | None = None
    reports_dir: Path | None = None
    max_body_bytes: int = 65_536


class HttpError(Exception):
    """An error answer with a status code."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


class ApiServer:
    """A named worker serving the daemon's HTTP endpoints until the daemon stops."""

    name = "api"

    def __init__(self, host: str, port: int, context: ApiContext, on_stop: Callable[[], None] | None = None) -> None:
        self.context = context
        self._on_stop = on_stop
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
            if self._on_stop is not None:
                self._on_stop()

    # -- request handling -----------------------------------------------------------------
    def _get(self, path: str) -> tuple[int, bytes, str]:
        ctx = self.context
        if path == "/metrics":
            return 200, generate_latest(ctx.metrics), CONTENT_TYPE_LATEST
        if path in ("/healthz", "/readyz"):
            ok, detail = (ctx.health if path == "/healthz" else ctx.readiness)()
            return _json(200 if ok else 503, {"ok": ok, **detail})
        if path == "/approvals":
            return 200, render_approvals(ctx.registry).encode(), "text/html; charset=utf-8"
        if path == "/approvals.js":
            return 200, SCRIPT.encode(), "text/javascript; charset=utf-8"
        if path == "/api/models":
            return _json(
                200,
                {
                    "production": ctx.registry.production(),
                    "versions": [r.model_dump(mode="json") for r in ctx.registry.records()],
                },
            )
        if path == "/api/candidates":
            production = ctx.registry.production()
            return _json(
                200,
                {
                    "champion": ctx.registry.get(production).model_dump(mode="json") if production else None,
                    "candidates": [r.model_dump(mode="json") for r in ctx.registry.pending_candidates()],
                },
            )
        if path == "/api/audit":
            return _json(200, {"entries": [e.model_dump(mode="json") for e in ctx.registry.audit_log()]})
        if path == "/api/insights":
            return _json(200, {"insights": ctx.store.insights() if ctx.store else []})
        if path == "/api/jobs":
            return _json(200, {"jobs": ctx.store.jobs() if ctx.store else []})
        if match := re.fullmatch(r"/api/models/([^/]+)", path):
            version = match.group(1)
            record = self._record(version)
            audit = [e.model_dump(mode="json") for e in ctx.registry.audit_log() if e.version == version]
            return _json(200, {**record, "audit": audit})
        if match := re.fullmatch(r"/files/([^/]+)/(.+)", path):
            return self._file(ctx.registry.path_of(match.group(1)), match.group(2))
        if match := re.fullmatch(r"/reports/(.+)", path):
            if ctx.reports_dir is None:
                raise HttpError(404, "no reports directory")
            return self._file(ctx.reports_dir, match.group(1))
        raise HttpError(404, f"no such endpoint: {path}")

    def _record(self, version: str) -> dict[str, Any]:
        try:
            return self.context.registry.get(version).model_dump(mode="json")
        except RegistryError as exc:
            raise HttpError(404, str(exc)) from exc

    @staticmethod
    def _file(root: Path, relative: str) -> tuple[int, bytes, str]:
        base = root.resolve()
        target = (base / unquote(relative)).resolve()
        if not target.is_relative_to(base) or target.suffix not in SERVABLE or not target.is_file():
            raise HttpError(404, "no such report")
        return 200, target.read_bytes(), SERVABLE[target.suffix]

    def _post(self, path: str, headers: Any, body: bytes) -> tuple[int, bytes, str]:
        ctx = self.context
        if match := re.fullmatch(r"/api/models/([^/]+)/(approve|reject)", path):
            version, action = match.group(1), match.group(2)
            principal = self._authorise(headers, Right(action))
            request = _parse(ChangeRequest, body)
            if action == "approve":
                event = ctx.models.approve(version, request.by, request.note, request.override, via=principal)
                return _json(200, {"event": event.model_dump(mode="json")})
            record = ctx.models.reject(version, request.by, request.note, via=principal)
            return _json(200, {"version": record.model_dump(mode="json")})
        if path == "/api/models/rollback":
            principal = self._authorise(headers, Right.ROLLBACK)
            rollback = _parse(RollbackRequest, body)
            event = ctx.models.rollback(rollback.by, rollback.version, rollback.note, via=principal)
            return _json(200, {"event": event.model_dump(mode="json")})
        raise HttpError(404, f"no such endpoint: {path}")

    def _authorise(self, headers: Any, needed: Right) -> str:
        result, principal = self.context.tokens.check(headers.get("Authorization"), needed)
        challenge = {"WWW-Authenticate": 'Bearer realm="insightloop"'}
        if result is AuthResult.MISSING:
            raise HttpError(401, "authentication required: send Authorization: Bearer <token>", challenge)
        if result is AuthResult.INVALID:
            raise HttpError(401, "invalid token", challenge)
        if result is AuthResult.EXPIRED:
            raise HttpError(401, "token expired", challenge)
        assert principal is not None
        if result is AuthResult.FORBIDDEN:
            raise HttpError(403, f"token {principal.name!r} may not {needed.value}")
        return principal.name

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "insightloop"
            sys_version = ""

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("http %s", format % args)

            def _send(self, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for key, value in {**SECURITY_HEADERS, **(extra or {})}.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)

            def _answer(self, produce: Callable[[], tuple[int, bytes, str]]) -> None:
                try:
                    self._send(*produce())
                except HttpError as error:
                    self._send(*_json(error.status, {"error": error.message}), error.headers)
                except GateFailedError as exc:
                    self._send(*_json(409, {"error": str(exc)}))
                except ModelRefusedError as exc:
                    self._send(*_json(422, {"error": str(exc)}))
                except RegistryError as exc:
                    status = 404 if "no version" in str(exc) else 409
                    self._send(*_json(status, {"error": str(exc)}))
                except Exception:
                    log.exception("error serving %s %s", self.command, self.path.split("?", 1)[0])
                    self._send(*_json(500, {"error": "internal error; see the daemon's log"}))

            def do_GET(self) -> None:
                self._answer(lambda: api._get(self.path.split("?", 1)[0]))

            def do_POST(self) -> None:
                def produce() -> tuple[int, bytes, str]:
                    try:
                        length = int(self.headers.get("Content-Length") or 0)
                    except ValueError:
                        raise HttpError(400, "bad Content-Length") from None
                    if length > api.context.max_body_bytes:
                        self.close_connection = True
                        raise HttpError(413, f"request body over {api.context.max_body_bytes} bytes")
                    body = self.rfile.read(length) if length > 0 else b""
                    return api._post(self.path.split("?", 1)[0], self.headers, body)

                self._answer(produce)

        return Handler


def _json(status: int, payload: Any) -> tuple[int, bytes, str]:
    return status, json.dumps(payload, default=str).encode(), "application/json"


def _parse(model: type[BodyT], body: bytes) -> BodyT:
    try:
        return model.model_validate_json(body or b"{}")
    except ValidationError as exc:
        detail = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())
        raise HttpError(400, f"invalid request body: {detail}") from None
