"""The demo's built-in scenario: product reviews generated here (no third-party data), in two domains.

Before the change, traffic is book reviews; after it, kitchen-product reviews, whose praise and
complaints use words the first model never saw. Labels are positive/negative.

The text is meant to read like real reviews, so that the figures do too: plain verdicts are mixed with
negated ones ("not bad at all"), mixed reviews whose last clause decides, sarcasm (praise words, a
negative label), hedged openers, typos, and a few per cent of labels flipped, as real feedback is.
Everything is drawn from one ``random.Random(seed)``, so the same seed writes the same files.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TypedDict


class Pool(TypedDict):
    """The phrases of one domain."""

    subjects: list[str]
    positive: list[str]  # "<subject> <phrase>."
    negative: list[str]
    neg_positive: list[str]  # negated complaints that praise: "is not bad at all"
    neg_negative: list[str]  # negated praise that complains: "is not worth the price"
    filler: list[str]  # neutral sentences that say nothing about the label


BOOKS: Pool = {
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
        "the translation",
        "the pacing",
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
        "surprised me in the best way",
        "is worth every minute",
        "won me over",
        "is a joy",
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
        "was a letdown",
        "wasted my evening",
        "put me to sleep",
        "is forgettable",
    ],
    "neg_positive": [
        "is not bad at all",
        "was never boring",
        "didn't disappoint",
        "is not the slog I feared",
        "never lost my attention",
        "wasn't what the bad reviews said",
    ],
    "neg_negative": [
        "is not worth the hype",
        "didn't hold my interest",
        "was not as clever as it thinks",
        "never really comes together",
        "isn't good, honestly",
        "did not live up to the first book",
    ],
    "filler": [
        "I read it on a long flight.",
        "My book club picked it this month.",
        "I bought the hardcover.",
        "It was a gift from my sister.",
        "I listened to the audiobook version.",
        "I finished it over a weekend.",
        "The cover is lovely.",
        "It is the third book in the series.",
    ],
}
KITCHEN: Pool = {
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
        "the air fryer",
        "this dish rack",
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
        "is sturdy and quiet",
        "was worth every penny",
        "cooks rice perfectly every time",
        "is a joy to use",
    ],
    "negative": [
        "started leaking from the base",
        "rusted after two washes",
        "broke when the handle snapped off",
        "scorches everything on the bottom",
        "cracked at the lid in a week",
        "trips the breaker every time",
        "is peeling its coating into the food",
        "smells like a burnt motor",
        "went back to the store",
        "wobbles and rattles on the counter",
        "stopped working after a month",
        "is flimsy",
    ],
    "neg_positive": [
        "is not bad at all",
        "hasn't rusted once",
        "never sticks",
        "doesn't leak, unlike my old one",
        "is not as loud as I feared",
        "hasn't failed me yet",
    ],
    "neg_negative": [
        "is not worth the price",
        "doesn't heat evenly",
        "never gets sharp again",
        "isn't dishwasher safe, whatever the box says",
        "does not stay on the counter",
        "didn't last the year",
    ],
    "filler": [
        "We use it every day.",
        "I ordered it for our new apartment.",
        "It replaced an older model.",
        "My husband does most of the cooking.",
        "It arrived a day early.",
        "The box was a bit dented.",
        "It comes in three colours.",
        "I use it mostly on weekends.",
    ],
}
DOMAINS: dict[str, Pool] = {"books": BOOKS, "kitchen": KITCHEN}

# Shared, domain-free wording: what makes drifted traffic partly readable to the first model.
OPENERS = {
    "positive": ["Honestly, I love it.", "Five stars.", "Great purchase.", "Really happy with it.", "Recommended."],
    "negative": ["Honestly, I regret it.", "One star.", "Very disappointed.", "Not happy with it.", "Avoid."],
    "neutral": ["Hmm.", "Where do I start.", "Long review, sorry.", "Mixed feelings at first.", "Okay, so."],
}
SARCASM = [
    "Oh great, {subject} {negative}. Just what I wanted.",
    "Wow, {subject} {negative}. Amazing quality, truly.",
    "Love how {subject} {negative}. Fantastic.",
    "Five stars for the way {subject} {negative}, I guess.",
]
MIXED = [  # the last clause carries the label, as people write it
    "{subject_a} {other}, but {subject_b} {label}.",
    "I wanted to like it: {subject_a} {other}. Still, {subject_b} {label}.",
    "Sure, {subject_a} {other}. Even so, {subject_b} {label}.",
    "At first {subject_a} {other}; in the end {subject_b} {label}.",
]
HEDGES = ["I think", "To be fair,", "Overall", "All in all,", "For what it's worth,"]

NOISE = 0.04  # labels flipped: real feedback has mistakes in it
TYPO_RATE = 0.3  # share of reviews with a few typos


def _other(label: str) -> str:
    return "negative" if label == "positive" else "positive"


def _clause(rng: random.Random, pool: Pool, label: str) -> str:
    """A verb phrase that says ``label``: plain most often, negated sometimes."""
    if rng.random() < 0.25:
        return rng.choice(pool["neg_positive"] if label == "positive" else pool["neg_negative"])
    return rng.choice(pool["positive"] if label == "positive" else pool["negative"])


def _review(rng: random.Random, pool: Pool, label: str) -> str:
    def subject() -> str:
        return rng.choice(pool["subjects"])

    style = rng.random()
    if style < 0.12 and label == "negative":
        text = rng.choice(SARCASM).format(subject=subject().capitalize(), negative=rng.choice(pool["negative"]))
        text = text[0].upper() + text[1:]
        sentences = [text]
    elif style < 0.35:
        template = rng.choice(MIXED)
        text = template.format(
            subject_a=subject(),
            other=_clause(rng, pool, _other(label)),
            subject_b=subject(),
            label=_clause(rng, pool, label),
        )
        sentences = [text[0].upper() + text[1:]]
    else:
        sentences = [f"{subject().capitalize()} {_clause(rng, pool, label)}."]
        if rng.random() < 0.4:
            sentences.append(f"{rng.choice(HEDGES)} {subject()} {_clause(rng, pool, label)}.")
    if rng.random() < 0.3:
        sentences.insert(0, rng.choice(OPENERS[label] if rng.random() < 0.6 else OPENERS["neutral"]))
    if rng.random() < 0.5:
        sentences.insert(rng.randrange(len(sentences) + 1), rng.choice(pool["filler"]))
    text = " ".join(sentences)
    if rng.random() < TYPO_RATE:
        text = _typos(rng, text)
    if rng.random() < 0.15:
        text = text.lower()
    return text


def _typos(rng: random.Random, text: str) -> str:
    """One to three typing slips: a swapped pair, a dropped or a doubled letter."""
    chars = list(text)
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(1, max(2, len(chars) - 1))
        if not chars[i].isalpha():
            continue
        slip = rng.random()
        if slip < 0.4 and i + 1 < len(chars) and chars[i + 1].isalpha():
            chars[i], chars[i + 1] = chars[i + 1], chars[i]
        elif slip < 0.7:
            del chars[i]
        else:
            chars.insert(i, chars[i])
    return "".join(chars)


def reviews(domain: str, n: int, seed: int, prefix: str, noise: float = NOISE) -> list[dict[str, str]]:
    """``n`` labeled reviews of ``domain`` (balanced classes before noise, shuffled, reproducible)."""
    pool = DOMAINS[domain]
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "positive" if i % 2 == 0 else "negative"
        text = _review(rng, pool, label)
        if rng.random() < noise:
            label = _other(label)
        rows.append({"id": f"{prefix}-{i:05d}", "text": text, "label": label, "domain": domain})
    rng.shuffle(rows)
    return rows


def write_scenario(directory: Path, seed: int = 7) -> tuple[Path, Path]:
    """Write the built-in scenario: (training data before the change, the stream that drifts)."""
    directory.mkdir(parents=True, exist_ok=True)
    before = directory / "before.jsonl"
    stream = directory / "stream.jsonl"
    write_rows(before, reviews("books", 600, seed, "train"))
    write_rows(stream, reviews("books", 300, seed + 1, "early") + reviews("kitchen", 900, seed + 2, "late"))
    return before, stream


def write_rows(path: Path, rows: Sequence[Mapping[str, object]]) -> None:
    """Rows as JSON Lines."""
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
