"""llama-server through the openai client: readiness, streaming, auth, and clean shutdown."""

from __future__ import annotations

import json
import os
import signal
import socket
import time

import openai
import pytest

from helpers.client import concurrent_chats, http_get, stream_chat, summarize, wait_until_ready
from helpers.errors import PortInUseError, ServerStartError
from helpers.process import ensure_port_free, free_port, stop
from helpers.runtime import LocalServer

pytestmark = pytest.mark.usefixtures("no_orphans")


@pytest.fixture(scope="module")
def server(tiny_model):
    with LocalServer.for_model(tiny_model, parallel=2, ctx_per_slot=1024) as s:
        yield s


@pytest.mark.llama
def test_health_and_props(server):
    assert http_get(server.base_url + "/health") == (200, json.dumps({"status": "ok"}, separators=(",", ":")))
    status, body = http_get(server.base_url + "/props")
    props = json.loads(body)
    assert props["total_slots"] == 2
    # --ctx-size 2048 (parallel x ctx_per_slot) split into two slots of 1024
    assert props["default_generation_settings"]["n_ctx"] == 1024
    assert server.ready_s is not None and 0 < server.ready_s < 60


@pytest.mark.llama
def test_stream_thinking_goes_to_reasoning(server):
    r = stream_chat(server.client(), "Why is decoding memory-bound?", max_tokens=12, thinking=True)
    assert r.reasoning and not r.content  # the template opened <think>; the model never closed it
    assert r.completion_tokens == 12 and r.finish_reason == "length"
    assert r.ttft_s > 0 and r.tokens_per_s > 0
    assert r.server_timings["predicted_n"] == 12


@pytest.mark.llama
def test_stream_without_thinking_goes_to_content(server):
    chunks: list[tuple[str, str]] = []
    r = stream_chat(server.client(), "Hello", max_tokens=10, thinking=False,
                    echo=lambda ch, text: chunks.append((ch, text)))
    assert r.content and not r.reasoning
    assert "".join(t for ch, t in chunks if ch == "content") == r.content
    assert r.prompt_tokens > 0


@pytest.mark.llama
def test_plain_openai_call(server):
    client = server.client()
    (model,) = client.models.list().data
    assert model.id == server.settings.model_name
    resp = client.chat.completions.create(model=model.id, max_tokens=5,
                                          messages=[{"role": "user", "content": "Hi"}])
    assert resp.usage.completion_tokens == 5


@pytest.mark.llama
def test_server_stops_on_exit_and_after_errors(tiny_model):
    s = LocalServer.for_model(tiny_model)
    with pytest.raises(RuntimeError, match="boom"), s:
        assert s.running
        raise RuntimeError("boom")
    assert not s.running
    ensure_port_free(s.settings.host, s.settings.port)  # nothing listens there any more
    again = LocalServer.for_model(tiny_model, port=s.settings.port)  # and it can be reused at once
    with again:
        assert again.running


def test_port_in_use(tiny_model):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(PortInUseError, match=f"port {port} .* already in use"):
            LocalServer.for_model(tiny_model, port=port).start()


@pytest.mark.llama
def test_server_that_dies_while_loading(tmp_path, tiny_model):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(tiny_model.read_bytes()[:100_000])
    s = LocalServer.for_model(broken)
    with pytest.raises(ServerStartError, match="exited with exit code") as err:
        s.start()
    assert err.value.log_tail
    assert not s.running


@pytest.mark.llama
def test_api_key_is_enforced(tiny_model):
    with LocalServer.for_model(tiny_model, api_key="sesame") as s:
        assert http_get(s.base_url + "/health")[0] == 200  # health stays public
        anonymous = openai.OpenAI(base_url=s.openai_base_url, api_key="wrong")
        with pytest.raises(openai.AuthenticationError):
            anonymous.models.list()
        assert stream_chat(s.client(), "Hi", max_tokens=3).completion_tokens == 3


def test_wait_times_out_when_nothing_listens():
    with pytest.raises(ServerStartError, match="not ready after"):
        wait_until_ready(f"http://127.0.0.1:{free_port()}", timeout_s=0.5)


@pytest.mark.llama
def test_concurrency_summary_survives_short_and_early_replies(server):
    """A one-token reply has no decode speed and real answers end early: the summary copes with both."""
    results, wall = concurrent_chats(server.client(), ["One", "Two", "Three"], max_tokens=1)
    assert all(r.completion_tokens == 1 and r.tokens_per_s is None for r in results)
    summary = summarize(results, wall)
    assert summary.requests == 3 and summary.total_tokens == 3 and summary.mean_request_tokens_per_s is None
    assert summary.all_finished and summary.total_tokens_per_s > 0
    longer, wall = concurrent_chats(server.client(), ["Four", "Five"], max_tokens=6)
    both = summarize(results + longer, wall)
    assert both.mean_request_tokens_per_s == pytest.approx(sum(r.tokens_per_s for r in longer) / 2)


@pytest.mark.llama
def test_the_container_watchdog_sees_a_dead_server(tiny_model, tmp_path, monkeypatch):
    """The Modal server's start-up code, run here: when llama-server dies, the watchdog reports it."""
    import os
    import signal
    import threading

    from helpers import modal_server
    from helpers.modal_common import SETTINGS, model_subdir

    folder = tmp_path / model_subdir(SETTINGS.repo)  # the model volume's layout
    folder.mkdir()
    (folder / f"model-{SETTINGS.quant}.gguf").symlink_to(tiny_model)
    monkeypatch.setenv("LLAMA_API_KEY", "watchdog-key")
    exited: list[int | None] = []
    done = threading.Event()
    port = free_port()
    proc = modal_server.start_llama_server(str(tmp_path), port=port, host="127.0.0.1",
                                           on_exit=lambda code: (exited.append(code), done.set()))
    try:
        wait_until_ready(f"http://127.0.0.1:{port}", timeout_s=60, is_alive=lambda: proc.poll() is None)
        assert not done.is_set()
        os.killpg(proc.pid, signal.SIGKILL)  # as the kernel's OOM killer would
        assert done.wait(10) and exited == [-signal.SIGKILL]
    finally:
        stop(proc)


def test_the_container_refuses_to_start_without_a_key(tmp_path, monkeypatch):
    from helpers import modal_server

    monkeypatch.delenv("LLAMA_API_KEY", raising=False)
    with pytest.raises(RuntimeError, match="no LLAMA_API_KEY: create the 'llamacpp-api-key' secret"):
        modal_server.start_llama_server(str(tmp_path), port=free_port(), on_exit=lambda code: None)


@pytest.mark.llama
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_serve_stops_cleanly_even_when_signalled_twice_mid_stream(sig):
    """`python -m helpers serve`: a second Ctrl-C while llama-server is busy must not leave it running."""
    import subprocess
    import sys
    import threading

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "helpers", "serve", "--model", "synthetic", "--port", str(port),
                             "--parallel", "1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        wait_until_ready(f"http://127.0.0.1:{port}", timeout_s=60, is_alive=lambda: proc.poll() is None)
        import openai

        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none")
        streaming = threading.Thread(target=lambda: _drain(client), daemon=True)
        streaming.start()
        time.sleep(0.5)  # mid-stream
        proc.send_signal(sig)
        time.sleep(0.05)
        proc.send_signal(sig)
        output = proc.communicate(timeout=30)[0]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, output
    assert output.rstrip().endswith("stopped."), output


def _drain(client) -> None:  # noqa: ANN001
    try:
        for _ in client.chat.completions.create(model="synthetic-qwen3", stream=True, max_tokens=100_000,
                                                messages=[{"role": "user", "content": "Go on."}]):
            pass
    except Exception:  # noqa: BLE001 - the server goes away under it, on purpose
        pass
