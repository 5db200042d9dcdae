"""The Kafka client settings every client streamflow makes gets: resolved once, in one place.

A secured cluster needs ``security.protocol``, ``sasl.*`` and ``ssl.*`` on *every* client: the
worker's consumer and producers, the restore consumer, the admin client, the Kafka-native schema
registry's clients, the workflow client and the CLI's. They come from four sources, each later
one overriding the earlier ones for the keys it sets:

1. ``App(..., kafka={...})`` in the topology file;
2. a config file: ``--config streamflow.toml`` (a ``[kafka]`` table) or a librdkafka
   ``.properties`` file (``key=value`` lines), or ``$STREAMFLOW_CONFIG``;
3. ``--kafka key=value`` on the command line (repeatable);
4. ``STREAMFLOW_KAFKA_<KEY>`` environment variables, ``_`` for ``.``
   (``STREAMFLOW_KAFKA_SASL_PASSWORD`` → ``sasl.password``): where secrets usually live.

Keys the exactly-once promise depends on are refused from every source with an error naming
the key and where it came from: a stray ``enable.auto.commit=true`` in a shared properties file
would otherwise commit offsets behind the transaction's back. Secret values never leave this
module in readable form: ``redacted()`` is what logs and errors show.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamflow.errors import ConfigError

if TYPE_CHECKING:
    from confluent_kafka.admin import AdminClient

ENV_PREFIX = "STREAMFLOW_KAFKA_"
CONFIG_ENV = "STREAMFLOW_CONFIG"
OWN_VARIABLES = frozenset({"STREAMFLOW_KAFKA_DIR"})
"""streamflow's own variables under the prefix (the local cluster's run dir): not settings.
The fault suite found this one: every worker handed librdkafka a ``dir`` property."""

PROTECTED: dict[str, str] = {
    "isolation.level": "consumers must read committed data only (read_committed)",
    "enable.auto.commit": "offsets are committed by the commit cycle, inside the transaction",
    "enable.auto.offset.store": "offsets are committed by the commit cycle, inside the transaction",
    "enable.idempotence": "transactional producers require it",
    "transactional.id": "each worker derives its own from the app name and its worker id",
    "group.id": "the consumer group is the app's name (App(name))",
    "partition.assignment.strategy": "co-partitioned topics need the assignor the worker picks",
}
"""Keys no source may set, with the reason the error gives."""

_SECRET_MARKERS = ("password", "secret", "sasl.jaas.config", "basic.auth.user.info", "key.pem")


def is_secret(key: str) -> bool:
    """Whether ``key``'s value must never be shown (passwords, client secrets, private keys)."""
    lowered = key.lower()
    return any(marker in lowered for marker in _SECRET_MARKERS)


@dataclass(frozen=True)
class KafkaSettings:
    """Resolved client settings, with the source of each key (for error messages)."""

    values: Mapping[str, str] = field(default_factory=dict)
    sources: Mapping[str, str] = field(default_factory=dict)

    def client(self, bootstrap: str) -> dict[str, str]:
        """The settings of one client: these plus ``bootstrap.servers`` (unless a source set
        it, which then wins over the ``--bootstrap`` default)."""
        conf = {"bootstrap.servers": bootstrap}
        conf.update(self.values)
        return conf

    def check(self, bootstrap: str, extra: Mapping[str, Any] | None = None) -> AdminClient:
        """Let librdkafka judge the settings before anything runs: an unknown key or a bad value
        becomes a ``ConfigError`` naming the key and the source it came from (constructing a
        client validates its configuration). Returns that admin client, for the caller to use
        rather than build a second one. ``extra``: callbacks and such, not settings."""
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient

        try:
            return AdminClient({**self.client(bootstrap), **(extra or {})})
        except KafkaException as exc:
            text = exc.args[0].str()
            named = [k for k in self.values if f'"{k}"' in text or f" {k} " in f" {text} "]
            where = "; ".join(f"{k!r} comes from {self.sources.get(k, '?')}" for k in named)
            raise ConfigError(
                f"Kafka client settings refused: {text}" + (f" ({where})" if where else "")
            ) from None

    def redacted(self) -> dict[str, str]:
        """What may be logged or printed: secret values replaced."""
        return {k: ("***" if is_secret(k) else v) for k, v in self.values.items()}

    def __repr__(self) -> str:  # never the secrets, whoever prints the object
        return f"KafkaSettings({self.redacted()!r})"


def resolve(
    app: Mapping[str, object] | None = None,
    config_file: str | os.PathLike[str] | None = None,
    cli: Iterable[str] = (),
    environ: Mapping[str, str] | None = None,
) -> KafkaSettings:
    """Merge the four sources (later ones win per key) and refuse protected keys."""
    environ = os.environ if environ is None else environ
    values: dict[str, str] = {}
    sources: dict[str, str] = {}

    def take(items: Mapping[str, object], source: str) -> None:
        for key, value in items.items():
            key = str(key).strip()
            if key in PROTECTED:
                raise ConfigError(
                    f"Kafka setting {key!r} (from {source}) cannot be overridden: "
                    f"{PROTECTED[key]}; remove it"
                )
            values[key] = setting_text(value)
            sources[key] = source

    if app:
        take(app, "App(kafka=...)")
    path = config_file or environ.get(CONFIG_ENV)
    if path:
        take(read_config_file(Path(path)), f"config file {path}")
    pairs = list(cli)
    if pairs:
        take(parse_pairs(pairs), "--kafka")
    from_env = {
        name[len(ENV_PREFIX) :].lower().replace("_", "."): value
        for name, value in environ.items()
        if name.startswith(ENV_PREFIX) and len(name) > len(ENV_PREFIX) and name not in OWN_VARIABLES
    }
    if from_env:
        take(from_env, f"{ENV_PREFIX}* environment variables")
    return KafkaSettings(values, sources)


def read_config_file(path: Path) -> dict[str, str]:
    """``.toml`` (its ``[kafka]`` table) or librdkafka ``.properties`` (``key=value``)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read the config file {path}: {exc.strerror}") from exc
    if path.suffix == ".toml":
        return {str(k): setting_text(v) for k, v in toml_table(path, text, "kafka").items()}
    result: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith(("#", "!")):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{path}:{number}: expected key=value, got {_shown(line)!r}")
        result[key.strip()] = value.strip()
    return result


def parse_pairs(items: Iterable[str]) -> dict[str, str]:
    """``key=value`` strings (``--kafka``) into a dict, naming the one that is not."""
    result: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--kafka {_shown(item)!r} is not of the form key=value")
        result[key.strip()] = value.strip()
    return result


def toml_table(path: Path, text: str, name: str) -> dict[str, object]:
    """Table ``[name]`` of the TOML ``text`` read from ``path``, nested tables as dotted keys
    (the Kafka settings' ``[kafka]``, the registry's ``[schema_registry]``)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    table = data.get(name, {})
    if not isinstance(table, dict):
        raise ConfigError(f"config file {path}: [{name}] must be a table of settings")
    return _flatten(table)


def _flatten(table: Mapping[str, object], prefix: str = "") -> dict[str, object]:
    """TOML's nested tables (``[kafka.sasl]`` ``mechanism = …``) as dotted keys."""
    flat: dict[str, object] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def setting_text(value: object) -> str:
    """A TOML value as librdkafka wants it: booleans lower-case, everything else ``str``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _shown(item: str) -> str:
    """An item as an error may show it: nothing after a secret key's name (the item may be
    malformed, so the key is whatever comes before the first separator or space)."""
    key = item.replace(":", " ").replace("=", " ").split(" ", 1)[0]
    return f"{key} ***" if is_secret(key) else item[:80]
