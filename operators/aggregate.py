"""Mergeable aggregations: `create / add / merge / result`.

Workers `add` a batch of values into partial accumulators; the driver `merge`s partials
from different ranges. Because merge is associative, the parallel result equals the
sequential one. Accumulators are plain numbers, tuples or None so they serialize anywhere.

>>> s = Sum("amount")
>>> a = s.add(s.create(), [1.0, 2.0]); b = s.add(s.create(), [3.0])
>>> s.result(s.merge(a, b))
6.0
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterable


class Aggregation:
    """Protocol for aggregations; subclasses set `field` (None means the whole record).

    A user-defined aggregation implements four methods, and the engine relies on these laws:

    - `create()` returns an empty accumulator;
    - `add(acc, values)` folds the extracted values of some records into `acc` and returns it
      (it may change `acc`: a worker owns the accumulators it creates);
    - `merge(a, b)` combines two accumulators and must leave both unchanged (a pane's
      accumulator is merged into several hopping windows); it must be associative, and
      `merge(add(create(), xs), add(create(), ys))` must give the result of
      `add(create(), xs + ys)` (tests/unit/operators/test_aggregate.py checks this on random inputs);
    - `result(acc)` turns an accumulator into the output value (default: itself);
    - `result_kinds(field_kinds)` says which Avro kinds `result` returns, so a sink schema
      that cannot hold them fails when the pipeline is defined (default: unknown, unchecked).

    Accumulators travel from workers to the driver by pickle, and into the changelog in its
    typed state format (`stream.codecs.state`): plain numbers, strings, bytes, None, lists,
    tuples and dicts, or a class registered with `stream.codecs.state.register(cls, name,
    to_bytes, from_bytes)` (as the sketches are). `window()` refuses an aggregation whose
    `create()` the format cannot hold.
    `extract(record, ts)` picks what `add` receives for one record (default: the field).
    See examples/custom_aggregation.py for a complete one.
    """

    field: str | None = None
    returns: ClassVar[str] = ""  # the Avro kind `result` returns; "field": the field's own; "": unknown
    # True when the result depends on the order records come in (not only on which records):
    # a re-keyed window, which merges several input partitions, refuses it
    order_sensitive: ClassVar[bool] = False

    @property
    def name(self) -> str:
        """A stable name derived from the parameters, e.g. ``sum(amount)``."""
        return f"{type(self).__name__.lower()}({self.field or ''})"

    def extract(self, record: dict[str, Any], ts: int) -> Any:
        return record[self.field] if self.field is not None else record

    def create(self) -> Any:
        raise NotImplementedError

    def add(self, acc: Any, values: Iterable[Any]) -> Any:
        raise NotImplementedError

    def merge(self, a: Any, b: Any) -> Any:
        raise NotImplementedError

    def result(self, acc: Any) -> Any:
        return acc

    def result_kinds(self, field_kinds: frozenset[str]) -> frozenset[str]:
        """The Avro kinds `result` returns, given those of the field (empty: unknown, so the
        sink schema is not checked for it). A user-defined aggregation may declare its own.

        >>> sorted(Count().result_kinds(frozenset())), sorted(Sum("x").result_kinds(frozenset({"int"})))
        (['long'], ['long'])
        """
        if self.returns == "field":
            return field_kinds
        return frozenset({self.returns}) if self.returns else frozenset()


INTEGERS, NUMBERS = frozenset({"int", "long"}), frozenset({"int", "long", "float", "double"})


@dataclass(frozen=True)
class Count(Aggregation):
    """Number of records."""

    field: str | None = None

    def extract(self, record: dict[str, Any], ts: int) -> Any:
        return None

    def create(self) -> int:
        return 0

    def add(self, acc: int, values: Iterable[Any]) -> int:
        return acc + sum(1 for _ in values)

    def merge(self, a: int, b: int) -> int:
        return a + b

    returns: ClassVar[str] = "long"


def _present(values: Iterable[Any]) -> list[Any]:
    return [v for v in values if v is not None]


@dataclass(frozen=True)
class Sum(Aggregation):
    """Sum of a numeric field; nulls are skipped."""

    field: str

    def create(self) -> Any:
        return 0

    def add(self, acc: Any, values: Iterable[Any]) -> Any:
        return acc + sum(_present(values))

    def merge(self, a: Any, b: Any) -> Any:
        return a + b

    def result_kinds(self, field_kinds: frozenset[str]) -> frozenset[str]:
        if field_kinds and field_kinds <= INTEGERS:
            return frozenset({"long"})
        return frozenset({"double"}) if field_kinds and field_kinds <= NUMBERS else frozenset()


def _pick(a: Any, b: Any, better: Any) -> Any:
    if a is None:
        return b
    if b is None:
        return a
    return better(a, b)


class _Extreme(Aggregation):
    """Shared logic of Min and Max: keep the `better` of present values (None if none)."""

    field: str
    better: ClassVar[Callable[..., Any]]

    def create(self) -> Any:
        return None

    def add(self, acc: Any, values: Iterable[Any]) -> Any:
        present = _present(values)
        return _pick(acc, self.better(present), self.better) if present else acc

    def merge(self, a: Any, b: Any) -> Any:
        return _pick(a, b, self.better)

    returns: ClassVar[str] = "field"


@dataclass(frozen=True)
class Min(_Extreme):
    """Smallest value of a field (None when every value was null)."""

    field: str
    better: ClassVar[Callable[..., Any]] = staticmethod(min)


@dataclass(frozen=True)
class Max(_Extreme):
    """Largest value of a field (None when every value was null)."""

    field: str
    better: ClassVar[Callable[..., Any]] = staticmethod(max)


@dataclass(frozen=True)
class Mean(Aggregation):
    """Arithmetic mean of a field; the accumulator is (sum, count)."""

    field: str

    def create(self) -> tuple[float, int]:
        return (0.0, 0)

    def add(self, acc: tuple[float, int], values: Iterable[Any]) -> tuple[float, int]:
        present = _present(values)
        return (acc[0] + sum(present), acc[1] + len(present))

    def merge(self, a: tuple[float, int], b: tuple[float, int]) -> tuple[float, int]:
        return (a[0] + b[0], a[1] + b[1])

    def result(self, acc: tuple[float, int]) -> float | None:
        return acc[0] / acc[1] if acc[1] else None

    returns: ClassVar[str] = "double"


@dataclass(frozen=True)
class Last(Aggregation):
    """Value of the record with the latest event time (the later one on ties).

    Values arrive in offset order within a partition, and partials are merged in
    offset order, so "later on ties" is deterministic.
    """

    field: str

    def extract(self, record: dict[str, Any], ts: int) -> Any:
        return (ts, record[self.field])

    def create(self) -> Any:
        return None

    def add(self, acc: Any, values: Iterable[Any]) -> Any:
        for item in values:
            acc = self.merge(acc, item)
        return acc

    def merge(self, a: Any, b: Any) -> Any:
        if a is None:
            return b
        if b is None:
            return a
        return b if b[0] >= a[0] else a

    def result(self, acc: Any) -> Any:
        return None if acc is None else acc[1]

    returns: ClassVar[str] = "field"
    order_sensitive: ClassVar[bool] = True  # "the later one on ties"


@dataclass(frozen=True)
class Collect(Aggregation):
    """The first `limit` values of the window, in (pane, offset) order: records of one key
    come from one partition, so the order is that of the partition. None values are kept."""

    field: str
    limit: int = 100

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise ValueError(f"Collect: limit must be >= 1, got {self.limit}")

    def create(self) -> tuple[Any, ...]:
        return ()

    def add(self, acc: tuple[Any, ...], values: Iterable[Any]) -> tuple[Any, ...]:
        room = self.limit - len(acc)
        if room <= 0:
            return acc
        taken = []
        for v in values:
            taken.append(v)
            if len(taken) >= room:
                break
        return acc + tuple(taken)

    def merge(self, a: tuple[Any, ...], b: tuple[Any, ...]) -> tuple[Any, ...]:
        return a if len(a) >= self.limit else (a + b)[:self.limit]

    def result(self, acc: tuple[Any, ...]) -> list[Any]:
        return list(acc)

    returns: ClassVar[str] = "array"
    order_sensitive: ClassVar[bool] = True


@dataclass(frozen=True)
class TopK(Aggregation):
    """The `k` most frequent non-None values, most frequent first (ties: smaller value first).

    Counts are exact, so state grows with the distinct values per key and window; for very
    many distinct values prefer ApproxDistinct, or bound the field first with a map.
    """

    field: str
    k: int = 10

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"TopK: k must be >= 1, got {self.k}")

    def create(self) -> dict[Any, int]:
        return {}

    def add(self, acc: dict[Any, int], values: Iterable[Any]) -> dict[Any, int]:
        for v in values:
            if v is not None:
                acc[v] = acc.get(v, 0) + 1
        return acc

    def merge(self, a: dict[Any, int], b: dict[Any, int]) -> dict[Any, int]:
        out = dict(a)
        for v, n in b.items():
            out[v] = out.get(v, 0) + n
        return out

    def result(self, acc: dict[Any, int]) -> list[Any]:
        return [v for v, _ in sorted(acc.items(), key=lambda item: (-item[1], item[0]))[:self.k]]

    returns: ClassVar[str] = "array"
