"""The template bookkeeping (``generations.py``) with plain values: no fork, no clock."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gunicorn_slowstart.generations import HALT, RELOAD, RELOAD_FAILED, REPLACE, RETRY_DELAYS, START, Generations


def loaded_book() -> Generations:
    book = Generations()
    assert book.due(0.0) == START
    book.loaded(book.started(START))
    return book


def test_first_start_waits_for_the_template_then_forks_from_it():
    book = Generations()
    assert book.holds() and not book.active()  # nothing to fork from yet
    generation = book.started(book.due(0.0))
    assert book.holds() and book.busy() and book.due(0.0) is None
    assert book.loaded(generation) is None
    assert book.active() and not book.holds() and book.current == generation


def test_the_first_template_failing_stops_the_server():
    book = Generations()
    generation = book.started(START)
    assert book.failed(generation, 5.0).outcome == HALT


def test_a_reload_that_loads_retires_the_old_template():
    book = loaded_book()
    superseded, reason = book.reload()
    assert superseded is None and reason == RELOAD
    new = book.started(reason)
    assert book.holds() and book.active()  # respawns wait for the new code; the old template stays meanwhile
    assert book.loaded(new) == 1 and book.current == new


def test_a_reload_that_fails_keeps_the_old_template():
    book = loaded_book()
    new = book.started(book.reload()[1])
    failure = book.failed(new, 10.0)
    assert failure.outcome == RELOAD_FAILED and failure.retry_in is None
    assert book.current == 1 and book.active() and not book.holds()


def test_sighup_before_the_first_load_is_still_a_first_start():
    book = Generations()
    first = book.started(START)
    superseded, reason = book.reload()
    assert superseded == first and reason == START
    assert book.failed(book.started(reason), 1.0).outcome == HALT


def test_a_dead_template_is_replaced_and_a_failing_replacement_retried_later():
    book = loaded_book()
    book.lost()
    assert book.holds() and not book.active() and book.due(0.0) == REPLACE
    replacement = book.started(REPLACE)
    failure = book.failed(replacement, 100.0)
    assert failure.outcome is None and failure.retry_in == RETRY_DELAYS[0]
    assert book.holds() and book.due(100.0) is None and book.due(100.0 + RETRY_DELAYS[0]) == REPLACE
    book.failed(book.started(REPLACE), 200.0)
    assert book.retry_at == 200.0 + RETRY_DELAYS[1]  # the delay grows
    book.loaded(book.started(REPLACE))
    assert book.failures == 0 and book.active()


def test_an_unsafe_app_forks_from_the_master_until_the_next_reload():
    book = loaded_book()
    book.started(book.reload()[1])
    assert book.refused_to_load("2 OS threads alive") == 1  # the old template retires too
    assert not book.active() and not book.holds() and book.due(0.0) is None
    assert book.reload() == (None, RELOAD)  # new code may be safe: try a template again
    assert book.unsafe is None


def test_a_refused_fork_falls_back_to_the_master():
    book = loaded_book()
    assert book.refused("a thread started in the hook") == 1
    assert not book.active() and not book.holds() and book.due(0.0) is None


EVENTS = st.lists(st.sampled_from(["due", "reload", "loaded", "failed", "unsafe", "refused", "lost"]), max_size=40)


@given(EVENTS)
def test_invariants_hold_whatever_happens(events):
    """At most one loading and one current template, never the same one; a fallback to the
    master never also waits for a template."""
    book = Generations()
    now = 0.0
    for event in events:
        now += 1.0
        if event == "due" and book.due(now):
            book.started(book.due(now))
        elif event == "reload":
            book.started(book.reload()[1])
        elif event == "loaded" and book.loading is not None:
            book.loaded(book.loading)
        elif event == "failed" and book.loading is not None and book.loading_reason != START:
            book.failed(book.loading, now)  # (a failed first start stops the server: nothing follows)
        elif event == "unsafe" and book.loading is not None:
            book.refused_to_load("unsafe")
        elif event == "refused" and book.current is not None:
            book.refused("unsafe")
        elif event == "lost" and book.current is not None:
            book.lost()
        assert book.current is None or book.current != book.loading
        assert book.current is None or book.current <= book.generation
        assert book.loading is None or book.loading == book.generation
        assert not (book.holds() and book.unsafe is not None)
        assert not book.active() or (book.current is not None and book.unsafe is None)
        # exactly one of: fork from the current template, wait for one, fork from the master
        assert [book.active() and not book.holds(), book.holds(), book.unsafe is not None].count(True) == 1
