"""Single-shot inference with the real llama-completion, and its failure modes."""

from __future__ import annotations

import gguf
import numpy as np
import pytest

from helpers.errors import LlamaProcessError, ModelFileNotFoundError
from helpers.gguf_header import GgufHeaderError
from helpers.runtime import check_model_file, run_completion

pytestmark = pytest.mark.usefixtures("no_orphans")


@pytest.mark.llama
def test_generates_streams_and_measures(tiny_model):
    pieces: list[str] = []
    result = run_completion("The server keeps the model", model=tiny_model, n_predict=16, seed=11,
                            stream=pieces.append)
    assert result.returncode == 0
    assert result.text and "".join(pieces).startswith(result.text)
    assert not result.stopped_by_eos  # the synthetic model never emits its EOS token
    p = result.perf
    assert p.eval_tokens == 15 and p.eval_tokens_per_s > 0 and p.prompt_tokens > 0 and p.load_ms > 0
    host = result.memory.host
    assert host.model_mib >= 5 and host.context_mib > 0 and host.compute_mib > 0
    record = result.to_record()
    assert record["perf"]["eval_tokens"] == 15 and record["memory"][0]["name"] == "Host"
    assert "--no-conversation" in record["command"]


@pytest.mark.llama
def test_seeded_runs_repeat(tiny_model):
    a = run_completion("Same seed", model=tiny_model, n_predict=10, seed=5, stream=False)
    b = run_completion("Same seed", model=tiny_model, n_predict=10, seed=5, stream=False)
    assert a.text == b.text


@pytest.mark.llama
def test_context_size_changes_the_kv_cache(tiny_model):
    small = run_completion("Context", model=tiny_model, n_predict=2, ctx_size=256, stream=False)
    big = run_completion("Context", model=tiny_model, n_predict=2, ctx_size=4096, stream=False)
    # tiny: 4 layers x 2 KV heads x 64 dims x (K+V) x f16 = 2 KiB per token
    assert small.memory.host.context_mib < big.memory.host.context_mib == 8


def test_missing_model_file(tmp_path):
    with pytest.raises(ModelFileNotFoundError, match="model file not found: .*nope.gguf"):
        run_completion("Hi", model=tmp_path / "nope.gguf")


def test_a_file_that_is_not_gguf_is_refused_before_llama_cpp_runs(tmp_path, tiny_model):
    """A web page saved as .gguf fails on its first four bytes, in one line, not in llama.cpp's loader."""
    page = tmp_path / "model.gguf"
    page.write_text("<!DOCTYPE html><title>404</title>")
    with pytest.raises(GgufHeaderError, match=r"model.gguf is not a GGUF file \(it starts with b'<!DO', not b'GGUF'\)"):
        run_completion("Hi", model=page)
    assert check_model_file(tiny_model) == tiny_model  # a real GGUF file passes


@pytest.mark.parametrize("prompt", ["", "   "])
def test_empty_prompt_is_refused(prompt):
    with pytest.raises(ValueError, match="prompt is empty"):
        run_completion(prompt)


def test_n_predict_below_minus_one_is_refused():
    with pytest.raises(ValueError, match="n_predict must be -1"):
        run_completion("Hi", n_predict=-2)


@pytest.mark.llama
def test_corrupt_file_fails_with_log_tail(tmp_path, tiny_model):
    broken = tmp_path / "truncated.gguf"
    broken.write_bytes(tiny_model.read_bytes()[: 200_000])
    with pytest.raises(LlamaProcessError) as err:
        run_completion("Hi", model=broken, stream=False)
    assert err.value.returncode != 0
    assert "llama-completion failed with exit code" in str(err.value)
    assert "failed to load model" in err.value.log_tail or "error" in err.value.log_tail.lower()


@pytest.mark.llama
def test_crash_is_reported_as_a_crash(tmp_path, tiny_model):
    """F16 norm weights make ggml's CPU backend abort: a real crash (SIGABRT)."""
    crashing = tmp_path / "f16-norms.gguf"
    reader = gguf.GGUFReader(tiny_model)
    writer = gguf.GGUFWriter(crashing, "qwen3")
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name == "general.architecture":
            continue
        value = field.contents()
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, value, vtype, sub_type=sub)
    for t in reader.tensors:
        data = np.asarray(t.data)
        writer.add_tensor(t.name, data.astype(np.float16) if data.ndim == 1 else data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(LlamaProcessError, match="SIGABRT"):
        run_completion("Hi", model=crashing, n_predict=4, stream=False)


@pytest.mark.llama
def test_timeout_stops_the_process(tiny_model):
    with pytest.raises(LlamaProcessError, match="did not finish within"):
        run_completion("Keep going", model=tiny_model, n_predict=-1, ctx_size=40960, timeout_s=1.0, stream=False)
