"""Runners execute a retraining job (`insightloop retrain --spec SPEC.json`) somewhere and report on it.

``LocalRunner`` runs a subprocess on this machine; ``KubernetesRunner`` (retrain/kubernetes_runner.py)
creates a ``batch/v1`` Job from a template. The controller only talks to the ``Runner`` interface. A job
of several processes (``controller.gpus_per_job`` above 1) is launched by torchrun in both.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Protocol


class JobState(StrEnum):
    """Where a retraining job is."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    #: The runner has never heard of this handle (a ``LocalRunner`` after a restart of its process).
    UNKNOWN = "unknown"
    #: The job existed but no longer does (a Kubernetes Job deleted, or removed by its TTL).
    GONE = "gone"


@dataclass(frozen=True)
class JobStatus:
    """A job's state, a one-line message, and the tail of its log when it failed."""

    state: JobState
    message: str = ""
    log_tail: str = ""

    @property
    def finished(self) -> bool:
        """True once the runner has nothing more to report: succeeded, failed, unknown to it, or gone."""
        return self.state in (JobState.SUCCEEDED, JobState.FAILED, JobState.UNKNOWN, JobState.GONE)

    @property
    def lost(self) -> bool:
        """True when the runner cannot say how the job ended (unknown to it, or gone): its result file may."""
        return self.state in (JobState.UNKNOWN, JobState.GONE)


class Runner(Protocol):
    """Runs retraining jobs; handles are opaque strings the runner understands."""

    def submit(self, job_id: str, spec_path: Path) -> str:
        """Start the job described by ``spec_path``; return a handle."""

    def status(self, handle: str) -> JobStatus:
        """The job's current status."""

    def cleanup(self, handle: str) -> None:
        """Release what the job left (process, Kubernetes objects); safe to call twice."""


LOG_TAIL_BYTES = 4000

#: Variables a local job inherits from the daemon, by exact name. A job reads everything it needs from its
#: spec file (paths, settings, the champion); the daemon's own settings, and with them its secrets (the
#: approval token, the SASL password, a tokens file's path), stay with the daemon.
JOB_ENV_NAMES = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "SHELL",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TERM",
        "TMPDIR",
        "TEMP",
        "TMP",
        "PYTHONPATH",
        "PYTHONHASHSEED",
        "PYTHONUNBUFFERED",
        "PYTHONDONTWRITEBYTECODE",
        "PYTHONWARNINGS",
        "VIRTUAL_ENV",
        "DO_NOT_TRACK",
        "TOKENIZERS_PARALLELISM",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "XDG_CACHE_HOME",
        "LD_LIBRARY_PATH",
    }
)
#: ...and by prefix: locale, the model libraries' caches and switches, thread pools, GPUs.
JOB_ENV_PREFIXES = ("LC_", "HF_", "TRANSFORMERS_", "TORCH_", "OMP_", "MKL_", "KMP_", "OPENBLAS_", "CUDA_", "NVIDIA_")
#: A prefixed variable whose name says it is a credential is left out all the same (``HF_TOKEN``).
_SECRET_NAME = re.compile(r"TOKEN|PASSWORD|PASSWD|SECRET|CREDENTIAL|API_?KEY|PRIVATE", re.IGNORECASE)


def torchrun_arguments(processes: int) -> list[str]:
    """torchrun's options for a job of ``processes`` training processes on one node.

    ``--standalone`` gives the job its own rendezvous on a free local port, so jobs never share one.

    >>> torchrun_arguments(2)
    ['--standalone', '--nnodes=1', '--nproc_per_node=2']
    """
    if processes < 2:
        raise ValueError(f"torchrun launches jobs of at least two processes, not {processes}")
    return ["--standalone", "--nnodes=1", f"--nproc_per_node={processes}"]


def local_job_command(python: str, spec_path: Path, processes: int = 1) -> list[str]:
    """The command line of a local job: ``insightloop retrain --spec``, under torchrun for several processes.

    >>> local_job_command("python", Path("s.json"))
    ['python', '-m', 'insightloop.daemon', 'retrain', '--spec', 's.json']
    >>> local_job_command("python", Path("s.json"), 2)[:6]
    ['python', '-m', 'torch.distributed.run', '--standalone', '--nnodes=1', '--nproc_per_node=2']
    """
    retrain = ["-m", "insightloop.daemon", "retrain", "--spec", str(spec_path)]
    if processes <= 1:
        return [python, *retrain]
    # torch.distributed.run is torchrun's module: the same interpreter (and virtual environment) as the daemon.
    return [python, "-m", "torch.distributed.run", *torchrun_arguments(processes), *retrain]


def job_environment(parent: Mapping[str, str], extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a local job: the allow-listed variables of ``parent``, then ``extra`` (given on purpose).

    >>> job_environment({"PATH": "/bin", "INSIGHTLOOP_API__APPROVAL_TOKEN": "t", "HF_TOKEN": "h", "HF_HOME": "/h"})
    {'PATH': '/bin', 'HF_HOME': '/h'}
    """
    env = {
        name: value
        for name, value in parent.items()
        if name in JOB_ENV_NAMES or (name.startswith(JOB_ENV_PREFIXES) and not _SECRET_NAME.search(name))
    }
    env.update(extra or {})
    return env


class LocalRunner:
    """Runs each job as a subprocess of this process, logging to ``<log_dir>/<job id>.log``.

    The job gets an allow-listed environment (:func:`job_environment`), not the daemon's: the daemon's
    approval token and Kafka password never reach training code. ``env`` adds variables on purpose.
    With ``processes`` above 1 the job runs under torchrun, data-parallel (on CPU: gloo, one core each
    unless ``OMP_NUM_THREADS`` says otherwise; on CUDA: one GPU per process, so this many must be visible).
    """

    def __init__(
        self, log_dir: Path, python: str = sys.executable, env: dict[str, str] | None = None, processes: int = 1
    ) -> None:
        if processes < 1:
            raise ValueError(f"a job runs in at least one process, not {processes}")
        self.log_dir = Path(log_dir)
        self.python = python
        self.env = env
        self.processes = processes
        self._processes: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
        self._lock = threading.Lock()

    def submit(self, job_id: str, spec_path: Path) -> str:
        """Start ``insightloop retrain --spec`` in a subprocess (torchrun's, for several processes)."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{job_id}.log"
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                local_job_command(self.python, spec_path, self.processes),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=job_environment(os.environ, self.env),
                start_new_session=True,  # a Ctrl-C to the daemon does not kill a job mid-write
            )
        with self._lock:
            self._processes[job_id] = (process, log_path)
        return job_id

    def status(self, handle: str) -> JobStatus:
        """Running, finished with its exit code (and the log's tail on failure), or UNKNOWN for a handle this
        runner did not start."""
        with self._lock:
            entry = self._processes.get(handle)
        if entry is None:
            return JobStatus(JobState.UNKNOWN, f"no job {handle} started by this process (it restarted?)")
        process, log_path = entry
        code = process.poll()
        if code is None:
            return JobStatus(JobState.RUNNING, f"pid {process.pid}")
        if code == 0:
            return JobStatus(JobState.SUCCEEDED, "exit code 0")
        return JobStatus(JobState.FAILED, f"exit code {code}", _tail(log_path))

    def cleanup(self, handle: str) -> None:
        """Stop the job if it still runs and forget it (torchrun passes the SIGTERM on to its workers)."""
        with self._lock:
            entry = self._processes.pop(handle, None)
        if entry is None:
            return
        process, _ = entry
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _tail(path: Path) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - LOG_TAIL_BYTES))
            return handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
