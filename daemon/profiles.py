"""The monitor's profile cache: each version's reference profile, re-scored with the numerics that serve it.

A version trained on a GPU (bf16) and served on a CPU (float32), or served in CPU bf16 or int8, scores the
same texts slightly differently; compared with rows scored otherwise, prediction drift would read that
difference as drift on unchanged traffic. So the reference rows are re-scored once per (version, numerics),
kept under ``state/profiles/<version>--<device>-<kind>`` for the next start, and pruned when the version
leaves play.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import torch

from insightloop.daemon.scorer_numerics import load_at_precision
from insightloop.deploy import ModelLoadError, Registry
from insightloop.detectors import ReferenceProfile
from insightloop.retrain import load_profile, rescore_profile

log = logging.getLogger(__name__)


class ProfileCache:
    """Reference profiles by (version, precision): loaded from the registry, re-scored, kept in ``folder``."""

    def __init__(self, registry: Registry, folder: Path) -> None:
        self.registry = registry
        self.folder = folder
        self._profiles: dict[tuple[str, str], ReferenceProfile] = {}

    def get(self, version: str, precision: str | None = None) -> ReferenceProfile | None:
        """The reference profile of ``version`` as scored with ``precision``; None when it has none usable."""
        key = (version, precision or "")
        if key in self._profiles:
            return self._profiles[key]
        try:
            profile = load_profile(self.registry.path_of(version))
        except (FileNotFoundError, OSError, ValueError) as exc:
            log.error("version %s has no usable reference profile (%s); checks are off", version, exc)
            return None
        if precision and precision != profile.precision:
            if any(not text for text in profile.window.texts):
                # `models purge-texts` blanked the reference texts: re-scoring them would compare against
                # empty strings, so the stored scores stay (a small precision mismatch, said once here).
                log.warning(
                    "the reference texts of %s were purged; checking against its %s scores, not re-scored at %s",
                    version,
                    profile.precision,
                    precision,
                )
            else:
                profile = self._rescored(version, profile, precision)
        self._profiles[key] = profile
        return profile

    def _rescored(self, version: str, profile: ReferenceProfile, precision: str) -> ReferenceProfile:
        """``profile`` re-scored with ``precision``, read back from the folder when it was done before."""
        device, kind = precision.split("/", 1)
        if device != "cpu" and (device != "cuda" or not torch.cuda.is_available()):
            device = "cpu"  # the nearest numerics this process has, e.g. bf16 on the CPU for CUDA bf16
        cached = self.folder / f"{version}--{precision.replace('/', '-')}"
        try:
            stored = ReferenceProfile.load(cached)
            if stored.precision == f"{device}/{kind}" and stored.window.ids == profile.window.ids:
                return stored
        except (FileNotFoundError, OSError, ValueError):
            pass
        started = time.perf_counter()
        try:
            # The scorer's own construction of these numerics (int8 is ONNX Runtime's, bf16 autocast torch's).
            artifact = load_at_precision(self.registry.path_of(version), device, kind)
            rescored = rescore_profile(profile, artifact)
        except (ModelLoadError, OSError, ValueError, RuntimeError) as exc:
            log.error(
                "cannot re-score the reference of %s at %s (%s); checking against its %s scores",
                version,
                precision,
                exc,
                profile.precision,
            )
            return profile
        log.info(
            "re-scored the %d reference rows of %s at %s (profile built at %s) in %.1f s",
            len(profile.window),
            version,
            precision,
            profile.precision,
            time.perf_counter() - started,
        )
        try:
            rescored.save(cached)
        except OSError as exc:
            log.warning("could not keep the re-scored reference at %s: %s", cached, exc)
        self.prune()
        return rescored

    def prune(self) -> None:
        """Drop re-scored references of versions that can no longer serve without a new decision.

        Kept: production, the default rollback target, and candidates; a version rolled back to later
        is simply re-scored again. This bounds the folder by the versions in play.
        """
        if not self.folder.is_dir():
            return
        live = {self.registry.production(), self.registry.previous_production()}
        live |= {r.version for r in self.registry.pending_candidates()}
        for entry in self.folder.iterdir():
            if entry.is_dir() and entry.name.split("--", 1)[0] not in live:
                shutil.rmtree(entry, ignore_errors=True)
                log.info("dropped the re-scored reference %s: its version no longer serves", entry.name)
