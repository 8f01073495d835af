"""Kafka sinks: the at-least-once producer, and the transactional one for exactly-once.

Both produce results, dead letters, late records and changelog entries, and end an epoch
with `commit_epoch(offsets, session)`: at-least-once flushes and then commits the offsets;
exactly-once sends the offsets into the open transaction and commits it. Every step has a
deadline under the watchdog; a fenced producer or a step past its deadline is fatal.
"""

from __future__ import annotations

import logging
import time
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Callable, Iterable

from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition

from stream import faults
from stream.errors import FatalError
from stream.protocols import Session, StepGuard
from stream.records import TP
from stream.secrets import reveal_config

log = logging.getLogger(__name__)
_FENCED = {KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH,
           KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED}


def says_fenced(text: str) -> bool:
    """True when an error's text says a newer producer fenced this one. The embedded broker's
    answer to a fenced send_offsets_to_transaction comes with another code, as an abortable
    error ("There is a newer producer with the same transactionalId which fences the current
    one"), and aborting a fenced transaction there only times out.

    >>> says_fenced("Broker: There is a newer producer with the same transactionalId which fences the current one")
    True
    >>> says_fenced("Local: Timed out")
    False
    """
    text = text.lower()
    return "fenced" in text or "fences the current" in text


class _NoDeadline:
    """Steps without a deadline (a run under `stream run` passes its watchdog)."""

    def step(self, name: str, seconds: float) -> AbstractContextManager[None]:
        return nullcontext()


class KafkaSink:
    """Produce records; `flush` returns only when every one is acknowledged, or raises."""

    transactional = False
    on_abort: Callable[[], None] | None = None  # told of each aborted transaction (metrics)

    def __init__(self, config: dict[str, Any], watchdog: StepGuard | None = None,
                 step_timeout_s: float = 30.0) -> None:
        self._fatal_reason = ""  # librdkafka names the cause of a fatal error in its error event
        # Delivery reports only for failures: `_delivered` acts on nothing else, and a report
        # per record is a Python call per record in the driver (flush still waits for all).
        self._producer = Producer(reveal_config({"delivery.report.only.error": True, **config,
                                                 "error_cb": self._on_error}))
        self._errors: list[str] = []
        self._fatal: KafkaError | None = None
        self.address = config.get("bootstrap.servers", "?")
        self.watchdog: StepGuard = watchdog or _NoDeadline()
        self.step_timeout_s = step_timeout_s

    def _delivered(self, err: KafkaError | None, msg: Any) -> None:
        # never raise here: an exception in a delivery callback comes out of librdkafka mangled
        if err is not None:
            self._errors.append(f"{msg.topic()}[{msg.partition()}]: {err.str()}")
            if err.code() in _FENCED or err.fatal():
                self._fatal = self._fatal or err

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal() or err.code() == KafkaError._FATAL or err.code() in _FENCED:
            self._fatal_reason = self._fatal_reason or err.str()
        log.debug("producer error event: %s (code %s, fatal %s)", err.str(), err.code(), err.fatal())

    def _raise_fatal(self, err: KafkaError) -> None:
        # _FATAL and _STATE ("Erroneous state": the transaction failed, e.g. a produce request
        # was refused because a newer producer fenced this one) do not name their cause
        if err.code() in (KafkaError._FATAL, KafkaError._STATE) and not self._fatal_reason:
            try:
                self._producer.poll(0.2)  # serve the error event that names the cause
            except Exception:  # noqa: BLE001 - a fatal producer may raise here too: the cause is what matters
                pass
            if not self._fatal_reason:
                self._fatal_reason = self._ask_fatal_reason()
        # the cause may be in the error event, or in a delivery report served by that poll
        seen = [err] + ([self._fatal] if self._fatal is not None else [])
        if (any(e.code() in _FENCED or says_fenced(e.str()) for e in seen)
                or says_fenced(self._fatal_reason)
                or any(says_fenced(e) for e in self._errors)):  # a refused delivery said so
            raise FatalError(f"this producer was fenced ({err.str()}): another driver with the "
                             "same transactional id is running; this one stops")
        cause = f" ({self._fatal_reason})" if self._fatal_reason else ""
        raise FatalError(f"the producer failed fatally on {self.address}: {err.str()}{cause}")

    def _ask_fatal_reason(self) -> str:
        """The cause of a fatal error the error event has not named (see the subclass)."""
        return ""

    def _before_produce(self) -> None:
        pass

    def produce(self, topic: str, key: bytes | None, value: bytes | None,
                headers: tuple[tuple[str, bytes], ...] = (), partition: int | None = None) -> None:
        self.produce_many(topic, ((key, value),), headers, partition)

    def produce_many(self, topic: str, records: Iterable[tuple[bytes | None, bytes | None]],
                     headers: tuple[tuple[str, bytes], ...] = (), partition: int | None = None) -> None:
        """`produce` each (key, value) pair with the same headers, in one loop: what the driver
        does with a batch of window results, e.g. ``sink.produce_many("out", [(b"k", b"v")])``."""
        self._before_produce()
        send, delivered = self._producer.produce, self._delivered
        listed: list[tuple[str, str | bytes | None]] | None = list(headers) or None
        extra: dict[str, Any] = {} if partition is None else {"partition": partition}
        for key, value in records:
            while True:
                if self._fatal is not None:
                    self._raise_fatal(self._fatal)
                try:
                    send(topic, value=value, key=key, headers=listed, on_delivery=delivered, **extra)
                    break
                except BufferError:  # local queue full: serve deliveries, then try again
                    self._producer.poll(0.1)
                except KafkaException as exc:
                    self._raise_fatal(exc.args[0])

    def flush(self, timeout: float | None = None) -> None:
        timeout = self.step_timeout_s if timeout is None else timeout
        with self.watchdog.step("flush", timeout + 5):
            try:
                left = self._producer.flush(timeout)
            except (KafkaException, SystemError) as exc:
                # a fenced producer's flush raises, sometimes wrapped in a SystemError from a
                # delivery callback that the client called with the error already set
                cause = exc if isinstance(exc, KafkaException) else exc.__cause__
                if isinstance(cause, KafkaException):
                    self._raise_fatal(cause.args[0])
                if self._fatal is not None:
                    self._raise_fatal(self._fatal)
                # else let the error event name the cause (e.g. fenced); _raise_fatal serves it
                self._raise_fatal(KafkaError(KafkaError._FATAL, f"flushing failed: {exc}", fatal=True))
        if self._fatal is not None:
            self._raise_fatal(self._fatal)
        if left or self._errors:
            errors, self._errors = self._errors, []
            raise FatalError(f"{left} record(s) not acknowledged by {self.address} within "
                             f"{timeout:.0f} s; delivery errors: {errors[:5] or 'none'}. "
                             "Offsets were not committed; restart to resume from the last commit.")

    def commit_epoch(self, offsets: dict[TP, int], session: Session) -> None:
        """Flush everything produced, then commit `offsets` to the group."""
        self.flush()
        faults.point("after_offsets")
        faults.point("before_commit")
        with self.watchdog.step("commit_offsets", self.step_timeout_s):
            session.commit(offsets)
        faults.point("after_commit")

    def abort(self) -> None:
        """Nothing to undo without a transaction: produced records stay."""

    def close(self) -> None:
        """Deliver what is left and shut the client down now, so it is gone before a broker
        that is stopped next (no librdkafka disconnect lines at the end of a normal run)."""
        if self._fatal is not None:
            return  # a fenced or failed producer has nothing left to deliver
        try:
            self._producer.flush(5)
            self._producer.close()
        except Exception as exc:  # noqa: BLE001 - closing after a failure: report, do not mask the failure
            log.warning("closing the producer: %s", exc)


class TransactionalSink(KafkaSink):
    """One Kafka transaction per epoch: outputs, dead letters, late records, changelog, offsets."""

    transactional = True

    def __init__(self, config: dict[str, Any], watchdog: StepGuard | None = None,
                 step_timeout_s: float = 30.0) -> None:
        super().__init__(config, watchdog, step_timeout_s)
        self.transactional_id = config["transactional.id"]
        self._open = False
        self._call("init_transactions", self._producer.init_transactions)

    def _call(self, step: str, fn: Callable[[float], Any]) -> None:
        """Run one transaction step, retrying retriable errors until its deadline."""
        deadline = time.monotonic() + self.step_timeout_s
        with self.watchdog.step(step, self.step_timeout_s + 10):
            while True:
                try:
                    fn(max(1.0, deadline - time.monotonic()))
                    return
                except KafkaException as exc:
                    err = exc.args[0]
                    if err.code() in _FENCED or err.fatal() or says_fenced(err.str()):
                        self._raise_fatal(err)
                    if err.txn_requires_abort():
                        self.abort()
                        raise FatalError(f"{step}: the transaction must be aborted ({err.str()}); "
                                         "restart to resume from the last commit") from None
                    if not err.retriable() or time.monotonic() >= deadline:
                        raise FatalError(f"{step} did not succeed within {self.step_timeout_s:.0f} s "
                                         f"on {self.address} ({err.str()}); if another driver "
                                         f"uses transactional id {self.transactional_id!r}, "
                                         "this one was fenced") from None
                    log.warning("%s: %s; retrying", step, err.str())

    def _ask_fatal_reason(self) -> str:
        # A producer in the fatal state fails every transactional call at once with the
        # original error ("... fenced by a newer instance"), which a failed produce or flush
        # does not name and whose error event may not have been served yet.
        try:
            self._producer.abort_transaction(2.0)
        except KafkaException as exc:
            return exc.args[0].str()
        except Exception:  # noqa: BLE001 - only looking for a cause
            pass
        return ""

    def _before_produce(self) -> None:
        if not self._open:
            try:
                self._producer.begin_transaction()
            except KafkaException as exc:
                self._raise_fatal(exc.args[0])
            self._open = True

    def commit_epoch(self, offsets: dict[TP, int], session: Session) -> None:
        """Send `offsets` into the transaction with the group's metadata, then commit it."""
        self._before_produce()
        self.flush()
        tps = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        meta = session.group_metadata()
        self._call("send_offsets_to_transaction",
                   lambda t: self._producer.send_offsets_to_transaction(tps, meta, t))
        faults.point("after_offsets")
        faults.point("before_commit")
        self._call("commit_transaction", self._producer.commit_transaction)
        self._open = False
        faults.point("after_commit")

    def abort(self) -> None:
        if self._open and self._fatal is None:
            self._open = False
            try:
                with self.watchdog.step("abort_transaction", self.step_timeout_s + 10):
                    self._producer.abort_transaction(self.step_timeout_s)
            except KafkaException as exc:
                log.warning("abort_transaction: %s", exc.args[0].str())
                return
            if self.on_abort is not None:
                self.on_abort()

    def close(self) -> None:
        self.abort()
        super().close()
