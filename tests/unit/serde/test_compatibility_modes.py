"""Compatibility modes: which existing versions a candidate is checked against, in which direction.

The version histories are the classic registry ones: a field added or removed, with or without a
default, a type promoted. Expectations follow from the mode definitions (BACKWARD: new reads old;
FORWARD: old reads new; FULL: both; TRANSITIVE: every version, not only the latest).
"""

from __future__ import annotations

from typing import Any

import pytest

from streamflow.errors import SchemaError
from streamflow.serde.registry.compatibility import (
    CompatibilityMode,
    IncompatibilityKind,
    check_compatibility,
)
from tests import avro_schemas
from tests.avro_schemas import Schema

DEFAULT = IncompatibilityKind.READER_FIELD_MISSING_DEFAULT_VALUE
TYPE = IncompatibilityKind.TYPE_MISMATCH
SYMBOLS = IncompatibilityKind.MISSING_ENUM_SYMBOLS


def user(*fields: Schema) -> Schema:
    """``acme.User`` with an int id, so that ``A_LONG`` promotes it."""
    return avro_schemas.user(*fields, id_type="int")


A = user()  # {id}
A_B_DEFAULT = user({"name": "b", "type": "string", "default": ""})  # {id, b=""}
A_B = user({"name": "b", "type": "string"})  # {id, b}
A_LONG = {"type": "record", "name": "User", "fields": [{"name": "id", "type": "long"}]}
UNRELATED = {"type": "enum", "name": "Nothing", "symbols": ["X"]}
STATUS_2 = user({"name": "s", "type": {"type": "enum", "name": "S", "symbols": ["A", "B"]}})
STATUS_3 = user({"name": "s", "type": {"type": "enum", "name": "S", "symbols": ["A", "B", "C"]}})
STATUS_3_DEFAULT = user(
    {"name": "s", "type": {"type": "enum", "name": "S", "symbols": ["A", "B", "C"], "default": "A"}}
)

M = CompatibilityMode
# (id, mode, existing oldest first, candidate, expected kinds)
MODE_CASES: list[tuple[str, CompatibilityMode, list[Any], Any, list[IncompatibilityKind]]] = [
    ("backward-add-field-with-default", M.BACKWARD, [A], A_B_DEFAULT, []),
    ("backward-add-field-without-default", M.BACKWARD, [A], A_B, [DEFAULT]),
    ("backward-remove-field", M.BACKWARD, [A_B], A, []),
    ("backward-promote-int-to-long", M.BACKWARD, [A], A_LONG, []),
    ("backward-demote-long-to-int", M.BACKWARD, [A_LONG], A, [TYPE]),
    ("backward-add-enum-symbol", M.BACKWARD, [STATUS_2], STATUS_3, []),
    ("backward-remove-enum-symbol", M.BACKWARD, [STATUS_3], STATUS_2, [SYMBOLS]),
    ("backward-only-checks-latest", M.BACKWARD, [A, A_B_DEFAULT], A_B, []),
    ("backward-transitive-checks-all", M.BACKWARD_TRANSITIVE, [A, A_B_DEFAULT], A_B, [DEFAULT]),
    ("backward-transitive-all-fine", M.BACKWARD_TRANSITIVE, [A, A_B_DEFAULT], A_B_DEFAULT, []),
    ("forward-add-field-without-default", M.FORWARD, [A], A_B, []),
    ("forward-remove-field-with-default", M.FORWARD, [A_B_DEFAULT], A, []),
    ("forward-remove-field-without-default", M.FORWARD, [A_B], A, [DEFAULT]),
    ("forward-promote-int-to-long", M.FORWARD, [A], A_LONG, [TYPE]),
    ("forward-add-enum-symbol", M.FORWARD, [STATUS_2], STATUS_3, [SYMBOLS]),
    (
        "forward-add-enum-symbol-old-has-default",
        M.FORWARD,
        [STATUS_3_DEFAULT],
        user({"name": "s", "type": {"type": "enum", "name": "S", "symbols": ["A", "B", "C", "D"]}}),
        [],
    ),
    ("forward-only-checks-latest", M.FORWARD, [A_B, A_B_DEFAULT], A, []),
    ("forward-transitive-checks-all", M.FORWARD_TRANSITIVE, [A_B, A_B_DEFAULT], A, [DEFAULT]),
    ("full-add-field-with-default", M.FULL, [A], A_B_DEFAULT, []),
    ("full-remove-field-with-default", M.FULL, [A_B_DEFAULT], A, []),
    ("full-add-field-without-default", M.FULL, [A], A_B, [DEFAULT]),
    ("full-promotion-fails-forward", M.FULL, [A], A_LONG, [TYPE]),
    (
        "full-enum-symbol-added-with-default",
        M.FULL,
        [STATUS_3_DEFAULT],
        user(
            {
                "name": "s",
                "type": {
                    "type": "enum",
                    "name": "S",
                    "symbols": ["A", "B", "C", "D"],
                    "default": "A",
                },
            }
        ),
        [],
    ),
    ("full-only-checks-latest", M.FULL, [A_B, A_B_DEFAULT], A, []),
    ("full-transitive-checks-all", M.FULL_TRANSITIVE, [A_B, A_B_DEFAULT], A, [DEFAULT]),
    ("full-transitive-both-directions", M.FULL_TRANSITIVE, [A, A], A_LONG, [TYPE, TYPE]),
    ("none-accepts-anything", M.NONE, [A], UNRELATED, []),
    ("none-accepts-anything-transitively", M.NONE, [A, A_B], "string", []),
    ("first-version-always-accepted", M.FULL_TRANSITIVE, [], UNRELATED, []),
    ("unrelated-schema-backward", M.BACKWARD, [A], UNRELATED, [TYPE]),
    ("unrelated-schema-full", M.FULL, [A], UNRELATED, [TYPE, TYPE]),
]


@pytest.mark.parametrize(
    ("mode", "existing", "candidate", "kinds"), [pytest.param(*c[1:], id=c[0]) for c in MODE_CASES]
)
def test_mode(
    mode: CompatibilityMode, existing: list[Any], candidate: Any, kinds: list[IncompatibilityKind]
) -> None:
    found = check_compatibility(mode, existing, candidate)
    assert sorted(i.kind for i in found) == sorted(kinds), [str(i) for i in found]


def test_transitive_reasons_say_which_version_and_direction() -> None:
    found = check_compatibility(M.FULL_TRANSITIVE, [A_B, A_B_DEFAULT], A)
    assert [i.context for i in found] == ["version 1 reading new schema"]
    found = check_compatibility(M.BACKWARD_TRANSITIVE, [A, A_B_DEFAULT], A_B)
    assert [i.context for i in found] == ["new schema reading version 1"]
    assert "new schema reading version 1" in str(found[0])


@pytest.mark.parametrize(
    "text", ["backward", "BACKWARD", "Full_Transitive", "full-transitive", " none "]
)
def test_mode_names_are_case_insensitive(text: str) -> None:
    assert CompatibilityMode.parse(text).value == text.strip().upper().replace("-", "_")
    check_compatibility(text, [A], A)


def test_unknown_mode_is_a_schema_error_listing_the_modes() -> None:
    with pytest.raises(SchemaError, match="BACKWARD_TRANSITIVE"):
        check_compatibility("sideways", [A], A)


def test_bad_existing_version_is_named_in_the_error() -> None:
    with pytest.raises(SchemaError, match="existing version 2"):
        check_compatibility(M.BACKWARD, [A, "{oops"], A)
    with pytest.raises(SchemaError, match="candidate"):
        check_compatibility(M.NONE, [A], {"type": "array"})
