"""``make demo``: the course's main path, end to end, on whatever this machine offers.

build llama.cpp → get a model → one-shot completion → llama-server → streamed chats
through the ``openai`` client → a short report → server stopped.

With no arguments it needs no network and no GPU: it uses the synthetic model. Given a
Hub repo and quant (and a reachable Hub) it runs the real Qwen3-8B the same way.
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

DEMO_PROMPT = "A GPU with more memory bandwidth generates tokens faster because"
DEMO_QUESTION = "In one sentence, why does quantization let an 8B model fit on a 24 GB GPU?"


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
            lines.append(f"  chat ({name:<12}) first token {ttft}, {chat.completion_tokens} tokens, {rate}; "
                         f"reasoning {len(chat.reasoning)} chars, answer {len(chat.content)} chars")
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


def resolve_demo_model(repo: str | None, quant: str | None) -> Path | None:
    """A Hub model when asked for and reachable; None means 'use the synthetic model'."""
    if not repo:
        return None
    from helpers.hub import download_gguf, hub_reachable, parse_repo_id

    parse_repo_id(repo)
    if not hub_reachable():
        print(f"! The Hugging Face Hub is not reachable; using the synthetic model instead of {repo}.")
        return None
    return download_gguf(repo, quant or "Q5_K_M")


def run_demo(
    repo: str | None = None,
    quant: str | None = None,
    n_predict: int = 48,
    chat_tokens: int = 48,
) -> DemoReport:
    """Run the whole path and return its report (printing progress on the way)."""
    spec = llamacpp.BuildSpec.local()
    print(f"[1/5] llama.cpp {LLAMA_CPP_COMMIT[:7]} ({'CUDA' if spec.cuda else 'CPU'} build)", flush=True)
    llamacpp.build(spec)

    print("[2/5] model", flush=True)
    model = resolve_demo_model(repo, quant)
    if model is None:
        from helpers.synthetic import synthetic_model

        model = synthetic_model()
        print(f"      synthetic Qwen3 (random weights: expect gibberish) → {model}")
    else:
        print(f"      {model}")

    print(f"[3/5] llama-completion, {n_predict} tokens: {DEMO_PROMPT!r}", flush=True)
    completion = run_completion(DEMO_PROMPT, model=model, n_predict=n_predict, seed=42)

    print("[4/5] llama-server", flush=True)
    server = LocalServer.for_model(model)
    with server:
        print(f"      ready in {server.ready_s:.2f} s at {server.base_url}", flush=True)
        print(f"[5/5] streamed chats through the openai client: {DEMO_QUESTION!r}", flush=True)
        client = server.client()
        chats = {}
        for label, thinking in (("thinking on", True), ("thinking off", False)):
            print(f"  -- {label}: ", end="", flush=True)
            chats[label] = stream_chat(client, DEMO_QUESTION, max_tokens=chat_tokens, thinking=thinking, echo=True)
        ready_s = server.ready_s or 0.0
    time.sleep(0.1)
    report = DemoReport(model=Path(model), backend="CUDA" if spec.cuda else "CPU", completion=completion,
                        server_ready_s=ready_s, chats=chats, server_stopped=not server.running)
    print(report.render(), flush=True)
    return report
