"""The numbers that the prose of notebooks 00 and 01 states, recomputed from helpers, and the live claims of 00.

A number in a sentence is not compared by nbval, so each one is rebuilt here from the helper that the
notebook's cells use and looked up, as written, in the notebook's text: change the data and the sentence that
quotes it fails here. The cells whose output varies from machine to machine (a sampled chat) make predictions in
their prose; the live tests run the same request and check the prediction.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from helpers import figures, gpus, memory, models, sizes, synthetic
from helpers.logs import ARTICLE_LOG, parse_memory_table
from helpers.model_shape import known_shape

ROOT = Path(__file__).resolve().parents[1]
NB00 = ROOT / "notebooks" / "00_setup_and_first_run.ipynb"
NB01 = ROOT / "notebooks" / "01_vram_arithmetic.ipynb"
SOL01 = ROOT / "notebooks" / "solutions" / "01_vram_arithmetic_solutions.ipynb"
ARTICLE_URL = "https://abhijeetmeena.com/blog/exploring-llm-inference-on-modal-gpus"
QWEN = known_shape("Qwen3-8B")
MIB, GIB = 2**20, 2**30


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def prose(path: Path) -> str:
    """The notebook's markdown, with line breaks and blockquote markers folded into single spaces."""
    text = " ".join("".join(c["source"]) for c in _cells(path) if c["cell_type"] == "markdown")
    return " ".join(line.lstrip("> ").strip() for line in text.splitlines())


def stored_output(path: Path, needle: str) -> str:
    """The stored text output of the one code cell whose source contains ``needle``."""
    cells = [c for c in _cells(path) if c["cell_type"] == "code" and needle in "".join(c["source"])]
    assert len(cells) == 1, f"{len(cells)} cells contain {needle!r}"
    return "".join("".join(o["text"]) for o in cells[0]["outputs"] if o["output_type"] == "stream")


# --- links ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", [NB00, NB01, *(ROOT / "notebooks" / "solutions").glob("0[01]_*.ipynb")],
                         ids=lambda p: p.stem)
def test_lessons_link_the_article_and_primary_docs(path):
    text = prose(path)
    assert f"]({ARTICLE_URL})" in text
    assert "](https://github.com/ggml-org/llama.cpp" in text or "](https://huggingface.co/Qwen/Qwen3-8B)" in text


def test_lessons_link_their_primary_sources():
    nb00, nb01 = prose(NB00), prose(NB01)
    for link in ("https://github.com/ggml-org/llama.cpp/blob/master/docs/build.md", "https://huggingface.co/docs/hub/gguf",
                 "https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct", "https://huggingface.co/Qwen/Qwen3-8B"):
        assert f"]({link})" in nb00
    for link in ("https://huggingface.co/Qwen/Qwen3-8B", "https://github.com/ggml-org/ggml/blob/master/docs/gguf.md",
                 "https://modal.com/docs/guide/gpu", "https://modal.com/pricing"):
        assert f"]({link})" in nb01


# --- notebook 00 -----------------------------------------------------------------------------------

def test_nb00_sizes_in_the_prose():
    text = prose(NB00)
    q5 = sizes.file_size(QWEN, "Q5_K_M")
    assert f"{q5 / 1e9:.1f} GB file" in text  # the course's model
    smol = models.resolve_model("smollm2").stat().st_size
    assert f"{smol / MIB:.0f} MiB" in text and round(q5 / smol, -1) == 60 and "Sixty times smaller" in text
    shape = models.resolve_shape("smollm2").shape
    assert f"{shape.parameter_count() / 1e6:.0f} million parameters, quantized to Q4_1" in text
    per_token = memory.kv_bytes_per_token(shape)
    assert f"{shape.n_layer} layers × {shape.n_head_kv} KV heads × {shape.head_dim} numbers" in text
    assert f"{per_token / 1024:.1f} KiB" in text and f"make {memory.kv_cache_bytes(shape, 4096) // MIB} MiB" in text
    assert f"one token costs {memory.kv_bytes_per_token(QWEN) // 1024} KiB" in text


def test_nb00_prediction_matches_the_stored_run():
    """The predicted and llama.cpp's printed memory rows, side by side in a compared cell, are equal."""
    rows = stored_output(NB00, "for row, guess, printed in").splitlines()[1:]
    assert [r.split()[0] for r in rows] == ["model", "context", "compute"]
    for row in rows:
        _, predicted, printed = row.split()
        assert predicted == printed
    assert "prompt: 5 tokens" in stored_output(NB00, "p.prompt_tokens} tokens")
    assert "The prompt of 5 tokens" in prose(NB00)


@pytest.mark.usefixtures("no_orphans")
def test_nb00_chat_prediction_holds(llama_bin):
    """Notebook 00 predicts: at most 96 tokens, `length` exactly at 96, else `stop`; no server after the block."""
    from helpers.client import stream_chat
    from helpers.runtime import LocalServer

    with LocalServer.for_model(models.resolve_model("smollm2")) as server:
        reply = stream_chat(server.client(), "What limits how fast a model writes?", max_tokens=96)
    n = reply.server_timings.get("predicted_n") or reply.completion_tokens  # llama-server's own count
    assert reply.finish_reason in ("stop", "length"), reply
    assert 0 < n <= 96, reply
    assert n == 96 or reply.finish_reason == "stop", reply  # cut off only at the limit
    assert not server.running


@pytest.mark.usefixtures("no_orphans")
def test_nb00_thinking_channels(llama_bin):
    """Thinking on: all tokens are reasoning; off: all are answer (the synthetic model never closes <think>)."""
    from helpers.client import stream_chat
    from helpers.runtime import LocalServer

    with LocalServer.for_model(synthetic.synthetic_model(synthetic.TINY)) as qwen:
        on = stream_chat(qwen.client(), "What limits decoding speed?", max_tokens=24, thinking=True)
        off = stream_chat(qwen.client(), "What limits decoding speed?", max_tokens=24, thinking=False)
    assert (on.completion_tokens, bool(on.reasoning), bool(on.content)) == (24, True, False)
    assert (off.completion_tokens, bool(off.reasoning), bool(off.content)) == (24, False, True)


# --- notebook 01 -----------------------------------------------------------------------------------

def test_nb01_article_table_correction():
    text = prose(NB01)
    mistral, qwen25 = (sizes.file_size(known_shape(n), "F16") / 1e9 for n in ("Mistral-7B-v0.1", "Qwen2.5-7B-Instruct"))
    assert f"{mistral:.1f} GB (Mistral-7B) to {qwen25:.1f} GB (Qwen2.5-7B)" in text
    assert mistral > 12  # the article's "~12-16 GB" cannot hold a 7B model's weights
    f16, q8 = sizes.file_size(QWEN, "F16"), sizes.file_size(QWEN, "Q8_0")
    assert f"Q8_0 saves {1 - q8 / f16:.0%} of the memory" in text


def test_nb01_article_log_correction():
    text = prose(NB01)
    row = parse_memory_table(ARTICLE_LOG.read_text()).row("L4")
    used = row.self_mib + row.unaccounted_mib
    assert f"take {used * MIB / 1e9:.1f} GB ({used / 1024:.1f} GiB)" in text
    assert f"{row.total_mib * MIB / 1e9:.1f} GB ({row.total_mib / 1024:.1f} GiB) to CUDA" in text
    assert f"{row.free_mib:,} MiB stay free" in text
    assert f"{used / 1000:.1f}" == "6.3"  # the article's figure is the MiB count divided by a thousand
    assert row.total_mib == gpus.gpu_spec("L4").memory_mib


def test_nb01_cheapest_gpu_correction():
    text = prose(NB01)
    t4, l4 = gpus.gpu_spec("T4"), gpus.gpu_spec("L4")
    cheapest = min((g for g in gpus.GPUS.values() if g.usd_per_s is not None), key=lambda g: g.usd_per_s)
    assert cheapest.name == "T4" and t4.usd_per_s < l4.usd_per_s
    assert f"It costs {l4.usd_per_s / t4.usd_per_s - 1:.0%} more per hour than the T4" in text
    assert f"buys {(l4.memory_mib - t4.memory_mib) / 1024:.1f} GiB more memory" in text
    assert "compute capability 8.9 instead of the T4's 7.5" in text and (l4.cuda_arch, t4.cuda_arch) == ("89", "75")
    assert memory.fits(QWEN, "Q5_K_M", "T4", 32768) and not memory.fits(QWEN, "F16", "T4", 4096)
    assert memory.fits(QWEN, "F16", "L4", 32768)


def test_nb01_fit_prose():
    text = prose(NB01)
    f16_l4 = memory.memory_breakdown(QWEN, "F16", 32768, "L4")
    assert "about 3 GiB to spare on the L4" in text and round(f16_l4.headroom_mib / 1024) == 3
    assert "the 16 GB T4" in text and round(gpus.gpu_spec("T4").memory_mib * MIB / 1e9) == 16
    assert all(memory.fits(QWEN, "F16", g, 32768) for g in gpus.GPUS if g != "T4")
    # the picture's reading: the KV cache at 32,768 tokens is almost the Q5_K_M weights; F16 almost fills a T4
    q5 = memory.memory_breakdown(QWEN, "Q5_K_M", 32768, "L4")
    assert 0.8 < q5.context_mib / q5.gpu_model_mib < 1
    f16_t4 = memory.memory_breakdown(QWEN, "F16", 4096, "T4")
    assert f16_t4.gpu_model_mib / f16_t4.gpu_memory_mib > 0.9
    assert f"{memory.kv_bytes_per_token(QWEN) // 1024} KiB" in text
    assert f"allows {QWEN.n_ctx_train:,} positions" in text


def test_solutions_01_t4_answer():
    text = prose(SOL01)
    from dataclasses import replace

    stretched = replace(QWEN, n_ctx_train=131072)
    assert memory.max_context(QWEN, "Q5_K_M", "T4") == QWEN.n_ctx_train == 40960
    assert f"memory alone allows {memory.max_context(stretched, 'Q5_K_M', 'T4'):,} tokens" in text
    t4, l4 = (memory.memory_breakdown(QWEN, "Q8_0", 32768, g) for g in ("T4", "L4"))
    assert t4.fits and t4.headroom_mib < l4.headroom_mib
    f16 = memory.memory_breakdown(QWEN, "F16", 4096, "T4")
    assert f"({f16.gpu_model_mib / 1024:.1f} GiB of weights) does not fit" in text and not f16.fits
    assert all(memory.fits(QWEN, q, "T4", 4096) for q in ("Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M"))


def test_figure_segments_round_trip():
    """The compared table under the picture prints exactly what memory_segments gives (see test_figures)."""
    out = stored_output(NB01, "figures.memory_segments(")
    first = figures.memory_segments(memory.memory_breakdown(QWEN, "Q5_K_M", 4096, "L4"))
    assert f"{first['free']:,.0f}" in out.splitlines()[1] and math.floor(first["compute buffer"]) == 304


def test_nb01_cuda_overhead_prose():
    text = prose(NB01)
    row = parse_memory_table(ARTICLE_LOG.read_text()).row("L4")
    allowance = gpus.gpu_spec("L4").cuda_overhead_mib
    assert f"{row.unaccounted_mib} MiB on the article's L4; the calculator allows {allowance} MiB for an L4" in text
    assert allowance >= row.unaccounted_mib  # an allowance, rounded up from the measurement
