"""Shared fixtures (the real llama.cpp build, the synthetic model), the ``llama`` marker, the leftover check.

Nothing here is mocked. The build is the same cached one `make llama` produces (the first
run compiles it, ~6 min on 2 cores); the model is the deterministic synthetic Qwen3.

**The ``llama`` marker** says a test needs the llama.cpp binaries. Every test that uses the
``llama_bin`` fixture gets it here; a test that reaches the binaries another way
(``LocalServer``, ``run_completion``, ``quantize``, a ``python -m helpers`` command) is marked in
its file. ``make test-fast`` runs ``-m "not llama"``: no build, a few seconds. So that a
missing marker cannot hide, a test *without* it runs with ``$LLAMACPP_COURSE_BIN`` naming a
folder that does not exist: asking for a binary fails at once, with the fix in the folder's
name, in both lanes — instead of compiling llama.cpp for minutes in the fast one.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import pytest

from helpers import llamacpp, process
from helpers.synthetic import TINY, synthetic_model

TESTS = Path(__file__).resolve().parent
#: What a test without the ``llama`` marker sees as its llama.cpp binaries: nothing.
UNMARKED_BIN = Path(tempfile.gettempdir()) / "no-llama.cpp-here--mark-the-test-pytest.mark.llama"
#: Fixtures that mean "this test runs llama.cpp".
LLAMA_FIXTURES = {"llama_bin"}


@pytest.fixture(scope="session")
def llama_bin() -> Path:
    return llamacpp.build(progress=False)


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    return synthetic_model(TINY)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if TESTS in Path(item.path).resolve().parents and LLAMA_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.llama)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):  # noqa: ANN201 - a hook wrapper
    """Hide the binaries from an unmarked test: its setup (module fixtures included), call and teardown."""
    if TESTS not in Path(item.path).resolve().parents or item.get_closest_marker("llama"):
        return (yield)
    saved = os.environ.get("LLAMACPP_COURSE_BIN")
    os.environ["LLAMACPP_COURSE_BIN"] = str(UNMARKED_BIN)
    try:
        return (yield)
    finally:
        if saved is None:
            os.environ.pop("LLAMACPP_COURSE_BIN", None)
        else:
            os.environ["LLAMACPP_COURSE_BIN"] = saved


def build_folders() -> list[Path]:
    """Where llama.cpp processes of this course run from — found without building anything.

    Every cached build lives under one folder (``<cache>/bin/<build key>``); a folder given in
    ``$LLAMACPP_COURSE_BIN`` counts too. Where nothing was built, nothing can be left running.
    """
    folders = [llamacpp.bin_dir(llamacpp.BuildSpec.local(cuda=False)).parent]
    if os.environ.get("LLAMACPP_COURSE_BIN"):
        folders.append(Path(os.environ["LLAMACPP_COURSE_BIN"]))
    return folders


def llama_processes(folders: Iterable[Path], table: list[process.ProcessInfo] | None = None
                    ) -> dict[int, process.ProcessInfo]:
    """Live processes (zombies excluded) started from ``folders``, or guarding one that was."""
    table = process.live_processes() if table is None else table
    return {p.pid: p for folder in folders for p in process.running_from(folder, table)}


def leftovers(before: set[int], folders: Iterable[Path]) -> list[process.ProcessInfo]:
    """The llama.cpp processes that appeared since ``before`` and belong to this test run.

    Ours are this process's descendants, or orphans (parent 1) that something we ran left
    behind; processes of other test runs on the same machine descend from their own pytest.
    """
    table = process.live_processes()
    parent = {p.pid: p.ppid for p in table}
    me = os.getpid()

    def ours(p: process.ProcessInfo) -> bool:
        if p.ppid == 1:
            return True
        pid = p.ppid
        for _ in range(100):  # up the tree to the root
            if pid == me:
                return True
            if pid not in parent:
                return False
            pid = parent[pid]
        return False

    return [p for pid, p in llama_processes(folders, table).items() if pid not in before and ours(p)]


@pytest.fixture
def no_orphans():
    """Fail the test if it leaves any llama.cpp process (or a guardian) running."""
    folders = build_folders()
    before = set(llama_processes(folders))
    yield
    deadline = time.monotonic() + 5
    while (left := leftovers(before, folders)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, "llama.cpp processes left running:\n" + "\n".join(f"{p.pid} {p.command[:200]}" for p in left)
