"""The server-efficiency measurement: its parsing, its decode window, one real run, the recorded H200 data."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from helpers import bench_analysis, server_efficiency

TABLE = """
|    PP |     TG |    B |   N_KV |   T_PP s | S_PP t/s |   T_TG s | S_TG t/s |      T s |    S t/s |
|-------|--------|------|--------|----------|----------|----------|----------|----------|----------|
|   128 |    128 |    1 |    256 |    0.039 |  3267.64 |    0.525 |   243.69 |    0.564 |   453.72 |
|   128 |    128 |   32 |   8192 |    0.426 |  9606.75 |    1.342 |  3053.22 |    1.768 |  4633.54 |
"""


def test_batched_bench_table_is_parsed():
    rows = server_efficiency.parse_batched_bench("main: n_kv_max = 8448\n" + TABLE)
    assert [(r["b"], r["s_tg"]) for r in rows] == [(1.0, 243.69), (32.0, 3053.22)]


def test_the_decode_window_counts_only_what_all_streams_share():
    # two streams: one starts at 0 (tokens every 0.1 s), one at 0.5 s; both end at 1.0 s
    a = SimpleNamespace(sent_at=0.0, ttft_s=0.0, itl_s=[0.1] * 10)
    b = SimpleNamespace(sent_at=0.0, ttft_s=0.5, itl_s=[0.1] * 5)
    w = server_efficiency.decode_window([a, b])
    assert w["window_s"] == pytest.approx(0.5) and w["tokens"] == 10  # 5 each in (0.5, 1.0]
    assert w["tokens_per_s"] == pytest.approx(20)


@pytest.mark.llama
@pytest.mark.usefixtures("no_orphans")
def test_a_server_run_on_this_cpu(tiny_model):
    run = server_efficiency.server_run(str(tiny_model), 2, {"flash_attn": "on"}, n_gen=24, prompt_words=16, repeats=1)
    (wave,) = run["waves"]
    assert wave["failed"] == 0 and wave["tokens"] == 48 and wave["decode_tokens_per_s"] > 0
    assert "--parallel" in run["command"] and run["command"][run["command"].index("--parallel") + 1] == "2"


def test_the_recorded_h200_efficiency():
    rows = {(r["config"], r["n"]): r for r in bench_analysis.efficiency_rows()}
    course = [rows[("course", n)]["efficiency"] for n in (1, 8, 32)]
    assert course == sorted(course, reverse=True) and course[0] > 0.9 and course[2] < 0.7
    assert all(rows[("course", n)]["efficiency"] > rows[("cpu-sampling", n)]["efficiency"] for n in (1, 8, 32))
    overhead = bench_analysis.per_slot_overhead_ms()
    assert 0.1 < overhead[32] / 32 < 0.3  # about 0.19 ms per slot and step
    scaling = bench_analysis.quant_scaling()
    assert scaling["Q8_0"][8] / scaling["Q8_0"][1] > 4 > scaling["Q5_K_M"][8] / scaling["Q5_K_M"][1]
