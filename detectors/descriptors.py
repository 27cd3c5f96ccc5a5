"""Per-text descriptors (length, new vocabulary, non-letters, upper case) and their summary statistics."""

from __future__ import annotations

import functools
import hashlib
import re
from collections import Counter
from collections.abc import Iterable, Mapping

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict

from insightloop.detectors.window import Window

#: Letters only (no digits, no underscore), any script.
WORD_RE = re.compile(r"[^\W\d_]+")

DESCRIPTOR_NAMES: tuple[str, ...] = (
    "length_tokens",
    "length_words",
    "oov_share",
    "non_letter_share",
    "uppercase_share",
)

DESCRIPTOR_LABELS: dict[str, str] = {
    "length_tokens": "length in tokens",
    "length_words": "length in words",
    "oov_share": "out-of-vocabulary share",
    "non_letter_share": "non-letter share",
    "uppercase_share": "uppercase share",
}

Descriptors = dict[str, NDArray[np.float64]]


def words(text: str) -> list[str]:
    """The lower-cased words (runs of letters) of a text."""
    return text.lower().translate(_BLANK_NON_LETTERS).split()


def vocabulary_from_texts(texts: Iterable[str], min_count: int = 1) -> list[str]:
    """The sorted words seen at least ``min_count`` times in ``texts`` (e.g. the training split)."""
    if min_count < 1:
        raise ValueError("min_count must be at least 1")
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(words(text))
    return sorted(word for word, count in counts.items() if count >= min_count)


def normalise_vocabulary(vocabulary: Iterable[str]) -> frozenset[str]:
    """Lower-case the given words and keep those made of letters only."""
    return frozenset(w.lower() for w in vocabulary if w and WORD_RE.fullmatch(w.lower()))


@functools.lru_cache(maxsize=8)  # calibration builds hundreds of sub-profiles over one vocabulary
def vocabulary_digest(vocabulary: frozenset[str]) -> str:
    """A short fingerprint of a vocabulary (keys caches of descriptors computed against it)."""
    digest = hashlib.sha256("\n".join(sorted(vocabulary)).encode()).hexdigest()
    return digest[:12]


def _tables() -> tuple[dict[int, None], dict[int, str]]:
    """``str.translate`` tables over the Basic Multilingual Plane: delete uppercase letters; blank non-letters."""
    drop_upper: dict[int, None] = {}
    blank: dict[int, str] = {}
    for code in range(0x10000):
        char = chr(code)
        if char.isupper():
            drop_upper[code] = None
        if not char.isalpha():
            blank[code] = " "
    return drop_upper, blank


_DROP_UPPER, _BLANK_NON_LETTERS = _tables()


def compute_descriptors(
    texts: Iterable[str], token_counts: NDArray[np.int64], vocabulary: frozenset[str]
) -> Descriptors:
    """Descriptors of each text against ``vocabulary`` (see :data:`DESCRIPTOR_NAMES`)."""
    n_words: list[int] = []
    oov: list[float] = []
    non_letter: list[float] = []
    upper: list[float] = []
    known = vocabulary.__contains__
    for text in texts:
        # Same words as WORD_RE.findall(text.lower()), about twice as fast.
        found = text.lower().translate(_BLANK_NON_LETTERS).split()
        letters = sum(map(len, found))
        visible = len(text) - text.count(" ") - text.count("\n") - text.count("\t") - text.count("\r")
        n_words.append(len(found))
        oov.append(1.0 - sum(map(known, found)) / len(found) if found else 0.0)
        non_letter.append((visible - letters) / visible if visible > 0 else 0.0)
        upper.append((len(text) - len(text.translate(_DROP_UPPER))) / letters if letters else 0.0)
    return {
        "length_tokens": np.asarray(token_counts, dtype=np.float64),
        "length_words": np.asarray(n_words, dtype=np.float64),
        "oov_share": np.asarray(oov, dtype=np.float64),
        "non_letter_share": np.asarray(non_letter, dtype=np.float64),
        "uppercase_share": np.asarray(upper, dtype=np.float64),
    }


def describe(window: Window, vocabulary: frozenset[str], digest: str | None = None) -> Descriptors:
    """Descriptors of a window's texts, cached on the window (and carried through ``take``)."""
    digest = digest or vocabulary_digest(vocabulary)
    keys = {name: f"descriptor:{digest}:{name}" for name in DESCRIPTOR_NAMES}
    cached = {name: window.cached_rows(key) for name, key in keys.items()}
    if all(v is not None for v in cached.values()):
        return {name: np.asarray(v, dtype=np.float64) for name, v in cached.items()}
    computed = compute_descriptors(window.texts, window.token_counts, vocabulary)
    for name, values in computed.items():
        values.flags.writeable = False
        window.cache_rows(keys[name], values)
    return computed


class DescriptorStats(BaseModel):
    """Summary of one descriptor over the reference window."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mean: float
    std: float
    min: float
    p05: float
    p25: float
    p50: float
    p75: float
    p90: float
    p95: float
    max: float

    @classmethod
    def of(cls, values: NDArray[np.float64]) -> DescriptorStats:
        """Summarise ``values`` (zeros for an empty array)."""
        if values.size == 0:
            return cls(mean=0, std=0, min=0, p05=0, p25=0, p50=0, p75=0, p90=0, p95=0, max=0)
        q = np.quantile(values, [0.05, 0.25, 0.5, 0.75, 0.9, 0.95])
        return cls(
            mean=float(values.mean()),
            std=float(values.std()),
            min=float(values.min()),
            p05=float(q[0]),
            p25=float(q[1]),
            p50=float(q[2]),
            p75=float(q[3]),
            p90=float(q[4]),
            p95=float(q[5]),
            max=float(values.max()),
        )


def summarise(descriptors: Mapping[str, NDArray[np.float64]]) -> dict[str, DescriptorStats]:
    """:class:`DescriptorStats` of every descriptor."""
    return {name: DescriptorStats.of(values) for name, values in descriptors.items()}
