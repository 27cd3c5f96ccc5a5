"""The detector interface: hyper-parameters in, ``check(reference, current) -> list[Insight]`` out."""

from __future__ import annotations

import inspect
import math
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar, Self

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from insightloop.detectors.calibration import reference_splits, tail_threshold, threshold_at_rate
from insightloop.detectors.cost import DEFAULT_SEVERITY_RULE, SeverityRule, accuracy_cost, severity_for_cost
from insightloop.detectors.insight import (
    Evidence,
    Insight,
    InsightKind,
    Recommendation,
    Severity,
    insight_id,
    utc_now,
)
from insightloop.detectors.window import Window

if TYPE_CHECKING:
    from insightloop.detectors.profile import ReferenceProfile

#: ``-log10`` p-values are capped here so a statistic is always a finite JSON number.
MAX_STATISTIC = 300.0
#: No calibrated threshold goes below ``-log10(0.2)``: a p-value above 0.2 never raises an alarm.
MIN_THRESHOLD = -math.log10(0.2)


def log_p(p_value: float) -> float:
    """``-log10(p)``, finite and non-negative."""
    if not math.isfinite(p_value) or p_value >= 1.0:
        return 0.0
    return min(MAX_STATISTIC, -math.log10(max(p_value, 1e-300)))


def bonferroni(p_values: list[float]) -> float:
    """The smallest p-value times the number of tests, at most 1 (1 when there are no tests)."""
    finite = [p for p in p_values if math.isfinite(p)]
    return min(1.0, min(finite) * len(finite)) if finite else 1.0


class Measurement(BaseModel):
    """What a detector computed on one window: its statistic, p-value where one exists, and named metrics.

    ``applicable`` is False when the detector cannot say anything about this window (too few labels,
    no calibrator in the profile); ``material`` is False when the change is significant but smaller than
    the detector's minimum effect (then it does not fire either).
    """

    model_config = ConfigDict(extra="forbid")

    detector: str
    statistic: float = Field(ge=0.0)
    p_value: float | None = None
    applicable: bool = True
    material: bool = True
    reason: str = ""
    n_current: int = 0
    metrics: dict[str, float] = Field(default_factory=dict)

    @classmethod
    def not_applicable(cls, detector: str, reason: str, n_current: int = 0) -> Measurement:
        """A measurement that says the detector had nothing to go on."""
        return cls(detector=detector, statistic=0.0, applicable=False, reason=reason, n_current=n_current)


class Detector(ABC):
    """Base of every detector.

    A detector is configured once from hyper-parameters (validated with ``ValueError`` and kept under
    the same attribute names, so ``type(d)(**d.get_params())`` clones it) and then used through:

    * :meth:`measure` / :meth:`statistic` — the statistic (a ``-log10`` p-value, larger = stronger
      evidence of change) of a current window against a reference profile;
    * :meth:`calibrate` — the threshold that reference-vs-reference splits exceed with the configured
      false-alarm rate (done once, when the profile is built);
    * :meth:`check` — pure: no I/O; returns the insights (none when nothing changed).

    Whether a detector *fires* is statistics (its statistic against the threshold its share of the
    false-alarm budget sets); how *severe* its insight is, is cost: the window's expected accuracy cost
    decides ``info`` / ``warning`` / ``critical`` (:func:`~insightloop.detectors.cost.severity_for_cost`).

    Parameters
    ----------
    threshold : float, optional
        Fixed alarm level for the statistic; ``None`` (default) uses the level calibrated in the profile.
    critical_factor : float, default 2.0
        Formerly the multiple of the threshold from which an insight was ``critical``. Severity now follows
        the accuracy cost (:class:`~insightloop.detectors.cost.SeverityRule`); the parameter is validated
        and kept so that saved parameter sets and clones still load, and has no other effect.
    """

    name: ClassVar[str]
    kind: ClassVar[InsightKind]
    requires_labels: ClassVar[bool] = False

    def __init__(self, *, threshold: float | None = None, critical_factor: float = 2.0) -> None:
        if threshold is not None and not (math.isfinite(threshold) and threshold > 0):
            raise ValueError("threshold must be a positive number or None")
        if not (math.isfinite(critical_factor) and critical_factor >= 1.0):
            raise ValueError("critical_factor must be at least 1")
        self.threshold = threshold
        self.critical_factor = critical_factor

    # -- parameters ------------------------------------------------------------------------------
    def get_params(self) -> dict[str, Any]:
        """The constructor arguments, read back from the attributes of the same names."""
        signature = inspect.signature(type(self).__init__)
        return {name: getattr(self, name) for name in signature.parameters if name != "self"}

    def clone(self, **changes: Any) -> Self:
        """A new detector with the same parameters, except ``changes``."""
        return type(self)(**{**self.get_params(), **changes})

    def calibration_key(self) -> dict[str, Any]:
        """The parameters a calibrated threshold depends on (all but ``threshold`` and ``critical_factor``)."""
        return {
            k: (list(v) if isinstance(v, tuple) else v)
            for k, v in self.get_params().items()
            if k not in ("threshold", "critical_factor")
        }

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"

    # -- measuring -------------------------------------------------------------------------------
    @abstractmethod
    def measure(self, reference: ReferenceProfile, current: Window) -> Measurement:
        """The statistic of ``current`` against ``reference`` (with p-value and metrics)."""

    def statistic(self, reference: ReferenceProfile, current: Window) -> float:
        """The statistic alone (``-log10`` of the p-value; 0 when not applicable)."""
        return self.measure(reference, current).statistic

    def p_value(self, reference: ReferenceProfile, current: Window) -> float | None:
        """The p-value of the detector's test, where it has one."""
        return self.measure(reference, current).p_value

    def prepare(self, reference: ReferenceProfile) -> None:  # noqa: B027 - optional hook
        """Warm the reference-side caches (fitted reductions etc.) so the first check is as fast as the next."""

    def null_statistic(self, reference: ReferenceProfile, current: Window) -> float:
        """The statistic on a reference-vs-reference split (what :meth:`calibrate` collects)."""
        measurement = self.measure(reference, current)
        return measurement.statistic if measurement.applicable else math.nan

    def calibrate(
        self,
        reference: ReferenceProfile,
        false_alarm_rate: float = 0.001,
        n_rounds: int = 200,
        seed: int = 0,
        *,
        window_size: int | None = None,
    ) -> float:
        """The threshold that random reference-vs-reference splits exceed with ``false_alarm_rate``.

        Each round splits the reference window at random into a current part of ``window_size`` rows
        (default: the profile's window size, at most half the reference) and a reference part, and
        measures the statistic; the threshold is the ``1 - false_alarm_rate`` quantile of those values
        (extrapolated along an exponential tail when the rate is below ``5 / n_rounds``). Falls back to
        the nominal ``-log10(false_alarm_rate)`` when the detector is not applicable to the reference.
        """
        size = window_size or reference.window_size
        values = [
            self.null_statistic(reference.subset(ref_idx), reference.window.take(cur_idx))
            for ref_idx, cur_idx in reference_splits(len(reference.window), size, n_rounds, seed)
        ]
        return threshold_from_null(values, false_alarm_rate)

    # -- checking --------------------------------------------------------------------------------
    def threshold_for(self, reference: ReferenceProfile, false_alarm_rate: float | None = None) -> float:
        """The alarm level: the configured ``threshold``, else the one calibrated in the profile.

        With ``false_alarm_rate`` (this detector's share of a monitor's budget per check, see
        :class:`~insightloop.detectors.calibration.AlarmBudget`) the level is derived for that rate from the
        profile's null statistics, never below the nominal ``-log10(false_alarm_rate)``
        (:func:`~insightloop.detectors.calibration.threshold_at_rate`).
        """
        if self.threshold is not None:
            return self.threshold
        stored = reference.threshold_for(self)
        if false_alarm_rate is None:
            return stored
        record = reference.thresholds[self.name]
        return threshold_at_rate(
            record.null_statistics,
            false_alarm_rate,
            stored_value=record.value,
            stored_rate=record.false_alarm_rate,
            floor=MIN_THRESHOLD,
        )

    def fires(self, measurement: Measurement, threshold: float) -> bool:
        """Whether a measurement calls for an insight."""
        return measurement.applicable and measurement.material and measurement.statistic >= threshold

    def check(
        self,
        reference: ReferenceProfile,
        current: Window,
        model_version: str,
        *,
        false_alarm_rate: float | None = None,
        rule: SeverityRule = DEFAULT_SEVERITY_RULE,
    ) -> list[Insight]:
        """Insights about ``current`` against ``reference``; empty when nothing changed. Pure (no I/O)."""
        require_same_classes(reference.class_names, current.class_names)
        measurement = self.measure(reference, current)
        threshold = self.threshold_for(reference, false_alarm_rate)
        return self.insights_for(reference, current, measurement, model_version, threshold=threshold, rule=rule)

    def insights_for(
        self,
        reference: ReferenceProfile,
        current: Window,
        measurement: Measurement,
        model_version: str,
        *,
        threshold: float | None = None,
        rule: SeverityRule = DEFAULT_SEVERITY_RULE,
    ) -> list[Insight]:
        """The insights a measurement (from :meth:`measure`) calls for, at ``threshold`` (default: the
        profile's), with the severity its accuracy cost calls for under ``rule``."""
        if not measurement.applicable:
            return []
        threshold = self.threshold_for(reference) if threshold is None else threshold
        if not self.fires(measurement, threshold):
            return []
        evidence, summary, recommendation = self.explain(reference, current, measurement)
        cost = accuracy_cost(reference, current, rule)
        severity: Severity = severity_for_cost(cost, rule)
        summary = _with_cost(summary, cost.describe() if cost else None, severity, rule)
        return [
            Insight(
                id=insight_id(self.name, model_version, current.ids),
                detector=self.name,
                kind=self.kind,
                severity=severity,
                window=current.span(),
                statistic=round(measurement.statistic, 6),
                threshold=round(threshold, 6),
                p_value=measurement.p_value,
                evidence=evidence,
                summary=summary,
                recommendation=recommendation,
                cost=cost,
                created_at=utc_now(),
                model_version=model_version,
            )
        ]

    @abstractmethod
    def explain(
        self, reference: ReferenceProfile, current: Window, measurement: Measurement
    ) -> tuple[Evidence, str, Recommendation]:
        """Evidence, one human sentence and a recommendation for a measurement that fired."""


def _with_cost(summary: str, cost: str | None, severity: Severity, rule: SeverityRule) -> str:
    """The summary with the cost that set its severity."""
    if cost is None:
        return f"{summary} Accuracy cost unknown (no labels and no label-free estimate): reported as a warning."
    if severity == "info":
        return f"{summary} Certain, but the {cost} is below {rule.min_accuracy_cost:g}: for information only."
    return f"{summary} The {cost}."


def require_same_classes(reference: tuple[str, ...], current: tuple[str, ...]) -> None:
    """A window is checked only against the profile of the model that scored it: same classes, same order."""
    if reference != current:
        raise ValueError(f"the window's classes {list(current)} differ from the profile's {list(reference)}")


def threshold_from_null(values: list[float], false_alarm_rate: float) -> float:
    """:func:`tail_threshold` of the finite values, or the nominal level when too few are finite."""
    finite = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
    if finite.size < 10:
        return -math.log10(false_alarm_rate)
    return max(tail_threshold(finite, false_alarm_rate), MIN_THRESHOLD)
