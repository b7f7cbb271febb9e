"""The GPU suite: everything measured on a GPU machine in one command (``python -m helpers gpu-bench``).

llama-bench (the engine alone), the graph size of one decode step, and a concurrency sweep of
llama-server in each configuration of :data:`GPU_SUITE`, written to ``suite.json`` after
every step. docs/benchmarks.md and notebook 06 read the recorded results
(:mod:`helpers.bench_analysis`).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from helpers import process
from helpers.loadgen import DEFAULT_LEVELS, sweep
from helpers.results import write_json
from helpers.server_config import BACKEND_SAMPLING_ARGS


@dataclass
class ServerConfig:
    """One server configuration of a benchmark suite (keywords for ServerSettings)."""

    name: str
    settings: dict[str, Any]
    levels: tuple[int, ...] = DEFAULT_LEVELS


def bench_server(model: str, config: ServerConfig, max_tokens: int = 128, progress: bool = True,
                 ready_runs: int = 2) -> dict[str, Any]:
    """Start a local llama-server with ``config``, time its readiness, sweep it, stop it.

    Readiness is timed by :func:`helpers.client.wait_until_ready`, whose polls back off
    (0.05 s, doubling up to 2 s): each ready time is the poll at which ``/health`` first
    answered 200 — 1.55 s or 3.15 s, say — an upper bound, not the exact moment.
    """
    from helpers.runtime import LocalServer

    ready = []
    for _ in range(ready_runs - 1):  # earlier starts fill the page cache; the last one is measured warm
        with LocalServer.for_model(model, **config.settings) as s:
            ready.append(s.ready_s)
    with LocalServer.for_model(model, **config.settings) as server:
        ready.append(server.ready_s)
        rows = sweep(server.base_url, config.levels, max_tokens, progress=progress)
        command = server.proc.args
    return {"name": config.name, "settings": config.settings, "command": list(command),
            "ready_s": ready, "max_tokens": max_tokens, "levels": rows}


def llama_bench(model: str, flash_attn: tuple[int, ...] = (0, 1), n_gen: int = 128, n_prompt: int = 512,
                extra: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """``llama-bench`` (tg/pp) as parsed JSON rows: the engine's speed without any server."""
    from helpers import llamacpp

    args = [str(llamacpp.binary("llama-bench")), "-m", str(model), "-p", str(n_prompt), "-n", str(n_gen),
            "-fa", ",".join(map(str, flash_attn)), "-o", "json", *extra]
    out = process.run(args, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(f"llama-bench failed: {out.stderr[-1500:]}")
    keep = ("n_prompt", "n_gen", "flash_attn", "avg_ts", "stddev_ts", "n_gpu_layers", "gpu_info", "backends")
    return [{k: row.get(k) for k in keep} for row in json.loads(out.stdout)]


#: The configurations compared on the GPU. "defaults" is llama-server's own behaviour apart from
#: the slot count (8 slots sharing the model's 40,960-token context, flash attention and
#: offload on "auto"); the others are candidate tunings.
GPU_SUITE: tuple[ServerConfig, ...] = (
    ServerConfig("defaults-np8", {"parallel": 8, "ctx_per_slot": 5120, "flash_attn": "auto", "n_gpu_layers": "auto"},
                 (1, 2, 4, 8, 16)),
    ServerConfig("np8-fa", {"parallel": 8, "ctx_per_slot": 4096, "flash_attn": "on"}, (1, 2, 4, 8, 16)),
    ServerConfig("np32-fa", {"parallel": 32, "ctx_per_slot": 2048, "flash_attn": "on"}),
    ServerConfig("np32-fa-bs", {"parallel": 32, "ctx_per_slot": 2048, "flash_attn": "on",
                                "extra_args": BACKEND_SAMPLING_ARGS}),
    ServerConfig("np16-fa-bs", {"parallel": 16, "ctx_per_slot": 4096, "flash_attn": "on",
                                "extra_args": BACKEND_SAMPLING_ARGS}, (1, 2, 4, 8, 16)),
)


def graph_nodes(model: str) -> dict[str, int]:
    """llama.cpp's graph size for one decode step (``graph: nodes = …, splits = …`` at ``-v``)."""
    from helpers import llamacpp
    from helpers.commands import CompletionSettings, completion_args
    from helpers.logs import read_jsonl

    settings = CompletionSettings(model=str(model), prompt="Hi", n_predict=2, extra_args=("-v",))
    out = process.run(completion_args(llamacpp.binary("llama-completion"), settings), timeout=600)
    messages = "\n".join(read_jsonl(out.stdout.splitlines()).messages)
    m = re.search(r"graph: nodes = (\d+), splits = (\d+)", messages)
    return {"nodes": int(m[1]), "splits": int(m[2])} if m else {}


def run_gpu_suite(workdir: str | Path, max_tokens: int = 128,
                  suite: tuple[ServerConfig, ...] = GPU_SUITE) -> dict[str, Any]:
    """The whole GPU measurement: models, llama-bench, graph size, every server configuration.

    Writes ``suite.json`` into ``workdir`` after each step, so a run cut short still leaves
    everything measured so far.
    """
    from helpers.quant import quantize
    from helpers.synthetic import QWEN3_8B, write_synthetic_model

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    gpu = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                         capture_output=True, text=True).stdout.strip()
    result: dict[str, Any] = {"gpu": gpu, "max_tokens": max_tokens, "models": {}, "llama_bench": {},
                              "graph": {}, "servers": []}
    # Full Qwen3-8B shapes, and a "narrow" twin: same 36 layers and vocabulary, 1/4 of the width.
    # Same number of kernels per token, ~12x fewer bytes: it isolates the fixed per-kernel cost.
    models = {"qwen3-8b": QWEN3_8B,
              "narrow-36l": replace(QWEN3_8B, name="narrow", n_embd=1024, n_ff=3072, n_head=8, n_head_kv=2)}
    for name, spec in models.items():
        f16 = workdir / f"{name}-F16.gguf"
        q = workdir / f"{name}-Q5_K_M.gguf"
        if not q.exists():
            t0 = time.monotonic()
            write_synthetic_model(f16, spec)
            t1 = time.monotonic()
            quantize(str(f16), str(q), "Q5_K_M")
            result["models"][name] = {"write_s": t1 - t0, "quantize_s": time.monotonic() - t1}
            f16.unlink()
        result["models"].setdefault(name, {})["bytes"] = q.stat().st_size
        result["llama_bench"][name] = llama_bench(str(q))
        result["graph"][name] = graph_nodes(str(q))
        write_json(result, workdir / "suite.json")
    for config in suite:
        result["servers"].append(bench_server(str(workdir / "qwen3-8b-Q5_K_M.gguf"), config, max_tokens,
                                              progress=False))
        write_json(result, workdir / "suite.json")
    return result
