"""Hysteresis for ongoing conditions: one drift is one insight, updated while it lasts, not a page per check."""

from __future__ import annotations

import math
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from insightloop.detectors.insight import Insight, Severity, severity_rank, utc_now

TRACKER_SCHEMA_VERSION = 1


class Transition(StrEnum):
    """What one observation did to a condition."""

    NEW = "new"  #: the condition was raised by this observation: publish a new insight
    ONGOING = "ongoing"  #: still raised: update the insight already published (same id)
    CLEARED = "cleared"  #: fell below the clear level: the condition is over
    QUIET = "quiet"  #: not raised, and still below the raise level: nothing to say


class Condition(BaseModel):
    """A raised condition: since when, which insight stands for it, how strong it has been."""

    model_config = ConfigDict(extra="forbid")

    key: str
    raised_at: datetime
    last_seen_at: datetime
    insight_id: str | None = None
    last_ratio: float
    peak_ratio: float
    checks: int = 1
    below_clear: int = 0
    #: The severity of the latest insight that fed this condition (None: fed by statistics alone).
    severity: Severity | None = None
    #: The highest severity published for this condition (None: nothing published yet, e.g. while ``info``).
    published_severity: Severity | None = None


class TrackerState(BaseModel):
    """Everything a tracker holds; the monitor persists it (``model_dump_json``) and restores it."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = TRACKER_SCHEMA_VERSION
    raise_level: float
    clear_level: float
    clear_after: int
    conditions: dict[str, Condition] = Field(default_factory=dict)


class ConditionTracker:
    """Raise a condition when ``statistic / threshold >= raise_level``; clear it only below ``clear_level``.

    Parameters
    ----------
    raise_level : float, default 1.0
        Ratio of statistic to threshold at which a quiet condition is raised (1.0: the detector's alarm level).
    clear_level : float, default 0.8
        Ratio below which a raised condition counts as cleared; must not exceed ``raise_level``.
        The gap between the two levels is what stops a statistic hovering near the threshold from flapping.
    clear_after : int, default 1
        Consecutive observations below ``clear_level`` needed to clear.

    Examples
    --------
    >>> tracker = ConditionTracker(raise_level=1.0, clear_level=0.8)
    >>> [tracker.observe("embeddings", s, 2.0).value for s in (1.0, 2.4, 1.8, 1.7, 1.5, 2.1)]
    ['quiet', 'new', 'ongoing', 'ongoing', 'cleared', 'new']
    """

    def __init__(self, raise_level: float = 1.0, clear_level: float = 0.8, clear_after: int = 1) -> None:
        if not (math.isfinite(raise_level) and raise_level > 0):
            raise ValueError("raise_level must be a positive number")
        if not (math.isfinite(clear_level) and 0 < clear_level <= raise_level):
            raise ValueError("clear_level must be positive and at most raise_level")
        if clear_after < 1:
            raise ValueError("clear_after must be at least 1")
        self.raise_level = raise_level
        self.clear_level = clear_level
        self.clear_after = clear_after
        self._conditions: dict[str, Condition] = {}

    def get_params(self) -> dict[str, float | int]:
        """The constructor arguments."""
        return {"raise_level": self.raise_level, "clear_level": self.clear_level, "clear_after": self.clear_after}

    @property
    def active(self) -> dict[str, Condition]:
        """The raised conditions by key (copies)."""
        return {key: c.model_copy() for key, c in self._conditions.items()}

    def observe(
        self,
        key: str,
        statistic: float,
        threshold: float,
        at: datetime | None = None,
        insight_id: str | None = None,
    ) -> Transition:
        """Record one check of condition ``key`` and say what changed.

        ``insight_id`` is remembered when the condition is raised (``NEW``) and kept while it is ongoing,
        so the caller can re-publish updates under the first insight's id (see :meth:`follow`).
        """
        at = at or utc_now()
        ratio = statistic / threshold if threshold > 0 else (math.inf if statistic > 0 else 0.0)
        ratio = ratio if math.isfinite(ratio) else 1e300
        current = self._conditions.get(key)
        if current is None:
            if ratio >= self.raise_level:
                self._conditions[key] = Condition(
                    key=key,
                    raised_at=at,
                    last_seen_at=at,
                    insight_id=insight_id,
                    last_ratio=ratio,
                    peak_ratio=ratio,
                )
                return Transition.NEW
            return Transition.QUIET
        current.last_seen_at = at
        current.last_ratio = ratio
        current.checks += 1
        if ratio < self.clear_level:
            current.below_clear += 1
            if current.below_clear >= self.clear_after:
                del self._conditions[key]
                return Transition.CLEARED
            return Transition.ONGOING
        current.below_clear = 0
        current.peak_ratio = max(current.peak_ratio, ratio)
        if current.insight_id is None:
            current.insight_id = insight_id
        return Transition.ONGOING

    def follow(
        self, insight: Insight, key: str | None = None, at: datetime | None = None
    ) -> tuple[Transition, Insight]:
        """Observe an insight's statistic and return it under the id of the condition it belongs to.

        A ``NEW`` condition keeps the insight's own id; an ``ONGOING`` one returns the insight re-labelled
        with the id of the insight that raised it, so consumers update one record instead of adding pages.
        """
        key = key or insight.detector
        transition = self.observe(key, insight.statistic, insight.threshold, at=at, insight_id=insight.id)
        condition = self._conditions.get(key)
        if condition is not None:
            condition.severity = insight.severity
        if condition is not None and condition.insight_id and condition.insight_id != insight.id:
            insight = insight.model_copy(update={"id": condition.insight_id})
        return transition, insight

    def escalates(self, key: str, severity: Severity, min_severity: Severity) -> bool:
        """Whether an insight of ``severity`` for raised condition ``key`` is to be published now.

        True when it is at least ``min_severity`` and more severe than anything published for the condition:
        a condition raised as ``info`` (a certain but cheap change, not published) is published, under the
        same id, once its cost makes it a warning; a warning that becomes critical is published again.
        """
        condition = self._conditions.get(key)
        if condition is None or severity_rank(severity) < severity_rank(min_severity):
            return False
        published = condition.published_severity
        return published is None or severity_rank(severity) > severity_rank(published)

    def mark_published(self, key: str, severity: Severity) -> None:
        """Remember that an insight of ``severity`` was published for raised condition ``key``."""
        condition = self._conditions.get(key)
        if condition is not None:
            condition.published_severity = severity

    def state(self) -> TrackerState:
        """A serialisable snapshot of the tracker."""
        return TrackerState(
            raise_level=self.raise_level,
            clear_level=self.clear_level,
            clear_after=self.clear_after,
            conditions=self.active,
        )

    @classmethod
    def from_state(cls, state: TrackerState) -> ConditionTracker:
        """Rebuild a tracker from :meth:`state`."""
        tracker = cls(state.raise_level, state.clear_level, state.clear_after)
        tracker._conditions = {key: c.model_copy() for key, c in state.conditions.items()}
        return tracker
