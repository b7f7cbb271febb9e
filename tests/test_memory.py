"""The memory calculator against llama.cpp's own numbers: our CPU runs, our H200 run, the article's L4."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from helpers.commands import CompletionSettings, completion_args
from helpers.cpu_buffers import CpuFeatures, buffer_bytes, extra_buffer, llama_quantize_order
from helpers.gpus import gpu_spec
from helpers.logs import ARTICLE_LOG, parse_buffer_sizes, parse_memory_table
from helpers.memory import fits, max_context, memory_breakdown
from helpers.model_shape import from_hf_config
from helpers.sizes import MIB
from helpers.speed import bytes_per_token, decode_roofline
from helpers.synthetic import TINY, model_shape, write_synthetic_model
from helpers.tradeoff import choose_quant

from .test_gguf_header import QWEN3_8B_CONFIG

DATA = Path(__file__).parent / "data"

CPU_SHAPES = {
    "tiny": TINY,
    "wide": replace(TINY, name="wide", n_embd=1024, n_ff=3072, n_head=8, n_head_kv=4, head_dim=128, n_layer=2),
    "gqa4": replace(TINY, name="gqa4", n_head=8, n_head_kv=2, head_dim=32),
    "vocab": replace(TINY, name="vocab", n_vocab=32000),  # the logits dominate the compute buffer
}
CPU_CASES = [  # (shape, n_ctx, n_ubatch, flash attention, KV cache type)
    ("tiny", 4096, 512, True, "f16"), ("tiny", 16384, 128, True, "f16"), ("tiny", 1000, 512, True, "f16"),
    ("tiny", 4096, 512, False, "f16"), ("wide", 512, 512, True, "f16"), ("wide", 16384, 512, False, "f16"),
    ("gqa4", 4096, 256, False, "f16"), ("gqa4", 4096, 512, True, "q8_0"), ("gqa4", 8192, 512, True, "q4_0"),
    ("vocab", 4096, 512, True, "f16"), ("vocab", 16384, 512, False, "f16"),
]


@pytest.fixture(scope="module")
def cpu_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("mem")
    return {name: write_synthetic_model(root / f"{name}.gguf", spec) for name, spec in CPU_SHAPES.items()}


@pytest.mark.parametrize("case", CPU_CASES, ids=lambda c: "-".join(map(str, c)))
def test_cpu_buffers_match_llama_cpp(llama_bin, cpu_models, case):
    name, n_ctx, n_ubatch, fa, kv = case
    settings = CompletionSettings(model=str(cpu_models[name]), prompt="Hi", n_predict=1, ctx_size=n_ctx,
                                  extra_args=("-ub", str(n_ubatch), "-fa", "on" if fa else "off",
                                              "-ctk", kv, "-ctv", kv, "-v"))
    # the plain-text log (not JSONL) carries the two-decimal buffer lines on stderr
    args = [a for a in completion_args(llama_bin / "llama-completion", settings) if a != "--log-jsonl"]
    out = subprocess.run(args, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    printed = parse_buffer_sizes(out.stderr)
    est = memory_breakdown(model_shape(CPU_SHAPES[name]), "F16", n_ctx, gpu=None, kv_type=kv,
                           n_ubatch=n_ubatch, flash_attn=fa, cpu=CpuFeatures.detect())
    assert abs(est.context_mib - printed["KV", "CPU"]) < 0.01
    assert abs(est.compute_mib - printed["compute", "CPU"]) < 1.0
    assert _model_buffers(printed) == pytest.approx({"CPU_Mapped": est.host_model_mib, **est.extra_buffers_mib},
                                                    abs=0.01)
    table = parse_memory_table(out.stderr).host  # and the rounded table agrees within 1 MiB
    assert abs(table.context_mib - est.context_mib) <= 1 and abs(table.compute_mib - est.compute_mib) <= 1


def _model_buffers(printed: dict) -> dict[str, float]:
    """The weight buffers llama.cpp allocated (its first, planning pass prints zeros)."""
    return {where: mib for (kind, where), mib in printed.items() if kind == "model" and mib > 0}


QUANT_SHAPES = {"tiny": TINY, "tied512": replace(TINY, name="tied512", tied=True, n_vocab=512)}


@pytest.fixture(scope="module")
def quant_sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("quant-mem")
    return root, {name: write_synthetic_model(root / f"{name}.gguf", spec) for name, spec in QUANT_SHAPES.items()}


@pytest.mark.llama
@pytest.mark.parametrize("quant", ["Q4_0", "Q4_1", "Q8_0", "Q4_K_M", "Q5_K_M", "Q2_K", "IQ4_XS"])
@pytest.mark.parametrize("name", list(QUANT_SHAPES))
def test_cpu_weight_buffers_match_llama_cpp(llama_bin, quant_sources, name, quant):
    """Mapped and repacked (AMX, CPU_REPACK) weights, exactly as llama.cpp allocates them on this CPU."""
    from helpers.quant import quantize

    root, sources = quant_sources
    path = quantize(str(sources[name]), str(root / f"{name}-{quant}.gguf"), quant)
    settings = CompletionSettings(model=path, prompt="Hi", n_predict=1, ctx_size=512, extra_args=("-v",))
    args = [a for a in completion_args(llama_bin / "llama-completion", settings) if a != "--log-jsonl"]
    out = subprocess.run(args, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]  # on AMX CPUs the unpatched build died here (SIGILL)
    shape = model_shape(QUANT_SHAPES[name])
    est = memory_breakdown(shape, quant, 512, gpu=None, cpu=CpuFeatures.detect(),
                           tensor_order=llama_quantize_order([n for n, _ in shape.tensors()]))
    predicted = {"CPU_Mapped": est.host_model_mib, **est.extra_buffers_mib}
    assert _model_buffers(parse_buffer_sizes(out.stderr)) == pytest.approx(predicted, abs=0.01)


@pytest.mark.llama
def test_amx_buffers_as_measured_on_an_amx_cpu(tiny_model, tmp_path):
    """On a machine without AMX too: the AMX prediction against llama.cpp's lines from an AMX host."""
    import json
    import sys

    from helpers.quant import quantize

    path = quantize(str(tiny_model), str(tmp_path / "tiny-Q4_K_M.gguf"), "Q4_K_M")
    out = subprocess.run([sys.executable, "-m", "helpers", "memory", "--gguf", path, "--quant", "Q4_K_M",
                          "--gpu", "cpu", "--ctx", "512", "--cpu", "amx", "--json"],
                         capture_output=True, text=True, timeout=120)
    est = json.loads(out.stdout)
    printed = _model_buffers(parse_buffer_sizes((DATA / "amx_cpu_suite" / "buffers_tiny_q4_k_m.log").read_text()))
    assert printed == pytest.approx({"CPU_Mapped": est["host_model_mib"], **est["extra_buffers_mib"]}, abs=0.01)


def test_extra_buffer_rules():
    """Which weights each kind of CPU repacks, and what AMX's layout adds."""
    plain = CpuFeatures.detect("flags : fpu sse2")
    avx2 = CpuFeatures.detect("flags : fpu sse2 avx avx2")
    amx = CpuFeatures.detect("flags : sse2 avx2 avx512f avx512_vnni amx_tile amx_int8")
    arm = CpuFeatures(name="aarch64")
    assert not plain.amx and avx2.avx2 and amx.amx and amx.name == "x86-64 with AMX"
    q = (256, 512)  # 256 outputs, 512 inputs
    assert [extra_buffer("blk.0.ffn_up.weight", q, t, avx2) for t in ("Q4_0", "Q8_0", "Q4_K", "Q2_K")] == \
        ["CPU_REPACK", None, "CPU_REPACK", None]
    assert [extra_buffer("blk.0.ffn_up.weight", q, t, amx) for t in ("Q4_0", "Q8_0", "Q2_K", "F16", "F32")] == \
        ["AMX", "AMX", "CPU_REPACK", "AMX", None]
    assert extra_buffer("token_embd.weight", q, "Q4_0", amx) is None  # looked up by row, never multiplied
    assert extra_buffer("blk.0.ffn_up.weight", (443, 512), "Q4_0", amx) is None  # 443 rows: not whole tiles
    assert extra_buffer("blk.0.ffn_up.weight", q, "Q4_0", arm) is None
    assert buffer_bytes("AMX", q, "Q8_0") == 256 * 16 * (34 + 4)  # + int32 compensation per block
    assert buffer_bytes("AMX", q, "Q4_0") == buffer_bytes(None, q, "Q4_0") == 256 * 16 * 18


def test_article_l4_breakdown():
    """The article's L4 line: CUDA0 model 5166, context 576, compute 304; Host model 408 (MiB)."""
    est = memory_breakdown(from_hf_config(QWEN3_8B_CONFIG), "Q5_K_M", 4096, "L4")
    article = parse_memory_table(ARTICLE_LOG.read_text())
    gpu, host = article.row("L4"), article.host
    assert abs(est.gpu_model_mib - gpu.model_mib) <= 2
    assert abs(est.context_mib - gpu.context_mib) <= 2
    assert abs(est.compute_mib - gpu.compute_mib) <= 2
    assert abs(est.host_model_mib - host.model_mib) <= 2
    assert est.fits and est.gpu_memory_mib == gpu.total_mib


@pytest.mark.parametrize("n_ctx", [4096, 32768])
def test_h200_breakdown_from_our_cuda_run(n_ctx):
    log = (DATA / "h200_synthetic_qwen3_8b" / f"completion_c{n_ctx}.log").read_text()
    printed = parse_buffer_sizes(log)
    est = memory_breakdown(from_hf_config(QWEN3_8B_CONFIG), "Q5_K_M", n_ctx, "H200")
    assert abs(est.gpu_model_mib - printed["model", "CUDA0"]) < 0.01
    assert abs(est.host_model_mib - printed["model", "CPU_Mapped"]) < 0.01
    assert abs(est.context_mib - printed["KV", "CUDA0"]) < 0.01
    assert abs(est.compute_mib - printed["compute", "CUDA0"]) < 0.01
    assert abs(est.host_compute_mib - printed["compute", "CUDA_Host"]) < 0.02


def test_partial_offload_moves_layers_and_their_cache():
    shape = from_hf_config(QWEN3_8B_CONFIG)
    full = memory_breakdown(shape, "Q5_K_M", 4096, "L4")
    half = memory_breakdown(shape, "Q5_K_M", 4096, "L4", n_gpu_layers=18)
    assert half.context_mib == full.context_mib / 2
    assert half.gpu_model_mib + half.host_model_mib == pytest.approx(full.gpu_model_mib + full.host_model_mib)
    assert half.gpu_model_mib < full.gpu_model_mib / 2  # the output matrix stays on the host too


def test_bandwidth_roofline():
    shape = from_hf_config(QWEN3_8B_CONFIG)
    per_token = bytes_per_token(shape, "Q5_K_M")
    assert 5.40e9 < per_token < 5.43e9  # the whole file minus all but one row of the embeddings
    assert decode_roofline(shape, "Q5_K_M", "L4") == pytest.approx(300e9 / per_token)
    assert bytes_per_token(shape, "Q5_K_M", n_past=4096) - per_token == 4096 * 147456  # 144 KiB per token of KV


def test_fits_and_the_largest_context():
    shape = from_hf_config(QWEN3_8B_CONFIG)
    assert fits(shape, "Q5_K_M", "L4", 4096) and not fits(shape, "F16", "T4", 4096)
    big = shape.with_(n_ctx_train=131072)
    n = max_context(big, "Q5_K_M", "L4")
    assert fits(big, "Q5_K_M", "L4", n) and not fits(big, "Q5_K_M", "L4", n + 256)
    est = memory_breakdown(big, "Q5_K_M", n, "L4")
    assert gpu_spec("L4").memory_mib - est.total_gpu_mib < 144 * 256 / 1024 + 1  # less than one more step


def test_clear_errors():
    shape = from_hf_config(QWEN3_8B_CONFIG)
    with pytest.raises(ValueError, match="unknown GPU 'RTX9090'; Modal GPU types: T4, L4"):
        memory_breakdown(shape, "Q5_K_M", 4096, "RTX9090")
    with pytest.raises(ValueError, match="unknown KV cache type 'q3'"):
        memory_breakdown(shape, "Q5_K_M", 4096, "L4", kv_type="q3")
    with pytest.raises(ValueError, match=r"no preset .* T4 .*bigger GPU \(L4, A10"):
        choose_quant(shape.with_(n_layer=200), "T4")
    assert MIB == 1048576
