"""Start and stop llama.cpp processes so that none is ever left behind.

Every process is started in its own process group. Stopping it signals the whole group —
SIGTERM first, so llama-server can print its final timings, then SIGKILL if it does not exit
in time. That also catches any helper process llama.cpp may have forked.

A process must also end when the Python process that started it ends *without* stopping it:
a notebook kernel that is restarted or killed (SIGKILL runs no ``finally`` and no ``atexit``),
an interpreter that crashes. Otherwise llama-server keeps its port and its memory, serving
nobody. :func:`spawn` therefore gives each process a **guardian**: a tiny Python process in
the same process group that holds the read end of a pipe — the *lifeline* — whose only write
end stays in the starting process. When that process dies, however it dies, the operating
system closes the write end; the guardian reads end-of-file and ends the group (SIGTERM, then
SIGKILL after a short grace).

Why a guardian and not Linux's ``PR_SET_PDEATHSIG``: that signal fires when the *thread* that
forked the child exits, not the process — a server started from a short-lived thread (a
thread pool, a timer, a notebook widget callback) would be killed while its owner still uses
it; setting it needs ``preexec_fn``, which is not safe in a process with threads (a notebook
kernel has several); and macOS has no equivalent. A pipe closes when the last process holding
it ends, on every POSIX system, whichever thread started the child. The guardian lives in the
server's own process group, so the group's id stays reserved while it exists: whatever the
guardian or :func:`stop` signals is always this group, never a stranger that reused the id.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from helpers.errors import PortInUseError

#: Seconds the guardian gives the group between SIGTERM and SIGKILL once its starter is gone.
GUARDIAN_GRACE_S = 3.0

# Runs as ``python -I -S -c GUARDIAN <pid> <grace> <program>``, with the lifeline as stdin and in the
# group of ``pid`` (the guarded process); only the standard library, so it starts in ~20 ms.
# * It ignores SIGTERM/SIGINT/SIGHUP: stop()'s SIGTERM to the group must not end it before the
#   server; it ends with the group's SIGKILL (``os.killpg(0, ...)`` is its own group).
# * End of file on stdin: the starter is gone. SIGTERM the group, wait up to the grace for
#   ``pid`` to go, SIGKILL the group (``pid``, anything it forked, and the guardian itself).
# * Every second, if ``pid`` no longer exists at all (its starter reaped it without stop()),
#   it SIGKILLs the group, so a guardian never outlives what it guards.
# * ``<program>`` is there for ``ps`` readers: the guardian names what it guards (and the
#   tests' leftover check, which looks for the build folder, sees a leftover guardian too).
_GUARDIAN = """import os, select, signal, sys, time
pid, grace = int(sys.argv[1]), float(sys.argv[2])
for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(s, signal.SIG_IGN)
def alive():
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True
while True:
    ready = select.select([0], [], [], 1.0)[0]
    if ready and not os.read(0, 512):
        break
    if not ready and not alive():
        os.killpg(0, signal.SIGKILL)
try:
    os.killpg(0, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while alive() and time.monotonic() < deadline:
        time.sleep(0.05)
finally:
    os.killpg(0, signal.SIGKILL)
"""


class GuardedPopen(subprocess.Popen):
    """A ``Popen`` whose process group ends when this Python process ends (see the module docstring).

    ``guardian`` is the guardian's own ``Popen`` (None if the process had already exited
    when it was to start); :func:`stop` ends and reaps it.
    """

    guardian: subprocess.Popen | None = None
    _lifeline: int | None = None

    def _attach_guardian(self) -> None:
        self._release_lock = threading.Lock()
        read_end, write_end = os.pipe()  # both close-on-exec: no other child inherits the lifeline
        try:
            self.guardian = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _GUARDIAN, str(self.pid), str(GUARDIAN_GRACE_S), str(self.args[0])],
                stdin=read_end, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, process_group=self.pid,
            )
        except (OSError, subprocess.SubprocessError):
            os.close(write_end)
            if self.poll() is None:  # could not join a live group: do not leave it unguarded
                stop(self, grace_s=2.0)
                raise
            return  # it exited at once (a bad argument): there is nothing left to guard
        finally:
            os.close(read_end)
        self._lifeline = write_end

    def _release_guardian(self) -> None:
        """End the guardian and close the lifeline; idempotent and thread-safe."""
        lock = getattr(self, "_release_lock", None)
        if lock is None:
            return
        with lock:
            guardian, self.guardian = self.guardian, None
            lifeline, self._lifeline = self._lifeline, None
        if guardian is not None:
            # Not reaped yet (even if it has exited), the guardian is still a member of the group,
            # so the group id is still this group's: the SIGKILL cannot reach anybody else.
            _signal_group(self, signal.SIGKILL)
        if lifeline is not None:
            os.close(lifeline)
        if guardian is not None:
            guardian.wait(timeout=10)


def spawn(
    args: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    stdout=subprocess.PIPE,  # noqa: ANN001 - file, PIPE or DEVNULL
    stderr=subprocess.PIPE,  # noqa: ANN001
    cwd: str | os.PathLike[str] | None = None,
) -> GuardedPopen:
    """Popen in a new process group, stdin closed, guarded so that it dies with this process.

    stdin is closed because llama.cpp must never wait for keyboard input. The group is new
    (its id is the child's pid) but stays in this session, because the guardian must join it
    and a process can only join a group of its own session. Like a new session, a new group
    keeps a terminal's Ctrl-C (and a notebook's "interrupt kernel") away from llama.cpp:
    :func:`stop` decides how it ends.

    ``GGML_NO_BACKTRACE=1``: when ggml aborts it forks a debugger to print a backtrace; if
    two threads abort at once the forks can wait on each other forever. We report crashes
    ourselves (signal + log tail), so we switch that off unless the caller set it.
    """
    full_env = {"GGML_NO_BACKTRACE": "1", **os.environ}
    if env:
        full_env.update(env)
    proc = GuardedPopen(
        list(args),
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        env=full_env,
        process_group=0,
        cwd=cwd,
        text=True,
        errors="replace",
        bufsize=1,
    )
    proc._attach_guardian()
    return proc


def run(
    args: Sequence[str],
    *,
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    stdout=subprocess.PIPE,  # noqa: ANN001 - file, PIPE or DEVNULL
    stderr=subprocess.PIPE,  # noqa: ANN001
) -> subprocess.CompletedProcess:
    """``subprocess.run`` for the course's long-running tools (llama-quantize, llama-bench, cmake, npm).

    The same guarantees as :func:`spawn`: its own process group, a guardian that ends it if
    this Python process dies, and — on a timeout or an interrupt — the whole group stopped
    before the exception goes on (``subprocess.run`` kills only the direct child, so a
    ``make`` or ``npm`` would leave its workers running).
    """
    proc = spawn(args, env=env, stdout=stdout, stderr=stderr, cwd=cwd)
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException:
        stop(proc, grace_s=2.0)
        raise
    stop(proc)  # reaps the guardian (the process itself has exited)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def stop(proc: subprocess.Popen, grace_s: float = 10.0) -> int | None:
    """Terminate ``proc``'s process group and reap it; return its exit code.

    Safe to call twice, from two threads, and on a process that already exited. Interrupted
    while it waits (a second Ctrl-C), it kills the group before passing the interruption on:
    nothing survives. The guardian of a :func:`spawn`-ed process ends with its group.
    """
    if proc.poll() is None:
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait(timeout=grace_s)
        except BaseException:
            _signal_group(proc, signal.SIGKILL)
            proc.wait(timeout=grace_s)
            if isinstance(proc, GuardedPopen):
                proc._release_guardian()
            raise
    if isinstance(proc, GuardedPopen):
        proc._release_guardian()  # the group's SIGKILL: the guardian and anything the leader left behind
    else:
        # The leader is gone; make sure nothing it started lingers in its group.
        _signal_group(proc, signal.SIGKILL)
    return proc.returncode


def watch(proc: subprocess.Popen, on_exit: Callable[[int | None], None]) -> threading.Thread:
    """Call ``on_exit(returncode)`` from a background thread as soon as ``proc`` ends.

    A server that dies after it started (out of memory, a broken model file) otherwise goes
    unnoticed by whoever only waited for it to become ready.
    """

    def wait() -> None:
        on_exit(proc.wait())

    thread = threading.Thread(target=wait, name=f"watch-{proc.pid}", daemon=True)
    thread.start()
    return thread


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def describe_exit(returncode: int | None) -> str:
    """'exit code 1' or 'signal SIGABRT (a crash)' — for error messages."""
    if returncode is None:
        return "no exit code (still running)"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"{name} (it crashed or was killed)"
    return f"exit code {returncode}"


@dataclass(frozen=True)
class ProcessInfo:
    """One line of ``ps``: enough to tell what a process is and who started it."""

    pid: int
    ppid: int
    command: str


def live_processes() -> list[ProcessInfo]:
    """Every process on this machine that has not ended (zombies excluded), from ``ps``.

    ``ps`` answers the same way on Linux and macOS (``-ww``: never cut a long command line to
    the terminal's width). A zombie has ended already: it only waits for its parent to read
    its exit code, and holds no port and no memory.
    """
    out = subprocess.run(["ps", "-ww", "-A", "-o", "pid=,ppid=,stat=,command="], capture_output=True, text=True,
                         timeout=30, check=True, stdin=subprocess.DEVNULL).stdout
    found = []
    for line in out.splitlines():
        parts = line.split(None, 3)
        if len(parts) == 4 and not parts[2].startswith("Z"):
            found.append(ProcessInfo(int(parts[0]), int(parts[1]), parts[3]))
    return found


def running_from(folder: str | os.PathLike[str], processes: list[ProcessInfo] | None = None) -> list[ProcessInfo]:
    """The live processes whose command line names ``folder``: a build's binaries, and their guardians."""
    needle = str(Path(folder))
    return [p for p in (live_processes() if processes is None else processes) if needle in p.command]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def ensure_port_free(host: str, port: int) -> None:
    """Raise :class:`PortInUseError` if something already listens on ``host:port``.

    ``SO_REUSEADDR`` makes the probe ignore connections of a server that just stopped
    (TIME_WAIT), exactly as llama-server's own bind does; only a live listener counts.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUseError(
                    f"port {port} on {host} is already in use (another llama-server?): stop that process "
                    "or choose another port"
                ) from None
            raise
