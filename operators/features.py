"""Declarative features: turn a batch of records into one 2-D float array for a model.

A feature list names fields (numbers, booleans), one-hot encodings of a categorical field
with a fixed vocabulary, ratios of two fields and equality of two fields. `Features.matrix` builds the array
column by column with NumPy, one pass over the batch per source field.

>>> f = Features(["amount", OneHot("country", ["DE", "US"]), Ratio("amount", "avg")])
>>> f.names
['amount', 'country=DE', 'country=US', 'country=other', 'amount/avg']
>>> f.matrix([{"amount": 10.0, "country": "US", "avg": 5.0},
...           {"amount": 3.0, "country": "FR", "avg": 0.0}]).tolist()
[[10.0, 0.0, 1.0, 0.0, 2.0], [3.0, 0.0, 0.0, 1.0, 0.0]]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

Record = dict[str, Any]


def _column(records: Sequence[Record], field: str) -> np.ndarray:
    """One numeric field of every record as float64. A missing field raises KeyError; a null or
    a value that is not a number raises TypeError (the record fails, it is not guessed)."""
    values = [r[field] for r in records]
    try:
        arr = np.array(values, dtype=np.float64)  # None would silently become NaN: look below
    except (TypeError, ValueError):
        arr = None
    if arr is None or (np.isnan(arr).any() and any(v is None for v in values)):
        bad = next(v for v in values if v is None or not isinstance(v, (int, float)))
        raise TypeError(f"feature field {field!r} must be a number, got {bad!r}")
    return arr


@dataclass(frozen=True)
class Field:
    """A numeric (or boolean) field, as is."""

    name: str

    @property
    def names(self) -> list[str]:
        return [self.name]

    @property
    def fields(self) -> tuple[str, ...]:
        return (self.name,)

    def columns(self, records: Sequence[Record]) -> np.ndarray:
        return _column(records, self.name)[:, None]


@dataclass(frozen=True)
class OneHot:
    """One column per vocabulary value (1.0 where the field equals it), plus an `other`
    column for values outside the vocabulary (unless `other=False`: then all zeros)."""

    name: str
    vocabulary: tuple[str, ...]
    other: bool = True

    def __init__(self, name: str, vocabulary: Iterable[Any], other: bool = True) -> None:
        vocab = tuple(vocabulary)
        if len(set(vocab)) != len(vocab) or not vocab:
            raise ValueError(f"OneHot({name!r}): the vocabulary must be non-empty and without repeats")
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "vocabulary", vocab)
        object.__setattr__(self, "other", other)

    @property
    def names(self) -> list[str]:
        return [f"{self.name}={v}" for v in self.vocabulary] + ([f"{self.name}=other"] if self.other else [])

    @property
    def fields(self) -> tuple[str, ...]:
        return (self.name,)

    def columns(self, records: Sequence[Record]) -> np.ndarray:
        index = {v: i for i, v in enumerate(self.vocabulary)}
        width = len(self.vocabulary) + (1 if self.other else 0)
        unknown = len(self.vocabulary) if self.other else -1
        where = np.fromiter((index.get(r[self.name], unknown) for r in records), np.int64, len(records))
        out = np.zeros((len(records), width + 1))  # one spare column takes "unknown" without `other`
        out[np.arange(len(records)), where] = 1.0
        return out[:, :width]


@dataclass(frozen=True)
class Ratio:
    """`numerator / denominator`, with `default` where the denominator is 0."""

    numerator: str
    denominator: str
    default: float = 0.0

    @property
    def names(self) -> list[str]:
        return [f"{self.numerator}/{self.denominator}"]

    @property
    def fields(self) -> tuple[str, ...]:
        return (self.numerator, self.denominator)

    def columns(self, records: Sequence[Record]) -> np.ndarray:
        num, den = _column(records, self.numerator), _column(records, self.denominator)
        out = np.full(len(records), self.default)
        np.divide(num, den, out=out, where=den != 0)
        return out[:, None]


@dataclass(frozen=True)
class Same:
    """1.0 where two fields are equal (a payment's country and the holder's home country)."""

    left: str
    right: str

    @property
    def names(self) -> list[str]:
        return [f"{self.left}=={self.right}"]

    @property
    def fields(self) -> tuple[str, ...]:
        return (self.left, self.right)

    def columns(self, records: Sequence[Record]) -> np.ndarray:
        a, b = self.left, self.right
        return np.fromiter((r[a] == r[b] for r in records), np.float64, len(records))[:, None]


Feature = Field | OneHot | Ratio | Same


@dataclass(frozen=True)
class Features:
    """An ordered feature list; a plain string is a `Field`."""

    items: tuple[Feature, ...]

    def __init__(self, items: Iterable[str | Feature]) -> None:
        parsed = tuple(Field(i) if isinstance(i, str) else i for i in items)
        if not parsed:
            raise ValueError("Features needs at least one feature")
        for i in parsed:
            if not isinstance(i, (Field, OneHot, Ratio, Same)):
                raise ValueError(f"unknown feature {i!r}: use a field name, OneHot, Ratio or Same")
        object.__setattr__(self, "items", parsed)

    @property
    def names(self) -> list[str]:
        """Column names, in order (what the model was trained on)."""
        return [n for i in self.items for n in i.names]

    @property
    def fields(self) -> tuple[str, ...]:
        """The record fields the features read."""
        return tuple(dict.fromkeys(f for i in self.items for f in i.fields))

    def matrix(self, records: Sequence[Record]) -> np.ndarray:
        """The (len(records), len(names)) float64 array."""
        if not records:
            return np.zeros((0, len(self.names)))
        return np.hstack([i.columns(records) for i in self.items])
