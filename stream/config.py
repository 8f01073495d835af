"""Configuration: frozen dataclasses validated at construction, naming the bad setting.

librdkafka settings pass through in one mapping (`KafkaConfig.extra`); the defaults here
suit both real Kafka and the embedded broker (docs/architecture.md and docs/brokers.md say why each is set).

>>> KafkaConfig("127.0.0.1:9092").client({"group.id": "g"})["group.id"]
'g'
>>> RunConfig(app_id="x", kafka=KafkaConfig("h:1"), workers=0)
Traceback (most recent call last):
...
stream.errors.ConfigError: configuration setting 'workers': must be >= 1, got 0
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields
from typing import Any, Mapping

from stream.errors import ConfigError
from stream.secrets import Secret, mask_secrets

# Why: the embedded broker answers fetches with very large batches and librdkafka then waits
# fetch.queue.backoff.ms (1 s by default) before the next fetch; a group join takes half the
# session timeout.
GUARANTEES = ("exactly_once", "at_least_once")
DEAD_LETTER_MAX_BYTES = 64 * 1024 * 1024
# Input is read read_committed: an upstream transactional producer's aborted records are never
# input. The changelog restore alone reads read_uncommitted (stream/sources/changelog.py).
CONSUMER_DEFAULTS: dict[str, Any] = {
    "isolation.level": "read_committed",
    "fetch.queue.backoff.ms": 10,
    "session.timeout.ms": 6000,
    "heartbeat.interval.ms": 1000,
}


def check_files(owner: Any, names: tuple[str, ...], prefix: str = "") -> None:
    """Fail, naming the setting, when one of `owner`'s file settings points at no file."""
    for name in names:
        path = getattr(owner, name)
        if path is not None and not os.path.isfile(path):
            raise ConfigError(prefix + name, f"file {path!r} does not exist")


def settings_from_env(prefix: str, names: tuple[str, ...], env: Mapping[str, str] | None = None,
             overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Settings `names` from the variables `prefix + NAME`, then `overrides` that are not
    None; empty values left out."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {n: env.get(prefix + n.upper()) for n in names}
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return {k: v for k, v in values.items() if v not in (None, "")}


PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER")


@dataclass(frozen=True)
class KafkaSecurity:
    """How every Kafka client authenticates and encrypts: `security.protocol`, SASL and TLS.

    Passwords are `Secret`s: masked wherever the config is shown, revealed only to the client
    constructors. OAUTHBEARER settings (`sasl.oauthbearer.*`) pass through `extra`.

    >>> KafkaSecurity("SASL_SSL", "SCRAM-SHA-512", "app", "pw").settings()["sasl.password"]
    Secret('******')
    >>> KafkaSecurity("SASL_SSL")
    Traceback (most recent call last):
    ...
    stream.errors.ConfigError: configuration setting 'sasl_mechanism': SASL_SSL needs one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER
    """

    protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: Secret | str | None = None
    ssl_ca_location: str | None = None
    ssl_certificate_location: str | None = None
    ssl_key_location: str | None = None
    ssl_key_password: Secret | str | None = None
    ssl_verify_hostname: bool = True

    def __post_init__(self) -> None:
        for name in ("sasl_password", "ssl_key_password"):  # workers read them from STREAM_<NAME>
            value = getattr(self, name)
            if value is not None and (not isinstance(value, Secret) or value.env is None):
                object.__setattr__(self, name, Secret(value, env=f"STREAM_{name.upper()}"))
        protocol = self.protocol.upper()
        object.__setattr__(self, "protocol", protocol)
        if protocol not in PROTOCOLS:
            raise ConfigError("security_protocol", f"must be one of {', '.join(PROTOCOLS)}, got {self.protocol!r}")
        if protocol.startswith("SASL"):
            if self.sasl_mechanism not in MECHANISMS:
                raise ConfigError("sasl_mechanism", f"{protocol} needs one of {', '.join(MECHANISMS)}"
                                  + (f", got {self.sasl_mechanism!r}" if self.sasl_mechanism else ""))
            if self.sasl_mechanism != "OAUTHBEARER" and not (self.sasl_username and self.sasl_password):
                raise ConfigError("sasl_username", f"{self.sasl_mechanism} needs a user name and a password "
                                  "(--sasl-username, and the password in $STREAM_SASL_PASSWORD)")
        elif self.sasl_mechanism:
            raise ConfigError("sasl_mechanism", f"is set but security_protocol is {protocol}; "
                              "use SASL_SSL (or SASL_PLAINTEXT)")
        check_files(self, ("ssl_ca_location", "ssl_certificate_location", "ssl_key_location"))
        if (self.ssl_certificate_location is None) != (self.ssl_key_location is None):
            raise ConfigError("ssl_key_location", "a client certificate needs its key, and a key its certificate")

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    def settings(self) -> dict[str, Any]:
        """The librdkafka settings, secrets still masked (`reveal_config` unmasks them)."""
        out: dict[str, Any] = {"security.protocol": self.protocol}
        if self.sasl_mechanism:
            out["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username:
            out["sasl.username"] = self.sasl_username
        if self.sasl_password is not None:
            out["sasl.password"] = self.sasl_password
        for key, value in (("ssl.ca.location", self.ssl_ca_location),
                           ("ssl.certificate.location", self.ssl_certificate_location),
                           ("ssl.key.location", self.ssl_key_location),
                           ("ssl.key.password", self.ssl_key_password)):
            if value is not None:
                out[key] = value
        if self.tls and not self.ssl_verify_hostname:
            out["ssl.endpoint.identification.algorithm"] = "none"
        return out

    def describe(self) -> str:
        """What a connection error should name: protocol and mechanism, never a secret."""
        return self.protocol + (f" with SASL mechanism {self.sasl_mechanism}" if self.sasl_mechanism else "")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> "KafkaSecurity":
        """Settings from STREAM_SECURITY_PROTOCOL, STREAM_SASL_MECHANISM, STREAM_SASL_USERNAME,
        STREAM_SASL_PASSWORD, STREAM_SSL_CA_LOCATION, STREAM_SSL_CERTIFICATE_LOCATION,
        STREAM_SSL_KEY_LOCATION and STREAM_SSL_KEY_PASSWORD; `overrides` (not None) win."""
        names = ("security_protocol", "sasl_mechanism", "sasl_username", "sasl_password",
                 "ssl_ca_location", "ssl_certificate_location", "ssl_key_location", "ssl_key_password")
        values = settings_from_env("STREAM_", names, env, overrides)
        protocol = values.pop("security_protocol", "PLAINTEXT")
        return cls(protocol, **values)


@dataclass(frozen=True)
class KafkaConfig:
    """Where the brokers are, how to authenticate, and librdkafka settings passed to every client."""

    bootstrap: str
    extra: Mapping[str, Any] = field(default_factory=dict)
    max_record_bytes: int = 1_048_576
    security: KafkaSecurity = field(default_factory=KafkaSecurity)

    def __post_init__(self) -> None:
        check_types(self)
        object.__setattr__(self, "extra", mask_secrets(self.extra))  # shown masked, however given
        if not self.bootstrap or any(not h.rpartition(":")[2].isdigit()
                                     for h in self.bootstrap.split(",")):
            raise ConfigError("bootstrap", f"expected HOST:PORT[,HOST:PORT...], got {self.bootstrap!r}")
        if not 1024 <= self.max_record_bytes <= DEAD_LETTER_MAX_BYTES:
            raise ConfigError("max_record_bytes", f"must be 1024..{DEAD_LETTER_MAX_BYTES}, "
                                                  f"got {self.max_record_bytes}")

    @property
    def has_credentials(self) -> bool:
        """True when any client setting is a secret (a password, a key's passphrase, ...)."""
        return any(isinstance(v, Secret) for v in self.client().values())

    def client(self, settings: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """A fresh librdkafka config dict: bootstrap, passthrough, then `settings`. librdkafka
        logs warnings and errors only (`log_level` 4; its info lines, such as a producer's
        "Purging 1 unserved events from background queue" when it is closed, are not news);
        `--kafka-config log_level=7` brings them back."""
        return {"bootstrap.servers": self.bootstrap, "log_level": 4, **self.security.settings(), **self.extra,
                **(settings or {})}

    def consumer(self, settings: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return self.client({**CONSUMER_DEFAULTS, **(settings or {})})

    def producer(self, settings: Mapping[str, Any] | None = None) -> dict[str, Any]:
        # dead letters keep an oversized record's original bytes, so the producer (and the
        # dead-letter and late topics) accept records up to DEAD_LETTER_MAX_BYTES
        # A bounded local queue: when the broker is slow, produce() blocks and the driver
        # stops planning, instead of buffering up to librdkafka's default 1 GB.
        return self.client({"enable.idempotence": True, "linger.ms": 5,
                            "message.max.bytes": DEAD_LETTER_MAX_BYTES,
                            "queue.buffering.max.kbytes": 2 * DEAD_LETTER_MAX_BYTES // 1024,
                            **(settings or {})})


@dataclass(frozen=True)
class DaskTLS:
    """Certificates for a `tls://` Dask scheduler (distributed's `Security`).

    >>> DaskTLS().enabled
    False
    """

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    def __post_init__(self) -> None:
        check_files(self, ("ca_file", "cert_file", "key_file"), "dask_tls.")
        if self.enabled and not (self.ca_file and self.cert_file and self.key_file):
            raise ConfigError("dask_tls", "a tls:// scheduler needs a CA file, a client certificate "
                              "and its key (--tls-ca, --tls-cert, --tls-key)")

    @property
    def enabled(self) -> bool:
        return any((self.ca_file, self.cert_file, self.key_file))

    def security(self) -> Any:
        """distributed's `Security` for these files (encryption required)."""
        from distributed.security import Security

        return Security(tls_ca_file=self.ca_file, tls_client_cert=self.cert_file,
                        tls_client_key=self.key_file, require_encryption=True)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> "DaskTLS":
        """From STREAM_DASK_TLS_CA_FILE, STREAM_DASK_TLS_CERT_FILE and STREAM_DASK_TLS_KEY_FILE;
        `overrides` (not None) win."""
        return cls(**settings_from_env("STREAM_DASK_TLS_", ("ca_file", "cert_file", "key_file"), env, overrides))


_KINDS = {"int": ((int,), "a whole number"), "float": ((int, float), "a number"), "str": ((str,), "a string")}


def check_types(owner: Any) -> None:
    """Fail, naming the setting, when a number or string setting holds another type (before a
    comparison would raise a bare TypeError).

    >>> RunConfig(app_id="x", kafka=KafkaConfig("h:1"), commit_interval_s="1")
    Traceback (most recent call last):
    ...
    stream.errors.ConfigError: configuration setting 'commit_interval_s': must be a number, got '1'
    """
    for f in fields(owner):
        value, declared = getattr(owner, f.name), str(f.type)
        kind = declared.removesuffix(" | None")
        if kind not in _KINDS or (value is None and declared.endswith("| None")):
            continue
        types, what = _KINDS[kind]
        if isinstance(value, bool) or not isinstance(value, types):
            raise ConfigError(f.name, f"must be {what}, got {value!r}")


APP_ID = re.compile(r"[A-Za-z0-9._-]{1,200}")
HOST = re.compile(r"[A-Za-z0-9.:-]{1,253}")


def _positive(name: str, value: float, minimum: float = 1) -> None:
    if value < minimum:
        raise ConfigError(name, f"must be >= {minimum}, got {value}")


@dataclass(frozen=True)
class RunConfig:
    """How one pipeline runs: application id, Kafka, Dask, metrics and pacing."""

    app_id: str
    kafka: KafkaConfig
    scheduler: str | None = None
    dask_tls: DaskTLS = field(default_factory=DaskTLS)
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    metrics_port: int | None = None
    metrics_addr: str = "127.0.0.1"  # loopback by default; 0.0.0.0 in a container
    commit_interval_s: float = 1.0
    range_records: int = 50_000  # a task of about 100-200 ms on the columnar path
    max_inflight: int = 0  # 0: three per worker
    advance_after_ms: int | None = None  # a partition quiet this long follows the wall clock
    connect_timeout_s: float = 10.0
    guarantee: str = "exactly_once"
    replica: int = 0
    takeover: bool = False  # start even if this app id and replica runs elsewhere (it is fenced)
    max_future_ms: int = 300_000  # event times further ahead of their Kafka timestamp: dead-lettered
    step_timeout_s: float = 30.0
    repartition_partitions: int = 0  # a re-keyed window's repartition topic; 0: as many as the input

    def __post_init__(self) -> None:
        check_types(self)
        if not APP_ID.fullmatch(self.app_id):
            raise ConfigError("app_id", "must be 1 to 200 letters, digits, '.', '_' or '-' (it names the "
                              f"consumer group and the <app-id>.changelog, .dlq and .late topics), got {self.app_id!r}")
        if not HOST.fullmatch(self.metrics_addr):
            raise ConfigError("metrics_addr", f"expected an IP address or a host name, got {self.metrics_addr!r}")
        _positive("workers", self.workers)
        _positive("range_records", self.range_records)
        _positive("commit_interval_s", self.commit_interval_s, 0.01)
        if self.advance_after_ms is not None:
            _positive("advance_after_ms", self.advance_after_ms, 0)
        _positive("connect_timeout_s", self.connect_timeout_s, 0.1)
        _positive("max_inflight", self.max_inflight, 0)
        _positive("repartition_partitions", self.repartition_partitions, 0)
        if self.guarantee not in GUARANTEES:
            raise ConfigError("guarantee", f"must be one of {', '.join(GUARANTEES)}, got {self.guarantee!r}")
        if not 0 <= self.replica < 1000:
            raise ConfigError("replica", f"must be 0..999, got {self.replica}")
        _positive("max_future_ms", self.max_future_ms, 0)
        _positive("step_timeout_s", self.step_timeout_s, 1)
        if self.metrics_port is not None and not 0 <= self.metrics_port < 65536:
            raise ConfigError("metrics_port", f"must be 0..65535, got {self.metrics_port}")
        if self.scheduler is not None and "://" not in self.scheduler:
            raise ConfigError("scheduler", f"expected an address like tcp://host:8786, got {self.scheduler!r}")
        tls = self.scheduler is not None and self.scheduler.startswith("tls://")
        if tls and not self.dask_tls.enabled:
            raise ConfigError("scheduler", f"{self.scheduler} is a TLS address: give its CA file, a client "
                              "certificate and its key (--tls-ca, --tls-cert, --tls-key)")
        if self.dask_tls.enabled and not tls:
            raise ConfigError("dask_tls", "certificates are set but the scheduler address is not tls://"
                              + (f" ({self.scheduler})" if self.scheduler else " (the local cluster needs none)"))

    @property
    def inflight(self) -> int:
        return self.max_inflight or 3 * self.workers

    @property
    def dead_letter_topic(self) -> str:
        return f"{self.app_id}.dlq"

    @property
    def late_topic(self) -> str:
        return f"{self.app_id}.late"

    @property
    def repartition_topic(self) -> str:
        """The internal topic a re-keyed window's records go through (`key_by`; the name
        `stream.windows.repartition.repartition_topic` gives the driver)."""
        return f"{self.app_id}.repartition.0"

    @property
    def changelog_topic(self) -> str:
        return f"{self.app_id}.changelog"

    @property
    def transactional_id(self) -> str:
        """Stable per application and replica, so a restarted driver fences its predecessor."""
        return f"{self.app_id}.{self.replica}"

    @property
    def exactly_once(self) -> bool:
        return self.guarantee == "exactly_once"
