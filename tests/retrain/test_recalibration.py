"""The prior correction's bias shift, fitted to recent labels: it recovers a known shift and beats the prior
ratio when the model's probabilities are not calibrated."""

from __future__ import annotations

import numpy as np
import pytest

from insightloop.deploy import EvaluationSection, MetricComparison
from insightloop.retrain.evaluate import RECENT, REFERENCE, REFERENCE_AT_MIX, GateSettings, decide, resample_to_mix
from insightloop.retrain.job import fitted_bias_shift


def sample(n: int, shift: list[float], temperature: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Log-probabilities a model reports (its logits / ``temperature``: > 1 is overconfident) and labels drawn
    from the true posteriors, softmax(logits + ``shift``)."""
    rng = np.random.default_rng(seed)
    k = len(shift)
    logits = rng.normal(0.0, 1.5, size=(n, k))
    true = np.exp(logits + np.array(shift))
    true /= true.sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(k, p=row) for row in true], dtype=np.int64)
    reported = logits * temperature
    reported -= np.log(np.exp(reported).sum(axis=1, keepdims=True))
    return reported, labels


def nll(log_probs: np.ndarray, labels: np.ndarray, shift: np.ndarray) -> float:
    z = log_probs + shift
    z -= np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-z[np.arange(len(labels)), labels].mean())


@pytest.mark.parametrize("shift", [[0.0, 1.0], [0.8, -0.4, -0.4], [-1.2, 0.0, 0.6, 0.6]])
def test_a_known_shift_of_a_calibrated_model_is_recovered(shift: list[float]) -> None:
    log_probs, labels = sample(6000, shift, temperature=1.0, seed=len(shift))
    fitted = fitted_bias_shift(log_probs, labels, np.zeros(len(shift)))
    expected = np.array(shift) - np.mean(shift)
    assert np.allclose(fitted, expected, atol=0.12), (fitted, expected)


def test_on_an_overconfident_model_the_fitted_shift_fits_better_than_the_prior_ratio() -> None:
    log_probs, labels = sample(4000, [0.0, 1.2], temperature=3.0, seed=7)
    counts = np.bincount(labels, minlength=2) + 1.0
    ratio = np.log((counts / counts.sum()) / 0.5)  # what the prior ratio alone would shift by
    fitted = fitted_bias_shift(log_probs, labels, ratio)
    assert nll(log_probs, labels, fitted) < nll(log_probs, labels, ratio) - 0.01
    predicted = (log_probs + fitted).argmax(axis=1)
    by_ratio = (log_probs + ratio).argmax(axis=1)
    assert (predicted == labels).mean() >= (by_ratio == labels).mean()


# labels, target mix, expected class counts of the subsample
MIX_CASES: list[tuple[list[str], dict[str, float], dict[str, int]]] = [
    (["a", "b"] * 50, {"a": 0.85, "b": 0.15}, {"a": 50, "b": 9}),  # all of the class the mix wants most
    (["a", "b"] * 50, {"a": 0.5, "b": 0.5}, {"a": 50, "b": 50}),  # the same mix: every row
    (["a"] * 90 + ["b"] * 10, {"a": 0.5, "b": 0.5}, {"a": 10, "b": 10}),
    (["a", "b", "c"] * 20, {"a": 0.6, "b": 0.4}, {"a": 20, "b": 13}),  # a class the mix lacks is left out
    (["a"] * 10, {"b": 1.0}, {}),
]


@pytest.mark.parametrize(("labels", "mix", "expected"), MIX_CASES)
def test_the_reference_is_resampled_to_the_mix_a_correction_aims_at(
    labels: list[str], mix: dict[str, float], expected: dict[str, int]
) -> None:
    kept = resample_to_mix(labels, mix, seed=3)
    counts = {c: sum(labels[i] == c for i in kept) for c in {labels[i] for i in kept}}
    assert counts == expected
    assert kept == sorted(set(kept)), "without replacement, in the rows' order"
    assert resample_to_mix(labels, mix, seed=3) == kept, "the same seed, the same rows"


def test_the_gate_judges_a_recalibration_at_the_current_mix_not_the_old_one() -> None:
    def section(name: str, champion: float, candidate: float) -> EvaluationSection:
        row = MetricComparison(
            metric="accuracy",
            champion=champion,
            candidate=candidate,
            delta=candidate - champion,
            ci_low=candidate - champion - 0.02,
            ci_high=candidate - champion + 0.02,
            n=100,
        )
        return EvaluationSection(name=name, rows=[row])

    recent = section(RECENT, 0.70, 0.85)
    old_mix = section(REFERENCE, 0.77, 0.49)  # the old mix loses: what a prior correction is for
    verdict = decide([old_mix, section(REFERENCE_AT_MIX, 0.70, 0.80), recent], GateSettings())
    assert verdict.passed and REFERENCE_AT_MIX in verdict.reasons[1], verdict.reasons
    refused = decide([old_mix, section(REFERENCE_AT_MIX, 0.80, 0.70), recent], GateSettings())
    assert not refused.passed and "beyond the allowed loss" in refused.reasons[1]
    assert not decide([old_mix, recent], GateSettings()).passed, "a fine-tune is still judged on the old reference"
