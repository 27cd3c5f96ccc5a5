"""The pages of a token classifier's insight: what moved, per entity type and slice, with examples.

Evidently has no entity-level report, so the insight's page is the project's own: one self-contained file
(no scripts, no external assets) that a person opens from the console or the insight's ``report`` path.
Where Evidently does apply, on each text's entity descriptors (words, entities, density, token confidence,
share of new names, entities per type, line shape), its data-drift report is written beside the page and
linked from it.

Evidently is imported lazily (it takes seconds to import): importing this module is cheap.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from insightloop.detectors._evidently import ensure_evidently
from insightloop.detectors.entity_checks import densities, unseen_flags
from insightloop.detectors.entity_window import EntityProfile, EntityWindow
from insightloop.detectors.insight import Insight
from insightloop.detectors.registry import CheckResult
from insightloop.detectors.reports import save_report

log = logging.getLogger(__name__)

_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2rem;max-width:70rem}table{border-collapse:collapse;margin:1rem 0}"
    "td,th{border:1px solid #ccc;padding:.3rem .6rem;text-align:right}td:first-child,th:first-child{text-align:left}"
    ".fired{background:#fde2e1}"
)


def _number(value: float | None, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def entity_frame(profile: EntityProfile, window: EntityWindow) -> Any:
    """A pandas DataFrame of each text's entity descriptors, the columns Evidently's drift report compares."""
    import pandas as pd  # type: ignore[import-untyped]

    found = np.array([len(e) for e in window.entities], dtype=np.float64)
    per_text = np.split(unseen_flags(profile, window), np.cumsum(found.astype(int))[:-1])
    unseen = np.array([float(flags.mean()) if len(flags) else 0.0 for flags in per_text])
    frame = pd.DataFrame(
        {
            "words": window.word_counts.astype(np.float64),
            "entities": found,
            "entity_density": densities(window),
            "token_confidence": window.mean_confidence,
            "new_name_share": unseen,
            "line_shape": window.shapes,
        }
    )
    for kind in profile.entity_types:
        frame[f"entities_{kind}"] = [float(sum(e.type == kind for e in entities)) for entities in window.entities]
    return frame


def entity_drift_report(profile: EntityProfile, window: EntityWindow) -> Any:
    """Evidently's data-drift report of :func:`entity_frame`, the reference window against ``window``."""
    ensure_evidently()
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    reference, current = entity_frame(profile, profile.window), entity_frame(profile, window)
    numeric = [c for c in reference.columns if c != "line_shape"]
    definition = DataDefinition(numerical_columns=numeric, categorical_columns=["line_shape"])
    methods: dict[str, Any] = {c: "ks" for c in numeric}
    methods["line_shape"] = "chisquare"
    report = Report([DataDriftPreset(columns=[*numeric, "line_shape"], per_column_method=methods)])
    with np.errstate(all="ignore"):  # Evidently correlates columns; a constant one divides by zero
        return report.run(
            Dataset.from_pandas(current, data_definition=definition),
            Dataset.from_pandas(reference, data_definition=definition),
        )


def entity_report_html(insight: Insight, result: CheckResult, links: Sequence[tuple[str, str]] = ()) -> str:
    """The page of ``insight`` (with every detector's statistic of the check that raised it); ``links`` are
    (title, relative address) of the reports written beside it."""
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(insight.id)}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>Entity insight {escape(insight.id)}</h1>",
        f"<p><b>{escape(insight.severity)}</b> on model {escape(insight.model_version)}, "
        f"{insight.window.count} texts. {escape(insight.summary)}</p>",
        *(f"<p><a href='{escape(href)}'>{escape(title)}</a></p>" for title, href in links),
        "<h2>Detectors</h2><table><tr><th>detector</th><th>statistic</th><th>threshold</th><th>p-value</th></tr>",
    ]
    for r in result.results:
        fired = " class='fired'" if r.severity is not None else ""
        p_value = "" if r.p_value is None else f"{r.p_value:.2g}"
        note = "" if r.applicable else f" (not applicable: {escape(r.reason)})"
        parts.append(
            f"<tr{fired}><td>{escape(r.detector)}{note}</td><td>{r.statistic:.2f}</td>"
            f"<td>{r.threshold:.2f}</td><td>{p_value}</td></tr>"
        )
    parts.append("</table>")
    classes = insight.evidence.classes
    if classes:
        parts.append(
            "<h2>Entity types</h2><table><tr><th>type</th><th>reference share</th><th>current share</th>"
            "<th>reference F1</th><th>current F1</th></tr>"
        )
        for c in classes:
            parts.append(
                f"<tr><td>{escape(c.name)}</td><td>{c.reference_share:.1%}</td><td>{c.current_share:.1%}</td>"
                f"<td>{_number(c.reference_recall)}</td><td>{_number(c.current_recall)}</td></tr>"
            )
        parts.append("</table>")
    if insight.evidence.slices:
        parts.append(
            "<h2>Slices</h2><table><tr><th>slice</th><th>texts</th><th>reference share</th><th>current share</th>"
            "<th>estimated error, reference</th><th>estimated error, current</th></tr>"
        )
        for f in insight.evidence.slices:
            parts.append(
                f"<tr><td>{escape(f.key)}</td><td>{f.count}</td><td>{(f.share_reference or 0):.1%}</td>"
                f"<td>{f.share_current:.1%}</td><td>{_number(f.reference_value)}</td>"
                f"<td>{_number(f.current_value)}</td></tr>"
            )
        parts.append("</table>")
    if insight.evidence.examples:
        parts.append("<h2>Examples</h2><table><tr><th>id</th><th>text</th></tr>")
        for e in insight.evidence.examples:
            parts.append(f"<tr><td>{escape(e.id)}</td><td style='text-align:left'>{escape(e.text)}</td></tr>")
        parts.append("</table>")
    parts.append(
        f"<p>Recommendation: {escape(insight.recommendation.action)}: {escape(insight.recommendation.because)}</p>"
    )
    parts.append("</body></html>\n")
    return "".join(parts)


def write_entity_report(
    insight: Insight,
    result: CheckResult,
    path: Path,
    profile: EntityProfile | None = None,
    window: EntityWindow | None = None,
) -> list[Path]:
    """Write the insight's page to ``path`` (its folder is made) and, given the profile and window, Evidently's
    drift report of the entity descriptors beside it (``<stem>-drift.html`` and ``.json``); the page first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if profile is not None and window is not None:
        try:
            written = list(save_report(entity_drift_report(profile, window), path.parent, f"{path.stem}-drift"))
        except Exception:  # Evidently's failures are not typed; the page itself still tells the story
            log.exception("could not write the Evidently drift report of %s", insight.id)
    links = [("Evidently data-drift report of the entity descriptors", p.name) for p in written if p.suffix == ".html"]
    path.write_text(entity_report_html(insight, result, links), encoding="utf-8")
    return [path, *written]
