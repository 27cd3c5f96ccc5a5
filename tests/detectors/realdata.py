"""Windows of real reviews (../shared/data) scored by a cheap stand-in model, for the detector tests.

The detectors only see arrays, so the tests do not need the transformer: a TF-IDF + logistic
regression model gives the probabilities, a hashing vectorizer + truncated SVD fitted on the
reference gives the "projected embeddings", and a regex tokenizer capped at ``MAX_LENGTH`` gives
the token counts (so long reviews are "truncated" as a real model's would be).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from insightloop.detectors import Window

DATA_DIR = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
AMAZON = DATA_DIR / "amazon_multidomain_sentiment"
MAX_LENGTH = 256
TOKEN_RE = re.compile(r"\w+|[^\w\s]")


def rows(split: str, domains: tuple[str, ...]) -> list[dict[str, Any]]:
    """Rows of ``amazon_multidomain_sentiment/<split>.jsonl`` in the given domains, in file order."""
    with open(AMAZON / f"{split}.jsonl", encoding="utf-8") as handle:
        found = [json.loads(line) for line in handle]
    return [r for r in found if r["domain"] in domains]


def token_count(text: str) -> int:
    """A word-piece-like count: words and punctuation marks, times 1.2 for sub-words."""
    return round(len(TOKEN_RE.findall(text)) * 1.2)


@dataclass
class StandIn:
    """A fitted stand-in model: probabilities and embeddings for any texts."""

    classes: tuple[str, ...]
    classifier: Any
    vectorizer: Any
    hasher: Any
    svd: Any
    max_length: int = MAX_LENGTH

    def window(self, data: list[dict[str, Any]], *, truncate: int | None = None, labels: bool = True) -> Window:
        """Score ``data`` (rows with id, text, label, domain, …); ``truncate`` cuts texts to that many tokens."""
        texts = [r["text"] for r in data]
        seen = [self._truncate(t, truncate or self.max_length) for t in texts]
        probabilities = self.classifier.predict_proba(self.vectorizer.transform(seen))
        order = [list(self.classifier.classes_).index(c) for c in self.classes]
        embeddings = self.svd.transform(self.hasher.transform(seen))
        return Window(
            ids=[r["id"] for r in data],
            texts=texts,
            class_names=self.classes,
            probabilities=probabilities[:, order],
            embeddings=embeddings,
            token_counts=np.array([min(token_count(t), self.max_length) for t in texts]),
            labels=[r["label"] if labels else None for r in data],
            meta=[{"domain": r["domain"], "rating": r.get("rating")} for r in data],
        )

    @staticmethod
    def _truncate(text: str, limit: int) -> str:
        tokens = TOKEN_RE.findall(text)
        budget = int(limit / 1.2)
        return text if len(tokens) <= budget else " ".join(tokens[:budget])


def fit_stand_in(
    train: list[dict[str, Any]], reference: list[dict[str, Any]], seed: int = 0, dims: int = 16
) -> StandIn:
    """Fit the classifier on ``train`` and the embedding projection on ``reference`` texts."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import HashingVectorizer, TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    x = vectorizer.fit_transform([r["text"] for r in train])
    classifier = LogisticRegression(C=4.0, max_iter=1000)
    classifier.fit(x, [r["label"] for r in train])
    hasher = HashingVectorizer(n_features=2**14, alternate_sign=False, norm="l2")
    svd = TruncatedSVD(n_components=dims, random_state=seed)
    svd.fit(hasher.transform([r["text"] for r in reference]))
    return StandIn(tuple(sorted(classifier.classes_)), classifier, vectorizer, hasher, svd)
