"""What a secured cluster refused, said once, clearly, before anything runs.

librdkafka reports a wrong password or an untrusted CA as a log line and then retries forever;
a missing ACL surfaces as ``TOPIC_AUTHORIZATION_FAILED`` somewhere deep in a fetch or a
transaction, and a worker that aborts and retries would loop on it. None of these heal by
retrying, so the worker checks them at start-up and stops with one line naming what to fix:

- **authentication**: the admin client's first connection, with an ``error_cb`` that catches
  ``_AUTHENTICATION`` and ``_SSL`` within a second instead of a timeout later;
- **authorization**: the operations the broker says the principal may do on each topic and on
  the group (``include_authorized_operations``, one request each), compared with what
  `acls.app_acls` prints for the app, so the check and ``streamflow acls`` never disagree;
- the transactional ids are checked by ``init_transactions`` itself (`denied` maps its error).

Errors that arrive later (an ACL revoked while running) go through `denied` as well.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaError, KafkaException, TopicCollection

from streamflow.cluster.acls import Acl, app_acls, uses_kafka_registry
from streamflow.errors import (
    AuthorizationFailed,
    KafkaUnavailable,
)
from streamflow.kafka.refusals import ACLS_HINT, AFTER, denied, refusal_error
from streamflow.kafka.settings import KafkaSettings
from streamflow.serde.registry.settings import RegistrySettings

if TYPE_CHECKING:
    from confluent_kafka.admin import AdminClient, ClusterMetadata

log = logging.getLogger(__name__)

_CHECKED_OPERATIONS = ("READ", "WRITE", "DESCRIBE")
"""What the pre-flight compares; CREATE only matters for a missing topic (create_topics says)."""


@dataclass
class AdminConnection:
    """The worker's admin client, with the errors librdkafka reported on the side."""

    settings: KafkaSettings
    bootstrap: str
    admin: AdminClient = field(init=False)
    errors: list[KafkaError] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        # Quiet: what its log lines would say, `list_topics` raises as a clear error.
        self.admin = self.settings.check(
            self.bootstrap, {"error_cb": self.errors.append, "log_level": 0}
        )

    def list_topics(self, timeout: float) -> ClusterMetadata:
        """Cluster metadata; a credential or certificate problem is raised within a second or
        so, an unreachable cluster as `KafkaUnavailable` after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                left = deadline - time.monotonic()
                return self.admin.list_topics(timeout=max(0.1, min(1.0, left)))
            except KafkaException as exc:
                self.admin.poll(0)  # serves error_cb
                self.raise_refusal()
                if time.monotonic() >= deadline:
                    raise KafkaUnavailable(
                        f"cannot reach Kafka at {self.bootstrap}: {exc.args[0].str()}"
                        + self._last_transport_error()
                        + "; is the broker running (streamflow dev kafka status), the bootstrap "
                        "address right, and security.protocol what its listener expects?"
                    ) from exc

    def raise_refusal(self) -> None:
        """Raise the first authentication or TLS error librdkafka reported, if any."""
        for err in self.errors:
            refusal = refusal_error(err, self.settings)
            if refusal is not None:
                self.errors.clear()
                raise refusal

    def _last_transport_error(self) -> str:
        for err in reversed(self.errors):
            if err.code() == KafkaError._TRANSPORT:
                return f" (last: {AFTER.sub('', err.str())})"
        return ""


# -- authorization pre-flight --------------------------------------------------------------------


def check_app(
    admin: AdminClient,
    topology: Any,
    topics: Iterable[str],
    principal: str,
    *,
    before_plan: bool = False,
    registry: RegistrySettings | None = None,
) -> None:
    """Raise `AuthorizationFailed` for the first ACL the app lacks on a topic or its group.

    ``before_plan``: ``topics`` are the ones the principal can see; the app's own topics that
    are not among them are described one by one, so a topic hidden by a missing DESCRIBE is
    reported as that rather than as "does not exist". Otherwise ``topics`` are every topic the
    app uses, after their creation.
    """
    uses_registry = uses_kafka_registry(topology, registry)
    rules = app_acls(topology, principal, uses_registry)
    if before_plan:
        seen = set(topics)
        hidden = [name for name in topology.topics if name not in seen]
        check_topics(admin, {name: {"DESCRIBE"} for name in hidden}, principal)
        return
    names = list(topics)
    if uses_registry:
        from streamflow.serde.registry.kafka import TOPIC as REGISTRY_TOPIC

        names.append(REGISTRY_TOPIC)
    check_topics(admin, required_topic_operations(rules, names), principal)
    check_group(admin, topology.app_name, principal)
    check_group(admin, f"{topology.app_name}-restore", principal, needs_read=False)


def required_topic_operations(acls: Iterable[Acl], topics: Iterable[str]) -> dict[str, set[str]]:
    """Topic → the operations the worker will use on it, from the app's ACL list."""
    needs: dict[str, set[str]] = {}
    rules = [a for a in acls if a.resource_type == "TOPIC"]
    for topic in topics:
        for rule in rules:
            prefixed = rule.pattern_type == "PREFIXED"
            if topic.startswith(rule.name) if prefixed else topic == rule.name:
                needs.setdefault(topic, set()).update(
                    op for op in rule.operations if op in _CHECKED_OPERATIONS
                )
    return needs


def check_topics(admin: AdminClient, needs: Mapping[str, set[str]], principal: str) -> None:
    """Raise `AuthorizationFailed` for the first topic the principal may not use as needed."""
    if not needs:
        return
    futures = admin.describe_topics(
        TopicCollection(sorted(needs)), include_authorized_operations=True, request_timeout=30
    )
    for topic, future in sorted(futures.items()):
        try:
            described = future.result()
        except KafkaException as exc:
            refusal = denied(exc.args[0], "DESCRIBE", "topic", topic, principal)
            if refusal is not None:
                raise refusal from None
            if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                _not_checked(f"topic {topic!r}", exc)
            continue  # not created yet: whoever needs it creates it (and says if refused)
        allowed = _names(described.authorized_operations)
        if allowed is None:
            continue  # the broker does not report operations (no authorizer, or too old)
        missing = sorted(needs[topic] - allowed)
        if missing:
            raise AuthorizationFailed(
                f"not authorized: {' and '.join(missing)} on topic {topic!r} for {principal} "
                f"(the broker allows {', '.join(sorted(allowed)) or 'nothing'}); grant the ACL "
                f"({ACLS_HINT})"
            )


def check_group(admin: AdminClient, group: str, principal: str, *, needs_read: bool = True) -> None:
    """The consumer group needs DESCRIBE and READ (joining, offsets in transactions); a group
    that never joins (``needs_read`` False) needs DESCRIBE, for librdkafka's coordinator lookup."""
    future = admin.describe_consumer_groups(
        [group], include_authorized_operations=True, request_timeout=30
    )[group]
    try:
        described = future.result()
    except KafkaException as exc:
        refusal = denied(exc.args[0], "DESCRIBE", "group", group, principal)
        if refusal is not None:
            raise refusal from None
        if exc.args[0].code() != KafkaError.GROUP_ID_NOT_FOUND:
            _not_checked(f"group {group!r}", exc)
        return
    allowed = _names(described.authorized_operations)
    if needs_read and allowed is not None and "READ" not in allowed:
        raise AuthorizationFailed(
            f"not authorized: READ on group {group!r} for {principal} (the broker allows "
            f"{', '.join(sorted(allowed)) or 'nothing'}); grant the ACL ({ACLS_HINT})"
        )


def _not_checked(what: str, exc: KafkaException) -> None:
    """The pre-flight is a shortcut to a clear error, not a gate: a describe that fails for
    another reason (a group being created by a worker starting beside this one, a coordinator
    moving) leaves the check to the clients themselves, which map refusals as well."""
    log.info("access to %s not checked in advance: %s", what, exc.args[0].str())


def _names(operations: Any) -> set[str] | None:
    if operations is None:
        return None
    return {op.name for op in operations}
