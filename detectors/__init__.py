"""detectors: windows of scored text in, typed insights out (Evidently underneath).

A pure library (no Kafka, no HTTP, no metrics): build a :class:`ReferenceProfile` from a model version's
scored validation split at training time, then ``check_all(profile, window, model_version)`` (or one
detector's ``check``) on each production :class:`Window`. A :class:`ConditionTracker` turns repeated
checks into one ongoing condition; :func:`write_reports` writes the Evidently reports people open.
"""

from insightloop.detectors.base import Detector, Measurement
from insightloop.detectors.calibration import AlarmBudget, ConfidenceCalibrator, tail_threshold, threshold_at_rate
from insightloop.detectors.cost import DEFAULT_SEVERITY_RULE, SeverityRule, accuracy_cost, severity_for_cost
from insightloop.detectors.descriptors import DESCRIPTOR_NAMES, compute_descriptors, vocabulary_from_texts
from insightloop.detectors.drift import DescriptorDrift, EmbeddingDrift, PredictionDrift
from insightloop.detectors.entity_checks import (
    ENTITY_DETECTORS,
    EntityDetector,
    all_entity_detectors,
    calibrate_entity_profile,
    entity_check_step,
    fit_entity_calibrator,
)
from insightloop.detectors.entity_report import entity_report_html, write_entity_report
from insightloop.detectors.entity_window import EntityProfile, EntityWindow, WindowEntity, entity_key, line_shape
from insightloop.detectors.errors import DetectorError, DetectorPermanentError, DetectorTemporaryError
from insightloop.detectors.insight import (
    INSIGHT_SCHEMA_VERSION,
    AccuracyCost,
    Adjustments,
    ClassShift,
    DescriptorShift,
    Evidence,
    Example,
    Insight,
    InsightKind,
    Recommendation,
    Severity,
    SliceFinding,
    WindowSpan,
    severity_rank,
)
from insightloop.detectors.merge import LOSS_METRICS, merge_insights
from insightloop.detectors.metrics import macro_f1, macro_f1_batch
from insightloop.detectors.profile import (
    MIN_PROFILE_ROWS,
    CalibratedThreshold,
    ReferenceProfile,
    normalise_text,
    texts_without,
    training_overlap,
)
from insightloop.detectors.quality import EstimatedQualityDrop, LabeledQualityDrop
from insightloop.detectors.registry import DETECTORS, CheckResult, DetectorResult, all_detectors, check_all
from insightloop.detectors.reports import build_reports, drift_report, quality_report, save_report, write_reports
from insightloop.detectors.slicekey import SliceKey, SliceKeyError, SliceKeyText, meta_value_str
from insightloop.detectors.slices import SliceDegradation
from insightloop.detectors.step import (
    DetectorGauge,
    StepOutcome,
    check_step,
    detector_key,
    follow_conditions,
    traffic_key,
)
from insightloop.detectors.tracker import Condition, ConditionTracker, TrackerState, Transition
from insightloop.detectors.window import Window

__all__ = [
    "DEFAULT_SEVERITY_RULE",
    "DESCRIPTOR_NAMES",
    "DETECTORS",
    "ENTITY_DETECTORS",
    "INSIGHT_SCHEMA_VERSION",
    "LOSS_METRICS",
    "MIN_PROFILE_ROWS",
    "AccuracyCost",
    "Adjustments",
    "AlarmBudget",
    "CalibratedThreshold",
    "CheckResult",
    "ClassShift",
    "Condition",
    "ConditionTracker",
    "ConfidenceCalibrator",
    "DescriptorDrift",
    "DescriptorShift",
    "Detector",
    "DetectorError",
    "DetectorGauge",
    "DetectorPermanentError",
    "DetectorResult",
    "DetectorTemporaryError",
    "EmbeddingDrift",
    "EntityDetector",
    "EntityProfile",
    "EntityWindow",
    "EstimatedQualityDrop",
    "Evidence",
    "Example",
    "Insight",
    "InsightKind",
    "LabeledQualityDrop",
    "Measurement",
    "PredictionDrift",
    "Recommendation",
    "ReferenceProfile",
    "Severity",
    "SeverityRule",
    "SliceDegradation",
    "SliceFinding",
    "SliceKey",
    "SliceKeyError",
    "SliceKeyText",
    "StepOutcome",
    "TrackerState",
    "Transition",
    "Window",
    "WindowEntity",
    "WindowSpan",
    "accuracy_cost",
    "all_detectors",
    "all_entity_detectors",
    "build_reports",
    "calibrate_entity_profile",
    "check_all",
    "check_step",
    "compute_descriptors",
    "detector_key",
    "drift_report",
    "entity_check_step",
    "entity_key",
    "entity_report_html",
    "fit_entity_calibrator",
    "follow_conditions",
    "line_shape",
    "macro_f1",
    "macro_f1_batch",
    "merge_insights",
    "meta_value_str",
    "normalise_text",
    "quality_report",
    "save_report",
    "severity_for_cost",
    "severity_rank",
    "tail_threshold",
    "texts_without",
    "threshold_at_rate",
    "traffic_key",
    "training_overlap",
    "vocabulary_from_texts",
    "write_entity_report",
    "write_reports",
]
