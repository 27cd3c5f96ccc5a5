"""retrain: training data, the fine-tuning job (and, with the Retraining issue, plans and evaluation)."""

from insightloop.retrain.data import DataFileError, Example, iter_json_rows, iter_jsonl, read_jsonl, write_jsonl
from insightloop.retrain.entity_eval import EntityReport, EntityScore, entity_report
from insightloop.retrain.errors import RetrainError, RetrainPermanentError, RetrainTemporaryError
from insightloop.retrain.evaluate import RECENT, GateSettings
from insightloop.retrain.finetune import (
    FineTuneResult,
    FineTuneSettings,
    LabelSetError,
    default_base_model,
    fine_tune,
    fit_projection,
    save_tiny_bert,
    seed_everything,
    stratified_split,
)
from insightloop.retrain.job import JobResult, JobSpec, read_result, run_job, run_spec_file, train_upper_bound
from insightloop.retrain.kubernetes_runner import KubernetesRunner
from insightloop.retrain.ner_data import (
    EntityLabel,
    NerRow,
    TaggedSentence,
    entity_types,
    read_conll,
    read_ner_jsonl,
    read_ner_rows,
    sentence_of,
    tag_counts,
)
from insightloop.retrain.plan import HyperParameters, TrainingPlan, plan_from_insights
from insightloop.retrain.profile import (
    TRAINING_DATA,
    build_profile,
    load_profile,
    rescore_profile,
    save_profile,
    scored_window,
)
from insightloop.retrain.runners import JobState, JobStatus, LocalRunner, Runner
from insightloop.retrain.token_finetune import (
    TokenFineTuneResult,
    evaluate_tagger,
    fine_tune_tokens,
    split_sentences,
    tag_set,
)

__all__ = [
    "RECENT",
    "TRAINING_DATA",
    "DataFileError",
    "EntityLabel",
    "EntityReport",
    "EntityScore",
    "Example",
    "FineTuneResult",
    "FineTuneSettings",
    "GateSettings",
    "HyperParameters",
    "JobResult",
    "JobSpec",
    "JobState",
    "JobStatus",
    "KubernetesRunner",
    "LabelSetError",
    "LocalRunner",
    "NerRow",
    "RetrainError",
    "RetrainPermanentError",
    "RetrainTemporaryError",
    "Runner",
    "TaggedSentence",
    "TokenFineTuneResult",
    "TrainingPlan",
    "build_profile",
    "default_base_model",
    "entity_report",
    "entity_types",
    "evaluate_tagger",
    "fine_tune",
    "fine_tune_tokens",
    "fit_projection",
    "iter_json_rows",
    "iter_jsonl",
    "load_profile",
    "plan_from_insights",
    "read_conll",
    "read_jsonl",
    "read_ner_jsonl",
    "read_ner_rows",
    "read_result",
    "rescore_profile",
    "run_job",
    "run_spec_file",
    "save_profile",
    "save_tiny_bert",
    "scored_window",
    "seed_everything",
    "sentence_of",
    "split_sentences",
    "stratified_split",
    "tag_counts",
    "tag_set",
    "train_upper_bound",
    "write_jsonl",
]
