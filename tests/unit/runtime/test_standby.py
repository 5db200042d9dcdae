"""Which worker keeps which standby: the ring of sorted member ids, computed alike by all."""

from __future__ import annotations

from streamflow.runtime.standby import standby_tasks


def test_each_task_gets_its_standbys_on_the_members_after_its_owner() -> None:
    members = ["m3", "m1", "m2"]
    owners = {"0_0": "m1", "0_1": "m2", "0_2": "m3", "1_0": "m1"}
    one = {m: standby_tasks(m, members, owners, 1) for m in members}
    assert one == {"m1": {"0_2"}, "m2": {"0_0", "1_0"}, "m3": {"0_1"}}
    two = {m: standby_tasks(m, members, owners, 2) for m in members}
    for task, owner in owners.items():
        keepers = [m for m in members if task in two[m]]
        assert sorted(keepers) == sorted(set(members) - {owner})  # every other member


def test_no_standby_of_own_tasks_nor_more_than_there_are_other_members() -> None:
    owners = {"0_0": "a", "0_1": "b"}
    assert standby_tasks("a", ["a", "b"], owners, 5) == {"0_1"}
    assert standby_tasks("a", ["a"], {"0_0": "a"}, 1) == set()
    assert standby_tasks("z", ["a", "b"], owners, 1) == set()  # not (yet) a member
    assert standby_tasks("a", ["a", "b"], owners, 0) == set()
    assert standby_tasks("b", ["a", "b"], {"0_0": "gone"}, 1) == set()  # owner left the group
