"""The detectors of a token classifier (named entities), and its check as one pure step.

Each detector turns one question about an :class:`EntityWindow` into a ``-log10`` p-value against the
version's :class:`EntityProfile`:

* ``entity_type_mix`` — has the mix of predicted entity types moved (chi-square over types)?
* ``entity_density`` — entities per word (Mann-Whitney U over texts);
* ``token_confidence`` — the texts' mean word confidence (two-sample Kolmogorov-Smirnov);
* ``new_entity_names`` — the share of predicted entity strings that training never saw, the typical drift of
  news (one-sided two-proportion z-test);
* ``entity_embedding`` — the pooled embeddings on the reference's ten main directions (Welch t-tests,
  Bonferroni);
* ``entity_f1_drop`` — entity-level micro F1 on the labeled texts against the held-out F1 (one-sided z-test
  with bootstrap standard errors over sentences), per type in the evidence;
* ``estimated_f1_drop`` — the same without labels: each entity's confidence mapped to its chance of being
  right by the profile's calibrator (one-sided Welch t-test on those chances);
* ``entity_slices`` — a slice (sentence length, line shape, entity type, ``meta`` value) whose share of the
  window rose (Bonferroni over slices).

They share the classifiers' false-alarm budget (each detector's threshold comes from reference-split null
statistics at its Bonferroni share of the budget, never below the nominal level) and their severity rule:
the window's cost in entity micro F1 points, measured on labels where there are enough, else estimated.
"""

from __future__ import annotations

import math
import warnings
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import ClassVar

import numpy as np
from numpy.typing import NDArray

from insightloop.detectors.base import MIN_THRESHOLD, Measurement, bonferroni, log_p, threshold_from_null
from insightloop.detectors.calibration import AlarmBudget, ConfidenceCalibrator, reference_splits, threshold_at_rate
from insightloop.detectors.cost import DEFAULT_SEVERITY_RULE, SeverityRule, severity_for_cost
from insightloop.detectors.entity_window import EntityProfile, EntityWindow, entity_key
from insightloop.detectors.insight import (
    AccuracyCost,
    Adjustments,
    ClassShift,
    CostSource,
    Evidence,
    Example,
    Insight,
    InsightKind,
    Recommendation,
    Severity,
    SliceFinding,
    insight_id,
    utc_now,
)
from insightloop.detectors.profile import CalibratedThreshold
from insightloop.detectors.registry import CheckResult, DetectorResult
from insightloop.detectors.slicekey import ENTITY_FIELD, LINE_SHAPES, SHAPE_FIELD, SliceKey, meta_value_str
from insightloop.detectors.step import StepOutcome, follow_conditions
from insightloop.detectors.tracker import TrackerState

#: Fewer labeled texts than this in a window and entity F1 is not measured on it.
MIN_LABELED_TEXTS = 30
#: Sentence-length buckets (words) of the length slices.
WORD_BUCKETS = ((1, 9), (10, 19), (20, 39), (40, None))
#: A ``meta`` entry with more distinct values than this in a window is an id, not a slice.
MAX_META_VALUES = 20
#: The least rise in share (points of the window) that makes a slice worth naming.
MIN_SLICE_RISE = 0.05
#: Slices named in an insight's evidence at most, and examples shown.
MAX_SLICES = 5
MAX_EXAMPLES = 5
BOOTSTRAP_ROUNDS = 200
PRINCIPAL_DIRECTIONS = 10
#: What a plan does for the entity types and slices that moved: weight them up, and the newest data more.
RISEN_WEIGHT = 2.0
RECENT_WEIGHT = 3.0  # above the controller's default production weight (2.0): the newest data weighs more


# -- the counts every detector reads ------------------------------------------------------------------
def type_counts(window: EntityWindow) -> Counter[str]:
    """Predicted entities per type over the window."""
    return Counter(e.type for entities in window.entities for e in entities)


def gold_type_counts(window: EntityWindow) -> Counter[str]:
    """Labeled entities per type over the window's labeled texts."""
    return Counter(kind for i in window.labeled for kind, _, _ in _spans(window.gold_tags[i] or []))


#: Labeled entities on both sides before the plan trusts the labels' type mix over the predicted one.
MIN_GOLD_ENTITIES = 30


def densities(window: EntityWindow) -> NDArray[np.float64]:
    """Entities per word of each text (0 for a text without words)."""
    words = np.maximum(window.word_counts, 1).astype(np.float64)
    return np.array([len(e) for e in window.entities], dtype=np.float64) / words


def unseen_flags(profile: EntityProfile, window: EntityWindow) -> NDArray[np.bool_]:
    """For every predicted entity of the window (text by text), whether training never saw its string."""
    return np.array(
        [entity_key(e.text) not in profile.known_entities for entities in window.entities for e in entities],
        dtype=bool,
    )


def _spans(tags: Sequence[str]) -> set[tuple[str, int, int]]:
    from seqeval.metrics.sequence_labeling import get_entities

    return {(kind, start, end) for kind, start, end in get_entities(list(tags))}


def sentence_counts(window: EntityWindow, kind: str | None = None) -> NDArray[np.float64]:
    """(true positives, predicted, gold) entities per labeled text, of one type or all: what F1 sums."""
    rows = []
    for i in window.labeled:
        gold_tags = window.gold_tags[i]
        assert gold_tags is not None
        gold = _spans(gold_tags)
        predicted = _spans(window.predicted_tags[i])
        if kind is not None:
            gold = {s for s in gold if s[0] == kind}
            predicted = {s for s in predicted if s[0] == kind}
        rows.append((len(gold & predicted), len(predicted), len(gold)))
    return np.array(rows, dtype=np.float64).reshape(-1, 3)


def micro_f1(counts: NDArray[np.float64]) -> float:
    """Entity micro F1 from summed (tp, predicted, gold); 1.0 when neither side has an entity."""
    tp, predicted, gold = counts.sum(axis=0) if counts.size else (0.0, 0.0, 0.0)
    return 1.0 if predicted + gold == 0 else float(2 * tp / (predicted + gold))


def bootstrap_sd(counts: NDArray[np.float64], seed: int = 0) -> float:
    """Standard error of :func:`micro_f1` over sentences (bootstrap)."""
    if len(counts) < 2:
        return math.nan
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(counts), size=(BOOTSTRAP_ROUNDS, len(counts)))
    sums = counts[picks].sum(axis=1)
    denominator = sums[:, 1] + sums[:, 2]
    f1 = np.where(denominator > 0, 2 * sums[:, 0] / np.maximum(denominator, 1e-12), 1.0)
    return float(f1.std(ddof=1))


def entity_correctness(profile: EntityProfile, window: EntityWindow) -> NDArray[np.float64]:
    """Each predicted entity's calibrated chance of being right (empty without a calibrator)."""
    if profile.calibrator is None:
        return np.zeros(0)
    confidence = np.array([e.confidence for entities in window.entities for e in entities], dtype=np.float64)
    return profile.calibrator.transform(confidence) if confidence.size else np.zeros(0)


def fit_entity_calibrator(window: EntityWindow) -> ConfidenceCalibrator | None:
    """Entity confidence → chance of being right, from a labeled window (None with too few entities)."""
    confidence: list[float] = []
    correct: list[bool] = []
    for i in window.labeled:
        gold_tags = window.gold_tags[i]
        assert gold_tags is not None
        gold = _spans(gold_tags)
        # The window's entities and its predicted tags come from the same spans, in the text's order.
        predicted = sorted(_spans(window.predicted_tags[i]), key=lambda s: s[1])
        for span, entity in zip(predicted, window.entities[i], strict=False):
            confidence.append(entity.confidence)
            correct.append(span in gold)
    if len(confidence) < 30:
        return None
    return ConfidenceCalibrator.fit(np.array(confidence), np.array(correct))


def _welch_greater(before: NDArray[np.float64], after: NDArray[np.float64]) -> float:
    """One-sided Welch t-test p-value that ``before``'s mean exceeds ``after``'s; exact for constant samples."""
    from scipy.stats import ttest_ind

    if float(before.std()) < 1e-9 and float(after.std()) < 1e-9:
        return 0.0 if float(before.mean()) > float(after.mean()) + 1e-9 else 1.0
    with warnings.catch_warnings():  # nearly constant samples: scipy warns of precision loss, the p-value stands
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(ttest_ind(before, after, equal_var=False, alternative="greater").pvalue)
    return min(1.0, p) if math.isfinite(p) else 1.0


# -- detectors -----------------------------------------------------------------------------------------
class EntityDetector(ABC):
    """One question about an entity window; calibrated like the classifiers' detectors."""

    name: ClassVar[str]
    kind: ClassVar[InsightKind]
    requires_labels: ClassVar[bool] = False

    @abstractmethod
    def measure(self, profile: EntityProfile, window: EntityWindow) -> Measurement:
        """The statistic of ``window`` against ``profile``."""

    @abstractmethod
    def explain(self, profile: EntityProfile, window: EntityWindow, m: Measurement) -> tuple[Evidence, str]:
        """Evidence and one sentence for a measurement that fired."""

    def calibrate(
        self, profile: EntityProfile, false_alarm_rate: float = 0.001, n_rounds: int = 200, seed: int = 0
    ) -> CalibratedThreshold:
        """The alarm level that reference-vs-reference splits exceed with ``false_alarm_rate``."""
        values = []
        for ref_idx, cur_idx in reference_splits(len(profile.window), profile.window_size, n_rounds, seed):
            m = self.measure(profile.subset(ref_idx), profile.window.take(cur_idx))
            values.append(m.statistic if m.applicable else math.nan)
        finite = [v for v in values if math.isfinite(v)]
        value = threshold_from_null(values, false_alarm_rate)
        return CalibratedThreshold(
            value=value,
            method="calibrated" if len(finite) >= 10 else "nominal",
            false_alarm_rate=false_alarm_rate,
            n_rounds=n_rounds,
            window_size=min(profile.window_size, len(profile.window) // 2),
            null_median=float(np.median(finite)) if finite else None,
            null_max=float(max(finite)) if finite else None,
            null_statistics=[round(v, 6) for v in finite],
        )

    def threshold_for(self, profile: EntityProfile, false_alarm_rate: float | None) -> float:
        """The level for this check's share of the budget, from the profile's null statistics."""
        stored = profile.thresholds.get(self.name)
        if stored is None:
            return max(-math.log10(false_alarm_rate or 0.001), MIN_THRESHOLD)
        if false_alarm_rate is None:
            return stored.value
        return threshold_at_rate(
            stored.null_statistics,
            false_alarm_rate,
            stored_value=stored.value,
            stored_rate=stored.false_alarm_rate,
            floor=MIN_THRESHOLD,
        )


def _shares(counts: Counter[str], names: Sequence[str]) -> dict[str, float]:
    total = sum(counts.values())
    return {name: counts.get(name, 0) / total if total else 0.0 for name in names}


def type_mix(profile: EntityProfile, window: EntityWindow) -> list[ClassShift]:
    """Each entity type's share of the predicted entities, reference and window, largest change first."""
    reference, current = type_counts(profile.window), type_counts(window)
    names = sorted(set(reference) | set(current) | set(profile.entity_types))
    before, after = _shares(reference, names), _shares(current, names)
    order = sorted(names, key=lambda n: -abs(after[n] - before[n]))
    return [ClassShift(name=n, reference_share=before[n], current_share=after[n]) for n in order]


class EntityTypeMix(EntityDetector):
    """The mix of predicted entity types."""

    name = "entity_type_mix"
    kind: ClassVar[InsightKind] = "prediction_drift"
    min_share_change = 0.05

    def measure(self, profile: EntityProfile, window: EntityWindow) -> Measurement:
        from scipy.stats import chi2_contingency

        reference, current = type_counts(profile.window), type_counts(window)
        names = sorted(set(reference) | set(current))
        if len(names) < 2 or sum(current.values()) < 20:
            return Measurement.not_applicable(self.name, "fewer than 20 entities or one type", len(window))
        table = np.array([[reference.get(n, 0) for n in names], [current.get(n, 0) for n in names]], dtype=float)
        table = table[:, table.sum(axis=0) > 0]
        p = float(chi2_contingency(table + 0.5)[1])
        before, after = _shares(reference, names), _shares(current, names)
        change = max(abs(after[n] - before[n]) for n in names)
        return Measurement(
            detector=self.name,
            statistic=log_p(p),
            p_value=p,
            material=change >= self.min_share_change,
            n_current=len(window),
            metrics={"entities": float(sum(current.values())), "largest_share_change": change},
        )

    def explain(self, profile: EntityProfile, window: EntityWindow, m: Measurement) -> tuple[Evidence, str]:
        classes = type_mix(profile, window)
        moved = ", ".join(f"{c.name} {c.reference_share:.0%} -> {c.current_share:.0%}" for c in classes[:3])
        total = sum(type_counts(window).values())
        summary = f"The entity-type mix moved: {moved} (of {total} entities in {len(window)} texts)."
        risen = [c.name for c in classes if c.current_share > c.reference_share][:2]
        examples = _examples(window, lambda i: sum(1.0 for e in window.entities[i] if e.type in risen))
        return Evidence(classes=classes, metrics=m.metrics, examples=examples), summary


class EntityDensity(EntityDetector):
    """Entities per word."""

    name = "entity_density"
    kind: ClassVar[InsightKind] = "prediction_drift"
    min_change = 0.02

    def measure(self, profile: EntityProfile, window: EntityWindow) -> Measurement:
        from scipy.stats import mannwhitneyu

        if len(window) < 10:
            return Measurement.not_applicable(self.name, "fewer than 10 texts", len(window))
        before, after = densities(profile.window), densities(window)
        p = float(mannwhitneyu(before, after, alternative="two-sided").pvalue)
        change = float(after.mean() - before.mean())
        return Measurement(
            detector=self.name,
            statistic=log_p(p),
            p_value=p,
            material=abs(change) >= self.min_change,
            n_current=len(window),
            metrics={"reference_density": float(before.mean()), "current_density": float(after.mean())},
        )

    def explain(self, profile: EntityProfile, window: EntityWindow, m: Measurement) -> tuple[Evidence, str]:
        before, after = m.metrics["reference_density"], m.metrics["current_density"]
        density = densities(window)
        sign = 1.0 if after > before else -1.0
        summary = f"Entity density moved from {before:.3f} to {after:.3f} entities per word."
        return Evidence(metrics=m.metrics, examples=_examples(window, lambda i: sign * float(density[i]))), summary


class TokenConfidenceDrift(EntityDetector):
    """The texts' mean word confidence."""

    name = "token_confidence"
    kind: ClassVar[InsightKind] = "prediction_drift"
    min_change = 0.02

    def measure(self, profile: EntityProfile, window: EntityWindow) -> Measurement:
        from scipy.stats import ks_2samp

        if len(window) < 10:
            return Measurement.not_applicable(self.name, "fewer than 10 texts", len(window))
        before, after = profile.window.mean_confidence, window.mean_confidence
        p = float(ks_2samp(before, after).pvalue)
        return Measurement(
            detector=self.name,
            statistic=log_p(p),
            p_value=p,
            material=abs(float(after.mean() - before.mean())) >= self.min_change,
            n_current=len(window),
            metrics={"reference_confidence": float(before.mean()), "current_confidence": float(after.mean())},
        )

    def explain(self, profile: EntityProfile, window: EntityWindow, m: Measurement) -> tuple[Evidence, str]:
        summary = (
            f"Mean word confidence moved from {m.metrics['reference_confidence']:.3f} "
            f"to {m.metrics['current_confidence']:.3f}."
        )
        examples = _examples(window, lambda i: -float(window.mean_confidence[i]))
        return Evidence(metrics=m.metrics, examples=examples), summary


class NewEntityNames(EntityDetector):
    """The share of predicted entity strings that training never saw."""

    name = "new_entity_names"
    kind: ClassVar[InsightKind] = "text_drift"
    min_rise = 0.05

    def measure(self, profile: EntityProfile, window: EntityWindow) -> Measurement:
        from scipy.stats import norm

        before, after = unseen_flags(profile, profile.window), unseen_flags(profile, window)
        if after.size < 20 or before.size < 20:
            return Measurement.not_applicable(self.name, "fewer than 20 entities", len(window))
        p1, p2 = float(before.mean()), float(after.mean())
        pooled = (before.sum() + after.sum()) / (before.size + after.size)
        sd = math.sqrt(max(pooled * (1 - pooled), 1e-12) * (1 / before.size + 1 / after.size))
        p = float(norm.sf((p2 - p1) / sd))
        return Measurement(
            detector=self.name,
            statistic=log_p(p),
            p_value=p,
            material=p2 - p1 >= self.min_rise,
            n_current=len(window),
            metrics={"reference_unseen_share": p1, "current_unseen_share": p2, "entities": float(after.size)},
        )

    def explain(self, profile: EntityProfile, window: EntityWindow, m: Measurement) -> tuple[Evidence, str]:
        unseen = Counter(
            f"{e.text} ({e.type})"
            for entities in window.entities
            for e in entities
            if entity_key(e.text) not in profile.known_entities
        )
        names = ", ".join(name for name, _ in unseen.most_common(5))
        summary = (
            f"{m.metrics['current_unseen_share']:.0%} of the entities found are names training never saw "
            f"(reference {m.metrics['reference_unseen_share']:.0%}), e.g. {names}."
        )
        examples = _examples(
            window, lambda i: sum(1.0 for e in window.entities[i] if entity_key(e.text) not in profile.known_entities)
        )
        return Evidence(metrics=m.metrics, examples=examples), summary


class EntityEmbeddingDrift(EntityDetector):
    """The pooled sentence embeddings, on the reference's main directions."""

    name = "entity_embedding"
    kind: ClassVar[InsightKind] = "embedding_drift"
    min_shift_sd = 0.5

    def measure(self, profile: EntityProfile, window: EntityWindow) -> Measurement:

        reference = profile.window.embeddings
        if len(window) < 10 or len(reference) < 10:
            return Measurement.not_applicable(self.name, "fewer than 10 texts", len(window))
        centre = reference.mean(axis=0)
        _, _, directions = np.linalg.svd(reference - centre, full_matrices=False)
        basis = directions[:PRINCIPAL_DIRECTIONS].T
        before, after = (reference - centre) @ basis, (window.embeddings - centre) @ basis
        p_values = [
            2 * min(_welch_greater(before[:, k], after[:, k]), _welch_greater(after[:, k], before[:, k]))
            for k in range(basis.shape[1])
        ]
        p = bonferroni(p_values)
        # News arrives in documents, and a window of other documents sits a little apart on topic alone:
        # only a shift of a sizeable part of a direction's spread is material.
        shift = float(np.max(np.abs(after.mean(axis=0) - before.mean(axis=0)) / np.maximum(before.std(axis=0), 1e-9)))
        return Measurement(
            detector=self.name,
            statistic=log_p(p),
            p_value=p,
            material=shift >= self.min_shift_sd,
            n_current=len(window),
            metrics={
                "directions": float(basis.shape[1]),
                "smallest_p": float(min(p_values)),
                "largest_shift_sd": shift,
            },
        )

    def explain(self, profile: EntityProfile, window: EntityWindow, m: Measurement) -> tuple[Evidence, str]:
        centre = profile.window.embeddings.mean(axis=0)
        distance = np.linalg.norm(window.embeddings - centre, axis=1)
        summary = "The texts' embeddings moved away from the reference's on its main directions."
        return Evidence(metrics=m.metrics, examples=_examples(window, lambda i: float(distance[i]))), summary


class EntityF1Drop(EntityDetector):
    """Entity micro F1 on the window's labeled texts against the held-out F1."""

    name = "entity_f1_drop"
    kind: ClassVar[InsightKind] = "quality_drop"
    requires_labels = True
    min_drop = 0.02

    def measure(self, profile: EntityProfile, window: EntityWindow) -> Measurement:
        from scipy.stats import norm

        current = sentence_counts(window)
        reference = sentence_counts(profile.window)
        if len(current) < MIN_LABELED_TEXTS or len(reference) < MIN_LABELED_TEXTS:
            return Measurement.not_applicable(self.name, f"fewer than {MIN_LABELED_TEXTS} labeled texts", len(window))
        before, after = micro_f1(reference), micro_f1(current)
        sd = math.hypot(bootstrap_sd(reference), bootstrap_sd(current))
        p = float(norm.sf((before - after) / sd)) if sd > 0 else (0.0 if after < before else 1.0)
        metrics = {"reference_f1": before, "current_f1": after, "labeled": float(len(current))}
        for kind in profile.entity_types:
            metrics[f"f1.{kind}"] = micro_f1(sentence_counts(window, kind))
        return Measurement(
            detector=self.name,
            statistic=log_p(p),
            p_value=p,
            material=before - after >= self.min_drop,
            n_current=len(window),
            metrics=metrics,
        )

    def explain(self, profile: EntityProfile, window: EntityWindow, m: Measurement) -> tuple[Evidence, str]:
        reference_by_type = profile.reference_f1_by_type
        shares = {c.name: c for c in type_mix(profile, window)}
        classes = [
            ClassShift(
                name=kind,
                reference_share=shares[kind].reference_share if kind in shares else 0.0,
                current_share=shares[kind].current_share if kind in shares else 0.0,
                reference_recall=reference_by_type.get(kind),
                current_recall=m.metrics.get(f"f1.{kind}"),
                quality_metric="F1",
            )
            for kind in profile.entity_types
        ]
        classes.sort(key=lambda c: (c.current_recall or 0.0) - (c.reference_recall or 0.0))
        worst = ", ".join(
            f"{c.name} {c.reference_recall:.2f} -> {c.current_recall:.2f}"
            for c in classes[:3]
            if c.reference_recall is not None and c.current_recall is not None
        )
        summary = (
            f"Entity micro F1 fell from {m.metrics['reference_f1']:.3f} to {m.metrics['current_f1']:.3f} on "
            f"{int(m.metrics['labeled'])} labeled texts; by type (F1): {worst}."
        )
        return Evidence(classes=classes, metrics=m.metrics, examples=_examples(window, _errors_of(window))), summary


class EstimatedF1Drop(EntityDetector):
    """Entity precision estimated from calibrated confidence, without labels."""

    name = "estimated_f1_drop"
    kind: ClassVar[InsightKind] = "estimated_quality_drop"
    min_drop = 0.02

    def measure(self, profile: EntityProfile, window: EntityWindow) -> Measurement:

        before, after = entity_correctness(profile, profile.window), entity_correctness(profile, window)
        if profile.calibrator is None or after.size < 20 or before.size < 20 or profile.reference_f1 is None:
            return Measurement.not_applicable(self.name, "no calibrator or fewer than 20 entities", len(window))
        p = _welch_greater(before, after)
        estimate = profile.reference_f1 * float(after.mean()) / max(float(before.mean()), 1e-9)
        return Measurement(
            detector=self.name,
            statistic=log_p(p) if math.isfinite(p) else 0.0,
            p_value=p if math.isfinite(p) else None,
            material=profile.reference_f1 - estimate >= self.min_drop,
            n_current=len(window),
            metrics={"reference_f1": profile.reference_f1, "estimated_f1": estimate},
        )

    def explain(self, profile: EntityProfile, window: EntityWindow, m: Measurement) -> tuple[Evidence, str]:
        summary = (
            f"Entity micro F1 is estimated at {m.metrics['estimated_f1']:.3f} without labels "
            f"(held-out {m.metrics['reference_f1']:.3f}), from calibrated entity confidence."
        )
        examples = _examples(window, lambda i: -min((e.confidence for e in window.entities[i]), default=1.0))
        return Evidence(metrics=m.metrics, examples=examples), summary


class EntitySliceShift(EntityDetector):
    """A slice whose share of the window rose."""

    name = "entity_slices"
    kind: ClassVar[InsightKind] = "slice_degradation"

    def measure(self, profile: EntityProfile, window: EntityWindow) -> Measurement:
        findings = entity_slices(profile, window, keep_all=True)
        if not findings or len(window) < 10:
            return Measurement.not_applicable(self.name, "no slice to compare", len(window))
        p = bonferroni([f.share_p_value if f.share_p_value is not None else 1.0 for f in findings])
        rise = max(f.share_current - (f.share_reference or 0.0) for f in findings)
        return Measurement(
            detector=self.name,
            statistic=log_p(p),
            p_value=p,
            material=rise >= MIN_SLICE_RISE,
            n_current=len(window),
            metrics={"largest_share_rise": rise, "slices": float(len(findings))},
        )

    def explain(self, profile: EntityProfile, window: EntityWindow, m: Measurement) -> tuple[Evidence, str]:
        findings = entity_slices(profile, window)
        named = ", ".join(f"{f.key} {(f.share_reference or 0):.0%} -> {f.share_current:.0%}" for f in findings[:3])
        summary = f"Slices grew in the window: {named}."
        inside = slice_mask(SliceKey.parse(findings[0].key), window) if findings else np.zeros(len(window), dtype=bool)
        examples = _examples(window, lambda i: float(inside[i]) + len(window.entities[i]) / 100)
        return Evidence(slices=findings, metrics=m.metrics, examples=examples), summary


ENTITY_DETECTORS: tuple[type[EntityDetector], ...] = (
    EntityTypeMix,
    EntityDensity,
    TokenConfidenceDrift,
    NewEntityNames,
    EntityEmbeddingDrift,
    EntityF1Drop,
    EstimatedF1Drop,
    EntitySliceShift,
)


def all_entity_detectors() -> list[EntityDetector]:
    """One of every entity detector."""
    return [cls() for cls in ENTITY_DETECTORS]


# -- slices, examples, cost ---------------------------------------------------------------------------
def slice_keys(profile: EntityProfile, window: EntityWindow) -> list[SliceKey]:
    """The slices worth comparing: word-length buckets, line shapes, entity types and the values of the
    ``meta`` entries the reference has too."""
    keys = [SliceKey.length(lo, None if hi is None else hi + 1) for lo, hi in WORD_BUCKETS]
    keys += [SliceKey(SHAPE_FIELD, shape) for shape in LINE_SHAPES]
    types = sorted(set(profile.entity_types) | set(type_counts(window)))
    keys += [SliceKey(ENTITY_FIELD, kind) for kind in types]
    # A ``meta`` entry the reference never had cannot have grown: every window would be "100% new".
    known = {name for meta in profile.window.meta for name in meta}
    values: dict[str, set[str]] = {}
    for meta in window.meta:
        for name, value in meta.items():
            if value is not None and "=" not in name and name in known:
                values.setdefault(name, set()).add(meta_value_str(value))
    for name, seen in sorted(values.items()):
        if len(seen) <= MAX_META_VALUES:
            keys += [SliceKey.meta(name, value) for value in sorted(seen)]
    return keys


def slice_mask(key: SliceKey, window: EntityWindow) -> NDArray[np.bool_]:
    """Which texts of ``window`` are in the slice."""
    shapes = window.shapes
    return np.array(
        [
            key.contains(
                meta=window.meta[i] if window.meta else {},
                n_tokens=len(window.words[i]),
                shape=shapes[i],
                entity_types={e.type for e in window.entities[i]},
            )
            for i in range(len(window))
        ],
        dtype=bool,
    )


def entity_slices(profile: EntityProfile, window: EntityWindow, keep_all: bool = False) -> list[SliceFinding]:
    """Slices whose share of the window rose significantly (all of them with ``keep_all``), largest rise first,
    with each slice's estimated entity error rate (1 - calibrated correctness) where the profile can estimate."""
    from scipy.stats import norm

    findings: list[SliceFinding] = []
    n_ref, n_cur = len(profile.window), len(window)
    if n_ref == 0 or n_cur == 0:
        return []
    for key in slice_keys(profile, window):
        before, after = slice_mask(key, profile.window), slice_mask(key, window)
        p1, p2 = float(before.mean()), float(after.mean())
        pooled = (before.sum() + after.sum()) / (n_ref + n_cur)
        sd = math.sqrt(max(pooled * (1 - pooled), 1e-12) * (1 / n_ref + 1 / n_cur))
        p = float(norm.sf((p2 - p1) / sd))
        if not keep_all and (p >= 0.001 or p2 - p1 < MIN_SLICE_RISE):
            continue
        reference_error = _estimated_error(profile, profile.window, before)
        current_error = _estimated_error(profile, window, after)
        excess = 0.0
        if reference_error is not None and current_error is not None:
            excess = float(after.sum()) * (current_error - reference_error)
        findings.append(
            SliceFinding(
                key=key.format(),
                field=key.field,
                value=key.value,
                count=int(after.sum()),
                share_reference=p1,
                share_current=p2,
                metric="estimated_error_rate",
                reference_value=reference_error,
                current_value=current_error,
                excess_errors=excess,
                share_p_value=p,
            )
        )
    findings.sort(key=lambda f: -(f.share_current - (f.share_reference or 0.0)))
    return findings if keep_all else findings[:MAX_SLICES]


def _estimated_error(profile: EntityProfile, window: EntityWindow, mask: NDArray[np.bool_]) -> float | None:
    if profile.calibrator is None or not mask.any():
        return None
    chances = entity_correctness(profile, window.take(np.flatnonzero(mask)))
    return float(1.0 - chances.mean()) if chances.size else None


def _examples(window: EntityWindow, score: object) -> list[Example]:
    """The texts scoring highest under ``score`` (a function of the row index), shortened."""
    assert callable(score)
    scores = [float(score(i)) for i in range(len(window))]
    order = sorted(range(len(window)), key=lambda i: -scores[i])[:MAX_EXAMPLES]
    return [Example(id=window.ids[i], text=window.texts[i][:300], score=round(scores[i], 6)) for i in order]


def _errors_of(window: EntityWindow) -> object:
    def errors(i: int) -> float:
        gold_tags = window.gold_tags[i]
        if gold_tags is None:
            return -1.0
        return float(len(_spans(gold_tags) ^ _spans(window.predicted_tags[i])))

    return errors


def entity_cost(profile: EntityProfile, window: EntityWindow) -> AccuracyCost | None:
    """The window's cost in entity micro F1 points: measured on its labeled texts when there are enough,
    else estimated from calibrated confidence; None when neither can be had."""
    if profile.reference_f1 is None:
        return None
    reference = profile.reference_f1
    current = sentence_counts(window)
    if len(current) >= MIN_LABELED_TEXTS:
        f1 = micro_f1(current)
        sd = math.hypot(bootstrap_sd(current), bootstrap_sd(sentence_counts(profile.window)))
        source: CostSource = "labeled"
    else:
        before, after = entity_correctness(profile, profile.window), entity_correctness(profile, window)
        if before.size < 20 or after.size < 20:
            return None
        ratio = float(after.mean()) / max(float(before.mean()), 1e-9)
        f1 = reference * ratio
        sd = reference * float(after.std(ddof=1)) / math.sqrt(after.size) / max(float(before.mean()), 1e-9)
        source = "estimated"
    points = 100 * (reference - f1)
    half = 196 * sd if math.isfinite(sd) else abs(points)
    return AccuracyCost(
        points=points,
        low=points - half,
        high=points + half,
        source=source,
        n=len(window),
        n_labeled=len(current),
        reference_accuracy=reference,
        current_accuracy=f1,
        metric="entity micro F1",
    )


def _recommendation(profile: EntityProfile, window: EntityWindow, slices: Sequence[SliceFinding]) -> Recommendation:
    """Retrain with the entity types that grew, the slices that grew, and the newest data weighted up.

    The types are the labels' where both windows have enough of them: under drift the model's own types are
    what it gets wrong (a new company read as a person would weight people up)."""
    before, after = gold_type_counts(profile.window), gold_type_counts(window)
    if min(sum(before.values()), sum(after.values())) < MIN_GOLD_ENTITIES:
        before, after = type_counts(profile.window), type_counts(window)
    names = sorted(set(before) | set(after))
    shares_before, shares_after = _shares(before, names), _shares(after, names)
    risen = {n: RISEN_WEIGHT for n in names if shares_after[n] - shares_before[n] >= MIN_SLICE_RISE}
    weights = {f.key: RISEN_WEIGHT for f in slices[:3]}
    reasons = []
    if risen:
        reasons.append(f"entity types {', '.join(sorted(risen))} grew")
    if weights:
        reasons.append(f"slices {', '.join(weights)} grew")
    because = "; ".join(reasons) or "the traffic moved away from what the model was trained on"
    return Recommendation(
        action="retrain",
        adjust=Adjustments(class_weights=risen, slice_weights=weights, recent_data_weight=RECENT_WEIGHT),
        because=because + ": weight them and the newest labeled texts up",
    )


# -- the step ----------------------------------------------------------------------------------------
def calibrate_entity_profile(
    profile: EntityProfile, false_alarm_rate: float = 0.001, n_rounds: int = 200, seed: int = 0
) -> EntityProfile:
    """``profile`` with every entity detector's threshold calibrated on reference splits."""
    thresholds = {d.name: d.calibrate(profile, false_alarm_rate, n_rounds, seed) for d in all_entity_detectors()}
    return profile.model_copy(update={"thresholds": thresholds})


def entity_check_step(
    profile: EntityProfile,
    window: EntityWindow,
    model_version: str,
    tracker: TrackerState,
    *,
    min_severity: Severity = "info",
    at: datetime | None = None,
    budget: AlarmBudget | None = None,
    rule: SeverityRule = DEFAULT_SEVERITY_RULE,
) -> StepOutcome:
    """The token classifier's check: every entity detector on ``window``, merged into one insight per
    condition and followed with hysteresis, as :func:`~insightloop.detectors.check_step` does for classifiers."""
    detectors = all_entity_detectors()
    rate = budget.per_check_rate / len(detectors) if budget is not None else None
    cost = entity_cost(profile, window)
    severity = severity_for_cost(cost, rule)
    slices = entity_slices(profile, window)
    recommendation = _recommendation(profile, window, slices)
    mix = type_mix(profile, window)
    mix_clause = ", ".join(f"{c.name} {c.reference_share:.0%} -> {c.current_share:.0%}" for c in mix[:3])
    insights: list[Insight] = []
    results: list[DetectorResult] = []
    for detector in detectors:
        m = detector.measure(profile, window)
        threshold = detector.threshold_for(profile, rate)
        fired = m.applicable and m.material and m.statistic >= threshold
        if fired:
            evidence, summary = detector.explain(profile, window, m)
            if not evidence.slices:
                evidence = evidence.model_copy(update={"slices": slices})
            if not evidence.classes:  # every entity insight names the types, as shares of the entities found
                evidence = evidence.model_copy(update={"classes": mix})
                summary += f" Entity types: {mix_clause}."
            where = f" Most in {slices[0].key} ({slices[0].share_current:.0%} of texts)." if slices else ""
            priced = f" The {cost.describe()}." if cost is not None else " Cost unknown: reported as a warning."
            insights.append(
                Insight(
                    id=insight_id(detector.name, model_version, window.ids),
                    detector=detector.name,
                    kind=detector.kind,
                    severity=severity,
                    window=window.span(),
                    statistic=round(m.statistic, 6),
                    threshold=round(threshold, 6),
                    p_value=m.p_value,
                    evidence=evidence,
                    summary=summary + where + priced,
                    recommendation=recommendation,
                    cost=cost,
                    created_at=at or utc_now(),
                    model_version=model_version,
                )
            )
        results.append(DetectorResult.of(detector.name, m, threshold, severity if fired else None))
    return follow_conditions(
        CheckResult(insights=insights, results=results),
        model_version,
        tracker,
        min_severity=min_severity,
        at=at,
        false_alarm_rate=rate,
        labeled_metric="current_f1",
        estimated_metric="estimated_f1",
    )
