"""Build the reference profile saved with a model version: its validation split, scored by that version."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from insightloop.deploy import PROFILE_DIR, TRAINING_DATA, ModelArtifact
from insightloop.detectors import ReferenceProfile, Window, texts_without, vocabulary_from_texts
from insightloop.retrain.data import Example

# Deploy owns the version directory's layout; these names stay here for the rooms that import them.
__all__ = [
    "PROFILE_DIR",
    "TRAINING_DATA",
    "build_profile",
    "load_profile",
    "rescore_profile",
    "save_profile",
    "scored_window",
]


def scored_window(artifact: ModelArtifact, examples: Sequence[Example], batch_size: int = 32) -> Window:
    """Score ``examples`` with ``artifact`` into a detectors Window (labels and meta kept)."""
    batch = artifact.predict([e.text for e in examples], batch_size=batch_size)
    return Window(
        ids=[e.id or f"ref-{i}" for i, e in enumerate(examples)],
        texts=[e.text for e in examples],
        class_names=artifact.labels,
        probabilities=batch.probabilities.astype(np.float64),
        embeddings=batch.embeddings.astype(np.float64),
        token_counts=batch.token_counts,
        labels=[e.label for e in examples],
        meta=[dict(e.meta) for e in examples],
    )


def build_profile(
    artifact: ModelArtifact,
    validation: Sequence[Example],
    training_texts: Sequence[str],
    seed: int = 0,
    n_rounds: int = 200,
    false_alarm_rate: float = 0.001,
) -> ReferenceProfile:
    """The reference profile of ``artifact``: validation split scored, training vocabulary, calibrated thresholds.

    ``training_texts`` may include the validation rows themselves (a retraining job passes every text it
    trained from, and fine-tuning holds its validation split out of that): one occurrence per validation
    row is taken out, so the vocabulary never comes from the rows it is compared with. A validation
    text that still occurs in what remains was trained on (a duplicate row): such rows are left out of
    the profile with a warning that counts them (see ``ReferenceProfile.build``).
    """
    window = scored_window(artifact, validation)
    trained = texts_without(training_texts, [e.text for e in validation])
    return ReferenceProfile.build(
        window,
        vocabulary_from_texts(trained),
        training_texts=trained,
        seed=seed,
        n_rounds=n_rounds,
        false_alarm_rate=false_alarm_rate,
        max_length=artifact.max_length,
        precision=artifact.precision,
    )


def rescore_profile(profile: ReferenceProfile, artifact: ModelArtifact, batch_size: int = 32) -> ReferenceProfile:
    """``profile`` with its reference texts scored by ``artifact`` (the numerics that serve traffic)."""
    batch = artifact.predict(profile.window.texts, batch_size=batch_size)
    if list(batch.labels) != list(profile.class_names):
        raise ValueError(f"the model's classes {batch.labels} differ from the profile's {list(profile.class_names)}")
    return profile.rescored(batch.probabilities, batch.embeddings, artifact.precision)


def save_profile(profile: ReferenceProfile, version_dir: Path) -> Path:
    """Write the profile into ``<version>/reference/`` (a version writer's ``save_profile`` gets that folder)."""
    return Path(profile.save(version_dir / PROFILE_DIR))


def load_profile(version_dir: Path) -> ReferenceProfile:
    """Read the profile of a version directory."""
    return ReferenceProfile.load(version_dir / PROFILE_DIR)
