"""Windowed Kafka stream processing in Python, run in parallel on Dask.

>>> from stream import Pipeline, Tumbling, seconds
>>> Tumbling(minutes=1).size_ms, seconds(5).total_seconds()
(60000, 5.0)
"""

from stream.pipeline import Pipeline
from stream.windows.specs import CountWindow, Hopping, Session, Tumbling, minutes, seconds

__all__ = ["CountWindow", "Hopping", "Pipeline", "Session", "Tumbling", "minutes", "seconds"]
