"""Column expressions: predicates that run on one record or on a whole column batch.

`col("amount") > 0` is a predicate like ``lambda r: r["amount"] > 0``: calling it on a record
gives the same answer. Workers on the columnar path also turn it into a polars expression and
evaluate it over the whole batch at once, without building a dict per record. Semantics
follow Python's: comparing a null (None) raises on the row path, so the columnar path hands
a batch whose referenced columns hold nulls to the row path, which dead-letters the record.

>>> p = (col("amount") > 0) & (col("country") != "US")
>>> p({"amount": 5.0, "country": "DE"}), p({"amount": 5.0, "country": "US"})
(True, False)
>>> col("amount").is_in([1, 2])({"amount": 2})
True
>>> p.columns
('amount', 'country')
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any, Callable

_BINARY: dict[str, Callable[[Any, Any], Any]] = {
    "==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
    ">": operator.gt, ">=": operator.ge, "+": operator.add, "-": operator.sub,
    "*": operator.mul, "&": lambda a, b: bool(a) and bool(b),
    "|": lambda a, b: bool(a) or bool(b)}


class Expr:
    """An expression over one record's fields; see the module doc."""

    __hash__ = object.__hash__

    def __call__(self, record: dict[str, Any]) -> Any:
        raise NotImplementedError

    def to_polars(self) -> Any:
        """The same expression as a polars expression."""
        raise NotImplementedError

    @property
    def columns(self) -> tuple[str, ...]:
        """The fields this expression reads."""
        raise NotImplementedError

    def _op(self, op: str, other: Any, swap: bool = False) -> "Expr":
        other = other if isinstance(other, Expr) else Lit(other)
        return Binary(op, other, self) if swap else Binary(op, self, other)

    def __eq__(self, other: Any) -> "Expr":  # type: ignore[override]  # builds an expression, as polars does
        return self._op("==", other)

    def __ne__(self, other: Any) -> "Expr":  # type: ignore[override]  # builds an expression, as polars does
        return self._op("!=", other)

    def __lt__(self, other: Any) -> "Expr":
        return self._op("<", other)

    def __le__(self, other: Any) -> "Expr":
        return self._op("<=", other)

    def __gt__(self, other: Any) -> "Expr":
        return self._op(">", other)

    def __ge__(self, other: Any) -> "Expr":
        return self._op(">=", other)

    def __add__(self, other: Any) -> "Expr":
        return self._op("+", other)

    def __radd__(self, other: Any) -> "Expr":
        return self._op("+", other, swap=True)

    def __sub__(self, other: Any) -> "Expr":
        return self._op("-", other)

    def __rsub__(self, other: Any) -> "Expr":
        return self._op("-", other, swap=True)

    def __mul__(self, other: Any) -> "Expr":
        return self._op("*", other)

    def __rmul__(self, other: Any) -> "Expr":
        return self._op("*", other, swap=True)

    def __and__(self, other: Any) -> "Expr":
        return self._op("&", other)

    def __or__(self, other: Any) -> "Expr":
        return self._op("|", other)

    def __invert__(self) -> "Expr":
        return Not(self)

    def __bool__(self) -> bool:
        raise TypeError("an expression has no truth value: combine with & and |, not `and`/`or`")

    def is_in(self, values: Any) -> "Expr":
        """True when the value is one of `values`."""
        return IsIn(self, tuple(values))


@dataclass(frozen=True, eq=False)
class Col(Expr):
    """A record's field by name: `col("amount")`."""

    name: str

    def __call__(self, record: dict[str, Any]) -> Any:
        return record[self.name]

    def to_polars(self) -> Any:
        import polars as pl
        return pl.col(self.name)

    @property
    def columns(self) -> tuple[str, ...]:
        return (self.name,)

    def __repr__(self) -> str:
        return f"col({self.name!r})"


@dataclass(frozen=True, eq=False)
class Lit(Expr):
    """A constant in an expression: `col("amount") > 0` holds `Lit(0)`."""

    value: Any

    def __call__(self, record: dict[str, Any]) -> Any:
        return self.value

    def to_polars(self) -> Any:
        import polars as pl
        return pl.lit(self.value)

    @property
    def columns(self) -> tuple[str, ...]:
        return ()

    def __repr__(self) -> str:
        return repr(self.value)


@dataclass(frozen=True, eq=False)
class Binary(Expr):
    """Two expressions joined by an operator (`>`, `&`, `+`, ...)."""

    op: str
    left: Expr
    right: Expr

    def __call__(self, record: dict[str, Any]) -> Any:
        return _BINARY[self.op](self.left(record), self.right(record))

    def to_polars(self) -> Any:
        a, b = self.left.to_polars(), self.right.to_polars()
        return _BINARY[self.op](a, b) if self.op not in "&|" else (a & b if self.op == "&" else a | b)

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.left.columns + self.right.columns))

    def __repr__(self) -> str:
        return f"({self.left!r} {self.op} {self.right!r})"


@dataclass(frozen=True, eq=False)
class Not(Expr):
    """The negation of an expression: `~(col("amount") > 0)`."""

    inner: Expr

    def __call__(self, record: dict[str, Any]) -> Any:
        return not self.inner(record)

    def to_polars(self) -> Any:
        return ~self.inner.to_polars()

    @property
    def columns(self) -> tuple[str, ...]:
        return self.inner.columns

    def __repr__(self) -> str:
        return f"~{self.inner!r}"


@dataclass(frozen=True, eq=False)
class IsIn(Expr):
    """True where an expression's value is one of `values`: `col("currency").is_in(["EUR"])`."""

    inner: Expr
    values: tuple[Any, ...]

    def __call__(self, record: dict[str, Any]) -> Any:
        return self.inner(record) in self.values

    def to_polars(self) -> Any:
        return self.inner.to_polars().is_in(list(self.values))

    @property
    def columns(self) -> tuple[str, ...]:
        return self.inner.columns

    def __repr__(self) -> str:
        return f"{self.inner!r}.is_in({list(self.values)!r})"


def col(name: str) -> Expr:
    """The value of field `name`; build predicates with comparisons, & | ~ and arithmetic."""
    return Col(name)
