"""Which numerics the scorer computes with on a CPU, decided at load by measuring the model itself.

Candidates: float32 (torch), bf16 autocast (torch; only where the CPU multiplies bf16 natively: AMX or
AVX-512 BF16) and int8 (ONNX Runtime, per-channel weights, head kept in float32: :mod:`scorer_onnx`). At
load every candidate scores the same trial texts (the version's reference texts, else seeded token ids),
interleaved chunk by chunk so other load falls on all alike. :func:`choose_numerics` keeps the fastest
candidate whose labels agree with float32 on the trial and that beats float32 by a margin; the decision
and its figures are logged. ``true`` in the configuration forces a candidate, ``false`` rules it out.

The choice is the pure function; :func:`measure_candidates` and :func:`load_serving_artifact` are the
thin timing and loading shells. :func:`load_at_precision` gives the monitor the same numerics for
re-scoring a version's reference rows (``ModelArtifact.precision`` names them).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from insightloop.daemon.config import ScorerConfig
from insightloop.deploy import ModelArtifact, ModelLoadError

log = logging.getLogger(__name__)

Kind = Literal["float32", "bfloat16", "int8"]
Setting = bool | Literal["auto"]
#: Flags of /proc/cpuinfo that decide which CPU paths are native.
CPU_FLAGS = ("amx_bf16", "amx_int8", "avx512_bf16", "avx512_vnni", "avx_vnni", "avx512f", "avx2")
#: Trial texts when a version has no usable reference texts: seeded token ids of these lengths.
SYNTHETIC_LENGTHS = (24, 48, 96, 160, 256)


class CpuFeatures(BaseModel):
    """The CPU flags (of :data:`CPU_FLAGS`) that this machine's kernel reports."""

    model_config = ConfigDict(frozen=True)

    flags: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, cpuinfo: str) -> CpuFeatures:
        """From the text of /proc/cpuinfo (the first ``flags`` line: every core of one machine has the same)."""
        for line in cpuinfo.splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "flags":
                return cls(flags=frozenset(value.split()) & frozenset(CPU_FLAGS))
        return cls()

    @classmethod
    def read(cls, path: Path = Path("/proc/cpuinfo")) -> CpuFeatures:
        """This machine's flags; none when the file cannot be read (not Linux)."""
        try:
            return cls.parse(path.read_text(encoding="utf-8", errors="replace"))
        except OSError:
            return cls()

    @property
    def native_bf16(self) -> bool:
        """bf16 matrix multiplies in hardware: AMX tiles or AVX-512 BF16 dot products."""
        return bool({"amx_bf16", "avx512_bf16"} & self.flags)

    @property
    def native_int8(self) -> bool:
        """int8 dot products in hardware (VNNI or AMX-INT8), where int8 kernels pay most."""
        return bool({"amx_int8", "avx512_vnni", "avx_vnni"} & self.flags)

    def describe(self) -> str:
        """E.g. ``amx_bf16 no, avx512_bf16 yes, ...`` in the order of :data:`CPU_FLAGS`."""
        return ", ".join(f"{flag} {'yes' if flag in self.flags else 'no'}" for flag in CPU_FLAGS)


class CandidateTrial(BaseModel):
    """What one candidate measured on the trial texts: its seconds and its label agreement with float32."""

    model_config = ConfigDict(frozen=True)

    kind: Kind
    seconds: float = Field(gt=0)
    agreement: float = Field(ge=0, le=1)  # 1.0 for float32 itself


class NumericsChoice(BaseModel):
    """The numerics chosen, and why (logged at load)."""

    model_config = ConfigDict(frozen=True)

    kind: Kind
    reason: str


def wanted_candidates(features: CpuFeatures, cpu_bf16: Setting, quantize: Setting) -> list[Kind]:
    """Candidates worth measuring on this CPU: float32 always; bf16 where native (or forced); int8 unless off."""
    kinds: list[Kind] = ["float32"]
    if cpu_bf16 is True or (cpu_bf16 == "auto" and features.native_bf16):
        kinds.append("bfloat16")
    if quantize is not False:
        kinds.append("int8")
    return kinds


def forced_kind(available: Sequence[Kind], cpu_bf16: Setting, quantize: Setting) -> Kind | None:
    """The candidate a setting of ``true`` forces (int8 before bf16), if it could be built; else None."""
    if quantize is True and "int8" in available:
        return "int8"
    if cpu_bf16 is True and "bfloat16" in available:
        return "bfloat16"
    return None


def choose_numerics(trials: Sequence[CandidateTrial], min_speedup: float, min_agreement: float) -> NumericsChoice:
    """The numerics to serve with, from what the candidates measured on the same trial texts.

    The fastest candidate whose labels agree with float32 on at least ``min_agreement`` of the trial and
    that is at least ``min_speedup`` times as fast as float32 wins; float32 when none does.
    """
    fp32 = next((t for t in trials if t.kind == "float32"), None)
    if fp32 is None:
        return NumericsChoice(kind="float32", reason="float32: nothing was measured")
    notes: list[str] = []
    best: CandidateTrial = fp32
    for trial in sorted(trials, key=lambda t: t.seconds):
        if trial.kind == "float32":
            continue
        speedup = fp32.seconds / trial.seconds
        figures = f"{trial.kind} {speedup:.2f}x float32, labels agree {trial.agreement:.1%}"
        if trial.agreement < min_agreement:
            notes.append(f"{figures}: below {min_agreement:.1%} agreement")
        elif speedup < min_speedup:
            notes.append(f"{figures}: not {min_speedup:.2f}x faster")
        elif best is fp32:
            best = trial
            notes.append(f"{figures}: chosen")
        else:
            notes.append(f"{figures}: slower than {best.kind}")
    return NumericsChoice(kind=best.kind, reason=f"{best.kind}: " + ("; ".join(notes) or "the only candidate"))


# -- the shells: trial texts, timing, loading ------------------------------------------------------
def trial_token_ids(artifact: ModelArtifact, texts: Sequence[str], count: int) -> list[list[int]]:
    """Token ids to measure on: ``count`` of ``texts`` (a version's reference texts), else seeded random ids."""
    usable = [t for t in texts if t.strip()][:count]
    if usable:
        return artifact.tokenize(usable)
    rng = np.random.default_rng(0)
    vocab = int(getattr(artifact.model.config, "vocab_size", 1000))
    lengths = [min(n, artifact.max_length) for n in SYNTHETIC_LENGTHS]
    return [rng.integers(5, max(6, vocab), size=lengths[i % len(lengths)]).tolist() for i in range(count)]


def measure_candidates(
    artifacts: dict[Kind, ModelArtifact], token_ids: Sequence[Sequence[int]], batch_size: int, chunk: int = 16
) -> list[CandidateTrial]:
    """Score ``token_ids`` with every artifact, interleaved chunk by chunk (order rotating), after a warm-up.

    Each candidate's seconds are summed over the chunks; its agreement is over every trial text, against
    the float32 artifact's labels.
    """
    kinds = list(artifacts)
    labels: dict[Kind, list[int]] = {k: [] for k in kinds}
    seconds: dict[Kind, float] = dict.fromkeys(kinds, 0.0)
    for art in artifacts.values():  # first calls allocate and pick kernels: not timed
        art.predict_tokenized(token_ids[:2], batch_size)
    for index, start in enumerate(range(0, len(token_ids), chunk)):
        part = token_ids[start : start + chunk]
        shift = index % len(kinds)
        for kind in kinds[shift:] + kinds[:shift]:
            started = time.perf_counter()
            batch = artifacts[kind].predict_tokenized(part, batch_size)
            seconds[kind] += time.perf_counter() - started
            labels[kind] += batch.probabilities.argmax(axis=1).tolist()
    reference = np.asarray(labels["float32"])
    return [
        CandidateTrial(
            kind=k,
            seconds=max(seconds[k], 1e-9),
            agreement=float(np.mean(np.asarray(labels[k]) == reference)) if len(reference) else 1.0,
        )
        for k in kinds
    ]


def build_candidate(base: ModelArtifact, kind: Kind) -> ModelArtifact:
    """``base`` (float32, CPU) computing with ``kind``: bf16 autocast shares the weights; int8 is ONNX Runtime.

    Raises :class:`~insightloop.daemon.scorer_onnx.OnnxUnavailable` when the model cannot be exported.
    """
    if kind == "float32":
        return base
    if kind == "bfloat16":
        return ModelArtifact(
            base.model, base.tokenizer, base.labels, base.projection, base.max_length, base.device, base.info, bf16=True
        )
    from insightloop.daemon.scorer_onnx import onnx_int8_artifact

    return onnx_int8_artifact(base)


def reference_texts(version_dir: Path) -> list[str]:
    """The version's reference texts (empty when it has none or they were purged)."""
    from insightloop.retrain import load_profile

    try:
        return list(load_profile(version_dir).window.texts)
    except (FileNotFoundError, OSError, ValueError):
        return []


def load_serving_artifact(
    version_dir: Path,
    settings: ScorerConfig,
    features: CpuFeatures | None = None,
    texts: Callable[[Path], list[str]] = reference_texts,
) -> ModelArtifact:
    """The artifact of ``version_dir`` with the numerics :func:`choose_numerics` picks on this machine.

    On CUDA nothing is measured (bf16 autocast where supported, as before).
    """
    base = ModelArtifact.load(version_dir, device=settings.device)
    if base.device.type != "cpu":
        return base
    features = features or CpuFeatures.read()
    kinds = wanted_candidates(features, settings.cpu_bf16, settings.quantize)
    if kinds == ["float32"]:
        log.info("scoring %s in float32 (CPU: %s)", version_dir.name, features.describe())
        return base
    candidates: dict[Kind, ModelArtifact] = {"float32": base}
    for kind in kinds[1:]:
        try:
            candidates[kind] = build_candidate(base, kind)
        except Exception as exc:  # an export failure for a family: the torch paths still serve
            log.warning("%s is not available for %s (%s); choosing among the torch paths", kind, version_dir.name, exc)
    forced = forced_kind(list(candidates), settings.cpu_bf16, settings.quantize)
    if forced is not None:
        choice = NumericsChoice(kind=forced, reason=f"{forced}, as the configuration says")
    else:
        started = time.perf_counter()
        ids = trial_token_ids(base, texts(version_dir), settings.numerics_trial_texts)
        try:
            trials = measure_candidates(candidates, ids, settings.inference_batch_size)
        except Exception as exc:  # a model that cannot score its trial texts cannot serve either
            raise ModelLoadError(f"cannot score trial texts with {', '.join(candidates)}: {exc}") from exc
        choice = choose_numerics(trials, settings.numerics_min_speedup, settings.numerics_min_agreement)
        figures = ", ".join(f"{t.kind} {len(ids) / t.seconds:.1f} texts/s" for t in trials)
        log.info(
            "numerics for %s measured on %d trial texts in %.1f s (%s; CPU: %s)",
            version_dir.name,
            len(ids),
            time.perf_counter() - started,
            figures,
            features.describe(),
        )
    log.info("scoring %s in %s", version_dir.name, choice.reason)
    return candidates[choice.kind]


def load_at_precision(version_dir: Path, device: str, kind: str) -> ModelArtifact:
    """The artifact computing with the numerics named by ``ModelArtifact.precision`` (``device/kind``).

    What the monitor re-scores reference rows with: the same construction as the scorer's.
    """
    base = ModelArtifact.load(version_dir, device=device)
    if kind == "float32":
        return base
    if kind not in ("bfloat16", "int8"):
        raise ModelLoadError(f"unknown numerics {kind!r}")
    if base.device.type != "cpu":
        return ModelArtifact.load(version_dir, device=device, bf16=kind == "bfloat16")
    return build_candidate(base, kind)  # type: ignore[arg-type]
