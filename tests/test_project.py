"""Project plumbing: dependency single source, CLI exit codes, the end-to-end demo."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_environment_yml_installs_the_project_and_nothing_else():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = env["dependencies"]
    pip_sections = [d["pip"] for d in deps if isinstance(d, dict)]
    assert pip_sections == [["-e .[dev]"]], "environment.yml must defer to pyproject.toml"
    python = next(d for d in deps if isinstance(d, str) and d.startswith("python="))
    minimum = project["requires-python"].removeprefix(">=")
    assert tuple(map(int, python.split("=")[1].split("."))) >= tuple(map(int, minimum.split(".")))
    conda_names = {d.split("=")[0] for d in deps if isinstance(d, str)}
    declared = {d.split(">")[0].split("=")[0].split("[")[0].lower() for d in project["dependencies"]}
    assert not (conda_names & declared), "runtime dependencies belong in pyproject.toml only"


def test_pinned_tools():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    dev = project["optional-dependencies"]["dev"]
    assert "nbval==0.11.0" in dev
    runtime = " ".join(project["dependencies"])
    for name in ("modal", "huggingface-hub", "openai", "ipywidgets", "gguf"):
        assert name in runtime


def test_modal_is_pinned_to_the_tested_range():
    """The apps need modal 1.6 APIs and modal-plan reads private parts: no untested version may install."""
    from importlib.metadata import version

    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    (modal,) = [Requirement(d) for d in project["dependencies"] if Requirement(d).name == "modal"]
    assert version("modal") in modal.specifier
    assert not any(v in modal.specifier for v in ("1.0.0", "1.5.9", "1.7.0", "2.0.0"))


def test_make_test_is_hermetic():
    """`make test` uses the local backend, the CPU build and the default deploy settings, whatever is exported."""
    import os

    exported = {"LLAMACPP_COURSE_GPU": "H100", "LLAMACPP_COURSE_BACKEND_SAMPLING": "0", "LLAMACPP_COURSE_PUBLIC": "1",
                "LLAMACPP_COURSE_BIN": "/elsewhere", "LLAMACPP_COURSE_BACKEND": "modal", "LLAMACPP_COURSE_CUDA": "1"}
    out = subprocess.run(["make", "-n", "test"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         env={**os.environ, **exported}).stdout
    runs = [line for line in out.splitlines() if "-m helpers build" in line or "-m pytest" in line]
    assert len(runs) == 2, out
    for line in runs:
        assert "LLAMACPP_COURSE_BACKEND=local" in line and "LLAMACPP_COURSE_CUDA=0" in line
        assert all(f"-u {name}" in line for name in ("LLAMACPP_COURSE_GPU", "LLAMACPP_COURSE_BACKEND_SAMPLING",
                                                      "LLAMACPP_COURSE_PUBLIC", "LLAMACPP_COURSE_BIN"))
        assert "-u LLAMACPP_COURSE_CACHE" not in line
    opt_in = subprocess.run(["make", "-n", "test-modal"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert opt_in.returncode == 0 and "LLAMACPP_COURSE_BACKEND=modal" in opt_in.stdout


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "helpers", *args], capture_output=True, text=True,
                          timeout=600, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("args, message", [
    (["complete", "--prompt", ""], "prompt is empty"),
    (["complete", "--prompt", "Hi", "-n", "-5"], "n_predict must be -1"),
    (["complete", "--prompt", "Hi", "--model", "/nonexistent/x.gguf"], "model file not found"),
    (["demo", "--model", "not-a-model"], "unknown model 'not-a-model': choose smollm2, synthetic"),
    (["complete", "--prompt", "Hi", "--model", "Qwen//Qwen3:Q5_K_M"], "org/name"),
    (["serve", "--api-key-env", "COURSE_TEST_EMPTY"], "$COURSE_TEST_EMPTY is unset or empty"),
])
def test_cli_bad_input_is_a_clear_error(args, message):
    out = _cli(*args)
    assert out.returncode == 2
    assert message in out.stderr and "Traceback" not in out.stderr


@pytest.mark.usefixtures("no_orphans")
def test_demo_end_to_end(llama_bin):
    out = _cli("demo", "-n", "16")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    for needle in ("llama-completion (one shot)", "text         The capital of France is Paris", "Host",
                   "llama-server   ready", "  chat         first token", "server stopped: yes"):
        assert needle in out.stdout, needle


NOTEBOOKS = sorted((ROOT / "notebooks").rglob("*.ipynb"))


def _cells(path: Path) -> list[dict]:
    import json

    return [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_files_diff_well(path):
    """Stored outputs are readable and stable: a streamed reply is one output (not one per token), and a
    compared cell prints plain text (HTML tables change with the pandas version, images with matplotlib's)."""
    for cell in _cells(path):
        streams = [o.get("name") if o["output_type"] == "stream" else None for o in cell.get("outputs", [])]
        assert not any(a and a == b for a, b in zip(streams, streams[1:], strict=False)), \
            f"{path.name}: consecutive stream outputs; regenerate with nbconvert --coalesce-streams"
        if "nbval-check-output" in cell.get("metadata", {}).get("tags", []):
            kinds = {k for o in cell.get("outputs", []) for k in o.get("data", {})}
            assert kinds <= {"text/plain"}, f"{path.name}: compared cell shows {kinds - {'text/plain'}}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_nbval_markers_are_cell_tags(path):
    """The learner reads code, not test plumbing: nbval's markers are cell tags (``nbval-check-output``,
    ``nbval-ignore-output``, ``nbval-skip``), never comments in a cell's source."""
    for cell in _cells(path):
        source = "".join(cell["source"])
        assert "NBVAL_" not in source, f"{path.name}: an nbval comment in a code cell; use a cell tag instead"
        for tag in cell.get("metadata", {}).get("tags", []):
            assert not tag.startswith("nbval") or tag in {"nbval-check-output", "nbval-ignore-output", "nbval-skip"}, \
                f"{path.name}: unknown nbval tag {tag!r}"


def test_every_notebook_with_exercises_has_solutions():
    lessons = [p for p in NOTEBOOKS if p.parent.name == "notebooks"]
    for lesson in lessons:
        text = lesson.read_text()
        if "## Exercises" in text:
            solutions = ROOT / "notebooks" / "solutions" / f"{lesson.stem}_solutions.ipynb"
            assert solutions.exists(), f"{lesson.name} has exercises but no {solutions.name}"
            assert solutions.name in text, f"{lesson.name} does not point learners to {solutions.name}"
