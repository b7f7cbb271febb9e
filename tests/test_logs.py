"""The log parser, on the article's L4 output and on real logs of our own build."""

from __future__ import annotations

import subprocess
from pathlib import Path

from helpers.commands import CompletionSettings, completion_args
from helpers.logs import ARTICLE_LOG, parse_memory_table, parse_perf, read_jsonl

DATA = Path(__file__).parent / "data"


def test_article_l4_perf_lines():
    perf = parse_perf(ARTICLE_LOG.read_text())
    assert perf.load_ms == 8146.38
    assert (perf.prompt_tokens, perf.prompt_tokens_per_s) == (9, 63.70)
    assert (perf.eval_tokens, perf.eval_tokens_per_s, perf.eval_ms) == (303, 41.47, 7306.76)
    assert (perf.total_ms, perf.total_tokens) == (7564.58, 312)


def test_article_l4_memory_table():
    mem = parse_memory_table(ARTICLE_LOG.read_text())
    gpu = mem.row("L4")
    assert gpu.name == "CUDA0" and gpu.kind == "device"
    assert (gpu.total_mib, gpu.free_mib, gpu.self_mib) == (22563, 16261, 6047)
    assert (gpu.model_mib, gpu.context_mib, gpu.compute_mib, gpu.unaccounted_mib) == (5166, 576, 304, 254)
    host = mem.host
    assert (host.self_mib, host.model_mib, host.context_mib, host.compute_mib) == (424, 408, 0, 16)
    assert host.total_mib is None


def test_no_perf_lines_gives_none():
    assert parse_perf("llama_model_load: error loading model\n") is None
    assert not parse_memory_table("nothing here")


def _run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)


def test_jsonl_and_text_logs_of_the_real_binary_agree(llama_bin, tiny_model):
    """Same run twice — JSONL and verbose text — must give the same figures."""
    settings = CompletionSettings(model=str(tiny_model), prompt="Memory bandwidth", n_predict=12,
                                  ctx_size=512, seed=7)
    args = completion_args(llama_bin / "llama-completion", settings)
    jsonl = _run(args)
    assert jsonl.returncode == 0, jsonl.stderr[-2000:]
    log = read_jsonl(jsonl.stdout.splitlines())
    text_args = [a for a in args if a != "--log-jsonl"] + ["-v"]
    plain = _run(text_args)
    assert plain.returncode == 0, plain.stderr[-2000:]

    # generated text: identical with the same seed, and it is what stdout printed
    assert log.text and log.text == plain.stdout.rstrip("\n")
    # speed lines: the token counts are deterministic, the times are not
    p_json, p_text = log.perf, parse_perf(plain.stderr)
    assert p_json.eval_tokens == p_text.eval_tokens == 11  # n_predict - 1 sampled after the prompt
    assert p_json.prompt_tokens == p_text.prompt_tokens > 0
    assert p_json.eval_tokens_per_s > 0 and p_json.load_ms > 0
    # memory breakdown: the JSON record and the -v table carry the same numbers
    m_json, m_text = log.memory, parse_memory_table(plain.stderr)
    assert m_json.host is not None and m_json.host.model_mib > 0
    assert m_json.to_dict() == m_text.to_dict()


def test_real_cuda_log_from_our_build():
    """The -v table of our CUDA build on an H200 (synthetic Qwen3-8B Q5_K_M, n_ctx 4096)."""
    mem = parse_memory_table((DATA / "h200_synthetic_qwen3_8b" / "completion_c4096.log").read_text())
    gpu = mem.row("CUDA0")
    assert gpu.description == "H200" and gpu.total_mib == 143155
    assert (gpu.model_mib, gpu.context_mib, gpu.compute_mib) == (5166, 576, 304)
    assert (mem.host.model_mib, mem.host.compute_mib) == (408, 20)
    big = parse_memory_table((DATA / "h200_synthetic_qwen3_8b" / "completion_c32768.log").read_text())
    assert big.row("CUDA0").context_mib == 8 * 576  # KV cache grows linearly with n_ctx


def test_closing_decorations_are_not_text():
    import json

    def rec(msg):
        return json.dumps({"type": "log", "level": "none", "msg": msg})

    ended = read_jsonl([rec("Hello"), rec(" world"), rec(" [end of text]\n"), rec("\n\n")])
    assert ended.text == "Hello world" and ended.stopped_by_eos
    cut = read_jsonl([rec("Hello"), rec("\n\n")])
    assert cut.text == "Hello" and not cut.stopped_by_eos
