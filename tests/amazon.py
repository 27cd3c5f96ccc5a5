"""Real labeled reviews from ../shared/data/amazon_multidomain_sentiment, for tests that need real shift."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

AMAZON = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "amazon_multidomain_sentiment"

needs_amazon = pytest.mark.skipif(
    not (AMAZON / "train.jsonl").is_file(), reason=f"real review data not found at {AMAZON.resolve()}"
)


def amazon(split: str, domain: str, n: int, seed: int, skip: int = 0) -> list[dict[str, Any]]:
    """``n`` rows of one domain of one split, shuffled with ``seed``, after skipping ``skip``; domain kept as meta."""
    found = [json.loads(line) for line in (AMAZON / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()]
    chosen = [r for r in found if r["domain"] == domain]
    random.Random(seed).shuffle(chosen)
    return [
        {"id": r["id"], "text": r["text"], "label": r["label"], "meta": {"domain": r["domain"]}}
        for r in chosen[skip : skip + n]
    ]
