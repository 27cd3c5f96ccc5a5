"""Input and output drift: text descriptors, embeddings, and the model's own predictions."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, ClassVar

from insightloop.detectors.advice import (
    class_shifts,
    describe_descriptor_moves,
    describe_slice,
    descriptor_shifts,
    diagnose,
    farthest_examples,
    recommend,
    slice_findings,
)
from insightloop.detectors.base import Detector, Measurement, log_p
from insightloop.detectors.descriptor_stats import P_VALUE_METHODS, descriptor_test
from insightloop.detectors.descriptors import DESCRIPTOR_NAMES
from insightloop.detectors.embedding_stats import embedding_state, embedding_test
from insightloop.detectors.insight import Evidence, InsightKind, Recommendation
from insightloop.detectors.prediction_stats import prediction_test
from insightloop.detectors.window import Window

if TYPE_CHECKING:
    from insightloop.detectors.profile import ReferenceProfile


def _metrics(**values: float | None) -> dict[str, float]:
    return {k: round(float(v), 6) for k, v in values.items() if v is not None and math.isfinite(v)}


class DescriptorDrift(Detector):
    """Drift of simple text descriptors, one Evidently column-drift test per descriptor.

    Descriptors per text: length in tokens (as the model saw it) and in words, share of words
    outside the reference vocabulary, share of non-letter characters, share of uppercase letters.
    Each runs through Evidently's column drift test ``method`` (what ``ValueDrift`` computes); the
    statistic is ``-log10`` of the Bonferroni-combined p-value. Cheap, and it says in words what
    moved; prefer :class:`EmbeddingDrift` to catch a change of topic at equal length and vocabulary,
    and :class:`PredictionDrift` when only the model's outputs matter.

    Parameters
    ----------
    method : str, default "ks"
        Evidently numerical drift test returning a p-value: one of ``ks``, ``cramer_von_mises``,
        ``mannw``, ``t_test``, ``es``.
    descriptors : tuple of str, default all
        Which descriptors to test (see :data:`DESCRIPTOR_NAMES`).
    threshold, critical_factor
        See :class:`Detector`.

    Examples
    --------
    >>> from insightloop.detectors import DescriptorDrift
    >>> detector = DescriptorDrift(method="ks")
    >>> DescriptorDrift(**detector.get_params()).method
    'ks'
    >>> DescriptorDrift(descriptors=("length_tokens", "colour"))
    Traceback (most recent call last):
    ...
    ValueError: unknown descriptors: ['colour']
    """

    name: ClassVar[str] = "descriptors"
    kind: ClassVar[InsightKind] = "text_drift"

    def __init__(
        self,
        method: str = "ks",
        descriptors: tuple[str, ...] = DESCRIPTOR_NAMES,
        *,
        threshold: float | None = None,
        critical_factor: float = 2.0,
    ) -> None:
        super().__init__(threshold=threshold, critical_factor=critical_factor)
        if method not in P_VALUE_METHODS:
            raise ValueError(f"method must be one of {P_VALUE_METHODS}, got {method!r}")
        descriptors = tuple(descriptors)
        unknown = [d for d in descriptors if d not in DESCRIPTOR_NAMES]
        if unknown:
            raise ValueError(f"unknown descriptors: {unknown}")
        if not descriptors:
            raise ValueError("descriptors must name at least one descriptor")
        self.method = method
        self.descriptors = descriptors

    def measure(self, reference: ReferenceProfile, current: Window) -> Measurement:
        if len(current) < 2:
            return Measurement.not_applicable(self.name, "fewer than two rows", len(current))
        test = descriptor_test(reference, current, self.method, self.descriptors)
        return Measurement(
            detector=self.name,
            statistic=log_p(test.p_value),
            p_value=test.p_value,
            n_current=len(current),
            metrics=_metrics(**{f"{k}_mean": v for k, v in test.current_mean.items()}),
        )

    def explain(
        self, reference: ReferenceProfile, current: Window, measurement: Measurement
    ) -> tuple[Evidence, str, Recommendation]:
        test = descriptor_test(reference, current, self.method, self.descriptors)
        diagnosis = diagnose(reference, current)
        level = 10 ** -self.threshold_for(reference)
        shifts = descriptor_shifts(test, level)
        slices = slice_findings(diagnosis, focus="share")
        evidence = Evidence(
            descriptors=shifts,
            slices=slices,
            metrics=_metrics(
                **{f"{s.name}_reference_mean": s.reference_mean for s in shifts},
                **{f"{s.name}_current_mean": s.current_mean for s in shifts},
            ),
            examples=farthest_examples(reference, current),
        )
        moves = describe_descriptor_moves(shifts) or "the descriptor distributions changed"
        where = f"; traffic moved towards {describe_slice(slices[0])}" if slices else ""
        summary = f"Text descriptors drifted (p={measurement.p_value:.1e}): {moves}{where}."
        return evidence, summary, recommend(reference, diagnosis, quality_focus=False)


class EmbeddingDrift(Detector):
    """Drift of the pooled embeddings: MMD with random Fourier features in a whitened PCA space.

    The scorer's projected embeddings are reduced further to ``n_components`` whitened principal
    components fitted on the reference, mapped to ``n_features`` random Fourier features of an RBF
    kernel (bandwidth: median heuristic on the reference), and the squared distance between the mean
    feature vectors (a linear-time MMD²) is tested against its null distribution (a moment-matched
    gamma from the reference feature covariance). Cost is linear in window size; the reference side is
    fitted once per profile. Examples in the evidence are the current rows with the largest MMD
    witness, i.e. the new kind of traffic. Prefer :class:`DescriptorDrift` for a change people can
    name (length, new words); this one also catches a change of topic at equal length.

    Parameters
    ----------
    n_components : int, default 16
        Principal components kept (fewer if the embeddings have fewer dimensions).
    n_features : int, default 256
        Random Fourier features.
    bandwidth : float, optional
        RBF kernel bandwidth in whitened units; default: median pairwise distance on the reference.
    threshold, critical_factor
        See :class:`Detector`.

    Examples
    --------
    >>> from insightloop.detectors import EmbeddingDrift
    >>> EmbeddingDrift(n_components=8).clone(n_features=128).get_params()["n_features"]
    128
    >>> EmbeddingDrift(n_components=0)
    Traceback (most recent call last):
    ...
    ValueError: n_components must be at least 1
    """

    name: ClassVar[str] = "embeddings"
    kind: ClassVar[InsightKind] = "embedding_drift"

    def __init__(
        self,
        n_components: int = 16,
        n_features: int = 256,
        bandwidth: float | None = None,
        *,
        threshold: float | None = None,
        critical_factor: float = 2.0,
    ) -> None:
        super().__init__(threshold=threshold, critical_factor=critical_factor)
        if n_components < 1:
            raise ValueError("n_components must be at least 1")
        if n_features < 8:
            raise ValueError("n_features must be at least 8")
        if bandwidth is not None and not (math.isfinite(bandwidth) and bandwidth > 0):
            raise ValueError("bandwidth must be a positive number or None")
        self.n_components = n_components
        self.n_features = n_features
        self.bandwidth = bandwidth

    def prepare(self, reference: ReferenceProfile) -> None:
        embedding_state(reference, self.n_components, self.n_features, self.bandwidth)

    def measure(self, reference: ReferenceProfile, current: Window) -> Measurement:
        if len(current) < 2:
            return Measurement.not_applicable(self.name, "fewer than two rows", len(current))
        test = embedding_test(reference, current, self.n_components, self.n_features, self.bandwidth)
        if test is None:
            return Measurement.not_applicable(self.name, "embeddings missing or without variance", len(current))
        return Measurement(
            detector=self.name,
            statistic=log_p(test.p_value),
            p_value=test.p_value,
            n_current=len(current),
            metrics=_metrics(mmd2=test.mmd2, mmd2_excess=test.excess, residual_excess=test.residual_excess),
        )

    def explain(
        self, reference: ReferenceProfile, current: Window, measurement: Measurement
    ) -> tuple[Evidence, str, Recommendation]:
        test = embedding_test(reference, current, self.n_components, self.n_features, self.bandwidth)
        assert test is not None  # measure() returned an applicable measurement
        diagnosis = diagnose(reference, current)
        shifts = descriptor_shifts(diagnosis.descriptors, 0.01)
        slices = slice_findings(diagnosis, focus="share")
        evidence = Evidence(
            descriptors=shifts,
            slices=slices,
            classes=class_shifts(reference, current, diagnosis.predictions),
            metrics=_metrics(
                mmd2=test.mmd2,
                mmd2_excess=test.excess,
                residual_mmd2=test.residual_mmd2,
                residual_excess=test.residual_excess,
                residual_p_value=test.residual_p_value,
            ),
            examples=farthest_examples(reference, current),
        )
        cause = (
            "mostly explained by the new class mix"
            if test.explained_by_class_mix
            else "beyond what the class mix explains"
        )
        moves = describe_descriptor_moves(shifts)
        extra = f"; {moves}" if moves else ""
        where = f"; traffic moved towards {describe_slice(slices[0])}" if slices else ""
        summary = (
            f"Embeddings drifted (MMD {test.excess:.1f}× its no-drift level, p={measurement.p_value:.1e}), "
            f"{cause}{extra}{where}."
        )
        return evidence, summary, recommend(reference, diagnosis, quality_focus=False)


class PredictionDrift(Detector):
    """Black-box shift detection on the model's softmax outputs (Rabanser et al., "Failing Loudly", 2019).

    Tests the predicted-label mix (chi-square test of homogeneity), the confidence distribution
    (Kolmogorov-Smirnov) and each class's score distribution (KS; one column for two classes), and
    combines them with Bonferroni, as BBSD does; the statistic is ``-log10`` of the combined p-value.
    It watches exactly what the model does with its inputs and needs no labels; when it fires alone
    (inputs stable) the evidence usually shows a prior shift, which recalibration fixes. Prefer
    :class:`EmbeddingDrift` to see input changes the model is (still) blind to.

    Parameters
    ----------
    threshold, critical_factor
        See :class:`Detector`.

    Examples
    --------
    >>> from insightloop.detectors import PredictionDrift
    >>> PredictionDrift(critical_factor=3.0).get_params()
    {'threshold': None, 'critical_factor': 3.0}
    """

    name: ClassVar[str] = "predictions"
    kind: ClassVar[InsightKind] = "prediction_drift"

    def __init__(self, *, threshold: float | None = None, critical_factor: float = 2.0) -> None:
        super().__init__(threshold=threshold, critical_factor=critical_factor)

    def measure(self, reference: ReferenceProfile, current: Window) -> Measurement:
        if len(current) < 2:
            return Measurement.not_applicable(self.name, "fewer than two rows", len(current))
        if current.class_names != reference.class_names:
            return Measurement.not_applicable(self.name, "class names differ from the reference", len(current))
        test = prediction_test(reference, current)
        return Measurement(
            detector=self.name,
            statistic=log_p(test.p_value),
            p_value=test.p_value,
            n_current=len(current),
            metrics=_metrics(mean_confidence=test.current_confidence, label_p_value=test.label_p_value),
        )

    def explain(
        self, reference: ReferenceProfile, current: Window, measurement: Measurement
    ) -> tuple[Evidence, str, Recommendation]:
        test = prediction_test(reference, current)
        diagnosis = diagnose(reference, current)
        classes = class_shifts(reference, current, test)
        evidence = Evidence(
            descriptors=descriptor_shifts(diagnosis.descriptors, 0.01),
            slices=slice_findings(diagnosis, focus="share"),
            classes=classes,
            metrics=_metrics(
                reference_mean_confidence=test.reference_confidence,
                current_mean_confidence=test.current_confidence,
                **{f"p_{k}": v for k, v in test.p_values.items()},
            ),
            examples=farthest_examples(reference, current),
        )
        strongest = min(test.p_values, key=lambda k: test.p_values[k])
        if strongest == "predicted_labels":
            moved = max(classes, key=lambda c: abs(c.current_share - c.reference_share))
            what = (
                f"'{moved.name}' is predicted for {moved.current_share:.0%} of texts "
                f"(reference {moved.reference_share:.0%})"
            )
        elif strongest == "confidence":
            what = f"mean confidence {test.reference_confidence:.2f} → {test.current_confidence:.2f}"
        else:
            name = strongest.removeprefix("score[").removesuffix("]")
            j = reference.class_names.index(name)
            what = (
                f"the scores for '{name}' shifted (mean {reference.window.probabilities[:, j].mean():.2f} → "
                f"{current.probabilities[:, j].mean():.2f})"
            )
        summary = f"Predictions drifted (p={measurement.p_value:.1e}): {what}."
        return evidence, summary, recommend(reference, diagnosis, quality_focus=False)
