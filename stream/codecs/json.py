"""JSON values: one UTF-8 JSON object per Kafka value, optionally checked against a schema.

The schema, when given, is an Avro record schema (the same `.avsc` files the Avro codec
reads) used as a declaration: decoding fills the defaults of missing fields and rejects a
value whose fields do not fit their types (`schema_mismatch`); encoding refuses a record the
schema does not accept. Without a schema any JSON object passes. Every codec follows the
same protocol (docs/codecs.md): `decode(bytes) -> dict`, `encode(dict) -> bytes`, `fields`.

>>> c = JsonCodec({"type": "record", "name": "P", "fields": [
...     {"name": "a", "type": "long"}, {"name": "b", "type": "string", "default": "x"}]})
>>> c.decode(b'{"a": 7}')
{'a': 7, 'b': 'x'}
>>> c.encode({"a": 7, "b": "é"})
b'{"a":7,"b":"\\xc3\\xa9"}'
>>> c.decode(b'{"a": "seven"}')
Traceback (most recent call last):
...
stream.errors.DecodeError: schema_mismatch: the value does not fit schema P (field 'a')
"""

from __future__ import annotations

import json
import math
from typing import Any

import fastavro
from fastavro.validation import ValidationError, validate

from stream.errors import DecodeError, EncodeError


class JsonCodec:
    """Encode and decode JSON objects; with `schema`, checked against an Avro record schema."""

    def __init__(self, schema: dict[str, Any] | None = None) -> None:
        self.schema = schema
        self._parsed: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {"schema": self.schema}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["schema"])  # type: ignore[misc]  # rebuilt from its picklable state

    def __repr__(self) -> str:
        return f"JsonCodec({(self.schema or {}).get('name', 'any object')})"

    @property
    def fields(self) -> list[str] | None:
        """Field names of the records this codec yields (None without a schema)."""
        return [f["name"] for f in self.schema["fields"]] if self.schema is not None else None

    def _checked(self, record: dict[str, Any]) -> str | None:
        """None when `record` fits the schema (defaults filled in place), else the field that does not."""
        if self.schema is None:
            return None
        if self._parsed is None:
            self._parsed = fastavro.parse_schema(self.schema)
        for f in self.schema["fields"]:
            if f["name"] not in record and "default" in f:
                record[f["name"]] = f["default"]
        for f in self.schema["fields"]:
            if f["name"] not in record:
                return f["name"]
        try:
            validate(record, self._parsed)
        except ValidationError as exc:
            where = exc.errors[0].field if exc.errors else None  # "[namespace.]Name.field"
            return (where or "?").rpartition(".")[2]
        return None

    def decode(self, data: bytes | None) -> dict[str, Any]:
        """Bytes to a record; raises DecodeError with a stable reason."""
        if data is None:
            raise DecodeError("tombstone", "null value", None)
        try:
            record = json.loads(data)
        except (UnicodeDecodeError, ValueError) as exc:
            raise DecodeError("decode_failed", f"not JSON: {exc}", data) from None
        if not isinstance(record, dict):
            raise DecodeError("decode_failed", f"expected a JSON object, got {type(record).__name__}", data)
        wrong = self._checked(record)
        if wrong is not None:
            raise DecodeError("schema_mismatch", f"the value does not fit schema "
                              f"{(self.schema or {}).get('name', '?')} (field {wrong!r})", data)
        return record

    def encode(self, record: dict[str, Any]) -> bytes:
        """A record to compact UTF-8 JSON; raises EncodeError naming the problem (NaN and
        infinities are not JSON)."""
        record = dict(record)
        wrong = self._checked(record)
        if wrong is not None:
            raise EncodeError(f"cannot encode {record!r:.200} with {self!r}: field {wrong!r} does not fit")
        try:
            return json.dumps(record, separators=(",", ":"), ensure_ascii=False, allow_nan=False,
                              default=_plain).encode()
        except (TypeError, ValueError) as exc:
            raise EncodeError(f"cannot encode {record!r:.200} as JSON: {exc}") from exc


def _plain(value: Any) -> Any:
    """JSON for the few non-JSON values results hold (tuples are lists already)."""
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{value} is not JSON")
    raise TypeError(f"{type(value).__name__} is not JSON")
