"""Schemaless Avro with a local schema: one record per Kafka value.

Decoding is strict: a value must be consumed to its last byte, so trailing garbage is an
error rather than a silently wrong record. A whole-batch path (framing the values as one
Avro block) measured only 1.25x faster here and cannot tell which record of a batch was
corrupt, so the per-value path is kept.

>>> c = AvroCodec({"type": "record", "name": "P", "fields": [{"name": "a", "type": "long"}]})
>>> c.decode(c.encode({"a": 7}))
{'a': 7}
"""

from __future__ import annotations

import io
import re
from typing import Any, Mapping

import fastavro

from stream.errors import DecodeError, EncodeError


class AvroCodec:
    """Encode and decode schemaless Avro; the parsed schema is built once per process."""

    def __init__(self, schema: dict[str, Any], reader_schema: dict[str, Any] | None = None):
        self.schema = schema
        self.reader_schema = reader_schema
        self._parsed: Any = None
        self._parsed_reader: Any = None
        self._batch: Any = False  # the BatchEncoder (None: the schema has none), made when first used

    def __getstate__(self) -> dict[str, Any]:
        return {"schema": self.schema, "reader_schema": self.reader_schema}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["schema"], state["reader_schema"])  # type: ignore[misc]  # rebuilt from its picklable state

    def __repr__(self) -> str:
        return f"AvroCodec({self.schema.get('name', '?')})"

    def _schemas(self) -> tuple[Any, Any]:
        if self._parsed is None:
            self._parsed = fastavro.parse_schema(self.schema)
            if self.reader_schema is not None:
                self._parsed_reader = fastavro.parse_schema(self.reader_schema)
        return self._parsed, self._parsed_reader

    @property
    def fields(self) -> list[str]:
        """Field names of the records this codec yields."""
        return [f["name"] for f in (self.reader_schema or self.schema).get("fields", [])]

    def decode(self, data: bytes | None) -> dict[str, Any]:
        """Bytes to a record; raises DecodeError with a stable reason."""
        if data is None:
            raise DecodeError("tombstone", "null value", None)
        writer, reader = self._schemas()
        return read_exact(data, writer, reader)

    def encode_batch(self, records: list[dict[str, Any]]) -> list[bytes] | None:
        """Many records at once (`BatchEncoder`), or None: then encode them one by one."""
        batch = self._batch_encoder()
        return batch.encode(records) if batch is not None else None

    def encode_columns(self, columns: Mapping[str, list[Any]], n: int) -> list[bytes] | None:
        """`n` records given field by field (`BatchEncoder.encode_columns`), or None: then
        encode them one by one."""
        batch = self._batch_encoder()
        return batch.encode_columns(columns, n) if batch is not None else None

    def _batch_encoder(self) -> Any:
        if self._batch is False:
            from stream.codecs.avro_batch import BatchEncoder  # NumPy and polars: loaded when used

            self._batch = BatchEncoder.for_schema(self.schema)
        return self._batch

    def encode(self, record: dict[str, Any]) -> bytes:
        """A record to bytes; raises EncodeError naming the problem."""
        writer, _ = self._schemas()
        buf = io.BytesIO()
        try:
            fastavro.schemaless_writer(buf, writer, record)
        except Exception as exc:  # fastavro raises ValueError, TypeError, KeyError ...
            raise EncodeError(f"cannot encode {record!r:.200} with {self!r}: {exc}") from exc
        return buf.getvalue()


def encode_all(codec: Any, records: list[dict[str, Any]]) -> list[bytes | Exception]:
    """Each record's bytes, or the error that encoding it raised: in one batch when the
    codec can (`encode_batch`), else record by record.

    >>> c = AvroCodec({"type": "record", "name": "P", "fields": [{"name": "a", "type": "long"}]})
    >>> [type(v).__name__ for v in encode_all(c, [{"a": 1}, {"a": "x"}])]
    ['bytes', 'EncodeError']
    """
    batch = getattr(codec, "encode_batch", None)
    try:
        values = batch(records) if batch is not None else None
    except Exception:  # noqa: BLE001 - record by record, each record gets the error
        values = None
    if values is not None:
        return list(values)
    out: list[bytes | Exception] = []
    for record in records:
        try:
            out.append(codec.encode(record))
        except Exception as exc:  # noqa: BLE001 - the caller dead-letters the record with it
            out.append(exc)
    return out


_OBJECT = re.compile(r"<[^<>]* at 0x[0-9a-fA-F]+>")


def describe_failure(exc: BaseException, at: int, size: int) -> str:
    """A decoding error as a dead letter's message: no object addresses, never empty.

    >>> describe_failure(EOFError("cannot read double from <_io.BytesIO object at 0x7f01>"), 7, 7)
    'EOFError: cannot read double from the value (stopped at byte 7 of 7)'
    >>> describe_failure(EOFError(), 3, 3)
    'EOFError: the value ended early (stopped at byte 3 of 3)'
    """
    text = _OBJECT.sub("the value", str(exc)).strip() or "the value ended early"
    return f"{type(exc).__name__}: {text} (stopped at byte {at} of {size})"


def read_exact(data: bytes, writer: Any, reader: Any, skip: int = 0) -> dict[str, Any]:
    """Decode one schemaless record from `data[skip:]`, requiring every byte be used."""
    buf = io.BytesIO(data)
    buf.seek(skip)
    try:
        record: Any = fastavro.schemaless_reader(buf, writer, reader)
    except Exception as exc:  # EOFError, UnicodeDecodeError, IndexError, SchemaResolutionError ...
        raise DecodeError("decode_failed", describe_failure(exc, buf.tell(), len(data)), data) from exc
    if buf.tell() != len(data):
        raise DecodeError("trailing_bytes",
                          f"{len(data) - buf.tell()} bytes left after the record", data)
    return record
