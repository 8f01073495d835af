"""The user's building blocks: record operators and mergeable aggregations.

Pure Python: nothing here imports Kafka, Dask or Prometheus, so every operator can be
tested with a list of dicts.

>>> from operators import Filter, Count
>>> Filter(lambda r: r["amount"] > 0).apply([{"amount": 1}, {"amount": -1}])
[{'amount': 1}]
"""

from operators.aggregate import Aggregation, Collect, Count, Last, Max, Mean, Min, Sum, TopK
from operators.base import Operator, OperatorFailure
from operators.expr import Expr, col
from operators.sketches import ApproxDistinct, ApproxQuantile
from operators.transform import FilterOp as Filter
from operators.transform import FlatMapOp as FlatMap
from operators.transform import KeyBy, MapOp as Map, Project

__all__ = [
    "Aggregation", "ApproxDistinct", "ApproxQuantile", "Collect", "Count", "Expr", "Filter",
    "FlatMap", "KeyBy", "Last", "Map", "Max", "Mean", "Min", "Operator", "OperatorFailure",
    "Project", "Sum", "TopK", "col",
]
