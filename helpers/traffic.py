"""What a traffic pattern costs on Modal, and how many containers it needs.

``speed.cost_per_million_tokens`` assumes a GPU generating all the time. A real endpoint is idle
most of the hour, and on Modal an idle container is either gone (``min_containers=0``: the next
request pays a cold start) or billed while it waits (``scaledown_window`` after each request,
or all day with ``min_containers=1``). This module prices a traffic pattern — requests per hour
arriving at random (a Poisson process), tokens per request — with those rules:

* a container starts when a request finds none (a **cold start**: ``cold_start_s`` billed before
  the first token), serves, and stops ``scaledown_s`` after its last request ends;
* with one container serving requests that rarely overlap, a request keeps it up for K = service
  + window (+ the cold start, if it had to start one): the container is billed for the gap to
  the next arrival if that gap is shorter than K, else for K, and the next request pays a cold
  start. With arrival rate λ a gap exceeds K with probability e^(−λK), so a warm request is
  followed by a cold one with p = e^(−λ(S+W)), a cold one with q = e^(−λ(S+W+C)); the share of
  cold requests is f = p / (1 − q + p), and the expected billed seconds per request (the mean of
  min(gap, K)) are ``(f·(1 − q) + (1 − f)·(1 − p)) / λ``;
* ``min_containers=1`` bills the whole hour and pays no cold starts.

Capacity comes from Little's law: requests in flight = arrival rate × time each spends. A
container holds as many at once as it can serve within the latency objective (measured); the
count of containers covers the 99th percentile of requests in flight, since Poisson arrivals
bunch up. That is what Modal's autoscaler does for you (``@modal.concurrent`` sets how many
inputs a container takes), so the numbers say how many GPUs a pattern keeps busy.
:func:`size_pattern` does it on a GPU type: one stream's speed from :mod:`helpers.speed` (measured
or predicted, and labeled so), and how the streams share the GPU from the course's H200
measurement or from a stated assumption where nothing was measured (:func:`batch_scaling`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from helpers.gpus import gpu_cost_usd, gpu_spec


@dataclass(frozen=True)
class Traffic:
    """A steady pattern: ``requests_per_hour`` arriving at random, ``output_tokens`` each."""

    requests_per_hour: float
    output_tokens: int

    def __post_init__(self) -> None:
        if self.requests_per_hour <= 0 or self.output_tokens <= 0:
            raise ValueError("requests_per_hour and output_tokens must be positive")

    @property
    def rate_per_s(self) -> float:
        return self.requests_per_hour / 3600


@dataclass(frozen=True)
class Bill:
    """One hour of a traffic pattern on one GPU type."""

    gpu: str
    billed_s_per_hour: float
    cold_starts_per_hour: float
    tokens_per_hour: float
    generating_s_per_hour: float
    usd_per_hour: float

    @property
    def usd_per_million_tokens(self) -> float:
        return self.usd_per_hour / self.tokens_per_hour * 1e6

    @property
    def busy_fraction(self) -> float:
        """Share of the billed time spent generating (the rest is cold starts and idle windows)."""
        return min(1.0, self.generating_s_per_hour / self.billed_s_per_hour) if self.billed_s_per_hour else 0.0


def service_s(traffic: Traffic, tokens_per_s: float, ttft_s: float = 0.0) -> float:
    """Seconds one request keeps a container busy: first token + the rest at ``tokens_per_s``."""
    return ttft_s + traffic.output_tokens / tokens_per_s


def course_cold_start_s(gpu: str = "L4") -> float:
    """The course's cold start of Qwen3-8B Q5_K_M on ``gpu`` (:func:`helpers.coldstart.model_cold_start_budget`)."""
    from helpers.coldstart import model_cold_start_budget

    return model_cold_start_budget("Qwen3-8B", "Q5_K_M", gpu).total_s


def hourly_bill(traffic: Traffic, gpu: str, tokens_per_s: float, *, cold_start_s: float | None = None,
                scaledown_s: float, min_containers: int = 0, ttft_s: float = 0.0) -> Bill:
    """Expected GPU bill of one hour of ``traffic`` served by one container at a time (low traffic).

    ``tokens_per_s`` is one stream's decode speed; ``cold_start_s`` defaults to the course's cold-start
    budget on ``gpu`` (:func:`course_cold_start_s`), so a bill and a notebook never use two different
    cold starts. For traffic that keeps more than one container busy, use :func:`containers_needed`
    first; this model is for the single-container regime where scale-to-zero matters.
    """
    if cold_start_s is None:
        cold_start_s = course_cold_start_s(gpu)
    if min_containers < 0 or cold_start_s < 0 or scaledown_s < 0:
        raise ValueError("min_containers, cold_start_s and scaledown_s must be 0 or more")
    lam = traffic.rate_per_s
    service = service_s(traffic, tokens_per_s, ttft_s)
    if min_containers >= 1:
        billed, colds = 3600.0 * min_containers, 0.0
    else:
        p = math.exp(-lam * (service + scaledown_s))
        q = math.exp(-lam * (service + scaledown_s + cold_start_s))
        f = p / (1 - q + p)
        per_request = (f * (1 - q) + (1 - f) * (1 - p)) / lam
        billed = traffic.requests_per_hour * per_request
        colds = traffic.requests_per_hour * f
    tokens = traffic.requests_per_hour * traffic.output_tokens
    generating = traffic.requests_per_hour * service
    return Bill(gpu_spec(gpu).name, billed, colds, tokens, generating, gpu_cost_usd(gpu, billed))


def break_even_requests_per_hour(output_tokens: int, gpu: str, tokens_per_s: float, *,
                                 cold_start_s: float | None = None, scaledown_s: float, within: float = 0.95) -> float:
    """The traffic above which scale-to-zero already bills ``within`` of an always-warm container.

    Beyond it ``min_containers=1`` costs at most ``1 − within`` more and removes the cold
    starts; below it, keeping a container warm mostly pays for idle time. (Money alone never
    favours a warm container: scale-to-zero bills at most the same hour.)
    """
    if cold_start_s is None:
        cold_start_s = course_cold_start_s(gpu)
    lo, hi = 1e-3, 1e7
    for _ in range(200):
        mid = math.sqrt(lo * hi)
        bill = hourly_bill(Traffic(mid, output_tokens), gpu, tokens_per_s, cold_start_s=cold_start_s,
                           scaledown_s=scaledown_s)
        if bill.billed_s_per_hour >= within * 3600:
            hi = mid
        else:
            lo = mid
    return hi


def poisson_quantile(mean: float, q: float = 0.99) -> int:
    """Smallest k with P(N ≤ k) ≥ q for N ~ Poisson(mean): requests in flight at a busy moment."""
    if mean <= 0:
        return 0
    k, term = 0, math.exp(-mean)
    total = term
    while total < q:
        k += 1
        term *= mean / k
        total += term
    return k


@dataclass(frozen=True)
class Capacity:
    in_flight_mean: float  # Little's law: arrivals per second × seconds per request
    in_flight_p99: int
    per_container: int  # concurrent requests one container serves within the latency objective
    containers: int


def containers_needed(traffic: Traffic, seconds_per_request: float, per_container: int, q: float = 0.99) -> Capacity:
    """Containers that serve ``traffic`` with ``per_container`` requests each, ``q`` of the time.

    ``seconds_per_request`` is the end-to-end time of one request *at that concurrency* (it
    grows with concurrency: streams share the GPU), and ``per_container`` the concurrency at
    which the measured latency still meets the objective.
    """
    if per_container < 1 or seconds_per_request <= 0:
        raise ValueError("per_container must be at least 1 and seconds_per_request positive")
    mean = traffic.rate_per_s * seconds_per_request
    p = poisson_quantile(mean, q)
    return Capacity(mean, p, per_container, max(1, math.ceil(p / per_container)))


# --- sizing a pattern on a GPU ------------------------------------------------------------

#: How an L4's aggregate decode speed grows with the number of streams is not measured token by token:
#: the course has no run of its server on an L4 with many streams. Three labeled assumptions bound it:
#: ``"none"`` — no batching gain (N streams share one stream's speed: the lower bound);
#: ``"h200"`` — the course server's measured scaling on the H200 (aggregate at N ÷ at 1 stream);
#: ``"perfect"`` — every stream as fast as one alone (the upper bound, never reached).
#: The article's own L4 observation is a rough check of them (:func:`article_batch_gain`).
SCALING_ASSUMPTIONS = ("none", "h200", "perfect")

#: The article's L4 (section "Concurrency"): "≈10–23 s per request across 1–8 concurrent requests", for
#: Qwen3-8B Q5_K_M behind llama-server. Concurrent requests → seconds per request. The article does not
#: give the requests' token counts.
ARTICLE_CONCURRENCY_S = {1: 10.0, 8: 23.0}


def article_batch_gain() -> float:
    """The aggregate speed-up at 8 streams that the article's L4 latencies imply: 8 × 10 s ÷ 23 s ≈ 3.5.

    A rough check, not a measurement of the scaling: it holds only if the replies at 1 and at 8
    concurrent requests had about the same length, which the article does not say (Qwen3's replies,
    thinking included, vary). With no batching gain 8 requests would take 8 × 10 = 80 s each; with
    perfect batching 10 s.
    """
    (n1, t1), (n8, t8) = sorted(ARTICLE_CONCURRENCY_S.items())
    return (n8 / t8) / (n1 / t1)


def _course_server_decode_tps() -> dict[int, float]:
    """The course server's recorded aggregate decode speed on the H200, by stream count (course settings)."""
    from helpers.bench_analysis import efficiency_rows

    return {r["n"]: r["server_decode_tokens_per_s"] for r in efficiency_rows() if r["config"] == "course"}


def batch_scaling(n: int, assumption: str = "h200") -> float:
    """Aggregate decode speed at ``n`` streams ÷ the speed of one stream, under ``assumption``.

    ``"h200"`` reads the course server's recorded runs (``helpers.bench_analysis.efficiency_rows``,
    course settings), so it exists only for the recorded stream counts (1, 8, 32).
    """
    if assumption not in SCALING_ASSUMPTIONS:
        raise ValueError(f"assumption must be one of {SCALING_ASSUMPTIONS}, got {assumption!r}")
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a whole number of streams >= 1, got {n!r}")
    if assumption == "none":
        return 1.0
    if assumption == "perfect":
        return float(n)
    rows = _course_server_decode_tps()
    if n not in rows:
        raise ValueError(f"the H200's scaling was measured at {sorted(rows)} streams, not {n}; pick one of those")
    return rows[n] / rows[1]


@dataclass(frozen=True)
class Sizing:
    """A traffic pattern sized on one GPU type with ``slots`` streams per container."""

    gpu: str
    slots: int
    per_stream_tps: float  # each stream's decode speed with all slots busy
    seconds_per_request: float  # output tokens ÷ per-stream speed (decode only)
    capacity: Capacity
    usd_per_hour: float  # every container billed for the hour
    label: str  # where the speed comes from: measured or predicted, and the assumption

    @property
    def aggregate_tps(self) -> float:
        return self.per_stream_tps * self.slots


def size_pattern(traffic: Traffic, gpu: str, slots: int, *, assumption: str = "h200",
                 model: str = "Qwen3-8B", quant: str = "Q5_K_M") -> Sizing:
    """How many ``gpu`` containers of ``slots`` streams serve ``traffic`` (Little's law, 99th percentile).

    One stream's speed is :func:`helpers.speed.expected_decode_tps` (labeled by
    :func:`helpers.speed.speed_label`); with every slot busy the streams share
    ``batch_scaling(slots, assumption)`` times that speed. On the H200 with ``assumption="h200"``
    the course server's measured aggregate is used as it is. Seconds per request count decoding
    only: a short prompt's first token adds well under a second.
    """
    from helpers.model_shape import known_shape
    from helpers.speed import expected_decode_tps, speed_label

    measured_here = gpu_spec(gpu).name == "H200" and assumption == "h200" and (model, quant) == ("Qwen3-8B", "Q5_K_M")
    if measured_here:  # the course server's own aggregate at this many streams
        batch_scaling(slots, assumption)  # refuses a stream count that was not measured
        per_stream = _course_server_decode_tps()[slots] / slots
    else:
        per_stream = expected_decode_tps(known_shape(model), quant, gpu) * batch_scaling(slots, assumption) / slots
    seconds = traffic.output_tokens / per_stream
    cap = containers_needed(traffic, seconds, slots)
    how = {"none": "no batching gain assumed", "h200": "the H200's measured batch scaling",
           "perfect": "perfect batching assumed"}[assumption]
    if measured_here:
        label = f"measured (the course's H200 server runs, {slots} streams, docs/benchmarks/h200-efficiency-2026-11-27)"
    else:
        # The per-stream speed with every slot busy is never a measurement here: one stream's speed times an
        # assumed scaling. Say "predicted" first, then where the one-stream figure comes from.
        label = f"predicted: one stream {speed_label(gpu, quant)}; {slots} streams: {how}"
    return Sizing(gpu_spec(gpu).name, slots, per_stream, seconds, cap, gpu_cost_usd(gpu, 3600) * cap.containers, label)
