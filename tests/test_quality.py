"""Published quality figures and the quality-against-speed choice of a quantization."""

from __future__ import annotations

import pytest

from helpers import llamacpp
from helpers.model_shape import known_shape
from helpers.quality import LLAMA3_8B, LLAMA3_8B_IMATRIX, lookup, parse_scoreboard, ppl_ratio
from helpers.tradeoff import LADDER, LADDER_IMATRIX, choose_quant

QWEN = known_shape("Qwen3-8B")


@pytest.mark.llama
def test_figures_are_the_pinned_sources_scoreboard():
    """Every number in helpers.quality is the one llama.cpp's documentation publishes at our pin."""
    readme = llamacpp.fetch_source(quiet=True) / "tools" / "perplexity" / "README.md"
    assert parse_scoreboard(readme.read_text()) == LLAMA3_8B
    assert parse_scoreboard(readme.read_text(), "WT 10m") == LLAMA3_8B_IMATRIX


def test_an_importance_matrix_loses_less_at_the_same_size():
    assert (lookup("Q4_K_M+imatrix").kld, lookup("Q4_K_M").kld) == (0.028152, 0.031273)
    for name, with_imatrix in LLAMA3_8B_IMATRIX.items():
        if name in LLAMA3_8B:
            assert with_imatrix.kld < LLAMA3_8B[name].kld and with_imatrix.size_gib == LLAMA3_8B[name].size_gib
    with pytest.raises(ValueError, match="no published quality figures for 'Q5_K_M\\+imatrix'"):
        lookup("Q5_K_M+imatrix")


def test_the_ladder_loses_quality_at_every_step_and_ever_faster():
    klds = [LLAMA3_8B[q].kld for q in LADDER]
    assert klds == sorted(klds)
    assert ppl_ratio("Q8_0") < 1.001 and ppl_ratio("Q2_K") > 1.5
    # notebook 02: Q6_K under half a percent of perplexity, Q5_K_M just under 1% (not "well under"), Q4_K_M ~3%
    assert ppl_ratio("Q6_K") < 1.005 and 1.008 < ppl_ratio("Q5_K_M") < 1.01 and 1.025 < ppl_ratio("Q4_K_M") < 1.03
    for ladder in (LADDER, LADDER_IMATRIX):
        rates = [s.speedup_per_kld for s in choose_quant(QWEN, "L4", ladder=ladder).steps[1:]]
        assert rates == sorted(rates, reverse=True)  # each step buys less speed per unit of quality on the L4


def test_the_price_of_quality_decides():
    assert choose_quant(QWEN, "L4").preset == "Q5_K_M"
    picks = [choose_quant(QWEN, "L4", speedup_per_kld=r).preset for r in (1e9, 100, 50, 15, 5, 1, 0)]
    assert picks == ["F16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q3_K_M", "Q2_K"]
    # speed ratios are not byte ratios on a fast GPU: the same price keeps Q8_0 on an H200 (notebook 02)
    assert [choose_quant(QWEN, g).preset for g in ("L4", "A100-80GB", "H200")] == ["Q5_K_M", "Q8_0", "Q8_0"]


def test_memory_is_a_hard_limit():
    assert choose_quant(QWEN, "T4", n_ctx=32768, speedup_per_kld=1e9).preset == "Q8_0"  # F16 does not fit a T4
    with pytest.raises(ValueError, match="no preset of the ladder fits the T4"):
        choose_quant(known_shape("Qwen3-32B"), "T4", n_ctx=32768)
    with pytest.raises(ValueError, match="must be 0 or more"):
        choose_quant(QWEN, "L4", speedup_per_kld=-1)
