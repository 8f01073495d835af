"""The pipeline definition: a pure, picklable value built step by step.

Each builder method returns a new Pipeline and checks what it can at definition time
(a window needs a key; aggregations name known fields; grace is not negative).

>>> from operators import Count, Sum
>>> p = (Pipeline("spend").source("payments", schema="schemas/payment.avsc", timestamp="ts")
...      .key_by("user_id")
...      .window(Tumbling(minutes=1), aggregate={"n": Count(), "total": Sum("amount")}))
>>> p.window_stage.spec.size_ms
60000
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from operators.aggregate import Aggregation, Count
from operators.base import Operator
from operators.transform import Filter, FlatMap, KeyBy, Map, Project, whole_stream
from stream.codecs.avro import AvroCodec
from stream.codecs.schemas import field_kinds, field_names, fits, load_schema, required_fields
from stream.codecs.state import StateFormatError, check_storable
from stream.errors import PipelineError
from stream.protocols import Codec, WindowState
from stream.windows.eventtime import Judge
from stream.windows.specs import CountWindow, Hopping, Session, Tumbling, WindowSpec, to_ms

__all__ = ["Pipeline", "SourceSpec", "SinkSpec", "WindowStage", "Tumbling", "Hopping"]



@dataclass(frozen=True)
class SourceSpec:
    """Input topics, their codec and where event time comes from (None: Kafka timestamp)."""

    topics: tuple[str, ...]
    codec: Codec
    timestamp: str | None = None
    out_of_order_ms: int = 0
    keyed_by: str | None = None  # the field the producers key (and so partition) the input by


@dataclass(frozen=True)
class WindowStage:
    """The window stage: spec, grace after the window end, and named aggregations."""

    spec: WindowSpec
    grace_ms: int
    aggregations: Mapping[str, Aggregation]
    early_ms: int | None = None  # emit partial results of open windows this often

    @property
    def worker_aggregations(self) -> list[Aggregation]:
        """What workers fold per (key, pane) (sessions and count windows add their own in front)."""
        return self.spec.worker_aggregations(self.aggregations)

    @property
    def by_count(self) -> bool:
        """Count windows: workers send one partial per input record, keyed by its offset."""
        return self.spec.by_count

    def new_store(self, early: bool = False) -> WindowState:
        """Empty window state for one input partition, built by the spec."""
        return self.spec.build_state(self.aggregations, self.grace_ms, early=early)

    def judge(self, out_of_order_ms: int) -> Judge:
        """The per-record judge of this stage's windows."""
        return self.spec.judge(self.grace_ms, out_of_order_ms)


@dataclass(frozen=True)
class Plan:
    """A pipeline checked to run (`Pipeline.validate()`): its source and its sink, both set."""

    source: SourceSpec
    sink: SinkSpec


@dataclass(frozen=True)
class SinkSpec:
    """Where a pipeline writes: the output topic and the codec of its values."""

    topic: str
    codec: Codec


FORMATS = ("avro", "json")


def make_codec(schema: str | Path | dict[str, Any] | None, codec: Codec | None,
               registry_url: str | None = None, registry_security: Any = None,
               format: str = "avro") -> Codec:
    """The codec for a topic: an explicit one, Avro from a schema (file path or dict), or
    JSON (`format="json"`, the schema optional: it declares and checks the fields)."""
    if codec is not None:
        return codec
    if format not in FORMATS:
        raise PipelineError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    parsed = schema if isinstance(schema, dict) or schema is None else load_schema(schema)
    if format == "json":
        if registry_url:
            raise PipelineError("registry_url goes with Avro values (the Confluent wire format), not format='json'")
        from stream.codecs.json import JsonCodec
        return JsonCodec(parsed)
    if parsed is None:
        raise PipelineError("give a schema (an .avsc path or dict) or a codec")
    if registry_url:
        from stream.codecs.registry import RegistryAvroCodec, RegistrySecurity  # confluent_kafka lazily
        security = registry_security if registry_security is not None else RegistrySecurity.from_env()
        return RegistryAvroCodec(registry_url, parsed, settings=security.settings())
    return AvroCodec(parsed)


@dataclass(frozen=True)
class Pipeline:
    """A named, immutable chain: source → operators → (key_by → window) → sink."""

    name: str
    source_spec: SourceSpec | None = None
    steps: tuple[Operator, ...] = ()
    window_stage: WindowStage | None = None
    result_steps: tuple[Operator, ...] = ()  # operators over window results, run by the driver
    sink_spec: SinkSpec | None = None
    rekey: bool = False  # window() reads the records re-keyed through a repartition topic
    _fields: tuple[str, ...] | None = field(default=None, repr=False)
    _kinds: Mapping[str, frozenset[str]] = field(default_factory=dict, repr=False)  # Avro kinds known

    def __post_init__(self) -> None:
        if not self.name or not all(c.isalnum() or c in "-_." for c in self.name):
            raise PipelineError(f"pipeline name {self.name!r} must be non-empty and use only "
                                "letters, digits, '-', '_' or '.' (it names topics and groups)")

    # -- source ---------------------------------------------------------------------------
    def source(self, topics: str | Iterable[str], schema: str | Path | dict[str, Any] | None = None, *,
               codec: Codec | None = None, timestamp: str | None = None,
               out_of_order: int | timedelta = 0, registry_url: str | None = None,
               registry_security: Any = None, format: str = "avro",
               keyed_by: str | None = None) -> Pipeline:
        """Read `topics`; event time from field `timestamp` (epoch ms) or the Kafka timestamp.
        Values are Avro (the default) or JSON objects (`format="json"`, schema optional).

        `keyed_by` declares the field the input's producers use as the Kafka key, which
        decides the partition: `window()` then refuses to group by anything else at once,
        instead of the run failing when it meets a key on two partitions.
        """
        names = (topics,) if isinstance(topics, str) else tuple(topics)
        if not names:
            raise PipelineError("source() needs at least one topic")
        c = make_codec(schema, codec, registry_url, registry_security, format)
        fields = getattr(c, "fields", None)  # a codec of your own may leave it out
        known = tuple(fields) if fields else None
        for option, name in (("timestamp", timestamp), ("keyed_by", keyed_by)):
            if name is not None and known is not None and name not in known:
                raise PipelineError(f"{option} field {name!r} is not in the source schema "
                                    f"(fields: {', '.join(known)})")
        ooo = to_ms(out_of_order, "out_of_order")
        if ooo < 0:
            raise PipelineError(f"out_of_order must be >= 0, got {ooo} ms")
        schema = getattr(c, "schema", None)
        return replace(self, source_spec=SourceSpec(names, c, timestamp, ooo, keyed_by), _fields=known,
                       _kinds=field_kinds(schema) if isinstance(schema, dict) else {})

    # -- operators ------------------------------------------------------------------------
    def _then(self, op: Operator, fields: tuple[str, ...] | None) -> Pipeline:
        if self.source_spec is None:
            raise PipelineError(f"{op.name}() before source(): define the source first")
        if self.sink_spec is not None:
            raise PipelineError(f"{op.name}() after sink() is not supported: sink() comes last")
        kinds = {f: self._kinds[f] for f in fields or () if f in self._kinds}
        if self.window_stage is not None:  # runs over the window results, in the driver
            if isinstance(op, KeyBy):
                raise PipelineError("key_by() after window() is not supported: results keep the window's key")
            return replace(self, result_steps=self.result_steps + (op,), _fields=fields, _kinds=kinds)
        return replace(self, steps=self.steps + (op,), _fields=fields, _kinds=kinds)

    def map(self, fn: Callable[[dict[str, Any]], dict[str, Any]]) -> Pipeline:
        return self._then(Map(fn), None)

    def filter(self, predicate: Callable[[dict[str, Any]], bool]) -> Pipeline:
        return self._then(Filter(predicate), self._fields)

    def flat_map(self, fn: Callable[[dict[str, Any]], Iterable[dict[str, Any]]]) -> Pipeline:
        return self._then(FlatMap(fn), None)

    def project(self, fields: Iterable[str]) -> Pipeline:
        wanted = tuple(fields)
        self._check_fields(wanted, "project()")
        return self._then(Project(wanted), wanted)

    def key_by(self, by: str | Callable[[dict[str, Any]], Any] | None, *,
               repartition: bool | None = None) -> Pipeline:
        """Group by a field or a function of the record; `None` groups the whole input (a
        global window: one result per window, its records from every input partition).

        A `window()` after it needs the input partitioned by that key. When the source is
        declared `keyed_by` another field, the records go through an internal repartition
        topic keyed by the new key first (`repartition=False` makes that an error instead);
        `repartition=True` re-keys an input whose keying is not declared.
        """
        if by is None:
            by = whole_stream
        elif isinstance(by, str):
            self._check_fields((by,), "key_by()")
        return self._then(KeyBy(by, repartition=repartition), self._fields)

    def apply(self, op: Operator) -> Pipeline:
        """Append any operator object (user-defined operators, `Score`).

        After window() it runs over the window results. An operator that knows what it adds
        (`output_fields(fields)`) is checked against the fields known here.
        """
        fields = None
        declared = getattr(op, "output_fields", None)
        if declared is not None and self._fields is not None:
            try:
                fields = declared(self._fields)
            except ValueError as exc:
                raise PipelineError(f"{op.name}: {exc}") from None
        return self._then(op, fields)

    def _check_fields(self, wanted: Iterable[str], where: str) -> None:
        if self._fields is None:
            return
        missing = [f for f in wanted if f not in self._fields]
        if missing:
            raise PipelineError(f"{where}: unknown field(s) {', '.join(map(repr, missing))}; "
                                f"records here have: {', '.join(self._fields)}")

    @property
    def key(self) -> KeyBy | None:
        """The last key_by() step, if any."""
        keys = [s for s in self.steps if isinstance(s, KeyBy)]
        return keys[-1] if keys else None

    @property
    def key_field(self) -> str:
        """Name of the key in window results: the key_by field, or "key"."""
        return (self.key.field if self.key is not None else None) or "key"

    @property
    def is_global(self) -> bool:
        """A global window (`key_by(None)`, or `window()` without `key_by`)."""
        return self.key is not None and self.key.by is whole_stream

    @property
    def result_key(self) -> str | None:
        """The key's field in window results; None for a global window, whose results have none."""
        return None if self.is_global else self.key_field

    @property
    def key_label(self) -> str:
        """The grouping key as errors name it: `'user_id'`, or the key function's name."""
        key = self.key
        if key is None:
            return "none"
        return repr(key.field) if key.field is not None else getattr(key.by, "__name__", repr(key.by))

    # -- window ---------------------------------------------------------------------------
    def window(self, spec: Hopping | Session | CountWindow, *, grace: int | timedelta = 0,
               aggregate: Mapping[str, Aggregation],
               early: int | timedelta | None = None) -> Pipeline:
        """Aggregate per key over event-time windows; results are emitted once, final.

        Without `key_by()` (or after `key_by(None)`) the window is global: one result per
        window over every input partition, through the repartition topic (see `key_by`).
        With `early` (a duration), windows that changed are also emitted every `early` as
        partial results (header `stream.result: partial`) before the final one.
        """
        if self.key is None and self.window_stage is None and self.source_spec is not None:
            return self.key_by(None).window(spec, grace=grace, aggregate=aggregate, early=early)
        if self.key is None:
            raise PipelineError("window() needs source() before it")
        if self.window_stage is not None:
            raise PipelineError("one window() per pipeline: chain a second pipeline through a topic")
        if not isinstance(spec, WindowSpec):
            raise PipelineError(f"window spec must be Tumbling, Hopping, Session or CountWindow, got {spec!r}")
        rekey = self._rekeys()
        if rekey:
            self._check_rekeyable(spec, aggregate)
        grace_ms = to_ms(grace, "grace")
        if grace_ms < 0:
            raise PipelineError(f"grace must be >= 0, got {grace_ms} ms")
        if not aggregate:
            raise PipelineError("window() needs at least one aggregation")
        for name, agg in aggregate.items():
            if not isinstance(agg, Aggregation):
                raise PipelineError(f"aggregation {name!r} is not an Aggregation: {agg!r}")
            if agg.field is not None:
                self._check_fields((agg.field,), f"aggregation {name!r}")
            try:  # its accumulator goes into the changelog: the format must hold it
                check_storable(agg.create(), f"aggregation {name!r} ({agg.name})")
            except StateFormatError as exc:
                raise PipelineError(str(exc)) from None
        early_ms = None if early is None else to_ms(early, "early")
        if early_ms is not None and early_ms <= 0:
            raise PipelineError(f"early must be a positive duration, got {early_ms} ms")
        stage = WindowStage(spec, grace_ms, dict(aggregate), early_ms)
        long = frozenset({"long"})
        keyed = () if self.is_global else (self.key_field,)
        kinds = {**{k: self._kinds.get(k, frozenset()) for k in keyed}, "window_start": long,
                 "window_end": long, **{name: agg.result_kinds(self._kinds.get(agg.field or "", frozenset()))
                                        for name, agg in aggregate.items()}}
        return replace(self, window_stage=stage, rekey=rekey, _kinds=kinds,
                       _fields=(*keyed, "window_start", "window_end", *aggregate))

    def _rekeys(self) -> bool:
        """Whether window() goes through a repartition topic (see `key_by`); a PipelineError
        when it must and may not."""
        assert self.key is not None
        if self.is_global:
            if self.key.repartition is False:
                raise PipelineError("a global window (key_by(None), or window() without key_by) reads every "
                                    "input partition through a repartition topic: leave repartition=False out")
            return True
        keyed_by = self.source_spec.keyed_by if self.source_spec is not None else None
        keyed_right = keyed_by is not None and self.key.field == keyed_by
        if self.key.repartition is None:
            return keyed_by is not None and not keyed_right
        if self.key.repartition and keyed_right:
            raise PipelineError(f"key_by({self.key_label}, repartition=True): the source is already "
                                f"keyed_by {keyed_by!r}; leave repartition out")
        if not self.key.repartition and keyed_by is not None and not keyed_right:
            raise PipelineError(
                f"window() groups by key_by({self.key_label}) but the source is keyed_by {keyed_by!r}, "
                "and repartition=False: window state lives with the input partition, so each "
                f"partition would emit its own partial result per key. Group by {keyed_by!r}, or "
                "let key_by() re-key the input through a repartition topic (leave repartition out)")
        return self.key.repartition

    @staticmethod
    def _check_rekeyable(spec: WindowSpec, aggregate: Mapping[str, Aggregation]) -> None:
        """A re-keyed window merges records of every input partition in the order stage 1
        wrote them: only tumbling windows of order-free aggregations give one result then."""
        if not isinstance(spec, Tumbling) and not (isinstance(spec, Hopping) and spec.size_ms == spec.slide_ms):
            raise PipelineError(f"a re-keyed window (through a repartition topic) must be Tumbling for now, "
                                f"got {spec!r}: key the input by the window's key, or use Tumbling")
        for name, agg in aggregate.items():
            if getattr(agg, "order_sensitive", False):
                raise PipelineError(
                    f"aggregation {name!r} ({agg.name}) depends on the order of records, which a re-keyed "
                    "window takes from several input partitions: its result would depend on how they "
                    "interleave. Key the input by the window's key, or use an order-free aggregation")

    def stages(self, topic: str) -> tuple[Pipeline, Pipeline]:
        """A re-keyed pipeline's two stages around the repartition `topic`: the first reads the
        source and writes envelopes keyed by the new key; the second windows them.

        >>> from operators import Count
        >>> s = {"type": "record", "name": "R", "fields": [{"name": "card", "type": "string"},
        ...      {"name": "user", "type": "string"}]}
        >>> p = (Pipeline("f").source("pay", s, keyed_by="user").key_by("card")
        ...      .window(Tumbling(seconds=1), aggregate={"n": Count()}))
        >>> one, two = p.stages("f.repartition.0")
        >>> one.sink_spec.topic, one.window_stage, two.source_spec.topics, two.key.field
        ('f.repartition.0', None, ('f.repartition.0',), 'card')
        """
        from stream.windows.repartition import EnvelopeCodec
        assert self.rekey and self.key is not None and self.source_spec is not None
        assert self.window_stage is not None
        judge = self.window_stage.judge(self.source_spec.out_of_order_ms)
        codec = EnvelopeCodec(judge, self._carried_fields())
        first = replace(self, window_stage=None, result_steps=(), sink_spec=SinkSpec(topic, codec), rekey=False)
        src = SourceSpec((topic,), EnvelopeCodec(), None, self.source_spec.out_of_order_ms, self.key.field)
        second = replace(self, source_spec=src, steps=(self.key,), rekey=False)
        return first, second

    def _carried_fields(self) -> tuple[str, ...] | None:
        """The fields a re-keyed window's stage 2 reads: the key's and those the aggregations
        take by the default `extract`; None (all) for a key function or an aggregation of
        its own `extract`."""
        assert self.key is not None and self.window_stage is not None
        if self.key.field is None and not self.is_global:
            return None
        need: set[str] = set() if self.key.field is None else {self.key.field}
        for agg in self.window_stage.worker_aggregations:
            if isinstance(agg, Count):
                continue
            if type(agg).extract is not Aggregation.extract or agg.field is None:
                return None
            need.add(agg.field)
        return tuple(sorted(need))

    def output_fields(self) -> list[str]:
        """Fields of each output record (empty when a step made them unknown)."""
        return list(self._fields or ())

    # -- sink -----------------------------------------------------------------------------
    def sink(self, topic: str, schema: str | Path | dict[str, Any] | None = None, *,
             codec: Codec | None = None, registry_url: str | None = None,
             registry_security: Any = None, format: str = "avro") -> Pipeline:
        """Write results to `topic` as Avro (the schema must hold every output field) or as
        JSON objects (`format="json"`; with a schema, checked the same way)."""
        if self.source_spec is None:
            raise PipelineError("sink() before source(): define the source first")
        c = make_codec(schema, codec, registry_url, registry_security, format)
        schema_dict = getattr(c, "schema", None)
        if isinstance(schema_dict, dict) and self._fields is not None:
            produced = set(self.output_fields())
            names = field_names(schema_dict)
            missing = [f for f in required_fields(schema_dict) if f not in produced]
            extra = [f for f in produced if f not in names]
            if missing or extra:
                raise PipelineError(
                    f"sink schema for {topic!r} does not match the results: "
                    f"results have {sorted(produced)}; schema lacks {extra or 'nothing'}, "
                    f"and needs {missing or 'nothing'} that results do not have")
        if isinstance(schema_dict, dict):
            self._check_kinds(topic, schema_dict)
        return replace(self, sink_spec=SinkSpec(topic, c))

    def _check_kinds(self, topic: str, schema: dict[str, Any]) -> None:
        """Fail when a result field's type cannot be written as the sink field's (a double
        total declared as a string); fields of unknown type are not checked."""
        declared = {f["name"]: f["type"] for f in schema.get("fields", [])}
        wrong = [f"{name!r} is {'/'.join(sorted(kinds))}, the schema says {declared[name]!r}"
                 for name, kinds in self._kinds.items() if name in declared and not fits(kinds, declared[name])]
        if wrong:
            raise PipelineError(f"sink schema for {topic!r} does not fit the results' types: {'; '.join(wrong)}")

    def validate(self) -> Plan:
        """The pipeline's source and sink, checked: PipelineError if it has no source or no sink.

        >>> Pipeline("p").validate()
        Traceback (most recent call last):
        ...
        stream.errors.PipelineError: pipeline 'p' has no source()
        """
        source = self.checked_source()
        if self.sink_spec is None:
            raise PipelineError(f"pipeline {self.name!r} has no sink()")
        return Plan(source, self.sink_spec)

    def checked_source(self) -> SourceSpec:
        """The source alone (what a worker reads with): PipelineError if it has no source()."""
        if self.source_spec is None:
            raise PipelineError(f"pipeline {self.name!r} has no source()")
        return self.source_spec
