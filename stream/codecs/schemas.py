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
