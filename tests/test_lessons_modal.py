"""What notebooks 03 and 05 and the README's workshop snippet say, checked against helpers and real servers.

Every number their prose states comes from a helper, and every claim about a stored or live output is
checked here: the figures in the text, the snippet students paste (run against a real llama-server
whose model thinks), and the behaviour of several requests at once.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import config, gpus, server_config

ROOT = Path(__file__).resolve().parents[1]
NB03 = ROOT / "notebooks" / "03_modal_basics.ipynb"
NB05 = ROOT / "notebooks" / "05_inference_server.ipynb"
ARTICLE_URL = "https://abhijeetmeena.com/blog/exploring-llm-inference-on-modal-gpus"


def cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def prose(path: Path) -> str:
    return "\n".join("".join(c["source"]) for c in cells(path) if c["cell_type"] == "markdown")


def stored_output(path: Path, cell_id: str) -> str:
    (cell,) = [c for c in cells(path) if c.get("id") == cell_id]
    return "".join("".join(o.get("text", "")) for o in cell["outputs"] if o.get("output_type") == "stream")


def readme_snippet() -> str:
    text = (ROOT / "README.md").read_text()
    after = text.split("this is the snippet they paste:", 1)[1]
    return re.search(r"```python\n(.*?)```", after, re.S).group(1)


# --- the workshop snippet ----------------------------------------------------------------------------------------


def _run_snippet(code: str, base_url: str, key: str) -> str:
    code = (code.replace("https://<workspace>--llamacpp-server-serve.modal.run/v1", base_url + "/v1")
            .replace("<the key>", key))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


@pytest.mark.llama
def test_the_workshop_snippet_shows_the_thinking(llama_bin, no_orphans):
    """Qwen3's chat template thinks by default: the README's loop prints that channel, a content-only loop prints
    nothing (the synthetic Qwen3 never closes its thinking, so every token is reasoning); switched off, the same
    loop prints the answer."""
    from helpers import backend

    snippet = readme_snippet()
    assert "reasoning_content" in snippet and "delta.content" in snippet
    content_only = re.sub(r'getattr\(delta, "reasoning_content", None\) or ', "", snippet)
    assert content_only != snippet
    off = snippet.replace('messages=[{"role": "user", "content": "Hello!"}]',
                          'messages=[{"role": "user", "content": "Hello!"}], '
                          'extra_body={"chat_template_kwargs": {"enable_thinking": False}}')
    assert off != snippet
    assert 'extra_body={"chat_template_kwargs": {"enable_thinking": False}}' in (ROOT / "README.md").read_text()
    with backend.serve(backend="local", model="synthetic", api_key="workshop", parallel=1, max_tokens=24) as server:
        assert _run_snippet(snippet, server.base_url, "workshop").strip()  # the thinking, as it streams
        assert _run_snippet(content_only, server.base_url, "workshop").strip() == ""  # the article's loop: nothing
        assert _run_snippet(off, server.base_url, "workshop").strip()  # thinking off: the answer


# --- notebook 05 ---------------------------------------------------------------------------------------------------


def test_notebook_05_states_the_settings_it_deploys():
    from helpers import modal_server
    from helpers.model_shape import known_shape
    from helpers.sizes import file_size

    text = prose(NB05)
    n_ctx = server_config.PARALLEL * server_config.CTX_PER_SLOT
    assert f"each gets {n_ctx:,} ÷ {server_config.PARALLEL} = {server_config.CTX_PER_SLOT:,} tokens" in text
    assert f"`--parallel {server_config.PARALLEL} --ctx-size {n_ctx}`" in text
    assert f"@modal.concurrent(max_inputs={modal_server.MAX_INPUTS})" in text
    assert f"take {modal_server.MAX_INPUTS} requests at once" in text and "only a 33rd request" in text
    assert modal_server.MAX_INPUTS == 32
    assert f"stopped after {modal_server.SETTINGS.scaledown_s // 60} idle minutes" in text
    assert f"holds the {file_size(known_shape('Qwen3-8B'), 'Q5_K_M') / 1e9:.1f} GB model" in text
    # the startup timeout: Modal's default, read from the installed modal, and the app's
    import inspect

    import modal

    assert inspect.signature(modal.web_server).parameters["startup_timeout"].default == 5
    assert "Five seconds is usually enough" in text and "startup_timeout=10 * MINUTES" in (
        ROOT / "notebooks" / "my_llama_server.py").read_text()
    assert modal_server.STARTUP_TIMEOUT_S == 600
    assert ARTICLE_URL in text and "https://modal.com/docs/guide/webhooks" in text
    assert "Where the article is wrong" in text


def test_notebook_05_cold_start_and_cost_come_from_the_budget():
    from helpers import coldstart, modal_server

    budget = coldstart.model_cold_start_budget("Qwen3-8B", "Q5_K_M", "L4")
    out = stored_output(NB05, "54d77478")
    idle = modal_server.SETTINGS.scaledown_s
    assert f"{budget.total_s:.0f} s, between {budget.low_s:.0f} and {budget.high_s:.0f} s" in out
    assert f"${gpus.gpu_cost_usd('L4', budget.high_s + idle):.2f} at most" in out
    article = coldstart.article_check(budget)
    assert (f"the article: {article.cold_first_token_s:.0f} s to the first token after a scale-to-zero, "
            f"{article.warm_first_token_s:.0f} s warm; the difference, {article.implied_cold_start_s:.0f} s") in out
    assert not re.search(r"\b20[–-]40 s\b", prose(NB05))  # no second set of cold-start figures


def test_notebook_05_thinking_outputs_agree_with_the_prose():
    out = stored_output(NB05, "8350f45a").splitlines()
    assert out[0].startswith("thinking on : ") and out[0].endswith("streamed in reasoning_content; finish reason "
                                                                   "'length'")
    assert out[1].startswith("thinking off: ") and "streamed in content;" in out[1]
    article = stored_output(NB05, "a1e0c012")
    from helpers.logs import ARTICLE_LOG, parse_perf

    perf = parse_perf(ARTICLE_LOG.read_text())
    assert f"{perf.prompt_tokens} tokens in {perf.prompt_ms:.0f} ms" in article
    assert f"a {12 * perf.prompt_tokens_per_s:.0f}-token prompt" in article
    assert f"{12 * perf.eval_tokens_per_s:.0f} tokens of thinking" in article
    assert 12 * perf.prompt_tokens_per_s > 10 * 50  # a 12 s prompt would be hundreds of tokens, not a sentence


def test_notebook_05_concurrency_output_agrees_with_the_prose():
    """The stored table: eight requests of 48 tokens; each one's decode speed at most the total."""
    counts = stored_output(NB05, "87dd0a7b")
    assert counts.strip() == "1 request: 48 tokens; 8 requests: 384 tokens (8 of 8 stopped at max_tokens)"
    rows = [line.split() for line in stored_output(NB05, "2857ef44").strip().splitlines()[1:]]
    (one, eight) = [[float(x) for x in row] for row in rows]
    assert (one[0], eight[0]) == (1, 8)
    assert eight[3] <= eight[2]  # per request <= total
    assert abs(one[3] - one[2]) <= 0.2 * one[2]  # one request: the two nearly agree


@pytest.mark.llama
def test_several_requests_at_once_live(llama_bin, no_orphans):
    """The claim of notebook 05, section 7, on this machine: exact token counts, and per request <= total."""
    from helpers import backend
    from helpers.client import concurrent_chats, summarize

    ask = dict(max_tokens=48, extra_body={"ignore_eos": True})
    with backend.serve(backend="local", model="smollm2") as server:
        client = server.client()
        single = summarize(*concurrent_chats(client, ["Name a prime number."], **ask))
        results, wall = concurrent_chats(client, [f"Name {i} prime numbers." for i in range(1, 9)], **ask)
    many = summarize(results, wall)
    assert (single.total_tokens, many.total_tokens) == (48, 8 * 48)
    assert all(r.finish_reason == "length" for r in results)
    assert all(r.tokens_per_s is not None and r.tokens_per_s <= many.total_tokens_per_s for r in results)


# --- notebook 03 ---------------------------------------------------------------------------------------------------


def test_notebook_03_states_what_the_plan_and_the_price_list_say():
    from helpers.model_shape import known_shape
    from helpers.sizes import file_size

    text = prose(NB03)
    assert f"holds the downloaded {file_size(known_shape('Qwen3-8B'), 'Q5_K_M') / 1e9:.1f} GB" in text
    assert f"CUDA reports {gpus.gpu_spec('L4').memory_mib:,} MiB" in text
    assert f"an L4 for about a minute: ${gpus.gpu_cost_usd('L4', 60):.3f}" in text
    assert f"about ${gpus.gpu_cost_usd('L4', 86400):.0f} a\nday" in text or (
        f"about ${gpus.gpu_cost_usd('L4', 86400):.0f} a day" in text)
    # the volume: commit makes files durable for containers that start later; running ones need reload()
    assert "volume.reload()" in text and "start *after* the commit" in text
    assert "see the new files right away" not in text
    assert ARTICLE_URL in text and "https://modal.com/docs/guide/volumes" in text
    assert config.MODEL_VOLUME in text


def test_notebook_05_shows_the_request_path_and_the_app_size():
    """The picture is stored in the notebook (drawn by helpers.figures.request_path), and the app is as short as
    the lesson says."""
    (figure_cell,) = [c for c in cells(NB05) if "figures.request_path()" in "".join(c["source"])]
    assert any("image/png" in o.get("data", {}) for o in figure_cell["outputs"])
    app_lines = (ROOT / "notebooks" / "my_llama_server.py").read_text().splitlines()
    assert "under seventy\nlines" in prose(NB05) or "under seventy lines" in prose(NB05)
    assert len(app_lines) < 70
