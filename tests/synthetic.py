"""Small labeled text sets generated here (no third-party data), for fast tests."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from pathlib import Path

from insightloop.detectors import Insight, Recommendation, WindowSpan

POSITIVE = ["great", "excellent", "wonderful", "love", "perfect", "amazing", "happy", "superb", "delightful"]
NEGATIVE = ["terrible", "awful", "broken", "hate", "poor", "horrible", "sad", "useless", "disappointing"]
NEUTRAL = ["the", "product", "arrived", "today", "and", "it", "was", "box", "item", "really", "quite", "this"]


def sentiment_rows(n: int, seed: int = 0, prefix: str = "t") -> list[dict[str, str]]:
    """``n`` short texts whose label is given by the sentiment words they contain."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "positive" if i % 2 == 0 else "negative"
        words = [rng.choice(NEUTRAL) for _ in range(rng.randint(3, 8))]
        cue = POSITIVE if label == "positive" else NEGATIVE
        for _ in range(rng.randint(1, 2)):
            words.insert(rng.randrange(len(words) + 1), rng.choice(cue))
        rows.append({"id": f"{prefix}-{i}", "text": " ".join(words), "label": label, "domain": "shop"})
    return rows


def write_jsonl(path: Path, rows: list[dict[str, str]]) -> Path:
    """Write rows as JSON Lines and return the path."""
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


KITCHEN_POSITIVE = ["sturdy", "sharp", "nonstick", "spotless", "reliable", "roomy"]
KITCHEN_NEGATIVE = ["rusty", "dented", "leaky", "flimsy", "sticky", "warped"]
FILLER = [
    "we",
    "used",
    "the",
    "pan",
    "for",
    "dinner",
    "last",
    "week",
    "with",
    "family",
    "and",
    "friends",
    "at",
    "home",
    "after",
    "work",
    "while",
    "cooking",
    "pasta",
    "sauce",
]


def domain_rows(
    n: int,
    seed: int,
    prefix: str,
    positive: list[str],
    negative: list[str],
    filler_words: int = 0,
    cue_at_end: bool = False,
    domain: str = "kitchen",
) -> list[dict[str, str]]:
    """Texts of another domain: its own cue words, optional filler before the cue (long texts)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "positive" if rng.random() < 0.5 else "negative"
        cue = rng.choice(positive if label == "positive" else negative)
        words = [rng.choice(NEUTRAL) for _ in range(rng.randint(2, 5))]
        filler = [rng.choice(FILLER) for _ in range(filler_words)]
        words = [*words, *filler, cue] if cue_at_end else [cue, *words, *filler]
        rows.append({"id": f"{prefix}-{i}", "text": " ".join(words), "label": label, "domain": domain})
    return rows


def make_insight(insight_id: str = "ins-1", severity: str = "warning", **update: object) -> Insight:
    """A valid drift insight that recommends retraining; ``update`` overrides any field."""
    insight = Insight(
        id=insight_id,
        detector="embeddings",
        kind="embedding_drift",
        severity=severity,  # type: ignore[arg-type]
        window=WindowSpan(count=500),
        statistic=3.0,
        threshold=1.0,
        summary="Embeddings drifted.",
        recommendation=Recommendation(action="retrain", because="the traffic moved"),
        created_at=datetime(2026, 12, 1, tzinfo=UTC),
        model_version="v0001",
    )
    return insight.model_copy(update=update)
