"""`streamflow schemas check|register|list|show|mode|codegen` against an in-memory registry.

`check` is the CI gate: exit 0 when every schema of the directory is compatible with its subject,
1 when one is not, 2 on bad input.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from streamflow.cli import schemas as cli
from streamflow.serde.avro.serde import avro
from streamflow.serde.registry.base import InMemorySchemaRegistry
from streamflow.serde.registry.binding import bind_schemas
from streamflow.serde.registry.compatibility import CompatibilityMode
from tests.avro_schemas import AGE, EMAIL, with_fields, write_schemas

USER = {
    "type": "record",
    "name": "User",
    "namespace": "acme",
    "doc": "A user",
    "fields": [
        {"name": "id", "type": "string"},
        {
            "name": "tier",
            "type": {"type": "enum", "name": "Tier", "symbols": ["FREE", "PRO"], "default": "FREE"},
        },
        {"name": "tags", "type": {"type": "array", "items": "string"}, "default": []},
    ],
}
USER_OK = with_fields(USER, EMAIL)
USER_BAD = with_fields(USER, AGE)


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> InMemorySchemaRegistry:
    registry = InMemorySchemaRegistry()
    registry.register("users-value", USER, default_mode=CompatibilityMode.BACKWARD)
    registry.register("app-profiles-value", USER, default_mode=CompatibilityMode.FULL_TRANSITIVE)
    monkeypatch.setattr(cli, "_registry", lambda bootstrap, url: registry)
    return registry


def run(*args: str) -> Result:
    return CliRunner().invoke(cli.schemas, list(args))


def test_check_passes_a_compatible_directory(
    tmp_path: Path, registry: InMemorySchemaRegistry
) -> None:
    result = run("check", "--schema-dir", str(write_schemas(tmp_path / "s", [USER_OK])))
    assert result.exit_code == 0, result.output
    assert "ok users-value (acme.User, BACKWARD, 1 versions)" in result.output
    assert "ok app-profiles-value (acme.User, FULL_TRANSITIVE" in result.output


def test_check_fails_an_incompatible_change_with_the_reason_per_subject(
    tmp_path: Path, registry: InMemorySchemaRegistry
) -> None:
    result = run("check", "--schema-dir", str(write_schemas(tmp_path / "s", [USER_BAD])))
    assert result.exit_code == 1
    assert "INCOMPATIBLE users-value (acme.User, BACKWARD):" in result.output
    assert "READER_FIELD_MISSING_DEFAULT_VALUE\t/fields/age" in result.output
    assert len(registry.versions("users-value")) == 1  # check registers nothing


def test_check_with_an_app_checks_exactly_its_subjects(
    tmp_path: Path, registry: InMemorySchemaRegistry
) -> None:
    directory = write_schemas(tmp_path / "s", [USER_BAD])
    app_file = tmp_path / "profiles.py"
    app_file.write_text(
        "from streamflow.app import App\n"
        "from streamflow.serde.avro.serde import avro\n"
        "app = App('app')\n"
        f"user = avro('acme.User', schema_dir={str(directory)!r})\n"
        "app.stream(app.topic('signups', value=user)).reduce('profiles', lambda a, b: b)\n"
    )
    result = run("check", "--app", str(app_file), "--bootstrap", "unused:1")
    assert result.exit_code == 1, result.output
    assert (
        "INCOMPATIBLE app-profiles-value (store 'profiles' value: acme.User, FULL_TRANSITIVE)"
    ) in result.output
    assert "ok signups-value (topic 'signups' value: acme.User, BACKWARD)" in result.output


def test_check_without_a_registry_address_is_bad_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STREAMFLOW_BOOTSTRAP", raising=False)
    monkeypatch.delenv("STREAMFLOW_SCHEMA_REGISTRY_URL", raising=False)
    result = run("check", "--schema-dir", str(write_schemas(tmp_path / "s", [USER])))
    assert result.exit_code == 2
    assert "--bootstrap" in result.output


def test_register_adds_a_version_and_refuses_an_incompatible_one(
    tmp_path: Path, registry: InMemorySchemaRegistry
) -> None:
    ok = run(
        "register",
        "users-value",
        "acme.User",
        "--schema-dir",
        str(write_schemas(tmp_path / "ok", [USER_OK])),
    )
    assert ok.exit_code == 0 and "users-value version 2: schema id 2" in ok.output
    bad = run(
        "register",
        "users-value",
        "acme.User",
        "--schema-dir",
        str(write_schemas(tmp_path / "bad", [USER_BAD])),
    )
    assert bad.exit_code == 1 and "/fields/age" in bad.output
    unknown = run("register", "users-value", "acme.Nope", "--schema-dir", str(tmp_path / "ok"))
    assert unknown.exit_code == 2 and "acme.User" in unknown.output


def test_list_show_and_mode(registry: InMemorySchemaRegistry) -> None:
    listing = run("list")
    assert listing.exit_code == 0
    lines = listing.output.splitlines()
    assert lines[0].split() == ["SUBJECT", "VERSION", "ID", "TYPE", "MODE"]
    assert lines[1].split() == ["app-profiles-value", "1", "1", "acme.User", "FULL_TRANSITIVE"]
    shown = run("show", "users-value")
    assert shown.exit_code == 0
    assert shown.output.startswith("# users-value version 1, schema id 1\n")
    assert json.loads(shown.output.split("\n", 1)[1])["name"] == "acme.User"
    assert json.loads(run("show", "--id", "1").output)["name"] == "acme.User"
    assert run("show", "users-value", "--version", "7").exit_code == 2
    assert run("mode", "users-value").output.strip() == "BACKWARD"
    assert run("mode", "users-value", "full").exit_code == 0
    assert registry.mode("users-value") is CompatibilityMode.FULL


def test_codegen_writes_dataclasses_the_avro_serde_accepts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = write_schemas(tmp_path / "s", [USER_OK])
    out = tmp_path / "records_gen.py"
    result = run("codegen", "--schema-dir", str(directory), "-o", str(out))
    assert result.exit_code == 0, result.output
    source = out.read_text()
    assert "Tier = Literal['FREE', 'PRO']" in source
    assert "tags: list[str] = field(default_factory=list)" in source
    spec = importlib.util.spec_from_file_location("records_gen", out)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "records_gen", module)
    spec.loader.exec_module(module)
    serde = avro(module.User, schema_dir=directory)
    from streamflow.app import App

    app = App("gen")
    app.topic("users", value=serde)
    bind_schemas(app.topology, app.config, InMemorySchemaRegistry())
    user = module.User(id="u1", tier="PRO", email="a@b.c")
    assert serde.deserialize(serde.serialize(user)) == user


def test_a_generated_class_that_no_longer_matches_its_schema_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "stale_gen.py"
    assert (
        run(
            "codegen", "--schema-dir", str(write_schemas(tmp_path / "old", [USER])), "-o", str(out)
        ).exit_code
        == 0
    )
    spec = importlib.util.spec_from_file_location("stale_gen", out)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "stale_gen", module)
    spec.loader.exec_module(module)
    from streamflow.errors import ConfigError

    with pytest.raises(ConfigError, match="regenerate"):
        avro(module.User, schema_dir=write_schemas(tmp_path / "new", [USER_OK]))
