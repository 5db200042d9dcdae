"""What a client (the workflow client, a CLI command) says when the cluster refuses it or is
not there: the one line the worker's start-up check prints, within seconds, instead of
librdkafka's log lines on stderr and a timeout naming nothing.

Clients made here log librdkafka's own lines at DEBUG (``LIBRDKAFKA_LOGGER``) and collect its
errors with an ``error_cb`` (``ErrorWatch``); a caller that waits on the cluster asks the
watch between slices of its wait and raises what it says.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from confluent_kafka import KafkaError

from streamflow.errors import KafkaUnavailable
from streamflow.kafka.client_log import LIBRDKAFKA_LOGGER
from streamflow.kafka.refusals import refusal_error
from streamflow.kafka.settings import KafkaSettings

CHECK_TIMEOUT_S = 5.0
"""How long a command waits for the cluster's first answer before it calls it unreachable."""

UNREACHABLE_AFTER_S = 5.0
"""How long only transport errors (nothing listening, a wrong address) are waited out before
the cluster is called unreachable: brokers restarting come back within this."""

_TRANSPORT = frozenset({KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._RESOLVE})


class ErrorWatch:
    """The errors librdkafka reported for one client, turned into a clear error on demand."""

    def __init__(self, settings: KafkaSettings, bootstrap: str) -> None:
        self._settings = settings
        self._bootstrap = bootstrap
        self._lock = threading.Lock()
        self._errors: list[KafkaError] = []
        self._unreachable_since: float | None = None

    def client_config(self) -> dict[str, Any]:
        """What to add to a client's configuration for this watch to see its errors."""
        return {"error_cb": self._report, "logger": LIBRDKAFKA_LOGGER}

    def _report(self, err: KafkaError) -> None:
        with self._lock:
            self._errors.append(err)
            del self._errors[:-50]
            if err.code() in _TRANSPORT:
                if self._unreachable_since is None:
                    self._unreachable_since = time.monotonic()
            else:
                self._unreachable_since = None

    def reached(self) -> None:
        """The cluster answered (a delivery, a metadata reply): transport errors are past."""
        with self._lock:
            self._unreachable_since = None

    def raise_if_refused(self) -> None:
        """Raise the clear error for what librdkafka reported: an authentication or TLS
        refusal at once, an unreachable cluster after ``UNREACHABLE_AFTER_S``."""
        with self._lock:
            errors = list(self._errors)
            since = self._unreachable_since
        for err in errors:
            refusal = refusal_error(err, self._settings)
            if refusal is not None:
                raise refusal
        if since is not None and time.monotonic() - since >= UNREACHABLE_AFTER_S:
            last = next((e for e in reversed(errors) if e.code() in _TRANSPORT), None)
            raise KafkaUnavailable(
                f"cannot reach Kafka at {self._bootstrap}"
                + (f" ({last.str()})" if last is not None else "")
                + "; is the broker running (streamflow dev kafka status), the bootstrap "
                "address right, and security.protocol what its listener expects?"
            )


def check_cluster(settings: KafkaSettings, server: str) -> None:
    """Ask the cluster once, through the worker's quiet admin check
    (``access.AdminConnection``): a refused password or certificate, or nothing listening,
    raises the one line ``run`` prints, within seconds."""
    from streamflow.cluster.access import AdminConnection

    AdminConnection(settings, server).list_topics(timeout=CHECK_TIMEOUT_S)
