"""The monitor's batched ingest: when a count-triggered check runs, which ids a sample keeps, and one store
transaction per poll that stores exactly what the three per-topic transactions stored."""

from __future__ import annotations

import math
import subprocess
import sys
from dataclasses import replace
from typing import Any

import pytest

from insightloop.daemon.ingest import in_sample
from insightloop.daemon.monitor import count_check_due, unchecked_since
from insightloop.daemon.state import LabelRow, PredictionRow, StateStore, TextRow

# new records, seconds since the previous check ended, check_every_records, min_check_interval_s, running,
# expected decision, what the reason names
CHECK_CASES: list[tuple[int, float, int, float, bool, bool, str]] = [
    (500, 60.0, 500, 5.0, False, True, "due"),
    (499, 60.0, 500, 5.0, False, False, "1 more records"),
    (0, math.inf, 500, 5.0, False, False, "500 more records"),
    (500, 4.9, 500, 5.0, False, False, "min_check_interval_s"),  # a fleet's rate: the interval caps the checks
    (10_000, 0.5, 500, 5.0, False, False, "min_check_interval_s"),
    (500, 5.0, 500, 5.0, False, True, "due"),  # exactly the interval
    (500, math.inf, 500, 5.0, False, True, "due"),  # the first check of a run
    (500, 0.0, 500, 0.0, False, True, "due"),  # 0: the count alone decides, as before
    (500, 60.0, 500, 5.0, True, False, "running"),
    (1, 0.0, 1, 0.0, True, False, "running"),
]


@pytest.mark.parametrize(("new", "since", "every", "interval", "running", "run", "reason"), CHECK_CASES)
def test_a_count_triggered_check_needs_the_records_and_the_interval(
    new: int, since: float, every: int, interval: float, running: bool, run: bool, reason: str
) -> None:
    decision = count_check_due(new, since, every, interval, running)
    assert decision.run is run
    assert reason in decision.reason


# scored_at of the window's rows, newest scored_at the previous check saw, expected start of the unseen rows
UNCHECKED_CASES: list[tuple[list[float], float | None, float | None]] = [
    ([1.0, 2.0, 3.0, 4.0], 2.0, math.nextafter(2.0, math.inf)),  # the rows after the previous check
    ([4.0, 1.0, 3.0], 2.0, math.nextafter(2.0, math.inf)),  # order does not matter
    ([3.0, 4.0], 1.0, math.nextafter(1.0, math.inf)),  # a backlog longer than the window: all of it is new
    ([1.0, 2.0, 3.0], None, 1.0),  # first check (or after a restart): the whole window is unseen
    ([1.0, 2.0], 5.0, 2.0),  # nothing new (an interval check): the newest row stands for the window
    ([1.0, 2.0], 2.0, 2.0),
    ([], None, None),
]


@pytest.mark.parametrize(("scored", "through", "expected"), UNCHECKED_CASES)
def test_an_insight_begins_with_the_rows_no_earlier_check_saw(
    scored: list[float], through: float | None, expected: float | None
) -> None:
    assert unchecked_since(scored, through) == expected


IDS = [f"review-{i}" for i in range(20_000)]


@pytest.mark.parametrize("rate", [0.01, 0.1, 0.5, 0.9])
def test_a_sample_keeps_about_its_share_of_the_ids(rate: float) -> None:
    kept = sum(in_sample(i, rate) for i in IDS)
    sd = math.sqrt(len(IDS) * rate * (1 - rate))
    assert abs(kept - rate * len(IDS)) < 5 * sd, (kept, rate)


def test_rate_one_keeps_every_id_and_a_higher_rate_keeps_what_a_lower_kept() -> None:
    assert all(in_sample(i, 1.0) for i in IDS)
    low = {i for i in IDS if in_sample(i, 0.1)}
    high = {i for i in IDS if in_sample(i, 0.3)}
    assert low and low < high, "raising the rate adds ids; it never swaps the ones already sampled"


def test_the_sample_is_the_same_in_every_process() -> None:
    # hash() is salted per process; the sample must not be (a restarted or second monitor keeps the same ids).
    script = (
        "from insightloop.daemon.ingest import in_sample; "
        "print(','.join(str(int(in_sample(f'review-{i}', 0.25))) for i in range(300)))"
    )
    runs = [
        subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, check=True, env={"PYTHONHASHSEED": seed}
        ).stdout.strip()
        for seed in ("1", "2")
    ]
    here = ",".join(str(int(in_sample(f"review-{i}", 0.25))) for i in range(300))
    assert runs[0] == runs[1] == here
    assert 0 < here.count("1") < 300


# -- one transaction per poll (on each state-store backend) ------------------------------------
def _text(i: str, text: str = "a text") -> TextRow:
    return TextRow(i, f"{text} {i}", None, {"shop": "s1"})


def _prediction(i: str, label: str = "positive") -> PredictionRow:
    return PredictionRow(i, "v1", label, {"negative": 0.25, "positive": 0.75}, [0.5, -1.25, 2.0], 7, "cpu/float32")


POLLS: list[tuple[list[TextRow], list[PredictionRow], list[LabelRow]]] = [
    # text and prediction together; a label for a text not seen yet (it waits)
    ([_text("a"), _text("b")], [_prediction("a"), _prediction("b")], [LabelRow("later", "negative")]),
    # a prediction before its text; a label joining a stored record; the waiting label's text arrives
    ([_text("later")], [_prediction("c")], [LabelRow("a", "negative")]),
    # the text after its prediction; a text sent twice (the last wins); a label in the same poll as its text
    ([_text("c"), _text("d", "first"), _text("d", "second")], [_prediction("later", "negative")], [LabelRow("d", "x")]),
    # a label again (the last wins), a label that waits, and a prediction that replaces an earlier one
    ([], [_prediction("a", "negative")], [LabelRow("a", "positive"), LabelRow("never", "positive")]),
]


def _prefixed(prefix: str, poll: tuple[list[TextRow], list[PredictionRow], list[LabelRow]]) -> Any:
    texts, predictions, labels = poll
    return (
        [replace(r, id=prefix + r.id) for r in texts],
        [replace(r, id=prefix + r.id) for r in predictions],
        [replace(r, id=prefix + r.id) for r in labels],
    )


def _rows(store: StateStore, prefix: str) -> tuple[list[Any], list[Any]]:
    """Records and waiting labels under ``prefix``, the prefix cut off (each path writes its own ids)."""
    with store.transaction() as conn:
        records = conn.execute(
            "SELECT id, ts, text, meta, model_version, predicted, scores, embedding, n_tokens, precision, label, "
            "received_at, scored_at, label_at FROM records WHERE id LIKE ? ORDER BY id",
            (prefix + "%",),
        ).fetchall()
        waiting = conn.execute(
            "SELECT id, label, label_at FROM waiting_labels WHERE id LIKE ? ORDER BY id", (prefix + "%",)
        ).fetchall()
    cut = len(prefix)
    return (
        [(r[0][cut:], *r[1:7], None if r[7] is None else bytes(r[7]), *r[8:]) for r in records],
        [(w[0][cut:], *w[1:]) for w in waiting],
    )


def test_one_transaction_per_poll_stores_what_three_did(state_store: StateStore) -> None:
    waiting_counts = []
    for n, poll in enumerate(POLLS):
        now = 1000.0 + n
        texts, predictions, labels = _prefixed("old-", poll)
        if texts:
            state_store.add_texts(texts, now)
        if predictions:
            state_store.add_predictions(predictions, now)
        old = state_store.add_labels(labels, now) if labels else 0
        new = state_store.add_polled(*_prefixed("new-", poll), now)
        waiting_counts.append((old, new))
    assert [old for old, _ in waiting_counts] == [new for _, new in waiting_counts]
    old_rows, new_rows = _rows(state_store, "old-"), _rows(state_store, "new-")
    assert new_rows == old_rows
    records, waiting = new_rows
    assert {r[0] for r in records} == {"a", "b", "c", "d", "later"}
    assert [w[0] for w in waiting] == ["never"]


def test_the_waiting_labels_stay_bounded_in_one_transaction(state_store: StateStore) -> None:
    labels = [LabelRow(f"l-{i}", "positive") for i in range(30)]
    assert state_store.add_polled([], [], labels, 1000.0, wait_max_rows=10) == 30
    assert state_store.count_waiting_labels() == 10
