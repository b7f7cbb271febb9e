"""Talk to a running llama-server — local or on Modal — like any OpenAI-compatible API.

Two things are specific to llama-server and worth teaching:

* ``/health`` answers **503 while the model is loading** and 200 once it can serve. A
  client that connects too early must wait and retry rather than fail; on Modal a cold
  container makes this wait visible (seconds to minutes). Every other endpoint, ``/v1/…``
  included, answers the same 503 ``Loading model`` until then, so :func:`stream_chat` retries
  such a request until a deadline (:func:`retry_while_loading`) instead of failing.
* Qwen3 "thinks" before answering. llama-server splits the ``<think>…</think>`` part off
  into ``reasoning_content``, so a streamed reply has two channels; we keep them apart.
"""

from __future__ import annotations

import random
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from helpers.errors import ServerStartError

T = TypeVar("T")


def wait_until_ready(
    base_url: str,
    *,
    timeout_s: float = 120.0,
    is_alive: Callable[[], bool] | None = None,
    describe_failure: Callable[[], str] | None = None,
    api_key: str | None = None,
    poll_s: float = 0.05,
    max_poll_s: float = 2.0,
) -> float:
    """Poll ``{base_url}/health`` until it answers 200; return the seconds waited.

    503 (loading) and refused connections mean "not yet": we retry with a growing pause
    (``poll_s`` doubling up to ``max_poll_s``). ``is_alive`` lets a local caller stop
    waiting the moment its process dies; ``describe_failure`` adds e.g. a log tail to the
    error. Anything else — a 401, a 404 — is an error at once, since waiting won't fix it.
    """
    url = base_url.rstrip("/") + "/health"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    started = time.monotonic()
    pause = poll_s
    last = "no answer yet"

    def fail(reason: str) -> ServerStartError:
        detail = describe_failure() if describe_failure else ""
        return ServerStartError(f"llama-server at {base_url} {reason}", log_tail=detail)

    while True:
        if is_alive is not None and not is_alive():
            raise fail("exited before it became ready")
        status, body = http_get(url, headers=headers, timeout_s=max(5.0, max_poll_s))
        if status == 200:
            return time.monotonic() - started
        if status == 503:
            last = "503 (model still loading)"
        elif status is None:
            last = body  # connection refused / reset: the port is not open yet
        else:
            raise fail(f"answered /health with HTTP {status}: {body[:200]}")
        elapsed = time.monotonic() - started
        if elapsed > timeout_s:
            raise fail(f"was not ready after {timeout_s:.0f} s (last answer: {last}). "
                       "A big model on a cold machine can need longer: raise timeout_s.")
        time.sleep(min(pause, max(0.0, timeout_s - elapsed)))
        pause = min(pause * 2, max_poll_s)


def http_get(url: str, headers: dict[str, str] | None = None, timeout_s: float = 5.0) -> tuple[int | None, str]:
    """GET with the standard library: ``(status, body)``, or ``(None, reason)`` if unreachable.

    Plain ``urllib`` keeps readiness checks free of any HTTP-library version question.
    """
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return None, f"{type(exc).__name__}: {reason}"


#: How long :func:`stream_chat` keeps retrying a request that meets a loading server. A cold
#: Modal container reads and loads the 5.85 GB model in seconds (docs/cold_starts.md); five
#: minutes leave room for a slow volume without letting a broken server hang a notebook forever.
LOAD_TIMEOUT_S = 300.0
#: The first pause between attempts, and the longest one (seconds).
RETRY_BASE_S = 0.25
RETRY_CAP_S = 4.0


class ServerNotReadyError(ServerStartError):
    """A request kept meeting a server that was loading (or not listening) until its deadline."""


@dataclass
class LoadWait:
    """What :func:`retry_while_loading` went through before the call succeeded."""

    attempts: int = 1
    #: Seconds from the first attempt to the start of the one that succeeded.
    waited_s: float = 0.0
    #: The last refusal seen, e.g. ``503 Loading model`` (empty if the first attempt succeeded).
    last_answer: str = ""


def loading_answer(exc: BaseException) -> str | None:
    """Why ``exc`` means "the server is not serving *yet*", or None if retrying would not help.

    Two answers are worth waiting out: HTTP 503 (llama-server while it loads the model; a
    platform's proxy while no container is ready) and a refused or reset connection (the port is
    not open yet). A timeout is not one of them — the request may be running — nor is any other
    status: a 401 or a 400 will not change by waiting.
    """
    try:
        import openai
    except ImportError:  # pragma: no cover - openai is a dependency of the course
        openai = None
    if openai is not None:
        if isinstance(exc, openai.APIStatusError) and exc.status_code == 503:
            body = exc.body if isinstance(exc.body, dict) else {}
            detail = body.get("message") or (body.get("error") or {}).get("message") or exc.message
            return f"503 {detail}".strip()
        if isinstance(exc, openai.APITimeoutError):
            return None
        if isinstance(exc, openai.APIConnectionError):
            cause = exc.__cause__ or exc.__context__
            return f"no connection ({type(cause).__name__ if cause else exc.message})"
    if isinstance(exc, ConnectionError):
        return f"no connection ({type(exc).__name__})"
    return None


def retry_while_loading(call: Callable[[], T], *, timeout_s: float | None = LOAD_TIMEOUT_S,
                        base_s: float = RETRY_BASE_S, cap_s: float = RETRY_CAP_S, where: str = "the server",
                        on_retry: Callable[[int, str], None] | None = None) -> tuple[T, LoadWait]:
    """Run ``call()`` until it gets past a loading server; return its result and how long that took.

    A failure that :func:`loading_answer` recognises (503, connection refused) is retried after
    a pause drawn at random between 0 and ``min(cap_s, base_s * 2**n)`` — exponential backoff
    with full jitter, so that the many clients a cold container keeps waiting do not all retry
    in the same instant. At ``timeout_s`` after the first attempt it gives up with one
    :class:`ServerNotReadyError` that says what the server last answered. Any other error is
    raised at once, unchanged. ``timeout_s=None`` (or 0) makes exactly one attempt.

    This wraps what the ``openai`` client does itself: it retries a 503 too, but a fixed number
    of times (``max_retries``, 2 by default, pauses from 0.5 s doubling), about 1.5 s in all —
    shorter than a cold start. Here the budget is time, which is what a cold start costs.

    ``on_retry(attempt, answer)`` is called after each refused attempt that will be retried,
    before the pause: to log the wait, or to act on it — a demonstration can start the server
    only once the request has provably met a server that was not ready.
    """
    if timeout_s is not None and timeout_s < 0:
        raise ValueError(f"timeout_s must be >= 0 seconds or None, got {timeout_s}")
    started = time.monotonic()
    deadline = started + (timeout_s or 0.0)
    attempt, last = 0, ""
    while True:
        attempt += 1
        attempt_started = time.monotonic()
        try:
            result = call()
        except Exception as exc:  # noqa: BLE001 - classified below; anything unknown is re-raised as is
            answer = loading_answer(exc)
            if answer is None or not timeout_s:
                raise
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ServerNotReadyError(
                    f"{where} was still not serving after {timeout_s:g} s ({attempt} attempts; last answer: "
                    f"{answer}). A cold server loads its model first: wait for it with wait_until_ready(), "
                    "or allow more time (load_timeout_s=…).") from None
            if on_retry is not None:
                on_retry(attempt, answer)
            time.sleep(min(remaining, random.uniform(0.0, min(cap_s, base_s * 2 ** (attempt - 1)))))
            last = answer
            continue
        return result, LoadWait(attempts=attempt, waited_s=attempt_started - started, last_answer=last)


class StreamClock:
    """When the tokens of one streamed reply arrived — the course's only timing formula.

    * time to first token (TTFT) = first token's arrival − request sent;
    * decode speed = (tokens − 1) ÷ (end of the reply − first arrival): the first token pays for
      the prompt, every later one for one decode step, so it is left out of the rate.

    The end of the reply is the chunk that says why it ended (``finish_reason``), which the
    server sends right after its last token — not the last chunk with text. The two differ when
    the last tokens add no text (an end-of-turn token that ``ignore_eos`` let the model generate,
    the first bytes of a character): timing ``tokens − 1`` steps over the shorter window would
    report a speed the server never reached. Without that chunk (a stream cut short), the last
    text chunk ends the window.

    ``tokens`` is the server's count when it reports one (``usage``), else the chunks seen:
    llama-server sends one token per chunk, but a proxy may merge chunks.

    ``started`` and each ``at`` are ``time.monotonic()`` readings; they default to "now" and are
    given explicitly only to check the formula with made-up timestamps.
    """

    def __init__(self, started: float | None = None) -> None:
        self.started = time.monotonic() if started is None else started
        self.first: float | None = None
        self.last: float | None = None
        self.finished: float | None = None
        self.chunks = 0

    def tick(self, at: float | None = None) -> None:
        """A chunk with text (answer or reasoning) arrived."""
        now = time.monotonic() if at is None else at
        self.first = now if self.first is None else self.first
        self.last = now
        self.chunks += 1

    def finish(self, at: float | None = None) -> None:
        """The chunk with the ``finish_reason`` arrived: the server generated its last token."""
        if self.finished is None:
            self.finished = time.monotonic() if at is None else at

    @property
    def ttft_s(self) -> float | None:
        return None if self.first is None else self.first - self.started

    @property
    def decode_s(self) -> float | None:
        """First token → end of the reply (seconds): the window the decode speed is measured over."""
        if self.first is None:
            return None
        end = self.finished if self.finished is not None and self.finished >= self.first else self.last
        return end - self.first

    def tokens_per_s(self, tokens: int) -> float | None:
        window = self.decode_s
        if window is None or window <= 0 or tokens < 2:
            return None
        return (tokens - 1) / window


@dataclass
class ChatResult:
    """One streamed chat completion, with the client-side view of its speed."""

    content: str
    reasoning: str
    finish_reason: str | None
    ttft_s: float | None  # request sent -> first token (reasoning or content)
    total_s: float
    completion_tokens: int
    prompt_tokens: int | None
    tokens_per_s: float | None  # decode speed after the first token
    server_timings: dict[str, Any] = field(default_factory=dict)
    #: Attempts it took to get past a loading server, and the seconds spent waiting before the
    #: attempt that was answered (TTFT and total_s count from that attempt).
    attempts: int = 1
    load_wait_s: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def stream_chat(
    client: Any,
    messages: list[dict[str, str]] | str,
    *,
    model: str | None = None,
    max_tokens: int = 256,
    temperature: float | None = None,
    thinking: bool | None = None,
    extra_body: dict[str, Any] | None = None,
    echo: bool | Callable[[str, str], None] = False,
    load_timeout_s: float | None = LOAD_TIMEOUT_S,
    on_retry: Callable[[int, str], None] | None = None,
) -> ChatResult:
    """Stream one chat completion through an ``openai.OpenAI`` client and time it.

    ``messages`` may be a plain string (one user turn). ``thinking`` switches Qwen3's
    thinking on or off through the chat template (``enable_thinking``); None leaves the
    template's default. ``echo=True`` prints tokens as they arrive (reasoning first, then
    the answer); a callable gets ``(channel, text)`` with channel ``reasoning``/``content``.

    A server that is still loading its model (503) or not listening yet is waited for, up to
    ``load_timeout_s`` seconds (:func:`retry_while_loading`); None sends the request once. The
    client's own ``max_retries`` still applies inside each attempt. ``on_retry(attempt, answer)``
    hears of every refused attempt (``answer`` is e.g. ``503 Loading model``), numbered from 1
    across the whole call.
    """
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    body: dict[str, Any] = dict(extra_body or {})
    if thinking is not None:
        body.setdefault("chat_template_kwargs", {})["enable_thinking"] = thinking
    printer = _printer() if echo is True else (echo or None)

    where = f"llama-server at {getattr(client, 'base_url', 'the given address')}"
    waited_for_model = LoadWait()
    refused = 0

    def heard(_attempt: int, answer: str) -> None:
        nonlocal refused
        refused += 1
        if on_retry is not None:
            on_retry(refused, answer)

    if model is None:
        model, waited_for_model = retry_while_loading(lambda: _first_model(client), timeout_s=load_timeout_s,
                                                      where=where, on_retry=heard)
    kwargs: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
        "extra_body": body,
    }
    if temperature is not None:
        kwargs["temperature"] = temperature

    content: list[str] = []
    reasoning: list[str] = []
    finish_reason = None
    usage = None
    timings: dict[str, Any] = {}
    def open_stream() -> tuple[StreamClock, Any]:
        clock = StreamClock()  # each attempt restarts the clock: TTFT is the answered request's
        return clock, client.chat.completions.create(**kwargs)

    (clock, stream), waited = retry_while_loading(open_stream, timeout_s=load_timeout_s, where=where, on_retry=heard)
    for chunk in stream:
        extra = chunk.model_extra or {}
        if extra.get("timings"):
            timings = dict(extra["timings"])
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            delta = choice.delta
            piece_r = getattr(delta, "reasoning_content", None) or (delta.model_extra or {}).get("reasoning_content")
            piece_c = delta.content
            if piece_r or piece_c:
                clock.tick()
            if piece_r:
                reasoning.append(piece_r)
                if printer:
                    printer("reasoning", piece_r)
            if piece_c:
                content.append(piece_c)
                if printer:
                    printer("content", piece_c)
            if choice.finish_reason:
                finish_reason = choice.finish_reason
                clock.finish()
    total = time.monotonic() - clock.started
    if printer is not None and echo is True:
        print(flush=True)
    n_tokens = usage.completion_tokens if usage is not None else clock.chunks
    return ChatResult(
        content="".join(content),
        reasoning="".join(reasoning),
        finish_reason=finish_reason,
        ttft_s=clock.ttft_s,
        total_s=total,
        completion_tokens=n_tokens,
        prompt_tokens=usage.prompt_tokens if usage is not None else None,
        tokens_per_s=clock.tokens_per_s(n_tokens),
        server_timings=timings,
        attempts=waited_for_model.attempts + waited.attempts - 1,
        load_wait_s=waited_for_model.waited_s + waited.waited_s,
    )


def _first_model(client: Any) -> str:
    """llama-server serves one model; ask it for its name rather than make the user type it."""
    models = client.models.list().data
    if not models:
        raise ValueError("the server lists no model; pass model=... explicitly")
    return models[0].id


def _printer() -> Callable[[str, str], None]:
    state = {"channel": None}

    def emit(channel: str, text: str) -> None:
        if state["channel"] != channel:
            label = "[thinking] " if channel == "reasoning" else ("\n[answer] " if state["channel"] else "")
            sys.stdout.write(label)
            state["channel"] = channel
        sys.stdout.write(text)
        sys.stdout.flush()

    return emit


def concurrent_chats(client: Any, prompts: list[str], *, max_tokens: int = 64, thinking: bool | None = False,
                     extra_body: dict[str, Any] | None = None) -> tuple[list[ChatResult], float]:
    """Send ``prompts`` at the same time (one thread each); return the results and the wall time.

    This is how a server is really used: several people at once. llama-server decodes all
    active requests in one batch, so the total tokens per second grows with concurrency
    while each request slows down a little.
    """
    from concurrent.futures import ThreadPoolExecutor

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=max(1, len(prompts))) as pool:
        futures = [pool.submit(stream_chat, client, p, max_tokens=max_tokens, thinking=thinking,
                               extra_body=extra_body) for p in prompts]
        results = [f.result() for f in futures]
    return results, time.monotonic() - started


#: How a streamed reply ends when nothing went wrong: the model finished ("stop") or it used
#: up its ``max_tokens`` ("length").
FINISHED = ("stop", "length")


@dataclass
class ConcurrencySummary:
    """What a batch of simultaneous requests achieved, seen from the client."""

    requests: int
    wall_s: float
    total_tokens: int
    total_tokens_per_s: float
    #: Mean decode speed of the requests that have one (a reply of a single token has none).
    mean_request_tokens_per_s: float | None
    #: Every request ended normally: finished by the model or at its ``max_tokens``.
    all_finished: bool


def summarize(results: list[ChatResult], wall_s: float) -> ConcurrencySummary:
    """Totals and means for :func:`concurrent_chats` results.

    Real models stop when their answer is complete, so requests differ in length; and a
    one-token reply has no decode speed. Neither is an error, and neither breaks the sums.
    """
    rates = [r.tokens_per_s for r in results if r.tokens_per_s is not None]
    total = sum(r.completion_tokens for r in results)
    return ConcurrencySummary(
        requests=len(results), wall_s=wall_s, total_tokens=total,
        total_tokens_per_s=total / wall_s if wall_s > 0 else 0.0,
        mean_request_tokens_per_s=sum(rates) / len(rates) if rates else None,
        all_finished=all(r.finish_reason in FINISHED for r in results),
    )


def auth_status(base_url: str, api_key: str | None) -> int | None:
    """HTTP status of ``GET /v1/models`` with this key (or none): 200 allowed, 401 refused."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    status, _ = http_get(base_url.rstrip("/") + "/v1/models", headers=headers)
    return status
