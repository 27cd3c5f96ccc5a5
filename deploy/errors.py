"""deploy's one error root, with a temporary and a permanent kind (the CLI maps the kinds to exit codes)."""

from __future__ import annotations


class DeployError(Exception):
    """Root of every error the deploy room raises on purpose."""


class DeployTemporaryError(DeployError):
    """Worth retrying later (a file is busy, a volume is slow to answer)."""


class DeployPermanentError(DeployError):
    """Retrying cannot help: a version is missing or broken, an operation is not allowed."""
