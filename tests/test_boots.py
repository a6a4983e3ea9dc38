"""``Boots``: the arbiter's one record of who is booting, both kinds, keyed by ``ProcKey`` (pure)."""

from __future__ import annotations

from gunicorn_slowstart.boots import Boot, Boots
from gunicorn_slowstart.keys import ProcKey
from gunicorn_slowstart.policy import HTTP, LONG


def test_both_kinds_in_one_registry_answered_per_kind() -> None:
    boots = Boots()
    boots.add(ProcKey(HTTP, 101), 1.0, baseline=1.8e9, wall=1.79e9)
    boots.add(ProcKey(LONG, 0), 1.5)
    boots.add(ProcKey(HTTP, 102), 2.0, baseline=1.8e9, wall=1.79e9)
    assert ProcKey(HTTP, 101) in boots and ProcKey(LONG, 101) not in boots and 101 not in boots
    assert boots.keys(HTTP) == [ProcKey(HTTP, 101), ProcKey(HTTP, 102)]  # oldest first
    assert boots.keys(LONG) == [ProcKey(LONG, 0)]
    assert boots.ids(HTTP) == {101, 102} and boots.ids(LONG) == {0}
    assert (boots.count(HTTP), boots.count(LONG), len(boots)) == (2, 1, 3)
    assert boots.items(HTTP)[0] == (ProcKey(HTTP, 101), Boot(1.0, 1.8e9, 1.79e9))


def test_ready_or_gone_pops_once_and_says_since_when() -> None:
    boots = Boots()
    key = ProcKey(HTTP, 7)
    boots.add(key, 10.0)
    assert boots.age(key, 12.5) == 2.5
    assert boots.pop(key) == Boot(10.0)
    assert boots.pop(key) is None and boots.get(key) is None
    assert boots.age(key, 13.0) is None and key not in boots and len(boots) == 0


def test_a_reused_pid_starts_a_new_boot() -> None:
    boots = Boots()
    key = ProcKey(HTTP, 7)
    boots.add(key, 1.0, baseline=5.0)
    boots.pop(key)
    boots.add(key, 9.0, baseline=6.0)
    assert boots.get(key) == Boot(9.0, 6.0) and boots.age(key, 10.0) == 1.0


def test_a_long_workers_boot_counts_from_its_reported_fork() -> None:
    boots = Boots()
    key = ProcKey(LONG, 3)
    boots.add(key, 1.0)  # granted
    boots.forked(key, 1.25)  # the manager reported the fork
    boots.forked(ProcKey(LONG, 4), 1.3)  # not booting (already gone): ignored
    assert boots.age(key, 2.25) == 1.0 and ProcKey(LONG, 4) not in boots


def test_keys_is_a_copy_safe_to_change_the_registry_while_iterating() -> None:
    boots = Boots()
    for pid in range(5):
        boots.add(ProcKey(HTTP, pid), float(pid))
    for key in boots.keys(HTTP):
        boots.pop(key)
    for key, _ in boots.items(HTTP):
        boots.pop(key)
    assert len(boots) == 0
