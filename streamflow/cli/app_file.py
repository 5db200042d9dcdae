"""Loading the App a command names: ``path/to/file.py`` or ``path/to/file.py:name``.

Every command takes one (``run``, ``workflows``, ``dlq``...); a file that fails to load is one
line pointing at ``file:line``, not a traceback through importlib and click.
"""

from __future__ import annotations

import importlib.util
import sys
import traceback
from pathlib import Path

import click

from streamflow.app import App


def load_app(target: str) -> App:
    """``path/to/file.py`` (its only App) or ``path/to/file.py:name``."""
    path_text, _, attr = target.partition(":")
    path = Path(path_text)
    if not path.is_file():
        raise click.BadParameter(f"{path} is not a file", param_hint="FILE[:APP]")
    module_name = f"streamflow_user_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    sys.path.insert(0, str(path.parent.resolve()))
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        raise click.ClickException(f"{exc.filename}:{exc.lineno}: SyntaxError: {exc.msg}") from None
    except Exception as exc:  # noqa: BLE001 - the app file's own error, said in one line
        raise click.ClickException(_where_it_failed(path, exc)) from None
    if attr:
        app = getattr(module, attr, None)
        if not isinstance(app, App):
            raise click.BadParameter(f"{path} has no App named {attr!r}", param_hint="FILE[:APP]")
        return app
    apps = [v for v in vars(module).values() if isinstance(v, App)]
    if len(apps) != 1:
        names = ", ".join(k for k, v in vars(module).items() if isinstance(v, App)) or "none"
        raise click.BadParameter(
            f"{path} defines {len(apps)} Apps ({names}); use FILE:NAME", param_hint="FILE[:APP]"
        )
    return apps[0]


def _where_it_failed(path: Path, exc: BaseException) -> str:
    """``file:line: Type: message`` at the deepest line of the app's file (or of the code it
    imports) that raised, instead of a traceback through importlib and click."""
    frames = traceback.extract_tb(exc.__traceback__)
    mine = [f for f in frames if "importlib" not in f.filename and "/click/" not in f.filename]
    frame = mine[-1] if mine else None
    where = f"{frame.filename}:{frame.lineno}" if frame else str(path)
    return f"{where}: {type(exc).__name__}: {exc} (while loading {path})"
