"""detectors' one error root, with a temporary and a permanent kind.

Hyper-parameters are still validated with ``ValueError`` in constructors (as River does); these are for
inputs a detector cannot use (a window or profile that does not fit), which the caller surfaces.
"""

from __future__ import annotations


class DetectorError(Exception):
    """Root of every error the detectors room raises on purpose."""


class DetectorTemporaryError(DetectorError):
    """Worth trying again with the next window (too few rows yet)."""


class DetectorPermanentError(DetectorError):
    """Retrying cannot help: the profile or window is unusable."""
