"""The monitor states its false-alarm budget (what /readyz shows) and spends it on the detectors' thresholds."""

from __future__ import annotations

from pathlib import Path

import pytest

from insightloop.daemon.config import load_config
from insightloop.daemon.metrics import Metrics
from insightloop.daemon.monitor import Monitor
from insightloop.daemon.state import StateStore
from insightloop.detectors import all_detectors


@pytest.mark.parametrize(("budget", "every"), [(1_000_000, 100), (50_000, 500)])
def test_the_monitor_states_the_budget_it_spends(tmp_path: Path, budget: int, every: int) -> None:
    config = load_config(
        None,
        {
            "registry": {"path": str(tmp_path / "registry")},
            "state": {"dir": str(tmp_path / "state")},
            "monitor": {"false_alarm_budget": budget, "check_every_records": every, "min_accuracy_cost": 2.5},
        },
        environ={},
    )
    store = StateStore(config.state.dir)
    try:
        stated = Monitor(config, store, Metrics()).status()
    finally:
        store.close()
    detectors = len(all_detectors())
    assert stated["false_alarm_budget"]["texts"] == budget
    assert stated["false_alarm_budget"]["detectors"] == detectors
    assert stated["false_alarm_budget"]["per_check_rate"] == pytest.approx(every / budget)
    assert stated["false_alarm_budget"]["per_detector_rate"] == pytest.approx(every / budget / detectors)
    assert stated["severity"]["min_accuracy_cost_points"] == 2.5


def test_the_default_budget_is_at_least_a_million_texts() -> None:
    assert load_config(None, {}, environ={}).monitor.false_alarm_budget >= 1_000_000
