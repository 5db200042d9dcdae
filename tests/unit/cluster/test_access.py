"""What a secured cluster refused, as one clear line (cluster/access.py), without a broker.

A wrong password, an untrusted CA or a missing ACL never heals by retrying, so the worker stops
with a message naming what to fix. These tests feed `refusal_error` the exact texts librdkafka
2.16 produced against a real SASL_SSL broker, with settings resolved from real sources, and
drive the ACL pre-flight (`check_topics`, `check_group`) through a fake admin client whose
futures answer as confluent-kafka's do. What is asserted is what the user reads: the class,
who and where, which setting (and where it came from), and no password.
"""

from __future__ import annotations

from concurrent.futures import Future
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AclOperation

from streamflow import App
from streamflow.cluster.access import check_group, check_topics, required_topic_operations
from streamflow.cluster.acls import app_acls
from streamflow.errors import AuthenticationFailed, AuthorizationFailed, TlsFailure
from streamflow.kafka.refusals import denied, principal_of, refusal_error
from streamflow.kafka.settings import KafkaSettings, resolve

BAD_PASSWORD = (
    "sasl_ssl://127.0.0.1:50097/bootstrap: SASL authentication error: Authentication failed "
    "during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512 "
    "(after 312ms in state AUTH_REQ)"
)
WRONG_MECHANISM = (
    "sasl_ssl://127.0.0.1:50097/bootstrap: SASL PLAIN mechanism handshake failed: Broker: "
    "Unsupported SASL mechanism: broker's supported mechanisms: SCRAM-SHA-512,SCRAM-SHA-256 "
    "(after 301ms in state AUTH_HANDSHAKE)"
)
UNTRUSTED_CA = (
    "sasl_ssl://127.0.0.1:50097/bootstrap: SSL handshake failed: error:0A000086:SSL routines::"
    "certificate verify failed: broker certificate could not be verified, verify that "
    "ssl.ca.location is correctly configured or root CA certificates are installed (install "
    "ca-certificates package) (after 6ms in state SSL_HANDSHAKE)"
)
PASSWORD = "s3cret-Hunter2"
ENV = "STREAMFLOW_KAFKA_* environment variables"


def _settings(*cli: str) -> KafkaSettings:
    return resolve(
        app={"security.protocol": "SASL_SSL"},
        cli=["bootstrap.servers=kafka.example:9094", "sasl.username=app", *cli],
        environ={"STREAMFLOW_KAFKA_SASL_PASSWORD": PASSWORD},
    )


def test_a_wrong_password_names_user_broker_and_where_the_credentials_came_from() -> None:
    err = refusal_error(
        KafkaError(KafkaError._AUTHENTICATION, BAD_PASSWORD),
        _settings("sasl.mechanism=SCRAM-SHA-512"),
    )
    assert isinstance(err, AuthenticationFailed)
    text = str(err)
    assert "user 'app'" in text and "(SCRAM-SHA-512)" in text
    assert "at 127.0.0.1:50097:" in text  # the broker that refused, not the bootstrap setting
    assert "invalid credentials" in text
    assert "sasl.username (from --kafka)" in text
    assert f"sasl.password (from {ENV})" in text
    assert PASSWORD not in text
    assert "after 312ms" not in text and "AUTH_REQ" not in text
    assert "sasl_ssl://" not in text and "SASL authentication error" not in text


def test_a_mechanism_the_broker_does_not_offer_points_at_sasl_mechanism() -> None:
    err = refusal_error(
        KafkaError(KafkaError._AUTHENTICATION, WRONG_MECHANISM), _settings("sasl.mechanism=PLAIN")
    )
    assert isinstance(err, AuthenticationFailed)
    text = str(err)
    assert text.endswith("check sasl.mechanism (from --kafka)")
    assert "SCRAM-SHA-512,SCRAM-SHA-256" in text  # what the broker would accept
    assert "sasl.password" not in text and PASSWORD not in text
    assert "AUTH_HANDSHAKE" not in text


def test_a_mechanism_set_as_sasl_mechanisms_is_named_as_the_user_set_it() -> None:
    settings = resolve(
        cli=["security.protocol=SASL_SSL", "sasl.username=app"],
        environ={"STREAMFLOW_KAFKA_SASL_MECHANISMS": "PLAIN"},
    )
    err = refusal_error(KafkaError(KafkaError._AUTHENTICATION, WRONG_MECHANISM), settings)
    assert "(PLAIN)" in str(err)
    assert "not set" not in str(err)
    assert "check sasl.mechanisms (from STREAMFLOW_KAFKA_* environment variables)" in str(err)


def test_an_untrusted_broker_certificate_names_the_ca_file_and_its_source() -> None:
    err = refusal_error(
        KafkaError(KafkaError._SSL, UNTRUSTED_CA), _settings("ssl.ca.location=/etc/wrong-ca.pem")
    )
    assert isinstance(err, TlsFailure)
    text = str(err)
    assert text.startswith("TLS with 127.0.0.1:50097 failed: certificate verify failed")
    assert "error:0A000086" not in text and "SSL routines" not in text
    assert "SSL handshake failed" not in text and "SSL_HANDSHAKE" not in text
    assert "not signed by a CA the client trusts" in text
    assert "ssl.ca.location=/etc/wrong-ca.pem (from --kafka)" in text
    unset = refusal_error(KafkaError(KafkaError._SSL, UNTRUSTED_CA), _settings())
    assert str(unset).endswith("check ssl.ca.location (not set)")


def test_no_broker_prefix_means_the_bootstrap_and_transport_is_no_refusal() -> None:
    err = refusal_error(
        KafkaError(KafkaError._AUTHENTICATION, "SASL authentication error: bad (after 5ms)"),
        _settings(),
    )
    assert "at kafka.example:9094: bad;" in str(err)
    lost = KafkaError(KafkaError._TRANSPORT, "127.0.0.1:50097/bootstrap: Connection refused")
    assert refusal_error(lost, _settings()) is None
    assert refusal_error(KafkaError(KafkaError._ALL_BROKERS_DOWN), _settings()) is None


# -- denied -----------------------------------------------------------------------------------


def test_other_errors_are_not_denials() -> None:
    for code in (KafkaError._TRANSPORT, KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._TIMED_OUT):
        assert denied(KafkaError(code), "WRITE", "topic", "orders", "User:app") is None


@pytest.mark.parametrize(
    ("code", "operation", "resource", "name"),
    [
        (KafkaError.TOPIC_AUTHORIZATION_FAILED, "WRITE", "topic", "orders"),
        (KafkaError.GROUP_AUTHORIZATION_FAILED, "READ", "group", "shop"),
        (KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, "WRITE", "transactional id", "shop-1"),
    ],
)
def test_a_denial_names_operation_resource_principal_and_the_acls_command(
    code: int, operation: str, resource: str, name: str
) -> None:
    err = denied(KafkaError(code), operation, resource, name, "User:app")
    assert isinstance(err, AuthorizationFailed)
    text = str(err)
    assert f"{operation} on {resource} {name!r} for User:app" in text
    assert "authorization failed" in text.lower()  # the broker's short text is kept
    assert "streamflow acls" in text


def test_a_denial_of_another_kind_than_the_caller_said_names_that_kind() -> None:
    # A commit refused because of the group, while the caller was writing to a topic.
    err = denied(
        KafkaError(KafkaError.GROUP_AUTHORIZATION_FAILED), "WRITE", "topic", "totals", "User:app"
    )
    text = str(err)
    assert "READ on group for User:app" in text
    assert "totals" not in text and "WRITE" not in text


def test_a_long_broker_text_is_left_out() -> None:
    dump = "ProduceRequestData(" + "x" * 200 + ")"
    err = denied(
        KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED, dump), "WRITE", "topic", "t", "User:a"
    )
    assert "ProduceRequestData" not in str(err)
    assert "WRITE on topic 't' for User:a; grant the ACL" in str(err)


def test_principal_of_names_who_the_cluster_sees() -> None:
    sasl, ssl = {"security.protocol": "SASL_SSL"}, {"security.protocol": "SSL"}
    assert principal_of({**sasl, "sasl.username": "app"}) == "User:app"
    assert principal_of({"security.protocol": "sasl_plaintext", "sasl.username": "b"}) == "User:b"
    assert principal_of(sasl) == "the SASL principal"
    assert principal_of({**ssl, "ssl.certificate.location": "/c.pem"}) == (
        "the principal of the client certificate"
    )
    assert principal_of(ssl) == "User:ANONYMOUS"  # TLS without a client certificate
    assert principal_of({}) == "User:ANONYMOUS"


# -- the pre-flight ---------------------------------------------------------------------------


def test_required_operations_follow_the_apps_acls_and_never_include_create() -> None:
    app = App("shop")
    orders = app.topic("orders")
    totals = app.topic("totals", partitions=3)  # CREATE in the ACLs: the app makes it
    app.stream(orders).key_by(lambda v: v["c"], name="by-c").aggregate(
        "sums", initial=lambda: 0, fn=lambda acc, v: acc + 1
    ).to(totals)
    rules = app_acls(app.topology, "User:app", False)
    topics = ["orders", "totals", "shop-sums-changelog", "shop.dlq", "elsewhere", "shopping"]
    internal = {"READ", "WRITE", "DESCRIBE"}
    assert required_topic_operations(rules, topics) == {
        "orders": {"READ", "DESCRIBE"},
        "totals": {"WRITE", "DESCRIBE"},
        "shop-sums-changelog": internal,
        "shop.dlq": internal,
    }


def _future(result: Any = None, error: int | None = None) -> Future[Any]:
    future: Future[Any] = Future()
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(KafkaException(KafkaError(error)))
    return future


def _ops(*names: str) -> SimpleNamespace:
    return SimpleNamespace(authorized_operations=[AclOperation[n] for n in names])


class FakeAdmin:
    """Answers describe requests as confluent-kafka's AdminClient does: a future per name."""

    def __init__(self, answers: dict[str, Future[Any]] | None = None, **more: Future[Any]) -> None:
        self.answers = {**(answers or {}), **more}
        self.asked: list[str] = []

    def describe_topics(self, topics: Any, **kwargs: Any) -> dict[str, Future[Any]]:
        assert kwargs["include_authorized_operations"] is True
        self.asked += topics.topic_names
        return {name: self.answers[name] for name in topics.topic_names}

    def describe_consumer_groups(self, groups: list[str], **kwargs: Any) -> dict[str, Future[Any]]:
        assert kwargs["include_authorized_operations"] is True
        self.asked += groups
        return {name: self.answers[name] for name in groups}


def _check_topics(admin: FakeAdmin, needs: dict[str, set[str]]) -> None:
    check_topics(admin, needs, "User:app")  # type: ignore[arg-type]


def _check_group(admin: FakeAdmin, group: str, needs_read: bool = True) -> None:
    check_group(admin, group, "User:app", needs_read=needs_read)  # type: ignore[arg-type]


def test_a_topic_without_write_names_it_and_what_the_broker_allows() -> None:
    admin = FakeAdmin(orders=_future(_ops("READ", "DESCRIBE")), totals=_future(_ops("DESCRIBE")))
    with pytest.raises(AuthorizationFailed) as caught:
        _check_topics(admin, {"orders": {"READ", "DESCRIBE"}, "totals": {"WRITE", "DESCRIBE"}})
    text = str(caught.value)
    assert "WRITE on topic 'totals' for User:app (the broker allows DESCRIBE)" in text
    assert "orders" not in text and "streamflow acls" in text
    assert sorted(admin.asked) == ["orders", "totals"]


def test_enough_operations_or_no_authorizer_or_no_needs_pass() -> None:
    every = {"READ", "WRITE", "DESCRIBE"}
    _check_topics(FakeAdmin(t=_future(_ops("READ", "WRITE", "DESCRIBE", "CREATE"))), {"t": every})
    # No authorizer (or an old broker): no operations reported, nothing to compare.
    _check_topics(FakeAdmin(t=_future(SimpleNamespace(authorized_operations=None))), {"t": every})
    idle = FakeAdmin()
    _check_topics(idle, {})
    assert idle.asked == []


def test_a_missing_topic_is_skipped_and_a_hidden_one_is_a_describe_denial() -> None:
    _check_topics(
        FakeAdmin(new=_future(error=KafkaError.UNKNOWN_TOPIC_OR_PART)), {"new": {"WRITE"}}
    )
    hidden = FakeAdmin(
        hidden=_future(error=KafkaError.TOPIC_AUTHORIZATION_FAILED), ok=_future(_ops("READ"))
    )
    with pytest.raises(AuthorizationFailed, match="DESCRIBE on topic 'hidden' for User:app"):
        _check_topics(hidden, {"hidden": {"READ"}, "ok": {"READ"}})
    # Anything else leaves the check to the clients: the windowed crash test caught a worker
    # that stopped at start because a group being created beside it failed to describe.
    _check_topics(FakeAdmin(t=_future(error=KafkaError.REQUEST_TIMED_OUT)), {"t": {"READ"}})


def test_the_group_needs_read_unless_it_never_joins() -> None:
    admin = FakeAdmin(shop=_future(_ops("DESCRIBE")))
    with pytest.raises(AuthorizationFailed, match=r"READ on group 'shop' .*allows DESCRIBE\)"):
        _check_group(admin, "shop")
    _check_group(admin, "shop", needs_read=False)
    _check_group(FakeAdmin(shop=_future(_ops("READ", "DESCRIBE"))), "shop")
    _check_group(FakeAdmin(shop=_future(SimpleNamespace(authorized_operations=None))), "shop")


def test_an_unknown_group_is_fine_and_a_refused_describe_is_not() -> None:
    _check_group(FakeAdmin(shop=_future(error=KafkaError.GROUP_ID_NOT_FOUND)), "shop")
    refused = FakeAdmin({"shop-restore": _future(error=KafkaError.GROUP_AUTHORIZATION_FAILED)})
    with pytest.raises(AuthorizationFailed, match="DESCRIBE on group 'shop-restore' for User:a"):
        _check_group(refused, "shop-restore", needs_read=False)
