"""How much of the engine's speed llama-server delivers: the server against llama-batched-bench.

``llama-batched-bench`` runs N sequences through the engine at once — a prompt of ``n_prompt``
tokens each, then ``n_gen`` decode steps — with no HTTP, no JSON, no tokenizer round trip and
no scheduling: its aggregate decode speed (``S_TG``) is what the kernels can do at N. A
llama-server with N slots, given N identical-length requests at the same instant, should
decode at nearly that speed once all N are generating. The ratio

    server efficiency = server's aggregate decode tokens/s ÷ batched-bench's S_TG at the same N

says how much the server loses: CPU work per token and per slot (sampling, detokenizing,
building each server-sent event), waiting between steps, batch sizes.

The server's decode speed is measured where it is comparable: in the window in which all N
streams are generating (after the last first token, before the first stream ends), counting
every token that arrived in it. Time to first token is reported separately.
"""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from helpers import process
from helpers.server_config import BACKEND_SAMPLING_ARGS

#: The server configurations compared, as ServerSettings keywords beyond the slot count. "course"
#: is the Modal server's (flash attention, backend sampling).
CONFIGS: dict[str, dict[str, Any]] = {
    "course": {"flash_attn": "on", "extra_args": BACKEND_SAMPLING_ARGS},
    "cpu-sampling": {"flash_attn": "on", "extra_args": ()},
}


def batched_bench(binary: str, model: str, parallel: tuple[int, ...] = (1, 8, 16, 32), n_prompt: int = 128,
                  n_gen: int = 128, extra: tuple[str, ...] = ()) -> list[dict[str, float]]:
    """``llama-batched-bench`` rows: per N, prompt and decode speeds (S_PP, S_TG) in tokens/s."""
    n_kv = max(parallel) * (n_prompt + n_gen) + 256
    args = [binary, "-m", model, "-c", str(n_kv), "-b", "2048", "-ub", "512", "-ngl", "999", "-fa", "on",
            "-npp", str(n_prompt), "-ntg", str(n_gen), "-npl", ",".join(map(str, parallel)), *extra]
    out = process.run(args, timeout=1200)
    if out.returncode != 0:
        raise RuntimeError(f"llama-batched-bench failed: {(out.stdout + out.stderr)[-1500:]}")
    return parse_batched_bench(out.stdout + out.stderr)


def parse_batched_bench(text: str) -> list[dict[str, float]]:
    """The markdown table ``|PP|TG|B|N_KV|T_PP s|S_PP t/s|T_TG s|S_TG t/s|T s|S t/s|`` as rows."""
    rows = []
    keys = ("pp", "tg", "b", "n_kv", "t_pp_s", "s_pp", "t_tg_s", "s_tg", "t_s", "s")
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 10 and re.fullmatch(r"\d+", cells[0] or ""):
            rows.append(dict(zip(keys, map(float, cells), strict=True)))
    return rows


def token_times(r: Any) -> list[float]:
    """Arrival times (monotonic) of each token chunk of one :class:`helpers.loadgen.RequestTiming`."""
    if r.ttft_s is None:
        return []
    t = r.sent_at + r.ttft_s
    times = [t]
    for gap in r.itl_s:
        t += gap
        times.append(t)
    return times


def decode_window(results: list[Any]) -> dict[str, float]:
    """Aggregate decode speed while every stream generates: tokens arrived in the window ÷ its length."""
    streams = [token_times(r) for r in results]
    if not streams or any(len(s) < 2 for s in streams):
        return {"tokens_per_s": float("nan"), "window_s": 0.0, "tokens": 0}
    start = max(s[0] for s in streams)
    end = min(s[-1] for s in streams)
    if end <= start:
        return {"tokens_per_s": float("nan"), "window_s": 0.0, "tokens": 0}
    tokens = sum(1 for s in streams for t in s if start < t <= end)
    return {"tokens_per_s": tokens / (end - start), "window_s": end - start, "tokens": tokens}


def prompt_of(i: int, words: int) -> str:
    # a different first word per request: no shared prompt prefix to reuse
    return f"Request {i}: " + " ".join(["describe the memory hierarchy of a modern GPU"] * max(1, words // 8))


def server_run(model: str, n: int, config: dict[str, Any], n_gen: int = 128, prompt_words: int = 96,
               repeats: int = 3) -> dict[str, Any]:
    """One llama-server with ``n`` slots; ``repeats`` waves of ``n`` simultaneous requests."""
    from helpers.loadgen import measure_request
    from helpers.runtime import LocalServer

    ctx = 1024
    waves = []
    with LocalServer.for_model(model, parallel=n, ctx_per_slot=ctx, **config) as server:
        measure_request(server.base_url, prompt_of(-1, prompt_words), 8)  # warm-up
        for w in range(repeats):
            started = time.monotonic()
            with ThreadPoolExecutor(max_workers=n) as pool:
                futures = [pool.submit(measure_request, server.base_url, prompt_of(w * 1000 + i, prompt_words), n_gen)
                           for i in range(n)]
                results = [f.result() for f in futures]
            wall = time.monotonic() - started
            window = decode_window(results)
            tokens = sum(r.completion_tokens for r in results)
            waves.append({
                "failed": sum(1 for r in results if r.error),
                "tokens": tokens,
                "wall_s": wall,
                "aggregate_tokens_per_s": tokens / wall,
                "decode_tokens_per_s": window["tokens_per_s"],
                "decode_window_s": window["window_s"],
                "ttft_max_s": max((r.ttft_s or 0.0) for r in results),
                "prompt_tokens": results[0].prompt_tokens,
                "server_predicted_per_s": [r.server_timings.get("predicted_per_second") for r in results],
            })
        command = list(server.proc.args)
    return {"n": n, "config": config, "command": command, "waves": waves}


def efficiency_suite(binaries: dict[str, str], model: str, parallel: tuple[int, ...] = (1, 8, 32),
                     configs: dict[str, dict[str, Any]] = CONFIGS, n_gen: int = 128) -> dict[str, Any]:
    """batched-bench at each N, then each server configuration at each N; the ratios."""
    engine = batched_bench(binaries["llama-batched-bench"], model, parallel, n_gen=n_gen)
    s_tg = {int(r["b"]): r["s_tg"] for r in engine}
    servers = []
    for name, config in configs.items():
        for n in parallel:
            run = server_run(model, n, config, n_gen=n_gen)
            best = max(w["decode_tokens_per_s"] for w in run["waves"])
            run.update(name=name, efficiency=best / s_tg[n] if n in s_tg else None)
            servers.append(run)
    return {"batched_bench": engine, "servers": servers}
