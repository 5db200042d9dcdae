"""The settings of the Confluent-compatible Schema Registry client: resolved once, in one place.

A registry in production sits behind TLS and wants credentials, and every place that talks to it
(the worker binding its schemas, the workflow client, ``streamflow schemas``) must get the same
ones. They come from three sources, each later one overriding the earlier ones for the keys it
sets, the order Kafka client settings follow (``kafka/settings.py``):

1. the ``[schema_registry]`` table of the config file (``--config streamflow.toml``, or
   ``$STREAMFLOW_CONFIG``), the same file whose ``[kafka]`` table configures the Kafka clients;
2. ``--registry-url`` on the command line;
3. ``STREAMFLOW_SCHEMA_REGISTRY_<KEY>`` environment variables, ``_`` for ``.``
   (``STREAMFLOW_SCHEMA_REGISTRY_SSL_CA_LOCATION`` → ``ssl.ca.location``), where secrets usually
   live; ``STREAMFLOW_SCHEMA_REGISTRY_USER_INFO`` is kept as the name of
   ``basic.auth.user.info``.

Unlike librdkafka, confluent-kafka's registry client takes a small fixed set of keys, so an
unknown one is refused here, naming it and its source, before any request is made. Secret values
(the password of the user info, bearer tokens and client secrets, a password in the URL) leave
this module only as ``***``; key and certificate files are passed on as paths, never read.

This module sits with the serdes, below ``runtime``, so it imports nothing from there: the two
TOML helpers it shares with ``kafka_settings`` are repeated rather than imported.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from streamflow.errors import ConfigError
from streamflow.kafka.settings import setting_text, toml_table

ENV_PREFIX = "STREAMFLOW_SCHEMA_REGISTRY_"
URL_ENV = "STREAMFLOW_SCHEMA_REGISTRY_URL"
USER_INFO_ENV = "STREAMFLOW_SCHEMA_REGISTRY_USER_INFO"
"""``user:password`` for HTTP basic authentication: the name it had before the generic rule."""
CONFIG_ENV = "STREAMFLOW_CONFIG"
"""The config file when no ``--config`` is given (the same variable ``kafka_settings`` reads)."""
TABLE = "schema_registry"

ALIASES = {USER_INFO_ENV: "basic.auth.user.info"}

KEYS: dict[str, str] = {
    "url": "the registry's address, https://host:port (comma-separated for several)",
    "basic.auth.user.info": "user:password for HTTP basic authentication",
    "basic.auth.credentials.source": "USER_INFO (basic.auth.user.info) or URL (https://user:pw@…)",
    "ssl.ca.location": "the CA file (or directory) that signed the registry's certificate",
    "ssl.certificate.location": "the client certificate (PEM) for mutual TLS",
    "ssl.key.location": "the client certificate's private key (PEM) for mutual TLS",
    "ssl.key.password": "the password of ssl.key.location, if it is encrypted",
    "bearer.auth.credentials.source": "STATIC_TOKEN, OAUTHBEARER or OAUTHBEARER_AZURE_IMDS",
    "bearer.auth.token": "the token (STATIC_TOKEN)",
    "bearer.auth.logical.cluster": "the registry's logical cluster id (bearer auth)",
    "bearer.auth.identity.pool.id": "the identity pool id (bearer auth)",
    "bearer.auth.client.id": "the OAuth client id (OAUTHBEARER)",
    "bearer.auth.client.secret": "the OAuth client secret (OAUTHBEARER)",
    "bearer.auth.scope": "the OAuth scope (OAUTHBEARER)",
    "bearer.auth.issuer.endpoint.url": "the OAuth token endpoint (OAUTHBEARER)",
    "bearer.auth.issuer.endpoint.query": "the token endpoint's query (OAUTHBEARER_AZURE_IMDS)",
    "timeout": "seconds one request may take",
    "max.retries": "retries of a failed request (connection errors, 5xx, 429)",
    "retries.wait.ms": "the first retry's backoff",
    "retries.max.wait.ms": "the longest backoff",
    "proxy": "an HTTP proxy, http://host:port",
}
"""Every key a source may set, with what it is for (the unknown-key error lists them)."""

_NUMBERS: dict[str, type[int] | type[float]] = {
    "timeout": float,
    "max.retries": int,
    "retries.wait.ms": int,
    "retries.max.wait.ms": int,
}
"""Keys the client wants as numbers (every source gives text)."""

_OURS = frozenset({"basic.auth.credentials.source"})
"""Understood here (Java clients' configs have it), not by the Python client: never passed on."""

_PATHS = ("ssl.ca.location", "ssl.certificate.location", "ssl.key.location")
_SECRET_MARKERS = ("password", "secret", "token", "basic.auth.user.info")


def is_secret(key: str) -> bool:
    """Whether ``key``'s value must never be shown."""
    return any(marker in key.lower() for marker in _SECRET_MARKERS)


def shown_url(url: str) -> str:
    """``url`` as a message may show it: a password in its user info replaced by ``***``."""
    shown = []
    for part in url.split(","):
        part = part.strip()
        try:
            split = urlsplit(part)
        except ValueError:
            shown.append("<unparsable url>")
            continue
        if split.password is not None:
            host = split.netloc.rpartition("@")[2]
            split = split._replace(netloc=f"{split.username}:***@{host}")
        shown.append(urlunsplit(split))
    return ",".join(shown)


@dataclass(frozen=True)
class RegistrySettings:
    """Resolved registry client settings, with the source of each key (for error messages).

    No ``url`` means no external registry: the app uses the Kafka-native one on its cluster.
    """

    values: Mapping[str, str] = field(default_factory=dict)
    sources: Mapping[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str | None:
        return self.values.get("url") or None

    @property
    def shown_url(self) -> str:
        """The URL as errors show it (no password)."""
        return shown_url(self.values.get("url", ""))

    @property
    def user(self) -> str | None:
        """Whom the registry is told we are: the user of the user info, or of the URL."""
        info = self.values.get("basic.auth.user.info")
        if info:
            return info.split(":", 1)[0]
        try:
            return urlsplit(self.values.get("url", "").split(",")[0].strip()).username
        except ValueError:
            return None

    def where(self, key: str) -> str:
        """``key (from SOURCE)``: what an error tells the user to check."""
        source = self.sources.get(key)
        return f"{key} (from {source})" if source else key

    def client_conf(self) -> dict[str, Any]:
        """The ``SchemaRegistryClient(conf)`` of these settings: numbers as numbers, our own
        keys checked and left out. Raises ConfigError naming the key and its source."""
        if not self.url:
            raise ConfigError(
                f"no schema registry url: set url in the [{TABLE}] table of the config file, "
                f"--registry-url or ${URL_ENV}"
            )
        conf: dict[str, Any] = {}
        for key, value in self.values.items():
            if key in _OURS:
                continue
            kind = _NUMBERS.get(key)
            if kind is None:
                conf[key] = value
                continue
            try:
                conf[key] = kind(value)
            except ValueError:
                raise ConfigError(
                    f"schema registry setting {self.where(key)} must be a number, not {value!r}"
                ) from None
        self._check_credentials()
        for key in _PATHS:
            path = self.values.get(key)
            if path and not Path(path).exists():
                raise ConfigError(
                    f"schema registry setting {self.where(key)}: {path} does not exist"
                )
        if "ssl.key.location" in conf and "ssl.certificate.location" not in conf:
            raise ConfigError(
                f"schema registry setting {self.where('ssl.key.location')} needs "
                "ssl.certificate.location too: the client certificate that key belongs to"
            )
        return conf

    def _check_credentials(self) -> None:
        info = self.values.get("basic.auth.user.info")
        if info is not None and ":" not in info:
            raise ConfigError(
                f"schema registry setting {self.where('basic.auth.user.info')} must be "
                "user:password (the value is not shown)"
            )
        source = self.values.get("basic.auth.credentials.source")
        if source is None:
            return
        where = self.where("basic.auth.credentials.source")
        in_url = self.user is not None and info is None
        if source.upper() == "USER_INFO" and info is None:
            raise ConfigError(f"{where} is USER_INFO but basic.auth.user.info is not set")
        if source.upper() == "URL" and (info is not None or not in_url):
            raise ConfigError(
                f"{where} is URL: put the credentials into url (https://user:password@host) "
                "and leave basic.auth.user.info unset"
            )
        if source.upper() not in ("USER_INFO", "URL"):
            raise ConfigError(
                f"{where} is {source!r}; this client supports USER_INFO and URL "
                "(for SASL_INHERIT set basic.auth.user.info to the SASL user and password)"
            )

    def redacted(self) -> dict[str, str]:
        """What may be logged or printed: secret values replaced, a URL's password too."""
        shown = {k: ("***" if is_secret(k) else v) for k, v in self.values.items()}
        if "url" in shown:
            shown["url"] = self.shown_url
        return shown

    def __repr__(self) -> str:  # never the secrets, whoever prints the object
        return f"RegistrySettings({self.redacted()!r})"


def resolve(
    config_file: str | os.PathLike[str] | None = None,
    cli: Mapping[str, str | None] | None = None,
    environ: Mapping[str, str] | None = None,
) -> RegistrySettings:
    """Merge the config file's ``[schema_registry]`` table, the command line's settings
    (``{"url": --registry-url}``) and the environment, later ones winning per key."""
    environ = os.environ if environ is None else environ
    values: dict[str, str] = {}
    sources: dict[str, str] = {}

    def take(key: str, value: object, source: str) -> None:
        key = key.strip()
        if key not in KEYS:
            raise ConfigError(
                f"unknown schema registry setting {key!r} (from {source}); known settings: "
                + ", ".join(KEYS)
            )
        values[key] = setting_text(value)
        sources[key] = source

    path = config_file or environ.get(CONFIG_ENV)
    if path:
        for key, value in read_table(Path(path)).items():
            take(key, value, f"[{TABLE}] in config file {path}")
    for key, cli_value in (cli or {}).items():
        if cli_value:
            take(key, cli_value, f"--registry-{key}")
    generic: list[tuple[str, str]] = []
    for name, value in sorted(environ.items()):
        if name in ALIASES:
            take(ALIASES[name], value, f"${name}")
        elif name.startswith(ENV_PREFIX) and len(name) > len(ENV_PREFIX):
            generic.append((name, value))
    for name, value in generic:  # the generic names over the alias: they say exactly what they set
        take(name[len(ENV_PREFIX) :].lower().replace("_", "."), value, f"${name}")
    return RegistrySettings(values, sources)


def read_table(path: Path) -> dict[str, object]:
    """The ``[schema_registry]`` table of a ``.toml`` config file, nested tables as dotted keys;
    nothing from a librdkafka ``.properties`` file (it configures Kafka clients only)."""
    if path.suffix != ".toml":
        return {}
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read the config file {path}: {exc.strerror}") from exc
    return toml_table(path, text, TABLE)
