"""Reading recorded GPU runs: medians over repeats, what a well-tuned server should reach, fractions of the roofline.

The recorded runs are in docs/benchmarks/ (written by :mod:`helpers.gpu_suite`); notebook 06
and docs/benchmarks.md are computed from them with these functions. Medians, because runs
vary (at 8 streams each landed in a slow or a fast mode, docs/benchmarks.md), and one odd run
pulls a median less than a mean.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from helpers.config import BENCHMARKS_DIR
from helpers.model_shape import known_shape
from helpers.speed import decode_roofline

RECORDED = BENCHMARKS_DIR / "h200-2026-11-27"


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


#: What a well-tuned llama-server should reach on a GPU where one decode step is memory-bound:
#:
#: * one stream served at >= 90% of llama-bench's decode speed: HTTP, JSON and sampling
#:   around the engine should cost less than a tenth of its time;
#: * 8 simultaneous streams >= 4x the throughput of one: a memory-bound step reads the weights
#:   once for every token in the batch, so 8 tokens cost little more than 1 (ideal 8x; half of
#:   it is what good batched kernels deliver);
#: * 32 streams >= 6x: by 32 tokens per step the arithmetic and the attention start to count;
#: * a median time to first token under 0.25 s at 8 streams: a reply that starts within a
#:   quarter of a second feels immediate.
GOALS = {"single-stream decode / llama-bench tg128": 0.90, "8 streams / single": 4.0,
         "median TTFT at 8 streams (s)": 0.25, "32 streams / single": 6.0}


def target_table(runs: Any, llama_bench_tg: float, tuned: tuple[str, ...] = ("np8-fa-bs", "np32-fa-bs"),
                 baseline: str = "defaults-np8") -> Any:
    """Each configuration against :data:`GOALS` (medians over repeats), with a last row ``goal``.

    ``llama_bench_tg`` is the engine's own decode speed (llama-bench tg128), the yardstick for
    the server's single stream; the stream ratios compare a configuration with its own single stream.
    """
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
    return pd.DataFrame([*rows, {"config": "goal", **GOALS}]).set_index("config")


def with_roofline(table: Any, gpu: str, model: str = "Qwen3-8B", quant: str = "Q5_K_M") -> Any:
    """Add each speed as a fraction of the batch-1 bandwidth roofline (:func:`helpers.speed.decode_roofline`).

    Per-stream speed can never exceed it; the aggregate can, because one read of the weights
    serves every request in the batch — that excess is what batching buys.
    """
    roof = decode_roofline(known_shape(model), quant, gpu)
    out = table.copy()
    out["per-stream / roofline"] = out["per_stream_tokens_per_s"] / roof
    out["aggregate / roofline"] = out["aggregate_tokens_per_s"] / roof
    return out


# --- server efficiency (helpers.server_efficiency) ------------------------------------------
EFFICIENCY = RECORDED.parent / "h200-efficiency-2026-11-27"


def _load(name: str, directory: str | Path = EFFICIENCY) -> Any:
    return json.loads((Path(directory) / name).read_text())


def efficiency_rows(directory: str | Path = EFFICIENCY) -> list[dict[str, Any]]:
    """Per configuration and slot count: the server's decode speed (best of its waves, all streams
    generating) against llama-batched-bench's S_TG at the same N — with the engine measured at the
    server's own prompt length (344 tokens), so both attend over the same context."""
    suite = _load("efficiency.json", directory)
    matched = {int(r["b"]): r["s_tg"] for r in _load("matched.json", directory)["bb_344"]}
    rows = []
    for run in suite["servers"]:
        best = max(w["decode_tokens_per_s"] for w in run["waves"])
        n = run["n"]
        rows.append({"config": run["name"], "n": n, "server_decode_tokens_per_s": best,
                     "engine_s_tg": matched[n], "efficiency": best / matched[n],
                     "ttft_max_s": min(w["ttft_max_s"] for w in run["waves"])})
    return rows


def quant_scaling(directory: str | Path = EFFICIENCY) -> dict[str, dict[int, float]]:
    """llama-batched-bench's aggregate decode speed per quant type and batch size."""
    return {q: {int(r["b"]): r["s_tg"] for r in rows} for q, rows in _load("quant_scaling.json", directory).items()}


def per_slot_overhead_ms(directory: str | Path = EFFICIENCY) -> dict[int, float]:
    """Extra milliseconds per decode step the server spends over the engine, per slot count."""
    out = {}
    for r in efficiency_rows(directory):
        if r["config"] == "course":
            n = r["n"]
            out[n] = (n / r["server_decode_tokens_per_s"] - n / r["engine_s_tg"]) * 1e3
    return out
