"""deploy: the model artifact, the registry of versions, promotion and its events."""

from insightloop.deploy.artifact import (
    ModelArtifact,
    ModelLoadError,
    PredictionBatch,
    pick_device,
    set_cpu_threads,
)
from insightloop.deploy.events import AuditEntry, ModelEvent, VersionRecord, VersionStatus
from insightloop.deploy.projection import Projection
from insightloop.deploy.registry import Registry, RegistryError

__all__ = [
    "AuditEntry",
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
