"""The changelog's state format: typed, versioned values that decoding cannot turn into code.

Format 1 is MessagePack (binary, with floats as IEEE doubles) in which every map is a
one-field tag: `{"t": [...]}` a tuple, `{"d": [[k, v], ...]}` a dict (its keys need not be
strings), `{"i": "<digits>"}` an integer beyond 64 bits and `{"x": ["<name>", <bytes>]}` a
value of a registered type (a sketch, or a user's accumulator class) in its own bytes.
Numbers, strings, bytes, booleans, None and lists are MessagePack's own. A dict whose values
are lists of one length (a pane's accumulators per key) is stored by column,
`{"tbl": [keys, columns]}` (`{"tblt": ...}` when the values are tuples), and a column of equally long tuples of plain values as
`{"T": [their columns]}`, so most columns are arrays of numbers that pack and unpack at C
speed. Decoding only ever builds these, and calls the decoder registered for a name; an
unknown name, an extension type, or bytes that are not format 1 are an error that names
what was found (a pickle, as written before format 1, is recognised and never loaded).
MessagePack is here because `distributed` already depends on it and it is fast; JSON (the
first version of this module) spent 4 times longer on a pane of 20,000 keys.

>>> value = {"u1": (2.5, 3), ("a", 1): [None, b"x"], "big": 2**70}
>>> decode(encode(value)) == value
True
>>> encode(object())
Traceback (most recent call last):
...
stream.codecs.state.StateFormatError: a value of type object cannot be stored in the changelog: use numbers, strings, bytes, lists, tuples and dicts, or register the type with stream.codecs.state.register(object, name, to_bytes, from_bytes)
"""

from __future__ import annotations

from typing import Any, Callable

import msgpack

from stream.errors import StreamError

VERSION = 1
_PICKLE_PREFIX = b"\x80"  # every pickle of protocol 2 or later starts with the PROTO opcode


class StateFormatError(StreamError):
    """A value cannot be stored in, or read from, the changelog's state format."""


_encoders: dict[type, tuple[str, Callable[[Any], bytes]]] = {}
_decoders: dict[str, Callable[[bytes], Any]] = {}


def register(cls: type, name: str, to_bytes: Callable[[Any], bytes], from_bytes: Callable[[bytes], Any]) -> None:
    """Store values of `cls` as `to_bytes(value)` under `name`; `from_bytes` reads them back.

    >>> class Point(tuple): pass
    >>> register(Point, "example.point", lambda p: bytes(p), lambda b: Point(b))
    >>> type(decode(encode([Point((1, 2))]))[0]).__name__
    'Point'
    """
    _encoders[cls] = (name, to_bytes)
    _decoders[name] = from_bytes


def plain(value: Any) -> Any:
    """`value` as MessagePack-native data with tags; StateFormatError for a type it cannot hold."""
    kind = type(value)
    if kind is int:
        return value if -2**63 <= value < 2**64 else {"i": str(value)}
    if kind is str or kind is float or kind is bool or kind is bytes or value is None:
        return value
    if kind is list:
        return [plain(v) for v in value]
    if kind is tuple:
        return {"t": [plain(v) for v in value]}
    if kind is dict:
        return {"d": [[plain(k), plain(v)] for k, v in value.items()]}
    registered = _encoders.get(kind)
    if registered is not None:
        return {"x": [registered[0], bytes(registered[1](value))]}
    item = getattr(value, "item", None)  # a numpy scalar: its Python number
    if item is not None and kind.__module__ == "numpy":
        return plain(item())
    raise StateFormatError(
        f"a value of type {kind.__qualname__} cannot be stored in the changelog: use numbers, strings, bytes, "
        f"lists, tuples and dicts, or register the type with "
        f"stream.codecs.state.register({kind.__qualname__}, name, to_bytes, from_bytes)")


_SCALARS = frozenset({str, int, float, bool, bytes, type(None)})


def _column(values: tuple[Any, ...]) -> Any:
    """One column of a table: as is when all plain, by sub-column when all tuples of a length."""
    kinds = set(map(type, values))
    if kinds <= _SCALARS:
        return values
    if kinds == {tuple} and len(set(map(len, values))) == 1 and values[0]:
        parts = list(zip(*values))
        if all(set(map(type, part)) <= _SCALARS for part in parts):
            return {"T": parts}
    return [plain(v) for v in values]


_TABLES: dict[type, str] = {list: "tbl", tuple: "tblt"}  # the type of a table's rows: its tag


def _table(value: dict[Any, Any]) -> Any:
    rows = list(value.values())
    kinds = set(map(type, rows))
    tag = _TABLES.get(kinds.pop()) if len(kinds) == 1 else None
    if tag is None or len(set(map(len, rows))) != 1 or not rows[0]:
        return None
    return {tag: [_column(tuple(value)), [_column(c) for c in zip(*rows)]]}


def _untable(keys: list[Any], columns: list[list[Any]], row: type = list) -> dict[Any, Any]:
    if any(len(c) != len(keys) for c in columns):
        raise StateFormatError("a table whose columns are not as long as its keys")
    return dict(zip(keys, map(row, zip(*columns))))


def _tagged(obj: dict[str, Any]) -> Any:
    if len(obj) == 1:
        (tag, body), = obj.items()
        if tag == "t":
            return tuple(body)
        if tag == "T":
            return list(zip(*body))
        if tag == "tbl" or tag == "tblt":
            keys, columns = body
            return _untable(keys, columns, tuple if tag == "tblt" else list)
        if tag == "d":
            return {k: v for k, v in body}  # a tuple key is already a tuple: tags decode inside out
        if tag == "i":
            return int(body)
        if tag == "x":
            decoder = _decoders.get(body[0])
            if decoder is None:
                raise StateFormatError(f"a stored value of type {body[0]!r}, which this program has not registered "
                                       "(import the module that defines its aggregation)")
            try:
                return decoder(body[1])
            except Exception as exc:  # noqa: BLE001 - the registered decoder refused its bytes
                raise StateFormatError(f"a stored {body[0]!r} value that its decoder refused: {exc}") from None
    raise StateFormatError(f"an untagged map {sorted(map(str, obj))} is not state format {VERSION}")


def _no_extension(code: int, data: bytes) -> Any:
    raise StateFormatError(f"a MessagePack extension type {code}, which state format {VERSION} never writes")


def encode(value: Any) -> bytes:
    """`value` in state format 1 (tagged MessagePack; a table by column).

    >>> msgpack.unpackb(encode({"u1": [2, (1.5, 2)], "u2": [1, (0.5, 1)]}))
    {'tbl': [['u1', 'u2'], [[2, 1], {'T': [[1.5, 0.5], [2, 1]]}]]}
    """
    table = _table(value) if type(value) is dict else None
    if table is not None:
        try:
            return bytes(msgpack.packb(table, use_bin_type=True))
        except OverflowError:  # an integer beyond 64 bits in a plain column: tag it
            pass
    return bytes(msgpack.packb(plain(value), use_bin_type=True))


def is_pickle(raw: bytes | None) -> bool:
    """Whether `raw` starts as a pickle does (never a format 1 value or key)."""
    return raw is not None and raw[:1] == _PICKLE_PREFIX


def decode(raw: bytes) -> Any:
    """The value `encode` wrote; StateFormatError for anything else, a pickle included."""
    if is_pickle(raw):
        raise StateFormatError("it is a pickle, the format before state format 1; it is not loaded")
    try:
        return msgpack.unpackb(raw, object_hook=_tagged, ext_hook=_no_extension, strict_map_key=False,
                               use_list=True, raw=False)
    except (ValueError, TypeError, IndexError, KeyError, msgpack.UnpackException) as exc:  # a malformed body
        raise StateFormatError(f"it is not state format {VERSION} ({type(exc).__name__}: {exc})") from None


def check_storable(value: Any, what: str) -> None:
    """Raise StateFormatError naming `what` if `value` cannot be stored.

    >>> check_storable({1: (0.0, 0)}, "mean(x)")
    >>> check_storable({object()}, "distinct(x)")
    Traceback (most recent call last):
    ...
    stream.codecs.state.StateFormatError: distinct(x): a value of type set cannot be stored in the changelog: use numbers, strings, bytes, lists, tuples and dicts, or register the type with stream.codecs.state.register(set, name, to_bytes, from_bytes)
    """
    try:
        plain(value)
    except StateFormatError as exc:
        raise StateFormatError(f"{what}: {exc}") from None
