"""The console's rendering on a real store and registry, and the SVG helpers."""

from __future__ import annotations

import json
import re
from pathlib import Path

from insightloop.daemon.console import gather, render_console
from insightloop.daemon.state import CheckPoint, DetectorPoint, JobRecord, StateStore
from insightloop.daemon.svg import Box, Edge, Node, Series, line_chart, lineage_graph
from insightloop.deploy import GateVerdict, InsightRef, Registry, VersionRecord, VersionStatus
from insightloop.deploy.events import utc_now
from insightloop.detectors import Evidence, Example
from tests.synthetic import make_insight

PAYLOAD = "<script>alert(1)</script>"


def _version(registry: Registry, status: VersionStatus, parent: str | None, **fields: object) -> str:
    record = VersionRecord(
        version="pending", created_at=utc_now(), status=status, parent=parent, base_model="tiny", labels=["a", "b"]
    ).model_copy(update=fields)
    return registry.create_version(lambda path: (path / "weights.bin").write_bytes(b"x"), record, by="test").version


def _world(tmp_path: Path) -> tuple[Registry, StateStore]:
    registry = Registry(tmp_path / "registry")
    v1 = _version(registry, VersionStatus.PRODUCTION, None)
    (tmp_path / "registry" / "PRODUCTION").write_text(v1)
    insight = make_insight(
        "ins-7",
        summary=f"kitchen texts {PAYLOAD} doubled",
        evidence=Evidence(
            metrics={"accuracy_drop": 0.21},
            examples=[Example(id="x1", text=f"rusty pan {PAYLOAD}", score=0.9)],
        ),
        model_version=v1,
    )
    candidate = _version(
        registry,
        VersionStatus.CANDIDATE,
        v1,
        insights=[InsightRef(id="ins-7", kind="embedding_drift", severity="warning", summary="kitchen doubled")],
        gate=GateVerdict(passed=True),
    )
    store = StateStore(tmp_path / "state")
    store.upsert_insight(
        insight.id, insight.detector, insight.kind, insight.severity, "new", json.loads(insight.model_dump_json())
    )
    store.save_job(JobRecord(id="job-1", state="succeeded", insight_id="ins-7", version=candidate, gate_passed=True))
    store.save_job(JobRecord(id="job-2", state="running", insight_id="ins-7"))
    for n in range(3):
        store.add_check_history(
            CheckPoint(
                at=1000.0 + n * 60,
                model_version=v1,
                labeled_accuracy=0.9 - n * 0.1,
                estimated_accuracy=0.88,
                detectors=[DetectorPoint(detector="embeddings", statistic=0.5 + n, threshold=1.5)],
                texts_scored=150,
                dead_letters=n,
            )
        )
    return registry, store


def test_examples_only_with_the_read_right_and_everything_escaped(tmp_path: Path) -> None:
    registry, store = _world(tmp_path)
    hidden = render_console(gather(registry, store, may_read=False, now=2000.0))
    assert "1 examples hidden: needs the read right" in hidden and "rusty pan" not in hidden
    shown = render_console(gather(registry, store, may_read=True, now=2000.0))
    assert "rusty pan &lt;script&gt;alert(1)&lt;/script&gt;" in shown and "examples hidden" not in shown
    for page in (hidden, shown):
        assert PAYLOAD not in page
        assert "kitchen texts &lt;script&gt;" in page


def test_insight_links_its_jobs_and_candidate_and_now_shows_the_waiting(tmp_path: Path) -> None:
    registry, store = _world(tmp_path)
    page = render_console(gather(registry, store, may_read=False, now=2000.0))
    insight = page[page.index('data-insight="ins-7"') :]
    assert 'href="/api/jobs#job-1"' in insight and 'href="/api/models/v0002"' in insight
    assert "gate passed" in insight
    now = page[page.index('id="now"') : page.index('id="insights"')]
    assert "v0002" in now and 'href="/approvals"' in now and "job-2" in now and "v0001" in now


def test_lineage_edge_names_insight_plan_and_gate(tmp_path: Path) -> None:
    registry, store = _world(tmp_path)
    page = render_console(gather(registry, store, may_read=False, now=2000.0))
    versions = page[page.index('id="versions"') : page.index('id="trends"')]
    assert 'data-parent="v0001" data-child="v0002"' in versions
    assert "insight: kitchen doubled" in versions and "gate passed" in versions


def test_trend_charts_have_a_point_per_check(tmp_path: Path) -> None:
    registry, store = _world(tmp_path)
    page = render_console(gather(registry, store, may_read=False, now=2000.0))
    trends = page[page.index('id="trends"') :]
    # accuracy: labeled + estimated; embeddings statistic; texts; dead letters: 3 points each.
    assert trends.count("<circle") == 5 * 3
    assert "embeddings: statistic against threshold" in trends and "no data yet" not in trends
    # Outside the history window, the charts say so.
    empty = render_console(gather(registry, store, may_read=False, now=10_000_000.0))
    assert "no data yet" in empty[empty.index('id="trends"') :]


def test_chart_points_scale_into_the_box() -> None:
    box = Box(width=200, height=100, left=10, right=10, top=10, bottom=10)
    svg = line_chart("t", [Series("s", [(0, 0), (5, 0.5), (10, 1)])], box=box)
    points = [tuple(map(float, p)) for p in re.findall(r'<circle cx="([\d.]+)" cy="([\d.]+)"', svg)]
    assert points == [(10.0, 90.0), (100.0, 50.0), (190.0, 10.0)]
    assert box.scale(3, 7, (3, 3), (7, 7)) == (100.0, 50.0)  # one point: the middle


def test_empty_chart_says_no_data_yet_and_labels_are_escaped() -> None:
    assert "no data yet" in line_chart("empty", [Series("s", [])])
    svg = line_chart(PAYLOAD, [Series(PAYLOAD, [(1, 1)])])
    assert PAYLOAD not in svg and "&lt;script&gt;" in svg


def test_lineage_graph_indents_children() -> None:
    svg = lineage_graph(
        [Node("v1", "v1", "/a"), Node("v2", "v2", "/b")], [Edge("v1", "v2", ("insight: x",), "/b#evaluation")]
    )
    xs = [float(x) for x in re.findall(r'<rect class="node [^"]*" x="([\d.]+)"', svg)]
    assert xs[1] > xs[0] and 'href="/b#evaluation"' in svg
    assert "no data yet" in lineage_graph([], [])


def test_a_broken_registry_entry_is_shown_and_the_rest_still_renders(tmp_path: Path) -> None:
    registry, store = _world(tmp_path)
    broken = registry.root / "v0099"
    broken.mkdir()
    (broken / "version.json").write_text("")  # what a power loss mid-write left
    page = render_console(gather(registry, store, may_read=False, now=2000.0))
    assert "registry entry skipped, fix or remove it: v0099/version.json" in page
    assert "v0001" in page, "the readable versions are still listed"


def test_an_entity_insight_heads_its_type_column_with_f1(tmp_path: Path) -> None:
    from insightloop.detectors import ClassShift

    registry, store = _world(tmp_path)
    shift = ClassShift(name="ORG", reference_share=0.1, current_share=0.6, reference_recall=0.9, current_recall=0.3)
    for index, quality in enumerate(("recall", "F1")):
        insight = make_insight(
            f"ins-entity-{index}",
            evidence=Evidence(classes=[shift.model_copy(update={"quality_metric": quality})]),
            model_version=registry.production() or "",
        )
        store.upsert_insight(
            insight.id, insight.detector, insight.kind, insight.severity, "new", json.loads(insight.model_dump_json())
        )
    page = render_console(gather(registry, store, may_read=True, now=2000.0))
    assert page.count("<th>F1 before</th>") == 1 and page.count("<th>recall before</th>") == 1
