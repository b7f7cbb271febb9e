"""The memory-layout picture (helpers.figures): every segment is the calculator's number, and notebook 01 shows it.

The figure is only worth drawing if it cannot drift from the numbers the notebooks print, so these tests read
the bars back out of the matplotlib figure and compare them with ``memory.memory_breakdown``, the calculator that
reproduces llama.cpp's own breakdown on the article's L4 (tests/test_memory.py).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib.pyplot as plt
import pytest

from helpers import figures, memory
from helpers.logs import ARTICLE_LOG, parse_memory_table
from helpers.model_shape import known_shape

ROOT = Path(__file__).resolve().parents[1]
QWEN = known_shape("Qwen3-8B")
CASES = (("Q5_K_M", 4096, "L4"), ("Q5_K_M", 32768, "L4"), ("F16", 32768, "L4"), ("Q5_K_M", 32768, "T4"),
         ("F16", 4096, "T4"))


@pytest.fixture(scope="module")
def estimates() -> list[memory.MemoryEstimate]:
    return [memory.memory_breakdown(QWEN, q, n, g) for q, n, g in CASES]


def test_segments_are_the_calculators_numbers(estimates):
    for est in estimates:
        seg = figures.memory_segments(est)
        assert list(seg) == list(figures.MEMORY_PARTS)
        assert seg["model weights"] == est.gpu_model_mib
        assert seg["KV cache"] == est.context_mib
        assert seg["compute buffer"] == est.compute_mib
        assert seg["CUDA overhead"] == est.overhead_mib
        if est.fits:  # the bar fills the card exactly
            assert math.isclose(sum(seg.values()), est.gpu_memory_mib)
        else:  # nothing free, and the bar runs past the card
            assert seg["free"] == 0 and sum(seg.values()) > est.gpu_memory_mib


def test_the_article_bar_is_the_article_breakdown(estimates):
    """The first bar is the article's run: llama.cpp's printed L4 row (it rounds down), from its own log."""
    logged = parse_memory_table(ARTICLE_LOG.read_text()).row("L4")
    seg = figures.memory_segments(estimates[0])
    assert (math.floor(seg["model weights"]), math.floor(seg["KV cache"]), math.floor(seg["compute buffer"])) == (
        logged.model_mib, logged.context_mib, logged.compute_mib) == (5166, 576, 304)


def test_drawn_bars_equal_the_segments(estimates):
    fig = figures.memory_layout(estimates)
    try:
        ax = fig.axes[0]
        drawn = {c.get_label(): c for c in ax.containers}
        assert list(drawn) == list(figures.MEMORY_PARTS)
        lefts = [0.0] * len(estimates)
        for part in figures.MEMORY_PARTS:
            for k, (bar, est) in enumerate(zip(drawn[part].patches, estimates, strict=True)):
                assert bar.get_width() == pytest.approx(figures.memory_segments(est)[part] / 1024)
                assert bar.get_x() == pytest.approx(lefts[k])  # stacked in MEMORY_PARTS order
                lefts[k] += bar.get_width()
        labels = [t.get_text() for t in ax.get_yticklabels()]
        assert labels == [figures.memory_case_label(e) for e in estimates]
        assert labels[0] == "L4, Q5_K_M, 4,096 tokens"
        notes = [t.get_text() for t in ax.texts]
        assert notes[-1] == "needs 15.3 of 15.0 GiB: does not fit"  # the F16 model on the T4
        assert all("does not fit" not in n for n in notes[:-1])
    finally:
        plt.close(fig)


def test_bad_input_is_a_one_line_error():
    cpu = memory.memory_breakdown(QWEN, "Q5_K_M", 4096, gpu=None)
    with pytest.raises(ValueError, match="gpu='L4'"):
        figures.memory_segments(cpu)
    with pytest.raises(ValueError, match="no cases"):
        figures.memory_layout([])


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def test_notebook_01_stores_the_memory_picture_and_its_numbers(estimates):
    cells = _cells(ROOT / "notebooks" / "01_vram_arithmetic.ipynb")
    drawing = [c for c in cells if c["cell_type"] == "code" and "figures.memory_layout(" in "".join(c["source"])]
    assert len(drawing) == 1
    assert any("image/png" in o.get("data", {}) for o in drawing[0]["outputs"]), "the figure's image is not stored"
    assert "nbval-check-output" not in drawing[0]["metadata"].get("tags", [])  # images are never compared
    # the compared cell next to it prints the bars' numbers: the same as the calculator's, rounded
    table = next(c for c in cells if "figures.memory_segments(" in "".join(c["source"]))
    printed = "".join(o.get("text", "") if isinstance(o.get("text"), str) else "".join(o.get("text", []))
                      for o in table["outputs"]).splitlines()
    for est in estimates:
        row = next(line for line in printed if line.startswith(figures.memory_case_label(est)))
        numbers = [int(x.replace(",", "")) for x in row[len(figures.memory_case_label(est)):].split()]
        assert numbers == [round(v) for v in figures.memory_segments(est).values()]


def test_solutions_01_stores_a_memory_picture():
    cells = _cells(ROOT / "notebooks" / "solutions" / "01_vram_arithmetic_solutions.ipynb")
    drawing = [c for c in cells if c["cell_type"] == "code" and "figures.memory_layout(" in "".join(c["source"])]
    assert drawing and all(any("image/png" in o.get("data", {}) for o in c["outputs"]) for c in drawing)
