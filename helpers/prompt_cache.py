"""Prompt caching in a multi-turn chat: what llama-server reuses, and what defeats it.

A chat API is stateless: every turn sends the whole conversation again. llama-server keeps
each slot's KV cache after a reply, and with ``cache_prompt`` (on by default) a new request
that starts with the same tokens reuses them: only the new turn is processed. Turn after turn,
the prompt grows but the work per turn does not.

Two things defeat it:

* **a different prefix.** Reuse is by common prefix: drop the oldest turn to stay inside the
  context (a sliding window) and every token after the change must be processed again.
  ``--cache-reuse N`` lets llama-server find chunks of at least N tokens that moved and shift
  them in the cache instead;
* **a different cache.** Each llama-server — each Modal container — has its own. A follow-up
  that lands on another container starts from nothing; on Modal that happens whenever more
  than one container serves.

The measurements read llama-server's own per-request ``timings``: ``prompt_n`` tokens processed,
``cache_n`` tokens reused and ``prompt_ms``. The token counts are exact and repeatable; the
milliseconds are this machine's.
"""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass
from typing import Any

#: Filler that makes each user turn long enough for prompt processing to show.
_TOPICS = ("memory bandwidth", "the KV cache", "quantization", "flash attention", "batching", "cold starts",
           "prompt caching", "GPU prices")


@dataclass(frozen=True)
class Turn:
    turn: int
    messages: int
    prompt_tokens: int  # the whole conversation, as tokenized by the server
    processed: int  # prompt_n: tokens the server had to compute
    reused: int  # cache_n: tokens taken from the slot's cache
    prompt_ms: float


def user_turn(i: int, words: int = 60) -> str:
    topic = _TOPICS[i % len(_TOPICS)]
    return f"Question {i + 1}, about {topic}: " + " ".join([f"explain {topic} in plain words"] * max(1, words // 5))


def chat_once(base_url: str, messages: list[dict[str, str]], *, max_tokens: int = 16, cache_prompt: bool = True,
              api_key: str | None = None, timeout_s: float = 120) -> dict[str, Any]:
    """One non-streamed, greedy chat completion; returns llama-server's JSON answer."""
    body = {"messages": messages, "max_tokens": max_tokens, "temperature": 0, "cache_prompt": cache_prompt,
            "chat_template_kwargs": {"enable_thinking": False}}
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    request = urllib.request.Request(base_url.rstrip("/") + "/v1/chat/completions", json.dumps(body).encode(),
                                     headers)
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        return json.loads(response.read())


def conversation(base_url: str, turns: int = 6, *, cache_prompt: bool = True, keep_turns: int | None = None,
                 words: int = 60, max_tokens: int = 16, api_key: str | None = None) -> list[Turn]:
    """A chat of ``turns`` user turns, each sending the whole history (or, with ``keep_turns``, only
    the last ``keep_turns`` exchanges: a sliding window that changes the prompt's prefix)."""
    history: list[dict[str, str]] = []
    out = []
    for i in range(turns):
        history.append({"role": "user", "content": user_turn(i, words)})
        sent = history if keep_turns is None else history[-(2 * keep_turns - 1):]
        answer = chat_once(base_url, sent, max_tokens=max_tokens, cache_prompt=cache_prompt, api_key=api_key)
        t = answer.get("timings", {})
        out.append(Turn(i + 1, len(sent), int(answer["usage"]["prompt_tokens"]), int(t.get("prompt_n", 0)),
                        int(t.get("cache_n", 0)), float(t.get("prompt_ms", 0.0))))
        history.append({"role": "assistant", "content": answer["choices"][0]["message"]["content"] or ""})
    return out


def table(turns: list[Turn], times: bool = False) -> str:
    """Plain text, one row per turn (``times``: add the milliseconds, which vary by machine)."""
    head = f"{'turn':>4}{'messages':>9}{'prompt':>8}{'processed':>10}{'reused':>8}" + (f"{'ms':>8}" if times else "")
    rows = [f"{t.turn:>4}{t.messages:>9}{t.prompt_tokens:>8}{t.processed:>10}{t.reused:>8}"
            + (f"{t.prompt_ms:>8.1f}" if times else "") for t in turns]
    return "\n".join([head, *rows])
