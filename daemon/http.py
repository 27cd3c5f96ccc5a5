"""The HTTP server: metrics, health, the JSON API, approvals (authenticated) and the approvals page.

Every endpoint is one :class:`Route` in :data:`ROUTES`: method, path pattern, handler and the right a token
needs. Reading texts (reference rows, vocabulary, training data, reports) needs ``read``; insight examples are
redacted without it. The ``Host`` header is checked against ``api.allowed_hosts`` (DNS rebinding) except on the
probes and metrics. Connections wait for their request in one selector thread and are answered by a bounded
pool of workers, with a socket timeout, so idle or slow clients cannot grow the thread count.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import selectors
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, quote, unquote

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from insightloop.daemon.auth import AuthResult, Principal, Right, TokenStore
from insightloop.daemon.config import ApiConfig
from insightloop.daemon.console import gather, render_console
from insightloop.daemon.pages import SCRIPT, render_approvals
from insightloop.daemon.promotion import ModelRefusedError, ModelService
from insightloop.daemon.state import StateStore
from insightloop.deploy import GateFailedError, Registry, RegistryError

log = logging.getLogger(__name__)

BodyT = TypeVar("BodyT", bound=BaseModel)
HealthProbe = Callable[[], tuple[bool, dict[str, Any]]]
API_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'self'"
)
# Evidently's HTML runs inline scripts. It gets them, in a sandbox without allow-same-origin: the report runs
# in an opaque origin, so it cannot read the API's origin (no cookies, storage or same-origin requests), and it
# may load nothing from the network.
REPORT_CSP = (
    "sandbox allow-scripts allow-popups; default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; "
    "style-src 'unsafe-inline'; img-src data: blob:; font-src data:; connect-src 'none'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "Content-Security-Policy": API_CSP,
    "Referrer-Policy": "no-referrer",
}
MAX_PATH_BYTES = 2048
# A request head (request line and headers) longer than this goes to a worker unfinished (which answers 431).
MAX_HEAD_BYTES = 256 * 1024
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,200}"
# What /files serves from a version directory (nothing else there is reachable), and its content type.
VERSION_FILES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(rf"evaluation/{_NAME}\.html"), "text/html; charset=utf-8"),
    (re.compile(rf"evaluation/{_NAME}\.json"), "application/json"),
    (re.compile(rf"evaluation/{_NAME}\.txt"), "text/plain; charset=utf-8"),
    (re.compile(r"reference/(rows|vocabulary|profile)\.json"), "application/json"),
    (re.compile(r"data/train\.jsonl"), "application/x-ndjson"),
)
# What /reports serves from the state's reports directory (the monitor's Evidently reports).
REPORT_FILES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(rf"{_NAME}\.html"), "text/html; charset=utf-8"),
    (re.compile(rf"{_NAME}\.json"), "application/json"),
)


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
    settings: ApiConfig = field(default_factory=ApiConfig)  # type: ignore[arg-type]


class HttpError(Exception):
    """An error answer with a status code."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


@dataclass(frozen=True)
class Request:
    """One request as a handler sees it: the decoded, checked path and what the route matched."""

    method: str
    path: str
    params: tuple[str, ...]
    query: dict[str, str]
    headers: Message
    body: bytes = b""
    principal: Principal | None = None  # who, when the route needs a right


@dataclass(frozen=True)
class Answer:
    """Status, body, content type and extra headers (they win over the security headers)."""

    status: int
    body: bytes
    content_type: str
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[ApiContext, Request], Answer]


@dataclass(frozen=True)
class Route:
    """One endpoint. ``right``: a token (or signed link, for GET) with it is required. ``any_host``: answer
    whatever the Host header says (probes and metrics come with the pod's IP)."""

    method: str
    pattern: str
    handler: Handler
    right: Right | None = None
    any_host: bool = False

    def match(self, method: str, path: str) -> tuple[str, ...] | None:
        """The pattern's groups if this route serves ``method path``."""
        found = re.fullmatch(self.pattern, path) if method == self.method else None
        return found.groups() if found else None


# -- handlers -------------------------------------------------------------------------------------


def _json(status: int, payload: Any) -> Answer:
    return Answer(status, json.dumps(payload, default=str).encode(), "application/json")


def _metrics(ctx: ApiContext, request: Request) -> Answer:
    return Answer(200, generate_latest(ctx.metrics), CONTENT_TYPE_LATEST)


def _probe(ctx: ApiContext, request: Request) -> Answer:
    ok, detail = (ctx.health if request.path == "/healthz" else ctx.readiness)()
    return _json(200 if ok else 503, {"ok": ok, **detail})


def _approvals(ctx: ApiContext, request: Request) -> Answer:
    return Answer(200, render_approvals(ctx.registry).encode(), "text/html; charset=utf-8")


def _console(ctx: ApiContext, request: Request) -> Answer:
    """The console, for everyone; example texts only for a token with ``read`` (as in /api/insights)."""
    data = gather(ctx.registry, ctx.store, _may(ctx, request, Right.READ), time.time())
    return Answer(200, render_console(data).encode(), "text/html; charset=utf-8")


def _approvals_js(ctx: ApiContext, request: Request) -> Answer:
    return Answer(200, SCRIPT.encode(), "text/javascript; charset=utf-8")


def _models(ctx: ApiContext, request: Request) -> Answer:
    versions = [r.model_dump(mode="json") for r in ctx.registry.records()]
    return _json(200, {"production": ctx.registry.production(), "versions": versions})


def _candidates(ctx: ApiContext, request: Request) -> Answer:
    production = ctx.registry.production()
    champion = ctx.registry.get(production).model_dump(mode="json") if production else None
    candidates = [r.model_dump(mode="json") for r in ctx.registry.pending_candidates()]
    return _json(200, {"champion": champion, "candidates": candidates})


def _audit(ctx: ApiContext, request: Request) -> Answer:
    return _json(200, {"entries": [e.model_dump(mode="json") for e in ctx.registry.audit_log()]})


def _insights(ctx: ApiContext, request: Request) -> Answer:
    insights = ctx.store.insights() if ctx.store else []
    if not _may(ctx, request, Right.READ):
        insights = [_redacted(insight) for insight in insights]
    return _json(200, {"insights": insights})


def _redacted(insight: dict[str, Any]) -> dict[str, Any]:
    """The insight without its example texts (a token with ``read`` sees them)."""
    evidence = insight.get("evidence")
    if not isinstance(evidence, dict) or not evidence.get("examples"):
        return insight
    hidden = len(evidence["examples"])
    return {**insight, "evidence": {**evidence, "examples": []}, "redacted": {"evidence.examples": hidden}}


def _jobs(ctx: ApiContext, request: Request) -> Answer:
    return _json(200, {"jobs": [j.model_dump(mode="json") for j in ctx.store.jobs()] if ctx.store else []})


def _model(ctx: ApiContext, request: Request) -> Answer:
    version = request.params[0]
    try:
        record = ctx.registry.get(version).model_dump(mode="json")
    except RegistryError as exc:
        raise HttpError(404, str(exc)) from exc
    audit = [e.model_dump(mode="json") for e in ctx.registry.audit_log() if e.version == version]
    return _json(200, {**record, "audit": audit})


def _version_file(ctx: ApiContext, request: Request) -> Answer:
    version, relative = request.params
    return _file(ctx.registry.path_of(version), relative, VERSION_FILES)


def _report_file(ctx: ApiContext, request: Request) -> Answer:
    if ctx.reports_dir is None:
        raise HttpError(404, "no reports directory")
    return _file(ctx.reports_dir, request.params[0], REPORT_FILES)


def _file(root: Path, relative: str, allowed: tuple[tuple[re.Pattern[str], str], ...]) -> Answer:
    content_type = next((kind for pattern, kind in allowed if pattern.fullmatch(relative)), None)
    if content_type is None:
        raise HttpError(404, "no such file (only reports, reference rows, vocabulary and training data are served)")
    base = root.resolve()
    target = (base / relative).resolve()
    if not target.is_relative_to(base) or not target.is_file():
        raise HttpError(404, "no such file")
    headers = {"Content-Security-Policy": REPORT_CSP} if content_type.startswith("text/html") else {}
    return Answer(200, target.read_bytes(), content_type, headers)


def _link(ctx: ApiContext, request: Request) -> Answer:
    """A signed link to a report or file, for a browser that cannot send the bearer header."""
    path = request.query.get("path", "")
    clean = _checked_path(path)
    if not clean.startswith(("/files/", "/reports/")):
        raise HttpError(400, "path must be a /files/... or /reports/... path")
    found = next((r for r in ROUTES if r.right is Right.READ and r.match("GET", clean) is not None), None)
    if found is None:
        raise HttpError(404, f"no such file: {clean}")
    assert request.principal is not None
    url = f"{quote(clean)}?{TokenStore.sign_link(request.principal, clean, ctx.settings.report_link_ttl_s)}"
    return _json(200, {"url": url, "expires_in_s": ctx.settings.report_link_ttl_s})


def _change(ctx: ApiContext, request: Request) -> Answer:
    version, action = request.params
    assert request.principal is not None
    change = _parse(ChangeRequest, request.body)
    if action == "approve":
        event = ctx.models.approve(version, change.by, change.note, change.override, via=request.principal.name)
        return _json(200, {"event": event.model_dump(mode="json")})
    record = ctx.models.reject(version, change.by, change.note, via=request.principal.name)
    return _json(200, {"version": record.model_dump(mode="json")})


def _rollback(ctx: ApiContext, request: Request) -> Answer:
    assert request.principal is not None
    rollback = _parse(RollbackRequest, request.body)
    event = ctx.models.rollback(rollback.by, rollback.version, rollback.note, via=request.principal.name)
    return _json(200, {"event": event.model_dump(mode="json")})


#: Every endpoint, first match wins. A new page or endpoint is one more entry here, e.g.
#: ``Route("GET", r"/", lambda ctx, request: Answer(200, render_console(ctx).encode(), "text/html; charset=utf-8"))``.
ROUTES: list[Route] = [
    Route("GET", r"/metrics", _metrics, any_host=True),
    Route("GET", r"/healthz|/readyz", _probe, any_host=True),
    Route("GET", r"/", _console),
    # Browsers ask for an icon; an empty answer keeps their consoles free of a 404.
    Route("GET", r"/favicon\.ico", lambda ctx, request: Answer(204, b"", "image/x-icon")),
    Route("GET", r"/approvals", _approvals),
    Route("GET", r"/approvals\.js", _approvals_js),
    Route("GET", r"/api/models", _models),
    Route("GET", r"/api/candidates", _candidates),
    Route("GET", r"/api/audit", _audit),
    Route("GET", r"/api/insights", _insights),
    Route("GET", r"/api/jobs", _jobs),
    Route("GET", r"/api/links", _link, right=Right.READ),
    Route("GET", r"/api/models/([^/]+)", _model),
    Route("GET", r"/files/([^/]+)/(.+)", _version_file, right=Right.READ),
    Route("GET", r"/reports/(.+)", _report_file, right=Right.READ),
    Route("POST", r"/api/models/rollback", _rollback, right=Right.ROLLBACK),
    Route("POST", r"/api/models/([^/]+)/(approve)", _change, right=Right.APPROVE),
    Route("POST", r"/api/models/([^/]+)/(reject)", _change, right=Right.REJECT),
]


# -- checks -----------------------------------------------------------------------------------


def _checked_path(raw: str) -> str:
    """The decoded path; 400 for what no client should send (NUL, control characters, bad escapes, huge)."""
    if len(raw.encode("utf-8", errors="surrogateescape")) > MAX_PATH_BYTES:
        raise HttpError(400, f"path longer than {MAX_PATH_BYTES} bytes")
    if _BAD_ESCAPE.search(raw):
        raise HttpError(400, "bad percent-encoding in the path")
    try:
        path = unquote(raw, errors="strict")
    except UnicodeDecodeError:
        raise HttpError(400, "the path is not UTF-8 once decoded") from None
    if _CONTROL.search(path) or not path.startswith("/"):
        raise HttpError(400, "the path holds control characters or does not start with /")
    return path


def _query(raw: str) -> dict[str, str]:
    if _BAD_ESCAPE.search(raw):
        raise HttpError(400, "bad percent-encoding in the query")
    try:
        parsed = parse_qs(raw, keep_blank_values=True, errors="strict", max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        raise HttpError(400, "malformed query string") from None
    return {key: values[-1] for key, values in parsed.items()}


def host_allowed(host: str | None, allowed: list[str]) -> bool:
    """True if the Host header value names one of ``allowed`` (exact, '.suffix' or '*'); no header passes
    (DNS rebinding needs a browser, and browsers always send one)."""
    if host is None or "*" in allowed:
        return True
    name = host.strip().lower()
    if name.startswith("["):
        name = name[: name.find("]") + 1] if "]" in name else name
    elif name.count(":") == 1:
        name = name.split(":", 1)[0]
    name = name.rstrip(".")
    for entry in (a.strip().lower().rstrip(".") for a in allowed):
        if name == entry or (entry.startswith(".") and (name == entry[1:] or name.endswith(entry))):
            return True
    return False


def _may(ctx: ApiContext, request: Request, right: Right) -> bool:
    """Whether the caller holds ``right``; a token that is presented but wrong or expired is refused (401)."""
    result, _ = ctx.tokens.check(request.headers.get("Authorization"), right)
    if result in (AuthResult.INVALID, AuthResult.EXPIRED):
        _refuse(result, None, right)
    return result is AuthResult.OK


_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="insightloop"'}


def _refuse(result: AuthResult, principal: Principal | None, needed: Right) -> None:
    if result is AuthResult.MISSING:
        raise HttpError(401, "authentication required: send Authorization: Bearer <token>", _CHALLENGE)
    if result is AuthResult.INVALID:
        raise HttpError(401, "invalid token", _CHALLENGE)
    if result is AuthResult.EXPIRED:
        raise HttpError(401, "token expired", _CHALLENGE)
    if result is AuthResult.FORBIDDEN:
        name = principal.name if principal else "?"
        raise HttpError(403, f"token {name!r} may not {needed.value}")


def _authorise(
    ctx: ApiContext, method: str, path: str, query: dict[str, str], headers: Message, needed: Right
) -> Principal:
    authorization = headers.get("Authorization")
    if method == "GET" and not authorization and {"by", "exp", "sig"} <= set(query):
        result, principal = ctx.tokens.check_link(path, query["by"], query["exp"], query["sig"], needed)
        if result is AuthResult.INVALID:
            raise HttpError(401, "invalid or altered link: ask the API for a new one", _CHALLENGE)
        if result is AuthResult.EXPIRED:
            raise HttpError(401, "link or token expired: open it again from the page", _CHALLENGE)
    else:
        result, principal = ctx.tokens.check(authorization, needed)
    if result is not AuthResult.OK:
        _refuse(result, principal, needed)
    assert principal is not None
    return principal


def dispatch(ctx: ApiContext, method: str, target: str, headers: Message, body: bytes = b"") -> Answer:
    """Answer one request (raises :class:`HttpError` for the error answers)."""
    raw_path, _, raw_query = target.partition("?")
    path = _checked_path(raw_path)
    for route in ROUTES:
        params = route.match(method, path)
        if params is None:
            continue
        if not route.any_host and not host_allowed(headers.get("Host"), ctx.settings.allowed_hosts):
            raise HttpError(
                421,
                f"this server does not answer for Host {headers.get('Host')!r}; "
                "add it to api.allowed_hosts if people reach the API under that name",
            )
        query = _query(raw_query)
        principal = _authorise(ctx, method, path, query, headers, route.right) if route.right else None
        return route.handler(ctx, Request(method, path, params, query, headers, body, principal))
    if any(route.match(other, path) is not None for route in ROUTES for other in ("GET", "POST") if other != method):
        raise HttpError(405, f"{method} is not allowed on {path}")
    raise HttpError(404, f"no such endpoint: {path}")


def _parse(model: type[BodyT], body: bytes) -> BodyT:
    try:
        return model.model_validate_json(body or b"{}")
    except ValidationError as exc:
        detail = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())
        raise HttpError(400, f"invalid request body: {detail}") from None


# -- the server -------------------------------------------------------------------------------------


class _PrefixedSocketIO(io.RawIOBase):
    """A connection's bytes: what the selector thread already read (the request head), then the socket."""

    def __init__(self, prefix: bytes, conn: socket.socket) -> None:
        self._prefix = memoryview(prefix)
        self._conn = conn

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._prefix:
            n = min(len(buffer), len(self._prefix))
            buffer[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        return self._conn.recv_into(buffer)


class _PooledHTTPServer(HTTPServer):
    """Accepts connections in one thread and reads their request heads there, without blocking; a connection
    whose head is complete is answered on a bounded pool. A connection that has not sent its whole head within
    the socket timeout is closed (a slow client holds no thread); beyond ``max_connections`` waiting, the
    oldest is closed."""

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], settings: ApiConfig) -> None:
        self.request_queue_size = settings.listen_backlog
        super().__init__(address, handler)
        self._settings = settings
        self._pool = ThreadPoolExecutor(max_workers=settings.max_workers, thread_name_prefix="api-http-worker")
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.socket, selectors.EVENT_READ)
        self._waiting: OrderedDict[socket.socket, tuple[Any, float, bytearray]] = OrderedDict()
        self._heads: dict[socket.socket, bytes] = {}
        self._busy: set[socket.socket] = set()
        self._busy_lock = threading.Lock()

    def serve_until(self, stop: threading.Event, poll_interval: float = 0.2) -> None:
        """Accept and dispatch until ``stop`` is set; then close what waits and let the pool finish."""
        try:
            while not stop.is_set():
                for key, _ in self._selector.select(poll_interval):
                    if key.fileobj is self.socket:
                        self._accept()
                    else:
                        self._read_head(key.fileobj)  # type: ignore[arg-type]
                self._expire()
        finally:
            for conn in list(self._waiting):
                self._drop(conn)
            with self._busy_lock:
                for conn in self._busy:  # wake workers blocked on a slow client
                    with contextlib.suppress(OSError):
                        conn.shutdown(socket.SHUT_RDWR)
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._selector.close()

    def take_head(self, conn: socket.socket) -> bytes:
        """What was read of ``conn`` before it was handed to a worker."""
        with self._busy_lock:
            return self._heads.pop(conn, b"")

    def _accept(self) -> None:
        try:
            conn, address = self.socket.accept()
        except OSError:
            return
        while len(self._waiting) >= self._settings.max_connections:
            self._drop(next(iter(self._waiting)))
        conn.setblocking(False)
        self._waiting[conn] = (address, time.monotonic() + self._settings.socket_timeout_s, bytearray())
        self._selector.register(conn, selectors.EVENT_READ)

    def _read_head(self, conn: socket.socket) -> None:
        address, _, head = self._waiting[conn]
        try:
            data = conn.recv(65_536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop(conn)  # gone before it asked anything
            return
        head += data
        if b"\r\n\r\n" in head or b"\n\n" in head or len(head) > MAX_HEAD_BYTES:
            self._dispatch(conn, address, bytes(head))

    def _dispatch(self, conn: socket.socket, address: Any, head: bytes) -> None:
        del self._waiting[conn]
        self._selector.unregister(conn)
        conn.setblocking(True)
        conn.settimeout(self._settings.socket_timeout_s)
        with self._busy_lock:
            self._busy.add(conn)
            self._heads[conn] = head
        self._pool.submit(self._answer, conn, address)

    def _answer(self, conn: socket.socket, address: Any) -> None:
        try:
            self.finish_request(conn, address)
        except Exception:
            log.debug("connection from %s ended with an error", address, exc_info=True)
        finally:
            with self._busy_lock:
                self._busy.discard(conn)
                self._heads.pop(conn, None)
            self.shutdown_request(conn)

    def _expire(self) -> None:
        now = time.monotonic()
        while self._waiting:
            conn, (_, deadline, _) = next(iter(self._waiting.items()))
            if deadline > now:
                break
            self._drop(conn)

    def _drop(self, conn: socket.socket) -> None:
        self._waiting.pop(conn, None)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(conn)
        conn.close()


class ApiServer:
    """A named worker serving the daemon's HTTP endpoints until the daemon stops."""

    name = "api"

    def __init__(
        self,
        host: str,
        port: int,
        context: ApiContext,
        on_stop: Callable[[], None] | None = None,
    ) -> None:
        self.context = context
        self._on_stop = on_stop
        self._server = _PooledHTTPServer((host, port), self._handler_class(), context.settings)
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
        halt = threading.Event()
        thread = threading.Thread(target=self._server.serve_until, args=(halt,), name="api-http", daemon=True)
        thread.start()
        self._serving.set()
        log.info("HTTP API on port %d", self.port)
        try:
            stop.wait()
        finally:
            self._serving.clear()
            halt.set()
            thread.join(self.context.settings.socket_timeout_s + 5)
            self._server.server_close()
            if self._on_stop is not None:
                self._on_stop()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        ctx = self.context
        api = self

        class RequestHandler(BaseHTTPRequestHandler):
            server_version = "insightloop"
            sys_version = ""
            timeout = ctx.settings.socket_timeout_s

            def setup(self) -> None:
                super().setup()
                head = api._server.take_head(self.connection)
                self.rfile = io.BufferedReader(_PrefixedSocketIO(head, self.connection))  # type: ignore[assignment]

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("http %s", format % args)

            def _send(self, answer: Answer, extra: dict[str, str] | None = None) -> None:
                self.send_response(answer.status)
                self.send_header("Content-Type", answer.content_type)
                self.send_header("Content-Length", str(len(answer.body)))
                for key, value in {**SECURITY_HEADERS, **answer.headers, **(extra or {})}.items():
                    self.send_header(key, value)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(answer.body)

            def _answer(self, body: Callable[[], bytes]) -> None:
                try:
                    self._send(dispatch(ctx, self.command, self.path, self.headers, body()))
                except HttpError as error:
                    self._send(_json(error.status, {"error": error.message}), error.headers)
                except GateFailedError as exc:
                    self._send(_json(409, {"error": str(exc)}))
                except ModelRefusedError as exc:
                    self._send(_json(422, {"error": str(exc)}))
                except RegistryError as exc:
                    status = 404 if "no version" in str(exc) else 409
                    self._send(_json(status, {"error": str(exc)}))
                except (ConnectionError, TimeoutError):
                    self.close_connection = True
                except Exception:
                    log.exception("error serving %s %r", self.command, self.path.split("?", 1)[0][:200])
                    self._send(_json(500, {"error": "internal error; see the daemon's log"}))

            def do_GET(self) -> None:
                self._answer(lambda: b"")

            def do_POST(self) -> None:
                def body() -> bytes:
                    try:
                        length = int(self.headers.get("Content-Length") or 0)
                    except ValueError:
                        raise HttpError(400, "bad Content-Length") from None
                    if length > ctx.max_body_bytes:
                        self.close_connection = True
                        raise HttpError(413, f"request body over {ctx.max_body_bytes} bytes")
                    return self.rfile.read(length) if length > 0 else b""

                self._answer(body)

        return RequestHandler
