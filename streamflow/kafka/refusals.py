"""What a cluster's refusal means, said once, in one line that names what to fix.

librdkafka reports a wrong password or an untrusted CA as a log line (``error_cb``) and then
retries forever; a missing ACL comes back as an authorization error code from wherever it was
hit. Every client of streamflow (the worker, the CLI, the registry, the Python client) turns
these into the same errors here: ``refusal_error`` for authentication and TLS, ``denied`` for
ACLs, with the principal as ACLs name it (``principal_of``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaError

from streamflow.errors import (
    AuthenticationFailed,
    AuthorizationFailed,
    ClusterAccessError,
    TlsFailure,
)
from streamflow.kafka.settings import KafkaSettings

ACLS_HINT = "`streamflow acls APP_FILE` prints every ACL the app needs"

_RESOURCE_OF_CODE = {
    KafkaError.TOPIC_AUTHORIZATION_FAILED: "topic",
    KafkaError.GROUP_AUTHORIZATION_FAILED: "group",
    KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED: "transactional id",
    KafkaError.CLUSTER_AUTHORIZATION_FAILED: "cluster",
}
AUTHORIZATION_CODES = frozenset(_RESOURCE_OF_CODE)
"""Error codes a retry cannot fix: an ACL is missing."""

_BROKER = re.compile(r"^(?P<proto>[a-z_]+)://(?P<addr>[^/ ]+)/[^:]*: ")
AFTER = re.compile(r" \(after \d+ ?ms[^)]*\)$")
_OPENSSL_CODE = re.compile(r"error:[0-9A-F]+:[^:]*::")


def principal_of(values: Mapping[str, Any]) -> str:
    """Who the cluster thinks a client with these settings is, as ACLs name it (best effort,
    for messages)."""
    protocol = str(values.get("security.protocol", "plaintext")).lower()
    user = values.get("sasl.username")
    if protocol.startswith("sasl") and user:
        return f"User:{user}"
    if protocol == "ssl" and values.get("ssl.certificate.location"):
        return "the principal of the client certificate"
    if protocol.startswith("sasl"):
        return "the SASL principal"
    return "User:ANONYMOUS"


def denied(
    err: KafkaError, operation: str, resource: str, name: str | None, principal: str
) -> AuthorizationFailed | None:
    """``err`` as a clear authorization error if it is one, else None. ``operation`` and
    ``resource`` say what the caller was doing (the broker's error does not)."""
    kind = _RESOURCE_OF_CODE.get(err.code())
    if kind is None:
        return None
    if kind != resource:  # e.g. a transactional commit refused because of a topic
        operation, resource, name = _operation_for(kind), kind, None
    target = f"{resource} {name!r}" if name else resource
    said = err.str()
    # The broker's text helps when short; the controller's is a dump of the Java request.
    said = f" ({said})" if len(said) <= 160 else ""
    return AuthorizationFailed(
        f"not authorized: {operation} on {target} for {principal}{said}; grant the ACL "
        f"({ACLS_HINT})"
    )


def _operation_for(kind: str) -> str:
    return {"topic": "WRITE or READ", "group": "READ", "transactional id": "WRITE"}.get(
        kind, "IDEMPOTENT_WRITE"
    )


def refusal_error(err: KafkaError, settings: KafkaSettings) -> ClusterAccessError | None:
    """An ``error_cb`` error as the clear error it stands for (None: not a refusal)."""
    code = err.code()
    if code not in (KafkaError._AUTHENTICATION, KafkaError._SSL):
        return None
    text = AFTER.sub("", err.str())
    match = _BROKER.match(text)
    where = match.group("addr") if match else settings.values.get("bootstrap.servers", "?")
    reason = text[match.end() :] if match else text
    if code == KafkaError._AUTHENTICATION:
        return _authentication(reason, where, settings)
    return _tls(reason, where, settings)


def _authentication(reason: str, where: str, settings: KafkaSettings) -> AuthenticationFailed:
    values = settings.values
    user = values.get("sasl.username")
    mechanism = values.get("sasl.mechanism", values.get("sasl.mechanisms", "GSSAPI"))
    who = f"user {user!r}" if user else "the client"
    reason = reason.removeprefix("SASL authentication error: ")
    if "mechanism" in reason.lower() and "unsupported" in reason.lower():
        # librdkafka takes the plural spelling too: name the key the user actually set.
        check = ["sasl.mechanisms" if "sasl.mechanisms" in values else "sasl.mechanism"]
    elif mechanism.upper() == "OAUTHBEARER":
        check = sorted(k for k in values if k.startswith("sasl.oauthbearer")) or [
            "sasl.oauthbearer.*"
        ]
    else:
        check = ["sasl.username", "sasl.password"]
    return AuthenticationFailed(
        f"authentication failed for {who} ({mechanism}) at {where}: {reason}; check "
        + ", ".join(_with_source(key, settings) for key in check)
    )


def _tls(reason: str, where: str, settings: KafkaSettings) -> TlsFailure:
    reason = _OPENSSL_CODE.sub("", reason.removeprefix("SSL handshake failed: "))
    lowered = reason.lower()
    if "mismatch" in lowered:
        hint = (
            f"the broker's certificate does not name {where.rsplit(':', 1)[0]}: connect with a "
            "name the certificate has (hostname verification: "
            + _with_source("ssl.endpoint.identification.algorithm", settings)
            + ")"
        )
    elif "verify failed" in lowered or "unable to get" in lowered:
        hint = "the broker's certificate is not signed by a CA the client trusts: check " + (
            _with_source("ssl.ca.location", settings)
        )
    elif "certificate required" in lowered or "alert" in lowered:
        hint = "the broker wants a client certificate it trusts: check " + ", ".join(
            _with_source(k, settings) for k in ("ssl.certificate.location", "ssl.key.location")
        )
    else:
        hint = "check the ssl.* settings and security.protocol"
    return TlsFailure(f"TLS with {where} failed: {reason}; {hint}")


def _with_source(key: str, settings: KafkaSettings) -> str:
    source = settings.sources.get(key)
    if source is None:
        return f"{key} (not set)"
    if key in ("ssl.ca.location", "ssl.certificate.location", "ssl.key.location"):
        return f"{key}={settings.values[key]} (from {source})"
    return f"{key} (from {source})"
