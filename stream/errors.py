"""One exception root with a few specific subclasses that carry fields and say what to do.

>>> raise TopicMissing("payments", ["orders"])
Traceback (most recent call last):
...
stream.errors.TopicMissing: input topic 'payments' does not exist; topics on the broker: orders. Create it first (stream demo creates its own).
"""

from __future__ import annotations


class StreamError(Exception):
    """Root of every error this package raises on purpose."""


class PipelineError(StreamError):
    """The pipeline definition is invalid (raised when it is defined)."""


class ConfigError(StreamError):
    """A configuration setting is invalid; `setting` names it."""

    def __init__(self, setting: str, problem: str) -> None:
        self.setting, self.problem = setting, problem
        super().__init__(f"configuration setting {setting!r}: {problem}")


class _Unreachable(StreamError):
    """Nothing answered at `address` within the wait; subclasses name the thing and the fix."""

    what = "service"
    hint = ""

    def __init__(self, address: str, waited_s: float, detail: str = "") -> None:
        self.address = address
        extra = f" ({detail})" if detail else ""
        super().__init__(f"no {self.what} answered at {address} within {waited_s:.0f} s{extra}. {self.hint}")


class BrokerUnavailable(_Unreachable):
    """No Kafka broker answered at `address` within the wait."""

    what = "Kafka broker"
    hint = "Check --bootstrap, or run `stream broker` to start the embedded one."


class AuthenticationFailed(StreamError):
    """A Kafka broker answered at `address` but refused to authenticate this client."""

    def __init__(self, address: str, mechanism: str, user: str | None, cause: str) -> None:
        self.address = address
        who = f"as user {user!r} " if user else ""
        super().__init__(f"authentication failed at {address} {who}with SASL mechanism {mechanism}: {cause}. "
                         "Check the user name, the password ($STREAM_SASL_PASSWORD) and the mechanism "
                         "(--sasl-mechanism) the brokers accept.")


class SchedulerUnavailable(_Unreachable):
    """No Dask scheduler answered at `address` within the wait."""

    what = "Dask scheduler"
    hint = "Check --scheduler, or leave it out to start a local cluster."


class TopicMissing(StreamError):
    """A topic the pipeline needs is not on the broker."""

    def __init__(self, topic: str, existing: list[str], role: str = "input") -> None:
        self.topic = topic
        names = ", ".join(sorted(existing)) or "(none)"
        super().__init__(
            f"{role} topic {topic!r} does not exist; topics on the broker: {names}. "
            "Create it first (stream demo creates its own).")


class DecodeError(StreamError):
    """A value could not be decoded; the raw bytes are kept for the dead-letter path."""

    def __init__(self, reason: str, message: str, raw: bytes | None = None,
                 schema_id: int | None = None) -> None:
        self.reason = reason
        self.raw = raw
        self.schema_id = schema_id
        super().__init__(f"{reason}: {message}")


class EncodeError(StreamError):
    """A result could not be encoded with the sink schema."""


class NotKeyedError(StreamError):
    """A grouping key came from two input partitions: the input is not partitioned by the
    window's key, so each partition would emit its own partial result (raised while running)."""


class FatalError(StreamError):
    """The driver cannot go on safely (for example, outputs that could not be delivered)."""
