"""Avro in the Confluent wire format through a schema registry.

Each value is a magic byte 0, a 4-byte big-endian schema id, then the Avro body. Writer
schemas are fetched by id once and cached; the reader schema (the local `.avsc`) resolves
them, so a writer that added a field with a default decodes fine. Encoding registers the
reader schema under `subject` once and prefixes its id.

>>> c = RegistryAvroCodec("http://registry:8081", {"type": "record", "name": "P", "fields": []})
>>> c.fields
[]
"""

from __future__ import annotations

import json
import logging
import struct
import time
from dataclasses import dataclass
from typing import Any, Mapping

import fastavro

from stream.codecs.avro import AvroCodec, read_exact
from stream.config import check_files, settings_from_env
from stream.errors import ConfigError, DecodeError, EncodeError, StreamError
from stream.secrets import Secret, masked, reveal_config

log = logging.getLogger(__name__)
MAGIC = 0
_HEADER = struct.Struct(">bI")


PASSWORD_ENV = "STREAM_REGISTRY_PASSWORD"  # where workers read the registry password


@dataclass(frozen=True)
class RegistrySecurity:
    """Basic auth and TLS for the schema registry client; the password stays a masked `Secret`.

    >>> RegistrySecurity("app", "pw").settings()["basic.auth.user.info"]
    Secret('******')
    """

    user: str | None = None
    password: Secret | str | None = None
    ssl_ca_location: str | None = None
    ssl_certificate_location: str | None = None
    ssl_key_location: str | None = None

    def __post_init__(self) -> None:
        if self.password is not None and (not isinstance(self.password, Secret) or self.password.env is None):
            object.__setattr__(self, "password", Secret(self.password, env=PASSWORD_ENV))
        if bool(self.user) != bool(self.password):
            raise ConfigError("registry_user", "basic auth needs both a user and a password "
                              "($STREAM_REGISTRY_USER and $STREAM_REGISTRY_PASSWORD)")
        check_files(self, ("ssl_ca_location", "ssl_certificate_location", "ssl_key_location"), "registry_")

    def settings(self) -> dict[str, Any]:
        """Settings for `confluent_kafka.schema_registry.SchemaRegistryClient`."""
        out: dict[str, Any] = {}
        if self.user and isinstance(self.password, Secret):
            out["basic.auth.user.info"] = Secret(f"{self.user}:{self.password.reveal()}", env=PASSWORD_ENV,
                                                 prefix=f"{self.user}:")
        for key, value in (("ssl.ca.location", self.ssl_ca_location),
                           ("ssl.certificate.location", self.ssl_certificate_location),
                           ("ssl.key.location", self.ssl_key_location)):
            if value is not None:
                out[key] = value
        return out

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "RegistrySecurity":
        """From STREAM_REGISTRY_USER, STREAM_REGISTRY_PASSWORD, STREAM_REGISTRY_SSL_CA_LOCATION,
        STREAM_REGISTRY_SSL_CERTIFICATE_LOCATION and STREAM_REGISTRY_SSL_KEY_LOCATION."""
        names = ("user", "password", "ssl_ca_location", "ssl_certificate_location", "ssl_key_location")
        return cls(**settings_from_env("STREAM_REGISTRY_", names, env))


class RegistryAvroCodec:
    """Encode and decode Confluent-framed Avro; registry clients are created per process."""

    def __init__(self, url: str, reader_schema: dict[str, Any], subject: str | None = None,
                 settings: dict[str, Any] | None = None, retry_s: float = 60.0) -> None:
        self.url = url
        self.retry_s = retry_s
        self.schema = reader_schema
        self.subject = subject or f"{reader_schema.get('name', 'value')}-value"
        self.settings = dict(settings or {})
        self._client: Any = None
        self._writers: dict[int, Any] = {}
        self._reader: Any = None
        self._encoder: tuple[int, AvroCodec] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"url": self.url, "schema": self.schema, "subject": self.subject,
                "settings": self.settings, "retry_s": self.retry_s}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["url"], state["schema"], state["subject"], state["settings"],  # type: ignore[misc]  # rebuilt from its picklable state
                      state.get("retry_s", 60.0))

    def __repr__(self) -> str:
        return f"RegistryAvroCodec({self.url}, subject={self.subject!r})"

    @property
    def fields(self) -> list[str]:
        return [f["name"] for f in self.schema.get("fields", [])]

    def _registry(self) -> Any:
        if self._client is None:
            from confluent_kafka.schema_registry import SchemaRegistryClient

            self._client = SchemaRegistryClient(reveal_config({"url": self.url, **self.settings}))
        return self._client

    def _masked(self, exc: BaseException) -> str:
        return masked(str(exc), [v for v in self.settings.values() if isinstance(v, Secret)])

    def _writer(self, schema_id: int, data: bytes) -> Any:
        writer = self._writers.get(schema_id)
        if writer is None:
            from confluent_kafka.schema_registry.error import SchemaRegistryError

            found = self._fetch(schema_id, data, SchemaRegistryError)
            writer = self._writers[schema_id] = fastavro.parse_schema(json.loads(found.schema_str))
        return writer

    def _fetch(self, schema_id: int, data: bytes, registry_error: type[Exception]) -> Any:
        """Get a writer schema; an unreachable registry is retried with backoff, never
        dead-lettered (the record is fine, the registry is not)."""
        deadline, pause = time.monotonic() + self.retry_s, 0.25
        while True:
            try:
                return self._registry().get_schema(schema_id)
            except registry_error as exc:
                if getattr(exc, "http_status_code", None) == 404:
                    raise DecodeError("unknown_schema_id", f"schema id {schema_id} is not in {self.url}",
                                      data, schema_id) from exc
                problem: Exception = exc
            except Exception as exc:  # noqa: BLE001 - connection refused, timeouts: the registry is away
                problem = exc
            if getattr(problem, "http_status_code", None) in (401, 403):
                raise StreamError(f"schema registry {self.url} refused the credentials "
                                  f"(HTTP {getattr(problem, 'http_status_code', '?')}); check $STREAM_REGISTRY_USER and "
                                  "$STREAM_REGISTRY_PASSWORD") from None
            if time.monotonic() + pause > deadline:
                raise StreamError(f"schema registry {self.url} unreachable for {self.retry_s:.0f} s "
                                  f"({type(problem).__name__}: {self._masked(problem)}); check the registry "
                                  "URL and its TLS settings") from None
            log.warning("schema registry %s: %s; retrying in %.1f s", self.url, self._masked(problem), pause)
            time.sleep(pause)
            pause = min(pause * 2, 5.0)

    def decode(self, data: bytes | None) -> dict[str, Any]:
        if data is None:
            raise DecodeError("tombstone", "null value", None)
        if len(data) < _HEADER.size or data[0] != MAGIC:
            raise DecodeError("bad_magic_byte", f"expected magic byte 0 and a schema id, got {data[:5]!r}", data)
        _, schema_id = _HEADER.unpack_from(data)
        if self._reader is None:
            self._reader = fastavro.parse_schema(self.schema)
        try:
            return read_exact(data, self._writer(schema_id, data), self._reader, skip=_HEADER.size)
        except DecodeError as exc:
            exc.schema_id = schema_id
            raise

    def encode_batch(self, records: list[dict[str, Any]]) -> list[bytes] | None:
        """Many records at once, each framed with the schema id; None: encode one by one."""
        schema_id, codec = self._registered()
        return self._framed(schema_id, codec.encode_batch(records))

    def encode_columns(self, columns: Mapping[str, list[Any]], n: int) -> list[bytes] | None:
        """`n` records given field by field, each framed with the schema id; None: encode
        one by one."""
        schema_id, codec = self._registered()
        return self._framed(schema_id, codec.encode_columns(columns, n))

    @staticmethod
    def _framed(schema_id: int, values: list[bytes] | None) -> list[bytes] | None:
        if values is None:
            return None
        header = _HEADER.pack(MAGIC, schema_id)
        return [header + v for v in values]

    def encode(self, record: dict[str, Any]) -> bytes:
        schema_id, codec = self._registered()
        return _HEADER.pack(MAGIC, schema_id) + codec.encode(record)

    def _registered(self) -> tuple[int, AvroCodec]:
        """The schema id (registered once per process) and the plain codec."""
        if self._encoder is None:
            from confluent_kafka.schema_registry import Schema

            try:
                schema_id = self._registry().register_schema(self.subject, Schema(json.dumps(self.schema), "AVRO"))
            except Exception as exc:  # noqa: BLE001 - any registry client error: name the subject and the URL
                raise EncodeError(f"cannot register the schema under {self.subject!r} at {self.url}: "
                                  f"{self._masked(exc)}") from None
            self._encoder = (schema_id, AvroCodec(self.schema))
        return self._encoder
