"""The demo's built-in scenario: product reviews generated here (no third-party data), in two domains.

Before the change, traffic is book reviews; after it, kitchen-product reviews, whose praise and
complaints use words the first model never saw. Labels are positive/negative.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

BOOKS = {
    "subjects": [
        "this novel",
        "the plot",
        "the author's prose",
        "the main character",
        "this memoir",
        "the second half",
        "the ending",
        "this thriller",
        "the dialogue",
        "this collection of essays",
    ],
    "positive": [
        "kept me turning pages late into the night",
        "is rich, moving and beautifully paced",
        "made me laugh and cry",
        "stayed with me for weeks",
        "is a gripping, clever read",
        "deserves every award it won",
        "builds to a stunning finale",
        "is wise and generous",
    ],
    "negative": [
        "dragged on with no payoff",
        "felt flat and predictable",
        "was a chore to finish",
        "is padded with pointless chapters",
        "lost me halfway through",
        "reads like a rough draft",
        "never earns its big twist",
        "is preachy and dull",
    ],
    "filler": [
        "I read it on a long flight.",
        "My book club picked it this month.",
        "I bought the hardcover.",
        "It was a gift from my sister.",
        "I listened to the audiobook version.",
    ],
}
KITCHEN = {
    "subjects": [
        "this blender",
        "the nonstick pan",
        "the knife set",
        "this toaster",
        "the coffee maker",
        "the stand mixer",
        "this kettle",
        "the cutting board",
        "the rice cooker",
        "the food processor",
    ],
    "positive": [
        "heats evenly and wipes clean in seconds",
        "still slices tomatoes paper thin",
        "brews a hot full carafe every morning",
        "handles bread dough without wobbling",
        "has not scratched after a year of daily use",
        "boils water in under three minutes",
        "crushes ice smoothly",
        "fits neatly under the cabinet",
    ],
    "negative": [
        "started leaking from the base",
        "rusted after two washes",
        "the handle snapped off",
        "scorches everything on the bottom",
        "the lid cracked in a week",
        "trips the breaker every time",
        "the coating is peeling into the food",
        "the motor smells burnt",
    ],
    "filler": [
        "We use it every day.",
        "I ordered it for our new apartment.",
        "It replaced an older model.",
        "My husband does most of the cooking.",
        "It arrived a day early.",
    ],
}
DOMAINS = {"books": BOOKS, "kitchen": KITCHEN}


def reviews(domain: str, n: int, seed: int, prefix: str) -> list[dict[str, str]]:
    """``n`` labeled reviews of ``domain`` (balanced classes, shuffled, reproducible)."""
    pool = DOMAINS[domain]
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "positive" if i % 2 == 0 else "negative"
        sentences = [f"{rng.choice(pool['subjects']).capitalize()} {rng.choice(pool[label])}."]
        if rng.random() < 0.6:
            sentences.append(rng.choice(pool["filler"]))
        if rng.random() < 0.5:
            sentences.append(f"Overall, {rng.choice(pool['subjects'])} {rng.choice(pool[label])}.")
        rng.shuffle(sentences)
        rows.append({"id": f"{prefix}-{i:05d}", "text": " ".join(sentences), "label": label, "domain": domain})
    rng.shuffle(rows)
    return rows


def write_scenario(directory: Path, seed: int = 7) -> tuple[Path, Path]:
    """Write the built-in scenario: (training data before the change, the stream that drifts)."""
    directory.mkdir(parents=True, exist_ok=True)
    before = directory / "before.jsonl"
    stream = directory / "stream.jsonl"
    _write(before, reviews("books", 600, seed, "train"))
    _write(stream, reviews("books", 300, seed + 1, "early") + reviews("kitchen", 900, seed + 2, "late"))
    return before, stream


def _write(path: Path, rows: list[dict[str, str]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
