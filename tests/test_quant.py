"""Per-tensor quantization types and file sizes, checked against the real llama-quantize."""

from __future__ import annotations

import json
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from helpers.ggml_types import ggml_type
from helpers.gguf_header import read_local
from helpers.model_shape import from_hf_config
from helpers.quant import PRESETS, bits_per_weight, preset, tensor_types, type_histogram
from helpers.sizes import file_size, quantized_file_size, tensor_data_bytes
from helpers.synthetic import TINY, write_synthetic_model

from .test_gguf_header import QWEN3_8B_CONFIG

DATA = Path(__file__).parent / "data"

SHAPES = {
    "tiny": TINY,
    # 9 layers and n_ff=640: K-quant blocks (256) do not divide ffn_down's rows -> fallbacks
    "odd": replace(TINY, name="odd", n_layer=9, n_ff=640, n_head=8, n_head_kv=2, head_dim=32),
    # tied embeddings and gqa 4 change the output and attn_v rules
    "tied": replace(TINY, name="tied", tied=True, n_layer=16, n_head=8, n_head_kv=2, head_dim=32),
}
CHECKED_PRESETS = ["Q2_K", "Q3_K_M", "Q3_K_L", "Q4_0", "Q4_K_S", "Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0", "IQ4_XS"]


def test_type_table_comes_from_gguf():
    assert ggml_type("Q5_K").bits_per_weight == 5.5
    assert ggml_type("q4_k").bits_per_weight == 4.5
    assert ggml_type("Q6_K").bits_per_weight == 6.5625
    assert ggml_type("Q8_0").bits_per_weight == 8.5
    assert (ggml_type("Q4_0").block_size, ggml_type("Q4_0").type_size) == (32, 18)
    assert ggml_type("F16").bits_per_weight == 16 and not ggml_type("F16").is_quantized
    with pytest.raises(ValueError, match="unknown ggml type 'Q9_K'; known: .*Q5_K"):
        ggml_type("Q9_K")


def test_unknown_preset_lists_the_presets():
    with pytest.raises(ValueError, match="unknown quantization 'Q5_K_X'; choose one of: F32, F16, .*Q5_K_M"):
        preset("Q5_K_X")


@pytest.fixture(scope="module")
def quantized(llama_bin, tmp_path_factory):
    """Each synthetic shape quantized by the real llama-quantize to each checked preset."""
    root = tmp_path_factory.mktemp("quant")
    out = {}
    for name, spec in SHAPES.items():
        src = write_synthetic_model(root / f"{name}-F16.gguf", spec)
        for q in CHECKED_PRESETS:
            dst = root / f"{name}-{q}.gguf"
            proc = subprocess.run([str(llama_bin / "llama-quantize"), str(src), str(dst), q],
                                  capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
            assert proc.returncode == 0, proc.stderr[-2000:]
            out[name, q] = (src, dst)
    return out


@pytest.mark.parametrize("name", list(SHAPES))
@pytest.mark.parametrize("quant", CHECKED_PRESETS)
def test_types_and_size_match_llama_quantize(quantized, name, quant):
    src, dst = quantized[name, quant]
    source = read_local(src)
    actual = {t.name: t.type.name for t in read_local(dst).tensors}
    assert tensor_types(source.shape(), quant) == actual
    predicted = quantized_file_size(source, quant)
    assert predicted == dst.stat().st_size  # exact, well inside the 0.1% asked for


def test_fallback_and_upgrade_rules_are_exercised():
    """The shapes above really hit the interesting rules (else the test above proves little)."""
    from helpers.synthetic import model_shape

    odd = tensor_types(model_shape(SHAPES["odd"]), "Q4_K_M")
    assert odd["blk.0.ffn_down.weight"] == "Q8_0"  # Q6_K upgrade, then fallback: 640 % 256 != 0
    assert odd["blk.1.ffn_down.weight"] == "Q5_0"  # Q4_K falls back to Q5_0
    tied = tensor_types(model_shape(SHAPES["tied"]), "Q4_K_M")
    assert tied["token_embd.weight"] == "Q6_K" and "output.weight" not in tied
    assert tensor_types(model_shape(SHAPES["tied"]), "Q2_K")["blk.5.attn_v.weight"] == "Q4_K"  # gqa >= 4


def test_imatrix_changes_the_documented_choices():
    shape = from_hf_config(QWEN3_8B_CONFIG)
    plain, imat = tensor_types(shape, "Q4_0"), tensor_types(shape, "Q4_0", imatrix=True)
    assert plain["blk.0.ffn_down.weight"] == "Q4_0" and imat["blk.0.ffn_down.weight"] == "Q4_1"
    assert imat["blk.4.ffn_down.weight"] == "Q4_0"  # only the first eighth of the layers
    assert tensor_types(shape, "IQ4_XS")["blk.0.ffn_down.weight"] == "Q5_K"
    assert tensor_types(shape, "IQ4_XS", imatrix=True)["blk.0.ffn_down.weight"] == "IQ4_XS"
    assert file_size(shape, "Q5_0", imatrix=True) > file_size(shape, "Q5_0")


PUBLISHED_GB = {"Q4_K_M": 5.03, "Q5_0": 5.72, "Q5_K_M": 5.85, "Q6_K": 6.73, "Q8_0": 8.71}


@pytest.mark.parametrize("quant, gb", PUBLISHED_GB.items())
def test_qwen3_8b_published_file_sizes(quant, gb):
    predicted = file_size(from_hf_config(QWEN3_8B_CONFIG), quant) / 1e9
    assert abs(predicted - gb) / gb < 0.002, (quant, predicted, gb)


def test_qwen3_8b_q5_k_m_mix():
    shape = from_hf_config(QWEN3_8B_CONFIG)
    types = tensor_types(shape, "Q5_K_M")
    assert type_histogram(types) == {"F32": 145, "Q5_K": 217, "Q6_K": 37}
    assert types["output.weight"] == "Q6_K" and types["token_embd.weight"] == "Q5_K"
    assert 5.6 < bits_per_weight(shape, "Q5_K_M") < 5.8


def test_matches_the_real_8b_file_quantized_on_the_gpu_machine():
    """Per-tensor types, bytes and total size of the synthetic Qwen3-8B Q5_K_M made on the H200."""
    real = json.loads((DATA / "h200_synthetic_qwen3_8b" / "q5km_tensors.json").read_text())
    shape = from_hf_config(QWEN3_8B_CONFIG)
    types, sizes = tensor_types(shape, "Q5_K_M"), tensor_data_bytes(shape, "Q5_K_M")
    assert {n: [types[n], sizes[n]] for n in real} == {n: v[:2] for n, v in real.items()}
    f16_size, q_size = (int(line.split()[0]) for line in (DATA / "h200_synthetic_qwen3_8b" / "sizes.txt").open())
    header = f16_size - sum(-(-b // 32) * 32 for b in tensor_data_bytes(shape, "F16").values())
    assert file_size(shape, "Q5_K_M", header_bytes=header) == q_size


def test_every_preset_has_a_base_type():
    for p in PRESETS.values():
        assert ggml_type(p.base).name == p.base


# Q4_K_M files as listed on the Hub (decimal GB, as the Hub rounds them): the rules are general,
# not fitted to Qwen3-8B.
OTHER_MODELS_Q4_K_M_GB = {
    "Qwen3-14B": 9.00,  # Qwen/Qwen3-14B-GGUF
    "Qwen2.5-7B-Instruct": 4.68,  # Qwen/Qwen2.5-7B-Instruct-GGUF
    "Llama-3.1-8B": 4.92,  # Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf (bartowski)
    "Mistral-7B-v0.1": 4.37,  # mistral-7b-v0.1.Q4_K_M.gguf (TheBloke)
}


@pytest.mark.parametrize("name, gb", OTHER_MODELS_Q4_K_M_GB.items())
def test_other_dense_models(name, gb):
    from helpers.model_shape import known_shape

    predicted = file_size(known_shape(name), "Q4_K_M") / 1e9
    assert abs(predicted - gb) / gb < 0.003, (name, predicted)


def test_tokenizer_sizes_are_measured_from_llama_cpps_vocab_files(llama_bin):
    from helpers.llamacpp import fetch_source
    from helpers.sizes import TOKENIZER_METADATA_BYTES, tokenizer_bytes

    models = fetch_source() / "models"
    for family, expected in TOKENIZER_METADATA_BYTES.items():
        assert tokenizer_bytes(read_local(models / f"ggml-vocab-{family}.gguf")) == expected


def _cli(*args):
    import sys

    return subprocess.run([sys.executable, "-m", "helpers", *args], capture_output=True, text=True, timeout=120)


def test_cli_size_and_memory(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(QWEN3_8B_CONFIG))
    size = json.loads(_cli("size", "--config", str(tmp_path / "config.json"), "--quant", "Q5_K_M", "--json").stdout)
    assert size["file_bytes"] == file_size(from_hf_config(QWEN3_8B_CONFIG), "Q5_K_M")
    out = _cli("memory", "--config", str(tmp_path / "config.json"), "--quant", "Q5_K_M", "--ctx", "4096",
               "--gpu", "L4", "--kv-type", "f16", "--json")
    mem = json.loads(out.stdout)
    assert {"gpu_model_mib", "host_model_mib", "context_mib", "compute_mib", "total_gpu_mib", "fits"} <= set(mem)
    assert (round(mem["gpu_model_mib"]), mem["context_mib"], mem["fits"]) == (5166, 576.0, True)
    bad = _cli("memory", "--config", str(tmp_path / "config.json"), "--quant", "Q9", "--json")
    assert bad.returncode == 2 and "choose one of" in bad.stderr and "Traceback" not in bad.stderr
    missing = _cli("size", "--config", str(tmp_path / "nope.json"), "--quant", "Q5_K_M")
    assert missing.returncode == 2 and "no config.json" in missing.stderr
