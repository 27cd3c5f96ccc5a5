"""Fixtures for the detector tests: one synthetic reference profile per session (cheap to share)."""

from __future__ import annotations

import os

import pytest

from insightloop.detectors import ReferenceProfile, Window
from tests.detectors.worlds import MAX_LENGTH, VOCABULARY, make_window

os.environ.setdefault("DO_NOT_TRACK", "1")

#: Size of the current windows the tests check (and the profile is calibrated for).
WINDOW = 400


@pytest.fixture(scope="session")
def reference_window() -> Window:
    """1,200 labeled rows of the synthetic world, unshifted."""
    return make_window(1200, seed=1, prefix="ref")


@pytest.fixture(scope="session")
def profile(reference_window: Window) -> ReferenceProfile:
    """The reference profile of ``reference_window``, every registered detector calibrated."""
    return ReferenceProfile.build(
        reference_window,
        VOCABULARY,
        false_alarm_rate=0.01,
        n_rounds=80,
        seed=0,
        window_size=WINDOW,
        max_length=MAX_LENGTH,
    )
