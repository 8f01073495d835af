"""What each part of the data path expects of another, as `typing.Protocol`s.

Each has a Kafka implementation and an in-memory twin (`sources/kafka.py` beside
`sources/memory.py`, `sinks/kafka.py` beside `sinks/memory.py`, `execution/dask.py` beside
`execution/local.py`), and the driver and the worker are written against these names only.

>>> from stream.sources.memory import MemoryTopic
>>> isinstance(MemoryTopic("in", partitions=1).reader(), Reader)
True
"""

from __future__ import annotations

from concurrent.futures import Future
from contextlib import AbstractContextManager
from typing import Any, Callable, Iterable, Mapping, Protocol, runtime_checkable

from stream.records import TP, RawMessage, ReadBatch

Headers = tuple[tuple[str, bytes], ...]
KeyValue = tuple[bytes | None, bytes | None]


@runtime_checkable
class Codec(Protocol):
    """Values to records and back (docs/codecs.md): Avro, JSON, a registry, or your own."""

    @property
    def fields(self) -> list[str] | None:
        """The field names `decode` yields; None: unknown."""
        ...

    def decode(self, data: bytes | None) -> dict[str, Any]:
        """The record in `data`; `stream.errors.DecodeError` for a value that is not one."""
        ...

    def encode(self, record: dict[str, Any]) -> bytes:
        """The value for `record`; `stream.errors.EncodeError` when it does not fit."""
        ...


@runtime_checkable
class Reader(Protocol):
    """Reads a range of one partition; picklable, with per-process client state."""

    def read(self, topic: str, partition: int, start: int, end: int | None,
             max_records: int, tail_wait_s: float = 0.0) -> ReadBatch: ...


@runtime_checkable
class Session(Protocol):
    """The driver's consumer-group member: what it is assigned and what the group committed."""

    on_revoke: Callable[[list[TP]], None] | None

    def poll(self, timeout: float) -> list[tuple[str, list[TP]]]:
        """Group events since the last call: ("assigned" | "revoked" | "lost", partitions)."""
        ...

    def assigned(self) -> list[TP]: ...

    def committed(self, tps: list[TP]) -> dict[TP, int]: ...

    def commit(self, offsets: dict[TP, int]) -> None:
        """Commit input offsets outside a transaction (at-least-once)."""
        ...

    def reader(self) -> Reader: ...

    def group_metadata(self) -> Any: ...

    def close(self) -> None: ...


@runtime_checkable
class Sink(Protocol):
    """Takes the driver's records and commits an epoch's outputs with its input offsets."""

    transactional: bool

    def produce_many(self, topic: str, records: Iterable[KeyValue], headers: Headers = (),
                     partition: int | None = None) -> None: ...

    def flush(self, timeout: float = 30.0) -> None: ...

    def commit_epoch(self, offsets: dict[TP, int], session: Session) -> None: ...

    def abort(self) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class Executor(Protocol):
    """Runs range tasks: in-process (`LocalExecutor`) or on a Dask cluster (`DaskExecutor`)."""

    def submit(self, fn: Callable[..., Any], *args: Any, pin: int) -> Future[Any]:
        """Run `fn(*args)`; tasks with the same `pin` go to the same worker while it lives."""
        ...

    def wait(self, futures: list[Future[Any]], timeout: float) -> list[Future[Any]]: ...

    def outcome(self, future: Future[Any]) -> tuple[Any, BaseException | None] | None:
        """(result, None), (None, error), or None when the task went back to pending."""
        ...

    def cancel(self, future: Future[Any]) -> None: ...

    def describe(self) -> str: ...

    def close(self) -> None: ...


@runtime_checkable
class Changelog(Protocol):
    """Reads back the state entries of changelog partitions, in offset order."""

    def load(self, partitions: list[int]) -> dict[int, list[RawMessage]]: ...


@runtime_checkable
class StepGuard(Protocol):
    """Puts a deadline on a blocking step (`stream.app.watchdog.Watchdog`)."""

    def step(self, name: str, seconds: float) -> AbstractContextManager[None]: ...


@runtime_checkable
class WindowState(Protocol):
    """The state of one partition's windows (`WindowStore`, `SessionStore`, `CountStore`).

    A window spec builds it (`spec.build_state(...)`); the driver merges partials into it,
    advances it with the partition's event time, and checkpoints what changed.
    """

    emitted_through: int  # the watermark every window below has been emitted at

    def merge(self, partials: Mapping[Any, list[Any]]) -> None: ...

    def advance(self, watermark: int) -> Any:
        """Close the windows the event time `watermark` has passed; their results, as
        `stream.windows.store.WindowResults` (columns)."""
        ...

    def early_results(self) -> Any:
        """Partial results of the open windows changed since the last call, as `WindowResults`."""
        ...

    def has_changes(self) -> bool: ...

    def take_changes(self) -> tuple[dict[int, dict[Any, Any]], list[int]]: ...

    def load(self, entries: Mapping[Any, Any], emitted_through: int) -> None: ...

    def open_windows(self) -> int: ...

    def check_invariants(self) -> None: ...
