"""deploy: the model artifact, the registry of versions, promotion and its events."""

from insightloop.deploy.artifact import (
    ARTIFACT_FILE,
    MODEL_DIR,
    ArtifactSettings,
    ModelArtifact,
    ModelLoadError,
    PredictionBatch,
    cpu_has_native_bf16,
    forward_batch_size,
    pick_device,
    set_cpu_threads,
)
from insightloop.deploy.errors import DeployError, DeployPermanentError, DeployTemporaryError
from insightloop.deploy.events import (
    AuditEntry,
    Evaluation,
    EvaluationSection,
    GateVerdict,
    InsightRef,
    MetricComparison,
    ModelEvent,
    VersionRecord,
    VersionStatus,
    utc_now,
)
from insightloop.deploy.layout import EVALUATION_DIR, PLAN_FILE, PROFILE_DIR, TRAINING_DATA
from insightloop.deploy.lineage import Lineage, PlanStep, SourceFile, TrainingData
from insightloop.deploy.projection import Projection
from insightloop.deploy.registry import (
    STALE_INCOMING_S,
    GateFailedError,
    ProblemKind,
    Registry,
    RegistryError,
    RegistryProblem,
    UnreadableVersionError,
)
from insightloop.deploy.version_writer import VersionDraft, VersionWriteError

__all__ = [
    "ARTIFACT_FILE",
    "EVALUATION_DIR",
    "MODEL_DIR",
    "PLAN_FILE",
    "PROFILE_DIR",
    "STALE_INCOMING_S",
    "TRAINING_DATA",
    "ArtifactSettings",
    "AuditEntry",
    "DeployError",
    "DeployPermanentError",
    "DeployTemporaryError",
    "Evaluation",
    "EvaluationSection",
    "GateFailedError",
    "GateVerdict",
    "InsightRef",
    "Lineage",
    "MetricComparison",
    "ModelArtifact",
    "ModelEvent",
    "ModelLoadError",
    "PlanStep",
    "PredictionBatch",
    "Projection",
    "Registry",
    "RegistryError",
    "SourceFile",
    "ProblemKind",
    "TrainingData",
    "VersionDraft",
    "VersionRecord",
    "RegistryProblem",
    "VersionStatus",
    "VersionWriteError",
    "UnreadableVersionError",
    "cpu_has_native_bf16",
    "forward_batch_size",
    "pick_device",
    "set_cpu_threads",
    "utc_now",
]
