"""One lifecycle for the daemon: start named workers, report ready, drain on SIGTERM, stop.

Signals only set the stop flag. When any worker exits (failed or not) the others are asked to
stop too, so the process never limps on half-alive; the first failure decides the exit code.
The one exception: a worker that fails with an error ``restart_when`` calls transient (the broker went
away) is run again after a backoff, while the rest keep working; it reports unready meanwhile.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from insightloop.daemon.errors import ExitCode, InsightloopError

log = logging.getLogger(__name__)


class Worker(Protocol):
    """A named long-running part of the daemon."""

    name: str

    @property
    def ready(self) -> bool:
        """True once the worker's start-up is done."""

    def status(self) -> dict[str, Any]:
        """Details for /readyz."""

    def run(self, stop: threading.Event) -> None:
        """Work until ``stop`` is set, then clean up and return."""


class Daemon:
    """Runs workers in named threads and stops them all together."""

    def __init__(
        self,
        workers: list[Worker],
        drain_timeout_s: float = 20.0,
        on_worker_up: Callable[[str, bool], None] | None = None,
        restart_when: Callable[[BaseException], bool] | None = None,
        restart_backoff_s: tuple[float, float] = (1.0, 30.0),
    ) -> None:
        names = [w.name for w in workers]
        if len(set(names)) != len(names):
            raise ValueError(f"worker names must be unique: {names}")
        self.workers = workers
        self.drain_timeout_s = drain_timeout_s
        self.stop_event = threading.Event()
        self.failures: dict[str, BaseException] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._on_worker_up = on_worker_up or (lambda name, up: None)
        self._restart_when = restart_when or (lambda exc: False)
        self.restart_backoff_s = restart_backoff_s
        self.restarts: dict[str, int] = {}

    def start(self) -> None:
        """Start every worker in its own thread."""
        for worker in self.workers:
            thread = threading.Thread(target=self._run, args=(worker,), name=f"worker-{worker.name}")
            self._threads[worker.name] = thread
            thread.start()

    def _run(self, worker: Worker) -> None:
        first, most = self.restart_backoff_s
        backoff = first
        try:
            while True:
                self._on_worker_up(worker.name, True)
                started = time.monotonic()
                try:
                    worker.run(self.stop_event)
                    return
                except BaseException as exc:
                    if self.stop_event.is_set() or not self._restarts_after(exc):
                        self.failures[worker.name] = exc
                        log.error(
                            "worker %s failed: %s", worker.name, exc, exc_info=not isinstance(exc, InsightloopError)
                        )
                        return
                    if time.monotonic() - started > 10 * most:
                        backoff = first  # it had been working for a while: this is a new outage
                    self.restarts[worker.name] = self.restarts.get(worker.name, 0) + 1
                    log.warning(
                        "worker %s stopped on a transient error (%s: %s); restarting it in %.0f s",
                        worker.name,
                        type(exc).__name__,
                        str(exc)[:300],
                        backoff,
                    )
                self._on_worker_up(worker.name, False)
                if self.stop_event.wait(backoff):
                    return
                backoff = min(backoff * 2, most)
        finally:
            self._on_worker_up(worker.name, False)
            if not self.stop_event.is_set():
                log.info("worker %s exited; stopping the others", worker.name)
            self.stop_event.set()

    def _restarts_after(self, exc: BaseException) -> bool:
        try:
            return bool(self._restart_when(exc))
        except Exception:
            log.exception("could not tell whether %r is transient; treating it as a failure", exc)
            return False

    def request_stop(self, *_: Any) -> None:
        """Ask every worker to finish what it is doing and stop (safe from a signal handler)."""
        self.stop_event.set()

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT request a graceful stop."""
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)

    def health(self) -> tuple[bool, dict[str, Any]]:
        """Liveness: every worker thread alive and none failed."""
        alive = {name: thread.is_alive() for name, thread in self._threads.items()}
        ok = all(alive.values()) and not self.failures and not self.stop_event.is_set()
        return ok, {"workers": alive, "failed": sorted(self.failures)}

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Readiness: healthy and every worker's start-up done."""
        healthy, _ = self.health()
        detail: dict[str, Any] = {}
        for w in self.workers:
            detail[w.name] = {"ready": w.ready, **w.status()}
            if w.name in self.restarts:
                detail[w.name]["restarts"] = self.restarts[w.name]
        return healthy and all(w.ready for w in self.workers), {"workers": detail}

    def wait(self) -> int:
        """Block until stopped, drain the workers and return the process exit code."""
        while not self.stop_event.wait(0.5):
            pass
        log.info("stopping: draining workers (deadline %.0f s)", self.drain_timeout_s)
        deadline = time.monotonic() + self.drain_timeout_s
        for name, thread in self._threads.items():
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.error("worker %s did not stop within the drain deadline", name)
                self.failures.setdefault(name, TimeoutError("drain deadline passed"))
        if not self.failures:
            return int(ExitCode.OK)
        first = next(iter(self.failures.values()))
        return int(first.exit_code) if isinstance(first, InsightloopError) else int(ExitCode.FAILURE)
