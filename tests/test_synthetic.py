"""The synthetic Qwen3 models: layout, determinism, and that real llama.cpp accepts them."""

from __future__ import annotations

import hashlib
import subprocess
from dataclasses import replace

import gguf
import numpy as np
import pytest

from helpers.synthetic import (
    QWEN3_8B,
    TINY,
    SyntheticSpec,
    parameter_count,
    tensor_plan,
    vocabulary,
    write_synthetic_model,
)
from helpers.tokenizer import byte_alphabet, train_bpe


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_byte_alphabet_is_a_bijection_of_visible_characters():
    alphabet = byte_alphabet()
    assert len(set(alphabet.values())) == 256
    assert all(not ch.isspace() for ch in alphabet.values())
    assert alphabet[ord("A")] == "A" and alphabet[ord(" ")] == "Ġ"


def test_bpe_is_deterministic_and_consistent():
    a, b = train_bpe(), train_bpe()
    assert a == b
    vocab = set(a.tokens)
    for merge in a.merges:  # every merge produces a token that exists
        left, right = merge.split(" ")
        assert left in vocab and right in vocab and left + right in vocab
    assert {"<|im_start|>", "<|im_end|>", "<think>", "</think>"} <= vocab


def test_tiny_file_layout(tmp_path):
    path = write_synthetic_model(tmp_path / "tiny.gguf", TINY)
    reader = gguf.GGUFReader(path)
    arch = reader.get_field("general.architecture")
    assert arch.contents() == "qwen3"
    assert reader.get_field("qwen3.block_count").contents() == TINY.n_layer
    assert reader.get_field("qwen3.attention.head_count_kv").contents() == TINY.n_head_kv
    assert reader.get_field("tokenizer.ggml.pre").contents() == "qwen2"
    tokens, _, _ = vocabulary(TINY)
    names = {t.name: t for t in reader.tensors}
    plan = tensor_plan(TINY, len(tokens))
    assert list(names) == [n for n, _ in plan]
    for name, shape in plan:
        t = names[name]
        assert tuple(int(x) for x in t.shape[::-1]) == shape  # GGUF stores dims reversed
        expected = gguf.GGMLQuantizationType.F32 if len(shape) == 1 else gguf.GGMLQuantizationType.F16
        assert t.tensor_type == expected, name
    assert "output.weight" in names and "blk.0.attn_q_norm.weight" in names
    # logits rows of tokens the model must not emit are zero (readable output, no early EOS)
    out = np.asarray(names["output.weight"].data)
    eos = reader.get_field("tokenizer.ggml.eos_token_id").contents()
    assert not out[eos].any() and out[tokens.index("Ġthe")].any()


def test_same_spec_same_bytes_different_seed_different_bytes(tmp_path):
    a = write_synthetic_model(tmp_path / "a.gguf", TINY)
    b = write_synthetic_model(tmp_path / "b.gguf", TINY)
    c = write_synthetic_model(tmp_path / "c.gguf", replace(TINY, seed=1))
    assert _sha(a) == _sha(b) != _sha(c)
    assert not list(tmp_path.glob(".*tmp*")), "temporary files left behind"


def test_tied_model_has_no_output_tensor(tmp_path):
    path = write_synthetic_model(tmp_path / "tied.gguf", replace(TINY, tied=True))
    assert "output.weight" not in {t.name for t in gguf.GGUFReader(path).tensors}


def test_qwen3_8b_shapes_match_the_real_model():
    """Qwen3-8B: 8,190,735,360 parameters, vocabulary 151,936, untied embeddings."""
    tokens, types, _ = vocabulary(QWEN3_8B)
    assert len(tokens) == len(types) == 151936
    plan = tensor_plan(QWEN3_8B, len(tokens))
    assert parameter_count(QWEN3_8B) == 8_190_735_360
    assert dict(plan)["blk.35.ffn_down.weight"] == (4096, 12288)
    assert dict(plan)["blk.0.attn_k.weight"] == (1024, 4096)


@pytest.mark.parametrize("kwargs, match", [
    ({"dtype": "Q4_0"}, "dtype must be one of"),
    ({"n_head": 6, "n_head_kv": 4}, "multiple of n_head_kv"),
    ({"n_layer": 0}, "n_layer must be positive"),
])
def test_bad_specs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SyntheticSpec(**kwargs)


def test_llama_quantize_accepts_it_and_the_result_runs(llama_bin, tiny_model, tmp_path):
    from helpers.runtime import run_completion

    out = tmp_path / "tiny-Q4_K_M.gguf"
    proc = subprocess.run([str(llama_bin / "llama-quantize"), str(tiny_model), str(out), "Q4_K_M"],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    types = {gguf.GGMLQuantizationType(t.tensor_type).name for t in gguf.GGUFReader(out).tensors}
    assert {"Q4_K", "F32"} <= types
    assert out.stat().st_size < tiny_model.stat().st_size / 2
    result = run_completion("Quantized models", model=out, n_predict=8, seed=3, stream=False)
    assert result.perf.eval_tokens == 7 and result.text


def test_f32_variant_runs(llama_bin, tmp_path):
    from helpers.runtime import run_completion

    path = write_synthetic_model(tmp_path / "tiny-f32.gguf", replace(TINY, dtype="F32"))
    result = run_completion("Full precision", model=path, n_predict=6, seed=1, stream=False)
    assert result.perf.eval_tokens == 5
