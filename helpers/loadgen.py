"""A load generator for any OpenAI-compatible server: many streamed chats at once, timed.

It uses only the standard library (``http.client`` and server-sent events), so it runs
unchanged on a bare GPU machine and adds as little client overhead as possible when 32
streams run at once. Every request asks for exactly ``max_tokens`` tokens (``ignore_eos``),
so the work per request is fixed and speeds are comparable.

What is measured, per concurrency level *n* (n requests sent at the same instant):

* **aggregate tokens/s** — all generated tokens ÷ wall time: the server's throughput. The wall
  time includes the prompts and the first tokens, so at one stream it is below the stream's
  own decode speed;
* **per-stream tokens/s** — each request's decode speed after its first token (the client's
  clock; ``server_per_stream_tokens_per_s`` is llama-server's own figure for the same thing);
* **time to first token** (TTFT) — request sent → first generated token, median and p90.
  Requests beyond the server's slots wait in its queue, and that wait is part of their TTFT.

The timing formula is :class:`helpers.client.StreamClock`, the same as the notebooks' chats.
"""

from __future__ import annotations

import http.client
import json
import socket
import statistics
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from helpers.client import StreamClock

DEFAULT_LEVELS = (1, 2, 4, 8, 16, 32)


@dataclass
class RequestTiming:
    ttft_s: float | None
    total_s: float
    completion_tokens: int
    decode_tokens_per_s: float | None
    prompt_tokens: int | None
    server_timings: dict[str, Any] = field(default_factory=dict)


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
    clock = StreamClock()
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
                    clock.tick()
    finally:
        conn.close()
    total = time.monotonic() - clock.started
    n = int(usage.get("completion_tokens") or clock.chunks)
    return RequestTiming(clock.ttft_s, total, n, clock.tokens_per_s(n), usage.get("prompt_tokens"), timings)


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
    check_url(base_url)
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
