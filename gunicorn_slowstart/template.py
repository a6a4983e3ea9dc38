"""Template spawning (``fork_from = "template"``): import the app once per generation, fork warm.

Theory of operation
-------------------
Forked from the master, every gunicorn worker imports the application itself:
N workers cost N imports of CPU and N private copies of the same modules.
``--preload`` imports once, in the master, and pays for it: SIGHUP cannot load
new code, the master carries the app's threads and sockets, and an import
error kills the master.  Here a third process does it, as Passenger's
preloader and pitchfork's "mold" do:

* the **master** forks a **template** per generation (first start, SIGHUP).
  The master never imports the app.
* the **template** loads the app exactly as a worker's ``load_wsgi()`` would
  (``app.wsgi()``: gunicorn's application object caches the loaded callable,
  so a process forked afterwards has it), runs ``gc.freeze()`` so the forks
  share its pages, tells the master "loaded", then waits for requests.
* for each worker the master builds gunicorn's ``Worker`` object as usual
  (its heartbeat file ``WorkerTmp`` is created in the master), runs
  ``pre_fork``, and sends the template the worker's age and, with
  ``SCM_RIGHTS``, the heartbeat file's descriptor.  The template forks an
  intermediate process that forks the worker and exits at once: the worker
  is orphaned and re-parented to the master, which is a child *subreaper*
  (``PR_SET_CHILD_SUBREAPER``, Linux; pitchfork does the same).  The
  template answers with the worker's pid; only then does the master put the
  worker in ``WORKERS``, and only then can it reap it.  The worker waits
  until its parent is the master, then runs what gunicorn's ``spawn_worker``
  runs in a child (``post_fork``, ``init_process``: ``load_wsgi`` finds the
  app loaded, ``post_worker_init``, ``run``) and exits the way gunicorn's
  workers do.  From the master's side it is a worker like any other:
  reaped, timed out, signalled, counted, paced.

Fork safety: once the app is loaded, and again before every fork, the
template runs the user's ``template_pre_fork`` hook (close connections the
app opened at import), then refuses to fork if another OS thread is alive, CUDA is initialised, or gRPC is
imported without fork support.  A refusal is one log line in the master,
which then forks that generation's workers itself (as without a template).

Which template is current, and what a failure means, is decided by the pure
``Generations`` (``generations.py``); this module does the forking and talking.

Failures: the first template's import fails -> the master exits 4 (the
traceback is in the template's log output), no worker forked.  A template
started by SIGHUP fails -> a failed reload: the old template and the old
workers stay.  A template dies later -> logged, a new one is started, serving
workers are not touched (forks wait for the new one).  The master dies ->
the template gets a parent-death signal and checks its parent twice a second;
a worker not yet adopted by the master exits within ``ADOPT_TIMEOUT``.
"""

from __future__ import annotations

import gc
import json
import os
import select
import signal
import socket
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Any

from ._compat import (
    AppImportError,
    HaltServer,
    adopt_worker,
    close_heartbeat,
    heartbeat_fd,
    master_side_worker,
    new_worker,
    run_worker,
    set_proctitle,
)
from .generations import HALT, RELOAD_FAILED, Generations
from .pool.target import load_target
from .settings import SettingError

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
REPLY_TIMEOUT = 10.0  # seconds the master waits for the template to fork one worker
ADOPT_TIMEOUT = 2.0  # a fresh worker waits at most this long to be re-parented to the master
PARENT_CHECK = 0.5
THREAD_EXIT_GRACE = 1.0  # seconds a thread joined in Python may take to leave /proc/self/task
APP_LOAD_ERROR = 4
UNSUPPORTED_WORKERS = ("gunicorn.workers.ggevent", "gunicorn.workers.geventlet")


class TemplateUnavailable(SettingError):
    """``fork_from = "template"`` cannot work with this configuration (one line)."""


def check_config(fork_from: str, mode: str, cfg: Any) -> None:
    """Refuse, before anything forks, what a template cannot do right."""
    if fork_from != "template":
        return
    what = "slowstart_fork_from = 'template'"
    if not sys.platform.startswith("linux"):
        raise TemplateUnavailable(f"{what} needs Linux (PR_SET_CHILD_SUBREAPER)")
    if mode == "off":
        raise TemplateUnavailable(f"{what} needs slowstart_mode 'ready' or 'timer', not 'off'")
    if getattr(cfg, "preload_app", False):
        raise TemplateUnavailable(f"{what} and --preload both load the app once: use one of them")
    if getattr(cfg, "reload", False):
        raise TemplateUnavailable(f"{what} cannot be combined with --reload (a restarted worker would get the "
                                  "template's old code); send SIGHUP to load new code")
    module = getattr(cfg.worker_class, "__module__", "")
    if module in UNSUPPORTED_WORKERS:
        raise TemplateUnavailable(f"{what} does not support {cfg.worker_class_str!r}: it monkey-patches the "
                                  "standard library after the app would have been imported")


# -- what makes a fork unsafe ------------------------------------------------------------


def fork_hazards() -> list[str]:
    """Why forking this process now would hand workers a broken state (empty: safe)."""
    hazards = []
    threads = _os_threads()
    if threads > 1:
        import threading

        names = ", ".join(t.name for t in threading.enumerate() if t is not threading.main_thread())
        hazards.append(f"{threads} OS threads alive after loading the app (Python threads: {names or 'none'}; "
                       "a thread started by a C extension or a library at import)")
    cuda = _cuda_state()
    if cuda:
        hazards.append(cuda)
    if "grpc" in sys.modules and os.environ.get("GRPC_ENABLE_FORK_SUPPORT", "").lower() not in ("1", "true"):
        hazards.append("gRPC is imported and its fork support is off (set GRPC_ENABLE_FORK_SUPPORT=true and "
                       "GRPC_POLL_STRATEGY=poll, or import grpc after the fork)")
    return hazards


def _os_threads() -> int:
    """OS threads of this process.  A thread just joined in Python (by the pre-fork hook,
    say) can still be listed for a moment while it exits: wait for it, briefly."""
    import threading

    deadline = time.monotonic() + THREAD_EXIT_GRACE
    while True:
        try:
            count = len(os.listdir("/proc/self/task"))
        except OSError:
            return threading.active_count()
        if count <= 1 or threading.active_count() > 1 or time.monotonic() >= deadline:
            return count
        time.sleep(0.005)


def _cuda_state() -> str | None:
    torch = sys.modules.get("torch")
    cuda = getattr(torch, "cuda", None)
    try:
        if cuda is not None and cuda.is_initialized():
            return "CUDA is initialised (torch.cuda) in the template; a forked CUDA context is unusable"
    except Exception:  # a broken torch build: fall through to the maps check
        pass
    try:
        with open("/proc/self/maps") as maps:
            if any("libcuda.so" in line for line in maps):
                return "the CUDA driver (libcuda.so) is loaded in the template; a forked CUDA context is unusable"
    except OSError:
        pass
    return None


# -- the master's side ------------------------------------------------------------------


@dataclass
class _Link:
    pid: int
    sock: socket.socket
    generation: int
    reason: str  # "start", "reload" or "replace"
    started: float


class TemplateSpawner:
    """The master's handle on its templates: fork them, read them, fork workers through them.

    ``Generations`` decides which template is current; this class does the I/O.
    """

    def __init__(self, log: Any, status: Any = None) -> None:
        self.log = log
        self.status = status  # the master's StatusReporter: the timeline records each template
        self.book = Generations()
        self.links: dict[int, _Link] = {}  # generation -> its template
        self.subreaper = _set_child_subreaper()

    # -- what the arbiter asks --------------------------------------------------------

    def holds(self) -> bool:
        """True while forks must wait: a template is importing, or one will be retried."""
        return self.book.holds()

    def busy(self) -> bool:
        """A template is importing: the master should look again soon."""
        return self.book.busy()

    def loading_fd(self) -> int | None:
        """The loading template's socket: readable when it reports (loaded, failed, exited)."""
        link = self.links.get(self.book.loading) if self.book.loading is not None else None
        return None if link is None else link.sock.fileno()

    def active(self) -> bool:
        """Workers are forked from a template now."""
        return self.book.active()

    def from_master(self) -> bool:
        """A fork-safety refusal: this generation's workers fork from the master."""
        return self.book.unsafe is not None

    def poll(self, arbiter: Any, now: float) -> str | None:
        """Start a template when needed and read what the templates report.

        Returns ``RELOAD_FAILED`` when the template of a SIGHUP could not load
        the new code; raises ``HaltServer`` (exit 4) when the first one could not.
        """
        book = self.book
        if not self.subreaper and book.unsafe is None:
            self._fall_back("the master could not become a child subreaper (prctl PR_SET_CHILD_SUBREAPER)")
        if book.current is not None and _closed(self.links[book.current].sock):
            link = self.links[book.current]
            self.log.error("slow start: template pid %s (generation %d) exited; starting a new one (serving "
                           "workers are not affected)", link.pid, link.generation)
            book.lost()
            self._retire(link.generation, "lost")
        reason = book.due(now)
        if reason is not None:
            self.start(arbiter, reason)
        if book.loading is not None:
            return self._poll_loading(arbiter, self.links[book.loading], now)
        return None

    def start(self, arbiter: Any, reason: str) -> None:
        """Fork a template for the current configuration (it imports the app)."""
        generation = self.book.started(reason)
        others = [link.sock for link in self.links.values()]
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:
            ours.close()
            _template_main(arbiter, theirs, generation, others)
        theirs.close()
        ours.setblocking(False)
        self.links[generation] = _Link(pid, ours, generation, reason, time.monotonic())
        if self.status is not None:
            self.status.template_started(self.links[generation].started, generation, pid, reason)
        self.log.info("slow start: template pid %s (generation %d) is loading the app", pid, generation)

    def reload(self, arbiter: Any) -> None:
        """SIGHUP: a new template loads the new code; the old one serves respawns until then."""
        superseded, reason = self.book.reload()
        if superseded is not None:
            self._retire(superseded, "superseded", signal.SIGTERM)  # still importing the code this SIGHUP replaces
        self.start(arbiter, reason)

    def spawn(self, arbiter: Any) -> int | None:
        """Fork one worker through the current template, as gunicorn's ``spawn_worker`` would.

        Returns its pid (it is in ``WORKERS``), or None when nothing was
        forked (logged; the next try forks from the master or a new template).
        """
        if self.book.holds() or not self.book.active():
            return None  # the template went away during this step: the next one waits for its successor
        link = self.links[self.book.current]
        worker = master_side_worker(arbiter)
        arbiter.cfg.pre_fork(arbiter, worker)
        request = json.dumps({"op": "spawn", "age": worker.age, "max_requests": worker.max_requests})
        reply = self._ask(link, request.encode(), heartbeat_fd(worker))
        if reply.get("op") == "spawned":
            adopt_worker(arbiter, worker, reply["pid"])
            return worker.pid
        close_heartbeat(worker)
        if reply.get("op") == "refused":
            self._fall_back(reply.get("reason", "?"))
        elif reply.get("op") == "error":  # the template answered: its fork failed (a pids limit, say)
            self.log.error("slow start: template pid %s could not fork a worker: %s", link.pid, reply.get("error"))
        else:
            self.log.error("slow start: template pid %s did not fork a worker (%s); starting a new template",
                           link.pid, reply.get("error", "no answer"))
            self.book.lost()
            self._retire(link.generation, "lost", signal.SIGKILL, reply.get("error"))  # it may be hung
        return None

    def stop(self) -> None:
        """Shutdown: the templates exit (the master reaps them with its other children)."""
        loading = self.book.loading
        for generation in list(self.links):
            self._retire(generation, "stopped", signal.SIGTERM if generation == loading else None)
        self.book = Generations()

    # -- internals ----------------------------------------------------------------------

    def _poll_loading(self, arbiter: Any, link: _Link, now: float) -> str | None:
        message = _receive(link.sock)
        limit = arbiter.slowstart.boot_timeout
        if message is None and limit and now - link.started > limit:
            message = {"op": "failed", "error": f"not loaded {limit:g} s after its fork (boot_timeout)"}
            self._retire(link.generation, "failed", signal.SIGKILL, message["error"])
        if message is None:
            return None
        op = message.get("op")
        if op == "loaded":
            self._loaded(link, message, now)
            return None
        if op == "unsafe":
            self._retire(link.generation, "unsafe", error=message.get("reason"))
            self._fall_back(message.get("reason", "?"), loading=True)
            return None
        return self._load_failed(link, message.get("error") or "the template exited while loading the app", now)

    def _loaded(self, link: _Link, message: dict, now: float) -> None:
        self.log.info("slow start: template pid %s loaded the app in %.2f s (%.2f s CPU, generation %d); "
                      "workers fork from it", link.pid, message.get("seconds", now - link.started),
                      message.get("cpu", 0.0), link.generation)
        if self.status is not None:
            self.status.template_loaded(now, link.generation, message.get("cpu"))
        old = self.book.loaded(link.generation)
        if old is not None:
            self._retire(old, "retired")

    def _load_failed(self, link: _Link, error: str, now: float) -> str | None:
        self._retire(link.generation, "failed", error=error)
        failure = self.book.failed(link.generation, now)
        if failure.outcome == HALT:
            raise HaltServer(f"App failed to load in the template: {error}", APP_LOAD_ERROR)
        if failure.outcome == RELOAD_FAILED:
            self.log.error("slow start: reload failed: the new code did not load in template pid %s (%s); "
                           "the old generation keeps serving", link.pid, error)
        if failure.retry_in is not None:
            self.log.error("slow start: template pid %s could not load the app (%s); new template in %.0f s",
                           link.pid, error, failure.retry_in)
        return failure.outcome

    def _fall_back(self, reason: str, loading: bool = False) -> None:
        old = self.book.refused_to_load(reason) if loading else self.book.refused(reason)
        if old is not None:
            self._retire(old, "unsafe", error=reason)
        self.log.warning("slow start: not forking from a template: %s; forking workers from the master instead",
                         reason)

    def _retire(self, generation: int, outcome: str, sig: int | None = None, error: str | None = None) -> None:
        """A template waiting for requests exits when its socket closes; one busy importing
        (or hung) is sent ``sig`` as well.  ``outcome`` (and ``error``) go to the timeline."""
        link = self.links.pop(generation, None)
        if link is None:
            return
        link.sock.close()
        if self.status is not None:
            self.status.template_ended(time.monotonic(), generation, outcome, error)
        if sig is not None:
            try:
                os.kill(link.pid, sig)
            except OSError:
                pass

    def _ask(self, link: _Link, request: bytes, fd: int) -> dict:
        """Send one request with the heartbeat file's descriptor; wait for the answer."""
        try:
            socket.send_fds(link.sock, [request], [fd])
            deadline = time.monotonic() + REPLY_TIMEOUT
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return {"op": "lost", "error": f"no answer within {REPLY_TIMEOUT:.0f} s"}
                if select.select([link.sock], [], [], left)[0]:
                    data = link.sock.recv(65536)
                    return json.loads(data) if data else {"op": "lost", "error": "it exited"}
        except (OSError, ValueError) as exc:
            return {"op": "lost", "error": str(exc)}


def _receive(sock: socket.socket) -> dict | None:
    """One message, or None if none is waiting; a closed socket reads as a failure."""
    try:
        data = sock.recv(65536)
    except (BlockingIOError, InterruptedError):
        return None
    except OSError as exc:
        return {"op": "failed", "error": f"lost the template: {exc}"}
    if not data:
        return {"op": "failed", "error": "the template exited while loading the app"}
    try:
        return json.loads(data)
    except ValueError:
        return {"op": "failed", "error": "garbled message from the template"}


def _closed(sock: socket.socket) -> bool:
    """The template's end is closed (it died): readable with nothing to read."""
    try:
        readable = select.select([sock], [], [], 0)[0]
        return bool(readable) and sock.recv(65536, socket.MSG_PEEK) == b""
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True


def _prctl(option: int, value: int) -> bool:
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(option, value, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _set_child_subreaper() -> bool:
    """Orphaned descendants (the workers a template forks) become the master's children."""
    return sys.platform.startswith("linux") and _prctl(PR_SET_CHILD_SUBREAPER, 1)


# -- the template process ---------------------------------------------------------------

TEMPLATE_IGNORES = ("SIGHUP", "SIGTTIN", "SIGTTOU", "SIGUSR1", "SIGUSR2", "SIGWINCH")
TEMPLATE_DEFAULTS = ("SIGTERM", "SIGINT", "SIGQUIT", "SIGCHLD")


def _template_main(arbiter: Any, sock: socket.socket, generation: int, others: list) -> None:
    """The template process; never returns.  A worker forked inside it leaves through here
    with gunicorn's own ``SystemExit``, exactly as a worker forked by the master does."""
    pid = os.getpid()
    code = 1
    try:
        code = Template(arbiter, sock, generation, others).run()
    except SystemExit:
        if os.getpid() != pid:
            raise  # a worker exiting: let it unwind like gunicorn's workers do
        code = 1
    except BaseException:
        if os.getpid() != pid:
            raise
        traceback.print_exc()
    finally:
        if os.getpid() == pid:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)


class Template:
    """The process that imports the app once and forks workers from it.

    The ``template_pre_fork`` hook receives this object: ``server`` (the
    master's arbiter, as copied into the template), ``app`` (the loaded WSGI
    or ASGI callable), ``log``, ``generation`` and ``forks`` (workers forked
    so far).
    """

    def __init__(self, arbiter: Any, sock: socket.socket, generation: int, others: list) -> None:
        self.server = arbiter
        self.log = arbiter.log
        self.sock = sock
        self.generation = generation
        self.master_pid = arbiter.pid
        self.app: Any = None
        self.forks = 0
        self.hook: Any = None
        self.saved_handlers: dict[int, Any] = {}
        self._detach(others)

    def _detach(self, others: list) -> None:
        """Hold none of the master's other descriptors: its workers' heartbeat files, the
        other templates' sockets, the long-worker pool's socket."""
        for worker in list(getattr(self.server, "WORKERS", {}).values()):
            try:
                close_heartbeat(worker)
            except OSError:
                pass
        link = getattr(self.server, "_pool_link", None)
        for other in others + ([link.sock] if link is not None and link.sock is not None else []):
            try:
                other.close()
            except OSError:
                pass

    def run(self) -> int:
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != self.master_pid:
            return 0  # the master died before the parent-death signal was armed
        self._set_signals()
        set_proctitle(f"template [{self.server.proc_name}] generation {self.generation}")
        started, cpu = time.monotonic(), time.process_time()
        error = self._load()
        if error is not None:
            self._send({"op": "failed", "error": error})
            return 0  # reported; never 3 or 4: gunicorn 23 halts on those from any child
        gc.collect()  # once: what the import left over is not frozen into every worker
        hazard = self._prepare()
        if hazard:
            self._send({"op": "unsafe", "reason": hazard})
            return 0
        self._send({"op": "loaded", "seconds": round(time.monotonic() - started, 3),
                    "cpu": round(time.process_time() - cpu, 3)})
        self.sock.setblocking(False)
        while os.getppid() == self.master_pid:
            if select.select([self.sock], [], [], PARENT_CHECK)[0] and not self._serve_one():
                return 0
        return 0

    def _set_signals(self) -> None:
        for name in TEMPLATE_IGNORES + TEMPLATE_DEFAULTS:
            sig = getattr(signal, name)
            self.saved_handlers[sig] = signal.getsignal(sig)
            signal.signal(sig, signal.SIG_IGN if name in TEMPLATE_IGNORES else signal.SIG_DFL)

    def _load(self) -> str | None:
        """What a worker's ``load_wsgi()`` does; the error's last line on failure."""
        try:
            self.app = self.server.app.wsgi()
            hook = self.server.slowstart.template_pre_fork
            self.hook = load_target(hook) if hook is not None else None
        except BaseException as exc:  # SyntaxError, SystemExit from the app: all a failed load
            if isinstance(exc, AppImportError):
                print(str(exc), file=sys.stderr)
            else:
                self.log.exception("slow start: the template could not load the application")
            sys.stderr.flush()
            return traceback.format_exception_only(type(exc), exc)[-1].strip()
        return None

    def _prepare(self) -> str | None:
        """Before a fork: the user's hook, then the safety checks, then freeze the heap."""
        if self.hook is not None:
            try:
                self.hook(self)
            except Exception as exc:
                self.log.exception("slow start: template_pre_fork hook failed")
                return f"the template_pre_fork hook raised {type(exc).__name__}: {exc}"
        hazards = fork_hazards()
        if hazards:
            return "; ".join(hazards)
        gc.freeze()  # objects alive now are never touched by the collector: their pages stay shared
        return None

    def _serve_one(self) -> bool:
        """Handle one request from the master; False when the master closed the socket."""
        try:
            data, fds, _, _ = socket.recv_fds(self.sock, 65536, 4)
        except (BlockingIOError, InterruptedError):
            return True
        if not data:
            return False
        request = json.loads(data)
        if request.get("op") == "spawn" and len(fds) == 1:
            self._send(self._spawn(request, fds[0]))  # a worker forked here leaves by SystemExit
        for fd in fds:  # no finally: the worker must not close what it inherited on its way out
            os.close(fd)
        return True

    def _spawn(self, request: dict, tmp_fd: int) -> dict:
        hazard = self._prepare()
        if hazard:
            return {"op": "refused", "reason": hazard}
        read_end, write_end = os.pipe()
        try:
            middle = os.fork()
        except OSError as exc:  # EAGAIN: a pids limit, say
            os.close(read_end)
            os.close(write_end)
            return {"op": "error", "error": f"fork failed: {exc}"}
        if middle == 0:
            self._intermediate(read_end, write_end, request, tmp_fd)
        os.close(write_end)
        try:
            os.waitpid(middle, 0)
            text = os.read(read_end, 32)
        finally:
            os.close(read_end)
        if not text:
            return {"op": "error", "error": "the fork failed"}
        self.forks += 1
        return {"op": "spawned", "pid": int(text)}

    def _intermediate(self, read_end: int, write_end: int, request: dict, tmp_fd: int) -> None:
        """Fork the worker and exit at once, so the worker is re-parented to the master."""
        try:
            os.close(read_end)
            parent = os.getpid()
            pid = os.fork()
        except BaseException:
            os._exit(1)
        if pid == 0:
            os.close(write_end)
            self._become_worker(parent, request, tmp_fd)  # leaves by SystemExit, like gunicorn's workers
        try:
            os.write(write_end, str(pid).encode())
        finally:
            os._exit(0)

    def _become_worker(self, parent: int, request: dict, tmp_fd: int) -> None:
        self._wait_adopted(parent)
        self.sock.close()
        for sig, handler in self.saved_handlers.items():
            signal.signal(sig, handler)
        server = self.server
        server.log.reopen_files()  # the master may have reopened them (SIGUSR1) since the template forked
        worker = new_worker(server, request["age"], self.master_pid, tmp_fd)
        worker.max_requests = request["max_requests"]  # the master drew the jitter
        run_worker(server, worker)

    def _wait_adopted(self, parent: int) -> None:
        """Act as a worker only once the master is our parent; exit if it never will be."""
        deadline = time.monotonic() + ADOPT_TIMEOUT
        while True:
            ppid = os.getppid()
            if ppid == self.master_pid:
                return
            if ppid != parent or time.monotonic() > deadline:
                os._exit(0)  # adopted by someone else: the master is gone
            time.sleep(0.001)

    def _send(self, message: dict) -> None:
        try:
            self.sock.send(json.dumps(message).encode())
        except OSError:
            pass  # the master is gone: the parent check ends us
