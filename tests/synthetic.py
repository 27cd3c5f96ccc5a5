"""Small labeled text sets generated here (no third-party data), for fast tests."""

from __future__ import annotations

import json
import random
from pathlib import Path

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
