"""deploy: the model artifact, the registry of versions, promotion and its events."""

from insightloop.deploy.artifact import (
    ModelArtifact,
    ModelLoadError,
    PredictionBatch,
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
)
from insightloop.deploy.projection import Projection
from insightloop.deploy.registry import GateFailedError, Registry, RegistryError

__all__ = [
    "AuditEntry",
    "DeployError",
    "DeployPermanentError",
    "DeployTemporaryError",
    "Evaluation",
    "EvaluationSection",
    "GateFailedError",
    "GateVerdict",
    "InsightRef",
    "MetricComparison",
    "ModelArtifact",
    "ModelEvent",
    "ModelLoadError",
    "PredictionBatch",
    "Projection",
    "Registry",
    "RegistryError",
    "VersionRecord",
    "VersionStatus",
    "pick_device",
    "set_cpu_threads",
]
