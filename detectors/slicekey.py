"""The slice key: one typed name for a subset of rows, shared by the detectors, plans and retraining jobs.

A slice key reads ``"<field>=<value>"``; five fields exist:

* ``length_tokens=<lo>-<hi>`` (token count in ``[lo, hi]``) or ``length_tokens=<lo>+`` (at least ``lo``); for a
  token classifier the count is of words;
* ``meta.<name>=<value>``: rows whose ``meta[name]``, as :func:`meta_value_str` writes it, is ``value``;
* ``new_vocabulary=high``: rows whose out-of-vocabulary share is above the reference's cut;
* ``line_shape=<prose|caps|table>`` (token classifiers): how a line reads, :data:`LINE_SHAPES`;
* ``entity_type=<TYPE>`` (token classifiers): rows with a predicted entity of that type.

**Case rule: keys are compared exactly, case-sensitively, field and value alike.** The detectors count
``meta.domain=Kitchen`` and ``meta.domain=kitchen`` as two slices with their own statistics, so a plan
that weights one of them must weight exactly the rows the detector measured; folding case would weight
rows the evidence never looked at. ``LENGTH_TOKENS=12+`` is therefore malformed, not a synonym.

Numbers are plain ASCII digits without leading zeros, so ``SliceKey.parse(text).format() == text`` for
every key that parses, and ``SliceKey.parse(key.format()) == key`` for every key.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import AfterValidator

from insightloop.detectors.errors import DetectorPermanentError

SliceKind = Literal["length", "meta", "vocabulary", "shape", "entity"]

#: The field of token-count buckets.
LENGTH_FIELD = "length_tokens"
#: The field of the new-vocabulary slice, and its one value.
VOCABULARY_FIELD = "new_vocabulary"
VOCABULARY_VALUE = "high"
#: Prefix of the fields that name a ``meta`` entry.
META_PREFIX = "meta."
#: The fields of a token classifier's slices: the shape of a line, and a predicted entity type.
SHAPE_FIELD = "line_shape"
LINE_SHAPES = ("prose", "caps", "table")
ENTITY_FIELD = "entity_type"

_NUMBER = "(?:0|[1-9][0-9]*)"
_RANGE = re.compile(f"({_NUMBER})-({_NUMBER})", re.ASCII)
_AT_LEAST = re.compile(rf"({_NUMBER})\+", re.ASCII)


class SliceKeyError(DetectorPermanentError, ValueError):
    """A malformed slice key (also a ``ValueError``, so pydantic validators report it as invalid input)."""


def meta_value_str(value: object) -> str:
    """The string a ``meta`` value is compared as: ``true``/``false`` for booleans, ``3`` for ``3.0``,
    else ``str(value)``. The detectors build their ``meta`` columns with it, and membership uses it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@dataclass(frozen=True)
class SliceKey:
    """A named subset of rows, defined the same way on every window and on training data.

    Parameters
    ----------
    field
        ``"length_tokens"``, ``"new_vocabulary"`` or ``"meta.<name>"``.
    value
        The bucket (``"128-255"``, ``"512+"``), the ``meta`` value, or ``"high"``.

    Examples
    --------
    >>> key = SliceKey.parse("length_tokens=128-255")
    >>> key.kind, key.lower, key.upper, key.format()
    ('length', 128, 256, 'length_tokens=128-255')
    >>> SliceKey.meta("domain", "kitchen").contains(meta={"domain": "kitchen"})
    True
    >>> SliceKey.parse("meta.domain=kitchen").contains(meta={"domain": "Kitchen"})
    False
    """

    field: str
    value: str

    def __post_init__(self) -> None:
        if self.field == LENGTH_FIELD:
            if _AT_LEAST.fullmatch(self.value) is None:
                found = _RANGE.fullmatch(self.value)
                if found is None:
                    raise SliceKeyError(
                        f"slice key {self.format()!r}: a length bucket is '<lo>-<hi>' or '<lo>+' in plain digits"
                    )
                if int(found.group(1)) > int(found.group(2)):
                    raise SliceKeyError(f"slice key {self.format()!r}: the bucket's low end is above its high end")
        elif self.field == VOCABULARY_FIELD:
            if self.value != VOCABULARY_VALUE:
                raise SliceKeyError(f"slice key {self.format()!r}: the only new-vocabulary slice is 'high'")
        elif self.field == SHAPE_FIELD:
            if self.value not in LINE_SHAPES:
                raise SliceKeyError(f"slice key {self.format()!r}: a line shape is one of {', '.join(LINE_SHAPES)}")
        elif self.field == ENTITY_FIELD:
            if not self.value or any(c.isspace() for c in self.value):
                raise SliceKeyError(f"slice key {self.format()!r}: an entity type is a word without spaces")
        elif self.field.startswith(META_PREFIX):
            name = self.field.removeprefix(META_PREFIX)
            if not name or "=" in name:
                raise SliceKeyError(f"slice key {self.format()!r}: a meta field needs a name without '='")
        else:
            raise SliceKeyError(
                f"slice key {self.format()!r}: the field must be {LENGTH_FIELD!r}, {VOCABULARY_FIELD!r}, "
                f"{SHAPE_FIELD!r}, {ENTITY_FIELD!r} or {META_PREFIX!r}<name> (case-sensitive)"
            )

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def parse(cls, text: str) -> SliceKey:
        """The key ``text`` names; :class:`SliceKeyError` when it is malformed."""
        if not isinstance(text, str):
            raise SliceKeyError(f"a slice key is a string, not {type(text).__name__}")
        field, sep, value = text.partition("=")
        if not sep:
            raise SliceKeyError(f"slice key {text!r}: expected '<field>=<value>'")
        return cls(field, value)

    @classmethod
    def length(cls, lower: int, upper: int | None = None) -> SliceKey:
        """Token counts in ``[lower, upper)``; at least ``lower`` when ``upper`` is None."""
        if upper is None:
            return cls(LENGTH_FIELD, f"{lower}+")
        return cls(LENGTH_FIELD, f"{lower}-{upper - 1}")

    @classmethod
    def meta(cls, name: str, value: object) -> SliceKey:
        """Rows whose ``meta[name]`` is ``value`` (compared as :func:`meta_value_str` writes it)."""
        return cls(META_PREFIX + name, meta_value_str(value))

    @classmethod
    def new_vocabulary(cls) -> SliceKey:
        """Rows rich in words the reference has not seen."""
        return cls(VOCABULARY_FIELD, VOCABULARY_VALUE)

    # -- form -----------------------------------------------------------------------------------
    def format(self) -> str:
        """``"<field>=<value>"``: the key as insights, plans and evaluation sections spell it."""
        return f"{self.field}={self.value}"

    def __str__(self) -> str:
        return self.format()

    @property
    def kind(self) -> SliceKind:
        """``"length"``, ``"meta"``, ``"vocabulary"``, ``"shape"`` or ``"entity"``."""
        if self.field == LENGTH_FIELD:
            return "length"
        if self.field == VOCABULARY_FIELD:
            return "vocabulary"
        if self.field == SHAPE_FIELD:
            return "shape"
        if self.field == ENTITY_FIELD:
            return "entity"
        return "meta"

    @property
    def meta_name(self) -> str | None:
        """The ``meta`` entry a meta slice reads (None for the other kinds)."""
        return self.field.removeprefix(META_PREFIX) if self.kind == "meta" else None

    @property
    def lower(self) -> int | None:
        """Smallest token count of a length bucket (None for the other kinds)."""
        if self.kind != "length":
            return None
        return int(self.value.rstrip("+").partition("-")[0])

    @property
    def upper(self) -> int | None:
        """One past the largest token count of a bounded length bucket (None when open or not a length)."""
        if self.kind != "length" or self.value.endswith("+"):
            return None
        return int(self.value.partition("-")[2]) + 1

    # -- membership -----------------------------------------------------------------------------
    def contains(
        self,
        *,
        meta: Mapping[str, object] | None = None,
        n_tokens: int | None = None,
        new_vocabulary: bool | None = None,
        shape: str | None = None,
        entity_types: Collection[str] | None = None,
    ) -> bool:
        """Whether a row with these values belongs to the slice.

        A value the slice needs but the caller does not know (None) means "not shown to belong": a
        retraining job, which has no reference vocabulary, puts no row in ``new_vocabulary=high``.
        """
        if self.kind == "length":
            if n_tokens is None:
                return False
            upper = self.upper
            return (self.lower or 0) <= n_tokens and (upper is None or n_tokens < upper)
        if self.kind == "meta":
            raw = (meta or {}).get(self.meta_name or "")
            return raw is not None and meta_value_str(raw) == self.value
        if self.kind == "shape":
            return shape == self.value
        if self.kind == "entity":
            return entity_types is not None and self.value in entity_types
        return bool(new_vocabulary)

    def mask(
        self,
        *,
        token_counts: NDArray[np.int64] | NDArray[np.float64] | None = None,
        meta_values: NDArray[np.object_] | None = None,
        new_vocabulary: NDArray[np.bool_] | None = None,
    ) -> NDArray[np.bool_]:
        """:meth:`contains` for a column of rows.

        ``meta_values`` holds this slice's ``meta`` entry per row as :func:`meta_value_str` strings (None
        where absent); only the column the slice's kind reads is required.
        """
        if self.kind == "length":
            if token_counts is None:
                raise DetectorPermanentError(f"slice {self.format()} needs token counts")
            mask = np.asarray(token_counts) >= (self.lower or 0)
            upper = self.upper
            if upper is not None:
                mask &= np.asarray(token_counts) < upper
            return mask
        if self.kind == "meta":
            if meta_values is None:
                raise DetectorPermanentError(f"slice {self.format()} needs the meta.{self.meta_name} column")
            # Compare against an object array: a str scalar would become a NumPy string, which drops
            # trailing NULs and so would differ from contains().
            target = np.empty(1, dtype=object)
            target[0] = self.value
            out: NDArray[np.bool_] = np.asarray(np.asarray(meta_values, dtype=object) == target, dtype=bool)
            return out
        if self.kind in ("shape", "entity"):
            raise DetectorPermanentError(f"slice {self.format()} is a token classifier's: test rows with contains()")
        if new_vocabulary is None:
            raise DetectorPermanentError(f"slice {self.format()} needs the new-vocabulary flags")
        return np.asarray(new_vocabulary, dtype=bool)


def _checked_slice_key(text: str) -> str:
    return SliceKey.parse(text).format()


#: A slice key in its wire form (``"<field>=<value>"``) as a pydantic field type: a ``str`` that
#: :meth:`SliceKey.parse` accepts. Insights and plans keep keys as strings on the wire, checked on the way in.
SliceKeyText = Annotated[str, AfterValidator(_checked_slice_key)]
