"""Processes we start always end: stop(), the guardian when their starter dies, and the leftover check.

These run real processes (``sleep`` and ``sh``, no llama.cpp), so they belong to the fast lane.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from helpers import llamacpp, process
from helpers.errors import BuildError
from tests.conftest import UNMARKED_BIN, build_folders, leftovers, llama_processes

SLEEP = shutil.which("sleep")


def _state(pid: int) -> str:
    """``ps``'s state letter for ``pid`` ('' once it is gone entirely, zombies included)."""
    out = subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True)
    return out.stdout.strip()


def _wait_until(condition, timeout_s: float = 10.0) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _live(pids: set[int]) -> set[int]:
    return pids & {p.pid for p in process.live_processes()}


@pytest.fixture
def fake_build(tmp_path) -> Path:
    """A folder that looks like a build: ``llama-server`` there is really ``sleep``."""
    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "llama-server").symlink_to(SLEEP)
    return folder


def test_the_leftover_check_sees_what_runs_from_the_build_folder(fake_build):
    before = set(llama_processes([fake_build]))
    assert before == set()
    proc = process.spawn([str(fake_build / "llama-server"), "60"])
    try:
        found = {p.pid: p for p in leftovers(before, [fake_build])}
        # the process and its guardian, which names what it guards
        assert set(found) == {proc.pid, proc.guardian.pid}
        assert found[proc.pid].ppid == os.getpid() and found[proc.pid].command.endswith("llama-server 60")
    finally:
        process.stop(proc)
    assert leftovers(before, [fake_build]) == []


def test_a_zombie_is_not_a_leftover(fake_build):
    zombie = subprocess.Popen([str(fake_build / "llama-server"), "60"])
    zombie.kill()
    try:
        assert _wait_until(lambda: _state(zombie.pid).startswith("Z"))  # ended, not yet reaped
        assert zombie.pid not in llama_processes([fake_build])
    finally:
        zombie.wait()


def test_finding_the_build_folders_builds_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("LLAMACPP_COURSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("LLAMACPP_COURSE_BIN", raising=False)
    assert build_folders() == [tmp_path / "cache" / "bin"]
    assert not (tmp_path / "cache").exists()


def test_a_test_without_the_llama_marker_cannot_reach_the_binaries():
    """The fast lane can never start a build: a missing marker fails at once, naming the fix."""
    with pytest.raises(BuildError, match="mark-the-test-pytest.mark.llama has no llama-server"):
        llamacpp.binary("llama-server")
    assert os.environ["LLAMACPP_COURSE_BIN"] == str(UNMARKED_BIN) and not UNMARKED_BIN.exists()


def test_stop_is_graceful_first():
    proc = process.spawn(["sh", "-c", "trap 'exit 7' TERM; while :; do sleep 0.1; done"])
    time.sleep(0.3)  # let sh install its trap
    guardian = proc.guardian.pid
    assert process.stop(proc, grace_s=5) == 7
    assert process.stop(proc) == 7  # again: nothing to do, same answer
    assert _state(guardian) == "" and proc.guardian is None  # the guardian ended and was reaped


def test_stop_kills_what_ignores_sigterm():
    proc = process.spawn(["sh", "-c", "trap '' TERM; sleep 60"])
    time.sleep(0.3)
    started = time.monotonic()
    assert process.stop(proc, grace_s=0.5) == -signal.SIGKILL
    assert time.monotonic() - started < 5


def test_a_process_that_exits_at_once_leaves_nothing():
    proc = process.spawn(["true"])
    proc.wait(timeout=10)
    guardian = proc.guardian.pid if proc.guardian else None
    assert process.stop(proc) == 0
    assert guardian is None or _state(guardian) == ""


def test_a_process_outlives_the_thread_that_started_it():
    """Linux's parent-death signal would fire here, when the thread ends: the guardian does not."""
    started: list[subprocess.Popen] = []
    thread = threading.Thread(target=lambda: started.append(process.spawn([SLEEP, "60"])))
    thread.start()
    thread.join()
    try:
        time.sleep(0.3)
        assert started[0].poll() is None
    finally:
        process.stop(started[0])


def test_processes_die_with_their_starter_even_on_sigkill():
    """SIGKILL runs no cleanup in the starter: its guardians end its processes (SIGTERM, then SIGKILL)."""
    code = ("import sys, time\nfrom helpers import process\nprocess.GUARDIAN_GRACE_S = 0.5\n"
            "plain = process.spawn(['sleep', '60'])\n"
            "stubborn = process.spawn(['sh', '-c', \"trap '' TERM; sleep 60\"])\n"
            "print(plain.pid, plain.guardian.pid, stubborn.pid, stubborn.guardian.pid, flush=True)\n"
            "time.sleep(60)\n")
    starter = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                               cwd=Path(__file__).resolve().parents[1])
    pids: set[int] = set()
    try:
        pids = {int(p) for p in starter.stdout.readline().split()}
        assert len(pids) == 4 and _live(pids) == pids
        time.sleep(0.3)  # let sh install its trap
        starter.kill()
        starter.wait()
        assert _wait_until(lambda: not _live(pids), timeout_s=5), _live(pids)
    finally:
        if starter.poll() is None:
            starter.kill()
            starter.wait()
        for pid in _live(pids):  # only if the test failed: leave nothing behind
            os.kill(pid, signal.SIGKILL)


def test_run_ends_the_whole_group_on_timeout():
    """A tool that forks (make, npm) must not leave workers behind when its run times out."""
    marker = "sleep 31.7"
    with pytest.raises(subprocess.TimeoutExpired):
        process.run(["sh", "-c", f"{marker} & wait"], timeout=0.5)
    deadline = time.monotonic() + 5
    while any(marker in p.command for p in process.live_processes()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(marker in p.command for p in process.live_processes())
    done = process.run(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (done.returncode, done.stdout, done.stderr) == (3, "out\n", "err\n")


def test_a_failed_build_step_reports_its_log(tmp_path):
    from helpers.errors import BuildError
    from helpers.llamacpp import _run_logged

    log_path = tmp_path / "build.log"
    with open(log_path, "w") as log, pytest.raises(BuildError, match="exit code 3") as err:
        _run_logged(["sh", "-c", "echo '[ 50%] Building x'; exit 3"], log, log_path, None)
    assert "[ 50%] Building x" in str(err.value) and "[ 50%] Building x" in log_path.read_text()
