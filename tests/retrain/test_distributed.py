"""Multi-process retraining jobs: torchrun's ranks, the batch split, and real data-parallel training on CPU.

Two gloo processes launched by the real torchrun (``python -m torch.distributed.run``) train what one process
trains: the same global batches, the same steps. What differs is float rounding: the gradient is summed in
another order (two half-batch gradients averaged by the all-reduce instead of one batched sum, each half
padded to its own longest text), about 1e-7 relative in float32, which Adam's per-parameter scaling
enlarges where a gradient is tiny. Measured on a 2-core AMD EPYC with this test's settings (2 epochs, 50
optimiser steps, lr 2e-3): probabilities within 2.4e-7, weights within 3.9e-6 (rare-token embeddings), except
the attention key biases (see :func:`zero_gradient_parameters`), up to 2.4e-3 apart with no effect on any
output. The test allows 1e-5 for both and demands identical validation figures.

Dropout draws cannot match (each rank masks its own half-batch), so the base model here has dropout off;
with dropout, two processes train as well as one, not bit for bit the same.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from transformers import BertModel

from insightloop.daemon.config import ConfigError, load_config
from insightloop.daemon.controller import make_runner
from insightloop.deploy import ModelArtifact, Registry
from insightloop.detectors import Adjustments
from insightloop.retrain import FineTuneSettings, default_base_model, fine_tune, read_result, stratified_split
from insightloop.retrain.distributed import (
    SINGLE_PROCESS,
    DistributedLaunchError,
    Ranks,
    per_rank_batch,
    shard_rows,
)
from insightloop.retrain.kubernetes_runner import GPU_RESOURCE, KubernetesRunner, KubernetesTemplateError, build_job
from insightloop.retrain.plan import HyperParameters
from insightloop.retrain.runners import JobState, LocalRunner, local_job_command
from tests.amazon import amazon, needs_amazon
from tests.retrain import ddp_worker
from tests.retrain.test_job import insight, spec_for
from tests.retrain.test_kubernetes_runner import NAMESPACE, SPEC, TEMPLATE, Cluster, container_of, serialise
from tests.synthetic import KITCHEN_NEGATIVE, KITCHEN_POSITIVE, domain_rows, write_jsonl

REPO = Path(__file__).resolve().parents[2]
#: Largest weight difference allowed between one process and two (measured: about 2e-7; see the module doc).
WEIGHT_TOLERANCE = 1e-5
PROBABILITY_TOLERANCE = 1e-5


def zero_gradient_parameters(weights: dict[str, torch.Tensor]) -> set[str]:
    """Parameters whose true gradient is zero, so Adam steps on rounding noise alone: the attention key
    biases (a key bias adds the same amount to every logit of a query; softmax ignores it). Two runs that
    round differently move them apart by up to about lr per step, and no output depends on them."""
    return {name for name in weights if name.endswith("attention.self.key.bias")}


# --- torchrun's ranks and the batch split (pure) ----------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, SINGLE_PROCESS),
        ({"PATH": "/bin", "RANK": ""}, SINGLE_PROCESS),
        ({"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"}, Ranks(0, 1, 0)),
        ({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}, Ranks(3, 4, 1)),  # two nodes of two
    ],
)
def test_ranks_come_from_torchruns_environment(environ: dict[str, str], expected: Ranks) -> None:
    assert Ranks.from_environment(environ) == expected


@pytest.mark.parametrize(
    ("environ", "error"),
    [
        ({"RANK": "1", "WORLD_SIZE": "2"}, "not LOCAL_RANK: launch a multi-process job with torchrun"),
        ({"RANK": "x", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}, "whole numbers: RANK='x'"),
        ({"RANK": "2", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}, "rank 2 (local 0) of 2 processes"),
        ({"RANK": "0", "WORLD_SIZE": "0", "LOCAL_RANK": "0"}, "of 0 processes"),
    ],
)
def test_broken_launch_variables_are_refused(environ: dict[str, str], error: str) -> None:
    with pytest.raises(DistributedLaunchError, match=re.escape(error)):
        Ranks.from_environment(environ)


@pytest.mark.parametrize(("batch", "world", "per_rank"), [(16, 1, 16), (16, 2, 8), (16, 4, 4), (6, 3, 2)])
def test_each_rank_trains_its_share_of_the_global_batch(batch: int, world: int, per_rank: int) -> None:
    assert per_rank_batch(batch, world) == per_rank


def test_a_batch_that_does_not_split_is_a_clear_error() -> None:
    with pytest.raises(DistributedLaunchError, match="batch_size 15 cannot be split evenly across 2"):
        per_rank_batch(15, 2)
    # fine_tune refuses before it loads anything, on every rank alike
    with pytest.raises(DistributedLaunchError, match="multiple of 2"):
        fine_tune([], "/nonexistent", FineTuneSettings(batch_size=15), ranks=Ranks(1, 2, 1))


@pytest.mark.parametrize(("n_rows", "world"), [(8, 2), (5, 2), (1, 2), (7, 3), (2, 4)])
def test_the_shards_of_a_batch_are_the_batch(n_rows: int, world: int) -> None:
    rows = list(np.random.default_rng(n_rows).permutation(100)[:n_rows])
    shards = [shard_rows(rows, Ranks(rank, world, rank)) for rank in range(world)]
    assert sorted(r for shard in shards for r in shard) == sorted(rows), "every row once, none twice"
    assert max(map(len, shards)) - min(map(len, shards)) <= 1, "as even as the batch allows"


def test_local_jobs_of_several_processes_run_under_torchrun() -> None:
    assert local_job_command("py", Path("/r/spec.json")) == [
        "py",
        *("-m", "insightloop.daemon", "retrain", "--spec", "/r/spec.json"),
    ]
    assert local_job_command("py", Path("/r/spec.json"), 4) == [
        "py",
        *("-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=4"),
        *("-m", "insightloop.daemon", "retrain", "--spec", "/r/spec.json"),
    ]
    with pytest.raises(ValueError, match="at least one process"):
        LocalRunner(Path("/tmp"), processes=0)


# --- the Kubernetes Job of a multi-GPU job ----------------------------------------------------------


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    with Cluster() as running:
        yield running


def test_a_two_gpu_job_runs_torchrun_with_two_processes_on_two_gpus() -> None:
    container = container_of(serialise(build_job(TEMPLATE, "retrain-1", SPEC, gpus_per_job=2)))
    assert container["command"] == [
        *("torchrun", "--standalone", "--nnodes=1", "--nproc_per_node=2", "--no-python"),
        *("insightloop", "retrain", "--spec", "$(RETRAIN_SPEC)"),
    ]
    assert container["resources"]["limits"] == {"memory": "32Gi", GPU_RESOURCE: "2"}
    assert container["resources"]["requests"] == {"cpu": "4", GPU_RESOURCE: "2"}
    # one GPU: the template's command as it is, one GPU asked for
    single = container_of(serialise(build_job(TEMPLATE, "retrain-1", SPEC, gpus_per_job=1)))
    assert single["command"] == TEMPLATE["spec"]["template"]["spec"]["containers"][0]["command"]
    assert single["resources"]["limits"][GPU_RESOURCE] == "1"
    # None: the template decides (its one GPU)
    unchanged = container_of(serialise(build_job(TEMPLATE, "retrain-1", SPEC)))
    assert unchanged["command"] == single["command"] and GPU_RESOURCE not in unchanged["resources"]["requests"]


def _torchrun_in_template(template: dict[str, Any]) -> None:
    container = template["spec"]["template"]["spec"]["containers"][0]
    container["command"] = ["/usr/bin/torchrun", "--nproc_per_node=8", "--no-python", *container["command"]]


def _no_command(template: dict[str, Any]) -> None:
    container = template["spec"]["template"]["spec"]["containers"][0]
    container["args"] = container.pop("command")[1:]


@pytest.mark.parametrize(
    ("edit", "gpus", "error"),
    [
        (_torchrun_in_template, 2, "launches torchrun itself: the runner does"),
        (_no_command, 2, "has no command: with gpus_per_job 2 the runner starts it under torchrun"),
        (lambda template: None, 0, "gpus_per_job must be at least 1"),
    ],
)
def test_templates_a_multi_gpu_job_cannot_use_are_refused_at_start_up(edit: Any, gpus: int, error: str) -> None:
    import copy

    template = copy.deepcopy(TEMPLATE)
    edit(template)
    with pytest.raises(KubernetesTemplateError, match=error):
        KubernetesRunner(template, NAMESPACE, api_client=object(), gpus_per_job=gpus)  # type: ignore[arg-type]


def test_the_chart_gives_the_controller_the_jobs_gpus_and_its_jobs_run_torchrun_on_them(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """values → the daemon's config → the controller's runner → the Job the API server receives."""
    from kubernetes import client as k8s
    from kubernetes.config import kube_config

    from tests.helm.chart import render, template  # skips without helm (fails in CI)

    rendered = render(sets={"retrain.job.gpus": "2"})
    config = load_config(None, yaml.safe_load(rendered.config_yaml()), environ={})
    assert config.controller.gpus_per_job == 2
    job_template = tmp_path / "job.yaml"
    job_template.write_text(yaml.safe_dump(rendered.job_template()), encoding="utf-8")
    controller = config.controller.model_copy(update={"runner": "kubernetes", "job_template": job_template})
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kmock", "cluster": {"server": cluster.url}}],
        "users": [{"name": "daemon", "user": {"token": "t"}}],
        "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "daemon"}}],
        "current-context": "kmock",
    }
    (tmp_path / "kubeconfig").write_text(yaml.safe_dump(kubeconfig), encoding="utf-8")
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(tmp_path / "kubeconfig"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("POD_NAMESPACE", NAMESPACE)
    runner = make_runner(config.model_copy(update={"controller": controller}))
    assert isinstance(runner, KubernetesRunner)
    with runner, cluster.api_client() as api:
        mount = next(m["mountPath"] for m in container_of(runner.template)["volumeMounts"] if m["name"] == "registry")
        handle = runner.submit("retrain-1", Path(f"{mount}/jobs/retrain-1/spec.json"))
        stored = k8s.BatchV1Api(api).read_namespaced_job(handle, NAMESPACE)
        runner.cleanup(handle)
    assert stored.spec and stored.spec.template.spec
    (container,) = stored.spec.template.spec.containers
    assert container.command == [
        *("torchrun", "--standalone", "--nnodes=1", "--nproc_per_node=2", "--no-python"),
        *("insightloop", "retrain", "--spec", "$(RETRAIN_SPEC)"),
    ]
    assert container.resources.limits[GPU_RESOURCE] == "2" and container.resources.requests[GPU_RESOURCE] == "2"

    refused = template(sets={"retrain.job.gpus": "2", "config.controller.gpus_per_job": "1"})
    assert refused.returncode != 0
    assert "config.controller.gpus_per_job (1) differs from retrain.job.gpus (2)" in refused.stderr


def test_the_controller_config_refuses_a_batch_its_gpus_cannot_split(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="batch_size 16 must be a multiple of gpus_per_job 3"):
        load_config(None, {"controller": {"gpus_per_job": 3}}, environ={})
    config = load_config(None, {"controller": {"gpus_per_job": 2}, "registry": {"path": str(tmp_path)}}, environ={})
    runner = make_runner(config)
    assert isinstance(runner, LocalRunner) and runner.processes == 2
    assert local_job_command(runner.python, Path("s.json"), runner.processes)[2] == "torch.distributed.run"
    for gpus, processes in ((0, 1), (1, 1)):
        single = load_config(None, {"controller": {"gpus_per_job": gpus}, "registry": {"path": str(tmp_path)}}, {})
        local = make_runner(single)
        assert isinstance(local, LocalRunner) and local.processes == processes


def test_the_job_created_for_two_gpus_asks_the_api_for_them(cluster: Cluster) -> None:
    from kubernetes import client as k8s

    with cluster.api_client() as api:
        runner = KubernetesRunner(TEMPLATE, NAMESPACE, api, gpus_per_job=2, request_timeout=5)
        handle = runner.submit("retrain-1", SPEC)
        stored = k8s.BatchV1Api(api).read_namespaced_job(handle, NAMESPACE)  # what the API server was sent
        assert stored.spec and stored.spec.template.spec
        (container,) = stored.spec.template.spec.containers
        assert container.command[:5] == ["torchrun", "--standalone", "--nnodes=1", "--nproc_per_node=2", "--no-python"]
        assert container.resources.limits[GPU_RESOURCE] == "2" and container.resources.requests[GPU_RESOURCE] == "2"
        assert container.env[0].value == str(SPEC)
        runner.cleanup(handle)


# --- real data-parallel training: two gloo processes against one -----------------------------------


def save_dropout_free_bert(folder: Path) -> Path:
    """A tiny BERT from a config (2 layers, width 32) with dropout off: its training does not depend on how
    a batch is split across processes. Initialised wider than BERT's 0.02 (0.2), so that its outputs differ
    from text to text: a tiny model from scratch learns little from 200 reviews, and one that gave every
    text the same probabilities would agree with anything."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(default_base_model())
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        initializer_range=0.2,
    )
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def review_rows() -> list[dict[str, Any]]:
    """Real kitchen reviews, uneven classes and uneven weights, so that the final batch of each epoch
    has a single row (one rank gets none) and a wrong loss denominator would show."""
    pool = amazon("train", "kitchen", 400, seed=3)
    positive = [r for r in pool if r["label"] == "positive"][:100]
    negative = [r for r in pool if r["label"] == "negative"][:115]
    rows = positive + negative
    weights = (0.5, 1.0, 2.5)
    return [{**r, ddp_worker.WEIGHT_KEY: weights[i % 3]} for i, r in enumerate(rows)]


def torchrun(processes: int, *args: str) -> list[str]:
    return [
        sys.executable,
        *("-m", "torch.distributed.run", "--standalone", "--nnodes=1", f"--nproc_per_node={processes}"),
        *("-m", "tests.retrain.ddp_worker", *args),
    ]


@needs_amazon
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_two_gloo_processes_train_what_one_process_trains(tmp_path: Path) -> None:
    base = save_dropout_free_bert(tmp_path / "base")
    data = write_jsonl(tmp_path / "train.jsonl", review_rows())
    examples = ddp_worker.training_examples(data)
    train, _ = stratified_split(examples, ddp_worker.SETTINGS.validation_share, ddp_worker.SETTINGS.seed)
    assert len(train) % ddp_worker.SETTINGS.batch_size == 1, "each epoch ends on a batch of one row"
    assert len({e.weight for e in train}) == 3

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    started = time.monotonic()
    done = subprocess.run(
        torchrun(2, str(base), str(data), str(tmp_path / "two")),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    seconds = time.monotonic() - started
    one = ddp_worker.train(base, data, SINGLE_PROCESS)  # in this process, exactly as a job without torchrun

    two = ModelArtifact.load(tmp_path / "two", device="cpu")
    assert two.info["processes"] == 2 and "processes" not in one.artifact.info
    ours, theirs = one.artifact.model.state_dict(), two.model.state_dict()
    assert ours.keys() == theirs.keys()
    worst = max(float((ours[k] - theirs[k]).abs().max()) for k in ours if k not in zero_gradient_parameters(ours))
    assert worst <= WEIGHT_TOLERANCE, f"largest weight difference {worst:.2e} (two processes took {seconds:.0f} s)"
    initial = BertModel.from_pretrained(base).state_dict()
    moved = max(float((ours[f"bert.{k}"] - v).abs().max()) for k, v in initial.items())
    assert moved > 1000 * WEIGHT_TOLERANCE, f"training moved the weights by {moved:.2e} only: the test proves nothing"

    held_out = [r["text"] for r in amazon("test", "kitchen", 120, seed=5)]
    p_one, p_two = one.artifact.predict(held_out).probabilities, two.predict(held_out).probabilities
    assert float(np.abs(p_one - p_two).max()) <= PROBABILITY_TOLERANCE
    assert (p_one.argmax(1) == p_two.argmax(1)).all(), "the same labels"
    assert p_one[:, 0].std() > 100 * PROBABILITY_TOLERANCE, "outputs that vary from text to text"
    metrics = json.loads((tmp_path / "two" / "metrics.json").read_text())
    for key in ("validation_accuracy", "validation_macro_f1"):
        assert metrics[key] == one.metrics[key], key


# --- a whole job through the local runner under torchrun --------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_local_runner_runs_a_two_process_job_whose_rank_0_registers_the_candidate(
    trained_registry: Path, train_file: Path, tmp_path: Path
) -> None:
    shutil.copytree(trained_registry, tmp_path / "registry")
    registry = Registry(tmp_path / "registry")
    production = write_jsonl(tmp_path / "prod.jsonl", domain_rows(120, 5, "k", KITCHEN_POSITIVE, KITCHEN_NEGATIVE))
    hyper = HyperParameters(epochs=1, learning_rate=2e-3, batch_size=16, max_length=32)
    spec = spec_for(registry, [insight("retrain", Adjustments(recent_data_weight=2.0))], production, train_file, hyper)
    spec_path = tmp_path / "jobs" / "spec.json"
    spec_path.parent.mkdir()
    spec_path.write_text(spec.model_dump_json(), encoding="utf-8")

    runner = LocalRunner(tmp_path / "logs", env={"OMP_NUM_THREADS": "1"}, processes=2)
    handle = runner.submit("job-ddp", spec_path)
    try:
        deadline = time.monotonic() + 540
        while not (status := runner.status(handle)).finished and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        runner.cleanup(handle)
    log = (tmp_path / "logs" / "job-ddp.log").read_text(encoding="utf-8")
    assert status.state is JobState.SUCCEEDED, log[-4000:]

    result = read_result(spec_path.with_suffix(".result.json"))
    assert result is not None and result.state == "succeeded", result
    assert (result.version, result.processes, result.device) == ("v0002", 2, "cpu")
    assert registry.names() == ["v0001", "v0002"], "rank 1 registers nothing"
    info = json.loads((registry.path_of("v0002") / "artifact.json").read_text(encoding="utf-8"))
    assert info["processes"] == 2
    assert log.count("training in 2 processes (gloo)") == 1
    assert log.count("registered v0002") == 1, "one copy of the job's log lines"


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_two_process_job_whose_batch_does_not_split_fails_with_the_reason(
    trained_registry: Path, train_file: Path, tmp_path: Path
) -> None:
    shutil.copytree(trained_registry, tmp_path / "registry")
    registry = Registry(tmp_path / "registry")
    production = write_jsonl(tmp_path / "prod.jsonl", domain_rows(60, 5, "k", KITCHEN_POSITIVE, KITCHEN_NEGATIVE))
    hyper = HyperParameters(epochs=1, learning_rate=2e-3, batch_size=15, max_length=32)
    spec = spec_for(registry, [insight("retrain")], production, train_file, hyper)
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(spec.model_dump_json(), encoding="utf-8")

    runner = LocalRunner(tmp_path / "logs", processes=2)
    handle = runner.submit("job-odd", spec_path)
    try:
        deadline = time.monotonic() + 300
        while not (status := runner.status(handle)).finished and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        runner.cleanup(handle)
    assert status.state is JobState.FAILED
    assert "cannot be split evenly across 2 training processes" in status.log_tail
    result = read_result(spec_path.with_suffix(".result.json"))
    assert result is not None and result.state == "failed" and result.processes == 2
    assert result.error is not None and re.match(r"rank [01] of 2: DistributedLaunchError: batch_size 15", result.error)
    assert registry.names() == ["v0001"]
    assert not list(tmp_path.glob("*.tmp")), "no partial result file left"
