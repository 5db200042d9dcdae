"""The commit cycle's protocol with its clients: which producer a cycle uses, in what order.

The clients here record calls instead of talking to Kafka: what is under test is the cycle's
bookkeeping (alternating transactional producers, rewinds); the Kafka behaviour itself is
covered by tests/integration and the SIGKILL tests.
"""

from __future__ import annotations

from typing import Any, ClassVar

from confluent_kafka import KafkaError, KafkaException

from streamflow.runtime.collector import KafkaCollector
from streamflow.runtime.commit_cycle import CommitCycle
from streamflow.runtime.input_offsets import InputOffsets


class RecordingProducer:
    def __init__(self, name: str, calls: list[tuple[str, str]], fail_commit: bool = False) -> None:
        self.name, self.calls, self.fail_commit = name, calls, fail_commit

    def _record(self, what: str) -> None:
        self.calls.append((self.name, what))

    def begin_transaction(self) -> None:
        self._record("begin")

    def send_offsets_to_transaction(self, offsets: Any, metadata: Any, timeout: float) -> None:
        self._record("offsets")

    def commit_transaction(self, timeout: float) -> None:
        if self.fail_commit:
            self.fail_commit = False
            raise KafkaException(
                KafkaError(KafkaError._TIMED_OUT, "commit lost", txn_requires_abort=True)
            )
        self._record("commit")

    def abort_transaction(self, timeout: float) -> None:
        self._record("abort")

    def produce(self, topic: str, *args: Any, **kwargs: Any) -> None:
        self._record(f"produce {topic}")

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        self._record("flush")
        return 0


class RecordingConsumer:
    def __init__(self) -> None:
        self.seeks: list[Any] = []

    def consumer_group_metadata(self) -> object:
        return object()

    def seek(self, tp: Any) -> None:
        self.seeks.append((tp.topic, tp.partition, tp.offset))


class OneTask:
    partition = 0
    stores: ClassVar[dict[str, Any]] = {}

    def __init__(self) -> None:
        self.offsets = InputOffsets()
        self.offsets.start_at("in", 0)
        self.outcomes: list[str] = []

    def prepare_commit(self) -> None:
        pass

    def committed(self) -> None:
        self.outcomes.append("committed")

    def aborted(self) -> None:
        self.outcomes.append("aborted")


def _cycle(
    producers: list[RecordingProducer], eos: bool = True
) -> tuple[CommitCycle, KafkaCollector, RecordingConsumer]:
    consumer = RecordingConsumer()
    collector = KafkaCollector(producers[0])
    cycle = CommitCycle(eos)
    cycle.attach(producers, consumer, collector)
    return cycle, collector, consumer


def _one_cycle(cycle: CommitCycle, collector: KafkaCollector, task: OneTask, offset: int) -> bool:
    cycle.begin()
    collector.send("out", b"k", b"v", None, None, None)
    task.offsets.stage("in", offset + 1)  # processed ``offset``: the consumer is past it
    return cycle.commit([task])


def test_consecutive_cycles_alternate_transactional_producers() -> None:
    calls: list[tuple[str, str]] = []
    cycle, collector, _ = _cycle([RecordingProducer("a", calls), RecordingProducer("b", calls)])
    task = OneTask()
    for offset in range(4):
        assert _one_cycle(cycle, collector, task, offset)
    # Each transaction is begun, written, given its offsets and committed on one producer, and
    # the next transaction only begins after the previous one committed.
    expected = []
    for name in ("b", "a", "b", "a"):
        expected += [(name, "begin"), (name, "produce out"), (name, "offsets"), (name, "commit")]
    assert calls == expected
    assert task.offsets.committed("in") == 4 and task.outcomes == ["committed"] * 4


def test_an_aborted_cycle_rewinds_and_the_next_cycle_uses_the_other_producer() -> None:
    calls: list[tuple[str, str]] = []
    a, b = RecordingProducer("a", calls), RecordingProducer("b", calls, fail_commit=True)
    cycle, collector, consumer = _cycle([a, b])
    task = OneTask()
    assert not _one_cycle(cycle, collector, task, 9)  # b's commit fails: abort on b, rewind
    assert calls[-1] == ("b", "abort")
    assert consumer.seeks == [("in", 0, 0)] and task.outcomes == ["aborted"]
    assert _one_cycle(cycle, collector, task, 9)
    assert calls[-4:] == [("a", "begin"), ("a", "produce out"), ("a", "offsets"), ("a", "commit")]
    assert task.offsets.committed("in") == 10


def test_at_least_once_keeps_its_single_producer_and_flushes() -> None:
    calls: list[tuple[str, str]] = []
    producer = RecordingProducer("only", calls)
    cycle, collector, consumer = _cycle([producer], eos=False)
    task = OneTask()
    commits: list[Any] = []
    consumer.commit = lambda offsets, asynchronous: commits.append(offsets)  # type: ignore[attr-defined]
    for offset in range(2):
        assert _one_cycle(cycle, collector, task, offset)
    assert calls == [("only", "produce out"), ("only", "flush")] * 2
    assert [[(tp.topic, tp.offset) for tp in c] for c in commits] == [[("in", 1)], [("in", 2)]]


class UndeliveredProducer(RecordingProducer):
    """At-least-once outputs the cluster did not acknowledge: a flush that leaves records
    behind (timed out), or a delivery report with an error."""

    def __init__(self, calls: list[tuple[str, str]], left: int, report: KafkaError | None) -> None:
        super().__init__("only", calls)
        self.left, self.report = left, report
        self.cycle: CommitCycle | None = None

    def flush(self, timeout: float) -> int:
        self._record("flush")
        if self.report is not None and self.cycle is not None:
            self.cycle.on_delivery(self.report, None)
        return self.left


def _undelivered(
    left: int, report: KafkaError | None
) -> tuple[list[Any], OneTask, RecordingConsumer]:
    calls: list[tuple[str, str]] = []
    producer = UndeliveredProducer(calls, left, report)
    cycle, collector, consumer = _cycle([producer], eos=False)
    producer.cycle = cycle
    commits: list[Any] = []
    consumer.commit = lambda offsets, asynchronous: commits.append(offsets)  # type: ignore[attr-defined]
    task = OneTask()
    assert not _one_cycle(cycle, collector, task, 5), "the cycle must not count as committed"
    return commits, task, consumer


def test_at_least_once_commits_no_offset_when_the_flush_times_out() -> None:
    commits, task, consumer = _undelivered(left=1, report=None)
    assert commits == [], "offsets would cover an output the cluster never acknowledged"
    assert task.outcomes == ["aborted"], "the store must not apply the cycle's writes"
    assert consumer.seeks == [("in", 0, 0)] and task.offsets.committed("in") == 0


def test_at_least_once_commits_no_offset_after_a_failed_delivery() -> None:
    report = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "too large")
    commits, task, consumer = _undelivered(left=0, report=report)
    assert commits == [] and task.outcomes == ["aborted"]
    assert consumer.seeks == [("in", 0, 0)]
