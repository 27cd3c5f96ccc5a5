"""retrain: training data, the fine-tuning job (and, with the Retraining issue, plans and evaluation)."""

from insightloop.retrain.data import DataFileError, Example, iter_jsonl, read_jsonl, write_jsonl
from insightloop.retrain.errors import RetrainError, RetrainPermanentError, RetrainTemporaryError
from insightloop.retrain.finetune import (
    FineTuneResult,
    FineTuneSettings,
    default_base_model,
    fine_tune,
    save_tiny_bert,
    seed_everything,
    stratified_split,
)

__all__ = [
    "DataFileError",
    "Example",
    "FineTuneResult",
    "FineTuneSettings",
    "RetrainError",
    "RetrainPermanentError",
    "RetrainTemporaryError",
    "default_base_model",
    "fine_tune",
    "iter_jsonl",
    "read_jsonl",
    "save_tiny_bert",
    "seed_everything",
    "stratified_split",
    "write_jsonl",
]
