"""The approvals page: server-rendered HTML, every user-controlled string escaped.

Scripts come from /approvals.js (no inline script), so the page can send a strict
Content-Security-Policy. Reports hold texts, so opening one needs the ``read`` right: a report link asks the
API (with the token typed into the page) for a signed link and follows it; the report is served sandboxed.
"""

from __future__ import annotations

from html import escape
from urllib.parse import quote

from insightloop.deploy import MetricComparison, Registry, VersionRecord

STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;max-width:1100px;color:#1d1d1f}
h1{font-size:1.5rem} h2{font-size:1.2rem;margin-top:2rem} h3{font-size:1rem;margin-bottom:.3rem}
table{border-collapse:collapse;margin:.5rem 0} td,th{border:1px solid #ccc;padding:.25rem .6rem;text-align:right}
th:first-child,td:first-child{text-align:left} .pass{color:#137333} .fail{color:#b3261e}
.card{border:1px solid #bbb;border-radius:8px;padding:1rem;margin:1rem 0}
.controls input{margin-right:.5rem} #status{margin-top:1rem;font-weight:bold}
.side{display:flex;gap:2rem;flex-wrap:wrap}
"""

SCRIPT = """
// The page reloads after a change; the outcome is kept for the reloaded page so it is not lost.
const STATUS_KEY = 'insightloop-approvals-status';
const saved = sessionStorage.getItem(STATUS_KEY);
if (saved) {
  sessionStorage.removeItem(STATUS_KEY);
  const outcome = JSON.parse(saved);
  const status = document.getElementById('status');
  status.textContent = outcome.text;
  status.dataset.result = outcome.result;
}
// A link cannot carry the bearer header: trade the token for a short-lived signed link, then follow it.
document.querySelectorAll('a[data-report]').forEach(function (link) {
  link.addEventListener('click', async function (event) {
    event.preventDefault();
    const status = document.getElementById('status');
    const token = document.getElementById('token').value;
    if (!token) { status.textContent = 'Enter a token with the read right to open reports.'; return; }
    const response = await fetch('/api/links?path=' + encodeURIComponent(link.dataset.report),
      {headers: {'Authorization': 'Bearer ' + token}});
    const result = await response.json().catch(function () { return {}; });
    if (!response.ok) {
      status.textContent = 'report: ' + (result.error || response.statusText) + ' (HTTP ' + response.status + ')';
      status.dataset.result = 'error';
      return;
    }
    location.assign(result.url);
  });
});
document.querySelectorAll('button[data-action]').forEach(function (button) {
  button.addEventListener('click', async function () {
    const card = button.closest('.card');
    const version = card.dataset.version;
    const status = document.getElementById('status');
    const token = document.getElementById('token').value;
    const body = {by: document.getElementById('by').value, note: card.querySelector('.note').value};
    if (!token || !body.by) { status.textContent = 'Enter your name and token first.'; return; }
    const url = '/api/models/' + encodeURIComponent(version) + '/' + button.dataset.action;
    const response = await fetch(url, {method: 'POST', body: JSON.stringify(body),
      headers: {'Authorization': 'Bearer ' + token, 'Content-Type': 'application/json'}});
    const result = await response.json().catch(function () { return {}; });
    status.textContent = response.ok
      ? version + ': ' + button.dataset.action + ' done'
      : version + ': ' + (result.error || response.statusText) + ' (HTTP ' + response.status + ')';
    status.dataset.result = response.ok ? 'ok' : 'error';
    if (response.ok) {
      sessionStorage.setItem(STATUS_KEY, JSON.stringify({text: status.textContent, result: 'ok'}));
      setTimeout(function () { location.reload(); }, 800);
    }
  });
});
"""


def _number(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def _metrics_table(champion: VersionRecord | None, candidate: VersionRecord) -> str:
    keys = sorted(set(candidate.metrics) | set(champion.metrics if champion else {}))
    rows = "".join(
        f"<tr><td>{escape(k)}</td><td>{_number(champion.metrics.get(k) if champion else None)}</td>"
        f"<td>{_number(candidate.metrics.get(k))}</td></tr>"
        for k in keys
    )
    head = (
        f"<tr><th>metric</th><th>champion {escape(champion.version) if champion else '(none)'}</th>"
        f"<th>candidate {escape(candidate.version)}</th></tr>"
    )
    return f"<h3>Training metrics</h3><table>{head}{rows}</table>"


def _comparison_rows(rows: list[MetricComparison]) -> str:
    return "".join(
        f"<tr><td>{escape(r.metric)}</td><td>{_number(r.champion)}</td><td>{_number(r.candidate)}</td>"
        f"<td>{_number(r.delta)}</td><td>[{_number(r.ci_low)}, {_number(r.ci_high)}]</td>"
        f"<td>{'' if r.n is None else r.n}</td></tr>"
        for r in rows
    )


def _evaluation(candidate: VersionRecord) -> str:
    if candidate.evaluation is None:
        return "<p>No champion/challenger evaluation was recorded for this version.</p>"
    parts = []
    head = "<tr><th>metric</th><th>champion</th><th>candidate</th><th>Δ</th><th>95% CI of Δ</th><th>n</th></tr>"
    for section in candidate.evaluation.sections:
        link = ""
        if section.report:
            href = f"/files/{quote(candidate.version)}/{quote(section.report)}"
            link = f' <a href="{escape(href)}" data-report="{escape(href)}">report</a>'
        parts.append(
            f"<h3>{escape(section.name)}{link}</h3><table>{head}{_comparison_rows(section.rows)}"
            f"{_comparison_rows(section.per_class)}</table>"
        )
    return "".join(parts)


def _gate(candidate: VersionRecord) -> str:
    if candidate.gate is None:
        return "<p>Gate: not evaluated.</p>"
    verdict = '<span class="pass">passed</span>' if candidate.gate.passed else '<span class="fail">failed</span>'
    reasons = "".join(f"<li>{escape(reason)}</li>" for reason in candidate.gate.reasons)
    return f"<p>Gate: {verdict}</p><ul>{reasons}</ul>"


def _experiments(candidate: VersionRecord) -> str:
    tests = candidate.lineage.experiments
    if not tests:
        return ""
    items = "".join(
        f'<li class="{"pass" if t.supported else "fail"}" data-experiment="{escape(t.kind)}">'
        f"{escape(t.describe())}</li>"
        for t in tests
    )
    chosen = candidate.lineage.chosen_variant or "planned"
    return (
        "<h3>Each adjustment tested by experiment (the same job with it left out)</h3>"
        f"<ul>{items}</ul><p>This candidate is the {escape(chosen)} variant.</p>"
    )


def _insights(candidate: VersionRecord) -> str:
    if not candidate.insights:
        return "<p>No insight is recorded as the cause of this candidate.</p>"
    items = "".join(
        f"<li><b>{escape(i.severity)}</b> {escape(i.kind)}: {escape(i.summary)}</li>" for i in candidate.insights
    )
    return f"<h3>Why this candidate exists</h3><ul>{items}</ul>"


def _card(champion: VersionRecord | None, candidate: VersionRecord) -> str:
    return (
        f'<div class="card" data-version="{escape(candidate.version)}">'
        f"<h2>Candidate {escape(candidate.version)} (from {escape(candidate.parent or candidate.base_model)})</h2>"
        f"{_insights(candidate)}{_experiments(candidate)}{_gate(candidate)}"
        f'<div class="side"><div>{_metrics_table(champion, candidate)}</div></div>'
        f"{_evaluation(candidate)}"
        f'<p class="controls"><input class="note" placeholder="note (optional)" size="50">'
        f'<button data-action="approve">Approve</button> <button data-action="reject">Reject</button></p>'
        f"</div>"
    )


def render_approvals(registry: Registry) -> str:
    """The whole approvals page."""
    production = registry.production()
    champion = registry.get(production) if production else None
    pending = registry.pending_candidates()
    cards = "".join(_card(champion, c) for c in pending) or "<p>No candidate is waiting for approval.</p>"
    serving = escape(production) if production else "nothing yet"
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>insightloop approvals</title>"
        f"<style>{STYLE}</style></head><body>"
        "<p><a href='/'>← console</a></p>"
        f"<h1>insightloop — candidates waiting for approval</h1><p>Serving now: <b>{serving}</b>.</p>"
        "<p><label>Your name <input id='by' autocomplete='username'></label> "
        "<label>Token <input id='token' type='password' autocomplete='current-password'></label></p>"
        f"{cards}<div id='status' role='status'></div>"
        "<script src='/approvals.js'></script></body></html>"
    )
