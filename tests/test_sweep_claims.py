"""The live CPU sweep of notebook 06 (section 2), run exactly as the notebook runs it, and every claim its text makes.

The sweep's speeds are this machine's and are not compared with stored numbers; what the
notebook *says* about them must hold on any machine — a 2-core laptop, a busy CI runner, a
16-core server — and is checked here on the machine that runs the tests:

* every request ran to its full length (so every level did the same work per request);
* at two streams or more, one stream decodes slower than all of them together, and the
  streams' speeds add up to at least the throughput (they share it);
* one core does every stream's arithmetic, so the throughput at 4 streams stays far from 4x the
  single stream's (a GPU, section 3, comes close to it), each stream gets slower, and the time to
  the first token grows (the prompts share the core too);
* the client's timing of decoding agrees with llama-server's own (``timings.predicted_per_second``);
* the speed-up column is the throughput over the one-stream level's.
"""

from __future__ import annotations

import pytest

from helpers import loadgen

pytestmark = [pytest.mark.llama, pytest.mark.usefixtures("no_orphans")]

#: "Far from proportional": the throughput at 4 streams stays below this multiple of one stream's. Measured:
#: 0.4-1.5x on 2 cores busy with other programs (which cause the spread), 1.2-1.45x on 16 idle cores;
#: the recorded H200 runs of section 3 reach 3.5x and more.
FAR_FROM_PROPORTIONAL = 3.0


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return loadgen.cpu_sweep()  # exactly the notebook's call: the defaults are the notebook's sweep


def test_the_notebook_runs_the_sweep_designed_for_a_cpu(rows):
    assert loadgen.CPU_SWEEP == {"model": "synthetic", "threads": 1, "levels": (1, 2, 4), "max_tokens": 128,
                                 "rounds": 3}
    assert [r["concurrency"] for r in rows] == [1, 2, 4] and all(r["rounds"] == 3 for r in rows)


def test_every_request_ran_to_its_full_length(rows):
    for r in rows:
        assert r["all_full_length"] and (r["ok"], r["failed"], r["incomplete"]) == (r["concurrency"], 0, 0), r
        assert r["tokens"] == 128 * r["concurrency"]


def test_nothing_in_the_sweep_is_impossible(rows):
    """No stream faster than all streams together, a consistent speed-up, the client's timing the server's."""
    assert loadgen.sweep_problems(rows) == []


def test_the_streams_share_the_throughput(rows):
    for r in rows[1:]:
        n, per_stream, total = r["concurrency"], r["per_stream_tokens_per_s"], r["aggregate_tokens_per_s"]
        assert per_stream < total, r
        # each stream's decode window lies inside the level, so n streams' speeds add up to at least the total
        assert n * per_stream >= total * 127 / 128, r


def test_one_core_shares_itself_between_the_streams(rows):
    single, most = rows[0], rows[-1]
    assert most["concurrency"] == 4
    assert most["aggregate_tokens_per_s"] < FAR_FROM_PROPORTIONAL * single["aggregate_tokens_per_s"], rows
    assert most["per_stream_tokens_per_s"] < single["per_stream_tokens_per_s"], rows
    assert most["ttft_s"]["p50"] > single["ttft_s"]["p50"], rows
    for r in rows:
        assert r["speedup_vs_single"] == pytest.approx(r["aggregate_tokens_per_s"] / single["aggregate_tokens_per_s"])


def test_the_client_times_decoding_as_the_server_does(rows):
    for r in rows:
        assert r["client_over_server_decode"] == pytest.approx(1.0, abs=0.15), r
        assert r["per_stream_tokens_per_s"] == pytest.approx(r["server_per_stream_tokens_per_s"], rel=0.15), r
