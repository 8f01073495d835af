"""Stateless record operators: map, filter, flat-map, key-by and project.

>>> KeyBy("user_id").key_of({"user_id": "u1"})
'u1'
>>> Project(["a"]).apply([{"a": 1, "b": 2}])
[{'a': 1}]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable

from operators.base import Operator

Record = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Map(Operator):
    """Replace each record with `fn(record)`."""

    fn: Callable[[Record], Record]
    name: str = "map"

    def process(self, record: Record) -> Iterable[Record]:
        return (self.fn(record),)


@dataclass(frozen=True, slots=True)
class Filter(Operator):
    """Keep the records for which `predicate(record)` is true."""

    predicate: Callable[[Record], bool]
    name: str = "filter"

    def process(self, record: Record) -> Iterable[Record]:
        return (record,) if self.predicate(record) else ()


@dataclass(frozen=True, slots=True)
class FlatMap(Operator):
    """Replace each record with the records of `fn(record)` (zero or more)."""

    fn: Callable[[Record], Iterable[Record]]
    name: str = "flat_map"

    def process(self, record: Record) -> Iterable[Record]:
        return tuple(self.fn(record))


@dataclass(frozen=True, slots=True)
class Project(Operator):
    """Keep only the named fields; a missing field raises KeyError (a failure, not a None)."""

    fields: tuple[str, ...]
    name: str = "project"

    def __init__(self, fields: Iterable[str], name: str = "project") -> None:
        object.__setattr__(self, "fields", tuple(fields))
        object.__setattr__(self, "name", name)

    def process(self, record: Record) -> Iterable[Record]:
        return ({f: record[f] for f in self.fields},)


def whole_stream(record: Record) -> str:
    """The key of a global window (`key_by(None)`, or `window()` without `key_by`): the same
    for every record, so one result per window covers the whole input.

    >>> whole_stream({"user_id": "u1"})
    '*'
    """
    return "*"


@dataclass(frozen=True, slots=True)
class KeyBy(Operator):
    """Set the grouping key: a field name or a function of the record.

    The record itself passes unchanged; the runtime reads the key with `key_of`.
    """

    by: str | Callable[[Record], Any]
    name: str = "key_by"
    repartition: bool | None = None  # through a repartition topic: True, False, None (decided by window())

    @property
    def field(self) -> str | None:
        """The key's field name when keyed by a field, else None."""
        return self.by if isinstance(self.by, str) else None

    def key_of(self, record: Record) -> Any:
        return record[self.by] if isinstance(self.by, str) else self.by(record)

    def process(self, record: Record) -> Iterable[Record]:
        return (record,)
