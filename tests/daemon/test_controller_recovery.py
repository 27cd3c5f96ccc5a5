"""After a restart the controller picks up the jobs its store says were active, however old they are."""

from __future__ import annotations

import stat
from pathlib import Path

from insightloop.daemon.config import load_config
from insightloop.daemon.controller import Controller
from insightloop.daemon.metrics import Metrics
from insightloop.daemon.promotion import ModelService
from insightloop.daemon.state import StateStore
from insightloop.deploy import Registry
from insightloop.retrain.runners import LocalRunner


def test_active_jobs_are_followed_or_failed_after_a_restart(tmp_path: Path) -> None:
    config = load_config(
        None, {"registry": {"path": str(tmp_path / "registry")}, "state": {"dir": str(tmp_path / "state")}}, environ={}
    )
    store = StateStore(config.state.dir)
    # A stand-in for `insightloop retrain` that just keeps running: the runner starts it as a real process.
    job_command = tmp_path / "long-job"
    job_command.write_text("#!/bin/sh\nsleep 60\n")
    job_command.chmod(job_command.stat().st_mode | stat.S_IEXEC)
    runner = LocalRunner(tmp_path / "logs", python=str(job_command))
    spec = tmp_path / "spec.json"
    spec.write_text("{}")
    try:
        alive = runner.submit("job-alive", spec)
        # The oldest rows: one job whose process this runner still has, one it never heard of (lost in the restart).
        store.upsert_job("job-alive", "running", {"handle": alive, "spec_path": str(spec), "insight_id": "i-1"})
        store.upsert_job("job-lost", "running", {"handle": "job-lost", "spec_path": str(spec), "insight_id": "i-2"})
        # Then more finished jobs than one page of the job list holds.
        for n in range(600):
            store.upsert_job(f"done-{n}", "succeeded", {"insight_id": f"d-{n}"})

        metrics = Metrics()
        controller = Controller(config, store, ModelService(Registry(config.registry.path)), metrics, runner=runner)
        controller._recover()

        assert controller.status()["running_jobs"] == ["job-alive"]
        lost = store.job("job-lost")
        assert lost is not None and lost["state"] == "failed"
        assert lost["error"] == "the daemon restarted while the job ran"
        assert lost["insight_id"] == "i-2", "what the job was for is kept"
        assert metrics.registry.get_sample_value("insightloop_retrain_jobs_total", {"state": "failed"}) == 1.0
        assert {j["state"] for j in store.jobs(1000) if j["id"].startswith("done-")} == {"succeeded"}
    finally:
        runner.cleanup(alive)
        store.close()
