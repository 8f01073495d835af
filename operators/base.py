"""The operator protocol: a plain, picklable callable over a batch of records.

An operator turns one record (a dict) into zero or more records. `apply` runs it over a
batch and collects records that raise as failures instead of stopping the batch.

>>> from operators.transform import MapOp
>>> MapOp(lambda r: {**r, "x": 1}).apply([{"a": 1}])
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
