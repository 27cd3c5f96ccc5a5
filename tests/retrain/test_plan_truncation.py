"""The truncation policy in a training plan: the champion's is kept, an insight's long-text advice changes it
once, traced to the insight."""

from __future__ import annotations

import pytest

from insightloop.deploy import HEAD_SHARE, MAX_WINDOWS
from insightloop.detectors import Adjustments, Recommendation
from insightloop.retrain.plan import HyperParameters, plan_from_insights
from tests.synthetic import make_insight

LONG = "length_tokens=128+"

# champion's truncation, what the insights propose (max_length, truncation) in order,
# expected plan max_length and truncation, expected truncation adjustments (target, insight)
CASES: list[tuple[str, list[tuple[int | None, str | None]], int, str, list[tuple[str, str]]]] = [
    ("head", [], 128, "head", []),  # no insight: the champion's recipe
    ("head_tail", [], 128, "head_tail", []),  # a fine-tune keeps what the champion serves with
    ("head", [(256, "head_tail")], 256, "head_tail", [("head_tail", "i0")]),
    ("head", [(None, "head_tail")], 128, "head_tail", [("head_tail", "i0")]),  # at the length cap: the cut alone
    ("head_tail", [(256, "head_tail")], 256, "head_tail", []),  # already so: no adjustment to trace
    ("head", [(256, "head_tail"), (512, "head_tail")], 512, "head_tail", [("head_tail", "i0")]),  # traced once
    ("head", [(None, None)], 128, "head", []),  # advice that says nothing about the cut
    ("head_tail", [(None, "chunks")], 128, "chunks", [("chunks", "i0")]),  # at the position cap: read it whole
    ("head", [(256, "head_tail"), (None, "chunks")], 256, "chunks", [("head_tail", "i0"), ("chunks", "i1")]),
]


@pytest.mark.parametrize(("champion", "proposals", "max_length", "truncation", "traced"), CASES)
def test_the_plan_keeps_the_champions_truncation_unless_an_insight_changes_it(
    champion: str,
    proposals: list[tuple[int | None, str | None]],
    max_length: int,
    truncation: str,
    traced: list[tuple[str, str]],
) -> None:
    insights = [
        make_insight(
            f"i{n}",
            recommendation=Recommendation(
                action="retrain",
                adjust=Adjustments(max_length=length, truncation=cut, slice_weights={LONG: 2.0}),  # type: ignore[arg-type]
                because="errors concentrate in long texts",
            ),
        )
        for n, (length, cut) in enumerate(proposals)
    ]
    hyper = HyperParameters(max_length=128, truncation=champion)  # type: ignore[arg-type]
    plan = plan_from_insights(insights, "v1", "/models/v1", 128, "ref.jsonl", "prod.jsonl", hyper=hyper)
    assert plan.action == "fine_tune"
    assert (plan.hyper.max_length, plan.hyper.truncation) == (max_length, truncation)
    found = [(a.target, a.insight_id) for a in plan.adjustments if a.kind == "truncation"]
    assert found == traced
    cuts = [a for a in plan.adjustments if a.kind == "truncation"]
    assert [a.replaces for a in cuts] == [champion, *(a.target for a in cuts)][: len(cuts)], "each says what it changed"
    windows = {"head_tail": HEAD_SHARE, "chunks": float(MAX_WINDOWS)}
    assert all(a.value == windows[a.target] for a in cuts)
