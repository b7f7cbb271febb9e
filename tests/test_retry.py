"""A request that reaches llama-server while it loads its model: 503, then retried until it is served.

Each test starts a real llama-server and talks to it *before* ``/health`` is 200 — the moment a
cold Modal container puts its first client in. Nothing is mocked: the 503s are llama-server's,
the retries and the errors the openai client's and ours.
"""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from helpers import llamacpp, process
from helpers.client import ServerNotReadyError, http_get, retry_while_loading, stream_chat
from helpers.commands import ServerSettings, server_args
from helpers.models import resolve_model
from helpers.runtime import LocalServer

pytestmark = pytest.mark.usefixtures("no_orphans")


@pytest.fixture(scope="module")
def smollm2_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of SmolLM2 (a real model that takes a moment to load)."""
    source = resolve_model("smollm2", progress=False)
    return Path(shutil.copyfile(source, tmp_path_factory.mktemp("retry") / source.name))


@contextlib.contextmanager
def loading_server(model: Path, log_dir: Path) -> Iterator[str]:
    """Start llama-server and return at once — *without* waiting for it — then stop it at the end.

    Yields the base URL as soon as ``/health`` has answered 503 once: from then on, until the
    model is loaded, every request is refused with 503.
    """
    settings = ServerSettings(model=str(model), port=process.free_port(), parallel=1, ctx_per_slot=2048)
    base_url = f"http://{settings.host}:{settings.port}"
    with open(log_dir / f"llama-server-{settings.port}.log", "w") as log:
        proc = process.spawn(server_args(llamacpp.binary("llama-server"), settings), stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while (status := http_get(base_url + "/health", timeout_s=1)[0]) != 503:
            assert status is None, f"expected 503 while loading, /health answered {status}"
            assert proc.poll() is None and time.monotonic() < deadline, "llama-server never answered /health"
            time.sleep(0.002)
        yield base_url
    finally:
        process.stop(proc, grace_s=3)


def client(base_url: str) -> openai.OpenAI:
    """An openai client that does not retry by itself, so that every retry seen here is ours."""
    return openai.OpenAI(base_url=base_url + "/v1", api_key="no-key", max_retries=0)


@pytest.mark.llama
def test_a_chat_sent_while_the_model_loads_is_served(smollm2_copy, tmp_path):
    with loading_server(smollm2_copy, tmp_path) as url:
        reply = stream_chat(client(url), "Say hello.", max_tokens=5, temperature=0.0)
        assert http_get(url + "/health")[0] == 200
    assert reply.content and reply.completion_tokens > 0
    # its first attempt met the loading server; a later one was answered
    assert reply.attempts >= 2 and reply.load_wait_s > 0
    # the clock restarted with the answered attempt: the wait is not counted as time to first token
    assert 0 < reply.ttft_s <= reply.total_s


@pytest.mark.llama
def test_without_retries_a_request_during_loading_fails(smollm2_copy, tmp_path):
    with loading_server(smollm2_copy, tmp_path) as url:
        plain = client(url)
        with pytest.raises(openai.APIStatusError) as refused:
            plain.chat.completions.create(model="any", max_tokens=5, messages=[{"role": "user", "content": "Hi"}])
        assert refused.value.status_code == 503 and "Loading model" in str(refused.value)
    # (How a deadline ends the wait is checked against a port nobody listens on, below: a small model finishes
    # loading within a fraction of a second, so a deadline test against a loading server would be a race.)


@pytest.mark.llama
def test_a_chat_sent_before_the_server_starts_waits_for_it():
    """Notebook 07's demonstration, made certain: the server starts only once the chat has been refused.

    Starting the server first and chatting "while it starts" is a race — a small model can be
    loaded before the first request leaves — and then nothing was waited for. Here the first
    refusal itself starts the server (``on_retry``), so the chat provably came first.
    """
    server = LocalServer.for_model("synthetic", parallel=1, ctx_per_slot=1024)
    starting = threading.Thread(target=server.start)
    refusals = []

    def start_server_after_refusal(attempt: int, answer: str) -> None:
        refusals.append((attempt, answer))
        if attempt == 1:
            starting.start()

    try:
        reply = stream_chat(client(server.base_url), "Hello", model="synthetic", max_tokens=4, temperature=0,
                            thinking=False, on_retry=start_server_after_refusal, load_timeout_s=120)
    finally:
        if starting.ident is not None:
            starting.join()
        server.stop()
    assert refusals[0] == (1, "no connection (ConnectError)")
    assert [a for a, _ in refusals] == list(range(1, len(refusals) + 1))  # every refusal heard, in order
    assert all(answer.startswith(("no connection", "503")) for _, answer in refusals)
    assert reply.attempts == len(refusals) + 1 >= 2 and reply.load_wait_s > 0
    assert reply.completion_tokens == 4


def test_on_retry_hears_every_refusal_of_the_model_lookup_and_the_chat():
    port = process.free_port()  # nothing listens here
    heard = []
    with pytest.raises(ServerNotReadyError):
        stream_chat(client(f"http://127.0.0.1:{port}"), "Hi", load_timeout_s=0.5,
                    on_retry=lambda attempt, answer: heard.append((attempt, answer)))
    assert len(heard) >= 2 and [a for a, _ in heard] == list(range(1, len(heard) + 1))
    assert {answer for _, answer in heard} == {"no connection (ConnectError)"}


def test_a_deadline_also_ends_the_wait_for_a_server_that_never_listens():
    port = process.free_port()  # nothing listens here
    started = time.monotonic()
    with pytest.raises(ServerNotReadyError, match=r"after 0\.3 s .*no connection"):
        stream_chat(client(f"http://127.0.0.1:{port}"), "Hi", model="any", load_timeout_s=0.3)
    assert 0.3 <= time.monotonic() - started < 2.0


def test_errors_that_waiting_cannot_fix_are_raised_at_once():
    calls = []

    def refuse() -> None:
        calls.append(1)
        raise ValueError("a bad request stays bad")

    with pytest.raises(ValueError, match="stays bad"):
        retry_while_loading(refuse, timeout_s=10)
    assert len(calls) == 1
    with pytest.raises(ValueError, match="timeout_s must be >= 0"):
        retry_while_loading(refuse, timeout_s=-1)
