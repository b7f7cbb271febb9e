"""A load generator for any OpenAI-compatible server: many streamed chats at once, timed.

It uses only the standard library (``http.client`` and server-sent events), so it runs
unchanged on a bare GPU machine and adds as little client overhead as possible when 32
streams run at once. Every request asks for exactly ``max_tokens`` tokens (``ignore_eos``),
so the work per request is fixed and speeds are comparable.

Two ways to load a server, as in the serving benchmarks of vLLM (``vllm bench serve``),
GuideLLM and LLMPerf:

* **closed loop** (the default, :func:`run_level`, :func:`sweep`): *n* users, each sending
  its next request the moment the previous one ends. The concurrency is fixed; the request
  rate is whatever the server sustains. With ``requests=n`` (the default) it is one wave of
  *n* requests sent at the same instant.
* **open loop** (:func:`run_rate`, :func:`rate_sweep`): requests arrive at a fixed average
  rate, at random instants (a Poisson process: exponential gaps from a seeded generator), no
  matter how busy the server is — like independent users. If the server is too slow, the
  requests in flight pile up; ``achieved_concurrency`` shows it.

What is measured per level (each as p50/p90/p99 over the requests, :func:`percentile`):

* **TTFT** (time to first token) — request sent → first generated token. Requests beyond the
  server's slots wait in its queue, and that wait is part of their TTFT;
* **ITL** (inter-token latency) — every gap between two consecutive token chunks of a stream,
  all gaps of all requests together: what a reader sees as the pace (and the stutter) of a reply;
* **TPOT** (time per output token) — (end-to-end − TTFT) ÷ (tokens − 1), one value per request;
* **E2E** — request sent → its last byte;
* **output tokens/s** (also under the older name ``aggregate_tokens_per_s``) — all generated
  tokens ÷ the level's wall time: the server's throughput; **requests/s** — completed requests ÷ wall time;
* **per-stream tokens/s** — each request's decode speed (:class:`helpers.client.StreamClock`: first
  token to the end of its reply), averaged; next to it the server's own figure for the same requests
  (``server_per_stream_tokens_per_s``, from llama-server's ``timings``) and the median ratio of the
  two (``client_over_server_decode``, 1 when the client times well). At two streams or more it must
  stay below the throughput: :func:`sweep_problems` lists every row where it does not;
* **goodput** — requests per second that met *both* service-level objectives: TTFT ≤ ``slo.ttft_s``
  and the request's mean gap between tokens ≤ ``slo.itl_s`` (:data:`DEFAULT_SLO`). Throughput
  that only counts if the users were served well;
* ``ok`` (full length), ``incomplete`` (fewer tokens than asked) and ``failed`` (HTTP errors,
  disconnects, timeouts): failures are counted, never raised, so a server that dies mid-run
  still gives a report;
* the server's own counters, when llama-server runs with ``--metrics``: its
  ``llamacpp:tokens_predicted_total`` before and after the level (``server_tokens_predicted``),
  next to the client's count (``tokens``). They must agree: a check on the client's counting,
  recorded as ``server_tokens_match`` (None when the server has no counters).

Every level also says how many requests its percentiles come from (``samples``: those that did
not fail). With the default of one wave of *n* requests, the one-user level has one sample, and
its p50, p90 and p99 are the same number; ``requests=`` (``--requests``) gives each level more.

:func:`check_crosstalk` asks a different question — does batching change what a request
generates? The timing formula is :class:`helpers.client.StreamClock`, the same as the notebooks' chats.
"""

from __future__ import annotations

import http.client
import itertools
import json
import math
import random
import socket
import statistics
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from helpers.client import StreamClock, http_get

DEFAULT_LEVELS = (1, 2, 4, 8, 16, 32)
#: Service-level objectives for goodput: the reply starts within 2 s, and then comes at least
#: 10 tokens/s (a mean gap of 0.1 s), faster than anyone reads.
DEFAULT_SLO = {"ttft_s": 2.0, "itl_s": 0.1}
#: How the ITL objective is applied to one request (stated in every report).
ITL_RULE = "mean of the request's gaps between tokens"
#: Requests per level in open-loop (rate) mode unless told otherwise.
DEFAULT_RATE_REQUESTS = 32
PERCENTILES = (50, 90, 99)
#: Distinct prompts for :func:`check_crosstalk`; more are numbered variants of these.
CROSSTALK_PROMPTS = (
    "Why is the sky blue?",
    "Write a short poem about rain.",
    "Explain what a CPU does.",
    "Describe a cat in three sentences.",
    "What is Python used for?",
    "Give me three tips for learning to cook.",
    "Tell me about the moon.",
    "How does a bicycle work?",
)


@dataclass
class RequestTiming:
    """One streamed request as the client saw it. ``error`` is None when it ended normally."""

    ttft_s: float | None
    total_s: float
    completion_tokens: int
    decode_tokens_per_s: float | None
    prompt_tokens: int | None
    server_timings: dict[str, Any] = field(default_factory=dict)
    #: Gaps between consecutive token chunks (seconds), in order.
    itl_s: list[float] = field(default_factory=list)
    #: Chunks with text. llama-server sends one per token, but some tokens add no text of their
    #: own: part of a character whose bytes span several tokens (it waits for the whole
    #: character), or a special token such as end-of-turn, which ``ignore_eos`` lets the model
    #: generate. A proxy may merge chunks too.
    chunks: int = 0
    text: str = ""
    finish_reason: str | None = None
    error: str | None = None
    #: When it was sent (``time.monotonic()``), to place it in time among the others.
    sent_at: float = 0.0
    #: Per generated token, when asked for (``top_logprobs``): the token, its log-probability and
    #: the most likely alternatives, as llama-server sends them.
    logprobs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return self.error is not None

    @property
    def tpot_s(self) -> float | None:
        """Time per output token after the first: (end-to-end − TTFT) ÷ (tokens − 1)."""
        if self.ttft_s is None or self.completion_tokens < 2:
            return None
        return (self.total_s - self.ttft_s) / (self.completion_tokens - 1)

    @property
    def mean_itl_s(self) -> float | None:
        return statistics.fmean(self.itl_s) if self.itl_s else None


# --------------------------------------------------------------------------- statistics

def percentile(values: Iterable[float], p: float) -> float | None:
    """The ``p``-th percentile (0–100) with linear interpolation between the two nearest values.

    The same definition as ``numpy.percentile``'s default ("linear"): sort, find the rank
    ``p/100 × (n − 1)``, and interpolate between the values on either side of it. So p50 is the
    median, p0 the minimum, p100 the maximum. None for no values: no data is not zero.
    """
    xs = sorted(values)
    if not 0 <= p <= 100:
        raise ValueError(f"percentile {p} is outside 0..100")
    if not xs:
        return None
    rank = p / 100 * (len(xs) - 1)
    lo = math.floor(rank)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (rank - lo)


def distribution(values: Iterable[float]) -> dict[str, float | None]:
    """``{"p50", "p90", "p99"}`` of ``values`` (each None when there are none)."""
    xs = sorted(values)
    return {f"p{p}": percentile(xs, p) for p in PERCENTILES}


def poisson_gaps(rate: float, n: int, seed: int | None = 0) -> list[float]:
    """``n`` gaps between arrivals of a Poisson process of ``rate`` per second (exponential, mean 1/rate).

    Seeded, so a run can be repeated with the very same arrival pattern.
    """
    if not rate > 0 or math.isinf(rate):
        raise ValueError(f"rate {rate} is not a request rate; give requests per second > 0, e.g. 0.5 or 2")
    rng = random.Random(seed)
    return [rng.expovariate(rate) for _ in range(n)]


def arrival_offsets(rate: float, n: int, seed: int | None = 0) -> list[float]:
    """When each of ``n`` requests is sent, in seconds after the first (which goes at 0)."""
    return list(itertools.accumulate(poisson_gaps(rate, n - 1, seed), initial=0.0)) if n > 0 else []


def meets_slo(r: RequestTiming, slo: dict[str, float]) -> bool:
    """Did this request meet both objectives? A failed request never does.

    TTFT ≤ ``slo["ttft_s"]``, and the mean of its gaps between tokens ≤ ``slo["itl_s"]`` (a
    one-token reply has no gaps and meets the second objective by definition).
    """
    if r.failed or r.ttft_s is None or r.ttft_s > slo["ttft_s"]:
        return False
    itl = r.mean_itl_s
    return itl is None or itl <= slo["itl_s"]


def concurrency_over_time(results: Sequence[RequestTiming], wall_s: float) -> tuple[float, int]:
    """(mean, peak) number of requests in flight: total request-seconds ÷ wall time, and the maximum.

    The mean is Little's law read backwards; in open-loop mode it shows how many users the
    server was really holding at the rate offered.
    """
    if not results or wall_s <= 0:
        return 0.0, 0
    mean = sum(r.total_s for r in results) / wall_s
    events = sorted([(r.sent_at, 1) for r in results] + [(r.sent_at + r.total_s, -1) for r in results],
                    key=lambda e: (e[0], e[1]))
    peak = max(itertools.accumulate(step for _, step in events))
    return mean, peak


def summarize_level(results: Sequence[RequestTiming], wall_s: float, max_tokens: int,
                    slo: dict[str, float] | None = None) -> dict[str, Any]:
    """The report of one level from its requests: latencies, throughput, goodput, failures.

    Latencies use the requests that did not fail (``samples`` of them: with few, p99 is just the
    slowest one); ``tokens`` counts every token received (a request cut off mid-stream still
    made the server work).
    """
    slo = dict(DEFAULT_SLO, **(slo or {}))
    done = [r for r in results if not r.failed]
    failed = [r for r in results if r.failed]
    tokens = sum(r.completion_tokens for r in results)
    ttfts = [r.ttft_s for r in done if r.ttft_s is not None]
    rates = [r.decode_tokens_per_s for r in done if r.decode_tokens_per_s]
    server_rates = [r.server_timings.get("predicted_per_second") for r in done
                    if r.server_timings.get("predicted_per_second")]
    # the same request's decode speed as the client timed it and as the server did (its ``timings``)
    ratios = [r.decode_tokens_per_s / r.server_timings["predicted_per_second"] for r in done
              if r.decode_tokens_per_s and r.server_timings.get("predicted_per_second")]
    good = sum(meets_slo(r, slo) for r in results)
    chunks = sum(r.chunks for r in done)
    mean_conc, peak_conc = concurrency_over_time(results, wall_s)
    ttft = distribution(ttfts)
    per_s = (lambda x: x / wall_s) if wall_s > 0 else (lambda x: 0.0)
    return {
        "requests": len(results),
        "ok": sum(r.completion_tokens >= max_tokens for r in done),
        "incomplete": sum(r.completion_tokens < max_tokens for r in done),
        "failed": len(failed),
        "samples": len(done),
        "errors": dict(Counter(r.error.split(":", 1)[0] for r in failed)),
        "tokens": tokens,
        "wall_s": wall_s,
        "output_tokens_per_s": per_s(tokens),
        "aggregate_tokens_per_s": per_s(tokens),
        "requests_per_s": per_s(len(done)),
        "goodput": per_s(good),
        "slo_met": good,
        "ttft_s": ttft,
        "itl_s": distribution(g for r in done for g in r.itl_s),
        "tpot_s": distribution(r.tpot_s for r in done if r.tpot_s is not None),
        "e2e_s": distribution(r.total_s for r in done),
        # above 1, some gaps between chunks span several tokens, and ITL exceeds TPOT
        "tokens_per_chunk": sum(r.completion_tokens for r in done) / chunks if chunks else None,
        "achieved_concurrency": mean_conc,
        "peak_concurrency": peak_conc,
        "per_stream_tokens_per_s": statistics.mean(rates) if rates else None,
        "server_per_stream_tokens_per_s": statistics.mean(server_rates) if server_rates else None,
        "client_over_server_decode": statistics.median(ratios) if ratios else None,
        "ttft_median_s": ttft["p50"],
        "ttft_p90_s": ttft["p90"],
        "ttft_mean_s": statistics.mean(ttfts) if ttfts else None,
        "all_full_length": bool(results) and all(not r.failed and r.completion_tokens == max_tokens
                                                 for r in results),
    }


# --------------------------------------------------------------------------- one request

def check_url(base_url: str, timeout_s: float = 10.0) -> None:
    """Fail with one line, before any request, if ``base_url`` is malformed or nothing listens there.

    A sweep otherwise dies on its first request with a bare ``Connection refused`` that names
    neither the address nor the usual cause: no server was started.
    """
    url = urllib.parse.urlsplit(str(base_url).strip())
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ValueError(f"{base_url!r} is not a server address; give its base URL, e.g. http://127.0.0.1:8080 "
                         "or https://<workspace>--llamacpp-server-serve.modal.run (without /v1)")
    try:
        port = url.port or (443 if url.scheme == "https" else 80)
    except ValueError:
        raise ValueError(f"{base_url!r} has an invalid port; give a number from 1 to 65535") from None
    try:
        socket.create_connection((url.hostname, port), timeout=timeout_s).close()
    except OSError as exc:
        reason = exc.strerror or exc.__class__.__name__
        raise ConnectionError(f"no server answers at {base_url} ({reason}); check the address, or start a server "
                              "(`python -m helpers serve`, or deploy the Modal server) and pass its URL") from None


def measure_request(base_url: str, prompt: str, max_tokens: int, api_key: str | None = None,
                    timeout_s: float = 600, *, ignore_eos: bool = True, temperature: float | None = None,
                    seed: int | None = None, cache_prompt: bool | None = None,
                    top_logprobs: int | None = None) -> RequestTiming:
    """One streamed chat completion, timed on the client side; never raises for the server's failures.

    An HTTP error, a refused or dropped connection, a stream that ends without ``[DONE]``, an
    error event inside the stream, or no end after ``timeout_s`` seconds all come back as
    ``error`` ("kind: detail"), with whatever arrived before.
    """
    url = urllib.parse.urlsplit(base_url.rstrip("/") + "/v1/chat/completions")
    payload: dict[str, Any] = {
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens, "stream": True,
        "stream_options": {"include_usage": True},
        "chat_template_kwargs": {"enable_thinking": False},
    }
    if ignore_eos:
        payload["ignore_eos"] = True
    if temperature is not None:
        payload["temperature"] = temperature
    if seed is not None:
        payload["seed"] = seed
    if cache_prompt is not None:
        payload["cache_prompt"] = cache_prompt
    if top_logprobs is not None:
        payload.update(logprobs=True, top_logprobs=top_logprobs)
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    conn_cls = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
    clock = StreamClock()
    arrivals: list[float] = []
    pieces: list[str] = []
    logprobs: list[dict[str, Any]] = []
    usage: dict[str, Any] = {}
    timings: dict[str, Any] = {}
    finish_reason = None
    error = None
    conn = conn_cls(url.hostname, url.port, timeout=timeout_s)
    try:
        conn.request("POST", url.path, body=json.dumps(payload), headers=headers)
        resp = conn.getresponse()
        if resp.status != 200:
            error = f"HTTP {resp.status}: {resp.read()[:300].decode(errors='replace')}"
        else:
            error = "disconnected: the stream ended before [DONE]"
            for raw in resp:
                if time.monotonic() - clock.started > timeout_s:
                    error = f"timeout: no end after {timeout_s:g} s"
                    break
                line = raw.strip()
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    error = None
                    break
                event = json.loads(data)
                if event.get("error"):
                    error = f"stream error: {json.dumps(event['error'])[:300]}"
                    break
                usage = event.get("usage") or usage
                timings = event.get("timings") or timings
                for choice in event.get("choices", []):
                    delta = choice.get("delta") or {}
                    piece = (delta.get("reasoning_content") or "") + (delta.get("content") or "")
                    if piece:
                        clock.tick()
                        arrivals.append(clock.last)
                        pieces.append(piece)
                    if choice.get("finish_reason"):
                        finish_reason = choice["finish_reason"]
                        clock.finish()
                    logprobs += (choice.get("logprobs") or {}).get("content") or []
    except (OSError, http.client.HTTPException, ValueError) as exc:
        kind = "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__
        error = f"{kind}: {str(exc)[:300] or kind}"
    finally:
        conn.close()
    total = time.monotonic() - clock.started
    n = int(usage.get("completion_tokens") or clock.chunks)
    return RequestTiming(clock.ttft_s, total, n, clock.tokens_per_s(n), usage.get("prompt_tokens"), timings,
                         itl_s=[b - a for a, b in itertools.pairwise(arrivals)], text="".join(pieces),
                         finish_reason=finish_reason, error=error, sent_at=clock.started, logprobs=logprobs,
                         chunks=clock.chunks)


def stream_request(base_url: str, prompt: str, max_tokens: int, api_key: str | None = None,
                   timeout_s: float = 600, **options: Any) -> RequestTiming:
    """:func:`measure_request`, but a failed request raises ``RuntimeError`` (for single calls)."""
    r = measure_request(base_url, prompt, max_tokens, api_key, timeout_s, **options)
    if r.failed:
        raise RuntimeError(f"{base_url} answered {r.error}")
    return r


def _prompt(i: int, words: int) -> str:
    # Different first words: no two requests share a cached prompt prefix.
    return f"Request {i}: " + " ".join(["tell me about memory bandwidth"] * max(1, words // 5))


# --------------------------------------------------------------------------- the server's own counters

def _get(base_url: str, path: str, api_key: str | None, timeout_s: float = 10.0) -> str | None:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    status, body = http_get(base_url.rstrip("/") + path, headers=headers, timeout_s=timeout_s)
    return body if status == 200 else None


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text (``# HELP``/``# TYPE`` comments, then ``name value`` lines) as a dict.

    Names lose llama-server's ``llamacpp:`` prefix; labelled series (``name{label="…"} value``)
    are left out, since the counters compared here have none.
    """
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or "{" in line or not line.strip():
            continue
        name, _, value = line.strip().rpartition(" ")
        try:
            values[name.strip().removeprefix("llamacpp:")] = float(value)
        except ValueError:
            continue
    return values


def read_metrics(base_url: str, api_key: str | None = None) -> dict[str, float] | None:
    """llama-server's Prometheus counters (``/metrics``), or None when the server does not offer them.

    llama-server answers 501 unless it was started with ``--metrics``; other OpenAI-compatible
    servers may have no such page. llama-server prints the values with six significant digits,
    so from a million tokens on its counts are rounded (and a level's difference is approximate).
    """
    text = _get(base_url, "/metrics", api_key)
    return (parse_metrics(text) or None) if text is not None else None


def read_slots(base_url: str, api_key: str | None = None) -> list[dict[str, Any]] | None:
    """llama-server's ``/slots`` (one entry per slot: ``n_ctx``, ``is_processing``…), or None."""
    text = _get(base_url, "/slots", api_key)
    try:
        slots = json.loads(text) if text is not None else None
    except ValueError:
        return None
    return slots if isinstance(slots, list) else None


def server_info(base_url: str, api_key: str | None = None) -> dict[str, Any]:
    """What the server says about itself: its slots and whether it exposes ``/metrics``."""
    slots = read_slots(base_url, api_key)
    return {"metrics": read_metrics(base_url, api_key) is not None,
            "slots": len(slots) if slots else None,
            "n_ctx_per_slot": slots[0].get("n_ctx") if slots else None}


def _idle_metrics(base_url: str, api_key: str | None, timeout_s: float = 10.0) -> dict[str, float] | None:
    """``/metrics`` once no request is processing (a dropped stream can keep its slot busy a moment).

    llama-server adds a request's generated tokens to its counter when the slot is released.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        m = read_metrics(base_url, api_key)
        if m is None or not m.get("requests_processing") or time.monotonic() > deadline:
            return m
        time.sleep(0.05)


def counter_deltas(before: dict[str, float] | None, after: dict[str, float] | None) -> dict[str, Any]:
    """What the server counted during a level; every value None without counters on both sides."""
    def delta(name: str) -> int | None:
        if before is None or after is None or name not in before or name not in after:
            return None
        return round(after[name] - before[name])

    busy = None
    decodes = delta("n_decode_total")
    if decodes:
        # the gauge is busy slots ÷ decode calls since start; undo the division on both sides
        busy = (after["n_busy_slots_per_decode"] * after["n_decode_total"]
                - before["n_busy_slots_per_decode"] * before["n_decode_total"]) / decodes
    return {"server_tokens_predicted": delta("tokens_predicted_total"),
            "server_prompt_tokens": delta("prompt_tokens_total"),
            "server_prompt_tokens_cached": delta("prompt_tokens_cached_total"),
            "server_decode_calls": decodes,
            "server_busy_slots_per_decode": busy}


def _print_slack(value: float) -> float:
    """How far a counter llama-server printed with six significant digits can be from the truth."""
    return 0.0 if abs(value) < 1e6 else 0.5 * 10 ** (math.floor(math.log10(abs(value))) - 5)


def server_tokens_match(client_tokens: int, before: dict[str, float] | None,
                        after: dict[str, float] | None) -> bool | None:
    """Did the server generate as many tokens during a level as the client received? None without counters.

    A mismatch means the client miscounted (or another client used the server meanwhile). From
    a million tokens on, the printed counters are rounded, and the comparison allows for that.
    """
    server = counter_deltas(before, after)["server_tokens_predicted"]
    if server is None or before is None or after is None:
        return None
    slack = _print_slack(before["tokens_predicted_total"]) + _print_slack(after["tokens_predicted_total"])
    return abs(server - client_tokens) <= slack


# --------------------------------------------------------------------------- levels

def _run_measured(base_url: str, api_key: str | None, max_tokens: int, slo: dict[str, float] | None,
                  counters: bool, run: Callable[[], list[RequestTiming]]) -> dict[str, Any]:
    before = read_metrics(base_url, api_key) if counters else None
    started = time.monotonic()
    results = run()
    wall = time.monotonic() - started
    row = summarize_level(results, wall, max_tokens, slo)
    after = _idle_metrics(base_url, api_key) if before is not None else None
    row.update(counter_deltas(before, after))
    row["server_tokens_match"] = server_tokens_match(row["tokens"], before, after)
    return row


def _tick(progress: Any) -> Callable[[RequestTiming], None]:
    """A callback advancing a tqdm bar by one request, safe to call from many threads at once."""
    lock = threading.Lock()

    def done(r: RequestTiming) -> None:
        if progress is not None:
            with lock:
                progress.update(1)

    return done


def run_level(base_url: str, n: int, max_tokens: int, api_key: str | None = None, prompt_words: int = 30,
              start_index: int = 0, *, requests: int | None = None, slo: dict[str, float] | None = None,
              timeout_s: float = 600, counters: bool = True, progress: Any = None) -> dict[str, Any]:
    """Closed loop: ``n`` users, each sending its next request when its last one ends, ``requests`` in all.

    ``requests=None`` sends exactly ``n`` — one wave, all at the same instant. ``progress`` is
    a tqdm bar (or None) advanced once per request.
    """
    total = n if requests is None else requests
    done = _tick(progress)
    results: list[RequestTiming | None] = [None] * total
    claim = itertools.count()
    lock = threading.Lock()

    def user() -> None:
        while True:
            with lock:
                i = next(claim)
            if i >= total:
                return
            results[i] = measure_request(base_url, _prompt(start_index + i, prompt_words), max_tokens, api_key,
                                         timeout_s)
            done(results[i])

    def run() -> list[RequestTiming]:
        with ThreadPoolExecutor(max_workers=n) as pool:
            for f in [pool.submit(user) for _ in range(n)]:
                f.result()
        return [r for r in results if r is not None]

    return {"concurrency": n, **_run_measured(base_url, api_key, max_tokens, slo, counters, run)}


def run_rate(base_url: str, rate: float, requests: int, max_tokens: int, api_key: str | None = None,
             prompt_words: int = 30, start_index: int = 0, *, seed: int | None = 0,
             slo: dict[str, float] | None = None, timeout_s: float = 600, counters: bool = True,
             progress: Any = None) -> dict[str, Any]:
    """Open loop: ``requests`` requests at Poisson arrivals of ``rate`` per second, whatever the server does."""
    offsets = arrival_offsets(rate, requests, seed)
    done = _tick(progress)

    def one(i: int) -> RequestTiming:
        r = measure_request(base_url, _prompt(start_index + i, prompt_words), max_tokens, api_key, timeout_s)
        done(r)
        return r

    def run() -> list[RequestTiming]:
        with ThreadPoolExecutor(max_workers=max(1, requests)) as pool:
            t0 = time.monotonic()
            futures = []
            for i, offset in enumerate(offsets):
                time.sleep(max(0.0, t0 + offset - time.monotonic()))
                futures.append(pool.submit(one, i))
            return [f.result() for f in futures]

    return {"rate": rate, **_run_measured(base_url, api_key, max_tokens, slo, counters, run)}


def _progress_bar(total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    # on stderr, and only for runs longer than a second: short ones stay quiet
    return tqdm(total=total, desc=desc, unit="req", delay=1.0, leave=False)


def _warm_up(base_url: str, api_key: str | None, max_tokens: int, warmup: int, timeout_s: float,
             slots: int = 0) -> None:
    """Requests before the measured ones, so that no level pays for a first time; a failure stops the run.

    First ``warmup`` short requests one after the other (the very first pays for loading and
    caches). Then, with ``slots``, one wave of that many requests at once, each ``max_tokens``
    long: llama-server gives a new prompt to the slot it used least recently, so a sweep meets
    every slot in turn, and a slot's first request runs slower (its part of the KV cache is
    touched for the first time: memory the system hands out page by page). Measured on 2 CPU
    cores: the first request of each of 8 fresh slots decoded at about a third of the speed of
    the requests after them — enough to make a sweep's first levels look slow and the later
    ones look like a speed-up.
    """
    for i in range(warmup):
        r = measure_request(base_url, _prompt(10_000 + i, 30), min(max_tokens, 16), api_key, timeout_s)
        if r.failed:
            hint = "; check --api-key" if r.error.startswith("HTTP 401") else ""
            raise ConnectionError(f"the warm-up request to {base_url} failed: {r.error}{hint}")
    if warmup and slots > 0:
        with ThreadPoolExecutor(max_workers=slots) as pool:
            wave = list(pool.map(lambda i: measure_request(base_url, _prompt(20_000 + i, 30), max_tokens, api_key,
                                                           timeout_s), range(slots)))
        failed = next((r for r in wave if r.failed), None)
        if failed is not None:
            raise ConnectionError(f"a warm-up request to {base_url} failed: {failed.error}")


def _median_round(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median throughput (the lower middle one of an even count), whole.

    One real run rather than a median per column: its numbers were measured together, so they
    stay consistent with each other (per-stream speed, throughput and TTFT of the same requests).
    """
    ranked = sorted(runs, key=lambda r: r["aggregate_tokens_per_s"])
    chosen = dict(ranked[(len(ranked) - 1) // 2])
    chosen["rounds"] = len(runs)
    chosen["aggregate_tokens_per_s_rounds"] = [r["aggregate_tokens_per_s"] for r in runs]
    return chosen


def sweep(base_url: str, levels: Sequence[int] = DEFAULT_LEVELS, max_tokens: int = 128,
          api_key: str | None = None, warmup: int = 2, progress: bool = True, *, requests: int | None = None,
          slo: dict[str, float] | None = None, timeout_s: float = 600, counters: bool = True, rounds: int = 1
          ) -> list[dict[str, Any]]:
    """Warm up, then one closed-loop :func:`run_level` per concurrency level; one row per level.

    ``requests`` per level (default: one wave of *n*). Each row has ``speedup_vs_single``: its
    throughput over the one-stream level's.

    The warm-up ends with one request per slot of the server (:func:`_warm_up`), so that no
    level pays for a slot's first use. ``rounds`` > 1 runs all the levels that many times, one
    level after the other in every round (1, 2, 4, 1, 2, 4, …): anything else the machine does
    meanwhile then falls on every level alike instead of on one of them. Each row is the round
    with the median throughput (``aggregate_tokens_per_s_rounds`` lists them all).
    """
    if rounds < 1:
        raise ValueError(f"rounds must be a whole number >= 1, got {rounds}")
    check_url(base_url)
    slots = (server_info(base_url, api_key)["slots"] or max(levels, default=1)) if warmup else 0
    _warm_up(base_url, api_key, max_tokens, warmup, timeout_s, slots=slots)
    counts = [n if requests is None else requests for n in levels]
    bar = _progress_bar(sum(counts) * rounds, "concurrency sweep", progress)
    runs: list[list[dict[str, Any]]] = [[] for _ in levels]
    offset = 0
    try:
        for _ in range(rounds):
            for i, (n, count) in enumerate(zip(levels, counts, strict=True)):
                if bar is not None:
                    bar.set_postfix(concurrency=n, refresh=False)
                runs[i].append(run_level(base_url, n, max_tokens, api_key, start_index=offset, requests=requests,
                                         slo=slo, timeout_s=timeout_s, counters=counters, progress=bar))
                offset += count
    finally:
        if bar is not None:
            bar.close()
    rows = [_median_round(r) for r in runs]
    single = next((r for r in rows if r["concurrency"] == 1), None)
    for r in rows:
        base = single["aggregate_tokens_per_s"] if single else 0
        r["speedup_vs_single"] = r["aggregate_tokens_per_s"] / base if base else None
    return rows


def sweep_problems(rows: Sequence[dict[str, Any]], *, decode_tolerance: float = 0.15) -> list[str]:
    """What in a sweep's rows cannot be right, one line each; an empty list when nothing is wrong.

    * a request that failed or came back short: the levels did not do the same work;
    * **one stream faster than all of them together**: at two or more streams, each stream's
      decode speed must stay below the level's throughput, since the streams share the
      server. A row that breaks this timed something else than decoding — levels so short that
      a prompt's processing, a slot's first use or a pause of the machine filled most of them;
    * a ``speedup_vs_single`` that is not the throughput over the one-stream level's;
    * the client's decode speed more than ``decode_tolerance`` away from the server's own
      (``timings.predicted_per_second``), when the server reports it: a client that timed
      late chunks, or chunks that arrived in bursts.
    """
    problems = []
    single = next((r for r in rows if r["concurrency"] == 1), None)
    for r in rows:
        n = r["concurrency"]
        if r.get("failed") or r.get("incomplete"):
            problems.append(f"{n} streams: {r['failed']} failed and {r['incomplete']} short "
                            f"of {r['requests']} requests")
        per_stream, total = r.get("per_stream_tokens_per_s"), r["aggregate_tokens_per_s"]
        if n >= 2 and per_stream is not None and per_stream > total:
            problems.append(f"{n} streams: one stream decoded at {per_stream:.1f} tokens/s, faster than all {n} "
                            f"together ({total:.1f}): the level timed something else than decoding")
        if single is not None and r.get("speedup_vs_single") is not None and single["aggregate_tokens_per_s"]:
            expected = total / single["aggregate_tokens_per_s"]
            if not math.isclose(r["speedup_vs_single"], expected, rel_tol=1e-3):
                problems.append(f"{n} streams: speed-up {r['speedup_vs_single']:.2f} is not the throughput ratio "
                                f"{expected:.2f}")
        ratio = r.get("client_over_server_decode")
        if ratio is not None and abs(ratio - 1) > decode_tolerance:
            problems.append(f"{n} streams: the client timed decoding at {ratio:.2f}x the server's own speed")
    return problems


#: The live sweep on this machine's CPU (notebook 06, section 2), sized so that what it shows holds on
#: a 2-core laptop and on a 16-core server alike: the synthetic Qwen3 (every request runs to its full
#: length, no download), **one** CPU thread for llama-server, 128 tokens a request, three interleaved
#: rounds. Why each choice, in :func:`cpu_sweep`.
CPU_SWEEP: dict[str, Any] = {"model": "synthetic", "threads": 1, "levels": (1, 2, 4), "max_tokens": 128,
                             "rounds": 3}


def cpu_sweep(model: str = CPU_SWEEP["model"], *, threads: int = CPU_SWEEP["threads"],
              levels: Sequence[int] = CPU_SWEEP["levels"], max_tokens: int = CPU_SWEEP["max_tokens"],
              rounds: int = CPU_SWEEP["rounds"], progress: bool = False, **server: Any) -> list[dict[str, Any]]:
    """Start a local llama-server with the course's settings, :func:`sweep` it, stop it; the sweep's rows.

    Why these defaults (:data:`CPU_SWEEP`):

    * **one thread.** llama.cpp's CPU threads wait for each other after every operation of the
      model by spinning, not sleeping. When they outnumber the free cores — the load generator
      needs one too, and other programs run — a thread that lost its core holds all the others
      up, step after step: on 2 busy cores a decode step of the tiny model took 0.5 s instead
      of 1 ms. One thread has no one to wait for, and it leaves the other cores to the client,
      so the shape of the result is the same on any machine; only the speeds differ.
    * **128 tokens a request.** With 32, a level lasts a few tens of milliseconds: the prompt's
      processing and any pause of the machine then outweigh the decoding being measured.
    * **three rounds, interleaved**, each level reported from its median round (:func:`sweep`).

    ``server`` passes other settings to :func:`helpers.backend.serve` (``parallel=4``…).
    """
    from helpers import backend

    with backend.serve(backend="local", model=model, threads=threads, **server) as endpoint:
        return sweep(endpoint.base_url, levels, max_tokens, endpoint.api_key, progress=progress, rounds=rounds)


def rate_sweep(base_url: str, rates: Sequence[float], requests: int = DEFAULT_RATE_REQUESTS, max_tokens: int = 128,
               api_key: str | None = None, warmup: int = 2, progress: bool = True, *, seed: int | None = 0,
               slo: dict[str, float] | None = None, timeout_s: float = 600, counters: bool = True
               ) -> list[dict[str, Any]]:
    """Warm up, then one open-loop :func:`run_rate` per request rate; one row per rate."""
    check_url(base_url)
    for rate in rates:
        poisson_gaps(rate, 0)  # refuse a bad rate before any request
    slots = (server_info(base_url, api_key)["slots"] or 1) if warmup else 0
    _warm_up(base_url, api_key, max_tokens, warmup, timeout_s, slots=slots)
    bar = _progress_bar(requests * len(rates), "rate sweep", progress)
    rows = []
    try:
        for i, rate in enumerate(rates):
            if bar is not None:
                bar.set_postfix(rate=rate, refresh=False)
            rows.append(run_rate(base_url, rate, requests, max_tokens, api_key, start_index=i * requests,
                                 seed=None if seed is None else seed + i, slo=slo, timeout_s=timeout_s,
                                 counters=counters, progress=bar))
    finally:
        if bar is not None:
            bar.close()
    return rows


# --------------------------------------------------------------------------- cross-talk

def _crosstalk_prompt(i: int) -> str:
    base = CROSSTALK_PROMPTS[i % len(CROSSTALK_PROMPTS)]
    return base if i < len(CROSSTALK_PROMPTS) else f"{base} (variant {i // len(CROSSTALK_PROMPTS)})"


def _first_difference(a: str, b: str) -> int | None:
    if a == b:
        return None
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def split_token(solo: list[dict[str, Any]], other_text: str, at: int) -> dict[str, Any] | None:
    """At which of the solo reply's tokens did ``other_text`` (which differs from character ``at``) leave it?

    ``solo`` are the solo reply's tokens with their two most likely candidates (``top_logprobs``).
    The answer names both candidates, how far apart their log-probabilities were, and whether
    the other reply took the runner-up: a gap of a few thousandths that the other reply
    crossed is a near-tie decided by rounding, not a leak between requests. None if the
    tokens do not cover character ``at``.
    """
    starts = list(itertools.accumulate((len(t.get("token", "")) for t in solo), initial=0))
    containing = next((i for i in range(len(solo)) if starts[i] <= at < starts[i + 1]), None)
    if containing is None:
        return None
    # if the split falls on a token boundary, the token before may be a prefix of the other reply's token
    candidates = [containing] + ([containing - 1] if containing and starts[containing] == at else [])

    def describe(i: int) -> dict[str, Any] | None:
        top = solo[i].get("top_logprobs") or []
        if len(top) < 2:
            return None
        return {"token_index": i, "solo_token": top[0]["token"], "runner_up": top[1]["token"],
                "logprob_gap": top[0]["logprob"] - top[1]["logprob"],
                "other_took_runner_up": other_text[starts[i]:].startswith(top[1]["token"])}

    found = [d for d in map(describe, candidates) if d is not None]
    return next((d for d in found if d["other_took_runner_up"]), found[0] if found else None)


def check_crosstalk(base_url: str, prompts: int | Sequence[str] = 4, max_tokens: int = 64,
                    api_key: str | None = None, seed: int = 42, timeout_s: float = 600) -> dict[str, Any]:
    """Does serving requests together change what each one generates? Solo runs against one concurrent run.

    Each of K distinct prompts (a number picks from :data:`CROSSTALK_PROMPTS`) is first sent
    alone, one after the other, then all K at the same instant, greedy (temperature 0) with a
    fixed seed and ``cache_prompt`` off, so every token — prompt and reply — is computed again
    inside the shared batch. A server whose slots leaked into each other (a mixed-up KV cache,
    a shared sampler) would change the replies.

    Identical replies are the expected result, but not a law: a batch of several requests is
    multiplied with other kernels, which add the same numbers in another order, and
    floating-point addition is not associative. Where the two most likely next tokens are
    nearly tied, a last-bit difference picks the other one — after which the two replies go
    their own ways. So each difference is reported, not hidden: where it starts, and (from a
    solo rerun with ``top_logprobs``) the two candidates at that token and the gap between
    their log-probabilities. A tiny gap that the concurrent reply crossed to the runner-up is
    rounding; replies that differ from their first tokens, or at tokens the model was sure
    of, point to a real bug.
    """
    texts = list(prompts) if not isinstance(prompts, int) else [_crosstalk_prompt(i) for i in range(prompts)]
    if not texts:
        raise ValueError("check_crosstalk needs at least one prompt; give prompts >= 1")
    if len(set(texts)) != len(texts):
        raise ValueError("check_crosstalk's prompts must be distinct; a repeated prompt cannot show cross-talk")

    def ask(prompt: str, top_logprobs: int | None = None) -> RequestTiming:
        return measure_request(base_url, prompt, max_tokens, api_key, timeout_s, ignore_eos=False,
                               temperature=0.0, seed=seed, cache_prompt=False, top_logprobs=top_logprobs)

    solo = [ask(p) for p in texts]
    with ThreadPoolExecutor(max_workers=len(texts)) as pool:
        together = list(pool.map(ask, texts))
    failed = sum(a.failed or b.failed for a, b in zip(solo, together, strict=True))
    differences = []
    for prompt, a, b in zip(texts, solo, together, strict=True):
        at = _first_difference(a.text, b.text)
        if at is None or a.failed or b.failed:
            continue
        again = ask(prompt, top_logprobs=2)  # alone again, with the candidates of every token
        split = split_token(again.logprobs, b.text, at) if again.text == a.text else None
        differences.append({"prompt": prompt, "first_difference_at_char": at,
                            "solo": a.text[max(0, at - 20):at + 40], "concurrent": b.text[max(0, at - 20):at + 40],
                            "split": split})
    identical = sum(not (a.failed or b.failed) and a.text == b.text for a, b in zip(solo, together, strict=True))
    return {"prompts": len(texts), "identical": identical, "failed": failed, "max_tokens": max_tokens,
            "temperature": 0.0, "seed": seed,
            "tokens": [b.completion_tokens for b in together], "differences": differences}


# --------------------------------------------------------------------------- the whole benchmark

def benchmark(base_url: str, *, levels: Sequence[int] = DEFAULT_LEVELS, rates: Sequence[float] | None = None,
              max_tokens: int = 128, requests: int | None = None, api_key: str | None = None, seed: int = 0,
              slo: dict[str, float] | None = None, crosstalk: int | None = None, timeout_s: float = 600,
              warmup: int = 2, progress: bool = True) -> dict[str, Any]:
    """``python -m helpers bench``: a closed-loop sweep (or, with ``rates``, an open-loop one) as one object.

    ``{"mode", "url", "max_tokens", "slo", "server", "levels": [...]}``, plus ``crosstalk`` when
    ``crosstalk`` (a number of prompts) is given.
    """
    slo = dict(DEFAULT_SLO, **(slo or {}))
    check_url(base_url)
    info = server_info(base_url, api_key)
    common = {"max_tokens": max_tokens, "api_key": api_key, "warmup": warmup, "progress": progress, "slo": slo,
              "timeout_s": timeout_s, "counters": info["metrics"]}
    if rates:
        n = DEFAULT_RATE_REQUESTS if requests is None else requests
        rows = rate_sweep(base_url, rates, n, seed=seed, **common)
        mode = {"mode": "rate", "requests_per_level": n, "seed": seed}
    else:
        rows = sweep(base_url, levels, requests=requests, **common)
        mode = {"mode": "concurrency", "requests_per_level": requests}
    report = {**mode, "url": base_url, "max_tokens": max_tokens, "slo": {**slo, "itl_rule": ITL_RULE},
              "server": info, "levels": rows}
    if crosstalk:
        report["crosstalk"] = check_crosstalk(base_url, crosstalk, api_key=api_key, timeout_s=timeout_s)
    return report


#: Below this many requests a level's percentiles are a handful of values; the table says so.
FEW_SAMPLES = 10


def _server_tokens_cell(r: dict[str, Any]) -> str:
    if r["server_tokens_predicted"] is None:
        return "-"
    return f"{r['server_tokens_predicted']}{'!' if r.get('server_tokens_match') is False else ''}"


def _fmt(x: float | None, scale: float = 1.0, digits: int = 0) -> str:
    return "-" if x is None else f"{x * scale:,.{digits}f}"


def render_table(report: dict[str, Any]) -> str:
    """The report as a table for a terminal: one line per level (times in milliseconds)."""
    key = "rate" if report.get("mode") == "rate" else "concurrency"
    head = (f"{'rate/s' if key == 'rate' else 'users':>7} {'ok':>4} {'short':>5} {'fail':>4} {'tok/s':>8} "
            f"{'req/s':>6} {'good/s':>6} {'TTFT p50':>9} {'p99':>7} {'ITL p50':>8} {'p99':>6} {'TPOT p50':>9} "
            f"{'E2E p50':>8} {'in flight':>9} {'server tok':>10}")
    lines = [head]
    for r in report["levels"]:
        lines.append(
            f"{r[key]:>7g} {r['ok']:>4} {r['incomplete']:>5} {r['failed']:>4} "
            f"{_fmt(r['output_tokens_per_s'], 1, 1):>8} "
            f"{_fmt(r['requests_per_s'], 1, 2):>6} {_fmt(r['goodput'], 1, 2):>6} "
            f"{_fmt(r['ttft_s']['p50'], 1e3):>9} {_fmt(r['ttft_s']['p99'], 1e3):>7} "
            f"{_fmt(r['itl_s']['p50'], 1e3, 1):>8} {_fmt(r['itl_s']['p99'], 1e3, 1):>6} "
            f"{_fmt(r['tpot_s']['p50'], 1e3, 1):>9} {_fmt(r['e2e_s']['p50'], 1e3):>8} "
            f"{_fmt(r['achieved_concurrency'], 1, 1):>9} "
            f"{_server_tokens_cell(r):>10}")
    slo = report["slo"]
    lines.append(f"times in ms; good/s = requests/s with TTFT <= {slo['ttft_s']:g} s and {slo['itl_rule']} "
                 f"<= {slo['itl_s']:g} s; tok/s counts {report['max_tokens']} tokens per request")
    if any(r["samples"] < FEW_SAMPLES for r in report["levels"]):
        lines.append(f"percentiles from fewer than {FEW_SAMPLES} requests: use --requests N")
    mismatched = [f"{r[key]:g}" for r in report["levels"] if r.get("server_tokens_match") is False]
    if mismatched:
        lines.append(f"server tok marked !: the server's count differs from the client's at {', '.join(mismatched)} "
                     f"{'requests/s' if key == 'rate' else 'users'} (another client on the server, or a miscount)")
    if not report["server"]["metrics"]:
        lines.append("server tok: start llama-server with --metrics to compare its own token count")
    if "crosstalk" in report:
        c = report["crosstalk"]
        lines.append(f"cross-talk: {c['identical']} of {c['prompts']} replies identical alone and together"
                     + (f" ({c['failed']} failed)" if c["failed"] else ""))
        for d in c["differences"]:
            lines.append(f"  {d['prompt']!r} differs from character {d['first_difference_at_char']}: "
                         f"solo {d['solo']!r}, together {d['concurrent']!r}")
            if d["split"]:
                sp = d["split"]
                lines.append(f"    at token {sp['token_index']} the solo run's top two were {sp['solo_token']!r} and "
                             f"{sp['runner_up']!r}, {sp['logprob_gap']:.4f} apart in log-probability"
                             + ("; together it took the runner-up" if sp["other_took_runner_up"] else ""))
    return "\n".join(lines)
