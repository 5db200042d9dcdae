"""librdkafka's own log lines, at DEBUG in our log: never on the terminal by default.

A client that cannot connect would otherwise print dozens of raw ``%3|...|FAIL|`` lines;
what they mean is said once, clearly, by ``cluster/client_errors`` and ``cluster/access``.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("streamflow.librdkafka")


class _DebugLogger:
    def log(self, _level: int, fmt: str, *args: Any) -> None:
        log.debug(fmt, *args)


LIBRDKAFKA_LOGGER = _DebugLogger()
"""Pass as a client's ``logger`` setting."""
