"""Run the daemon in-process (threads) or as a real subprocess, for integration tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from insightloop.daemon.config import Config
from insightloop.daemon.wiring import build_app


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    """Status and body of a GET (errors included)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


class InProcessDaemon:
    """The daemon's workers in threads of the test process (the same wiring as `insightloop run`)."""

    def __init__(self, config: Config, role: str = "all") -> None:
        self.app = build_app(config, role)
        self.daemon = self.app.daemon
        self.api = self.app.api
        self.exit_code: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api.port}"

    def __enter__(self) -> InProcessDaemon:
        self.daemon.start()
        wait_ready(self.url)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.exit_code = self.app.stop()


def wait_ready(url: str, timeout_s: float = 60.0, process: subprocess.Popen[bytes] | None = None) -> dict[str, Any]:
    """Poll /readyz until it answers 200; return its body."""
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"daemon exited with {process.returncode} before ready")
        try:
            status, body = http_get(url + "/readyz", timeout=2)
            last = body
            if status == 200:
                return dict(json.loads(body))
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"daemon not ready within {timeout_s} s: {last}")


class DaemonProcess:
    """`insightloop run` as a real subprocess with a config file."""

    def __init__(self, config: Config, workdir: Path, name: str, http_port: int) -> None:
        self.config_path = workdir / f"{name}.yaml"
        self.config_path.write_text(yaml.safe_dump(json.loads(config.model_dump_json())), encoding="utf-8")
        self.http_port = http_port
        self.log_path = workdir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> DaemonProcess:
        env = {**os.environ, "DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1"}
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "insightloop.daemon",
                "run",
                "--config",
                str(self.config_path),
                "--http-port",
                str(self.http_port),
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        return self

    def wait_ready(self, timeout_s: float = 90.0) -> dict[str, Any]:
        try:
            return wait_ready(self.url, timeout_s, self.process)
        except AssertionError as error:  # the daemon's own words say why
            self._log.flush()
            raise AssertionError(f"{error}; its log ends:\n{self.log_text()[-3000:]}") from None

    def terminate(self, timeout_s: float = 60.0) -> int:
        """SIGTERM and wait; return the exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout_s)
        self._log.close()
        return code

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        if hasattr(self, "_log") and not self._log.closed:
            self._log.close()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")
