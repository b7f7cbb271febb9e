"""What the prose of notebooks 07 and 08 (and their solutions) says about the cold start, the bill and capacity,
recomputed from the same helpers — so that a change of a source or a price cannot leave the prose behind."""

from __future__ import annotations

import inspect
import math

import modal
import pytest

from helpers import coldstart, traffic
from helpers.model_shape import known_shape
from helpers.speed import expected_decode_tps

BUDGET = coldstart.model_cold_start_budget("Qwen3-8B", "Q5_K_M", "L4")
L4_TPS = expected_decode_tps(known_shape("Qwen3-8B"), "Q5_K_M", "L4")
CLASS = traffic.Traffic(30 * 30, 300)  # 30 learners, one 300-token request each per 2 minutes
DEMO = traffic.Traffic(36_000, 300)
ASSUMPTIONS = (("L4", "none"), ("L4", "h200"), ("L4", "perfect"), ("H200", "h200"))


def _sizes(pattern: traffic.Traffic) -> dict[tuple[str, str], traffic.Sizing]:
    return {(gpu, a): traffic.size_pattern(pattern, gpu, 8, assumption=a) for gpu, a in ASSUMPTIONS}


# --- notebook 07, section 2 ---------------------------------------------------------------

def test_nb07_the_volume_is_the_biggest_stage_and_the_copy_the_next():
    ordered = sorted(BUDGET.stages, key=lambda s: s.value_s, reverse=True)
    assert [s.key for s in ordered[:2]] == ["volume", "copy"]


def test_nb07_pageable_copies_are_less_than_a_sixth_of_pinned_ones():
    cuda = coldstart.recorded_cuda_init()
    assert cuda["pinned"].median / cuda["pageable"].median > 6


def test_nb07_the_widest_ranges_are_the_gpu_the_volume_and_the_client():
    widest = sorted(BUDGET.stages, key=lambda s: s.high_s - s.low_s, reverse=True)[:3]
    assert {s.key for s in widest} == {"container", "volume", "retry"}


def test_nb07_where_the_article_is_wrong():
    """CUDA takes a fraction of a second, the container about one; the file is most of the cold start; the
    article's numbers leave about 8 s, inside the budget's range."""
    assert BUDGET.stage("cuda").high_s < 1.0 and BUDGET.container_start_s == pytest.approx(1.0)
    assert BUDGET.volume_read_s + BUDGET.host_to_device_s > 0.5 * BUDGET.total_s
    check = coldstart.article_check(BUDGET)
    assert round(check.implied_cold_start_s) == 8 and BUDGET.low_s < 8 < BUDGET.high_s


def test_nb07_web_server_has_a_startup_timeout_of_5_s():
    """The prose: both `@modal.web_server` and `@app.server` take `startup_timeout` (5 s by default for the first)."""
    assert inspect.signature(modal.web_server).parameters["startup_timeout"].default == 5.0
    assert "startup_timeout" in inspect.signature(modal.App.server).parameters


def test_nb07_solutions_only_the_byte_stages_differ_between_quantizations():
    small, big = (coldstart.model_cold_start_budget("Qwen3-8B", q, "L4") for q in ("Q4_K_M", "Q8_0"))
    changed = [s.key for s, t in zip(small.stages, big.stages, strict=True) if abs(s.value_s - t.value_s) > 0.05]
    assert changed == ["volume", "copy"] and big.total_s > small.total_s
    assert 0 < big.warmup_s - small.warmup_s < 0.05  # the warm-up's decode step: hundredths of a second


def test_nb07_solutions_a_snapshot_restores_more_than_the_file():
    assert coldstart.snapshot_gpu_bytes() > BUDGET.model_bytes > coldstart.snapshot_gpu_bytes(n_ctx=4096) / 2


# --- notebook 08, section 2: the bill --------------------------------------------------------

def test_nb08_the_bill_by_hand_is_the_helpers():
    lam = 10 / 3600
    s, w, c = 300 / L4_TPS, 300, BUDGET.total_s
    p, q = math.exp(-lam * (s + w)), math.exp(-lam * (s + w + c))
    f = p / (1 - q + p)
    bill = traffic.hourly_bill(traffic.Traffic(10, 300), "L4", L4_TPS, cold_start_s=c, scaledown_s=w)
    assert bill.billed_s_per_hour == pytest.approx(10 * (f * (1 - q) + (1 - f) * (1 - p)) / lam)
    assert bill.cold_starts_per_hour == pytest.approx(10 * f)


def test_nb08_low_traffic_pays_hundreds_per_million_and_the_price_falls_with_traffic():
    costs = [traffic.hourly_bill(traffic.Traffic(r, 300), "L4", L4_TPS, cold_start_s=BUDGET.total_s,
                                 scaledown_s=300).usd_per_million_tokens for r in (1, 10, 60, 300)]
    assert costs[0] >= 100 and costs == sorted(costs, reverse=True)


def test_nb08_the_cold_start_barely_moves_the_bill():
    for r in (1, 10, 60, 300):
        t = traffic.Traffic(r, 300)
        value, high = (traffic.hourly_bill(t, "L4", L4_TPS, cold_start_s=c, scaledown_s=300).usd_per_hour
                       for c in (BUDGET.total_s, BUDGET.high_s))
        assert high <= value * 1.1


# --- notebook 08, section 3: capacity -------------------------------------------------------

def test_nb08_one_l4_stream_cannot_serve_the_class():
    assert CLASS.rate_per_s * CLASS.output_tokens > L4_TPS


def test_nb08_the_class_needs_one_to_three_l4s_or_one_h200_with_room_to_spare():
    sizes = _sizes(CLASS)
    l4 = [sizes[("L4", a)].capacity.containers for a in ("none", "h200", "perfect")]
    assert l4 == sorted(l4, reverse=True) and (min(l4), max(l4)) == (1, 3)
    h200 = sizes[("H200", "h200")]
    assert h200.capacity.containers == 1 and h200.capacity.in_flight_p99 < 8
    assert h200.label.startswith("measured")
    assert all(sizes[("L4", a)].label.startswith("measured (the article") for a in ("none", "h200", "perfect"))
    # the L4s are the cheaper choice per hour
    assert max(sizes[("L4", a)].usd_per_hour for a in ("none", "h200", "perfect")) < h200.usd_per_hour


def test_nb08_a_public_demo_needs_tens_of_l4s_or_a_handful_of_h200s():
    sizes = _sizes(DEMO)
    assert all(sizes[("L4", a)].capacity.containers >= 10 for a in ("none", "h200", "perfect"))
    assert 2 <= sizes[("H200", "h200")].capacity.containers <= 9


def test_nb08_solutions_thinking_replies_need_more_than_one_l4_and_one_h200():
    sizes = _sizes(traffic.Traffic(30 * 30, 1000))
    assert all(sizes[("L4", a)].capacity.containers > 1 for a in ("none", "h200", "perfect"))
    assert sizes[("H200", "h200")].capacity.containers == 1


def test_nb08_solutions_a_shorter_window_is_cheaper_until_the_container_never_stops():
    for r in (1, 6, 30, 120):
        t = traffic.Traffic(r, 300)
        long, short = (traffic.hourly_bill(t, "L4", L4_TPS, cold_start_s=BUDGET.total_s, scaledown_s=w)
                       for w in (300, 60))
        assert short.usd_per_million_tokens < long.usd_per_million_tokens
        assert short.cold_starts_per_hour >= long.cold_starts_per_hour - 0.01
