"""The Avro serde: ``app.topic("orders", value=avro("com.acme.Order"))``.

Values are written in the Confluent wire format with the code's schema (the *reader* schema, from
``schemas/*.avsc``), and read with it whatever schema they were written with: a record whose
header names another schema id is resolved from that writer schema to the code's, by
fastavro's resolving reader, with the writer schema fetched from the registry once per id. So
topics, stores and their changelogs written under v1 read under v2 with no migration.

Python values are dicts by default. ``avro(Order)`` takes a dataclass written by
``streamflow schemas codegen`` instead (the ``.avsc`` file is the one source of truth, the
classes are generated from it, never written by hand): values are then instances of the
generated classes, nested records included.

A serde needs a schema id before it can write, and the id comes from a registry the app only
reaches when it starts: the worker (and the test driver) call ``bind_schemas``, which registers
the schemas a topology uses and binds each serde to its id (``binding.py``). An unbound serde
refuses to write.

Avro keys are supported but rarely what you want: a key's bytes include its schema id, so
evolving a key schema moves every key to a new partition and a new store entry.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastavro import schemaless_reader, schemaless_writer
from fastavro.read import SchemaResolutionError
from fastavro.validation import validate

from streamflow.errors import ConfigError, SchemaError, SerializationError
from streamflow.serde.avro.codec import CompiledCodec, compile_codec
from streamflow.serde.avro.schema import (
    NAMED_KINDS,
    Schema,
    canonical_schema,
    load_schema_dir,
    named_types,
    parse,
)
from streamflow.serde.avro.wire_format import HEADER_SIZE, header, schema_id_of
from streamflow.serde.base import Serde, register_family
from streamflow.serde.typed import from_plain

if TYPE_CHECKING:  # the registry package imports this one; only its type is needed here
    from streamflow.serde.registry.base import SchemaRegistry

log = logging.getLogger(__name__)

SCHEMA_DIR_ENV = "STREAMFLOW_SCHEMA_DIR"
DEFAULT_SCHEMA_DIR = "schemas"
UNKNOWN_ID_RETRY_SECONDS = 10.0
"""An id the registry did not know is asked for again only after this long: a flood of records
with a bogus id must not become a flood of registry reads."""


def schema_directory(path: str | os.PathLike[str] | None = None) -> Path:
    """The schema directory: ``path``, else ``$STREAMFLOW_SCHEMA_DIR``, else ``./schemas``."""
    return Path(path or os.environ.get(SCHEMA_DIR_ENV) or DEFAULT_SCHEMA_DIR)


@dataclass(frozen=True, eq=False)
class AvroSerde(Serde):
    """A ``Serde`` whose functions write and read one Avro record type in the wire format.

    Equality and hash are ``Serde``'s (name and functions): a topic spec holding one stays
    hashable, and two declarations of one type are two serdes, each bound on its own.
    """

    schema_name: str
    schema: Schema
    """The code's schema: fastavro-parsed and self-contained."""
    binding: SchemaBinding

    @property
    def schema_text(self) -> str:
        """The canonical text a registry stores for this schema."""
        return self.binding.text

    def bind(self, registry: SchemaRegistry, schema_id: int) -> None:
        """Write with ``schema_id`` from now on; fetch other ids' schemas from ``registry``."""
        self.binding.bind(registry, schema_id)

    @property
    def schema_id(self) -> int | None:
        return self.binding.schema_id

    @property
    def carries_schema(self) -> bool:
        return True


def avro(record: str | type, *, schema_dir: str | os.PathLike[str] | None = None) -> AvroSerde:
    """The serde of the Avro named type ``record`` (a full name, or a generated dataclass).

    The schema is read from ``schema_dir`` (default ``$STREAMFLOW_SCHEMA_DIR`` or ``./schemas``)
    now, so a missing or invalid schema fails at declaration, not at the first record.
    """
    cls = None if isinstance(record, str) else record
    if cls is not None:
        name = getattr(cls, "__avro_name__", None)
        if not isinstance(name, str):
            raise ConfigError(
                f"{cls!r} has no __avro_name__: pass an Avro full name, or a dataclass generated "
                "by `streamflow schemas codegen`"
            )
    else:
        name = str(record)
    directory = schema_directory(schema_dir)
    try:
        schemas = load_schema_dir(directory)
    except SchemaError as exc:
        raise ConfigError(
            f"Avro serde {name!r}: {exc}; set the directory with avro(..., schema_dir=...) or "
            f"${SCHEMA_DIR_ENV}"
        ) from exc
    schema = schemas.get(name)
    if schema is None or not isinstance(schema, dict) or schema.get("type") not in NAMED_KINDS:
        known = ", ".join(sorted(schemas)) or "none"
        raise ConfigError(
            f"Avro serde: no named type {name!r} in {directory}/*.avsc (defined there: {known}); "
            "use the full name (namespace.Name)"
        )
    classes = record_classes(cls) if cls is not None else {}
    try:
        binding = SchemaBinding(name, schema, classes)
    except SchemaError as exc:
        raise ConfigError(str(exc)) from exc
    return AvroSerde(f"avro:{name}", binding.encode, binding.decode, name, schema, binding)


def record_classes(cls: type) -> dict[str, type]:
    """The generated dataclasses of ``cls``'s module, by Avro full name: nested records of a
    generated record are instances of their own generated classes."""
    module = sys.modules.get(cls.__module__)
    candidates = [*vars(module).values(), cls] if module is not None else [cls]
    return {
        name: c
        for c in candidates
        if isinstance(c, type) and isinstance(name := getattr(c, "__avro_name__", None), str)
    }


class SchemaBinding:
    """What one Avro serde knows: its schema, the compiled codec, and once bound, its id, the
    registry, and a reader per writer schema id it has met.

    ``encode``/``decode`` are what the ``Serde`` holds: plain functions, fixed when the serde is
    declared, whose behaviour ``bind`` completes (the compiled functions read the header from
    their namespace), so tasks and stores built before binding see the bound serde.
    """

    def __init__(self, name: str, schema: Schema, classes: Mapping[str, type]) -> None:
        self.name = name
        self.schema = schema
        self.text = canonical_schema(schema)
        self.classes = dict(classes)
        self.registry: SchemaRegistry | None = None
        self.schema_id: int | None = None
        self.header: bytes | None = None
        self._readers: dict[int, Callable[[bytes], Any]] = {}
        self._unknown: dict[int, float] = {}
        self._to_dict: Callable[[Any], Any] = _to_dict if classes else _same
        self._from_dict = _converter(name, schema, named_types(schema), self.classes)
        self.compiled: CompiledCodec | None = compile_codec(schema, self.classes)
        if self.compiled is not None:
            self.compiled.env.update(
                _other=self.read_other, _enc_fail=self.encode_error, _dec_fail=self.decode_error
            )
            self.encode: Callable[[Any], bytes] = self.compiled.encode
            self.decode: Callable[[bytes], Any] = self.compiled.decode
            self._decode_own: Callable[[bytes], Any] = self.compiled.decode_unchecked
        else:
            log.debug("Avro schema %s is decoded by fastavro (shape not compiled)", name)
            self.encode = self._fastavro_encode
            self.decode = self._fastavro_decode
            self._decode_own = self._fastavro_reader(schema)

    def bind(self, registry: SchemaRegistry, schema_id: int) -> None:
        self.registry = registry
        self.schema_id = schema_id
        self.header = header(schema_id)
        self._readers = {schema_id: self._decode_own}
        self._unknown.clear()
        if self.compiled is not None:
            self.compiled.env["_H"] = self.header

    # -- the slow paths --------------------------------------------------------------------------

    def read_other(self, data: bytes) -> Any:
        """A record whose header is not ours: another schema version, or not Avro at all."""
        if self.header is None:
            raise self._unbound()
        schema_id = schema_id_of(data)  # bad magic byte or too short: SerializationError
        reader = self._readers.get(schema_id)
        if reader is None:
            reader = self._readers[schema_id] = self._reader_for(schema_id)
        return reader(data)

    def _reader_for(self, schema_id: int) -> Callable[[bytes], Any]:
        asked = self._unknown.get(schema_id)
        if asked is not None and time.monotonic() - asked < UNKNOWN_ID_RETRY_SECONDS:
            raise self._unknown_id(schema_id, "recently")
        assert self.registry is not None
        try:
            text = self.registry.schema(schema_id)
        except SchemaError:
            self._unknown[schema_id] = time.monotonic()
            raise self._unknown_id(schema_id, "") from None
        if canonical_schema(text) == self.text:
            return self._decode_own  # same schema under another id (another registry's copy)
        try:
            return self._fastavro_reader(_parse_writer(text, schema_id))
        except SchemaError as exc:
            raise SerializationError(
                f"Avro {self.name}: the writer schema of id {schema_id} cannot be used: {exc}"
            ) from exc

    def _fastavro_reader(self, writer: Schema) -> Callable[[bytes], Any]:
        """Resolve ``writer`` to the code's schema with fastavro, the parsed pair cached here."""
        reader_schema = None if writer is self.schema else self.schema
        convert = self._from_dict
        bytes_io = io.BytesIO

        def read(data: bytes) -> Any:
            buf = bytes_io(data)
            buf.seek(HEADER_SIZE)
            try:
                value = schemaless_reader(buf, writer, reader_schema)
                if buf.tell() != len(data):
                    raise ValueError(f"{len(data) - buf.tell()} bytes after the end of the record")
            except Exception as exc:
                raise self.decode_error(data, exc) from exc
            return value if convert is None else convert(value)

        return read

    def _fastavro_encode(self, value: Any) -> bytes:
        if self.header is None:
            raise self._unbound()
        buf = io.BytesIO()
        buf.write(self.header)
        try:
            schemaless_writer(buf, self.schema, self._to_dict(value))
        except Exception as exc:
            raise self.encode_error(value, exc) from exc
        return buf.getvalue()

    def _fastavro_decode(self, data: bytes) -> Any:
        if self.header is not None and data[:HEADER_SIZE] == self.header:
            return self._decode_own(data)
        return self.read_other(data)

    # -- errors ----------------------------------------------------------------------------------

    def _unbound(self) -> ConfigError:
        return ConfigError(
            f"Avro serde {self.name!r} is not bound to a schema registry yet: the worker binds "
            "it when it starts (bind_schemas); in a test use streamflow.testing.TestDriver, or "
            "call streamflow.serde.binding.bind_schemas(app.topology, app.config, "
            "registry=InMemorySchemaRegistry())"
        )

    def _unknown_id(self, schema_id: int, when: str) -> SerializationError:
        again = " (asked recently; not asking again yet)" if when else ""
        return SerializationError(
            f"unknown schema id {schema_id}{again}: the schema registry has no schema with this "
            f"id, so a record of Avro {self.name} cannot be read; was it written against "
            "another registry or cluster?"
        )

    def encode_error(self, value: Any, exc: BaseException) -> Exception:
        if self.header is None:
            return self._unbound()
        reason = f"{type(exc).__name__}: {exc}"
        try:
            validate(self._to_dict(value), self.schema, raise_errors=True)
        except Exception as invalid:  # noqa: BLE001  the validator's message names the field
            reason = "; ".join(str(a) for a in getattr(invalid, "errors", ()) or invalid.args)
        return SerializationError(
            f"cannot write {type(value).__name__} as Avro {self.name}: {reason}"
        )

    def decode_error(self, data: bytes, exc: BaseException) -> Exception:
        if isinstance(exc, SerializationError):
            return exc
        try:
            writer = f"schema id {schema_id_of(data)}"
        except SerializationError:
            writer = "no schema id"
        if isinstance(exc, SchemaResolutionError):
            return SerializationError(
                f"a record of Avro {self.name} written with {writer} cannot be resolved to the "
                f"code's schema: {exc}; `streamflow schemas check` finds such changes before "
                "they are deployed"
            )
        return SerializationError(
            f"cannot read a record of {len(data)} bytes as Avro {self.name} ({writer}): "
            f"{type(exc).__name__}: {exc}; the bytes do not match the schema their header names"
        )


def _parse_writer(text: str, schema_id: int) -> Schema:
    return parse(text, source=f"writer schema id {schema_id}")


def _same(value: Any) -> Any:
    return value


def _to_dict(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


def _converter(
    name: str, schema: Any, names: Mapping[str, Any], classes: Mapping[str, type]
) -> Callable[[Any], Any] | None:
    """A function turning fastavro's dicts into the generated dataclasses (None: dicts wanted).

    The conversion is ``serde.typed.from_plain``, driven by the classes' annotations (the one
    converter of the package); what only the schema can tell is checked here, once."""
    cls = classes.get(name)
    if cls is None:
        return None
    _check_unions(schema, names)
    return functools.partial(from_plain, cls, where=name)


def _check_unions(schema: Any, names: Mapping[str, Any]) -> None:
    """fastavro returns a union's record as a plain dict with exactly the reader's fields, so
    the field names are what tells the records of a union apart: two with the same fields
    cannot be read back as classes."""
    seen: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, str):
            if node in names and node not in seen:
                seen.add(node)
                walk(names[node])
            return
        if isinstance(node, list):
            shapes: dict[frozenset[str], Any] = {}
            for branch in node:
                record = names.get(branch, branch) if isinstance(branch, str) else branch
                if isinstance(record, dict) and record.get("type") in ("record", "error"):
                    fields = frozenset(f["name"] for f in record["fields"])
                    if fields in shapes:
                        raise SchemaError(
                            f"union {[_name(b) for b in node]} has two records with the same "
                            "fields, which read back as dicts cannot be told apart; use dict "
                            "values (avro('<full name>')) for this schema"
                        )
                    shapes[fields] = record
                walk(branch)
            return
        kind = node.get("type")
        if kind in ("record", "error"):
            if node.get("name") in seen and node is not names.get(node.get("name")):
                return
            for field in node["fields"]:
                walk(field["type"])
        elif kind == "array":
            walk(node["items"])
        elif kind == "map":
            walk(node["values"])
        elif isinstance(kind, (dict, list)):
            walk(kind)

    walk(schema)


def _name(node: Any) -> str:
    return node if isinstance(node, str) else str(node.get("name", node.get("type")))


register_family("avro:", avro)
