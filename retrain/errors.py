"""retrain's one error root, with a temporary and a permanent kind (the CLI maps the kinds to exit codes)."""

from __future__ import annotations


class RetrainError(Exception):
    """Root of every error the retrain room raises on purpose."""


class RetrainTemporaryError(RetrainError):
    """Worth retrying later (the Kubernetes API is away, a runner is busy)."""


class RetrainPermanentError(RetrainError):
    """Retrying cannot help: bad data, a bad spec, a refused permission."""
