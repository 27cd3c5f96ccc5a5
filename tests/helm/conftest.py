"""Fixtures of the chart tests: the chart rendered once per session with default values and with every option."""

from __future__ import annotations

import pytest

from tests.helm.chart import VALUES_ALL, Rendered, render


@pytest.fixture(scope="session")
def default() -> Rendered:
    """The chart with its default values."""
    return render()


@pytest.fixture(scope="session")
def everything() -> Rendered:
    """The chart with tests/helm/values-all.yaml: every option switched on."""
    return render(values=[VALUES_ALL])


@pytest.fixture(scope="session")
def monitored() -> Rendered:
    """Default values plus the ServiceMonitor and PrometheusRule (what the promtool tests assume)."""
    return render(sets={"serviceMonitor.enabled": "true", "prometheusRule.enabled": "true"})
