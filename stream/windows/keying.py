"""Checking that the input is partitioned by the window's key, while records come.

Window state lives with the input partition: a key whose records are spread over two
partitions would get one partial result per partition for the same window, each looking
final. `KeyHomes` remembers the partition each grouping key came from and raises
`NotKeyedError` when a key comes from another one. It looks at the first `sample` keys of
each range and remembers at most `limit` keys, so it costs next to nothing per record; it
never fails an input that is keyed right, and it finds a wrongly keyed one within its first
ranges (every key of such an input is on every partition).

>>> homes = KeyHomes("'user_id'")
>>> homes.check(("pay", 0), ["u1", "u2"])
>>> homes.check(("pay", 1), ["u3", "u1"])
Traceback (most recent call last):
...
stream.errors.NotKeyedError: key 'u1' of key_by('user_id') came from pay[0] and from pay[1]: ...
"""

from __future__ import annotations

from itertools import chain, islice
from typing import Any, Iterable

from stream.errors import NotKeyedError
from stream.records import TP, Partial

SAMPLE = 256     # keys looked at per range
LIMIT = 50_000   # keys remembered (about 100 bytes each)


class KeyHomes:
    """The input partition of each grouping key seen (up to `limit` keys)."""

    def __init__(self, key: str, sample: int = SAMPLE, limit: int = LIMIT) -> None:
        """`key` names the grouping key in the error: a field, or how a function computes it."""
        self.key, self.sample, self.limit = key, sample, limit
        self.homes: dict[Any, TP] = {}

    def check(self, tp: TP, keys: Iterable[Any]) -> None:
        """Note that the first `sample` of `keys` came from `tp`; NotKeyedError if one of
        them came from another partition before."""
        homes = self.homes
        for key in islice(keys, self.sample):
            home = homes.get(key)
            if home is None:
                if len(homes) < self.limit:
                    homes[key] = tp
            elif home != tp:
                raise NotKeyedError(
                    f"key {key!r} of key_by({self.key}) came from {home[0]}[{home[1]}] and from "
                    f"{tp[0]}[{tp[1]}]: the input is not partitioned by the window's key, so each "
                    "partition would emit its own partial result for the same key and window. "
                    f"Produce the input with {self.key} as the Kafka key (the key decides the "
                    "partition), or re-key it into such a topic with a pipeline without window() "
                    "first, and declare it with source(..., keyed_by=...). The open epoch is not "
                    "committed.")

    def check_partial(self, tp: TP, partial: Partial) -> None:
        """`check` the grouping keys of one processed range."""
        self.check(tp, chain((k for k, _ in partial.partials), (s.key for s in partial.singles)))
