"""Reading recorded GPU runs: medians over repeats, the server's goals, fractions of the roofline.

The recorded runs are in docs/benchmarks/ (written by :mod:`helpers.gpu_suite`); notebook 06
and docs/benchmarks.md are computed from them with these functions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from helpers.model_shape import known_shape
from helpers.speed import decode_roofline

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
    roof = decode_roofline(known_shape(model), quant, gpu)
    out = table.copy()
    out["per-stream / roofline"] = out["per_stream_tokens_per_s"] / roof
    out["aggregate / roofline"] = out["aggregate_tokens_per_s"] / roof
    return out
