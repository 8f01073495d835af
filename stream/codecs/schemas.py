"""Finding and loading `.avsc` files, parsed once.

A relative path is looked up in the working directory first, then in the project's
shipped `schemas/` folder.

>>> load_schema("schemas/payment.avsc")["name"]
'Payment'
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from stream.errors import PipelineError

SHIPPED = Path(__file__).resolve().parents[2] / "schemas"


def resolve_schema_path(path: str | Path) -> Path:
    """The file a schema path names, or a PipelineError listing where it looked."""
    p = Path(path)
    candidates = [p] if p.is_absolute() else [Path.cwd() / p, SHIPPED / p.name]
    for c in candidates:
        if c.is_file():
            return c
    tried = ", ".join(str(c) for c in candidates)
    raise PipelineError(f"schema file {str(path)!r} not found (looked in: {tried})")


@lru_cache(maxsize=64)
def _load(path: str) -> str:
    return Path(path).read_text()


def load_schema(path: str | Path) -> dict[str, Any]:
    """Read and JSON-parse an `.avsc` file (cached by path)."""
    resolved = resolve_schema_path(path)
    try:
        return json.loads(_load(str(resolved)))
    except json.JSONDecodeError as exc:
        raise PipelineError(f"schema file {resolved} is not valid JSON: {exc}") from exc


def field_names(schema: dict[str, Any]) -> list[str]:
    """Top-level field names of a record schema."""
    return [f["name"] for f in schema.get("fields", [])]


def required_fields(schema: dict[str, Any]) -> list[str]:
    """Top-level fields without a default value."""
    return [f["name"] for f in schema.get("fields", []) if "default" not in f]


COMPLEX = ("array", "map", "record", "enum", "fixed")
# what an Avro writer of each kind accepts from a value of another kind
ACCEPTS = {"int": {"int", "long"}, "long": {"int", "long"},
           "float": {"int", "long", "float", "double"}, "double": {"int", "long", "float", "double"},
           "string": {"string", "enum"}, "enum": {"string", "enum"}, "bytes": {"bytes", "fixed"},
           "fixed": {"bytes", "fixed"}, "boolean": {"boolean"}, "array": {"array"}, "map": {"map"},
           "record": {"record"}, "null": {"null"}}


def kinds_of(avro_type: Any) -> frozenset[str]:
    """The kinds of value an Avro type holds: primitive names, or array, map, record, enum,
    fixed; a union's branches, null aside; empty when unknown (a named type's reference).

    >>> sorted(kinds_of(["null", "double"])), sorted(kinds_of({"type": "long", "logicalType": "timestamp-millis"}))
    (['double'], ['long'])
    """
    if isinstance(avro_type, list):
        return frozenset().union(*(kinds_of(t) for t in avro_type if t != "null"))
    if isinstance(avro_type, dict):
        return kinds_of(avro_type["type"]) if avro_type["type"] not in COMPLEX else frozenset({avro_type["type"]})
    return frozenset({avro_type}) if avro_type in ACCEPTS else frozenset()


def field_kinds(schema: dict[str, Any]) -> dict[str, frozenset[str]]:
    """Each top-level field's kinds (`kinds_of`)."""
    return {f["name"]: kinds_of(f["type"]) for f in schema.get("fields", [])}


def fits(value_kinds: frozenset[str], avro_type: Any) -> bool:
    """True unless a value of one of `value_kinds` cannot be written as `avro_type` (unknown
    kinds on either side fit).

    >>> fits(frozenset({"double"}), "string"), fits(frozenset({"long"}), ["null", "double"])
    (False, True)
    """
    target = kinds_of(avro_type)
    if not value_kinds or not target:
        return True
    return all(any(k in ACCEPTS[t] for t in target) for k in value_kinds if k in ACCEPTS)
