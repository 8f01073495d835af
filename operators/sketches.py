"""Approximate aggregations that merge across workers, on Apache DataSketches' HLL and KLL.

Sketches are accumulators like any other: workers `add` into them, the driver `merge`s them,
and the changelog stores them as their own serialized bytes (registered with
`stream.codecs.state`; to the driver they pickle as the same bytes). `merge` never
changes its arguments, so a pane's sketch can be combined into several hopping windows.

>>> d = ApproxDistinct("user")
>>> a = d.add(d.create(), ["u1", "u2"]); b = d.add(d.create(), ["u2", "u3"])
>>> d.result(d.merge(a, b))
3
>>> q = ApproxQuantile("amount", 0.5)
>>> q.result(q.add(q.create(), [1.0, 2.0, 3.0]))
2.0
"""

from __future__ import annotations

import copyreg
from dataclasses import dataclass
from typing import Any, ClassVar, Iterable

import datasketches as ds

from operators.aggregate import Aggregation
from stream.codecs.state import register


def _load_hll(data: bytes) -> Any:
    return ds.hll_sketch.deserialize(data)


def _load_kll(data: bytes) -> Any:
    return ds.kll_doubles_sketch.deserialize(data)


def _hll_bytes(s: Any) -> bytes:
    return bytes(s.serialize_compact())


def _kll_bytes(s: Any) -> bytes:
    return bytes(s.serialize())


# pickled to the driver, and stored in the changelog, as their serialized bytes
copyreg.pickle(ds.hll_sketch, lambda s: (_load_hll, (_hll_bytes(s),)))
copyreg.pickle(ds.kll_doubles_sketch, lambda s: (_load_kll, (_kll_bytes(s),)))
register(ds.hll_sketch, "datasketches.hll", _hll_bytes, _load_hll)
register(ds.kll_doubles_sketch, "datasketches.kll_doubles", _kll_bytes, _load_kll)


@dataclass(frozen=True)
class ApproxDistinct(Aggregation):
    """Approximate number of distinct values (HyperLogLog; `lg_k` 12: about 1.6% error,
    at most 2.5 KiB per key and window). None values are skipped."""

    field: str
    lg_k: int = 12

    @property
    def name(self) -> str:
        return f"approx_distinct({self.field})"

    def create(self) -> Any:
        return ds.hll_sketch(self.lg_k)

    def add(self, acc: Any, values: Iterable[Any]) -> Any:
        for v in values:
            if v is not None:
                acc.update(v if isinstance(v, (int, float, str)) else str(v))
        return acc

    def merge(self, a: Any, b: Any) -> Any:
        union = ds.hll_union(self.lg_k)
        union.update(a)
        union.update(b)
        return union.get_result()

    def result(self, acc: Any) -> int:
        return int(round(acc.get_estimate()))

    returns: ClassVar[str] = "long"


@dataclass(frozen=True)
class ApproxQuantile(Aggregation):
    """Approximate `q`-quantile of a numeric field (KLL; `k` 200: rank error about 1.3%;
    exact below `k` values). None when the window has no value."""

    field: str
    q: float = 0.5
    k: int = 200

    def __post_init__(self) -> None:
        if not 0.0 <= self.q <= 1.0:
            raise ValueError(f"ApproxQuantile: q must be in [0, 1], got {self.q}")

    @property
    def name(self) -> str:
        return f"approx_quantile({self.field},{self.q})"

    def create(self) -> Any:
        return ds.kll_doubles_sketch(self.k)

    def add(self, acc: Any, values: Iterable[Any]) -> Any:
        for v in values:
            if v is not None:
                acc.update(float(v))
        return acc

    def merge(self, a: Any, b: Any) -> Any:
        out = _load_kll(a.serialize())  # a copy: merging into `a` would change a pane's state
        out.merge(b)
        return out

    def result(self, acc: Any) -> float | None:
        return None if acc.is_empty() else float(acc.get_quantile(self.q))

    returns: ClassVar[str] = "double"
