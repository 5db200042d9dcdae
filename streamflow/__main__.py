"""``python -m streamflow`` is the ``streamflow`` command (handy where scripts are not on PATH)."""

from streamflow.cli import main

main()
