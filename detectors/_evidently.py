"""Evidently, imported lazily and once: it takes seconds to import and warns about its own dependencies."""

from __future__ import annotations

import os
import threading
import warnings

_lock = threading.Lock()
_ready = False


def ensure_evidently() -> None:
    """Import Evidently (telemetry off unless the environment says otherwise), hiding import-time
    deprecation noise from its dependencies (litestar, numpy.core) that is not ours to fix."""
    global _ready
    if _ready:
        return
    with _lock:
        if _ready:
            return
        os.environ.setdefault("DO_NOT_TRACK", "1")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            import evidently
            import evidently.legacy.calculations.stattests  # noqa: F401
        _ready = True
