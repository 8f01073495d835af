"""The changelog's state format: typed, versioned values that decoding cannot turn into code.

Format 1 is JSON in which every JSON object is a one-field tag: `{"t": [...]}` a tuple,
`{"d": [[k, v], ...]}` a dict (its keys need not be strings), `{"b": "<base64>"}` bytes and
`{"x": ["<name>", "<base64>"]}` a value of a registered type (a sketch, or a user's
accumulator class) in its own bytes. Numbers, strings, booleans, None and lists are JSON's
own. Decoding only ever builds these, and calls the decoder registered for a name; an unknown
name, or bytes that are not format 1, are an error that names what was found (a pickle, as
written before format 1, is recognised and never loaded).

>>> raw = encode({"u1": (2.5, 3), ("a", 1): [None, b"x"]})
>>> raw
b'{"d":[["u1",{"t":[2.5,3]}],[{"t":["a",1]},[null,{"b":"eA=="}]]]}'
>>> decode(raw) == {"u1": (2.5, 3), ("a", 1): [None, b"x"]}
True
>>> encode(object())
Traceback (most recent call last):
...
stream.state_format.StateFormatError: a value of type object cannot be stored in the changelog: use numbers, strings, bytes, lists, tuples and dicts, or register the type with stream.state_format.register(object, name, to_bytes, from_bytes)
"""

from __future__ import annotations

import base64
import json
from typing import Any, Callable

from stream.errors import StreamError

VERSION = 1
FORMAT_HEADER = "stream.state-format"
_PICKLE_PREFIX = b"\x80"  # every pickle of protocol 2 or later starts with the PROTO opcode


class StateFormatError(StreamError):
    """A value cannot be stored in, or read from, the changelog's state format."""


_encoders: dict[type, tuple[str, Callable[[Any], bytes]]] = {}
_decoders: dict[str, Callable[[bytes], Any]] = {}


def register(cls: type, name: str, to_bytes: Callable[[Any], bytes], from_bytes: Callable[[bytes], Any]) -> None:
    """Store values of `cls` as `to_bytes(value)` under `name`; `from_bytes` reads them back.

    >>> class Point(tuple): pass
    >>> register(Point, "example.point", lambda p: json.dumps(p).encode(), lambda b: Point(json.loads(b)))
    >>> type(decode(encode([Point((1, 2))]))[0]).__name__
    'Point'
    """
    _encoders[cls] = (name, to_bytes)
    _decoders[name] = from_bytes


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def plain(value: Any) -> Any:
    """`value` as JSON-native data with tags; raises StateFormatError for a type it cannot hold."""
    kind = type(value)
    if kind is str or kind is int or kind is float or kind is bool or value is None:
        return value
    if kind is list:
        return [plain(v) for v in value]
    if kind is tuple:
        return {"t": [plain(v) for v in value]}
    if kind is dict:
        return {"d": [[plain(k), plain(v)] for k, v in value.items()]}
    if kind is bytes:
        return {"b": _b64(value)}
    registered = _encoders.get(kind)
    if registered is not None:
        return {"x": [registered[0], _b64(registered[1](value))]}
    item = getattr(value, "item", None)  # a numpy scalar: its Python number
    if item is not None and kind.__module__ == "numpy":
        return plain(item())
    raise StateFormatError(
        f"a value of type {kind.__qualname__} cannot be stored in the changelog: use numbers, strings, bytes, "
        f"lists, tuples and dicts, or register the type with "
        f"stream.state_format.register({kind.__qualname__}, name, to_bytes, from_bytes)")


def _tagged(obj: dict[str, Any]) -> Any:
    if len(obj) == 1:
        (tag, body), = obj.items()
        if tag == "t":
            return tuple(body)
        if tag == "d":
            return {k: v for k, v in body}  # a tuple key is already a tuple: tags decode inside out
        if tag == "b":
            return base64.b64decode(body)
        if tag == "x":
            decoder = _decoders.get(body[0])
            if decoder is None:
                raise StateFormatError(f"a stored value of type {body[0]!r}, which this program has not registered "
                                       "(import the module that defines its aggregation)")
            return decoder(base64.b64decode(body[1]))
    raise StateFormatError(f"an untagged JSON object {sorted(obj)} is not state format {VERSION}")


def encode(value: Any) -> bytes:
    """`value` in state format 1 (compact JSON with tags)."""
    return json.dumps(plain(value), separators=(",", ":")).encode()


def decode(raw: bytes) -> Any:
    """The value `encode` wrote; StateFormatError for anything else, a pickle included."""
    if raw[:1] == _PICKLE_PREFIX:
        raise StateFormatError("it is a pickle, the format before state format 1; it is not loaded")
    try:
        return json.loads(raw, object_hook=_tagged)
    except (ValueError, TypeError, IndexError, KeyError) as exc:  # JSON syntax, or a malformed tag body
        raise StateFormatError(f"it is not state format {VERSION} ({type(exc).__name__}: {exc})") from None


def check_storable(value: Any, what: str) -> None:
    """Raise StateFormatError naming `what` if `value` cannot be stored.

    >>> check_storable({1: (0.0, 0)}, "mean(x)")
    >>> check_storable({object()}, "distinct(x)")
    Traceback (most recent call last):
    ...
    stream.state_format.StateFormatError: distinct(x): a value of type set cannot be stored in the changelog: use numbers, strings, bytes, lists, tuples and dicts, or register the type with stream.state_format.register(set, name, to_bytes, from_bytes)
    """
    try:
        plain(value)
    except StateFormatError as exc:
        raise StateFormatError(f"{what}: {exc}") from None
