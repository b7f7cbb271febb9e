"""Shared fixtures: the real llama.cpp build and the synthetic model.

Nothing here is mocked. The build is the same cached one `make llama` produces (the first
run compiles it, ~6 min on 2 cores); the model is the deterministic synthetic Qwen3.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from helpers import llamacpp
from helpers.synthetic import TINY, synthetic_model


@pytest.fixture(scope="session")
def llama_bin() -> Path:
    return llamacpp.build(progress=False)


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    return synthetic_model(TINY)


def llama_processes(bin_dir: Path) -> list[str]:
    """Live processes started from our llama.cpp build (zombies excluded)."""
    out = subprocess.run(["pgrep", "-af", str(bin_dir)], capture_output=True, text=True).stdout
    alive = []
    for line in out.splitlines():
        pid = line.split()[0]
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.append(line)
    return alive


@pytest.fixture
def no_orphans(llama_bin: Path):
    """Fail the test if it leaves any llama.cpp process running."""
    before = set(llama_processes(llama_bin))
    yield
    deadline = time.monotonic() + 5
    while (left := set(llama_processes(llama_bin)) - before) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, f"llama.cpp processes left running: {left}"
