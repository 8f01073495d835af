"""The user's building blocks: record operators and mergeable aggregations.

Pure Python: nothing here imports Kafka, Dask or Prometheus, so every operator can be
tested with a list of dicts.

>>> from operators import Filter, Count
>>> Filter(lambda r: r["amount"] > 0).apply([{"amount": 1}, {"amount": -1}])
[{'amount': 1}]
"""

from operators.aggregate import Aggregation, Collect, Count, Last, Max, Mean, Min, Sum, TopK
from operators.base import BatchOperator, Operator, OperatorFailure, OperatorUnavailable
from operators.expr import Expr, col
from operators.features import Features, Field, OneHot, Ratio, Same
from operators.score import Score
from operators.sketches import ApproxDistinct, ApproxQuantile
from operators.transform import Filter, FlatMap, KeyBy, Map, Project

__all__ = [
    "Aggregation", "ApproxDistinct", "ApproxQuantile", "BatchOperator", "Collect", "Count",
    "Expr", "Features", "Field", "Filter", "FlatMap", "KeyBy", "Last", "Map", "Max", "Mean",
    "Min", "OneHot", "Operator", "OperatorFailure", "OperatorUnavailable", "Project", "Ratio",
    "Same", "Score", "Sum", "TopK", "col",
]
