"""Start and stop llama.cpp processes so that none is ever left behind.

Every process is started in its own session (a new process group). Stopping it signals the
whole group — SIGTERM first, so llama-server can print its final timings, then SIGKILL if it
does not exit in time. That also catches any helper process llama.cpp may have forked.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence

from helpers.errors import PortInUseError


def spawn(
    args: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    stdout=subprocess.PIPE,  # noqa: ANN001 - file, PIPE or DEVNULL
    stderr=subprocess.PIPE,  # noqa: ANN001
) -> subprocess.Popen:
    """Popen in a new session, stdin closed (llama.cpp must never wait for keyboard input).

    ``GGML_NO_BACKTRACE=1``: when ggml aborts it forks a debugger to print a backtrace; if
    two threads abort at once the forks can wait on each other forever. We report crashes
    ourselves (signal + log tail), so we switch that off unless the caller set it.
    """
    full_env = {"GGML_NO_BACKTRACE": "1", **os.environ}
    if env:
        full_env.update(env)
    return subprocess.Popen(
        list(args),
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        env=full_env,
        start_new_session=True,
        text=True,
        errors="replace",
        bufsize=1,
    )


def stop(proc: subprocess.Popen, grace_s: float = 10.0) -> int | None:
    """Terminate ``proc``'s process group and reap it; return its exit code.

    Safe to call twice and on a process that already exited. Interrupted while it waits (a
    second Ctrl-C), it kills the group before passing the interruption on: nothing survives.
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
            raise
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
