"""An external Confluent-compatible Schema Registry, through confluent-kafka's client.

Used instead of the Kafka-native registry when ``$STREAMFLOW_SCHEMA_REGISTRY_URL`` is set. Kept
thin on purpose: the server owns subjects, versions, ids and enforces its own compatibility
modes. Two things are added on our side: compatibility is also checked locally (with
``compatibility.py``) before registering, so a refusal names the field and the rule the way every
other streamflow refusal does; and a subject created by streamflow gets the mode its user needs
(FULL_TRANSITIVE for stores) instead of the server's global default.

Needs the client's extras: ``pip install 'confluent-kafka[schemaregistry]'``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from streamflow.errors import ConfigError, SchemaError, SchemaIncompatible
from streamflow.serde.avro.schema import Schema, canonical_schema
from streamflow.serde.registry.base import RegisteredSchema, incompatible_error
from streamflow.serde.registry.compatibility import (
    CompatibilityMode,
    Incompatibility,
    check_compatibility,
)

USER_INFO_ENV = "STREAMFLOW_SCHEMA_REGISTRY_USER_INFO"
"""``user:password`` for HTTP basic authentication, if the registry needs it."""

_SUBJECT_NOT_FOUND = 40401
_SCHEMA_NOT_FOUND = 40403
_NO_SUBJECT_COMPATIBILITY = 40408


def _code(exc: Exception) -> int | None:
    """The registry's error code of a ``SchemaRegistryError`` (None for other errors)."""
    code = getattr(exc, "error_code", None)
    return code if isinstance(code, int) else None


def _status(exc: Exception) -> int | None:
    status = getattr(exc, "http_status_code", None)
    return status if isinstance(status, int) else None


class ConfluentSchemaRegistry:
    """A ``SchemaRegistry`` backed by a ``confluent_kafka.schema_registry.SchemaRegistryClient``
    (or any object with its methods: tests pass a stub)."""

    def __init__(self, client: Any, make_schema: Callable[[str], Any]) -> None:
        self._client = client
        self._make_schema = make_schema
        self._by_id: dict[int, str] = {}

    @classmethod
    def from_url(cls, url: str) -> ConfluentSchemaRegistry:
        try:
            from confluent_kafka.schema_registry import Schema as SRSchema
            from confluent_kafka.schema_registry import SchemaRegistryClient
        except ImportError as exc:
            raise ConfigError(
                f"a schema registry is configured ({url}) but confluent-kafka's schema registry "
                f"client cannot be imported ({exc}); pip install 'confluent-kafka[schemaregistry]'"
            ) from exc
        conf = {"url": url}
        user_info = os.environ.get(USER_INFO_ENV)
        if user_info:
            conf["basic.auth.user.info"] = user_info
        # (an attrs class: mypy without the attrs plugin does not see its __init__)
        return cls(SchemaRegistryClient(conf), lambda text: SRSchema(text, "AVRO"))  # type: ignore[call-arg]

    # -- SchemaRegistry --------------------------------------------------------------------------

    def register(
        self, subject: str, schema: Schema | str, *, default_mode: CompatibilityMode
    ) -> RegisteredSchema:
        text = canonical_schema(schema)
        versions = self.versions(subject)
        for version in versions:
            if canonical_schema(version.schema) == text:
                return version
        mode = self.mode(subject) or default_mode
        problems = check_compatibility(mode, [v.schema for v in versions], text)
        if problems:
            raise incompatible_error(f"subject {subject!r}", mode, problems)
        if not versions and self.mode(subject) is None:
            self.set_mode(subject, default_mode)
        sr_schema = self._make_schema(text)
        try:
            self._client.register_schema(subject, sr_schema)
            found = self._client.lookup_schema(subject, sr_schema)
        except Exception as exc:
            if _status(exc) == 409:
                raise SchemaIncompatible(
                    f"subject {subject!r}: the schema registry refused the schema as "
                    f"incompatible: {exc}"
                ) from exc
            raise
        return self._registered(subject, found)

    def check(
        self, subject: str, schema: Schema | str, *, default_mode: CompatibilityMode
    ) -> list[Incompatibility]:
        text = canonical_schema(schema)
        versions = self.versions(subject)
        if any(canonical_schema(v.schema) == text for v in versions):
            return []
        mode = self.mode(subject) or default_mode
        return check_compatibility(mode, [v.schema for v in versions], text)

    def schema(self, schema_id: int) -> str:
        text = self._by_id.get(schema_id)
        if text is None:
            try:
                text = str(self._client.get_schema(schema_id).schema_str)
            except Exception as exc:
                if _code(exc) == _SCHEMA_NOT_FOUND or _status(exc) == 404:
                    raise SchemaError(f"schema id {schema_id} is not registered: {exc}") from exc
                raise
            self._by_id[schema_id] = text
        return text

    def subjects(self) -> list[str]:
        return sorted(self._client.get_subjects())

    def versions(self, subject: str) -> list[RegisteredSchema]:
        try:
            numbers = self._client.get_versions(subject)
        except Exception as exc:
            if _code(exc) == _SUBJECT_NOT_FOUND or _status(exc) == 404:
                return []
            raise
        return [
            self._registered(subject, self._client.get_version(subject, n)) for n in sorted(numbers)
        ]

    def mode(self, subject: str) -> CompatibilityMode | None:
        try:
            level = self._client.get_compatibility(subject)
        except Exception as exc:
            if _code(exc) in (_SUBJECT_NOT_FOUND, _NO_SUBJECT_COMPATIBILITY) or _status(exc) == 404:
                return None
            raise
        return CompatibilityMode.parse(level) if level else None

    def set_mode(self, subject: str, mode: CompatibilityMode) -> None:
        self._client.set_compatibility(subject_name=subject, level=mode.value)

    def _registered(self, subject: str, found: Any) -> RegisteredSchema:
        text = str(found.schema.schema_str)
        self._by_id.setdefault(int(found.schema_id), text)
        return RegisteredSchema(subject, int(found.version), int(found.schema_id), text)
