"""Secrets (passwords, key passphrases, registry credentials) held so they are never shown.

A `Secret` prints as `******` in `repr`, `str`, f-strings, logs and tracebacks; only
`reveal()` gives the value, and only client construction calls it (`reveal_config`), at the
moment a librdkafka or schema registry client is built. Config dicts handed around the
program (to workers, into log lines, into error messages) keep the masked object.

>>> pw = Secret("hunter2")
>>> print(pw, repr(pw), f"{pw}", {"sasl.password": pw})
****** Secret('******') ****** {'sasl.password': Secret('******')}
>>> reveal_config({"sasl.password": pw, "acks": "all"})["sasl.password"]
'hunter2'
"""

from __future__ import annotations

import re
from typing import Any, Mapping

MASK = "******"


class Secret:
    """A string that does not show itself."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if isinstance(value, Secret):
            value = value.reveal()
        self._value = str(value)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret('{MASK}')"

    def __str__(self) -> str:
        return MASK

    def __format__(self, spec: str) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        # pickled to reach Dask workers inside a reader's config: the value must travel
        return (Secret, (self._value,))


def reveal_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a client config with every `Secret` replaced by its value (for constructors only)."""
    return {k: (v.reveal() if isinstance(v, Secret) else v) for k, v in config.items()}


def masked(text: str, secrets: list[Secret]) -> str:
    """`text` with every secret's value replaced by the mask (for messages from libraries)."""
    for s in secrets:
        if s:
            text = text.replace(s.reveal(), MASK)
    return text


SECRET_WORDS = ("password", "secret")
SECRET_KEYS = ("sasl.oauthbearer.config", "sasl.jaas.config")  # may carry a secret inside


def is_secret_key(key: str) -> bool:
    """True for a setting whose value must never be shown (by its name).

    >>> is_secret_key("sasl.password"), is_secret_key("sasl.oauthbearer.client.secret"), is_secret_key("acks")
    (True, True, False)
    """
    return any(word in key.lower() for word in SECRET_WORDS) or key in SECRET_KEYS


_SECRET_ARG = re.compile(r"((?:--?|\b)[\w.-]*(?:password|secret)[\w.-]*)(=|\s+)(\S+)", re.IGNORECASE)


def mask_arguments(text: str) -> str:
    """`text` (a command line, or a message quoting one) with the value after every option or
    KEY= that names a password or secret masked.

    >>> mask_arguments("unrecognized arguments: --sasl-password hunter2 --x 1")
    'unrecognized arguments: --sasl-password ****** --x 1'
    >>> mask_arguments("bad ssl.key.password=hunter2")
    'bad ssl.key.password=******'
    """
    return _SECRET_ARG.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)


def mask_secrets(settings: Mapping[str, Any]) -> dict[str, Any]:
    """`settings` with the value of every secret-named key wrapped in a `Secret`.

    >>> mask_secrets({"sasl.password": "pw", "linger.ms": "5"})
    {'sasl.password': Secret('******'), 'linger.ms': '5'}
    """
    return {k: Secret(v) if is_secret_key(k) and not isinstance(v, Secret) else v for k, v in settings.items()}
