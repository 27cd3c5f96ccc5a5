"""One fine-tune as a retraining job runs it, in however many processes launched it (a helper of test_distributed).

    python -m torch.distributed.run --standalone --nproc_per_node=2 -m tests.retrain.ddp_worker BASE DATA OUT
    python -m tests.retrain.ddp_worker BASE DATA OUT        # one process

Rank 0 saves the fine-tuned artifact to OUT and its metrics to OUT/metrics.json.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import replace
from pathlib import Path

import torch

from insightloop.retrain import Example, FineTuneResult, FineTuneSettings, fine_tune, read_jsonl
from insightloop.retrain.distributed import Ranks, process_group, training_device

#: Small and quick, yet enough steps (and a learning rate high enough) for float noise to have room to grow.
SETTINGS = FineTuneSettings(
    epochs=2,
    max_length=32,
    batch_size=8,
    learning_rate=2e-3,
    early_stopping_patience=2,
    projection_dims=4,
    device="cpu",
)
WEIGHT_KEY = "train_weight"


def training_examples(path: Path) -> list[Example]:
    """The examples in ``path``, each weighted by its ``train_weight`` (as a plan's weights would)."""
    return [replace(e, weight=float(e.meta.get(WEIGHT_KEY, 1.0))) for e in read_jsonl(path, require_label=True)]


def train(base: Path, data: Path, ranks: Ranks) -> FineTuneResult:
    """Fine-tune ``base`` on ``data`` with :data:`SETTINGS`, data-parallel when ``ranks`` says so."""
    device = training_device(ranks, torch.device("cpu"))
    with process_group(ranks, device):
        return fine_tune(training_examples(data), str(base), SETTINGS, progress=False, ranks=ranks)


def main(argv: list[str]) -> int:
    base, data, out = (Path(arg) for arg in argv)
    ranks = Ranks.from_environment(os.environ)
    result = train(base, data, ranks)
    if ranks.is_main:
        result.artifact.save(out)
        (out / "metrics.json").write_text(json.dumps(result.metrics), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
