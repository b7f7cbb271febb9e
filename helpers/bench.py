"""Benchmarks for an OpenAI-compatible llama-server: latency, decode speed, concurrency, readiness.

The load generator uses only the standard library (``http.client`` and server-sent events),
so it runs unchanged on a bare GPU machine and adds as little client overhead as possible
when 32 streams run at once. Every request asks for exactly ``max_tokens`` tokens
(``ignore_eos``), so the work per request is fixed and speeds are comparable.

What is measured, per concurrency level *n* (n requests sent at the same instant):

* **aggregate tokens/s** — all generated tokens ÷ wall time: the server's throughput;
* **per-stream tokens/s** — each request's decode speed after its first token;
* **time to first token** (TTFT) — request sent → first generated token, median and p90;
* **server ready time** — process start → ``/health`` 200 (:class:`helpers.runtime.LocalServer`).

Each speed can be put next to the bandwidth roofline from :mod:`helpers.memory`.
"""

from __future__ import annotations

import http.client
import json
import statistics
import subprocess
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_LEVELS = (1, 2, 4, 8, 16, 32)


@dataclass
class RequestTiming:
    ttft_s: float | None
    total_s: float
    completion_tokens: int
    decode_tokens_per_s: float | None
    prompt_tokens: int | None
    server_timings: dict[str, Any] = field(default_factory=dict)


def stream_request(base_url: str, prompt: str, max_tokens: int, api_key: str | None = None,
                   timeout_s: float = 600) -> RequestTiming:
    """One streamed chat completion, timed on the client side."""
    url = urllib.parse.urlsplit(base_url.rstrip("/") + "/v1/chat/completions")
    conn_cls = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
    conn = conn_cls(url.hostname, url.port, timeout=timeout_s)
    body = json.dumps({
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens, "ignore_eos": True, "stream": True,
        "stream_options": {"include_usage": True},
        "chat_template_kwargs": {"enable_thinking": False},
    })
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    started = time.monotonic()
    t_first = t_last = None
    chunks = 0
    usage: dict[str, Any] = {}
    timings: dict[str, Any] = {}
    try:
        conn.request("POST", url.path, body=body, headers=headers)
        resp = conn.getresponse()
        if resp.status != 200:
            raise RuntimeError(f"{base_url} answered HTTP {resp.status}: {resp.read()[:300]!r}")
        for raw in resp:
            line = raw.strip()
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                break
            event = json.loads(data)
            usage = event.get("usage") or usage
            timings = event.get("timings") or timings
            for choice in event.get("choices", []):
                delta = choice.get("delta", {})
                if delta.get("content") or delta.get("reasoning_content"):
                    now = time.monotonic()
                    t_first = t_first if t_first is not None else now
                    t_last = now
                    chunks += 1
    finally:
        conn.close()
    total = time.monotonic() - started
    n = int(usage.get("completion_tokens") or chunks)
    rate = (n - 1) / (t_last - t_first) if t_first is not None and t_last and t_last > t_first and n > 1 else None
    return RequestTiming(None if t_first is None else t_first - started, total, n, rate,
                         usage.get("prompt_tokens"), timings)


def _prompt(i: int, words: int) -> str:
    # Different first words: no two requests share a cached prompt prefix.
    return f"Request {i}: " + " ".join(["tell me about memory bandwidth"] * max(1, words // 5))


def run_level(base_url: str, n: int, max_tokens: int, api_key: str | None = None, prompt_words: int = 30,
              start_index: int = 0) -> dict[str, Any]:
    """``n`` simultaneous requests; one summary row."""
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=n) as pool:
        futures = [pool.submit(stream_request, base_url, _prompt(start_index + i, prompt_words), max_tokens, api_key)
                   for i in range(n)]
        results = [f.result() for f in futures]
    wall = time.monotonic() - started
    ttfts = sorted(r.ttft_s for r in results if r.ttft_s is not None)
    rates = [r.decode_tokens_per_s for r in results if r.decode_tokens_per_s]
    server_rates = [r.server_timings.get("predicted_per_second") for r in results
                    if r.server_timings.get("predicted_per_second")]
    tokens = sum(r.completion_tokens for r in results)
    return {
        "concurrency": n,
        "requests": len(results),
        "tokens": tokens,
        "wall_s": wall,
        "aggregate_tokens_per_s": tokens / wall,
        "per_stream_tokens_per_s": statistics.mean(rates) if rates else None,
        "server_per_stream_tokens_per_s": statistics.mean(server_rates) if server_rates else None,
        "ttft_median_s": statistics.median(ttfts) if ttfts else None,
        "ttft_p90_s": ttfts[min(len(ttfts) - 1, int(0.9 * len(ttfts)))] if ttfts else None,
        "ttft_mean_s": statistics.mean(ttfts) if ttfts else None,
        "all_full_length": all(r.completion_tokens == max_tokens for r in results),
    }


def sweep(base_url: str, levels: tuple[int, ...] = DEFAULT_LEVELS, max_tokens: int = 128,
          api_key: str | None = None, warmup: int = 2, progress: bool = True) -> list[dict[str, Any]]:
    """Warm up, then one :func:`run_level` per concurrency level (with a progress bar)."""
    for i in range(warmup):
        stream_request(base_url, _prompt(10_000 + i, 30), min(max_tokens, 16), api_key)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(levels), desc="concurrency sweep", unit="level")
    rows, offset = [], 0
    for n in levels:
        rows.append(run_level(base_url, n, max_tokens, api_key, start_index=offset))
        offset += n
        if bar is not None:
            bar.update(1)
            bar.set_postfix(n=n, tps=f"{rows[-1]['aggregate_tokens_per_s']:.0f}")
    if bar is not None:
        bar.close()
    single = next((r for r in rows if r["concurrency"] == 1), None)
    for r in rows:
        r["speedup_vs_single"] = (r["aggregate_tokens_per_s"] / single["aggregate_tokens_per_s"]) if single else None
    return rows


@dataclass
class ServerConfig:
    """One server configuration of a benchmark suite (keywords for ServerSettings)."""

    name: str
    settings: dict[str, Any]
    levels: tuple[int, ...] = DEFAULT_LEVELS


def bench_server(model: str, config: ServerConfig, max_tokens: int = 128, progress: bool = True,
                 ready_runs: int = 2) -> dict[str, Any]:
    """Start a local llama-server with ``config``, time its readiness, sweep it, stop it."""
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
    out = subprocess.run(args, capture_output=True, text=True, timeout=1800, stdin=subprocess.DEVNULL)
    if out.returncode != 0:
        raise RuntimeError(f"llama-bench failed: {out.stderr[-1500:]}")
    keep = ("n_prompt", "n_gen", "flash_attn", "avg_ts", "stddev_ts", "n_gpu_layers", "gpu_info", "backends")
    return [{k: row.get(k) for k in keep} for row in json.loads(out.stdout)]


def save_json(data: Any, path: str | Path) -> Path:
    """Write benchmark results atomically (temp file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=_jsonable))
    tmp.replace(path)
    return path


def _jsonable(o: Any) -> Any:
    return asdict(o) if hasattr(o, "__dataclass_fields__") else str(o)


#: The configurations compared on the GPU. "defaults" is llama-server's own behaviour apart from
#: the slot count (8 slots sharing the model's 40,960-token context, flash attention and
#: offload on "auto"); the others are candidate tunings.
GPU_SUITE: tuple[ServerConfig, ...] = (
    ServerConfig("defaults-np8", {"parallel": 8, "ctx_per_slot": 5120, "flash_attn": "auto", "n_gpu_layers": "auto"},
                 (1, 2, 4, 8, 16)),
    ServerConfig("np8-fa", {"parallel": 8, "ctx_per_slot": 4096, "flash_attn": "on"}, (1, 2, 4, 8, 16)),
    ServerConfig("np32-fa", {"parallel": 32, "ctx_per_slot": 2048, "flash_attn": "on"}),
    ServerConfig("np32-fa-bs", {"parallel": 32, "ctx_per_slot": 2048, "flash_attn": "on",
                                "extra_args": ("--backend-sampling",)}),
    ServerConfig("np16-fa-bs", {"parallel": 16, "ctx_per_slot": 4096, "flash_attn": "on",
                                "extra_args": ("--backend-sampling",)}, (1, 2, 4, 8, 16)),
)


def graph_nodes(model: str) -> dict[str, int]:
    """llama.cpp's graph size for one decode step (``graph: nodes = …, splits = …`` at ``-v``)."""
    import re

    from helpers import llamacpp
    from helpers.commands import CompletionSettings, completion_args
    from helpers.logs import read_jsonl

    settings = CompletionSettings(model=str(model), prompt="Hi", n_predict=2, extra_args=("-v",))
    out = subprocess.run(completion_args(llamacpp.binary("llama-completion"), settings), capture_output=True,
                         text=True, timeout=600, stdin=subprocess.DEVNULL)
    messages = "\n".join(read_jsonl(out.stdout.splitlines()).messages)
    m = re.search(r"graph: nodes = (\d+), splits = (\d+)", messages)
    return {"nodes": int(m[1]), "splits": int(m[2])} if m else {}


def run_gpu_suite(workdir: str | Path, max_tokens: int = 128,
                  suite: tuple[ServerConfig, ...] = GPU_SUITE) -> dict[str, Any]:
    """The whole GPU measurement: models, llama-bench, graph size, every server configuration.

    Writes ``suite.json`` into ``workdir`` after each step, so a run cut short still leaves
    everything measured so far.
    """
    from dataclasses import replace

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
        save_json(result, workdir / "suite.json")
    for config in suite:
        result["servers"].append(bench_server(str(workdir / "qwen3-8b-Q5_K_M.gguf"), config, max_tokens,
                                              progress=False))
        save_json(result, workdir / "suite.json")
    return result


# --- analysis of recorded runs ---------------------------------------------------------
RECORDED = Path(__file__).resolve().parent.parent / "docs" / "benchmarks" / "h200-2026-11-27"


def load_runs(directory: str | Path = RECORDED) -> Any:
    """Every recorded sweep level as one pandas row (config, concurrency, speeds, TTFT)."""
    import pandas as pd

    rows = []
    for path in sorted(Path(directory).glob("*.json")):
        data = json.loads(path.read_text())
        servers = data["servers"] if isinstance(data, dict) else data
        for server in servers:
            for i, level in enumerate(server["levels"]):
                name = server["name"].removesuffix("-repeats").removesuffix("-repeat")
                rows.append({"file": path.name, "config": name,
                             "run": i, **{k: v for k, v in level.items() if k != "speedup_vs_single"}})
    return pd.DataFrame(rows)


def summarize(runs: Any) -> Any:
    """Median over repeats, per configuration and concurrency."""
    cols = ["aggregate_tokens_per_s", "per_stream_tokens_per_s", "server_per_stream_tokens_per_s", "ttft_median_s"]
    table = runs.groupby(["config", "concurrency"])[cols].median()
    table["repeats"] = runs.groupby(["config", "concurrency"]).size()
    return table


def decode_time_model(bytes_a: float, tps_a: float, bytes_b: float, tps_b: float) -> dict[str, float]:
    """Fit per-token time = fixed + bytes / bandwidth through two llama-bench measurements.

    Two models with the *same* graph (same layers, same kernels) but different widths share
    the fixed part (kernel launches, small ops, synchronisation); the difference in time per
    token is then due to the bytes alone.
    """
    t_a, t_b = 1 / tps_a, 1 / tps_b
    bandwidth = (bytes_a - bytes_b) / (t_a - t_b)
    fixed = t_a - bytes_a / bandwidth
    return {"fixed_ms": fixed * 1e3, "effective_bandwidth_gb_s": bandwidth / 1e9}


def cost_per_million_tokens(gpu: str, tokens_per_s: float) -> float:
    """Dollars per million generated tokens if the GPU is kept busy at ``tokens_per_s``."""
    from helpers.memory import gpu_cost_usd

    return gpu_cost_usd(gpu, 1e6 / tokens_per_s)


def target_table(runs: Any, llama_bench_tg: float, tuned: tuple[str, ...] = ("np8-fa-bs", "np32-fa-bs"),
                 baseline: str = "defaults-np8") -> Any:
    """The performance targets against the recorded runs (medians over repeats)."""
    import pandas as pd

    s = summarize(runs)

    def get(config: str, n: int, col: str) -> float:
        return float(s.loc[(config, n), col])

    rows = []
    for name in (baseline, *tuned):
        single = get(name, 1, "aggregate_tokens_per_s")
        decode1 = get(name, 1, "server_per_stream_tokens_per_s")
        row = {"config": name, "single-stream decode / llama-bench tg128": decode1 / llama_bench_tg,
               "8 streams / single": get(name, 8, "aggregate_tokens_per_s") / single,
               "median TTFT at 8 streams (s)": get(name, 8, "ttft_median_s")}
        if (name, 32) in s.index:
            row["32 streams / single"] = get(name, 32, "aggregate_tokens_per_s") / single
        rows.append(row)
    targets = {"config": "target", "single-stream decode / llama-bench tg128": 0.90, "8 streams / single": 4.0,
               "median TTFT at 8 streams (s)": 0.25, "32 streams / single": 6.0}
    return pd.DataFrame([*rows, targets]).set_index("config")


def with_roofline(table: Any, gpu: str, model: str = "Qwen3-8B", quant: str = "Q5_K_M") -> Any:
    """Add each speed as a fraction of the batch-1 bandwidth roofline (``helpers.memory``).

    Per-stream speed can never exceed it; the aggregate can, because one read of the weights
    serves every request in the batch — that excess is what batching buys.
    """
    from helpers.memory import decode_roofline
    from helpers.model_shape import known_shape

    roof = decode_roofline(known_shape(model), quant, gpu)
    out = table.copy()
    out["per-stream / roofline"] = out["per_stream_tokens_per_s"] / roof
    out["aggregate / roofline"] = out["aggregate_tokens_per_s"] / roof
    return out
