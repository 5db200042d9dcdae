"""Schema registries: where schema ids come from and where every version of a subject is kept.

Three implementations share one protocol (``SchemaRegistry``):

* ``InMemorySchemaRegistry`` (here): for the test driver and unit tests;
* ``KafkaSchemaRegistry`` (``kafka.py``): the default, a compacted topic on the app's
  own cluster, so a streamflow app needs nothing but Kafka;
* ``ConfluentSchemaRegistry`` (``confluent.py``): an external Confluent-compatible
  Schema Registry, when the user configures one.

The rules live here, once, in ``SubjectLog``: a subject is a list of versions; a schema is known
by its canonical text and the same text gets the same id in every subject (so a value and the
store holding it carry the same id); a new version must be compatible with the existing ones
under the subject's mode (set on the subject, else the default its user asks for); registering a
schema the subject already has is a no-op that returns the existing version.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from streamflow.errors import SchemaError, SchemaIncompatible
from streamflow.serde.avro.schema import Schema, canonical_schema
from streamflow.serde.registry.compatibility import (
    CompatibilityMode,
    Incompatibility,
    check_compatibility,
)


@dataclass(frozen=True)
class RegisteredSchema:
    """One version of one subject: ``schema`` is the canonical text, ``id`` its global id."""

    subject: str
    version: int
    id: int
    schema: str


class SchemaRegistry(Protocol):
    """What the Avro serde, the binding step and the CLI need from a registry."""

    def register(
        self, subject: str, schema: Schema | str, *, default_mode: CompatibilityMode
    ) -> RegisteredSchema:
        """Add ``schema`` as the subject's next version (or return the version that already has
        it). Raises SchemaIncompatible when the subject's mode refuses it."""
        ...

    def check(
        self, subject: str, schema: Schema | str, *, default_mode: CompatibilityMode
    ) -> list[Incompatibility]:
        """Why ``register`` would refuse ``schema``; empty when it would accept it."""
        ...

    def schema(self, schema_id: int) -> str:
        """The schema text with this id; SchemaError if the registry has no such id."""
        ...

    def subjects(self) -> list[str]: ...

    def versions(self, subject: str) -> list[RegisteredSchema]:
        """Every version of ``subject``, oldest first (empty for an unknown subject)."""
        ...

    def mode(self, subject: str) -> CompatibilityMode | None:
        """The mode set on the subject, or None when it uses the default of its user."""
        ...

    def set_mode(self, subject: str, mode: CompatibilityMode) -> None: ...


@dataclass
class SubjectLog:
    """The state of a registry that keeps its own log (in memory, or in a Kafka topic).

    ``apply_*`` replays facts (records of the log); ``plan`` decides what the next fact should be.
    Kept apart so the Kafka registry can re-read the log between deciding and writing.
    """

    ids: dict[int, str] = field(default_factory=dict)
    by_text: dict[str, int] = field(default_factory=dict)
    subject_versions: dict[str, list[RegisteredSchema]] = field(default_factory=dict)
    modes: dict[str, CompatibilityMode] = field(default_factory=dict)

    def apply_schema(self, registered: RegisteredSchema) -> None:
        versions = self.subject_versions.setdefault(registered.subject, [])
        if any(v.version == registered.version for v in versions):
            return  # replayed twice (a re-read from an earlier offset): facts are idempotent
        versions.append(registered)
        versions.sort(key=lambda v: v.version)
        self.ids.setdefault(registered.id, registered.schema)
        self.by_text.setdefault(registered.schema, registered.id)

    def apply_mode(self, subject: str, mode: CompatibilityMode | None) -> None:
        if mode is None:
            self.modes.pop(subject, None)
        else:
            self.modes[subject] = mode

    def find(self, subject: str, text: str) -> RegisteredSchema | None:
        return next((v for v in self.subject_versions.get(subject, ()) if v.schema == text), None)

    def problems(
        self, subject: str, text: str, default_mode: CompatibilityMode
    ) -> list[Incompatibility]:
        if self.find(subject, text) is not None:
            return []
        mode = self.modes.get(subject, default_mode)
        existing = [v.schema for v in self.subject_versions.get(subject, ())]
        return check_compatibility(mode, existing, text)

    def plan(self, subject: str, text: str, default_mode: CompatibilityMode) -> RegisteredSchema:
        """The version ``text`` becomes; raises SchemaIncompatible if the mode refuses it."""
        found = self.find(subject, text)
        if found is not None:
            return found
        problems = self.problems(subject, text, default_mode)
        if problems:
            raise incompatible_error(
                f"subject {subject!r}", self.modes.get(subject, default_mode), problems
            )
        versions = self.subject_versions.get(subject, [])
        schema_id = self.by_text.get(text, max(self.ids, default=0) + 1)
        return RegisteredSchema(
            subject, versions[-1].version + 1 if versions else 1, schema_id, text
        )

    def schema(self, schema_id: int) -> str | None:
        return self.ids.get(schema_id)


FIX_HINT = (
    "Make the change compatible (give a new field a default, remove only fields that had one, "
    "add enum symbols only to an enum with a default), or use a new subject (a new topic or "
    "store name); if no reader of the old direction remains, relax the subject's mode with "
    "`streamflow schemas mode SUBJECT MODE`."
)


def incompatibility_report(
    what: str, mode: CompatibilityMode, problems: list[Incompatibility]
) -> str:
    """What refused a schema, under which mode, and every reason, one per line."""
    reasons = "\n".join(f"  {p}" for p in problems)
    return f"{what}: not {mode.value} compatible with the registered versions:\n{reasons}"


def incompatible_error(
    what: str, mode: CompatibilityMode, problems: list[Incompatibility]
) -> SchemaIncompatible:
    return SchemaIncompatible(f"{incompatibility_report(what, mode, problems)}\n{FIX_HINT}")


class InMemorySchemaRegistry:
    """A registry that lives as long as the process: the test driver's, and unit tests'."""

    def __init__(self) -> None:
        self.log = SubjectLog()

    def register(
        self, subject: str, schema: Schema | str, *, default_mode: CompatibilityMode
    ) -> RegisteredSchema:
        registered = self.log.plan(subject, canonical_schema(schema), default_mode)
        if subject not in self.log.modes and subject not in self.log.subject_versions:
            self.log.apply_mode(subject, default_mode)  # a new subject keeps its user's default
        self.log.apply_schema(registered)
        return registered

    def check(
        self, subject: str, schema: Schema | str, *, default_mode: CompatibilityMode
    ) -> list[Incompatibility]:
        return self.log.problems(subject, canonical_schema(schema), default_mode)

    def schema(self, schema_id: int) -> str:
        text = self.log.schema(schema_id)
        if text is None:
            raise SchemaError(f"schema id {schema_id} is not registered")
        return text

    def subjects(self) -> list[str]:
        return sorted(self.log.subject_versions)

    def versions(self, subject: str) -> list[RegisteredSchema]:
        return list(self.log.subject_versions.get(subject, ()))

    def mode(self, subject: str) -> CompatibilityMode | None:
        return self.log.modes.get(subject)

    def set_mode(self, subject: str, mode: CompatibilityMode) -> None:
        self.log.apply_mode(subject, mode)
