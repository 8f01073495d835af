"""The operator protocol: a plain, picklable callable over a batch of records.

An operator turns one record (a dict) into zero or more records. `apply` runs it over a
batch and collects records that raise as failures instead of stopping the batch.

>>> from operators.transform import Map
>>> Map(lambda r: {**r, "x": 1}).apply([{"a": 1}])
[{'a': 1, 'x': 1}]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable


@dataclass(frozen=True, slots=True)
class OperatorFailure:
    """A record that made an operator raise, with the operator's name and the error."""

    index: int
    operator: str
    error: BaseException


class OperatorUnavailable(RuntimeError):
    """An operator cannot run at all (its model file is missing, say): not the record's fault.

    The runtime does not dead-letter records for it; the batch fails and is retried, and the
    pipeline stops with this message when retries run out.
    """


class Operator:
    """Base class: subclasses implement `process(record) -> iterable of records`."""

    name: str = "operator"

    def process(self, record: dict[str, Any]) -> Iterable[dict[str, Any]]:
        raise NotImplementedError

    def apply(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Run over a batch; raise on the first failure (for plain lists in tests)."""
        out: list[dict[str, Any]] = []
        for record in records:
            out.extend(self.process(record))
        return out


class BatchOperator(Operator):
    """An operator that works on a whole batch at once (one model call per batch, say).

    Subclasses implement `process_batch(records) -> records`, one output per input, in
    order. The runtime calls it once per worker batch; when it raises, the runtime calls it
    again one record at a time so that only the failing records are dead-lettered.

    >>> class Double(BatchOperator):
    ...     def process_batch(self, records):
    ...         return [{**r, "x": r["x"] * 2} for r in records]
    >>> Double().apply([{"x": 1}, {"x": 2}])
    [{'x': 2}, {'x': 4}]
    """

    def process_batch(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        raise NotImplementedError

    def process(self, record: dict[str, Any]) -> Iterable[dict[str, Any]]:
        return self.process_batch([record])

    def apply(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return self.process_batch(list(records))

    def tally(self, outputs: list[dict[str, Any]], counts: dict[tuple[str, str], int]) -> None:
        """Add what the outputs say about this operator to `counts` (the Score operator counts
        records per model version here; the driver turns the counts into metrics)."""
