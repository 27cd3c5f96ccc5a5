"""From evidence to explanation: what moved, where the loss is, and what the next training run should change.

One :class:`Diagnosis` per (profile, window) is shared by every insight of a check, so insights from
different detectors about the same window tell the same story and recommend the same action.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

import numpy as np

from insightloop.detectors.descriptor_stats import (
    DescriptorTest,
    class_conditional_descriptor_test,
    descriptor_test,
)
from insightloop.detectors.descriptors import DESCRIPTOR_LABELS
from insightloop.detectors.embedding_stats import EmbeddingTest, embedding_test
from insightloop.detectors.insight import (
    Adjustments,
    ClassShift,
    DescriptorShift,
    Example,
    Recommendation,
    SliceFinding,
)
from insightloop.detectors.prediction_stats import PredictionTest, prediction_test
from insightloop.detectors.quality_stats import estimated_quality, labeled_quality
from insightloop.detectors.slice_stats import SliceAnalysis, SliceStats, slice_analysis, slice_mask
from insightloop.detectors.slicekey import SliceKey
from insightloop.detectors.window import Window

if TYPE_CHECKING:
    from insightloop.detectors.profile import ReferenceProfile

#: Significance level of the secondary tests a diagnosis makes (which descriptors moved, which slices).
DIAGNOSIS_ALPHA = 0.01
#: Largest reference share of texts a model truncates for which its reading of them counts as unvalidated.
UNSEEN_LONG_SHARE = 0.05
#: Accuracy drop (point estimate, labeled or estimated) that makes truncated new traffic a long-text case.
LONG_TEXT_MIN_DROP = 0.02
#: Longest ``max_length`` a recommendation proposes (the position limit of BERT-style encoders).
MAX_LENGTH_CAP = 512
#: Characters of an example text kept in an insight.
EXAMPLE_CHARS = 280


@dataclass(frozen=True)
class Diagnosis:
    """What changed between reference and window, and the most plausible cause."""

    descriptors: DescriptorTest
    conditional_descriptors: DescriptorTest | None  # against the reference re-weighted to the class mix
    embeddings: EmbeddingTest | None
    predictions: PredictionTest
    slices: SliceAnalysis
    input_shift: bool
    prior_shift: bool
    prior_explains_inputs: bool
    quality_drop: bool
    long_text_slice: SliceStats | None
    max_length: int | None
    #: Tokens the long slice's texts need to be read whole (typical), when there is a long slice.
    long_text_tokens: int | None = None
    #: The accuracy drop's point estimate (labeled where 30 labels exist, else estimated; 0 when unknown).
    quality_drop_estimate: float = 0.0

    @property
    def degraded(self) -> list[SliceStats]:
        """Slices whose (estimated) error rate rose significantly."""
        return self.slices.degraded(DIAGNOSIS_ALPHA, min_delta=0.02)

    @property
    def grown(self) -> list[SliceStats]:
        """Slices whose share rose significantly."""
        return self.slices.grown(DIAGNOSIS_ALPHA)


def diagnose(profile: ReferenceProfile, window: Window) -> Diagnosis:
    """The shared diagnosis of ``window`` against ``profile`` (computed once per pair)."""

    def compute() -> Diagnosis:
        desc = descriptor_test(profile, window)
        emb = embedding_test(profile, window)
        pred = prediction_test(profile, window)
        slices = slice_analysis(profile, window)
        embeddings_moved = emb is not None and emb.p_value <= DIAGNOSIS_ALPHA
        prior_shift = pred.label_p_value <= DIAGNOSIS_ALPHA
        explained = emb is not None and emb.explained_by_class_mix
        # With the class mix moved, the inputs are judged against the reference re-weighted to the
        # estimated current mix (BBSE): descriptors and embeddings that differ by class move under a pure
        # prior shift, and only what stays after re-weighting is a change of the inputs themselves.
        conditional = class_conditional_descriptor_test(profile, window) if prior_shift else None
        judged = conditional if conditional is not None else desc
        oov_up = judged.p_values.get("oov_share", 1.0) <= DIAGNOSIS_ALPHA and (
            judged.current_mean["oov_share"] > judged.reference_mean["oov_share"]
        )
        descriptors_moved = judged.p_value <= DIAGNOSIS_ALPHA
        input_shift = (embeddings_moved and not explained) or oov_up or descriptors_moved
        lab = labeled_quality(profile, window)
        est = estimated_quality(profile, window)
        quality_drop = (
            lab is not None and lab.n_current >= 30 and lab.p_value <= DIAGNOSIS_ALPHA and lab.accuracy_drop > 0.02
        ) or (est is not None and est.p_value <= DIAGNOSIS_ALPHA and est.drop > 0.02)
        labeled = lab is not None and lab.n_current >= 30
        drop_estimate = lab.accuracy_drop if labeled and lab is not None else est.drop if est is not None else 0.0
        limit = profile.effective_max_length
        long_slice = long_text_slice(slices, limit, quality_drop, DIAGNOSIS_ALPHA, drop_estimate)
        needed = tokens_needed(profile, window, long_slice.definition) if long_slice is not None else None
        return Diagnosis(
            descriptors=desc,
            conditional_descriptors=conditional,
            embeddings=emb,
            predictions=pred,
            slices=slices,
            input_shift=input_shift,
            prior_shift=prior_shift,
            prior_explains_inputs=prior_shift and not input_shift,
            quality_drop=quality_drop,
            long_text_slice=long_slice,
            max_length=limit,
            long_text_tokens=needed,
            quality_drop_estimate=float(drop_estimate),
        )

    return profile.window_memo(window, ("diagnosis",), compute)


def truncates(definition: SliceKey, limit: int | None) -> bool:
    """A length slice of texts the model cuts: counted at its limit, so the slice starts there."""
    return definition.kind == "length" and limit is not None and (definition.lower or 0) >= limit


def is_long(definition: SliceKey, limit: int | None) -> bool:
    """A length slice of texts long for a model taking ``limit`` tokens: from half of it (128 when unknown)."""
    if definition.kind != "length" or definition.lower is None:
        return False
    return definition.lower >= (limit / 2 if limit is not None else 128)


def long_text_slice(
    slices: SliceAnalysis, limit: int | None, quality_drop: bool, alpha: float, drop_estimate: float = 0.0
) -> SliceStats | None:
    """The long-text slice a diagnosis blames, or None.

    Either errors concentrate in a long slice (one of the two most degraded slices), or the traffic itself
    became long, grown significantly:

    * a long slice holding most of the window while quality dropped significantly; when every new text is
      long (full reviews after one-sentence snippets) a slice holding the whole window cannot show where the
      loss is, but the change of traffic is that slice;
    * or texts the model truncates, which its reference held almost none of (≤ ``UNSEEN_LONG_SHARE``), while
      the accuracy's point estimate fell (``drop_estimate`` > ``LONG_TEXT_MIN_DROP``): nothing shows that
      the model reads them, and it cannot see all of them. This is the case early in such a change, when the
      new texts are a minority of the window and too few labels make the drop significant; the candidate's
      gate (and its ablation) then decide whether the longer context helps.

    A grown slice is returned with the whole window's (estimated) error rates as its loss.
    """
    for found in slices.degraded(alpha, min_delta=0.02)[:2]:
        if is_long(found.definition, limit):
            return found
    for grown in slices.grown(alpha):
        if not is_long(grown.definition, limit):
            continue
        most_and_worse = quality_drop and grown.share_current >= 0.5
        unseen_and_cut = (
            truncates(grown.definition, limit)
            and grown.share_reference <= UNSEEN_LONG_SHARE
            and drop_estimate > LONG_TEXT_MIN_DROP
        )
        if most_and_worse or unseen_and_cut:
            return replace(
                grown,
                reference_loss=slices.overall_reference_loss,
                current_loss=slices.overall_current_loss,
                loss_count=grown.count_current,
            )
    return None


def tokens_needed(profile: ReferenceProfile, window: Window, definition: SliceKey) -> int | None:
    """Tokens the texts of a slice need to be read whole: their median word count times the reference's
    tokens per word (from the reference texts the model did not cut). The window's token counts cannot say:
    they stop at the model's limit. None when there is nothing to measure."""
    ref, cur = profile.descriptors, profile.describe(window)
    limit = profile.effective_max_length
    whole = ref["length_tokens"] < limit if limit is not None else np.ones(ref["length_tokens"].shape, dtype=bool)
    ref_words = float(ref["length_words"][whole].sum())
    rows = slice_mask(profile, window, definition)
    if ref_words <= 0 or not rows.any():
        return None
    per_word = float(ref["length_tokens"][whole].sum()) / ref_words
    return round(float(np.median(cur["length_words"][rows])) * per_word)


# -- evidence -----------------------------------------------------------------------------------
def descriptor_shifts(test: DescriptorTest, level: float) -> list[DescriptorShift]:
    """Descriptors, most significant first; ``drifted`` when the Bonferroni-adjusted p-value is ≤ ``level``."""
    n = max(len(test.p_values), 1)
    ordered = sorted(test.p_values, key=lambda name: test.p_values[name])
    return [
        DescriptorShift(
            name=name,
            reference_mean=_r(test.reference_mean[name]),
            current_mean=_r(test.current_mean[name]),
            reference_median=_r(test.reference_median[name]),
            current_median=_r(test.current_median[name]),
            p_value=_p(test.p_values[name]),
            drifted=test.p_values[name] * n <= level,
        )
        for name in ordered
    ]


def class_shifts(profile: ReferenceProfile, window: Window, test: PredictionTest) -> list[ClassShift]:
    """Per class: predicted share, BBSE prior estimate, and recall where labels exist."""
    lab = labeled_quality(profile, window)
    out = []
    for j, name in enumerate(profile.class_names):
        out.append(
            ClassShift(
                name=name,
                reference_share=_r(float(test.reference_shares[j])),
                current_share=_r(float(test.current_shares[j])),
                estimated_prior=_r(float(test.estimated_priors[j])) if test.estimated_priors is not None else None,
                reference_recall=_r(lab.reference_recall[name]) if lab and name in lab.reference_recall else None,
                current_recall=_r(lab.current_recall[name]) if lab and name in lab.current_recall else None,
                current_support=lab.current_support.get(name, 0) if lab else 0,
            )
        )
    return out


def slice_finding(s: SliceStats) -> SliceFinding:
    """The insight-facing form of a slice's statistics."""
    d = s.definition
    return SliceFinding(
        key=d.format(),
        field=d.field,
        value=d.value,
        count=s.count_current,
        share_reference=_r(s.share_reference),
        share_current=_r(s.share_current),
        metric=s.metric,
        reference_value=_r(s.reference_loss) if s.reference_loss is not None else None,
        current_value=_r(s.current_loss) if s.current_loss is not None else None,
        excess_errors=_r(s.excess_errors),
        lift=_r(s.lift) if s.lift is not None else None,
        share_p_value=_p(s.share_p_value),
        loss_p_value=_p(s.loss_p_value) if s.loss_p_value is not None else None,
    )


def slice_findings(diagnosis: Diagnosis, focus: str, limit: int = 5) -> list[SliceFinding]:
    """The slices worth showing: degraded ones first for quality insights, grown ones first for drift."""
    degraded, grown = diagnosis.degraded, diagnosis.grown
    first, second = (degraded, grown) if focus == "loss" else (grown, degraded)
    picked: list[SliceStats] = []
    for s in [*first, *second]:
        if s not in picked:
            picked.append(s)
    return [slice_finding(s) for s in picked[:limit]]


def farthest_examples(
    profile: ReferenceProfile, window: Window, k: int = 5, mask: np.ndarray | None = None
) -> list[Example]:
    """Current rows least like the reference (largest MMD witness in the embedding space)."""
    emb = embedding_test(profile, window)
    if emb is None or len(window) == 0:
        return []
    scores = emb.witness.copy()
    if mask is not None and mask.any():
        scores = np.where(mask, scores, -np.inf)
    order = np.argsort(-scores, kind="stable")[:k]
    return [
        Example(id=window.ids[i], text=_shorten(window.texts[i]), score=_r(float(emb.witness[i])))
        for i in order
        if math.isfinite(scores[i])
    ]


def error_examples(
    profile: ReferenceProfile, window: Window, k: int = 5, mask: np.ndarray | None = None
) -> list[Example]:
    """Misclassified labeled rows (in ``mask`` if given), least like the reference first."""
    wrong = window.labeled_mask & ~window.correct
    if mask is not None:
        wrong &= mask
    if not wrong.any():
        return farthest_examples(profile, window, k, mask)
    return farthest_examples(profile, window, k, wrong)


def _shorten(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= EXAMPLE_CHARS else text[: EXAMPLE_CHARS - 1] + "…"


def _r(value: float) -> float:
    """Round for display; keeps JSON small and stable."""
    return round(float(value), 6) if math.isfinite(value) else 0.0


def _p(value: float) -> float:
    return float(min(1.0, max(0.0, value))) if math.isfinite(value) else 1.0


def describe_descriptor_moves(shifts: list[DescriptorShift], limit: int = 2) -> str:
    """'out-of-vocabulary share rose from 3.1% to 9.8%, length in tokens fell from 142 to 88'."""
    parts = []
    for s in [s for s in shifts if s.drifted][:limit]:
        direction = "rose" if s.current_mean > s.reference_mean else "fell"
        label = DESCRIPTOR_LABELS.get(s.name, s.name)
        if s.name.endswith("_share"):
            parts.append(f"{label} {direction} from {s.reference_mean:.1%} to {s.current_mean:.1%}")
        else:
            parts.append(f"{label} {direction} from {s.reference_mean:.0f} to {s.current_mean:.0f}")
    return ", ".join(parts)


def describe_slice(f: SliceFinding) -> str:
    """'meta.domain=kitchen (0% → 50% of traffic, error rate 12% → 31%)'."""
    bits = []
    if f.share_reference is not None:
        bits.append(f"{f.share_reference:.0%} → {f.share_current:.0%} of traffic")
    if f.reference_value is not None and f.current_value is not None:
        label = "error rate" if f.metric == "error_rate" else "estimated error rate"
        bits.append(f"{label} {f.reference_value:.0%} → {f.current_value:.0%}")
    return f"{f.key} ({', '.join(bits)})" if bits else f.key


# -- recommendation -----------------------------------------------------------------------------
def long_text_context(
    limit: int | None, lower: int, needed: int | None = None
) -> tuple[int | None, Literal["head_tail", "chunks"]]:
    """The context a long-text insight asks for: (a new ``max_length`` or None, the truncation policy).

    ``limit``: the tokens the model takes (None: unknown); ``lower``: where the failing length slice starts;
    ``needed``: the tokens its texts need whole (None: unknown). Below ``MAX_LENGTH_CAP`` the context grows to
    the power of two that holds the texts, at least doubling and at most the cap, and each text keeps its
    beginning and end (``head_tail``); at the cap nothing longer fits, so the whole text is read as
    overlapping windows (``chunks``).

    >>> long_text_context(128, 128)
    (256, 'head_tail')
    >>> long_text_context(128, 128, needed=300)
    (512, 'head_tail')
    >>> long_text_context(384, 256)
    (512, 'head_tail')
    >>> long_text_context(512, 512, needed=900)
    (None, 'chunks')
    >>> long_text_context(None, 64)
    (256, 'head_tail')
    """
    if limit is not None and limit >= MAX_LENGTH_CAP:
        return None, "chunks"
    floor = 2 * limit if limit is not None else max(256, 2 * lower)
    holds = 1 << max(0, int(needed) - 1).bit_length() if needed else 0
    return min(MAX_LENGTH_CAP, max(floor, holds)), "head_tail"


def recommend(profile: ReferenceProfile, diagnosis: Diagnosis, *, quality_focus: bool) -> Recommendation:
    """The cheapest action the evidence supports.

    * errors concentrated in the longest texts → ``retrain`` with the context :func:`long_text_context`
      gives: a larger ``max_length`` with ``head_tail`` truncation, or ``chunks`` at the position cap;
    * the predicted-class mix moved while the inputs, tested against the reference re-weighted to the
      estimated current class mix (BBSE), look like the reference: every descriptor (weighted KS) and
      the embeddings (weighted MMD) — a pure prior shift → ``recalibrate`` with ``class_weights`` =
      estimated current / reference priors;
    * inputs moved (new vocabulary, new domains, embeddings beyond the class mix) or the loss rose in
      some slices → ``retrain`` with more weight on those slices and on recent data;
    * otherwise ``none``.
    """
    long_slice = diagnosis.long_text_slice
    if long_slice is not None:
        limit = diagnosis.max_length
        needed = diagnosis.long_text_tokens
        proposed, cut = long_text_context(limit, int(long_slice.definition.lower or 0), needed)
        upper = long_slice.definition.upper
        if limit is None:
            truncation = ""
        elif upper is None or upper > limit:  # upper is exclusive; cut texts count exactly `limit` tokens
            truncation = f", which the model truncates at {limit}"
        else:  # a bucket below the limit: long for this model, but not cut
            truncation = f", near the {limit} tokens the model takes"
        if cut == "chunks":
            context = f"overlapping windows of the {limit} tokens it takes, over each whole text"
        else:  # past any context the model takes, the end of a long text (a review's verdict) is kept too
            context = f"a context of {proposed or limit} tokens, keeping each text's beginning and end"
            if needed is not None and needed > (proposed or 0):
                context += f" (they need about {needed} whole)"
        where = (
            f"errors concentrate in texts of {long_slice.definition.value} tokens{truncation}"
            if long_slice.loss_p_value is not None
            else f"traffic moved to texts of {long_slice.definition.value} tokens{truncation} "
            f"({long_slice.share_reference:.0%} → {long_slice.share_current:.0%}) and quality dropped"
            + (
                ""
                if diagnosis.quality_drop
                else f" by an estimated {diagnosis.quality_drop_estimate * 100:.1f} points (not yet significant)"
            )
        )
        return Recommendation(
            action="retrain",
            adjust=Adjustments(
                max_length=proposed, truncation=cut, slice_weights={long_slice.definition.format(): 2.0}
            ),
            because=(
                f"{where}: {long_slice.reference_loss or 0:.0%} → {long_slice.current_loss or 0:.0%} "
                f"({long_slice.metric.replace('_', ' ')}); {context}"
            ),
        )
    test = diagnosis.predictions
    if diagnosis.prior_explains_inputs and not diagnosis.input_shift:
        weights: dict[str, float] = {}
        if test.estimated_priors is not None and test.reference_priors is not None:
            for j, name in enumerate(profile.class_names):
                if test.reference_priors[j] > 0:
                    weights[name] = _r(float(test.estimated_priors[j] / test.reference_priors[j]))
        else:
            for j, name in enumerate(profile.class_names):
                if test.reference_shares[j] > 0:
                    weights[name] = _r(float(test.current_shares[j] / test.reference_shares[j]))
        mix = ", ".join(
            f"{name} {test.reference_shares[j]:.0%} → {test.current_shares[j]:.0%}"
            for j, name in enumerate(profile.class_names)
        )
        return Recommendation(
            action="recalibrate",
            adjust=Adjustments(class_weights=weights),
            because=(
                f"the predicted class mix moved ({mix}) while the inputs of each class look like the "
                "reference: a prior shift; correct the class priors, no retraining needed"
            ),
        )
    degraded = diagnosis.degraded[:3]
    grown = [s for s in diagnosis.grown if s.definition.kind != "length"][:3]
    if diagnosis.input_shift or degraded or (quality_focus and diagnosis.quality_drop):
        slice_weights: dict[str, float] = {}
        for s in degraded:
            slice_weights[s.definition.format()] = 2.0
        for s in grown:
            ratio = s.share_current / s.share_reference if s.share_reference > 0 else 3.0
            slice_weights.setdefault(s.definition.format(), _r(float(min(3.0, max(1.5, ratio)))))
        reasons = []
        if degraded:
            reasons.append("the loss rose in " + ", ".join(s.definition.format() for s in degraded))
        if grown:
            reasons.append("traffic moved towards " + ", ".join(s.definition.format() for s in grown))
        if diagnosis.input_shift and not reasons:
            reasons.append("the inputs moved away from the reference (vocabulary / embeddings)")
        if not reasons:
            reasons.append("quality fell without a slice or input change to blame (concept drift)")
        return Recommendation(
            action="retrain",
            adjust=Adjustments(slice_weights=slice_weights, recent_data_weight=2.0),
            because="; ".join(reasons) + ": retrain on recent labeled traffic with more weight there",
        )
    return Recommendation(action="none", because="the change does not point at a training-plan change yet")
