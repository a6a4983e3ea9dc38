"""The pacing policy: when may the master fork the next worker?

Theory of operation
-------------------
This module is a sans-I/O state machine, in the spirit of h11's ``_state.py``.
It never reads a clock, a file or a process table: the arbiter (for HTTP and
long workers alike; the pool's reports reach it as events) or the simulator
in ``benchmarks/`` tells it what happened, each event stamped with the
caller's clock, and asks it what to do next:

    policy.spawned(key, now)        a process was forked
    policy.ready(key, now)          the master saw it become ready
    policy.exited(key, now)         it is gone (``expected=True``: we stopped it)
    policy.cpu_idle(cpus, now)      a sample of how many CPUs stood idle
    policy.set_hold(True)           hold all spawns (memory is short)
    policy.restart(now)             a new ramp begins (SIGHUP reload)
    policy.decide(now, wanted)  ->  Decision(spawn=k, wake_at=t, kill=..., ...)
    policy.failures(kind), flaps(kind), retry_at(kind), is_stale(key), ...   queries

A key is any hashable value the caller picks; the master uses
``keys.ProcKey(kind, id)`` for HTTP and long workers alike.

A process is *booting* from its fork until it is ready.  In ``ready`` mode at
most ``window`` processes boot at once (``in_flight``).  The window starts at
``initial``: by default (``AUTO``) as many processes as CPUs stood idle when
the ramp began (``cpu_idle`` samples before it; at least 1, at most
``max_batch``), so on an idle machine the first step already fills the CPUs
and a broken application costs that first step (with background boots, one
more and a merged short tail), never N beyond it; ``initial=1`` is a single
probe.  It grows by one for each process that becomes ready, so it
doubles every round trip as TCP slow start does, never beyond
``max_batch``.  It is pipelined: each ready process frees its place at once,
so one slow process does not hold back the others.  With ``growth="idle"`` the window may also jump, after the probe, to
the number of CPUs measured idle, as long as boots do not slow down.

No process boots alone at the end while CPUs idle (the *tail merge*): once a
process of the ramp is ready (so the first response is not delayed and a
broken application has shown itself) and boots have not slowed down, when
what is left to fork after this step would make a last round smaller than
the window, it is forked now with this step, so the last round shares the
CPUs instead of leaving some idle.  In-flight processes may then exceed the
window by less than the window, once, at the end of a ramp; the arbiter turns
the merge off when the user set ``max_batch`` (a limit), and leaves it on for
``auto`` (the CPU count).  ``extra`` (0 by default) lets that many more boot
beyond the window once a process is ready, to cover the ready -> detect ->
fork gap; the simulator (``benchmarks/simulate.py``) is where both rules were
chosen.

Background boots (``background > 0``, ready mode): CPUs that the window
leaves idle are still CPUs.  That many more HTTP processes may boot beyond
the window at *background* priority: the caller runs them so that they get
only the CPU nobody else wants (``SCHED_IDLE``), and raises them to normal
priority when the decision lists them in ``promote``.  Until the ramp's first
process is ready only one process boots in the foreground, the one whose
readiness is the first response; every other boot of the first step
(including a merged tail, which is then allowed in the first step too) soaks
up the CPU it leaves.  Afterwards ``window`` processes boot in the
foreground, the oldest background boot taking each place that frees (already
partly booted, so a place does not idle through the ready -> detect -> fork
gap), and once nothing is left to fork every boot is promoted, so the last
ones share the CPUs and finish together.  This is what lets a ramp be
work-conserving without slowing its first response: on 2 CPUs, 3 processes
are all ready after 1.5 boots with the first after 1, where equal priorities
must choose between the two.  The caller sets ``background`` only where it can
raise a process's priority again (``priority.py``).

Failures are congestion.  A process that dies before it is ready (or is
killed by the boot time-out) halves the window (never below 1), and further
spawns of its kind back off exponentially (``Backoff``).  A process that
becomes ready much later than the ramp's median boot does not grow the window.
After ``max_failures`` consecutive boot failures of a kind, the decision
reports that kind as exhausted: the arbiter stops the server for HTTP workers,
the pool stops restarting a long worker.  HTTP workers are exhausted only while
none of them is ready: a server that serves keeps retrying at the capped back-off.

A booting process that never becomes ready stops counting against the window
after ``ready_timeout`` seconds (the decision lists it in ``stale`` once, so
the caller can warn), and with ``boot_timeout`` set it is listed in ``kill``
(a background boot's clock starts when it is promoted).

``timer`` mode is the reference policy this project grew from: batches of
1, 2, 4, ... capped at ``max_batch``, ``delay`` seconds apart, blind to
readiness.  ``off`` spawns everything at once, as stock gunicorn does.

Two kinds of process share one budget: ``"http"`` workers and ``"long"``
background workers.  HTTP workers are served first; long workers take the
places they leave free, and only borrow them: an HTTP spawn counts only HTTP
boots against the window, so a long worker hanging at import never delays
an HTTP respawn (while both boot, up to twice the window may be booting).

A process that dies within ``flap_window`` seconds of becoming ready (it
*flaps*) counts toward its kind's back-off like a boot failure, but not
toward the give-up limit: it served, however briefly.  A process that stays
up ``flap_window`` seconds after the last flap ends the run.  A long worker's
failures count once per round: processes already up when one failed are part
of the same event (a broker outage), not a longer crash loop.

What the policy keeps is bounded by the processes alive, never by history:
the boot times of a ramp are the last ``BOOT_SAMPLES``.

``decide()`` is not a pure query: it is also the policy's clock tick.  Time
passing is an event too (a boot time-out, a back-off that settles), and the
policy only learns the time from its caller, so ``decide(now)`` first applies
what ``now`` implies, then answers.  It marks booting processes stale or
killed (each is listed once, so a second call with the same ``now`` does not
list it again), lets back-offs settle and flap runs end, applies the idle-CPU
target sampled since the last call, and in ``timer`` mode starts the next
batch's timer when it hands out spawns.  Call it once per pass of the
caller's loop and act on every field of its answer: a ``Decision`` dropped
on the floor is a spawn budget, a warning and a kill that do not come again.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

MODES = ("ready", "timer", "off")
GROWTHS = ("double", "idle")
DEFAULT_MODE = "ready"
DEFAULT_GROWTH = "idle"
AUTO = "auto"  # initial: as many as CPUs stood idle when the ramp began
DEFAULT_INITIAL = AUTO
HTTP = "http"
LONG = "long"
KINDS = (HTTP, LONG)

NEVER = float("inf")
BOOT_SAMPLES = 256  # boot durations kept per ramp (the median of the recent ones)


def default_max_batch(mode: str, usable_cpus: int) -> int:
    """``max_batch = auto``: the usable CPUs in ready mode (a booting process keeps
    one CPU busy), half of them in timer mode (the reference policy's rule)."""
    return max(1, usable_cpus // 2) if mode == "timer" else max(1, usable_cpus)


def start_window(initial: int | str, idle_cpus: float | None, max_batch: int) -> int:
    """Processes in a ramp's first step: ``initial``, or with ``AUTO`` the CPUs that
    stood idle (rounded; 1 when nothing was measured), at least 1, at most ``max_batch``."""
    if initial == AUTO:
        wanted = 1 if idle_cpus is None else round(idle_cpus)
    else:
        wanted = int(initial)
    return max(1, min(max_batch, wanted))


def _median(values: list[float]) -> float:
    """``statistics.median`` without importing ``statistics`` (and ``fractions``,
    ``decimal``) into every master: it was a tenth of the plugin's import time."""
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


@dataclass(frozen=True)
class BackoffConfig:
    """Exponential back-off of respawns after boot failures of one kind."""

    initial: float = 1.0
    cap: float = 30.0
    reset_after: float = 30.0
    max_failures: int = 10  # 0 = never give up
    ready_resets: bool = True  # does a process becoming ready end a run of failures?


@dataclass(frozen=True)
class PolicyConfig:
    mode: str = DEFAULT_MODE
    initial: int | str = DEFAULT_INITIAL  # a count, or AUTO
    max_batch: int = 1
    delay: float = 2.0
    ready_timeout: float = 30.0
    boot_timeout: float = 0.0  # 0 = off
    growth: str = DEFAULT_GROWTH
    tail_merge: bool = True  # fork a short last round with the step before it
    extra: int = 0  # more booting than the window once a process is ready
    background: int = 0  # more booting than the window at background priority (HTTP, ready mode)
    slow_factor: float = 3.0  # a boot this many times the median does not grow the window
    idle_slow_factor: float = 1.5  # idle growth stops once a boot takes this times the probe's
    http_backoff: BackoffConfig = BackoffConfig()
    long_backoff: BackoffConfig = BackoffConfig(initial=1.0, cap=60.0, reset_after=60.0, max_failures=0,
                                                ready_resets=False)  # a pool retries every 60 s, never gives up
    flap_window: float = 5.0  # dying this soon after ready is a failure for the back-off (0: off)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.growth not in GROWTHS:
            raise ValueError(f"growth must be one of {', '.join(GROWTHS)}, not {self.growth!r}")
        if self.initial != AUTO and (isinstance(self.initial, str) or self.initial < 1):
            raise ValueError(f"initial must be at least 1 or {AUTO!r}, not {self.initial!r}")
        if self.max_batch < 1 or self.extra < 0 or self.background < 0:
            raise ValueError("max_batch must be at least 1, extra and background at least 0")
        if self.delay < 0 or self.ready_timeout <= 0 or self.boot_timeout < 0:
            raise ValueError("delay and boot_timeout must be >= 0, ready_timeout > 0")


@dataclass(frozen=True)
class Decision:
    """What the caller should do now.

    ``spawn`` HTTP workers and ``spawn_long`` long workers may be forked now;
    look again no later than ``wake_at`` (``None``: only when an event comes).
    ``kill`` lists booting processes past the boot time-out, ``stale`` the
    ones that just passed the ready time-out, each listed once, by the key
    the caller gave ``spawned()`` (the master: a ``keys.ProcKey``, whose kind
    says whether it is an HTTP or a long worker).
    ``exhausted`` names the kinds that reached their failure limit.
    ``promote`` lists background boots to raise to normal priority now (a
    process the caller forks after this decision boots in the background
    when ``is_background(key)`` says so).
    """

    spawn: int = 0
    spawn_long: int = 0
    wake_at: float | None = None
    kill: tuple = ()
    stale: tuple = ()
    exhausted: tuple = ()
    promote: tuple = ()


class Backoff:
    """Consecutive boot failures of one kind, and when the next spawn may be.

    ``failures`` counts consecutive failures (what the give-up limit counts)
    and ``level`` sets the delay.  For HTTP workers a worker becoming ready
    ends the run and the back-off: a boot that works is the evidence that
    boots work (the simulator showed that waiting 30 s of stability instead
    turns 20 % random boot failures into 30 s stalls).  Long workers can crash
    after they are ready, so for them only a process started after the last
    failure and up for ``reset_after`` seconds ends it.
    """

    def __init__(self, config: BackoffConfig) -> None:
        self.config = config
        self.failures = 0
        self.level = 0
        self.next_at = -NEVER
        self.last_failure_at: float | None = None
        self.flaps = 0  # consecutive processes that died soon after ready
        self.last_flap_at = -NEVER

    def failure(self, now: float) -> None:
        self.failures += 1
        self.last_failure_at = now
        self._delay(now)

    def flap(self, now: float) -> None:
        """A process died soon after it became ready: back off, but do not count toward giving up."""
        self.flaps += 1
        self.last_flap_at = now
        self._delay(now)

    def _delay(self, now: float) -> None:
        self.level += 1
        delay = min(self.config.cap, self.config.initial * 2 ** min(self.level - 1, 64))
        self.next_at = now + delay

    def ready(self) -> None:
        """A process became ready: for HTTP workers, boots work again (unless they flap)."""
        if self.config.ready_resets:
            self.failures = 0
            self.level = self.flaps
            if not self.flaps:
                self.next_at = -NEVER

    def stable(self, ready_at: float, now: float, window: float) -> None:
        """A process ready since after the last flap stayed up ``window`` s: flapping is over."""
        if self.flaps and ready_at >= self.last_flap_at and now >= ready_at + window:
            self.level = max(0, self.level - self.flaps)
            self.flaps = 0

    def settle(self, ready_at: float, now: float) -> None:
        """Forget the back-off once a process booted after the last failure stays up."""
        if self.level and self.last_failure_at is not None:
            if ready_at >= self.last_failure_at and now >= ready_at + self.config.reset_after:
                self.level = 0
                self.failures = 0
                self.next_at = -NEVER

    def allows(self, now: float) -> bool:
        return now >= self.next_at

    @property
    def exhausted(self) -> bool:
        return bool(self.config.max_failures) and self.failures >= self.config.max_failures


@dataclass
class _Booting:
    kind: str
    forked_at: float
    stale: bool = False
    killing: bool = False
    background: bool = False
    waited: bool = False  # it booted in the background for a while: its time is no boot's measure
    measured_from: float = 0.0  # its boot time counts from here: the fork, or its promotion

    def __post_init__(self) -> None:
        self.measured_from = self.forked_at

    def raise_(self, now: float) -> None:
        """Out of the background: at normal priority from ``now``, timed from then."""
        self.background = False
        self.measured_from = now


@dataclass
class _Ramp:
    """Per-ramp measurements: boot durations and the probe's boot time."""

    boot_times: list = field(default_factory=list)
    probe_boot: float | None = None
    slowed: bool = False


class SlowStartPolicy:
    """The pacing state machine; see the module docstring."""

    def __init__(self, config: PolicyConfig, now: float = 0.0) -> None:
        self.config = config
        self.booting: dict[Hashable, _Booting] = {}
        self.ready_at: dict[Hashable, tuple[str, float]] = {}
        self.backoff = {HTTP: Backoff(config.http_backoff), LONG: Backoff(config.long_backoff)}
        self.held = False
        self.reacted_at = -NEVER
        self.idle_target: int | None = None
        self.idle_now: float | None = None  # the last sample, whatever its interval saw
        self.sampled_at = -NEVER
        self.spawned_at = -NEVER
        self.to_promote: list[Hashable] = []  # raised by restart(): listed in the next decision
        self.restart(now)

    # -- events ---------------------------------------------------------------

    def restart(self, now: float) -> None:
        """Begin a new ramp: the window falls back to the first step's size
        (with ``initial = AUTO``, the idle CPUs of the last ``cpu_idle`` sample)."""
        self.window = self.first_step()
        self.timer_batch = self.window
        self.next_batch_at = now
        self.ramp = _Ramp()
        self.ramp_started = now
        for key, proc in self.booting.items():  # the last ramp's background boots: raised by the next decide
            if proc.background:
                proc.raise_(now)
                self.to_promote.append(key)

    def first_step(self) -> int:
        """How many processes a ramp begun now would fork in its first step."""
        initial = self.config.initial
        if initial == AUTO and self.config.mode != "ready":
            initial = 1  # the timer's reference batches: 1, 2, 4, ...
        return start_window(initial, self.idle_now, self.config.max_batch)

    def reconfigure(self, config: PolicyConfig) -> None:
        """New settings (SIGHUP): keep what is booting and the failure history."""
        self.config = config
        self.backoff[HTTP].config = config.http_backoff
        self.backoff[LONG].config = config.long_backoff
        self.window = min(self.window, config.max_batch)
        self.timer_batch = min(self.timer_batch, config.max_batch)

    def forget_failures(self, kind: str) -> None:
        """New code for this kind (SIGHUP): its old failures say nothing about it."""
        self.backoff[kind] = Backoff(self.backoff[kind].config)

    def spawned(self, key: Hashable, now: float, kind: str = HTTP) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}")
        proc = _Booting(kind, now)
        if kind == HTTP and self._background_on() and self._foreground(HTTP) >= self._foreground_places():
            proc.background = proc.waited = True
        self.booting[key] = proc
        self.spawned_at = now

    def ready(self, key: Hashable, now: float) -> None:
        proc = self.booting.pop(key, None)
        if proc is None:
            return
        self.ready_at[key] = (proc.kind, now)
        self.backoff[proc.kind].ready()
        duration = now - proc.measured_from  # a background boot is timed from its promotion
        if self._grows_on(duration) and not proc.stale:
            self.window = min(self.config.max_batch, self.window + 1)
        if not proc.waited:
            self._measure(duration)
        elif self.ramp.probe_boot is None:
            # The first response came from a boot that waited at idle priority: the ramp's
            # reference must be a whole boot, and its time since promotion is only part of one
            # (every whole boot after it would look slow).  Its time since the fork bounds one.
            self.ramp.probe_boot = now - proc.forked_at

    def exited(self, key: Hashable, now: float, expected: bool = False, failed: bool | None = None) -> None:
        """A process is gone.  Dying while booting, unasked, is a boot failure.

        A boot failure halves the window (congestion).  ``failed`` lets the
        caller count a crash after readiness toward the back-off too (a long
        worker that dies seconds after it started).
        """
        done = self.ready_at.pop(key, None)
        proc = self.booting.pop(key, None)
        boot_failure = proc is not None and (proc.killing or not expected)
        kind = proc.kind if proc is not None else done[0] if done is not None else None
        if boot_failure and not self._same_loss_event(proc, self.reacted_at):
            self.window = max(1, self.window // 2)
            self.reacted_at = now
        if kind is None:
            return
        if failed is None and not boot_failure and self._flapped(done, now, expected):
            self.backoff[kind].flap(now)
            return
        if not (boot_failure if failed is None else failed):
            return
        if boot_failure and self._same_loss_event(proc, self.backoff[kind].last_failure_at):
            return
        if kind == LONG and proc is None and self._same_round(done, self.backoff[kind].last_failure_at):
            return
        self.backoff[kind].failure(now)

    def _flapped(self, done: tuple | None, now: float, expected: bool) -> bool:
        """Died, unasked, within ``flap_window`` s of becoming ready."""
        window = self.config.flap_window
        return bool(window) and done is not None and not expected and now - done[1] < window

    @staticmethod
    def _same_round(done: tuple | None, last_failure_at: float | None) -> bool:
        """A long worker that was already up when the last failure came crashes with it:
        a pool of 8 losing its broker is one failure, not 8 (boot failures: ``_same_loss_event``)."""
        return last_failure_at is not None and done is not None and done[1] < last_failure_at

    def _same_loss_event(self, proc: _Booting, reacted_at: float | None) -> bool:
        """Like TCP, react once per round: a process forked before the last
        reaction was already in flight when it happened (ready mode only; in
        timer mode batches keep growing, so every failure must count).  The
        window reacts once for both kinds; each kind's back-off once for its own."""
        return self.config.mode == "ready" and reacted_at is not None and proc.forked_at < reacted_at

    def cpu_idle(self, idle_cpus: float, now: float) -> None:
        """A sample of the CPUs that stood idle since the previous sample.

        What the window may grow to is fixed at sample time (processes booting
        now plus the idle CPUs), and a sample whose interval saw a spawn is
        ignored: that spawn already took some of the idle CPU.
        """
        clean = self.spawned_at < self.sampled_at
        self.sampled_at = now
        idle = min(max(0.0, idle_cpus), float(self.config.max_batch))  # also tames inf and nan
        self.idle_now = idle
        self.idle_target = self.in_flight + round(idle) if clean else None

    def set_hold(self, held: bool) -> None:
        self.held = held

    # -- queries --------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """Booting processes that still count against the window."""
        return sum(1 for p in self.booting.values() if not p.stale)

    def is_stale(self, key: Hashable) -> bool:
        proc = self.booting.get(key)
        return proc is not None and proc.stale

    def raised(self, key: Hashable, now: float) -> None:
        """The caller could not lower ``key`` (it boots at normal priority after all)."""
        proc = self.booting.get(key)
        if proc is not None and proc.background:
            proc.raise_(now)

    def is_background(self, key: Hashable) -> bool:
        """Boots at background priority (until a decision lists it in ``promote``)."""
        proc = self.booting.get(key)
        return proc is not None and proc.background

    def booting_count(self, kind: str | None = None) -> int:
        return sum(1 for p in self.booting.values() if kind in (None, p.kind))

    def ready_count(self, kind: str | None = None) -> int:
        return sum(1 for k, _ in self.ready_at.values() if kind in (None, k))

    def failures(self, kind: str) -> int:
        """Consecutive boot failures of ``kind`` (what ``max_boot_failures`` counts)."""
        return self.backoff[kind].failures

    def flaps(self, kind: str) -> int:
        """Consecutive flaps of ``kind`` (deaths soon after becoming ready)."""
        return self.backoff[kind].flaps

    def retry_at(self, kind: str) -> float:
        """When the back-off lets ``kind`` spawn again."""
        return self.backoff[kind].next_at

    def decide(self, now: float, wanted: int, wanted_long: int = 0) -> Decision:
        """How many to fork now (HTTP first), and when to look again.

        Not a pure query (see the module docstring): it advances the policy to
        ``now`` first.  State it changes: booting processes past
        ``ready_timeout`` become stale and past ``boot_timeout`` are marked as
        being killed (returned in ``stale`` / ``kill`` this one time);
        back-offs settle and flap runs end (``Backoff.settle`` / ``stable``);
        the window may jump to the idle-CPU target sampled by ``cpu_idle()``
        (consumed here, once); in timer mode, handing out spawns doubles the
        batch and starts the ``delay`` timer.  The caller must act on the whole
        answer, since none of it is repeated.
        """
        wanted, wanted_long = max(0, wanted), max(0, wanted_long)
        stale, kill = self._expire(now)
        self._settle(now)
        exhausted = tuple(kind for kind in KINDS if self.backoff[kind].exhausted
                          and not (kind == HTTP and self.ready_count(HTTP)))  # a serving server retries
        if self.config.mode == "off":  # stock gunicorn never gives up on HTTP workers
            return Decision(wanted, wanted_long, None, kill, stale, tuple(k for k in exhausted if k != HTTP),
                            self._promote(now, 0, everyone=True))
        if HTTP in exhausted or self.held:
            return Decision(0, 0, self._wake_at(now, 0, 0), kill, stale, exhausted, self._promote(now, 0))
        self._grow_by_idle()
        budget = self._budget(now)
        spawn = min(wanted, self._http_budget(now)) if self.backoff[HTTP].allows(now) else 0
        if spawn:
            spawn += self._tail(wanted - spawn)
        promote = self._promote(now, wanted - spawn)
        spawn_long = 0
        if LONG not in exhausted and self.backoff[LONG].allows(now):
            spawn_long = min(wanted_long, max(0, budget - spawn))
        if self.config.mode == "timer" and spawn + spawn_long:
            self.timer_batch = min(self.config.max_batch, self.timer_batch * 2)
            self.next_batch_at = now + self.config.delay
        wake_at = self._wake_at(now, wanted - spawn, 0 if LONG in exhausted else wanted_long - spawn_long)
        return Decision(spawn, spawn_long, wake_at, kill, stale, exhausted, promote)

    # -- internals ------------------------------------------------------------

    def _budget(self, now: float) -> int:
        if self.config.mode == "timer":
            return self.timer_batch if now >= self.next_batch_at else 0
        return max(0, self.window + self._extra() - self.in_flight)

    def _past_first_step(self) -> bool:
        """A process of this ramp is ready and boots have not slowed down: the first
        response is out, the application boots, and more at once is not contention."""
        return self.config.mode == "ready" and self.ramp.probe_boot is not None and not self.ramp.slowed

    def _extra(self) -> int:
        return self.config.extra if self._past_first_step() else 0

    def _tail(self, left: int) -> int:
        """The tail merge: what is left after this step would be a last round
        smaller than the window (what the machine was seen to take, at most
        ``max_batch``), so fork it now, with this step.  With background boots
        the merged tail cannot slow the first response, so the first step merges too."""
        if not self.config.tail_merge:
            return 0
        if not (self._past_first_step() or (self._background_on() and self.ramp.probe_boot is None)):
            return 0
        return left if 0 < left < self.window else 0

    def _http_budget(self, now: float) -> int:
        """HTTP is served first: booting long workers hold no place an HTTP spawn needs."""
        if self.config.mode == "timer":
            return self._budget(now)
        in_flight = sum(1 for p in self.booting.values() if not p.stale and p.kind == HTTP)
        background = self.config.background if self._background_on() else 0
        return max(0, self.window + self._extra() + background - in_flight)

    def _background_on(self) -> bool:
        return self.config.mode == "ready" and self.config.background > 0

    def _foreground_places(self) -> int:
        """HTTP boots at normal priority: one until the ramp's first response, then the window."""
        return self.window + self._extra() if self.ramp.probe_boot is not None else 1

    def _foreground(self, kind: str) -> int:
        """Boots of ``kind`` in the foreground; before the first response only this ramp's
        count (a reload's first worker does not wait behind the last ramp's boots)."""
        since = self.ramp_started if self.ramp.probe_boot is None else -NEVER
        return sum(1 for p in self.booting.values()
                   if p.kind == kind and not p.stale and not p.background and p.forked_at >= since)

    def _promote(self, now: float, left: int, everyone: bool = False) -> tuple:
        """Background boots to raise now: the oldest, into the foreground places that are free;
        all of them once the first response is out and nothing is left to fork (the last
        boots share the CPUs and finish together), or when the caller no longer paces."""
        raised = [key for key in self.to_promote if key in self.booting]
        self.to_promote.clear()
        waiting = sorted((p.forked_at, i, key) for i, (key, p) in enumerate(self.booting.items())
                         if p.background)
        if not waiting:
            return tuple(raised)
        if everyone or (self.ramp.probe_boot is not None and left <= 0):
            places = len(waiting)
        else:
            places = max(0, self._foreground_places() - self._foreground(HTTP))
        promoted = tuple(key for _, _, key in waiting[:places])
        for key in promoted:
            self.booting[key].raise_(now)
        return (*raised, *promoted)

    def _grows_on(self, duration: float) -> bool:
        """A boot far slower than this ramp's median is a sign of contention."""
        if self.config.mode != "ready":
            return False
        times = self.ramp.boot_times
        return not times or duration <= self.config.slow_factor * _median(times)

    def _measure(self, duration: float) -> None:
        ramp = self.ramp
        if ramp.probe_boot is None:
            ramp.probe_boot = duration
        elif duration > self.config.idle_slow_factor * ramp.probe_boot:
            ramp.slowed = True
        ramp.boot_times.append(duration)
        if len(ramp.boot_times) > BOOT_SAMPLES:
            del ramp.boot_times[: len(ramp.boot_times) - BOOT_SAMPLES]

    def _grow_by_idle(self) -> None:
        """After the probe, let the window reach the CPUs that stood idle."""
        if self.config.growth != "idle" or self.config.mode != "ready":
            return
        if self.ramp.probe_boot is None or self.ramp.slowed or self.idle_target is None:
            return
        self.window = max(self.window, min(self.config.max_batch, self.idle_target))
        self.idle_target = None

    def _expire(self, now: float) -> tuple[tuple, tuple]:
        stale, kill = [], []
        for key, proc in self.booting.items():
            if proc.background:
                continue  # it has not had its turn yet: the time-outs count from its promotion
            age = now - proc.measured_from
            if not proc.stale and age >= self.config.ready_timeout:
                proc.stale = True
                stale.append(key)
            if self.config.boot_timeout and not proc.killing and age >= self.config.boot_timeout:
                proc.killing = True
                kill.append(key)
        return tuple(stale), tuple(kill)

    def _settle(self, now: float) -> None:
        for kind, at in self.ready_at.values():
            self.backoff[kind].settle(at, now)
            self.backoff[kind].stable(at, now, self.config.flap_window)

    def _wake_at(self, now: float, wanted: int, wanted_long: int) -> float | None:
        times = []
        for proc in self.booting.values():
            if proc.background:
                continue
            if not proc.stale:
                times.append(proc.measured_from + self.config.ready_timeout)
            if self.config.boot_timeout and not proc.killing:
                times.append(proc.measured_from + self.config.boot_timeout)
        for kind, left in ((HTTP, wanted), (LONG, wanted_long)):
            backoff = self.backoff[kind]
            if left > 0 and not backoff.allows(now):
                times.append(backoff.next_at)
            if left > 0 and backoff.level and backoff.last_failure_at is not None:
                times.append(self._settle_time(kind))
        if self.config.mode == "timer" and (wanted > 0 or wanted_long > 0):
            gates = [self.backoff[k].next_at for k, left in ((HTTP, wanted), (LONG, wanted_long)) if left > 0]
            times.append(max(self.next_batch_at, min(gates)))
        future = [t for t in times if t < NEVER]
        return min(future) if future else None

    def _settle_time(self, kind: str) -> float:
        config = self.backoff[kind].config
        after = self.backoff[kind].last_failure_at
        ready = [at for k, at in self.ready_at.values() if k == kind and at >= after]
        return min(ready) + config.reset_after if ready else NEVER
