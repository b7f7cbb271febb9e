"""The cost of a traffic pattern on Modal, checked against a simulation of the same rules."""

from __future__ import annotations

import math
import random

import pytest

from helpers.gpus import gpu_cost_usd
from helpers.traffic import (
    Traffic,
    break_even_requests_per_hour,
    containers_needed,
    hourly_bill,
    poisson_quantile,
)


def simulate_billed_s(traffic: Traffic, service: float, window: float, cold: float, hours: int, seed: int = 1):
    """Poisson arrivals; a container lives from a cold start until `window` after the last request ends."""
    rng = random.Random(seed)
    t, up_until, billed, colds = 0.0, -1.0, 0.0, 0
    end = hours * 3600.0
    while True:
        t += rng.expovariate(traffic.rate_per_s)
        if t > end:
            break
        if t > up_until:  # the container is gone: a cold start, then the request
            colds += 1
            billed += cold + service + window
            up_until = t + cold + service + window
        else:  # it extends the running container
            new_until = max(up_until, t + service + window)
            billed += new_until - up_until
            up_until = new_until
    return billed / hours, colds / hours


@pytest.mark.parametrize("per_hour", [2, 20, 200])
def test_the_bill_matches_a_simulation(per_hour):
    traffic = Traffic(per_hour, 300)
    bill = hourly_bill(traffic, "L4", 40.0, cold_start_s=30, scaledown_s=120)
    billed, colds = simulate_billed_s(traffic, 300 / 40.0, 120, 30, hours=3000)
    assert bill.billed_s_per_hour == pytest.approx(billed, rel=0.05)
    assert bill.cold_starts_per_hour == pytest.approx(colds, rel=0.05, abs=0.05)


def test_idle_time_is_what_low_traffic_pays_for():
    low = hourly_bill(Traffic(1, 300), "L4", 40.0, cold_start_s=40, scaledown_s=300)
    busy_gpu = gpu_cost_usd("L4", 1e6 / 40.0)  # the "always generating" price of 1M tokens
    assert low.usd_per_million_tokens > 10 * busy_gpu and low.busy_fraction < 0.1
    warm = hourly_bill(Traffic(1, 300), "L4", 40.0, cold_start_s=40, scaledown_s=300, min_containers=1)
    assert warm.billed_s_per_hour == 3600 and warm.cold_starts_per_hour == 0
    costs = [hourly_bill(Traffic(r, 300), "L4", 40.0, cold_start_s=40, scaledown_s=300).usd_per_million_tokens
             for r in (1, 10, 100, 1000)]
    assert costs == sorted(costs, reverse=True)


def test_break_even_for_a_warm_container():
    r = break_even_requests_per_hour(300, "L4", 40.0, cold_start_s=40, scaledown_s=300)
    at = hourly_bill(Traffic(r, 300), "L4", 40.0, cold_start_s=40, scaledown_s=300)
    assert at.billed_s_per_hour == pytest.approx(0.95 * 3600, rel=1e-3)
    shorter = break_even_requests_per_hour(300, "L4", 40.0, cold_start_s=40, scaledown_s=60)
    assert shorter > r  # a shorter window needs more traffic to stay up


def test_capacity_from_littles_law():
    assert [poisson_quantile(m, 0.99) for m in (0, 1, 10)] == [0, 4, 18]
    cdf = sum(math.exp(-10) * 10**k / math.factorial(k) for k in range(19))
    assert cdf >= 0.99 > cdf - math.exp(-10) * 10**18 / math.factorial(18)
    cap = containers_needed(Traffic(36_000, 300), seconds_per_request=10.0, per_container=8)
    assert cap.in_flight_mean == pytest.approx(100) and cap.containers == math.ceil(cap.in_flight_p99 / 8)
    with pytest.raises(ValueError):
        containers_needed(Traffic(1, 1), 1.0, 0)


def test_batch_scaling_bounds_the_unmeasured_l4():
    from helpers.traffic import batch_scaling

    assert batch_scaling(8, "none") == 1.0 and batch_scaling(8, "perfect") == 8.0
    measured = batch_scaling(8, "h200")
    assert 1.0 < measured < 8.0 and batch_scaling(1, "h200") == 1.0
    with pytest.raises(ValueError, match="measured at"):
        batch_scaling(4, "h200")
    with pytest.raises(ValueError, match="assumption"):
        batch_scaling(8, "optimistic")


def test_sizing_labels_each_speed_and_follows_littles_law():
    from helpers.model_shape import known_shape
    from helpers.speed import expected_decode_tps
    from helpers.traffic import size_pattern

    pattern = Traffic(900, 300)
    l4 = size_pattern(pattern, "L4", 8, assumption="none")
    assert l4.per_stream_tps == pytest.approx(expected_decode_tps(known_shape("Qwen3-8B"), "Q5_K_M", "L4") / 8)
    assert l4.capacity.in_flight_mean == pytest.approx(pattern.rate_per_s * l4.seconds_per_request)
    assert "no batching gain assumed" in l4.label and l4.aggregate_tps == pytest.approx(8 * l4.per_stream_tps)
    assert l4.usd_per_hour == pytest.approx(gpu_cost_usd("L4", 3600) * l4.capacity.containers)
    h200 = size_pattern(pattern, "H200", 8)
    assert h200.label.startswith("measured") and h200.per_stream_tps > l4.per_stream_tps


def test_the_bill_uses_the_course_cold_start_unless_told_otherwise():
    from helpers.coldstart import model_cold_start_budget

    t = Traffic(10, 300)
    default = hourly_bill(t, "L4", 40.0, scaledown_s=300)
    explicit = hourly_bill(t, "L4", 40.0, scaledown_s=300,
                           cold_start_s=model_cold_start_budget("Qwen3-8B", "Q5_K_M", "L4").total_s)
    assert default == explicit
