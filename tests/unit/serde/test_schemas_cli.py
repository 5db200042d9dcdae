"""`streamflow schemas compat|diff`: the exit codes CI relies on.

0: compatible, 1: incompatible, 2: bad input.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from streamflow.cli.schemas import schemas
from tests.avro_schemas import AGE, EMAIL, user, with_fields

FIXTURES = Path(__file__).parent / "schemas"


V1 = user(id_type="int")  # int, so that V_LONG promotes it
V2 = with_fields(V1, EMAIL)
V3_NO_DEFAULT = with_fields(V2, AGE)
V_LONG = user(id_type="long")


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    out = {}
    for name, schema in {"v1": V1, "v2": V2, "v3": V3_NO_DEFAULT, "vlong": V_LONG}.items():
        path = tmp_path / f"{name}.avsc"
        path.write_text(json.dumps(schema))
        out[name] = str(path)
    (tmp_path / "bad.avsc").write_text('{"type": "record", "name": ')
    out["bad"] = str(tmp_path / "bad.avsc")
    out["missing"] = str(tmp_path / "missing.avsc")
    return out


def run(*args: str) -> Any:
    return CliRunner().invoke(schemas, list(args))


@pytest.mark.parametrize(
    ("mode", "versions", "code"),
    [
        ("BACKWARD", ["v1", "v2"], 0),
        ("backward", ["v1", "v2"], 0),
        ("Full", ["v1", "v2"], 0),
        ("FULL_TRANSITIVE", ["v1", "v2"], 0),
        ("BACKWARD", ["v2", "v3"], 1),
        ("FORWARD", ["v2", "v3"], 0),
        ("BACKWARD", ["v1", "vlong"], 0),
        ("forward", ["v1", "vlong"], 1),
        ("BACKWARD", ["v3", "v1", "v2"], 0),  # only the newest existing version counts
        ("BACKWARD_TRANSITIVE", ["v1", "v2", "v3"], 1),  # v3 cannot read v1 or v2 records
        ("none", ["vlong", "v1"], 0),
    ],
)
def test_compat_exit_code(files: dict[str, str], mode: str, versions: list[str], code: int) -> None:
    result = run("compat", "--mode", mode, *(files[v] for v in versions))
    assert result.exit_code == code, result.output
    if code == 0:
        assert result.stdout.strip() == "compatible"


def test_incompatible_prints_one_reason_per_line_with_kind_path_and_message(
    files: dict[str, str],
) -> None:
    result = run("compat", "--mode", "backward_transitive", files["v1"], files["v2"], files["v3"])
    assert result.exit_code == 1
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2  # against v2 and against v1
    for line in lines:
        kind, path, message = line.split("\t")
        assert kind == "READER_FIELD_MISSING_DEFAULT_VALUE" and path == "/fields/age"
        assert "'age'" in message and "default" in message


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--mode", "sideways", "v1", "v2"], "unknown compatibility mode"),
        (["--mode", "backward", "v1"], "at least two"),
        (["--mode", "backward", "v1", "bad"], "bad.avsc"),
        (["--mode", "backward", "bad", "v1"], "not valid JSON"),
        (["--mode", "backward", "v1", "missing"], "missing.avsc"),
        (["--mode", "backward", "--schema-dir", "missing", "v1", "v2"], "not found"),
    ],
)
def test_bad_input_exits_2_with_a_message_on_stderr(
    files: dict[str, str], args: list[str], fragment: str
) -> None:
    result = run("compat", *(files.get(a, a) for a in args))
    assert result.exit_code == 2
    assert fragment in result.stderr and result.stdout == ""


def test_missing_mode_is_a_usage_error() -> None:
    assert run("compat", "a.avsc", "b.avsc").exit_code == 2


def test_schema_dir_resolves_types_defined_in_other_files(tmp_path: Path) -> None:
    customer = json.loads((FIXTURES / "customer.avsc").read_text())
    customer["fields"].append({"name": "vip", "type": "boolean", "default": False})
    (tmp_path / "customer_v2.avsc").write_text(json.dumps(customer))
    args = ["--mode", "full", str(FIXTURES / "customer.avsc"), str(tmp_path / "customer_v2.avsc")]
    assert run("compat", *args).exit_code == 2  # acme.Address is defined in another file
    result = run("compat", "--schema-dir", str(FIXTURES), *args)
    assert result.exit_code == 0, result.output


def test_diff_lists_added_removed_and_changed(files: dict[str, str]) -> None:
    result = run("diff", files["v1"], files["v3"])
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        "+ /fields/email: [null, string] (default null)",
        "+ /fields/age: int (no default)",
    ]
    result = run("diff", files["v3"], files["vlong"])
    assert result.stdout.splitlines() == [
        "~ /fields/id: int -> long",
        "- /fields/email: [null, string]",
        "- /fields/age: int",
    ]


def test_diff_of_identical_schemas_exits_0(files: dict[str, str]) -> None:
    result = run("diff", files["v2"], files["v2"])
    assert (result.exit_code, result.stdout.strip()) == (0, "no differences")


def test_diff_reports_enum_symbols_renames_and_union_branches(tmp_path: Path) -> None:
    old = {
        "type": "record",
        "name": "R",
        "fields": [
            {"name": "s", "type": {"type": "enum", "name": "S", "symbols": ["A", "B"]}},
            {"name": "n", "type": ["null", "int"], "default": None},
            {"name": "h", "type": {"type": "fixed", "name": "H", "size": 4}},
        ],
    }
    new = {
        "type": "record",
        "name": "R",
        "fields": [
            {
                "name": "s",
                "type": {"type": "enum", "name": "S", "symbols": ["A", "C"], "default": "A"},
            },
            {"name": "count", "aliases": ["n"], "type": ["null", "long"], "default": None},
            {"name": "h", "type": {"type": "fixed", "name": "H", "size": 8}},
        ],
    }
    (tmp_path / "old.avsc").write_text(json.dumps(old))
    (tmp_path / "new.avsc").write_text(json.dumps(new))
    result = run("diff", str(tmp_path / "old.avsc"), str(tmp_path / "new.avsc"))
    assert result.stdout.splitlines() == [
        "+ /fields/s/symbols: C",
        "- /fields/s/symbols: B",
        "~ /fields/s/default: none -> A",
        "~ /fields/count: renamed from n (alias)",
        "+ /fields/count: union branch long",
        "- /fields/count: union branch int",
        "~ /fields/h/size: 4 -> 8",
    ]


def test_the_group_is_registered_on_the_main_command(files: dict[str, str]) -> None:
    from streamflow.cli import main

    result = CliRunner().invoke(
        main, ["schemas", "compat", "--mode", "full", files["v1"], files["v2"]]
    )
    assert result.exit_code == 0, result.output
