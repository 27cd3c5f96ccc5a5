"""The HTML page of a token classifier's insight: what moved, per entity type and slice, with examples.

Evidently has no entity-level report, so this page is the project's own: one self-contained file (no
scripts, no external assets) that a person opens from the console or the insight's ``report`` path.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from insightloop.detectors.insight import Insight
from insightloop.detectors.registry import CheckResult

_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2rem;max-width:70rem}table{border-collapse:collapse;margin:1rem 0}"
    "td,th{border:1px solid #ccc;padding:.3rem .6rem;text-align:right}td:first-child,th:first-child{text-align:left}"
    ".fired{background:#fde2e1}"
)


def _number(value: float | None, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def entity_report_html(insight: Insight, result: CheckResult) -> str:
    """The page of ``insight`` (with every detector's statistic of the check that raised it)."""
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(insight.id)}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>Entity insight {escape(insight.id)}</h1>",
        f"<p><b>{escape(insight.severity)}</b> on model {escape(insight.model_version)}, "
        f"{insight.window.count} texts. {escape(insight.summary)}</p>",
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


def write_entity_report(insight: Insight, result: CheckResult, path: Path) -> Path:
    """Write :func:`entity_report_html` to ``path`` (its folder is made); return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(entity_report_html(insight, result), encoding="utf-8")
    return path
