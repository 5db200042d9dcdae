"""Which worker a lookup asks, and what it does with each answer (no broker: the asking is a
generator of requests, driven here with answers a worker could give)."""

from __future__ import annotations

from typing import Any

import pytest

from streamflow.workflow.lookup import Fetch, HttpStatus, LookupFailed, Owners, Pause, asking


class _Group(Owners):
    """Owners whose group description is given, not asked of a broker."""

    def __init__(self, endpoints: list[str]) -> None:
        super().__init__(app=None, client_conf={})
        self.members = endpoints

    def _describe(self) -> list[str]:
        return list(self.members)


def _drive(owners: Owners, answers: dict[str, Any], wait: float = 0.0) -> tuple[Any, list]:
    asked: list[Any] = []
    requests = asking(owners, "wf-instances", "1_0", "id-1", wait)
    try:
        request = next(requests)
        while True:
            asked.append(request)
            if isinstance(request, Pause):
                request = requests.send(None)
                continue
            answer = answers[request.endpoint]
            request = requests.send(answer() if callable(answer) else answer)
    except StopIteration as done:
        return done.value, asked


def test_the_owner_learned_from_an_answer_is_asked_first_next_time() -> None:
    owners = _Group(["a:1", "b:2"])
    found = {"found": True, "header": {"status": "running"}, "entries": []}
    answer, asked = _drive(owners, {"a:1": HttpStatus(409, "not here"), "b:2": found})
    assert answer == found
    assert [r.endpoint for r in asked] == ["a:1", "b:2"]
    assert owners.owner("1_0") == "b:2"
    _, asked = _drive(owners, {"b:2": found})
    assert [r.endpoint for r in asked] == ["b:2"]


def test_a_wrong_question_fails_at_once_naming_the_worker() -> None:
    with pytest.raises(LookupFailed, match=r"a:1.*no store"):
        _drive(_Group(["a:1", "b:2"]), {"a:1": HttpStatus(404, "no store 'x'")})


def test_no_endpoint_means_the_changelog_answers() -> None:
    assert _drive(_Group([]), {}) == (None, [])


def test_an_unreachable_owner_is_forgotten_and_the_others_asked() -> None:
    owners = _Group(["a:1", "b:2"])
    owners.learned("1_0", "a:1")
    found = {"found": False}
    answer, _ = _drive(owners, {"a:1": ConnectionRefusedError(), "b:2": found})
    assert answer == found and owners.owner("1_0") == "b:2"


def test_nobody_holding_the_task_pauses_then_asks_the_group_again() -> None:
    owners = _Group(["a:1"])
    calls = {"n": 0}

    def moving() -> Any:
        calls["n"] += 1
        return HttpStatus(409, "moving") if calls["n"] < 3 else {"found": True}

    answer, asked = _drive(owners, {"a:1": moving})
    assert answer == {"found": True}
    assert [type(r) for r in asked] == [Fetch, Pause, Fetch, Pause, Fetch]


def test_a_long_poll_is_capped_and_its_timeout_covers_the_wait() -> None:
    owners = _Group(["a:1"])
    _, asked = _drive(owners, {"a:1": {"found": True}}, wait=500.0)
    assert "wait=30.000" in asked[0].path and asked[0].timeout > 30
