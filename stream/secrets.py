"""Secrets (passwords, key passphrases, registry credentials) held so they are never shown.

A `Secret` prints as `******` in `repr`, `str`, f-strings, logs and tracebacks; only
`reveal()` gives the value, and only client construction calls it (`reveal_config`), at the
moment a librdkafka or schema registry client is built. Config dicts handed around the
program (to workers, into log lines, into error messages) keep the masked object.

A secret never travels: pickled (into a Dask task), it is only the name of the environment
variable it comes from (`env`), and a worker reads the value from its own environment. The
local cluster's workers get them at start (`worker_environment`); the workers of an existing
cluster are given them by their operator. A secret without such a name cannot be pickled.

>>> pw = Secret("hunter2")
>>> print(pw, repr(pw), f"{pw}", {"sasl.password": pw})
****** Secret('******') ****** {'sasl.password': Secret('******')}
>>> reveal_config({"sasl.password": pw, "acks": "all"})["sasl.password"]
'hunter2'
"""

from __future__ import annotations

import os
import re
from typing import Any, Mapping

MASK = "******"


_EXPORTED: dict[str, str] = {}  # env name -> value, of every secret made in this process


class Secret:
    """A string that does not show itself; `env` names the variable a worker reads it from
    (with `prefix` in front, which is not secret: e.g. ``user:`` of ``user:password``)."""

    __slots__ = ("_value", "env", "prefix")
    env: str | None
    prefix: str

    def __init__(self, value: str | Secret | None, env: str | None = None, prefix: str = "") -> None:
        if isinstance(value, Secret):
            env, prefix, value = env or value.env, prefix or value.prefix, value.reveal()
        self._value = None if value is None else str(value)
        self.env, self.prefix = env, prefix
        if env is not None and self._value is not None:
            _EXPORTED[env] = self._value[len(prefix):] if self._value.startswith(prefix) else self._value

    def reveal(self) -> str:
        if self._value is None:  # a reference that travelled: the value is this process's
            value = os.environ.get(self.env or "")
            if value is None:
                from stream.errors import ConfigError
                raise ConfigError(self.env or "secret", "is not set in this Dask worker's environment: "
                                  "give the workers the credentials in theirs (the local cluster "
                                  "gets them from the driver at start)")
            return self.prefix + value
        return self._value

    def __repr__(self) -> str:
        return f"Secret('{MASK}')"

    def __str__(self) -> str:
        return MASK

    def __format__(self, spec: str) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and (other._value, other.prefix) == (self._value, self.prefix)

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __bool__(self) -> bool:
        return self._value is None or bool(self._value)

    def __reduce__(self) -> tuple[Any, tuple[None, str, str]]:
        """Pickled (into a Dask task), a secret is only its variable's name, never its value."""
        if self.env is None:
            raise TypeError("a secret without an environment variable name cannot be sent to a "
                            "Dask worker; give it one (Secret(value, env='STREAM_...'))")
        return (Secret, (None, self.env, self.prefix))


def worker_environment() -> dict[str, str]:
    """Every secret made in this process, by the name of its variable: the environment to
    give worker processes started from here (the local cluster), so they can read them."""
    return dict(_EXPORTED)


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


def env_name(key: str) -> str:
    """The variable a worker reads a librdkafka secret setting from.

    >>> env_name("sasl.oauthbearer.client.secret")
    'STREAM_KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET'
    """
    return "STREAM_KAFKA_" + re.sub(r"[^A-Za-z0-9]", "_", key).upper()


def mask_secrets(settings: Mapping[str, Any]) -> dict[str, Any]:
    """`settings` with the value of every secret-named key wrapped in a `Secret` (named by
    `env_name`, so it can reach workers through their environment).

    >>> mask_secrets({"sasl.password": "pw", "linger.ms": "5"})
    {'sasl.password': Secret('******'), 'linger.ms': '5'}
    """
    return {k: Secret(v, env=v.env if isinstance(v, Secret) and v.env else env_name(k)) if is_secret_key(k) else v
            for k, v in settings.items()}
