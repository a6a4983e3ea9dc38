"""escalation.py: SIGTERM, re-sent SIGTERM, SIGKILL at the deadline (pure, plain values)."""

import signal

from gunicorn_slowstart.escalation import NEVER, Escalation


def test_the_master_resends_sigterm_then_kills_once_at_the_deadline():
    esc = Escalation.begin(10.0, grace=5.0, resend=1.0)
    assert esc.next_at() == 11.0
    assert esc.due(10.5) is None
    assert esc.due(11.0) is signal.SIGTERM
    assert esc.due(11.5) is None and esc.next_at() == 12.0
    assert esc.due(14.9) is signal.SIGTERM  # a late pass re-sends once, then every second from now
    assert esc.next_at() == 15.0
    assert esc.due(15.0) is signal.SIGKILL
    assert esc.due(100.0) is None and esc.next_at() == NEVER  # SIGKILL goes out once


def test_without_resend_only_the_deadline_kills():
    esc = Escalation.begin(0.0, grace=2.0)
    assert esc.next_at() == 2.0
    assert [esc.due(t) for t in (0.5, 1.0, 1.99)] == [None, None, None]
    assert esc.due(2.0) is signal.SIGKILL
    assert esc.due(3.0) is None


def test_the_deadline_wins_over_a_resend_due_at_the_same_time():
    esc = Escalation.begin(0.0, grace=1.0, resend=1.0)
    assert esc.due(1.0) is signal.SIGKILL
