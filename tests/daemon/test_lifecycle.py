"""The daemon lifecycle: a dying worker stops the others; the exit code says why."""

from __future__ import annotations

import threading
from typing import Any

from insightloop.daemon.errors import ExitCode, NoModelError
from insightloop.daemon.lifecycle import Daemon


class Waiter:
    def __init__(self, name: str) -> None:
        self.name = name
        self.stopped = threading.Event()
        self.ready = False

    def status(self) -> dict[str, Any]:
        return {}

    def run(self, stop: threading.Event) -> None:
        self.ready = True
        stop.wait()
        self.stopped.set()


class Crasher(Waiter):
    def __init__(self, name: str, error: BaseException, after: threading.Event) -> None:
        super().__init__(name)
        self.error = error
        self.after = after

    def run(self, stop: threading.Event) -> None:
        self.after.wait(5)
        raise self.error


def test_stop_request_drains_every_worker() -> None:
    workers = [Waiter("a"), Waiter("b")]
    daemon = Daemon(workers, drain_timeout_s=5)
    daemon.start()
    daemon.request_stop()
    assert daemon.wait() == ExitCode.OK
    assert all(w.stopped.is_set() for w in workers)


def test_a_failing_worker_stops_the_rest_and_sets_the_exit_code() -> None:
    go = threading.Event()
    waiter = Waiter("waiter")
    daemon = Daemon([waiter, Crasher("crasher", NoModelError("no model"), go)], drain_timeout_s=5)
    daemon.start()
    while not waiter.ready:
        threading.Event().wait(0.01)
    ready, detail = daemon.readiness()
    assert not ready and detail["workers"]["crasher"]["ready"] is False
    go.set()
    assert daemon.wait() == ExitCode.NO_MODEL
    assert waiter.stopped.is_set()
    healthy, detail = daemon.health()
    assert not healthy and detail["failed"] == ["crasher"]


def test_unexpected_errors_exit_with_failure() -> None:
    go = threading.Event()
    go.set()
    daemon = Daemon([Crasher("crasher", RuntimeError("boom"), go)], drain_timeout_s=5)
    daemon.start()
    assert daemon.wait() == ExitCode.FAILURE
