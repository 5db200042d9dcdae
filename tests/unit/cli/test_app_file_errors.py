"""An app file that does not load is one line naming file:line, not a traceback."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from streamflow.cli import main


def _describe(path: Path) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["describe", str(path)])
    return result.exit_code, result.output


def test_a_syntax_error_is_one_line_at_its_place(tmp_path: Path) -> None:
    app_file = tmp_path / "broken.py"
    app_file.write_text('from streamflow import App\napp = App("x"\n')
    code, output = _describe(app_file)
    assert code == 1
    assert output.strip().splitlines() == [
        f"Error: {app_file}:2: SyntaxError: '(' was never closed"
    ]


def test_an_error_while_the_app_builds_names_its_line(tmp_path: Path) -> None:
    app_file = tmp_path / "raising.py"
    app_file.write_text('from streamflow import App\napp = App("x")\nrate = {"eur": 1}["usd"]\n')
    code, output = _describe(app_file)
    assert code == 1
    assert len(output.strip().splitlines()) == 1
    assert f"{app_file}:3: KeyError: 'usd'" in output and "Traceback" not in output
