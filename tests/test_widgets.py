"""The calculator widget, driven headless the way a learner drives it with the mouse."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

from helpers.memory import memory_breakdown  # noqa: E402
from helpers.model_shape import known_shape  # noqa: E402
from helpers.widgets import MemoryCalculator, breakdown_rows  # noqa: E402


def test_widget_follows_its_controls():
    calc = MemoryCalculator()
    assert calc.result.quant == "Q5_K_M" and calc.result.fits
    assert "5,166 MiB" in calc.table.value and "fits" in calc.table.value
    calc.n_ctx.value = 32768
    assert calc.result.context_mib == 8 * 576
    calc.quant.value = "F16"
    calc.gpu.value = "T4"
    assert not calc.result.fits and "does NOT fit" in calc.table.value
    calc.model.value = "Qwen3-0.6B"
    calc.kv_type.value = "q8_0"
    expected = memory_breakdown(known_shape("Qwen3-0.6B"), "F16", 32768, "T4", kv_type="q8_0")
    assert calc.result == expected


def test_rows_add_up():
    est = memory_breakdown(known_shape("Qwen3-8B"), "Q5_K_M", 4096, "L4")
    rows = dict(breakdown_rows(est))
    parts = ["model weights", "KV cache", "compute buffer", "CUDA overhead"]
    assert sum(rows[p] for p in parts) == rows["total on the GPU"]
    assert rows["L4 memory"] == 22563
