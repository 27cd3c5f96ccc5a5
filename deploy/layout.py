"""Where things live inside a registry and inside one version directory (deploy owns this layout).

A version directory holds::

    artifact.json        labels, max_length, widths, prior correction (read cheaply by ModelArtifact.read_settings)
    model/               the transformers model and tokenizer
    projection.npz       the embedding projection (PCA) every scorer applies
    reference/           the reference profile the monitor compares production with
    data/train.jsonl     a copy of the examples the version was trained on (the next job's reference)
    plan.json            the training plan of a retraining job (absent for a first training)
    evaluation/          champion-vs-candidate reports of a retraining job
    version.json         the record: lineage, training data summary, metrics, evaluation, gate verdict
    status               its current status (the only file that changes after creation)
"""

from __future__ import annotations

RECORD_FILE = "version.json"
STATUS_FILE = "status"
POINTER_FILE = "PRODUCTION"
AUDIT_FILE = "audit.jsonl"
LOCK_FILE = ".lock"
INCOMING_PREFIX = ".incoming-"
PROFILE_DIR = "reference"
TRAINING_DATA = "data/train.jsonl"
PLAN_FILE = "plan.json"
EVALUATION_DIR = "evaluation"
