"""Published quality figures and the quality-against-speed choice of a quantization."""

from __future__ import annotations

import pytest

from helpers import llamacpp
from helpers.model_shape import known_shape
from helpers.quality import LLAMA3_8B, parse_scoreboard, ppl_ratio
from helpers.tradeoff import LADDER, choose_quant

QWEN = known_shape("Qwen3-8B")


@pytest.mark.llama
def test_figures_are_the_pinned_sources_scoreboard():
    """Every number in helpers.quality is the one llama.cpp's documentation publishes at our pin."""
    readme = llamacpp.fetch_source(quiet=True) / "tools" / "perplexity" / "README.md"
    assert parse_scoreboard(readme.read_text()) == LLAMA3_8B


def test_the_ladder_loses_quality_at_every_step_and_ever_faster():
    klds = [LLAMA3_8B[q].kld for q in LADDER]
    assert klds == sorted(klds)
    assert ppl_ratio("Q8_0") < 1.001 and 1.005 < ppl_ratio("Q5_K_M") < 1.01 and ppl_ratio("Q2_K") > 1.5
    rates = [s.speedup_per_kld for s in choose_quant(QWEN, "L4").steps[1:]]
    assert rates == sorted(rates, reverse=True)  # each step buys less speed per unit of quality: walking down is safe


def test_the_price_of_quality_decides():
    assert choose_quant(QWEN, "L4").preset == "Q5_K_M"
    picks = [choose_quant(QWEN, "L4", speedup_per_kld=r).preset for r in (1e9, 100, 50, 15, 5, 1, 0)]
    assert picks == ["F16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q3_K_M", "Q2_K"]
    # only ratios of bytes per token matter, so GPUs with room to spare choose alike, whatever their efficiency
    assert {choose_quant(QWEN, g).preset for g in ("L4", "A100-80GB", "H200")} == {"Q5_K_M"}


def test_memory_is_a_hard_limit():
    assert choose_quant(QWEN, "T4", n_ctx=32768, speedup_per_kld=1e9).preset == "Q8_0"  # F16 does not fit a T4
    with pytest.raises(ValueError, match="no preset of the ladder fits the T4"):
        choose_quant(known_shape("Qwen3-32B"), "T4", n_ctx=32768)
    with pytest.raises(ValueError, match="must be 0 or more"):
        choose_quant(QWEN, "L4", speedup_per_kld=-1)
