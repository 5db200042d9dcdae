"""The Kafka-native schema registry: subjects, versions and modes in the compacted, single-partition
topic ``_streamflow_schemas`` of the app's own cluster. A streamflow app needs nothing but Kafka.

The topic is a log of facts, replayed in order into a ``SubjectLog``:

* key ``{"keytype": "SCHEMA", "subject": S, "version": V}`` → ``{"subject", "version", "id",
  "schema"}``: version V of subject S is the schema with that id and canonical text;
* key ``{"keytype": "CONFIG", "subject": S}`` → ``{"compatibility": MODE}``: the subject's mode.

Keys are JSON with sorted keys and no whitespace: compaction keeps the last record *per exact
key bytes*, so one fact must always be spelled the same way.

Allocating ids and versions safely when several workers register at once: every registrant uses
the same transactional id, ``_streamflow_schemas-writer``. ``init_transactions`` fences any other
registrant holding it and completes (aborts) its open transaction; the fenced one's commit fails
and it retries from the start. After fencing, the registrant re-reads the topic to its end
(read_committed: no other transaction can be open any more, so that end is final), decides the
next id and version from everything ever committed, and writes its facts in one transaction.
So decisions are serialized through the fence, never two records claim one (subject, version)
with different content (which compaction would resolve to the wrong one), and the same text
always maps to the id it got first. A plain idempotent producer would not do: two registrants
reading the same end would both allocate the same next id for different schemas.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

from streamflow.errors import ConfigError, KafkaUnavailable, SchemaError
from streamflow.kafka.client_log import LIBRDKAFKA_LOGGER
from streamflow.serde.avro.schema import Schema, canonical_schema
from streamflow.serde.registry.base import RegisteredSchema, SubjectLog
from streamflow.serde.registry.compatibility import CompatibilityMode, Incompatibility

log = logging.getLogger(__name__)

TOPIC = "_streamflow_schemas"
READER_GROUP = f"{TOPIC}-reader"
"""Its consumers' group id: librdkafka requires one, and ACLs must name it."""
WRITER_TRANSACTIONAL_ID = "_streamflow_schemas-writer"
TOPIC_CONFIG = {
    "cleanup.policy": "compact",
    # Facts are never superseded except a subject's mode: the log stays small without tuning.
    "min.compaction.lag.ms": "0",
}


_DEBUG_LOGGER = LIBRDKAFKA_LOGGER

Fact = tuple[bytes, bytes, Callable[[], None]]
"""(key, value, apply): one record to write, and how to apply it locally once committed."""


def schema_key(subject: str, version: int) -> bytes:
    return orjson.dumps(
        {"keytype": "SCHEMA", "subject": subject, "version": version}, option=orjson.OPT_SORT_KEYS
    )


def config_key(subject: str) -> bytes:
    return orjson.dumps({"keytype": "CONFIG", "subject": subject}, option=orjson.OPT_SORT_KEYS)


class KafkaSchemaRegistry:
    """A ``SchemaRegistry`` kept in ``topic`` on the cluster at ``bootstrap``."""

    def __init__(
        self,
        bootstrap: str,
        *,
        topic: str = TOPIC,
        timeout: float = 30.0,
        client_config: Mapping[str, Any] | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.timeout = timeout
        self._client_config = dict(client_config or {})
        self.log = SubjectLog()
        # 0, not OFFSET_BEGINNING (which costs a 500 ms offset lookup): a compacted topic keeps
        # its offsets, and auto.offset.reset covers a log whose start has moved.
        self._next_offset = 0
        self._topic_exists = False

    # -- SchemaRegistry --------------------------------------------------------------------------

    def register(
        self, subject: str, schema: Schema | str, *, default_mode: CompatibilityMode
    ) -> RegisteredSchema:
        text = canonical_schema(schema)
        self.refresh()
        found = self.log.find(subject, text)
        if found is not None:
            return found
        self.log.plan(subject, text, default_mode)  # refuses before taking the writer's fence
        result: list[RegisteredSchema] = []

        def decide() -> list[Fact]:
            registered = self.log.plan(subject, text, default_mode)
            result[:] = [registered]
            if self.log.find(subject, text) is not None:
                return []  # another registrant added it while we waited for the fence
            facts = []
            if subject not in self.log.modes and subject not in self.log.subject_versions:
                facts.append(self._mode_fact(subject, default_mode))  # the subject's default
            facts.append(
                (
                    schema_key(subject, registered.version),
                    orjson.dumps(
                        {
                            "subject": subject,
                            "version": registered.version,
                            "id": registered.id,
                            "schema": text,
                        }
                    ),
                    lambda: self.log.apply_schema(registered),
                )
            )
            return facts

        self._write(decide)
        log.info(
            "registered subject %s version %d (schema id %d)",
            subject,
            result[0].version,
            result[0].id,
        )
        return result[0]

    def check(
        self, subject: str, schema: Schema | str, *, default_mode: CompatibilityMode
    ) -> list[Incompatibility]:
        self.refresh()
        return self.log.problems(subject, canonical_schema(schema), default_mode)

    def schema(self, schema_id: int) -> str:
        text = self.log.schema(schema_id)
        if text is None:
            self.refresh()  # registered by another process since we last read
            text = self.log.schema(schema_id)
        if text is None:
            raise SchemaError(
                f"schema id {schema_id} is not registered in topic {self.topic!r} "
                f"on {self.bootstrap}"
            )
        return text

    def subjects(self) -> list[str]:
        self.refresh()
        return sorted(self.log.subject_versions)

    def versions(self, subject: str) -> list[RegisteredSchema]:
        self.refresh()
        return list(self.log.subject_versions.get(subject, ()))

    def mode(self, subject: str) -> CompatibilityMode | None:
        self.refresh()
        return self.log.modes.get(subject)

    def set_mode(self, subject: str, mode: CompatibilityMode) -> None:
        self._write(
            lambda: [] if self.log.modes.get(subject) is mode else [self._mode_fact(subject, mode)]
        )

    # -- reading the log -------------------------------------------------------------------------

    def refresh(self) -> None:
        """Replay every fact committed since the last refresh (the whole topic the first time)."""
        if not self._topic_exists and not self._find_topic():
            return  # no topic yet: nothing was ever registered
        consumer = self._consumer()
        try:
            self._read_to_end(consumer)
        finally:
            consumer.close()

    def _consumer(self) -> Consumer:
        return Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": READER_GROUP,  # never joins: partitions are assigned
                "enable.auto.commit": False,
                "enable.partition.eof": True,  # "read to the end" must know where the end is
                "fetch.wait.max.ms": 10,  # at the end, a fetch would otherwise idle 500 ms
                "isolation.level": "read_committed",
                "auto.offset.reset": "earliest",
                **self._client_config,
            }
        )

    def _read_to_end(self, consumer: Consumer) -> None:
        consumer.assign([TopicPartition(self.topic, 0, self._next_offset)])
        deadline = time.monotonic() + self.timeout
        while True:
            msg = consumer.poll(0.05)
            if msg is None:
                if time.monotonic() > deadline:
                    raise KafkaUnavailable(
                        f"schema registry: could not read topic {self.topic!r} to its end on "
                        f"{self.bootstrap} within {self.timeout:.0f} s"
                    )
                continue
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    return
                if error.code() == KafkaError.GROUP_AUTHORIZATION_FAILED:
                    self._raise_if_denied(error, "DESCRIBE", "group", READER_GROUP)
                self._raise_if_denied(error, "READ", "topic", self.topic)
                if error.fatal() or not error.retriable():
                    raise KafkaUnavailable(
                        f"schema registry: cannot read topic {self.topic!r}: {error.str()}"
                    )
                continue
            offset = msg.offset()
            assert offset is not None  # a record, not an event
            self._apply(msg.key(), msg.value(), offset)
            self._next_offset = offset + 1

    def _apply(self, key: bytes | None, value: bytes | None, offset: int) -> None:
        try:
            k = orjson.loads(key or b"null")
            keytype = k.get("keytype") if isinstance(k, dict) else None
            if keytype == "SCHEMA" and value is not None:
                v = orjson.loads(value)
                self.log.apply_schema(
                    RegisteredSchema(v["subject"], int(v["version"]), int(v["id"]), v["schema"])
                )
            elif keytype == "CONFIG":
                mode = None if value is None else orjson.loads(value)["compatibility"]
                self.log.apply_mode(
                    k["subject"], None if mode is None else CompatibilityMode.parse(mode)
                )
            # other key types come from a newer streamflow: skipped, not misread
        except (ValueError, KeyError, TypeError, SchemaError) as exc:
            log.warning(
                "schema registry: skipping malformed record at %s@%d: %s", self.topic, offset, exc
            )

    # -- writing ---------------------------------------------------------------------------------

    def _mode_fact(self, subject: str, mode: CompatibilityMode) -> Fact:
        return (
            config_key(subject),
            orjson.dumps({"compatibility": mode.value}),
            lambda: self.log.apply_mode(subject, mode),
        )

    def _write(self, decide: Callable[[], list[Fact]]) -> None:
        """Take the writers' fence, re-read to the end, ``decide`` what to write, commit it.

        ``decide`` runs on a log that holds every committed fact; it may raise (e.g.
        SchemaIncompatible) to write nothing. The fence is held from ``init_transactions`` to
        the commit: short, since the consumer that re-reads is connected before taking it. A
        registrant fenced by another backs off for a random while before taking it back, so
        concurrent registrants do not fence each other forever.
        """
        self._ensure_topic()
        consumer = self._consumer()
        deadline = time.monotonic() + self.timeout
        attempt = 0
        try:
            self._read_to_end(consumer)  # connects, and leaves little to read under the fence
            while True:
                attempt += 1
                facts = self._attempt(consumer, decide)
                if facts is not None:
                    for _, _, apply in facts:
                        apply()
                    return
                if time.monotonic() > deadline:
                    raise KafkaUnavailable(
                        f"schema registry: gave up writing to topic {self.topic!r} after "
                        f"{attempt} attempts in {self.timeout:.0f} s: other registrants kept "
                        "fencing this one"
                    )
                time.sleep(random.uniform(0.02, 0.1) * min(2**attempt, 20))
        finally:
            consumer.close()

    def _attempt(self, consumer: Consumer, decide: Callable[[], list[Fact]]) -> list[Fact] | None:
        """One try under the fence: the facts committed, or None when fenced (try again)."""
        producer = Producer(
            {
                "bootstrap.servers": self.bootstrap,
                "transactional.id": WRITER_TRANSACTIONAL_ID,
                # A registrant that dies mid-transaction blocks the others at most this long (the
                # next init_transactions aborts it sooner).
                "transaction.timeout.ms": 10_000,
                "enable.idempotence": True,
                "acks": "all",
                # Being fenced is this protocol working, not an error worth librdkafka's stderr.
                "logger": _DEBUG_LOGGER,
                **self._client_config,
            }
        )
        try:
            producer.init_transactions(self.timeout)  # fences every other registrant
            self._read_to_end(consumer)
            facts = decide()
            if facts:
                producer.begin_transaction()
                for key, value, _ in facts:
                    producer.produce(self.topic, key=key, value=value, partition=0)
                producer.commit_transaction(self.timeout)
            return facts
        except KafkaException as exc:
            error = exc.args[0]
            self._raise_if_denied(error, "WRITE", "transactional id", WRITER_TRANSACTIONAL_ID)
            if not (error.retriable() or error.txn_requires_abort() or error.fatal()):
                raise KafkaUnavailable(
                    f"schema registry: cannot write to topic {self.topic!r} on "
                    f"{self.bootstrap}: {error.str()}"
                ) from exc
            # Fenced by a concurrent registrant (our transaction is aborted), or transient.
            log.debug("schema registry write attempt failed (%s); retrying", error.str())
            with contextlib.suppress(KafkaException):
                producer.purge()
            return None

    def _raise_if_denied(self, error: KafkaError, operation: str, kind: str, name: str) -> None:
        """A missing ACL is said as such, at once: retrying cannot grant it."""
        from streamflow.kafka.refusals import denied, principal_of

        refusal = denied(error, operation, kind, name, principal_of(self._client_config))
        if refusal is not None:
            raise refusal from None

    # -- the topic -------------------------------------------------------------------------------

    def _find_topic(self) -> bool:
        admin = AdminClient({"bootstrap.servers": self.bootstrap, **self._client_config})
        try:
            metadata = admin.list_topics(self.topic, timeout=self.timeout)
        except KafkaException as exc:
            raise KafkaUnavailable(
                f"schema registry: cannot reach Kafka at {self.bootstrap}: {exc}; is the broker "
                "running and the bootstrap address right?"
            ) from exc
        topic = metadata.topics.get(self.topic)
        if topic is not None and topic.error is not None:
            self._raise_if_denied(topic.error, "DESCRIBE", "topic", self.topic)
        if topic is None or topic.error is not None:
            return False
        if len(topic.partitions) != 1:
            raise ConfigError(
                f"schema registry topic {self.topic!r} has {len(topic.partitions)} partitions; "
                "it must have exactly one (one log, one order of facts): recreate it"
            )
        self._topic_exists = True
        return True

    def _ensure_topic(self) -> None:
        if self._topic_exists or self._find_topic():
            return
        admin = AdminClient({"bootstrap.servers": self.bootstrap, **self._client_config})
        new = NewTopic(self.topic, num_partitions=1, replication_factor=-1, config=TOPIC_CONFIG)
        future = admin.create_topics(
            [new], operation_timeout=self.timeout, request_timeout=self.timeout
        )[self.topic]
        try:
            future.result()
            log.info("created schema registry topic %s", self.topic)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                self._raise_if_denied(exc.args[0], "CREATE", "topic", self.topic)
                raise ConfigError(
                    f"cannot create schema registry topic {self.topic!r}: {exc.args[0].str()}"
                ) from exc
        deadline = time.monotonic() + self.timeout
        while not self._find_topic():
            if time.monotonic() > deadline:
                raise KafkaUnavailable(f"schema registry topic {self.topic!r} did not appear")
            time.sleep(0.1)
