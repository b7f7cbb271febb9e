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
    assert (f"the article (measured): {article.cold_first_token_s:.0f} s to the first answer token after a "
            f"scale-to-zero, {article.warm_first_token_s:.0f} s warm; its model load alone took "
            f"{article.measured_load_s:.1f} s, so its cold start was at least {article.min_cold_start_s:.1f} s "
            f"(not the rough {article.implied_cold_start_s:.0f} s of {article.cold_first_token_s:.0f} - "
            f"{article.warm_first_token_s:.0f})") in out
    assert article.min_cold_start_s > article.implied_cold_start_s  # why the split is called rough
    assert not re.search(r"\b20[–-]40 s\b", prose(NB05))  # no second set of cold-start figures


# --- a class of 30 on one L4? (notebook 05's workshop section, the README's) -----------------------------------------


def _class_capacity() -> dict[str, str]:
    """The figures notebook 05 and the README state, computed here a second way (bisection, not a scan)."""
    from helpers import speed, traffic
    from helpers.model_shape import known_shape

    l4 = speed.expected_decode_tps(known_shape("Qwen3-8B"), "Q5_K_M", "L4")
    klass = traffic.Traffic(30 * 30, 300)

    def l4s(gain: float) -> int:
        return traffic.containers_needed(klass, klass.output_tokens / (l4 * gain / 8), 8).containers

    lo, hi = 1.0, 8.0  # l4s(lo) > 1, l4s(hi) == 1
    assert l4s(lo) > 1 and l4s(hi) == 1
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if l4s(mid) == 1 else (mid, hi)
    one_from = -(-round(hi * 1000) // 100) / 10  # the notebook scans in steps of 0.1: the first one at or above
    counts = {a: l4s(traffic.batch_scaling(8, a)) for a in traffic.SCALING_ASSUMPTIONS}
    return {"demand": f"{klass.rate_per_s * klass.output_tokens:.0f}",
            "keep_up": speed.significant(klass.rate_per_s * klass.output_tokens / l4),
            "one_from": speed.significant(one_from), "h200": speed.significant(traffic.batch_scaling(8, "h200")),
            "counts": counts, "label": speed.speed_label("L4", "Q5_K_M")}


def test_one_l4_for_a_class_is_stated_conditionally_with_the_helpers_numbers():
    from helpers.speed import significant as speed_significant
    from helpers.traffic import article_batch_gain as article_gain

    words = {1: "one", 2: "two", 3: "three"}
    c = _class_capacity()
    assert c["counts"]["none"] > c["counts"]["h200"] > c["counts"]["perfect"] == 1  # the statement is conditional
    out = stored_output(NB05, "a1e0c040")
    assert f"the class asks for {c['demand']} tokens/s; one L4 stream: {c['label']}" in out
    assert (f"one L4 keeps up on average if 8 streams run at least {c['keep_up']}x one stream; it holds the busiest "
            f"moments in its 8 slots from {c['one_from']}x") in out
    for a, n in c["counts"].items():
        assert re.search(rf"\({a:>7}\): {n} L4\(s\) for the class \(predicted\)", out), a
    gain = speed_significant(article_gain())
    assert (f"the article's own L4 timings, 1 and 8 requests at once: about {gain}x (rough: it does not say how long "
            "the replies were)") in out
    text = " ".join(prose(NB05).split())
    assert (f"Below {c['keep_up']}× one L4 falls behind" in text and f"between {c['keep_up']}× and {c['one_from']}× it "
            f"keeps up on average" in text and f"from {c['one_from']}× one L4 absorbs even those" in text)
    assert (f"The article's own L4 timings suggest about {gain}× (rough: it does not say how long the replies were), "
            f"close to the H200's measured {c['h200']}×, under which notebook 08 counts {words[c['counts']['h200']]} "
            f"L4s to serve every request at once; without any gain it takes {words[c['counts']['none']]}, with "
            "perfect batching one") in text
    assert (f"**one L4 if it batches at least {c['keep_up']}×, with a short wait for a slot at the busiest "
            "moments**") in text
    assert "one L4 is enough" not in text
    readme = " ".join((ROOT / "README.md").read_text().split("## Teaching a workshop", 1)[1].split("```", 1)[0].split())
    assert (f"the class asks for {c['keep_up']}× what one L4 stream decodes: one L4 keeps up on average if its gain is "
            f"at least {c['keep_up']}×, and absorbs the busiest moments within its eight slots from about "
            f"{c['one_from']}×") in readme
    assert (f"The article's own L4 timings suggest about {gain}× (rough), the H200's measured gain is {c['h200']}×, "
            f"and at that gain the class needs {words[c['counts']['h200']]} L4s to serve every request at once; "
            f"with no gain, {words[c['counts']['none']]}. So: one L4 if it batches at least {c['keep_up']}×") in readme
    assert "serves a class of ~30:" not in readme


def test_the_readme_workshop_and_checklist_figures_come_from_helpers():
    from helpers import coldstart, modal_server

    text = (ROOT / "README.md").read_text()
    assert f"≈ ${gpus.gpu_cost_usd('L4', 3600):.2f}/hour on an L4" in text  # the workshop deploy line
    assert f"≈ ${gpus.gpu_cost_usd('L4', 3600):.2f}/hour while a container runs" in text  # checklist step 6
    assert f"a forgotten warm L4 costs about ${gpus.gpu_cost_usd('L4', 86400):.0f} a day" in text
    assert f"up to {modal_server.MAX_INPUTS} per container before" in text
    article = coldstart.article_check()
    assert (f"the article's ≈{article.cold_first_token_s:.0f} s to a first answer is its cold start — its model load "
            f"alone took {article.measured_load_s:.1f} s — plus Qwen3's thinking, which warm requests pay too: "
            f"~{article.warm_first_token_s:.0f} s warm") in text
    # checklist step 5: the build time recorded in tests/data/image_build_sm89, and the article's decode speed
    from helpers.logs import ARTICLE_LOG, parse_perf

    build = (ROOT / "tests" / "data" / "image_build_sm89")
    seconds = int(re.search(r"exit 0 after (\d+) s", (build / "steps.log").read_text()).group(1))
    jobs = re.search(r" -j ?(\d+)", (build / "run_line_executed.sh").read_text()).group(1)
    assert f"its llama.cpp step took {seconds / 60:.1f} min measured with {jobs} build jobs" in text
    assert f"the article measured {parse_perf(ARTICLE_LOG.read_text()).eval_tokens_per_s:.1f} tok/s on an L4" in text
    assert f"{modal_server.SETTINGS.scaledown_s // 60} idle minutes of an L4 per burst" in text
    # your own app, step by step: the commands name the file notebook 05 writes and the app it defines
    assert "`modal run notebooks/my_llama_server.py`" in text and "`modal deploy notebooks/my_llama_server.py`" in text
    assert "`modal app stop --yes my-llama-server`" in text
    assert 'modal.App("my-llama-server")' in (ROOT / "notebooks" / "my_llama_server.py").read_text()


def test_notebook_05_shows_every_container_has_what_the_file_imports():
    """The stored check of section 2: both functions mount helpers and lack nothing (tests/test_modal.py checks the
    check itself, on a file that lacks something)."""
    out = stored_output(NB05, "a1e0c043").splitlines()
    assert [line.split()[0] for line in out] == ["download", "serve"]
    for line in out:
        assert line.endswith("mounted at start: python package helpers -> /root/helpers; missing in its container: "
                             "nothing"), line
    text = prose(NB05)
    assert "Modal mounts only that file" in text and "*both* images" in text


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
    text = " ".join(prose(NB05).split())
    assert "no single request is faster than the server as a whole" in text
    assert "its share of the total, so" not in text  # the eight speeds may add up to more than the total


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


# --- notebook 05's solutions ---------------------------------------------------------------------------------------

SOL05 = ROOT / "notebooks" / "solutions" / "05_inference_server_solutions.ipynb"


def test_solutions_05_thinking_channels_and_polls_agree_with_the_prose():
    assert stored_output(SOL05, "e4d74394").splitlines() == [
        "thinking=False: channels that arrived, first to last: ['content']; 48 of 48 tokens",
        "thinking=True : channels that arrived, first to last: ['reasoning']; 48 of 48 tokens"]
    from helpers import coldstart

    budget = coldstart.model_cold_start_budget("Qwen3-8B", "Q5_K_M", "L4")
    (predicted,) = [line for line in stored_output(SOL05, "142d4053").splitlines()
                    if line.startswith(f"ready after {budget.total_s:4.1f} s")]
    backoff, fine = (int(x.replace(",", "")) for x in re.findall(r"asks\s+([\d,]+) times", predicted))
    text = " ".join(prose(SOL05).split())
    assert "about a thousand for the predicted one" in text and 700 <= fine < 1500
    assert "the back-off sends about a dozen" in text and 8 <= backoff <= 16


def test_solutions_05_exercise_4_figures_come_from_the_shapes_and_the_build_record():
    from helpers.model_shape import known_shape

    small, big = known_shape("Qwen3-4B"), known_shape("Qwen3-8B")
    assert (small.n_layer, small.n_head_kv, small.head_dim) == (big.n_layer, big.n_head_kv, big.head_dim)
    text = " ".join(prose(SOL05).split())
    assert (f"as many layers ({small.n_layer}) and KV heads ({small.n_head_kv} of {small.head_dim} dimensions) as "
            "Qwen3-8B") in text
    build = ROOT / "tests" / "data" / "image_build_sm89"
    seconds = int(re.search(r"exit 0 after (\d+) s", (build / "steps.log").read_text()).group(1))
    jobs = re.search(r" -j ?(\d+)", (build / "run_line_executed.sh").read_text()).group(1)
    assert f"the llama.cpp compile ({seconds / 60:.1f} minutes measured for the L4's, with {jobs} build jobs)" in text


def test_solutions_05_answers_quote_the_stored_outputs():
    """Exercise 1's memory figures and exercise 2's waits, as the answers state them, against the stored tables."""
    rows = stored_output(SOL05, "2e1ce7f7").splitlines()
    (sixteen,) = [r for r in rows if r.startswith("--parallel 16 --ctx-size 131,072 (KV f16 )")]
    (halved,) = [r for r in rows if r.startswith("--parallel 16 --ctx-size  65,536")]
    (q8,) = [r for r in rows if "(KV q8_0)" in r]
    kv, total, gpu = re.search(r"KV cache\s+([\d.]+) GiB, total\s*([\d.]+) of ([\d.]+) GiB", sixteen).groups()
    text = " ".join(prose(SOL05).split())
    assert f"need a 131,072-token KV cache: {float(kv):.0f} GiB" in text and f"about {total} GiB" in text
    assert f"more than the L4's {float(gpu):.0f} GiB" in text and sixteen.endswith("fits: False")
    total_of = {name: re.search(r"total\s*([\d.]+)", row).group(1) for name, row in (("halved", halved), ("q8", q8))}
    assert f"the memory stays at {total_of['halved']} GiB" in text
    assert f"fits 16 × 8,192 in {total_of['q8']} GiB" in text and q8.endswith("fits: True")
    waits = stored_output(SOL05, "ffe8dee1")
    for tokens, word in ((300, "300 thinking tokens are"), (1000, "a thousand are")):
        seconds = float(re.search(rf"{tokens:>5} thinking tokens before the answer:\s+([\d.]+) s", waits).group(1))
        assert f"{word} {seconds:.0f} s" in text
