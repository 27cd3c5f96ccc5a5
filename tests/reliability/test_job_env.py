"""Retraining jobs get an allow-listed environment, not the daemon's (issue 17, finding 6).

Local jobs inherited the daemon's whole environment, the approval token and the SASL password included.
"""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pytest

from insightloop.retrain import LocalRunner
from insightloop.retrain.kubernetes_runner import build_job
from insightloop.retrain.runners import job_environment

SECRETS = {
    "INSIGHTLOOP_API__APPROVAL_TOKEN": "approval-token-0123456789",
    "INSIGHTLOOP_KAFKA__SASL_PASSWORD": "sasl-password-0123456789",
    "HF_TOKEN": "hf-token-0123456789",
    "AWS_SECRET_ACCESS_KEY": "aws-secret-0123456789",
}
KEPT = {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "2", "LC_ALL": "C.UTF-8", "TOKENIZERS_PARALLELISM": "false"}


def _environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(entry.split("=", 1) for entry in raw.decode(errors="replace").split("\0") if "=" in entry)


@pytest.fixture
def daemon_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {**SECRETS, **KEPT}.items():
        monkeypatch.setenv(name, value)


def _wait_done(runner: LocalRunner, handle: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not runner.status(handle).finished and time.monotonic() < deadline:
        time.sleep(0.1)


@pytest.mark.usefixtures("daemon_env")
def test_a_real_retrain_job_does_not_see_the_daemons_secrets(tmp_path: Path) -> None:
    """`insightloop retrain --spec` started by the runner, its environment read from /proc while it runs."""
    runner = LocalRunner(tmp_path / "logs")
    # The spec is a FIFO this test holds open: the job blocks reading it, so it is alive while we look; then
    # it reads "{}", not a valid spec, and fails (a fast machine once finished the job before the look).
    spec = tmp_path / "spec.json"
    os.mkfifo(spec)
    writer = os.open(spec, os.O_RDWR)  # a FIFO opened read-write does not wait for a reader
    handle = runner.submit("job-env", spec)
    try:
        pid = int(runner.status(handle).message.split()[-1])
        seen = _environ_of(pid)
        assert "python" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    finally:
        os.write(writer, b"{}")
        os.close(writer)
        _wait_done(runner, handle)
        runner.cleanup(handle)
    assert runner.status(handle).finished
    for name, value in SECRETS.items():
        assert name not in seen, f"the job inherited {name}"
        assert all(value not in v for v in seen.values())
    assert not [name for name in seen if name.startswith("INSIGHTLOOP_")]
    assert {name: seen.get(name) for name in KEPT} == KEPT
    assert seen["PATH"] == os.environ["PATH"]


@pytest.mark.usefixtures("daemon_env")
def test_the_jobs_whole_environment_is_the_allow_list_and_what_the_runner_adds(tmp_path: Path) -> None:
    """A stand-in job writes the environment it got; it is exactly the allow-listed part and ``env``."""
    dump = tmp_path / "env.json"
    job = tmp_path / "job"
    job.write_text(f"#!/usr/bin/env python3\nimport json, os\njson.dump(dict(os.environ), open({str(dump)!r}, 'w'))\n")
    job.chmod(job.stat().st_mode | stat.S_IEXEC)
    runner = LocalRunner(tmp_path / "logs", python=str(job), env={"RETRAIN_NOTE": "on purpose"})
    spec = tmp_path / "spec.json"
    spec.write_text("{}")
    handle = runner.submit("job-dump", spec)
    try:
        _wait_done(runner, handle)
    finally:
        runner.cleanup(handle)
    got = json.loads(dump.read_text())
    got.pop("PWD", None)  # set by nothing of ours: some interpreters add it
    got.pop("LC_CTYPE", None)  # Python may coerce the C locale by setting it
    assert got == {**job_environment(os.environ), "RETRAIN_NOTE": "on purpose"}
    assert not set(SECRETS) & set(got)


def test_a_kubernetes_job_takes_its_environment_from_the_template_only(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.retrain.test_kubernetes_runner import NAMESPACE, SPEC, TEMPLATE

    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    (container,) = TEMPLATE["spec"]["template"]["spec"]["containers"]
    job = build_job(TEMPLATE, "retrain-20250101-env", SPEC, namespace=NAMESPACE)
    (built,) = job.spec.template.spec.containers
    names = [e.name for e in built.env or []]
    template_names = [e["name"] for e in container.get("env") or []]
    assert sorted(set(names)) == sorted({"RETRAIN_SPEC", *template_names})
    dumped = json.dumps(job.to_dict(), default=str)
    assert not [name for name, value in SECRETS.items() if value in dumped]
