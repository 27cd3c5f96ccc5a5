"""The console at ``/``: what the loop sees now, its insights, how versions descend, and trends over time.

Server-rendered from typed inputs (:class:`ConsoleData`), every stored string escaped; the charts and the lineage
graph are inline SVG drawn here (:mod:`insightloop.daemon.svg`), so the page loads no script and no external
asset. Example texts are shown only to a caller with the ``read`` right; anyone else is told they are hidden.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from html import escape
from urllib.parse import quote

from pydantic import ValidationError

from insightloop.daemon.state import CheckPoint, JobRecord, StateStore
from insightloop.daemon.svg import Edge, Node, Series, line_chart, lineage_graph
from insightloop.deploy import Registry, VersionRecord
from insightloop.detectors import LOSS_METRICS, Condition, Insight, TrackerState

TRACKER_KEY = "tracker"  # the monitor's key of its tracker state in the store's conditions
RUNNING_STATES = ("pending", "running")
HISTORY_WINDOW_S = 7 * 86_400.0

STYLE = """
body{font-family:system-ui,sans-serif;margin:0;color:#1d1d1f}
header{background:#263238;color:#fff;padding:.6rem 2rem;display:flex;gap:1.5rem;align-items:baseline}
header a{color:#cfd8dc;text-decoration:none} header a:hover{color:#fff} header b{font-size:1.1rem}
main{padding:0 2rem 2rem;max-width:1200px}
h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd} h3{font-size:1rem;margin:.8rem 0 .3rem}
table{border-collapse:collapse;margin:.4rem 0} td,th{border:1px solid #ccc;padding:.2rem .5rem;text-align:left}
.critical{color:#b3261e;font-weight:bold} .warning{color:#b26a00;font-weight:bold} .info{color:#555}
.pass{color:#137333} .fail{color:#b3261e} .empty{color:#777;font-style:italic}
details{border:1px solid #ccc;border-radius:6px;margin:.4rem 0;padding:.3rem .7rem}
summary{cursor:pointer} .when{color:#666;font-size:.85rem}
.charts{display:flex;flex-wrap:wrap;gap:1rem} figure.chart{margin:0;border:1px solid #eee;padding:.4rem}
figcaption{font-weight:bold;font-size:.9rem} .tick{font-size:10px;fill:#555}
.legend{font-size:.8rem;display:flex;gap:.8rem;flex-wrap:wrap}
svg.lineage rect.node{fill:#eceff1;stroke:#607d8b} svg.lineage rect.production{fill:#c8e6c9;stroke:#2e7d32}
svg.lineage rect.candidate{fill:#fff3e0;stroke:#ef6c00} svg.lineage rect.rejected{fill:#ffebee;stroke:#c62828}
.node-label{font-size:12px;font-weight:bold} .edge-label{font-size:11px;fill:#333}
.edge-link{font-size:11px;fill:#1565c0;text-decoration:underline}
"""


@dataclass(frozen=True)
class StoredInsight:
    """An insight as the store keeps it: the typed insight and its lifecycle state."""

    insight: Insight
    state: str
    updated_at: str


@dataclass(frozen=True)
class ConsoleData:
    """Everything the console shows, read once per request."""

    production: str | None
    versions: Sequence[VersionRecord]
    insights: Sequence[StoredInsight]
    jobs: Sequence[JobRecord]
    tracker: TrackerState | None
    history: Sequence[CheckPoint]
    may_read: bool = False
    problems: Sequence[str] = field(default_factory=tuple)


def stored_insights(rows: Sequence[dict[str, object]]) -> tuple[list[StoredInsight], list[str]]:
    """Typed insights from the store's rows, and a line for each row that no longer parses."""
    found, problems = [], []
    for row in rows:
        payload = {k: v for k, v in row.items() if k not in ("state", "updated_at", "redacted")}
        try:
            insight = Insight.model_validate(payload)
        except ValidationError as exc:
            problems.append(f"insight {row.get('id')!s}: unreadable ({exc.error_count()} errors)")
            continue
        found.append(StoredInsight(insight, str(row.get("state", "")), str(row.get("updated_at", ""))))
    return found, problems


def gather(registry: Registry, store: StateStore | None, may_read: bool, now: float) -> ConsoleData:
    """Read what the console shows from the registry and the state store."""
    insights: list[StoredInsight] = []
    problems: list[str] = []
    jobs: list[JobRecord] = []
    tracker: TrackerState | None = None
    history: list[CheckPoint] = []
    if store is not None:
        insights, problems = stored_insights(store.insights(limit=200))
        jobs = store.jobs(limit=200)
        saved = store.conditions().get(TRACKER_KEY)
        if saved:
            try:
                tracker = TrackerState.model_validate(saved)
            except ValidationError:
                problems.append("the monitor's tracker state is unreadable")
        history = store.check_history(since=now - HISTORY_WINDOW_S)
    # Skipped registry entries are shown, not hidden: a person has to fix or remove the file.
    problems += [f"registry entry skipped, fix or remove it: {p.describe()}" for p in registry.problems()]
    return ConsoleData(
        production=registry.production(),
        versions=registry.records(),
        insights=insights,
        jobs=jobs,
        tracker=tracker,
        history=history,
        may_read=may_read,
        problems=problems,
    )


# -- small pieces ---------------------------------------------------------------------------------


def _e(value: object) -> str:
    return escape(str(value))


def _model_href(version: str) -> str:
    return f"/api/models/{quote(version)}"


def _job_href(job: JobRecord) -> str:
    return f"/api/jobs#{quote(job.id)}"


def _number(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _when(value: datetime | str) -> str:
    text = value.isoformat(timespec="seconds") if isinstance(value, datetime) else value[:19]
    return f'<span class="when">{_e(text)}</span>'


def _severity(severity: str) -> str:
    return f'<span class="{_e(severity)}">{_e(severity)}</span>'


def expected_cost(insight: Insight) -> float | None:
    """The accuracy the insight's evidence says is lost (the largest of the loss metrics it carries)."""
    losses = [insight.evidence.metrics[k] for k in LOSS_METRICS if k in insight.evidence.metrics]
    return max(losses) if losses else None


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A table of already-escaped cells."""
    header = "".join(f"<th>{h}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{header}</tr>{body}</table>"


def _jobs_of(insight_id: str, jobs: Sequence[JobRecord]) -> list[JobRecord]:
    return [j for j in jobs if j.insight_id == insight_id]


def _job_links(job: JobRecord) -> str:
    gate = "" if job.gate_passed is None else (" gate passed" if job.gate_passed else " gate failed")
    version = (
        f' → candidate <a class="candidate-link" href="{_e(_model_href(job.version))}">{_e(job.version)}</a>'
        if job.version
        else ""
    )
    plan = f" ({_e(job.plan_action)})" if job.plan_action else ""
    return (
        f'<a class="job-link" href="{_e(_job_href(job))}">job {_e(job.id)}</a> {_e(job.state)}{plan}{version}{_e(gate)}'
    )


# -- Now ------------------------------------------------------------------------------------------


def _condition_row(condition: Condition, by_id: dict[str, StoredInsight]) -> list[str]:
    found = by_id.get(condition.insight_id or "")
    insight = found.insight if found else None
    return [
        _e(condition.key),
        _severity(insight.severity) if insight else "–",
        _number(expected_cost(insight) if insight else None),
        f"{condition.last_ratio:.2f} (peak {condition.peak_ratio:.2f})",
        _when(condition.raised_at),
        _e(insight.summary) if insight else "–",
    ]


def render_now(data: ConsoleData) -> str:
    """The serving version, the active conditions, the candidates waiting and the jobs running."""
    serving = _e(data.production) if data.production else "nothing yet"
    parts = [f'<p>Serving now: <b id="serving">{serving}</b>.</p>', "<h3>Active conditions</h3>"]
    conditions = list(data.tracker.conditions.values()) if data.tracker else []
    if conditions:
        by_id = {s.insight.id: s for s in data.insights}
        parts.append(
            _table(
                ["condition", "severity", "expected accuracy cost", "statistic / threshold", "raised", "insight"],
                [_condition_row(c, by_id) for c in conditions],
            )
        )
    else:
        parts.append('<p class="empty">No condition is active.</p>')
    parts.append("<h3>Candidates waiting for approval</h3>")
    waiting = [v for v in data.versions if v.status == "candidate"]
    if waiting:
        rows = [
            [
                f'<a href="{_e(_model_href(v.version))}">{_e(v.version)}</a>',
                _e(v.parent or v.base_model),
                "; ".join(_e(i.summary) for i in v.insights) or "–",
                "–" if v.gate is None else ("passed" if v.gate.passed else "failed"),
                '<a class="approve-link" href="/approvals">approve or reject</a>',
            ]
            for v in waiting
        ]
        parts.append(_table(["candidate", "from", "insight", "gate", ""], rows))
    else:
        parts.append('<p class="empty">No candidate is waiting.</p>')
    parts.append("<h3>Running jobs</h3>")
    running = [j for j in data.jobs if j.state in RUNNING_STATES]
    if running:
        parts.append("<ul>" + "".join(f"<li>{_job_links(j)}: {_e(j.insight_summary or '')}</li>" for j in running))
        parts.append("</ul>")
    else:
        parts.append('<p class="empty">No job is running.</p>')
    return "".join(parts)


# -- Insights -------------------------------------------------------------------------------------


def _evidence(insight: Insight, may_read: bool) -> str:
    evidence = insight.evidence
    parts = []
    if evidence.descriptors:
        rows = [
            [
                _e(d.name),
                _number(d.reference_mean),
                _number(d.current_mean),
                f"{d.p_value:.1e}",
                "yes" if d.drifted else "",
            ]
            for d in evidence.descriptors
        ]
        parts.append("<h3>Descriptors</h3>" + _table(["descriptor", "reference mean", "now", "p", "moved"], rows))
    if evidence.slices:
        rows = [
            [
                _e(s.key),
                str(s.count),
                _number(s.share_reference),
                _number(s.share_current),
                _e(s.metric),
                _number(s.current_value),
                _number(s.lift, 2),
            ]
            for s in evidence.slices
        ]
        head = ["slice", "count", "share before", "share now", "metric", "value", "lift"]
        parts.append("<h3>Slices</h3>" + _table(head, rows))
    if evidence.classes:
        rows = [
            [
                _e(c.name),
                _number(c.reference_share),
                _number(c.current_share),
                _number(c.reference_recall),
                _number(c.current_recall),
            ]
            for c in evidence.classes
        ]
        quality = evidence.classes[0].quality_metric  # recall of a class, F1 of an entity type
        head = ["class", "share before", "share now", f"{quality} before", f"{quality} now"]
        parts.append("<h3>Classes</h3>" + _table(head, rows))
    if evidence.metrics:
        rows = [[_e(k), _number(v, 4)] for k, v in sorted(evidence.metrics.items())]
        parts.append("<h3>Metrics</h3>" + _table(["metric", "value"], rows))
    parts.append("<h3>Examples</h3>")
    if not evidence.examples:
        parts.append('<p class="empty">No example texts were kept.</p>')
    elif may_read:
        parts.append(
            '<ul class="examples">'
            + "".join(f"<li>{_e(x.text)} <span class='when'>({x.score:.3g})</span></li>" for x in evidence.examples)
            + "</ul>"
        )
    else:
        parts.append(f'<p class="examples-hidden">{len(evidence.examples)} examples hidden: needs the read right.</p>')
    return "".join(parts)


def _insight(stored: StoredInsight, jobs: Sequence[JobRecord], may_read: bool) -> str:
    insight = stored.insight
    caused = _jobs_of(insight.id, jobs)
    recommendation = insight.recommendation
    adjust = recommendation.adjust.model_dump(exclude_defaults=True)
    adjust_text = f" ({_e(adjust)})" if adjust else ""
    jobs_html = (
        "<ul>" + "".join(f"<li>{_job_links(j)}</li>" for j in caused) + "</ul>"
        if caused
        else '<p class="empty">No job was started for it.</p>'
    )
    return (
        f'<details class="insight" data-insight="{_e(insight.id)}"><summary>{_when(insight.created_at)} '
        f"{_severity(insight.severity)} <b>{_e(insight.kind)}</b> on {_e(insight.model_version)} "
        f"[{_e(stored.state)}]: {_e(insight.summary)}</summary>"
        f"<p>Detector {_e(insight.detector)}: statistic {insight.statistic:.4g} against threshold "
        f"{insight.threshold:.4g}; window of {insight.window.count} texts.</p>"
        f"{_evidence(insight, may_read)}"
        f"<h3>Recommendation</h3><p><b>{_e(recommendation.action)}</b>{adjust_text}: {_e(recommendation.because)}</p>"
        f"<h3>Jobs it caused</h3>{jobs_html}</details>"
    )


def render_insights(data: ConsoleData) -> str:
    """The timeline of insights, newest first, each opening to its evidence."""
    if not data.insights:
        return '<p class="empty">No insight has been raised yet.</p>'
    return "".join(_insight(s, data.jobs, data.may_read) for s in data.insights)


# -- Versions -------------------------------------------------------------------------------------


def _edge(record: VersionRecord, jobs: Sequence[JobRecord]) -> Edge | None:
    if record.parent is None:
        return None
    why = ", ".join(i.summary[:60] for i in record.insights) or "no insight recorded"
    job = next((j for j in jobs if j.version == record.version), None)
    plan = record.lineage.action if record.lineage.action != "unknown" else (job.plan_action if job else None)
    if record.gate is not None:
        verdict = "gate passed" if record.gate.passed else "gate failed"
    else:
        verdict = "gate not evaluated"
    href = f"{_model_href(record.version)}#evaluation" if record.evaluation is not None else None
    return Edge(record.parent, record.version, (f"insight: {why}", f"plan: {plan or '–'}", verdict), href)


def render_versions(data: ConsoleData) -> str:
    """The lineage graph: each version a node, each edge parent → child with its insight, plan and gate."""
    ordered = sorted(data.versions, key=lambda v: v.created_at)
    nodes = [Node(v.version, f"{v.version} {v.status}", _model_href(v.version), str(v.status)) for v in ordered]
    edges = [e for e in (_edge(v, data.jobs) for v in ordered) if e is not None]
    return lineage_graph(nodes, edges)


# -- Trends ---------------------------------------------------------------------------------------


def _per_version(history: Sequence[CheckPoint], name: str, value: str) -> list[Series]:
    versions = list(dict.fromkeys(p.model_version for p in history))
    found = []
    for version in versions:
        points = [(p.at, getattr(p, value)) for p in history if p.model_version == version]
        found.append(Series(f"{name} {version}", [(x, float(y)) for x, y in points if y is not None]))
    return found


def render_trends(data: ConsoleData) -> str:
    """Charts of the per-check history: accuracy, each detector against its threshold, texts, dead letters."""
    history = data.history
    charts = [
        line_chart(
            "Accuracy (labeled and estimated)",
            [
                *_per_version(history, "labeled", "labeled_accuracy"),
                *_per_version(history, "estimated", "estimated_accuracy"),
            ],
            y_floor=0.0,
            y_ceiling=1.0,
        )
    ]
    detectors = list(dict.fromkeys(d.detector for p in history for d in p.detectors))
    for detector in detectors:
        statistic, threshold = [], []
        for p in history:
            for d in p.detectors:
                if d.detector == detector:
                    statistic.append((p.at, d.statistic))
                    if d.threshold is not None:
                        threshold.append((p.at, d.threshold))
        charts.append(
            line_chart(
                f"{detector}: statistic against threshold",
                [Series("statistic", statistic), Series("threshold", threshold, dashed=True)],
                y_floor=0.0,
            )
        )
    if not detectors:
        charts.append(line_chart("Detector statistics", []))
    charts.append(line_chart("Texts scored per check", _per_version(history, "texts", "texts_scored"), y_floor=0.0))
    charts.append(
        line_chart("Dead letters per check", _per_version(history, "dead letters", "dead_letters"), y_floor=0.0)
    )
    return f'<div class="charts">{"".join(charts)}</div>'


# -- the page -------------------------------------------------------------------------------------

SECTIONS = (
    ("now", "Now", render_now),
    ("insights", "Insights", render_insights),
    ("versions", "Versions", render_versions),
    ("trends", "Trends", render_trends),
)


def render_console(data: ConsoleData) -> str:
    """The whole console page: a navigation bar and the four sections."""
    nav = "".join(f'<a href="#{key}">{title}</a>' for key, title, _ in SECTIONS)
    problems = "".join(f'<p class="fail">{_e(p)}</p>' for p in data.problems)
    reading = (
        "Showing example texts (read right)."
        if data.may_read
        else "Example texts are hidden: send a token with the read right to see them."
    )
    body = "".join(f'<section id="{key}"><h2>{title}</h2>{render(data)}</section>' for key, title, render in SECTIONS)
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>insightloop console</title>"
        f"<style>{STYLE}</style></head><body><header><b>insightloop</b>{nav}"
        '<a href="/approvals">Approvals</a><a href="/api/insights">API</a></header>'
        f'<main><p class="when">{reading}</p>{problems}{body}</main></body></html>'
    )
