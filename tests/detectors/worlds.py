"""Cheap synthetic scored windows with knobs for each kind of shift the detectors should see."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from insightloop.detectors import Window

CLASSES = ("negative", "positive")


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


NEUTRAL = _words(
    "the this that it was is and a of to in for on with as at by from they we you he she have had "
    "book story page read author chapter plot character writing series novel reader end time people"
)
POSITIVE = _words("good great excellent wonderful love loved best enjoy enjoyed beautiful fun brilliant")
NEGATIVE = _words("bad boring poor awful waste worst dull hate terrible disappointing weak annoying")
NEW_WORDS = _words(
    "bluetooth charger battery cable headset adapter blender toaster kettle warranty usb wireless "
    "plastic speaker volume remote firmware install"
)
VOCABULARY = sorted({*NEUTRAL, *POSITIVE, *NEGATIVE})
MAX_LENGTH = 128


@dataclass(frozen=True)
class Shift:
    """Knobs: 0 everywhere is the reference distribution."""

    prior: float = 0.5  # share of positive texts
    domain: float = 0.0  # new vocabulary, shorter texts, embeddings moved off the reference
    hard: float = 0.0  # classes closer together: lower confidence and accuracy
    concept: float = 0.0  # share of labels flipped (the model is wrong, confidently)
    long_errors: bool = False  # labels flipped on truncated (>= MAX_LENGTH tokens) texts only
    long_share: float = 0.0  # extra share of very long texts


def make_window(
    n: int, seed: int, shift: Shift | None = None, *, prefix: str = "r", labeled: float = 1.0, dim: int = 8
) -> Window:
    """``n`` scored rows drawn from the world under ``shift``."""
    shift = shift or Shift()
    rng = np.random.default_rng(seed)
    y = (rng.uniform(size=n) < shift.prior).astype(np.int64)
    x = rng.normal(size=(n, dim))
    separation = 1.2 * (1.0 - shift.hard)
    x[:, 0] += np.where(y == 1, separation, -separation)
    x[:, 2] += 1.5 * shift.domain
    x[:, 3] -= 1.0 * shift.domain
    p_pos = 1.0 / (1.0 + np.exp(-2.0 * x[:, 0]))
    probabilities = np.c_[1.0 - p_pos, p_pos]
    n_words = np.maximum(3, np.round(rng.lognormal(np.log(40), 0.6, size=n) * (1 - 0.4 * shift.domain)))
    long_rows = rng.uniform(size=n) < shift.long_share
    n_words[long_rows] = rng.integers(110, 200, size=int(long_rows.sum()))
    texts = []
    for i in range(n):
        k = int(n_words[i])
        kind = rng.uniform(size=k)
        sentiment = POSITIVE if y[i] == 1 else NEGATIVE
        words = np.where(kind < 0.15, rng.choice(sentiment, size=k), rng.choice(NEUTRAL, size=k))
        if shift.domain > 0:
            new = rng.uniform(size=k) < 0.25 * shift.domain
            words = np.where(new, rng.choice(NEW_WORDS, size=k), words)
        text = " ".join(words.tolist())
        texts.append(text[0].upper() + text[1:] + ".")
    token_counts = np.minimum(MAX_LENGTH, np.round(n_words * 1.3)).astype(np.int64)
    true = y.copy()
    if shift.concept > 0:
        flip = rng.uniform(size=n) < shift.concept
        true = np.where(flip, 1 - true, true)
    predicted = probabilities.argmax(axis=1)
    if shift.long_errors:
        truncated = token_counts >= MAX_LENGTH
        true = np.where(truncated, 1 - predicted, true)
    has_label = rng.uniform(size=n) < labeled
    labels: list[str | None] = [CLASSES[t] if h else None for t, h in zip(true, has_label, strict=True)]
    meta: list[dict[str, str | int | float | bool | None]] = [
        {"domain": "gadgets" if shift.domain > 0 and rng.uniform() < shift.domain else str(rng.choice(["a", "b"]))}
        for _ in range(n)
    ]
    return Window(
        ids=[f"{prefix}{seed}-{i}" for i in range(n)],
        texts=texts,
        class_names=CLASSES,
        probabilities=probabilities,
        embeddings=x,
        token_counts=token_counts,
        labels=labels,
        meta=meta,
    )
