"""What one workflow transition wants done, recorded as data: the ``Outcome`` and the
``TransitionEffects`` that ``WorkflowContext`` calls record into.

The transition (``workflow/transition.py``) decides; this module only writes its decisions
down — step commands (encoded and sized once, here), timers to set and delete, attempts to
cancel, records to emit — for the orchestrator to apply inside the task's transaction.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from streamflow.errors import PayloadTooLarge
from streamflow.serde.avro.serde import AvroSerde
from streamflow.workflow.api import StepDef
from streamflow.workflow.journal import Journal
from streamflow.workflow.messages import StepCancel, StepCommand, dumps
from streamflow.workflow.payloads import args_digest
from streamflow.workflow.timers import SIGNAL_TIMEOUT, SLEEP, STEP_DEADLINE, Timer

if TYPE_CHECKING:
    from streamflow.workflow.transition import WorkflowMachine


class Outcome:
    """What one transition wants done, besides the journal changes it marked dirty.

    A plain slotted class, not a dataclass: one is made per event, and a dataclass's
    ``default_factory`` fields make its ``__init__`` several times slower."""

    __slots__ = (
        "cancelled_timers",
        "command_bytes",
        "commands",
        "dropped_entries",
        "emits",
        "journal",
        "purge",
        "signal_dropped",
        "step_cancels",
        "timers",
    )

    def __init__(self) -> None:
        self.journal: Journal | None = None
        self.commands: list[tuple[StepDef, StepCommand]] = []
        self.command_bytes: list[bytes] = []
        """Each command encoded (in the order of ``commands``): sized when it was made."""
        self.timers: list[Timer] = []
        self.cancelled_timers: list[Timer] = []
        self.emits: list[tuple[str, bytes | None, bytes | None]] = []
        """(topic, key, value) already serialized: a value that cannot be fails the
        transition."""
        self.dropped_entries: list[int] = []
        """Journal entries to delete from the store (``continue_as_new``)."""
        self.step_cancels: list[tuple[StepDef, StepCancel, str]] = []
        """Attempts to stop: (step, cancel, the command's key) — the cancel follows its
        command on the same step partition."""
        self.signal_dropped = False
        """A signal came for an instance that had ended: dropped, and counted."""
        self.purge = False
        """Delete the (finished) instance: its header, entries and count."""


class TransitionEffects:
    """The effects one transition records (the ``Effects`` a ``WorkflowContext`` calls)."""

    def __init__(self, machine: WorkflowMachine, now_ms: int) -> None:
        self.machine = machine
        self.now_ms = now_ms
        self.outcome = Outcome()

    @property
    def journal(self) -> Journal | None:
        return self.outcome.journal

    @journal.setter
    def journal(self, journal: Journal) -> None:
        self.outcome.journal = journal

    def command(
        self, journal: Journal, seq: int, sdef: StepDef, args: list[Any], attempt: int
    ) -> None:
        """Encode the command once, here: one over the payload limit fails the call that made
        it (inside the workflow: it suspends), never the transaction that would send it. A
        command over one record's size is sent as chunks (``cluster/record_chunks``)."""
        m = self.machine
        cmd = StepCommand(
            journal.header["workflow"],
            journal.id,
            seq,
            attempt,
            args,
            m.reply_topic,
            m.reply_partition,
            journal.header.get("run", 1),
        )
        encoded = dumps(cmd.to_json())
        if len(encoded) > m.max_payload_bytes:  # rare: only then are the arguments measured
            size = len(dumps(args))
            if size > m.max_payload_bytes:
                raise PayloadTooLarge(
                    f"the arguments of step {sdef.name!r} (instance {journal.id!r} of "
                    f"{m.workflow}) are {size} bytes encoded, over the limit of "
                    f"{m.max_payload_bytes} bytes a payload may have "
                    "(App(max_payload_bytes=...)); pass a reference (a key, a URL) instead of "
                    "the data"
                )
        self.outcome.commands.append((sdef, cmd))
        self.outcome.command_bytes.append(encoded)

    def set_timer(self, journal: Journal, timer: Timer) -> None:
        self.outcome.timers.append(
            Timer(
                timer.due_ms, timer.instance_id, timer.seq, timer.kind, journal.header.get("run", 1)
            )
        )

    def cancel_timer(self, journal: Journal, entry: dict[str, Any], kind: str) -> None:
        due = entry.pop("timer_due", None)
        if due is not None:
            self.outcome.cancelled_timers.append(Timer(int(due), journal.id, entry["seq"], kind))

    def cancel_deadline(self, journal: Journal, entry: dict[str, Any]) -> None:
        """The step call ended: its ``schedule_to_close`` timer is not needed any more."""
        due = entry.pop("deadline_due", None)
        if due is not None:
            self.outcome.cancelled_timers.append(
                Timer(int(due), journal.id, entry["seq"], STEP_DEADLINE)
            )

    def cancel_attempt(self, journal: Journal, entry: dict[str, Any]) -> None:
        """Ask the step task to stop the attempt in flight (once per attempt)."""
        if entry.get("cancel_sent") == entry["attempt"]:
            return
        sdef = self.machine.steps.get(entry["name"])
        if sdef is None:
            return  # not registered here: its answer is waited for all the same
        entry["cancel_sent"] = entry["attempt"]
        journal.touch(entry["seq"])
        key = str(entry["args"][0]) if sdef.is_entity else journal.id
        cancel = StepCancel(
            journal.header["workflow"],
            journal.id,
            entry["seq"],
            entry["attempt"],
            journal.header.get("run", 1),
        )
        self.outcome.step_cancels.append((sdef, cancel, key))

    def check_size(self, what: str, value: Any, limit: int | None = None) -> None:
        """``value`` is a payload (or, with ``limit``, a journal header holding some): past
        the limit it fails the call that made it, inside the workflow, naming it."""
        size = len(dumps(value))
        limit = limit or self.machine.max_payload_bytes
        if size > limit:
            raise PayloadTooLarge(
                f"{what} is {size} bytes encoded, over the limit of {limit} bytes "
                "(App(max_payload_bytes=...)); pass a reference (a key, a URL) instead of the "
                "data"
            )

    # -- Effects ---------------------------------------------------------------------------------

    def start_step(self, journal: Journal, seq: int, sdef: StepDef, args: list[Any]) -> None:
        self.command(journal, seq, sdef, args, 1)  # first: a command too large journals nothing
        journal.put_entry(
            {
                "seq": seq,
                "kind": "step",
                "name": sdef.name,
                "digest": args_digest(sdef.name, sdef.args, args),
                "status": "pending",
                "attempt": 1,
                "args": args,
                "started_ms": self.now_ms,
            }
        )
        if sdef.schedule_to_close is not None:
            entry = journal.entries[seq]
            due = self.now_ms + int(sdef.schedule_to_close.total_seconds() * 1000)
            entry.update(deadline_ms=due, deadline_due=due)
            self.set_timer(journal, Timer(due, journal.id, seq, STEP_DEADLINE))

    def cancelled_call(self, journal: Journal, entry: dict[str, Any]) -> None:
        """A call made after the instance was cancelled: journaled as cancelled, nothing sent
        (its await raises ``Cancelled``; a replay finds the same entry)."""
        entry.update(status="cancelled", finished_ms=self.now_ms)
        journal.put_entry(entry)

    def start_timer(self, journal: Journal, seq: int, kind: str, due_ms: int, what: str) -> None:
        journal.put_entry(
            {
                "seq": seq,
                "kind": "sleep",
                "name": kind,
                "digest": what,
                "status": "pending",
                "due_ms": due_ms,
                "timer_due": due_ms,
            }
        )
        self.set_timer(journal, Timer(due_ms, journal.id, seq, SLEEP))

    def wait_signal(self, journal: Journal, seq: int, name: str, timeout_ms: int | None) -> None:
        entry = journal.put_entry(
            {
                "seq": seq,
                "kind": "signal",
                "name": name,
                "digest": str(timeout_ms),
                "status": "pending",
            }
        )
        inbox = journal.header.setdefault("signals", {}).get(name)
        if inbox:
            # Signals sent before the wait are kept in the inbox, oldest first.
            entry.update(status="done", result=inbox.pop(0))
            journal.header_dirty = True
        elif timeout_ms is not None:
            due = self.now_ms + timeout_ms
            entry["timer_due"] = due
            self.set_timer(journal, Timer(due, journal.id, seq, SIGNAL_TIMEOUT))

    def avro_serdes(self, topic: str) -> tuple[AvroSerde | None, AvroSerde | None]:
        """The Avro key and value serdes of ``topic`` (None where it is not Avro)."""
        spec = self.machine.topics.get(topic)
        if spec is None:
            return None, None
        key, value = spec.key_serde, spec.value_serde
        return (
            key if key.carries_schema else None,  # type: ignore[return-value]
            value if value.carries_schema else None,
        )

    def emit(self, topic: str, key: Any, value: Any) -> None:
        spec = self.machine.topics.get(topic)
        if spec is None:
            raise KeyError(
                f"ctx.emit: topic {topic!r} is not declared; call app.topic({topic!r}, ...)"
            )
        try:
            kb = None if key is None else spec.key_serde.serialize(key)
            vb = None if value is None else spec.value_serde.serialize(value)
        except Exception as exc:  # noqa: BLE001 - name the call and the topic
            raise TypeError(
                f"ctx.emit({topic!r}, key, value): cannot serialize with the "
                f"topic's serdes: {type(exc).__name__}: {exc}"
            ) from None
        self.outcome.emits.append((topic, kb, vb))
