"""Several models behind one llama-server (router mode), and the sums that say which models fit one GPU.

The router tests run the real llama-server over SmolLM2 and the synthetic Qwen3: listing,
routing by the ``model`` field, the least-recently-used unload at ``--models-max 1``, the
load/unload API, and — the part that matters most on a shared machine — that every model
instance ends with the router, however the router ends. The calculator tests (no llama.cpp)
check :mod:`helpers.multimodel` against :func:`helpers.memory.memory_breakdown`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import openai
import pytest

from helpers import process
from helpers.client import http_get, stream_chat, wait_until_ready
from helpers.commands import RouterSettings, router_args, server_args
from helpers.gguf_header import read_local
from helpers.gpus import gpu_spec
from helpers.memory import memory_breakdown
from helpers.model_shape import known_shape
from helpers.multimodel import (
    COURSE_N_CTX,
    ModelInstance,
    cap_models_max,
    compare,
    fitting_sets,
    safe_models_max,
    share_gpu,
)
from helpers.runtime import (
    LocalRouter,
    find_models,
    link_models,
    local_router_settings,
    local_server_settings,
    router_model_files,
    router_models_dir,
)
from helpers.server_config import CTX_PER_SLOT, PARALLEL, ROUTER_MODELS_MAX
from helpers.synthetic import TINY, synthetic_model

#: The question whose greedy answer from SmolLM2 names Paris (the web UI test asks the same).
QUESTION = "What is the capital of France? Answer in one sentence."
KEY = "router-test-key"
SMOL, SYNTH = "smollm2", "synthetic-qwen3"


def instances(router: LocalRouter) -> dict[str, process.ProcessInfo]:
    """The router's live model instances (child llama-servers), by model name, from ``ps``."""
    found = {}
    for p in process.running_from(router.settings.models_dir):
        words = p.command.split()
        if "--alias" in words and "--models-dir" not in words:
            found[words[words.index("--alias") + 1]] = p
    return found


def _gone(pid: int, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pid not in {p.pid for p in process.live_processes()}:
            return True
        time.sleep(0.1)
    return False


# --- a real router ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def router():
    """The course's router settings over SmolLM2 and the synthetic Qwen3, one model at a time, with a key."""
    settings = local_router_settings(["smollm2", "synthetic"], KEY, models_max=1, parallel=1, ctx_per_slot=1024)
    with LocalRouter(settings) as r:
        yield r
    assert not instances(r), "a model instance outlived its router"


@pytest.mark.llama
def test_lists_every_model_behind_the_key(router):
    ids = [m.id for m in router.client().models.list().data]
    assert SMOL in ids and SYNTH in ids
    assert http_get(router.base_url + "/v1/models")[0] == 401  # the key guards the router's own API too
    assert {m["status"]["value"] for m in router.models()} <= {"unloaded", "loading", "loaded"}
    assert router_model_files(router.settings.models_dir)[SMOL].name == "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.mark.llama
def test_each_model_answers_and_the_least_recent_one_is_unloaded(router):
    client = router.client()
    synth = stream_chat(client, "Hello", model=SYNTH, max_tokens=8)
    assert synth.completion_tokens == 8 and (synth.reasoning or synth.content)
    assert router.status(SYNTH) == "loaded"
    smol = stream_chat(client, QUESTION, model=SMOL, max_tokens=24, temperature=0)
    assert "Paris" in smol.content, smol.content
    assert router.status(SMOL) == "loaded"
    router.wait_for(SYNTH, "unloaded", 10)  # --models-max 1: asking for SmolLM2 unloaded the synthetic model
    assert set(instances(router)) == {SMOL}  # and its process is gone


@pytest.mark.llama
def test_load_and_unload_on_request_with_the_course_settings(router):
    router.load(SYNTH)
    assert router.status(SYNTH) == "loaded" and router.status(SMOL) == "unloaded"
    status, body = http_get(f"{router.base_url}/props?model={SYNTH}", headers={"Authorization": f"Bearer {KEY}"})
    props = json.loads(body)
    assert status == 200 and props["total_slots"] == 1  # the router's arguments reached the instance:
    assert props["default_generation_settings"]["n_ctx"] == 1024  # --parallel 1, --ctx-size 1 x 1024
    assert "--backend-sampling" in next(m for m in router.models() if m["id"] == SYNTH)["status"]["args"]
    router.unload(SYNTH)
    assert router.status(SYNTH) == "unloaded" and not instances(router)
    with pytest.raises(ValueError, match=f"no model 'nope'; its models: .*{SMOL}"):
        router.load("nope")


@pytest.mark.llama
def test_instances_end_with_the_router_however_it_ends(no_orphans):
    settings = local_router_settings(["synthetic"], None, autoload=False, parallel=1, ctx_per_slot=512)
    with LocalRouter(settings) as r:
        with pytest.raises(openai.BadRequestError, match="not loaded"):  # --no-models-autoload
            r.client().chat.completions.create(model=SYNTH, max_tokens=2, messages=[{"role": "user", "content": "Hi"}])
        r.load(SYNTH)
        (child,) = instances(r).values()
        assert os.getpgid(child.pid) == r.proc.pid  # in the router's process group: stopping the group stops it
        assert stream_chat(r.client(), "Hi", model=SYNTH, max_tokens=3).completion_tokens == 3
    assert _gone(child.pid) and not r.running

    crashed = LocalRouter(settings).start()
    try:
        crashed.load(SYNTH)
        (child,) = instances(crashed).values()
        os.kill(crashed.proc.pid, signal.SIGKILL)  # the router alone dies, as in a crash
        assert _gone(child.pid), "a model instance outlived its crashed router"
    finally:
        crashed.stop()


@pytest.mark.llama
def test_serve_router_command_until_sigterm(no_orphans):
    port = process.free_port()
    proc = subprocess.Popen([sys.executable, "-m", "helpers", "serve", "--router", "--models", "synthetic,smollm2",
                             "--models-max", "1", "--parallel", "1", "--port", str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True, stdin=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    shown = []
    try:
        wait_until_ready(base, timeout_s=120, is_alive=lambda: proc.poll() is None)
        client = openai.OpenAI(base_url=base + "/v1", api_key="no-key")
        assert stream_chat(client, "Hi", model=SYNTH, max_tokens=4).completion_tokens == 4
        while (line := proc.stdout.readline()) and not line.startswith("Press Ctrl-C"):  # the whole announcement
            shown.append(line)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # `kill PID`: the command stops its router and the router's models
        output = "".join(shown) + proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, output
    assert "at most 1 loaded at once" in output and f"model {SYNTH}" in output and f"model {SMOL}" in output
    assert f"OpenAI API  {base}/v1" in output and "stopped." in output


# --- the command lines and the models folder (no llama.cpp) ----------------------------------------------------


def test_router_arguments_are_the_single_servers_without_a_model():
    """Each instance must get what `serve` gives its one model: same flags, no --model, a folder instead."""
    model = synthetic_model(TINY)
    single = server_args("llama-server", local_server_settings(model, None, port=8080))
    routed = router_args("llama-server", local_router_settings([model], None, port=8080))
    assert routed[1:5] == ["--models-dir", routed[2], "--models-max", str(ROUTER_MODELS_MAX)]
    assert "--model" not in routed and "--alias" not in routed
    without_model = [a for i, a in enumerate(single) if a not in ("--model", "--alias")
                     and single[i - 1] not in ("--model", "--alias")]
    assert routed[5:] == without_model[1:]
    assert f"--ctx-size {PARALLEL * CTX_PER_SLOT}" in " ".join(routed) and "--backend-sampling" in routed
    assert "--no-models-autoload" in router_args("x", RouterSettings("/m", autoload=False))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"models_max": -1}, "models_max must be a whole number >= 0"),
    ({"extra_args": ("--model", "x.gguf")}, "--model names a single model, which turns the router off"),
    ({"parallel": 0}, "parallel must be >= 1"),
])
def test_router_settings_refuse_what_llama_server_would_misread(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RouterSettings("/models", **kwargs)


def test_models_folder_names_models_as_the_single_server_does(tmp_path):
    tiny, root = synthetic_model(TINY), tmp_path / "router"
    folder = router_models_dir([tiny], root)
    assert router_model_files(folder) == {SYNTH: tiny.resolve()}
    assert router_models_dir([tiny], root) == folder  # the same selection, the same folder
    other = tmp_path / "Other-Model.gguf"
    other.symlink_to(tiny)
    both = router_models_dir([tiny, other], root)
    assert both != folder and set(router_model_files(both)) == {SYNTH, "other-model"}
    clash = tmp_path / "synthetic-qwen3-copy" / "synthetic-qwen3-x.gguf"
    clash.parent.mkdir()
    clash.write_bytes(b"GGUF")
    with pytest.raises(ValueError, match="would both be called 'synthetic-qwen3'"):
        router_models_dir([tiny, clash], root)


def test_a_folder_tree_of_downloads_becomes_one_model_per_file_or_split(tmp_path):
    """The layout of the Modal volume (one folder per repo): names, split parts, projectors, stale links."""
    root = tmp_path / "volume"
    for rel in ("Qwen--Qwen3-8B-GGUF/Qwen3-8B-Q5_K_M.gguf", "Qwen--Qwen3-8B-GGUF/Qwen3-8B-Q8_0.gguf",
                "org--Big-GGUF/Q4_K_M/Big-Q4_K_M-00001-of-00002.gguf",
                "org--Big-GGUF/Q4_K_M/Big-Q4_K_M-00002-of-00002.gguf",
                "org--Vision-GGUF/Vision-Q4_K_M.gguf", "org--Vision-GGUF/mmproj-Vision-F16.gguf",
                "other--Qwen3-8B-GGUF/Qwen3-8B-Q5_K_M.gguf", "Qwen--Qwen3-8B-GGUF/.cache/partial.gguf"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"GGUF")
    found = find_models(root)
    assert set(found) == {"qwen3-8b-q5_k_m", "qwen3-8b-q8_0", "big-q4_k_m", "vision-q4_k_m",
                          "other--qwen3-8b-gguf--qwen3-8b-q5_k_m"}  # the same file name in a second repo
    assert [p.name for p in found["big-q4_k_m"]] == ["Big-Q4_K_M-00001-of-00002.gguf", "Big-Q4_K_M-00002-of-00002.gguf"]
    folder = link_models(found, tmp_path / "links")
    files = router_model_files(folder)
    assert set(files) == set(found) and files["big-q4_k_m"].name == "Big-Q4_K_M-00001-of-00002.gguf"
    assert files["qwen3-8b-q8_0"] == (root / "Qwen--Qwen3-8B-GGUF/Qwen3-8B-Q8_0.gguf").resolve()
    link_models({"qwen3-8b-q8_0": found["qwen3-8b-q8_0"]}, folder)  # asked for less: the other links go
    assert set(router_model_files(folder)) == {"qwen3-8b-q8_0"} and (root / "org--Big-GGUF").exists()
    with pytest.raises(ValueError, match="cannot list a model called 'mmproj-x'"):
        link_models({"mmproj-x": found["qwen3-8b-q8_0"]}, folder)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "helpers", *args], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)


@pytest.mark.parametrize(("args", "message"), [
    (("--models", "smollm2"), "--models is for several models behind one server: add --router"),
    (("--models-max", "2"), "--models-max is for several models behind one server: add --router"),
    (("--router", "--model", "smollm2"), "with --router list them: --models a,b"),
    (("--router", "--models-max", "-1"), "--models-max is -1; give a whole number >= 0"),
    (("--router", "--models", "nonsense"), "unknown model 'nonsense'"),
])
def test_serve_refuses_mixed_up_options_in_one_line(args, message):
    out = _cli("serve", *args)
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


# --- which models fit one GPU together (no llama.cpp) ------------------------------------------------------------

#: Models a course graduate might want behind one address.
MODELS = [ModelInstance("Qwen3-8B", "Q5_K_M"), ModelInstance("Qwen3-4B", "Q5_K_M"),
          ModelInstance("Llama-3.1-8B", "Q4_K_M"), ModelInstance("Qwen3-14B", "Q4_K_M")]


def _total(instance: ModelInstance, gpu: str, n_ctx: int) -> float:
    return memory_breakdown(known_shape(str(instance.model)), instance.quant, n_ctx, gpu).total_gpu_mib


@pytest.mark.parametrize("gpu", ["L4", "A100-80GB"])
def test_the_sum_is_every_servers_own_breakdown_cuda_context_included(gpu):
    shared = share_gpu(MODELS, gpu)
    expected = sum(_total(m, gpu, COURSE_N_CTX) for m in MODELS)
    assert shared.total_mib == pytest.approx(expected)
    assert shared.cuda_overhead_mib == 4 * gpu_spec(gpu).cuda_overhead_mib  # one CUDA context per process
    assert shared.free_mib == pytest.approx(gpu_spec(gpu).memory_mib - expected)
    assert [r["total_mib"] for r in shared.rows()] == [round(_total(m, gpu, COURSE_N_CTX)) for m in MODELS]


def test_at_the_course_settings_an_l4_holds_one_model_and_an_a100_80gb_all_four():
    l4, a100 = share_gpu(MODELS, "L4"), share_gpu(MODELS, "A100-80GB")
    assert not l4.fits and a100.fits
    assert round(a100.total_mib) == 60213 and round(a100.free_mib) == 21038  # 81,251 MiB on the card
    assert [s.labels for s in fitting_sets(MODELS, "L4")] == [(m.label,) for m in MODELS]
    assert [s.labels for s in fitting_sets(MODELS, "A100-80GB")] == [tuple(m.label for m in MODELS)]
    assert safe_models_max(MODELS, "L4") == 1 and safe_models_max(MODELS, "A100-80GB") == 4
    # server_config's note: two Qwen3-8B at the course settings need more than an L4; an L40S holds them
    pair = [ModelInstance("Qwen3-8B", "Q5_K_M")] * 2
    assert not share_gpu(pair, "L4").fits and share_gpu(pair, "L40S").fits


def test_with_4096_tokens_each_an_l4_holds_any_three_of_the_four():
    short = [ModelInstance(m.model, m.quant, n_ctx=4096) for m in MODELS]
    assert not share_gpu(short, "L4").fits  # 24,853 MiB: 2,290 short
    sets = fitting_sets(short, "L4")
    assert len(sets) == 4 and all(len(s.labels) == 3 for s in sets)
    best = sets[0]
    assert best.labels == ("Qwen3-8B Q5_K_M", "Qwen3-4B Q5_K_M", "Llama-3.1-8B Q4_K_M")
    assert best.free_mib == pytest.approx(gpu_spec("L4").memory_mib - sum(_total(m, "L4", 4096) for m in short[:3]))
    assert safe_models_max(short, "L4") == 3
    assert safe_models_max(short, "L4", headroom_mib=3000) == 2  # the 8B+Llama+14B set leaves only 1,333 MiB
    every = fitting_sets(short, "L4", maximal=False)
    assert len(every) == 4 + 6 + 4  # every set of one, two and three fits; the four together don't


def test_one_gpu_for_all_against_one_container_each():
    c = compare(MODELS, "A100-80GB", per_model_gpu="L4")
    assert c.shared.fits and c.separate_fit
    assert c.shared_usd_per_hour == pytest.approx(gpu_spec("A100-80GB").usd_per_hour)
    assert c.separate_usd_per_hour == pytest.approx(4 * gpu_spec("L4").usd_per_hour)
    assert [s.total_mib for s in c.separate] == pytest.approx([_total(m, "L4", COURSE_N_CTX) for m in MODELS])
    assert "one container per model, 4 GPUs" in c.summary()


def test_a_model_too_big_for_the_card_is_a_one_line_error():
    with pytest.raises(ValueError, match="Qwen3-14B Q4_K_M alone needs 19,009 MiB .* T4"):
        safe_models_max([ModelInstance("Qwen3-14B", "Q4_K_M")], "T4")
    with pytest.raises(ValueError, match="unknown GPU"):
        share_gpu(MODELS, "L5")
    with pytest.raises(ValueError, match="no models given"):
        share_gpu([], "L4")


def test_a_gguf_file_is_measured_by_its_own_tensor_types():
    """For a file the header decides: the quant given is only a label (the file here is F16)."""
    path = synthetic_model(TINY)
    labelled_wrong = ModelInstance(str(path), "Q4_0", n_ctx=4096).estimate("L4")
    rules_f16 = memory_breakdown(read_local(path).shape(), "F16", 4096, "L4")
    rules_q4 = memory_breakdown(read_local(path).shape(), "Q4_0", 4096, "L4")
    assert labelled_wrong.total_gpu_mib == pytest.approx(rules_f16.total_gpu_mib)
    assert rules_q4.total_gpu_mib < rules_f16.total_gpu_mib  # so the label really was ignored
    assert ModelInstance(str(path), "F16").label == f"{path.name} F16"


def test_a_routers_limit_is_lowered_to_what_the_gpu_holds():
    """What the Modal router does with LLAMACPP_COURSE_MODELS_MAX before it starts."""
    limit, why = cap_models_max(MODELS, "L4", 2)
    pair = _total(MODELS[3], "L4", COURSE_N_CTX) + _total(MODELS[0], "L4", COURSE_N_CTX)  # the two largest
    assert limit == 1 and f"would need {pair:,.0f} MiB, the L4 has 22,563" in why
    assert cap_models_max(MODELS, "A100-80GB", 2) == (2, "models-max 2: any 2 of these models fit the A100-80GB "
                                                         "together")
    assert cap_models_max(MODELS, "A100-80GB", 0)[0] == 4  # "no limit" becomes every model, which fits
    limit, why = cap_models_max(MODELS, "T4", 2)  # the 14B cannot fit alone: say so, keep the setting
    assert limit == 2 and "Qwen3-14B Q4_K_M alone needs" in why


def test_a_single_server_and_a_router_share_their_instance_settings():
    """The per-instance fields are one definition: a router passes them to every model's llama-server."""
    from helpers.commands import ServerSettings

    single = server_args("x", ServerSettings(model="/m/a.gguf", parallel=2, load_mode="none", threads=3))
    router = router_args("x", RouterSettings("/m", parallel=2, load_mode="none", threads=3))
    tail = ["--parallel", "2", "--ctx-size", "8192", "--n-gpu-layers", "all", "--flash-attn", "auto"]
    for args in (single, router):
        assert args[args.index("--parallel"):args.index("--parallel") + len(tail)] == tail
        assert args[args.index("--load-mode") + 1] == "none" and args[args.index("--threads") + 1] == "3"
    for settings in (ServerSettings, lambda **kw: RouterSettings("/m", **kw)):
        with pytest.raises(ValueError, match="load_mode must be one of"):
            settings(**({"model": "/m/a.gguf"} if settings is ServerSettings else {}), load_mode="mlock")
